//! The control API under abuse: connections that hold it, reads that would stall SMTP,
//! web pages that would drive it, and the details of its errors.
#![cfg(feature = "control")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::sidecar::{Sidecar, http};
use qqmx::control::{self, ApiOptions, ServeLimits};
use qqmx::event::{Command, EventKind, Verb};
use qqmx::{Clock, Config, Server};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longer than any timeout under test by far, so that a loaded machine still sees the
/// server act first; a server that never acts fails the test after this.
const PATIENCE: Duration = Duration::from_secs(10);

async fn api(token: Option<&str>, limits: ServeLimits) -> (SocketAddr, Server) {
    let server = Server::new(Config::default(), Clock::manual_at_unix(1_750_000_000))
        .expect("a server on the default config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let router = control::router(server.clone(), ApiOptions::new(token.map(str::to_owned)));
    tokio::spawn(control::serve_with(
        listener,
        router,
        limits,
        std::future::pending(),
    ));
    (addr, server)
}

/// Writes `request` as is and reads until the server closes: (status, headers, body).
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("an answer and a close in time")
        .expect("read");
    parse(&answer)
}

fn parse(answer: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// A request with `headers` (each ending in CRLF) and `body`, closing the connection.
fn request(method: &str, target: &str, host: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The `error` of a JSON error body, after checking that it is one.
fn error_of(status: u16, head: &str, body: &str) -> String {
    assert!(
        head.contains("content-type: application/json"),
        "{status} is not JSON: {head}\n{body}"
    );
    let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    value["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_owned()
}

/// Reads until the server closes the connection; false if it does not within PATIENCE.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut sink))
        .await
        .is_ok()
}

// ------------------------------------------------------------------ exhaustion

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off() {
    let limits = ServeLimits::default()
        .header_read_timeout(Duration::from_millis(300))
        .idle_timeout(Duration::from_secs(600));
    let (addr, _server) = api(None, limits).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("half a head");
    assert!(closed_by_server(&mut stream).await, "still open");
}

#[tokio::test]
async fn a_silent_kept_alive_connection_is_closed() {
    let limits = ServeLimits::default()
        .header_read_timeout(Duration::from_secs(600))
        .idle_timeout(Duration::from_millis(300));
    let (addr, _server) = api(None, limits).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("request");
    let mut answer = vec![0; 1024];
    let n = stream.read(&mut answer).await.expect("an answer");
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    assert!(closed_by_server(&mut stream).await, "still open");
}

#[tokio::test]
async fn connections_over_the_cap_get_a_json_503() {
    let limits = ServeLimits::default()
        .max_connections(2)
        .header_read_timeout(Duration::from_secs(600))
        .idle_timeout(Duration::from_secs(600));
    let (addr, _server) = api(None, limits).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // A full answer shows the connection holds its slot.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("request");
        let mut answer = vec![0; 1024];
        let n = stream.read(&mut answer).await.expect("an answer");
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let (status, head, body) = raw(addr, &request("GET", "/healthz", "localhost", "", "")).await;
    assert_eq!(status, 503, "{body}");
    assert!(error_of(status, &head, &body).contains("connections"));
    // A slot freed is a slot served.
    drop(held.pop());
    let mut served = false;
    for _ in 0..100 {
        let (status, _, _) = raw(addr, &request("GET", "/healthz", "localhost", "", "")).await;
        if status == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a freed slot is never reused");
}

// ------------------------------------------------------------------ web pages

#[tokio::test]
async fn cross_site_requests_without_a_token_are_refused() {
    let (addr, _server) = api(None, ServeLimits::default()).await;
    let host = addr.to_string();
    // curl -XPOST -H 'Content-Type: text/plain' -H 'Origin: http://evil.example' .../reset
    let evil = request(
        "POST",
        "/api/v1/reset",
        &host,
        "Content-Type: text/plain\r\nOrigin: http://evil.example\r\n",
        "{}",
    );
    let (status, head, body) = raw(addr, &evil).await;
    assert_eq!(status, 403, "{body}");
    assert!(error_of(status, &head, &body).contains("evil.example"));
    // The same body as text/plain from no origin: a form could send it.
    let plain = request(
        "POST",
        "/api/v1/reset",
        &host,
        "Content-Type: text/plain\r\n",
        "{}",
    );
    assert_eq!(raw(addr, &plain).await.0, 415);
    // A body without a type.
    let untyped = request("POST", "/api/v1/reset", &host, "", "{}");
    assert_eq!(raw(addr, &untyped).await.0, 415);
    // DNS rebinding: a page at evil.example, resolved to 127.0.0.1, reads the API.
    let rebound = request("GET", "/api/v1/messages", "evil.example:8025", "", "");
    let (status, head, body) = raw(addr, &rebound).await;
    assert_eq!(status, 403, "{body}");
    error_of(status, &head, &body);
    // The API's own origin, localhost, and JSON are fine.
    let json = "Content-Type: application/json\r\n";
    let same = format!("{json}Origin: http://{host}\r\n");
    for (host, headers) in [(host.as_str(), same.as_str()), ("localhost:1", json)] {
        let fine = request("POST", "/api/v1/reset", host, headers, "{}");
        let (status, _, body) = raw(addr, &fine).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    // An empty body needs no type.
    let empty = request("POST", "/api/v1/reset", &host, "", "");
    assert_eq!(raw(addr, &empty).await.0, 200);
    // TOML where a route takes TOML.
    let toml = request(
        "PUT",
        "/api/v1/config",
        &host,
        "Content-Type: text/x-toml\r\n",
        "seed = 3\n",
    );
    let (status, _, body) = raw(addr, &toml).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_token_replaces_the_same_site_checks() {
    let (addr, _server) = api(Some("t0ken"), ServeLimits::default()).await;
    let auth = "Authorization: Bearer t0ken\r\n";
    let (status, _, body) = raw(
        addr,
        &request("GET", "/api/v1/info", "qqmx.internal", auth, ""),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

// ------------------------------------------------------------------ details

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_one_authorization_is_needed() {
    let (addr, _server) = api(Some("t"), ServeLimits::default()).await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let headers = format!("Authorization: {scheme} t\r\n");
        let (status, _, body) = raw(
            addr,
            &request("GET", "/api/v1/info", "localhost", &headers, ""),
        )
        .await;
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    let two = "Authorization: Bearer t\r\nAuthorization: Bearer wrong\r\n";
    let (status, head, body) =
        raw(addr, &request("GET", "/api/v1/info", "localhost", two, "")).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_of(status, &head, &body).contains("Authorization"));
    let wrong = "Authorization: Basic dDp0\r\n";
    let (status, _, _) = raw(
        addr,
        &request("GET", "/api/v1/info", "localhost", wrong, ""),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn every_error_is_json() {
    let (addr, _server) = api(None, ServeLimits::default()).await;
    let json = "Content-Type: application/json\r\n";
    let big = format!("{{\"by\": \"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let long_target = format!("/api/v1/events?type={}", "x".repeat(10_000));
    let many: String = (0..80).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let cases: Vec<(u16, Vec<u8>)> = vec![
        (
            413,
            request("POST", "/api/v1/clock/advance", "localhost", json, &big),
        ),
        (414, request("GET", &long_target, "localhost", "", "")),
        (431, request("GET", "/api/v1/info", "localhost", &many, "")),
        (404, request("GET", "/nowhere", "localhost", "", "")),
        (405, request("PATCH", "/api/v1/info", "localhost", "", "")),
        (
            400,
            request("GET", "/api/v1/reputation/%FF", "localhost", "", ""),
        ),
        (
            400,
            request("POST", "/api/v1/blacklist", "localhost", json, "{nope"),
        ),
    ];
    // Beyond the HTTP parser's own bounds too.
    let huge_target = format!("/api/v1/events?type={}", "x".repeat(70_000));
    let too_many: String = (0..120).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let cases = cases.into_iter().chain([
        (414, request("GET", &huge_target, "localhost", "", "")),
        (
            431,
            request("GET", "/api/v1/info", "localhost", &too_many, ""),
        ),
        (
            400,
            b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n".to_vec(),
        ),
    ]);
    for (expected, request) in cases {
        let (status, head, body) = raw(addr, &request).await;
        assert_eq!(status, expected, "{body}");
        let error = error_of(status, &head, &body);
        assert!(!error.is_empty(), "{status}");
    }
}

// The client below blocks its thread: the server needs another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_limit_returns_nothing_and_moves_no_cursor() {
    let (addr, server) = api(None, ServeLimits::default()).await;
    let client = "127.0.0.2".parse().expect("ip");
    for _ in 0..5 {
        server.store().record(1, client, EventKind::TlsStarted);
    }
    let (status, body) = http(addr, "GET", "/api/v1/events?after=2&limit=0", None, "");
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(list["events"].as_array().map(Vec::len), Some(0));
    assert_eq!(list["next_after"], 2);
    // A narrow filter still pages through a long log.
    let (_, body) = http(
        addr,
        "GET",
        "/api/v1/events?after=0&limit=2&type=tls_started",
        None,
        "",
    );
    let list: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(list["next_after"], 2);
}

// ------------------------------------------------------------------ reads

/// Reads server-sent events until `n` ids are seen.
async fn stream_ids(addr: SocketAddr, target: &str, n: usize, server: &Server) -> Vec<u64> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut text = String::new();
    let mut buf = vec![0; 4096];
    // The answer's head shows the stream has started; then one more event.
    let mut recorded = false;
    loop {
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("stream data in time")
            .expect("read");
        assert!(read > 0, "the stream ended: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..read]));
        if !recorded && text.contains("\r\n\r\n") {
            recorded = true;
            server
                .store()
                .record(9, "127.0.0.9".parse().expect("ip"), EventKind::TlsStarted);
        }
        let ids: Vec<u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .filter_map(|id| id.trim().parse().ok())
            .collect();
        if ids.len() >= n {
            break ids[..n].to_vec();
        }
    }
}

#[tokio::test]
async fn the_event_stream_starts_at_the_live_end() {
    let (addr, server) = api(None, ServeLimits::default()).await;
    let client = "127.0.0.2".parse().expect("ip");
    for _ in 0..5 {
        server.store().record(1, client, EventKind::TlsStarted);
    }
    assert_eq!(
        stream_ids(addr, "/api/v1/events/stream", 1, &server).await,
        [6]
    );
    let history = stream_ids(addr, "/api/v1/events/stream?history=true", 3, &server).await;
    assert_eq!(history, [1, 2, 3]);
    let after = stream_ids(addr, "/api/v1/events/stream?after=4", 2, &server).await;
    assert_eq!(after, [5, 6]);
}

#[tokio::test]
async fn an_event_stream_that_is_not_read_is_closed() {
    let limits = ServeLimits::default().idle_timeout(Duration::from_millis(300));
    let (addr, server) = api(None, limits).await;
    let client = "127.0.0.2".parse().expect("ip");
    // Far more than the socket buffers hold, so that the server's writes stop.
    for _ in 0..50_000 {
        let line = "NOOP ".repeat(40);
        server.store().record(
            1,
            client,
            EventKind::Command(Command::new(Verb::Noop, line)),
        );
    }
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /api/v1/events/stream?history=true HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("request");
    // Not reading for a while: the server is stuck on a full socket, then gives up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(closed_by_server(&mut stream).await, "still streaming");
}

// The client below blocks its thread: the server needs another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_pages_count_every_match() {
    let (addr, server) = api(None, ServeLimits::default()).await;
    let smtp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let smtp_addr = smtp.local_addr().expect("address");
    let running = server.clone();
    tokio::spawn(async move { running.run(smtp, std::future::pending()).await });
    for _ in 0..3 {
        let body = "From: a@example.org\r\nTo: 10001@qq.com\r\nSubject: hi\r\n\r\nhi\r\n";
        common::deliver(smtp_addr, "a@example.org", "10001@qq.com", body).await;
    }
    let held = server.store().wait_for_messages_async(3, PATIENCE).await;
    assert_eq!(held.map(|m| m.len()), Ok(3));
    let (_, body) = http(addr, "GET", "/api/v1/messages?start=1&limit=1", None, "");
    let list: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (list["total"].as_u64(), list["count"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(list["messages"][0]["id"], 2);
    let (_, body) = http(addr, "GET", "/api/v1/stats", None, "");
    let stats: Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        stats["in_log"]["decisions_by_sender"]["a@example.org"]["accepted"].as_u64() >= Some(3),
        "{stats}"
    );
    assert_eq!(stats["in_log"]["replies"]["queued"], 3, "{stats}");
}

fn get_json(addr: SocketAddr, target: &str) -> (u16, Value) {
    let (status, body) = http(addr, "GET", target, None, "");
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, value)
}

fn ids(list: &Value) -> Vec<u64> {
    list["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_u64().expect("id"))
        .collect()
}

// The client below blocks its thread: the server needs another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailpit_forms_read_search_and_delete_only_what_they_name() {
    let (addr, server) = api(None, ServeLimits::default()).await;
    let smtp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let smtp_addr = smtp.local_addr().expect("address");
    let running = server.clone();
    tokio::spawn(async move { running.run(smtp, std::future::pending()).await });
    for (n, subject) in ["invoice", "Weekly news", "invoice reminder"]
        .iter()
        .enumerate()
    {
        let body = format!(
            "From: \"Shop, The\" <shop@example.org>\r\nTo: User <1000{n}@qq.com>\r\nMessage-ID: <m{n}@example.org>\r\nSubject: {subject}\r\n\r\nbody {n}\r\n"
        );
        common::deliver(
            smtp_addr,
            "shop@example.org",
            &format!("1000{n}@qq.com"),
            &body,
        )
        .await;
    }
    let held = server.store().wait_for_messages_async(3, PATIENCE).await;
    assert_eq!(held.map(|m| m.len()), Ok(3));

    // A misspelt MX is refused, naming the ones there are.
    let (status, error) = get_json(addr, "/api/v1/messages?mx=mx9");
    assert_eq!(status, 400, "{error}");
    let error = error["error"].as_str().expect("error");
    assert!(error.contains("`mx9`") && error.contains("mx1"), "{error}");
    assert_eq!(get_json(addr, "/api/v1/messages?mx=mx1").1["total"], 3);

    // Mailpit's fields beside qqmx's.
    let (_, list) = get_json(addr, "/api/v1/messages");
    let first = &list["messages"][0];
    assert_eq!(first["ID"], "1");
    assert_eq!(first["MessageID"], "m0@example.org");
    assert_eq!(first["From"]["Name"], "Shop, The");
    assert_eq!(first["From"]["Address"], "shop@example.org");
    assert_eq!(first["To"][0]["Address"], "10000@qq.com");
    assert_eq!(first["Subject"], "invoice");
    assert_eq!(list["messages_count"], 3);
    let (status, latest) = get_json(addr, "/api/v1/message/latest");
    assert_eq!((status, &latest["ID"]), (200, &Value::from("3")));
    assert_eq!(latest["Text"], "body 2\r\n");
    let (_, headers) = get_json(addr, "/api/v1/message/2/headers");
    assert_eq!(headers["Message-Id"][0], "<m1@example.org>");
    assert!(headers["X-Qq-Mid"].is_array(), "{headers}");

    // Search, newest first; an unknown term is refused.
    let (_, found) = get_json(addr, "/api/v1/search?query=subject%3Ainvoice");
    assert_eq!(ids(&found), [3, 1]);
    let (_, found) = get_json(addr, "/api/v1/search?query=to%3A10001%40qq.com");
    assert_eq!(ids(&found), [2]);
    let (_, found) = get_json(
        addr,
        "/api/v1/search?query=subject%3Ainvoice%20-subject%3Areminder%20before%3A2099-01-01",
    );
    assert_eq!(ids(&found), [1]);
    let (_, found) = get_json(
        addr,
        "/api/v1/search?query=before%3A2025-06-15T15%3A06%3A41Z",
    );
    assert_eq!(ids(&found), [3, 2, 1]);
    let (_, found) = get_json(addr, "/api/v1/search?query=after%3A2099-01-01");
    assert_eq!(ids(&found), Vec::<u64>::new());
    let (status, error) = get_json(addr, "/api/v1/search?query=is%3Aunread");
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("subject:")),
        "{error}"
    );

    // Delete by ids deletes only those; an unknown body or id deletes nothing.
    let (status, body) = http(addr, "DELETE", "/api/v1/messages", None, r#"{"ID":["2"]}"#);
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(
        addr,
        "DELETE",
        "/api/v1/messages",
        None,
        r#"{"IDs":["2","9"]}"#,
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no message 9"), "{body}");
    let (status, body) = http(addr, "DELETE", "/api/v1/messages", None, r#"{"IDs":["2"]}"#);
    assert_eq!((status, body.as_str()), (200, r#"{"deleted":1}"#));
    assert_eq!(ids(&get_json(addr, "/api/v1/messages").1), [1, 3]);
    assert_eq!(get_json(addr, "/api/v1/message/3").1["ID"], "3");
    let (status, body) = http(addr, "DELETE", "/api/v1/search?query=reminder", None, "");
    assert_eq!((status, body.as_str()), (200, r#"{"deleted":1}"#));
    let (status, body) = http(addr, "DELETE", "/api/v1/messages", None, "{}");
    assert_eq!((status, body.as_str()), (200, r#"{"deleted":1}"#));
    assert_eq!(get_json(addr, "/api/v1/message/latest").0, 404);
}

// ------------------------------------------------------------------ config

// The client below blocks its thread: the server needs another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_idle_timeout_is_refused_by_name() {
    let (addr, _server) = api(None, ServeLimits::default()).await;
    let (status, body) = http(
        addr,
        "PUT",
        "/api/v1/config",
        None,
        "[limits]\nidle_timeout = \"0s\"\n",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limits.idle_timeout"), "{body}");
}

#[test]
fn no_limits_holds_across_a_config_put() {
    let sidecar = Sidecar::manual(&["--no-limits"], &[]);
    let (status, body) = http(
        sidecar.api,
        "PUT",
        "/api/v1/config",
        None,
        "[limits]\nmax_recipients = 50\n",
    );
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["no_limits"], true, "{body}");
    let config = sidecar.json("/api/v1/config");
    assert_eq!(config["limits"]["max_recipients"], 50);
    assert_eq!(
        config["quotas"]["ip_messages"]["enabled"], false,
        "{config}"
    );
    assert_eq!(config["reputation"]["warmup"], false, "{config}");
}
