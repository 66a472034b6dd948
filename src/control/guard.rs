//! What every request passes before its route: JSON for every error, bounds on the request
//! head, and, without a token, the checks that keep web pages from driving the API.
//!
//! Without a token the API listens on loopback only ([`check_bind`](super::check_bind)),
//! but a browser on the same machine can still reach it: a page may send it a "simple"
//! cross-origin request (a form post, `text/plain`, no preflight), and a page served from
//! a name that resolves to 127.0.0.1 (DNS rebinding) may even read the answers. So a
//! request without a token must name a loopback host (or the API's own address) in
//! `Host`; a request that changes state must come from no other origin and carry its body
//! with a type a form cannot send.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Api, ApiError};

/// The address a connection was accepted on, set by [`serve`](super::serve).
#[derive(Debug, Clone, Copy)]
pub(super) struct LocalAddr(pub(super) SocketAddr);

/// The longest request target taken, in bytes.
pub(super) const MAX_URI: usize = 8 * 1024;
/// The most header fields taken.
pub(super) const MAX_HEADERS: usize = 64;
/// The most bytes of header fields (names and values) taken.
pub(super) const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The most bytes of an error body from elsewhere that an answer quotes.
const MAX_QUOTED: usize = 4096;

/// Refuses requests whose head is too large, and turns every error answer that is not
/// JSON (axum's rejections, a body over the size limit) into `{"error": "..."}`.
pub(super) async fn json_errors(request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > MAX_URI {
        return ApiError {
            status: StatusCode::URI_TOO_LONG,
            message: format!("the request target is longer than {MAX_URI} bytes"),
        }
        .into_response();
    }
    if let Some(problem) = head_too_large(request.headers()) {
        return ApiError {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            message: problem,
        }
        .into_response();
    }
    let response = next.run(request).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        as_json(response).await
    } else {
        response
    }
}

fn head_too_large(headers: &HeaderMap) -> Option<String> {
    if headers.len() > MAX_HEADERS {
        return Some(format!("more than {MAX_HEADERS} header fields"));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    (bytes > MAX_HEADER_BYTES)
        .then(|| format!("more than {MAX_HEADER_BYTES} bytes of header fields"))
}

/// `response` with a JSON body, quoting its text (or its status's reason when empty).
async fn as_json(response: Response) -> Response {
    if media_type(response.headers()).as_deref() == Some("application/json") {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_QUOTED)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        parts
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let json = ApiError {
        status: parts.status,
        message,
    }
    .into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, json.into_body())
}

/// The media type of `Content-Type`, lower case, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// Without a token: the `Host`, `Origin` and `Content-Type` checks above.
pub(super) async fn same_site(
    State(api): State<Arc<Api>>,
    request: Request,
    next: Next,
) -> Response {
    if api.options.token.is_some() {
        return next.run(request).await;
    }
    match refusal(&request) {
        Some(refused) => refused.into_response(),
        None => next.run(request).await,
    }
}

fn refusal(request: &Request<Body>) -> Option<ApiError> {
    let headers = request.headers();
    let local = request.extensions().get::<LocalAddr>().map(|l| l.0);
    let host = headers
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()));
    let health = matches!(request.uri().path(), "/healthz" | "/readyz");
    if let Some(host) = &host
        && !health
        && !local_host(host, local)
    {
        return Some(forbidden(format!(
            "`Host: {host}` is not a loopback name or address; without a token the API answers only requests to localhost, 127.0.0.0/8, [::1] or the address it listens on"
        )));
    }
    if !changes_state(request.method()) {
        return None;
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        let same = host
            .as_ref()
            .is_some_and(|host| origin.eq_ignore_ascii_case(&format!("http://{host}")));
        if !same {
            return Some(forbidden(format!(
                "a request from `Origin: {origin}`, another site; without a token the API takes changes only from its own origin"
            )));
        }
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let kind = media_type(headers);
    if has_body || kind.is_some() {
        let accepted = accepted_types(request.method(), request.uri().path());
        if !kind.as_deref().is_some_and(|k| accepted.contains(&k)) {
            return Some(ApiError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: format!(
                    "`Content-Type: {}`: this route takes {}",
                    kind.as_deref().unwrap_or("(none)"),
                    accepted.join(" or ")
                ),
            });
        }
    }
    None
}

