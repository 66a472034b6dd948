//! The dashboard: a page at `/` that shows what the server sees (live events, messages,
//! the policy) and drives it through the documented API, so everything the page does a
//! script can do too.
//!
//! Its files are plain HTML, CSS and JavaScript under `assets/dashboard/`, built into the
//! binary: nothing to build, nothing fetched at run time. They carry no data and are
//! served without a token; the page asks for the token, keeps it in the browser's
//! session storage and sends it as `Authorization: Bearer` on every API request. Every
//! answer carries a strict Content-Security-Policy (scripts and styles from the page's
//! own origin only, nothing remote, no inline script), and an `ETag` so a browser asks
//! again only with `If-None-Match`.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: u64,
}

/// FNV-1a, 64 bits: a stable tag of a file's content, computed when the crate compiles.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($file:literal, $type:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!("../../assets/dashboard/", $file));
        Asset {
            body: BODY,
            content_type: $type,
            etag: fnv1a(BODY),
        }
    }};
}

const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
const SCRIPT: Asset = asset!("app.js", "text/javascript; charset=utf-8");
const STYLE: Asset = asset!("app.css", "text/css; charset=utf-8");

/// The policy of every dashboard answer. Mail shown in the page is attacker-controlled:
/// an HTML part goes into a sandboxed frame (no scripts) that inherits this policy, so it
/// loads nothing remote either.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(super) async fn index(request: Request) -> Response {
    serve(&INDEX, &request)
}

pub(super) async fn script(request: Request) -> Response {
    serve(&SCRIPT, &request)
}

pub(super) async fn style(request: Request) -> Response {
    serve(&STYLE, &request)
}

fn serve(asset: &Asset, request: &Request) -> Response {
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, asset.content_type)],
            axum::body::Bytes::from_static(asset.body),
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("a hex number in quotes is a header value"),
    );
    // Ask again each time, with the tag: a new binary serves new files at the same names.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ_by_content() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_ne!(INDEX.etag, SCRIPT.etag);
    }

    fn get(if_none_match: Option<&str>) -> Response {
        let mut request = Request::builder().uri("/");
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        serve(
            &INDEX,
            &request.body(axum::body::Body::empty()).expect("a request"),
        )
    }

    #[test]
    fn a_file_comes_with_its_type_tag_and_policy_and_a_known_tag_gets_304() {
        let first = get(None);
        assert_eq!(first.status(), StatusCode::OK);
        let headers = first.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let policy = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("text");
        assert!(policy.starts_with("default-src 'none'; script-src 'self';"));
        assert!(!policy.contains("unsafe"));
        let tag = headers[header::ETAG].to_str().expect("text").to_owned();
        assert_eq!(get(Some(&tag)).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            get(Some(&format!("\"other\", W/{tag}"))).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(get(Some("\"other\"")).status(), StatusCode::OK);
    }

    #[test]
    fn the_page_has_no_inline_script_and_loads_its_own_files() {
        let page = std::str::from_utf8(INDEX.body).expect("UTF-8");
        assert!(page.contains("<script src=\"/dashboard/app.js\""));
        assert!(!page.contains("<script>"));
        assert!(!page.contains("http://") && !page.contains("https://"));
        let script = std::str::from_utf8(SCRIPT.body).expect("UTF-8");
        assert!(
            !script.contains("innerHTML"),
            "mail data must not reach innerHTML"
        );
    }
}
