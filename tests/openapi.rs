//! `openapi.json` describes the real routes: every documented operation is routed, every
//! route is documented, and the API serves the file as it is in the repository.
#![cfg(feature = "cli")]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use common::sidecar::http;
use qqmx::control::{self, ApiOptions};
use qqmx::{Clock, Config, Server};
use serde_json::Value;

const DOCUMENT: &str = include_str!("../openapi.json");
const ROUTES: &str = include_str!("../src/control/routes.rs");

/// Starts the API of a fresh server on a free port, on its own runtime thread.
fn api(token: Option<&str>) -> SocketAddr {
    let server =
        Server::new(Config::default(), Clock::manual_at_unix(1_750_000_000)).expect("server");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let options = ApiOptions::new(token.map(str::to_owned))
        .listener("mx1", SocketAddr::from(([127, 0, 0, 1], 2525)));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = control::serve(
                listener,
                control::router(server, options),
                std::future::pending(),
            )
            .await;
        });
    });
    addr
}

/// (method, path) of every documented operation.
fn documented() -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// (method, path) of every route in routes.rs, read from its `.route(...)` calls.
fn routed() -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    let mut rest = ROUTES;
    while let Some(at) = rest.find(".route(\"") {
        rest = &rest[at + 8..];
        let end = rest.find('"').expect("end of path");
        let path = &rest[..end];
        let call_end = rest.find(")\n").expect("end of call");
        let call = &rest[end..call_end];
        // Routes of the v1 router are nested under /api/v1.
        let full = if path.starts_with("/healthz")
            || path.starts_with("/readyz")
            || path.starts_with("/metrics")
            || path.starts_with("/openapi")
        {
            path.to_owned()
        } else {
            format!("/api/v1{path}")
        };
        for method in ["get", "post", "put", "delete"] {
            if call.contains(&format!("{method}(")) {
                ops.insert((method.to_uppercase(), full.clone()));
            }
        }
    }
    assert!(ops.len() > 20, "{ops:?}");
    ops
}

#[test]
fn every_route_is_documented_and_every_operation_is_routed() {
    let documented = documented();
    let routed = routed();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "not in openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );

    // And the running API answers each of them with something other than "no route".
    let addr = api(None);
    for (method, path) in &documented {
        let path = path
            .replace("{id}", "1")
            .replace("{ip}", "127.0.0.1")
            .replace("{mx}", "mx1");
        let body = match (method.as_str(), path.as_str()) {
            ("PUT", "/api/v1/faults") => "[]",
            ("PUT", "/api/v1/config") => "seed = 1\n",
            ("PUT", "/api/v1/scenario") => "name = \"x\"\nduration = \"1m\"\n",
            ("POST", "/api/v1/clock/advance") => r#"{"seconds": 1}"#,
            ("POST", "/api/v1/blacklist" | "/api/v1/unblacklist") => r#"{"ip": "127.0.0.9"}"#,
            ("POST", "/api/v1/whitelist") => r#"{"recipient": "10001@qq.com", "sender": "a@b.c"}"#,
            ("POST", "/api/v1/complain") => r#"{"ip": "127.0.0.9"}"#,
            ("POST", "/api/v1/limit") => r#"{"quota": "sender", "window": "hour", "limit": 9}"#,
            _ => "",
        };
        if path.ends_with("/stream") {
            continue; // never ends; covered by the sidecar tests
        }
        let path = if path == "/api/v1/explain" {
            "/api/v1/explain?ip=127.0.0.1".to_owned()
        } else {
            path
        };
        let (status, text) = http(addr, method, &path, None, body);
        assert!(
            !text.contains("no such route") && status != 405,
            "{method} {path}: {status} {text}"
        );
        assert!(
            status == 200 || status == 404,
            "{method} {path}: {status} {text}"
        );
    }
}

#[test]
fn the_api_serves_the_document_in_the_repository() {
    let addr = api(None);
    let (status, served) = http(addr, "GET", "/openapi.json", None, "");
    assert_eq!(status, 200);
    assert_eq!(served, DOCUMENT);
}

#[test]
fn bad_requests_get_a_json_error_and_the_token_guards_all_but_health() {
    let addr = api(None);
    for (method, path, body, wanted) in [
        (
            "POST",
            "/api/v1/whitelist",
            "{\"recipient\": 1}",
            "bad JSON body",
        ),
        ("GET", "/api/v1/messages?since=yesterday", "", "`since`"),
        ("GET", "/api/v1/messages?limit=many", "", "bad query string"),
        ("GET", "/api/v1/message/x", "", "`x` is not a message id"),
        (
            "POST",
            "/api/v1/limit",
            "{\"quota\": \"ip\", \"window\": \"minute\"}",
            "unknown variant",
        ),
        (
            "PUT",
            "/api/v1/faults",
            "[{\"kind\": \"tarpit\"}]",
            "needs a `delay`",
        ),
        (
            "POST",
            "/api/v1/mx/mx9/down",
            "",
            "no listener called `mx9`",
        ),
    ] {
        let (status, text) = http(addr, method, path, None, body);
        let error: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        assert!(status == 400 || status == 404, "{path}: {status}");
        assert!(
            error["error"].as_str().is_some_and(|e| e.contains(wanted)),
            "{path}: {text}"
        );
    }

    let guarded = api(Some("t0ken"));
    let (status, _) = http(guarded, "GET", "/api/v1/info", None, "");
    assert_eq!(status, 401);
    let (status, _) = http(guarded, "GET", "/openapi.json", None, "");
    assert_eq!(status, 401);
    let (status, _) = http(guarded, "GET", "/api/v1/info", Some("t0ken"), "");
    assert_eq!(status, 200);
    for path in ["/healthz", "/readyz"] {
        let (status, _) = http(guarded, "GET", path, None, "");
        assert_eq!(status, 200, "{path}");
    }
}
