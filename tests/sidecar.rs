//! `qqmx serve` as a sidecar, end to end: the real binary, real SMTP clients (swaks and
//! the test client), and the HTTP control API read over real sockets.
#![cfg(feature = "cli")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Smtp;
use common::sidecar::{QQMX, Sidecar, http};
use serde_json::Value;

fn swaks(server: SocketAddr, from: &str, to: &str, header: &str) -> std::process::Output {
    Command::new("swaks")
        .args(["--server", &server.to_string()])
        .args(["--from", from, "--to", to, "--helo", "sender.example.org"])
        .args(["--header", header, "--body", "Hello from swaks."])
        .output()
        .expect("swaks runs (scripts/test.sh installs it)")
}

#[test]
fn a_message_delivered_by_swaks_is_read_back_over_http() {
    let sidecar = Sidecar::start(
        &[
            "--smtp",
            "127.0.0.1:0",
            "--smtp",
            "mx2=127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--clock",
            "manual",
            "--no-limits",
        ],
        &[],
    );
    let out = swaks(
        sidecar.mx("mx2"),
        "news@example.org",
        "10001@qq.com",
        "Subject: sidecar",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let list = sidecar.json("/api/v1/messages?to=10001@QQ.com");
    assert_eq!(list["total"], 1, "{list}");
    let summary = &list["messages"][0];
    assert_eq!(summary["mx"], "mx2");
    assert_eq!(summary["mail_from"], "news@example.org");
    assert_eq!(summary["subject"], "sidecar");
    assert_eq!(summary["folder"], "inbox");
    assert_eq!(summary["received_at"], "2025-06-02T01:00:00.000000Z");
    assert_eq!(summary["auth"]["spf"]["result"], "none");
    assert_eq!(sidecar.json("/api/v1/messages?to=10002@qq.com")["total"], 0);

    let id = summary["id"].as_u64().expect("id");
    let one = sidecar.json(&format!("/api/v1/message/{id}"));
    let headers = one["headers"].as_array().expect("headers");
    let received = headers
        .iter()
        .find(|h| h[0] == "Received")
        .expect("QQ's Received header");
    assert!(
        received[1]
            .as_str()
            .expect("text")
            .contains("by newxmmxszc27.qq.com (NewMX)"),
        "{received}"
    );
    let (status, raw) = sidecar.get(&format!("/api/v1/message/{id}/raw"));
    assert_eq!(status, 200);
    assert!(raw.contains("Hello from swaks."), "{raw}");
    assert!(raw.contains("X-QQ-mid: "), "{raw}");

    let events = sidecar.json("/api/v1/events?type=reply");
    let texts: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["text"].as_str().expect("reply text"))
        .collect();
    assert_eq!(texts[0], "220 newxmmxszc27.qq.com MX QQ Mail Server.");
    assert!(
        texts.iter().any(|t| t.starts_with("250 Ok: queued as")),
        "{texts:?}"
    );

    let (status, metrics) = sidecar.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("\nqqmx_messages_accepted_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("qqmx_sessions_total 1\n"), "{metrics}");
    assert!(
        metrics.contains("\nqqmx_policy_evictions_total 0\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nqqmx_policy_keys "), "{metrics}");
    assert!(metrics.contains("qqmx_build_info{version=\""), "{metrics}");

    let (status, deleted) = http(sidecar.api, "DELETE", "/api/v1/messages", None, "");
    assert_eq!((status, deleted.as_str()), (200, r#"{"deleted":1}"#));
    assert_eq!(sidecar.json("/api/v1/messages")["total"], 0);
}

#[tokio::test]
async fn each_mx_answers_with_its_own_banner_and_all_share_one_state() {
    let sidecar = Sidecar::start(
        &[
            "--smtp",
            "mx1=127.0.0.1:0,mx2=127.0.0.1:0,mx3=127.0.0.1:0,mxbiz1=127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ],
        &[],
    );
    let mut banners = Vec::new();
    for mx in ["mx1", "mx2", "mx3", "mxbiz1"] {
        let smtp = Smtp::connect(sidecar.mx(mx)).await;
        banners.push(smtp.transcript.trim_end().to_owned());
    }
    assert_eq!(
        banners,
        [
            "S: 220 newxmmxszc23-0.qq.com MX QQ Mail Server.",
            "S: 220 newxmmxszc27.qq.com MX QQ Mail Server.",
            "S: 220 newxmmxszc23-0.qq.com MX QQ Mail Server.",
            "S: 220 bizmx17.qq.com MX QQ Mail Server",
        ]
    );

    // A blacklisting made through the API holds on every listener.
    let (status, _) = sidecar.post("/api/v1/blacklist", r#"{"ip": "127.0.0.1", "for": "1h"}"#);
    assert_eq!(status, 200);
    for mx in ["mx1", "mxbiz1"] {
        let reply =
            common::deliver(sidecar.mx(mx), "a@example.org", "10001@qq.com", "hi\r\n").await;
        assert!(reply.contains("\nS: 550 "), "{mx}: {reply}");
        assert!(reply.contains("Ip frequency limited"), "{mx}: {reply}");
    }
    let info = sidecar.json("/api/v1/info");
    assert_eq!(info["listeners"].as_array().expect("listeners").len(), 4);
    let stats = sidecar.json("/api/v1/stats");
    assert_eq!(stats["since_start"]["sessions"], 6, "{stats}");
    assert_eq!(
        stats["in_log"]["decisions_by_ip"]["127.0.0.1"]["refused"], 2,
        "{stats}"
    );

    // `qqmx explain` names the rule, the key and the reply of the last refusal.
    let explain = |args: &[&str]| {
        let out = Command::new(QQMX)
            .arg("explain")
            .args(args)
            .args(["--api", &sidecar.api.to_string()])
            .env_remove("QQMX_API_TOKEN")
            .output()
            .expect("qqmx explain runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, text, err) = explain(&["127.0.0.1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(text.starts_with("127.0.0.1 refused at "), "{text}");
    for line in [
        "  rule    blacklist.ip\n",
        "  key     ip:127.0.0.1\n",
        "  reply   ip_frequency (reject at ",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    let (code, json, err) = explain(&["127.0.0.1", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let json: Value = serde_json::from_str(&json).expect("the API's JSON");
    assert_eq!(
        (&json["rule"], &json["key"], &json["client"]),
        (
            &Value::from("blacklist.ip"),
            &Value::from("ip:127.0.0.1"),
            &Value::from("127.0.0.1")
        )
    );
    let (code, _, err) = explain(&["127.0.0.9"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no refusal of 127.0.0.9"), "{err}");
}

#[test]
fn the_api_beyond_loopback_needs_a_token() {
    let refused = Command::new(QQMX)
        .args(["serve", "--smtp", "127.0.0.1:0", "--api", "0.0.0.0:0"])
        .env_remove("QQMX_API_TOKEN")
        .output()
        .expect("qqmx runs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("reachable from other hosts: set a bearer token"),
        "{stderr}"
    );

    let sidecar = Sidecar::start(
        &["--smtp", "127.0.0.1:0", "--api", "0.0.0.0:0"],
        &[("QQMX_API_TOKEN", "s3cret")],
    );
    let api = SocketAddr::from(([127, 0, 0, 1], sidecar.api.port()));
    let (status, body) = http(api, "GET", "/api/v1/messages", None, "");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, _) = http(api, "GET", "/api/v1/messages", Some("wrong"), "");
    assert_eq!(status, 401);
    let (status, _) = http(api, "GET", "/metrics", None, "");
    assert_eq!(status, 401);
    let (status, _) = http(api, "GET", "/api/v1/messages", Some("s3cret"), "");
    assert_eq!(status, 200);
    let (status, _) = http(api, "GET", "/healthz", None, "");
    assert_eq!(status, 200);

    let health = Command::new(QQMX)
        .args(["health", "--api", &format!("0.0.0.0:{}", api.port())])
        .status()
        .expect("qqmx health runs");
    assert!(health.success());
}

#[test]
fn settings_come_from_the_environment() {
    let sidecar = Sidecar::start(
        &[],
        &[
            ("QQMX_SMTP", "127.0.0.1:0"),
            ("QQMX_API", "127.0.0.1:0"),
            ("QQMX_GENERATION", "2019"),
            ("QQMX_CLOCK", "manual"),
            ("QQMX__LIMITS__MAX_RECIPIENTS", "1"),
            ("QQMX__CLOCK__START", "2025-07-01T00:00:00Z"),
        ],
    );
    let info = sidecar.json("/api/v1/info");
    assert_eq!(info["generation"], "2019");
    assert_eq!(info["clock"]["now"], "2025-07-01T00:00:00.000000Z");
    assert_eq!(info["clock"]["manual"], true);
    let config = sidecar.json("/api/v1/config");
    assert_eq!(config["limits"]["max_recipients"], 1);

    let bad = Command::new(QQMX)
        .args(["serve", "--smtp", "127.0.0.1:0", "--api", "off"])
        .env("QQMX__LIMITS__MAX_RECIPIENTS", "many")
        .output()
        .expect("qqmx runs");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("$QQMX__LIMITS__MAX_RECIPIENTS: key `limits.max_recipients`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_clock_limits_and_config_are_steered_over_http() {
    let sidecar = Sidecar::manual(&[], &[]);
    let mx1 = sidecar.mx("mx1");
    let (status, body) = sidecar.post(
        "/api/v1/limit",
        r#"{"quota": "ip_messages", "window": "minute", "limit": 1}"#,
    );
    assert_eq!(status, 200, "{body}");
    // The config read back is the one enforced.
    let config = sidecar.json("/api/v1/config");
    assert_eq!(
        config["quotas"]["ip_messages"]["minute"]["limit"], 1,
        "{}",
        config["quotas"]["ip_messages"]
    );
    for expected in ["S: 250 Ok: queued", "S: 550 "] {
        let reply = common::deliver(mx1, "a@example.org", "10001@qq.com", "hi\r\n").await;
        assert!(reply.contains(expected), "{reply}");
    }
    let explained = sidecar.json("/api/v1/explain?ip=127.0.0.1");
    assert_eq!(explained["rule"], "quota.ip_messages", "{explained}");
    let blocks = sidecar.json("/api/v1/blocks");
    assert_eq!(blocks[0]["key"], "ip:127.0.0.1", "{blocks}");
    assert_eq!(
        blocks[0]["until"], "2025-06-02T01:10:00.000000Z",
        "{blocks}"
    );

    // Past the block, by the server's clock.
    let (status, now) = sidecar.post("/api/v1/clock/advance", r#"{"by": "1h"}"#);
    assert_eq!(
        (status, &now["now"]),
        (200, &Value::from("2025-06-02T02:00:00.000000Z"))
    );
    let reply = common::deliver(mx1, "a@example.org", "10001@qq.com", "hi\r\n").await;
    assert!(reply.contains("S: 250 Ok: queued"), "{reply}");

    // `null` removes the tier; leaving `limit` out is refused and removes nothing.
    let (status, body) = sidecar.post(
        "/api/v1/limit",
        r#"{"quota": "ip_messages", "window": "minute"}"#,
    );
    assert_eq!(status, 400, "{body}");
    let reply = common::deliver(mx1, "a@example.org", "10001@qq.com", "hi\r\n").await;
    assert!(reply.contains("S: 550 "), "the tier still holds: {reply}");
    let (status, body) = sidecar.post(
        "/api/v1/limit",
        r#"{"quota": "ip_messages", "window": "minute", "limit": null}"#,
    );
    assert_eq!(status, 200, "{body}");
    let config = sidecar.json("/api/v1/config");
    assert!(
        config["quotas"]["ip_messages"]["minute"]["limit"].is_null(),
        "{}",
        config["quotas"]["ip_messages"]
    );
    sidecar.post("/api/v1/clock/advance", r#"{"by": "1h"}"#);
    for _ in 0..3 {
        let reply = common::deliver(mx1, "a@example.org", "10001@qq.com", "hi\r\n").await;
        assert!(reply.contains("S: 250 Ok: queued"), "{reply}");
    }

    // A new config takes over without a restart; a bad one is refused and named.
    let (status, body) = http(
        sidecar.api,
        "PUT",
        "/api/v1/config",
        None,
        "generation = \"2017\"\n[limits]\nmax_recipients = \"x\"\n",
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("<request body>:3:18: key `limits.max_recipients`"),
        "{body}"
    );
    let (status, body) = http(
        sidecar.api,
        "PUT",
        "/api/v1/config",
        None,
        "generation = \"2017\"\n",
    );
    assert_eq!(status, 200, "{body}");
    let smtp = Smtp::connect(mx1).await;
    assert_eq!(smtp.transcript, "S: 220 newmx17.qq.com MX QQ Mail Server\n");
    // The config as the API shows it loads back as JSON.
    let mut config = sidecar.json("/api/v1/config");
    assert_eq!(config["generation"], "2017");
    config["generation"] = "2019".into();
    let (status, body) = http(
        sidecar.api,
        "PUT",
        "/api/v1/config",
        None,
        &config.to_string(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(sidecar.json("/api/v1/info")["generation"], "2019");

    // Bad requests get a JSON error that says what is wrong.
    let (status, body) = sidecar.post("/api/v1/clock/advance", r#"{"by": "soon"}"#);
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("`soon` is not a duration")
    );
    let (status, body) = sidecar.post("/api/v1/whitelist", "{not json");
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .starts_with("bad JSON body")
    );
    let (status, body) = sidecar.post("/api/v1/nothing", "{}");
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn sigterm_drains_readiness_first_then_answers_421() {
    let sidecar = Sidecar::start(
        &[
            "--smtp",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--shutdown-delay",
            "6s",
        ],
        &[],
    );
    let mx1 = sidecar.mx("mx1");
    assert_eq!(sidecar.get("/readyz").0, 200);
    // One message fully sent before the signal, one cut off in the middle of its data.
    let mut done = Smtp::connect(mx1).await;
    done.send("EHLO a.example.org").await;
    done.send("MAIL FROM:<a@example.org>").await;
    done.send("RCPT TO:<10001@qq.com>").await;
    done.send("DATA").await;
    let queued = done.data("Subject: whole\r\n\r\nall of it\r\n").await;
    assert!(queued.starts_with("250 Ok: queued"), "{queued}");
    let mut cut = Smtp::connect(mx1).await;
    cut.send("EHLO b.example.org").await;
    cut.send("MAIL FROM:<b@example.org>").await;
    cut.send("RCPT TO:<10002@qq.com>").await;
    cut.send("DATA").await;
    cut.write_raw(b"Subject: half\r\n\r\nthe first half").await;

    sidecar.terminate();
    // The shutdown delay (6 s) is the window for the checks below, which take
    // milliseconds even on a loaded machine; the 421 comes when it ends, well inside the
    // 10 s a read waits (common::PATIENCE).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ready = 200;
    while ready == 200 && Instant::now() < deadline {
        ready = sidecar.get("/readyz").0;
    }
    assert_eq!(ready, 503, "readiness fails while draining");
    assert_eq!(sidecar.get("/healthz").0, 200, "still alive while draining");
    let messages = sidecar.json("/api/v1/messages");
    let last = cut.read_reply().await;
    assert_eq!(
        last,
        "421 newxmmxszc23-0.qq.com Service not available, closing transmission channel"
    );
    assert_eq!(messages["total"], 1, "only the whole message is stored");
    assert_eq!(messages["messages"][0]["subject"], "whole");
}

/// The events stream follows the log live, as server-sent events.
#[tokio::test]
async fn events_stream_live() {
    let sidecar = Sidecar::start(&["--smtp", "127.0.0.1:0", "--api", "127.0.0.1:0"], &[]);
    let mut stream = TcpStream::connect(sidecar.api).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /api/v1/events/stream?type=reply&after=0 HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .expect("request");
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stream).lines();
        let mut events = Vec::new();
        while events.len() < 2 {
            let line = lines.next().expect("the stream goes on").expect("a line");
            if let Some(data) = line.strip_prefix("data: ") {
                let event: Value = serde_json::from_str(data).expect("JSON data");
                events.push(event["text"].as_str().expect("text").to_owned());
            }
        }
        events
    });
    let mut smtp = Smtp::connect(sidecar.mx("mx1")).await;
    smtp.send("NOOP").await;
    let events = reader.join().expect("reader");
    assert_eq!(
        events,
        ["220 newxmmxszc23-0.qq.com MX QQ Mail Server.", "250 OK"]
    );
}

#[test]
fn a_misspelt_event_type_is_refused_not_matched_by_nothing() {
    let sidecar = Sidecar::start(&["--smtp", "127.0.0.1:0", "--api", "127.0.0.1:0"], &[]);
    for path in [
        "/api/v1/events?type=replies",
        "/api/v1/events/stream?type=replies",
    ] {
        let (status, body) = sidecar.get(path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("unknown event type `replies`"), "{body}");
        assert!(body.contains("reply"), "{body}");
    }
    let (status, body) = sidecar.get("/api/v1/events?type=reply");
    assert_eq!(status, 200, "{body}");
}
