//! Faults, set over the control API of the real binary and seen from a raw SMTP client:
//! greylisting, closes, 421, resets, tarpits, stalls, slow links, TLS failures and an MX
//! host that goes down.
#![cfg(feature = "cli")]

mod common;

use std::time::{Duration, Instant};

use common::sidecar::{Sidecar, http};
use common::{Smtp, eventually};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn sidecar(env: &[(&str, &str)]) -> Sidecar {
    Sidecar::start(
        &[
            "--smtp",
            "mx1=127.0.0.1:0,mx2=127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--no-limits",
        ],
        env,
    )
}

fn set_faults(sidecar: &Sidecar, faults: &str) {
    let (status, body) = http(sidecar.api, "PUT", "/api/v1/faults", None, faults);
    assert_eq!(status, 200, "{body}");
}

/// The `closed` reasons and fault kinds in the event log.
fn fault_events(sidecar: &Sidecar) -> (Vec<String>, Vec<String>) {
    let closed = sidecar.json("/api/v1/events?type=closed")["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["reason"].as_str().expect("reason").to_owned())
        .collect();
    let faults = sidecar.json("/api/v1/events?type=fault")["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["fault"].as_str().expect("fault").to_owned())
        .collect();
    (closed, faults)
}

#[tokio::test]
async fn greylisting_refuses_the_first_attempts_of_each_triplet() {
    let sidecar = sidecar(&[]);
    set_faults(
        &sidecar,
        r#"[{"kind": "greylist", "stage": "rcpt", "attempts": 2}]"#,
    );
    let mx1 = sidecar.mx("mx1");
    let mut replies = Vec::new();
    for _ in 0..3 {
        let mut smtp = Smtp::connect(mx1).await;
        smtp.send("EHLO a.example.org").await;
        smtp.send("MAIL FROM:<a@example.org>").await;
        replies.push(smtp.send("RCPT TO:<10001@qq.com>").await);
    }
    assert_eq!(
        replies,
        [
            "451 Greylisted, please try again later",
            "451 Greylisted, please try again later",
            "250 OK 1",
        ]
    );
    assert_eq!(fault_events(&sidecar).1, ["greylist", "greylist"]);
}

#[tokio::test]
async fn close_unavailable_and_reset_end_the_session_at_their_stage() {
    let sidecar = sidecar(&[]);
    let mx1 = sidecar.mx("mx1");

    set_faults(&sidecar, r#"[{"kind": "close", "stage": "mail"}]"#);
    let mut smtp = Smtp::connect(mx1).await;
    smtp.send("EHLO a.example.org").await;
    smtp.write_raw(b"MAIL FROM:<a@example.org>\r\n").await;
    assert!(smtp.closed().await, "closed without a reply");

    set_faults(&sidecar, r#"[{"kind": "unavailable"}]"#);
    let mut raw = TcpStream::connect(mx1).await.expect("connect");
    let mut greeting = String::new();
    raw.read_to_string(&mut greeting).await.expect("read");
    assert_eq!(
        greeting,
        "421 newxmmxszc23-0.qq.com Service not available, closing transmission channel\r\n"
    );

    set_faults(&sidecar, r#"[{"kind": "reset", "stage": "rcpt"}]"#);
    let mut smtp = Smtp::connect(mx1).await;
    smtp.send("EHLO a.example.org").await;
    smtp.send("MAIL FROM:<a@example.org>").await;
    smtp.write_raw(b"RCPT TO:<10001@qq.com>\r\n").await;
    let mut raw = smtp.into_inner();
    let mut rest = Vec::new();
    let error = raw
        .read_to_end(&mut rest)
        .await
        .expect_err("a reset, not an orderly close");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");

    let (closed, faults) = fault_events(&sidecar);
    assert_eq!(faults, ["close", "unavailable", "reset"]);
    assert_eq!(closed, ["fault_close", "fault_unavailable", "fault_reset"]);
}

#[tokio::test]
async fn a_fault_at_the_end_of_data_loses_the_message_a_tarpit_only_delays_it() {
    let sidecar = sidecar(&[]);
    let mx1 = sidecar.mx("mx1");
    set_faults(&sidecar, r#"[{"kind": "close", "stage": "end_of_data"}]"#);
    let mut smtp = Smtp::connect(mx1).await;
    smtp.send("EHLO a.example.org").await;
    smtp.send("MAIL FROM:<a@example.org>").await;
    smtp.send("RCPT TO:<10001@qq.com>").await;
    smtp.send("DATA").await;
    smtp.write_raw(b"Subject: lost\r\n\r\nbody\r\n.\r\n").await;
    assert!(smtp.closed().await);
    assert_eq!(sidecar.json("/api/v1/messages")["total"], 0);

    set_faults(
        &sidecar,
        r#"[{"kind": "tarpit", "stage": "end_of_data", "delay": "300ms"}]"#,
    );
    let mut smtp = Smtp::connect(mx1).await;
    smtp.send("EHLO a.example.org").await;
    smtp.send("MAIL FROM:<a@example.org>").await;
    smtp.send("RCPT TO:<10001@qq.com>").await;
    smtp.send("DATA").await;
    let sent = Instant::now();
    let queued = smtp.data("Subject: slow\r\n\r\nbody\r\n").await;
    assert!(sent.elapsed() >= Duration::from_millis(300), "no sooner");
    assert!(queued.starts_with("250 Ok: queued as"), "{queued}");
    assert_eq!(sidecar.json("/api/v1/messages")["total"], 1);
}

#[tokio::test]
async fn a_stall_answers_nothing_until_the_idle_timeout() {
    let sidecar = sidecar(&[("QQMX__LIMITS__IDLE_TIMEOUT", "1s")]);
    set_faults(&sidecar, r#"[{"kind": "stall", "stage": "helo"}]"#);
    let mut smtp = Smtp::connect(sidecar.mx("mx1")).await;
    let sent = Instant::now();
    smtp.write_raw(b"EHLO a.example.org\r\n").await;
    assert!(smtp.closed().await, "closed without a reply");
    assert!(sent.elapsed() >= Duration::from_secs(1));
    assert_eq!(fault_events(&sidecar).0, ["fault_stall"]);
}

#[tokio::test]
async fn a_slow_link_carries_replies_at_its_speed() {
    let sidecar = sidecar(&[]);
    set_faults(
        &sidecar,
        r#"[{"kind": "slow_link", "bytes_per_second": 200, "mx": ["mx2"]}]"#,
    );
    // mx1 is not affected.
    let fast = Instant::now();
    Smtp::connect(sidecar.mx("mx1")).await;
    let fast = fast.elapsed();
    let slow = Instant::now();
    let smtp = Smtp::connect(sidecar.mx("mx2")).await;
    // The 45-byte greeting at 200 bytes per second.
    assert!(slow.elapsed() >= Duration::from_millis(200), "{fast:?}");
    assert_eq!(
        smtp.transcript,
        "S: 220 newxmmxszc27.qq.com MX QQ Mail Server.\n"
    );
}

#[tokio::test]
async fn a_tls_failure_follows_the_ready_reply() {
    let sidecar = sidecar(&[]);
    set_faults(&sidecar, r#"[{"kind": "tls_failure"}]"#);
    let mut smtp = Smtp::connect(sidecar.mx("mx1")).await;
    smtp.send("EHLO a.example.org").await;
    assert_eq!(smtp.send("STARTTLS").await, "220 Ready to start TLS");
    let mut raw = smtp.into_inner();
    raw.write_all(b"\x16\x03\x01\x00\x05hello")
        .await
        .expect("a client hello of sorts");
    let mut alert = Vec::new();
    raw.read_to_end(&mut alert).await.expect("read");
    assert_eq!(alert, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
    assert_eq!(fault_events(&sidecar).1, ["tls_failure"]);
}

#[tokio::test]
async fn an_mx_host_that_goes_down_refuses_connections_until_it_is_back() {
    let sidecar = sidecar(&[]);
    let mx1 = sidecar.mx("mx1");
    // Up first: a greeting shows that mx1's accept loop runs. Taken down before that
    // loop first runs (an API call that beats it on a loaded machine), the port would
    // stay listening with nobody accepting: connections succeed, then hang.
    Smtp::connect(mx1).await;
    let (status, _) = sidecar.post("/api/v1/mx/mx1/down", "{}");
    assert_eq!(status, 200);
    let info: Value = sidecar.json("/api/v1/info");
    assert_eq!(info["listeners"][0]["up"], false, "{info}");
    let refused = eventually(|| async {
        match TcpStream::connect(mx1).await {
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
                true
            }
            Ok(_) => false,
        }
    })
    .await;
    assert!(
        refused,
        "mx1 still accepts: {}",
        sidecar.json("/api/v1/info")["listeners"]
    );
    Smtp::connect(sidecar.mx("mx2")).await;

    let (status, _) = sidecar.post("/api/v1/mx/mx1/up", "{}");
    assert_eq!(status, 200);
    assert!(
        eventually(|| async { TcpStream::connect(mx1).await.is_ok() }).await,
        "mx1 is back on its address"
    );
    let mut stream = TcpStream::connect(mx1).await.expect("mx1 stays up");
    let mut greeting = [0u8; 5];
    stream.read_exact(&mut greeting).await.expect("greeting");
    assert_eq!(&greeting, b"220 n");
    let (status, body) = sidecar.post("/api/v1/mx/mx9/down", "{}");
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_scenario_loaded_over_http_plays_its_timeline_by_the_servers_clock() {
    let sidecar = Sidecar::start(
        &[
            "--smtp",
            "mx1=127.0.0.1:0,mx2=127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--clock",
            "manual",
        ],
        &[],
    );
    let scenario = r#"
name = "loaded"
duration = "1h"
[config]
generation = "2019"
[config.listeners.mx1]
addr = "127.0.0.1:0"
[config.listeners.mx2]
addr = "127.0.0.1:0"
[[fault]]
kind = "greylist"
attempts = 1
[[phase]]
at = "10m"
mx_down = ["mx2"]
"#;
    let (status, body) = http(sidecar.api, "PUT", "/api/v1/scenario", None, scenario);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""name":"loaded""#), "{body}");
    let smtp = Smtp::connect(sidecar.mx("mx1")).await;
    assert_eq!(
        smtp.transcript, "S: 220 newxmmxsza22.qq.com MX QQ Mail Server.\n",
        "the scenario's config is in force"
    );
    assert_eq!(sidecar.json("/api/v1/faults")[0]["kind"], "greylist");

    let (status, _) = sidecar.post("/api/v1/clock/advance", r#"{"by": "11m"}"#);
    assert_eq!(status, 200);
    let down =
        eventually(|| async { sidecar.json("/api/v1/info")["listeners"][1]["up"] == false }).await;
    assert!(down, "mx2 goes down once the clock passes 10m");

    let (status, body) = http(
        sidecar.api,
        "PUT",
        "/api/v1/scenario",
        None,
        "name = \"bad\"\nduration = \"0s\"\n",
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("<request body>:2:1: key `duration`: must be longer than zero"),
        "{body}"
    );
}

#[tokio::test]
async fn a_command_cut_off_by_a_fault_is_still_in_the_log() {
    let sidecar = sidecar(&[]);
    set_faults(&sidecar, r#"[{"kind": "close", "stage": "rcpt"}]"#);
    let mut smtp = Smtp::connect(sidecar.mx("mx1")).await;
    smtp.send("EHLO a.example.org").await;
    smtp.send("MAIL FROM:<a@example.org>").await;
    smtp.write_raw(b"RCPT TO:<10001@qq.com>\r\n").await;
    assert!(smtp.closed().await);
    let commands: Vec<String> = sidecar.json("/api/v1/events?type=command")["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["line"].as_str().expect("line").to_owned())
        .collect();
    assert_eq!(
        commands,
        [
            "EHLO a.example.org",
            "MAIL FROM:<a@example.org>",
            "RCPT TO:<10001@qq.com>"
        ]
    );
}