/// Refuses what a route would otherwise ignore: a query string on a route that takes no
/// parameters, and a body on a route that takes none (a `GET`, the MX switches, a delete
/// by search). A misspelt or misplaced input must not pass in silence.
pub(super) async fn strict_inputs(request: Request, next: Next) -> Response {
    let method = request.method().as_str();
    let path = request.uri().path().trim_end_matches('/');
    if let Some(query) = request.uri().query()
        && !query.is_empty()
        && !takes_query(method, path)
    {
        return ApiError::bad_request(format!(
            "this route takes no query parameters; got `{query}`"
        ))
        .into_response();
    }
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    if has_body && !takes_body(method, path) {
        // An empty JSON object says nothing, and clients that always send JSON send it.
        let (parts, body) = request.into_parts();
        let empty = axum::body::to_bytes(body, NO_BODY_READ)
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Map<_, _>>(&bytes).ok())
            .is_some_and(|object| object.is_empty());
        if !empty {
            return ApiError::bad_request("this route takes no body (or `{}`)").into_response();
        }
        return next.run(Request::from_parts(parts, Body::empty())).await;
    }
    next.run(request).await
}

/// The most bytes of a body read on a route that takes none, to see whether it is `{}`.
const NO_BODY_READ: usize = 1024;

/// Whether the route takes query parameters.
fn takes_query(method: &str, path: &str) -> bool {
    matches!(
        (method, path),
        (
            "GET",
            "/api/v1/messages"
                | "/api/v1/events"
                | "/api/v1/events/stream"
                | "/api/v1/replies"
                | "/api/v1/explain"
                | "/api/v1/search"
                | "/api/v1/stats"
        ) | ("DELETE", "/api/v1/search" | "/api/v1/messages")
    )
}

/// Whether the route takes a body.
fn takes_body(method: &str, path: &str) -> bool {
    let mx_switch =
        path.starts_with("/api/v1/mx/") && (path.ends_with("/down") || path.ends_with("/up"));
    !(matches!(method, "GET" | "HEAD")
        || (method == "POST" && mx_switch)
        || (method == "DELETE" && path == "/api/v1/search"))
}

fn changes_state(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::DELETE, Method::PATCH].contains(method)
}

/// The body types a state-changing route takes.
fn accepted_types(method: &Method, path: &str) -> &'static [&'static str] {
    const TOML: [&str; 2] = ["application/toml", "text/x-toml"];
    match (method.as_str(), path.trim_end_matches('/')) {
        ("PUT", "/api/v1/config") => &["application/json", TOML[0], TOML[1]],
        ("PUT", "/api/v1/scenario") => &TOML,
        _ => &["application/json"],
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        message,
    }
}

/// Whether `host` (a `Host` header: a name or address, with an optional port) names
/// loopback or `local`'s address.
fn local_host(host: &str, local: Option<SocketAddr>) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || local.is_some_and(|l| l.ip() == ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_local() {
        let local: SocketAddr = "192.0.2.1:8025".parse().expect("addr");
        for host in [
            "localhost",
            "LOCALHOST:8025",
            "localhost.",
            "127.0.0.1",
            "127.8.9.1:80",
            "[::1]:8025",
            "[::1]",
            "192.0.2.1:8025",
        ] {
            assert!(local_host(host, Some(local)), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8025",
            "localhost.evil.example",
            "192.0.2.1",
            "[::2]:8025",
            "",
        ] {
            assert!(!local_host(host, None), "{host}");
        }
    }

    #[test]
    fn toml_routes_take_toml() {
        assert!(accepted_types(&Method::PUT, "/api/v1/config").contains(&"text/x-toml"));
        assert_eq!(
            accepted_types(&Method::PUT, "/api/v1/scenario"),
            ["application/toml", "text/x-toml"]
        );
        assert_eq!(
            accepted_types(&Method::POST, "/api/v1/reset"),
            ["application/json"]
        );
    }
}
