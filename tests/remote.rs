//! The remote client against the real sidecar, and one test body run against both the
//! embedded server and the sidecar through the `Mx` trait.
#![cfg(all(feature = "remote", feature = "cli"))]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::sidecar::Sidecar;
use qqmx::chaos::{Fault, FaultKind};
use qqmx::policy::{QuotaName, Stage, Window};
use qqmx::remote::{Remote, RemoteError};
use qqmx::{Expectation, Mx, QqMx, ReplyKind};

fn sidecar(args: &[&str], env: &[(&str, &str)]) -> Sidecar {
    Sidecar::manual(args, env)
}

/// One test, written once: a quota, a blacklisting, a complaint, the clock and
/// expectations.
async fn the_same_test(server: &impl Mx) {
    let local: IpAddr = "127.0.0.1".parse().expect("ip");
    server.reset();
    server.reset_counters();
    server.expect(Expectation::accepted(2));
    server.expect(Expectation::replies(ReplyKind::MailboxNotFound, 1));
    server.set_limit(QuotaName::IpMessages, Window::Minute, Some(2));

    for to in ["10001@qq.com", "10002@qq.com", "0nobody@qq.com"] {
        common::deliver(
            server.addr(),
            "news@example.org",
            to,
            "Subject: hi\r\n\r\nhello\r\n",
        )
        .await;
    }
    let third = common::deliver(server.addr(), "news@example.org", "10003@qq.com", "x\r\n").await;
    assert!(third.contains("S: 550 Ip frequency limited"), "{third}");

    let messages = server
        .wait_for_messages(2, Duration::from_secs(5))
        .expect("two messages");
    assert_eq!(messages[0].rcpt_to, ["10001@qq.com"]);
    assert!(
        messages[0].text().contains("hello"),
        "the raw source comes along"
    );
    assert_eq!(messages[0].header("Subject").as_deref(), Some("hi"));
    assert_eq!(server.stats().accepted_total, 2);
    assert!(server.events().len() > 20);
    let why = server
        .explain(
            local,
            std::time::SystemTime::now() + Duration::from_secs(1 << 30),
        )
        .expect("a refusal");
    assert_eq!(why.rule, "quota.ip_messages");
    assert_eq!(server.blocks().len(), 1);

    server.advance(Duration::from_secs(3600));
    assert!(
        server.blocks().is_empty(),
        "the block is over an hour later"
    );
    server.complain(local, None);
    assert_eq!(server.reputation(local), 90);
    server.blacklist_sender("spam@example.org", None);
    server.unblacklist_sender("spam@example.org");
    server.blacklist_ip("127.0.0.9", None);
    server.unblacklist_ip("127.0.0.9");
    server.whitelist("10001@qq.com", "news@example.org");
    server.set_faults(vec![Fault::new(FaultKind::Close).at(Stage::Rcpt)]);
    server.set_faults(Vec::new());
    server.verify().expect("expectations met");
    server.reset();
}

#[tokio::test]
async fn one_test_body_runs_in_process_and_against_the_sidecar() {
    let embedded = QqMx::start();
    the_same_test(&embedded).await;

    let sidecar = sidecar(&[], &[]);
    let remote = Remote::connect(&format!("http://{}", sidecar.api)).expect("connect");
    assert_eq!(remote.addr(), sidecar.mx("mx1"));
    the_same_test(&remote).await;
}

#[tokio::test]
async fn a_failed_expectation_reads_the_same_from_the_sidecar() {
    let sidecar = sidecar(&["--seed", "42"], &[]);
    let remote = Remote::connect(&format!("http://{}", sidecar.api)).expect("connect");
    remote.expect(Expectation::accepted(3).named("three newsletters"));
    common::deliver(remote.addr(), "a@example.org", "10001@qq.com", "x\r\n").await;
    let report = remote.verify().expect_err("one of three").to_string();
    assert!(
        report.starts_with("qqmx: 1 of 1 expectations not met (seed 42):"),
        "{report}"
    );
    assert!(report.contains("three newsletters"), "{report}");
    remote.reset();
}

#[test]
fn tokens_and_errors_come_back_as_errors() {
    let sidecar = sidecar(&[], &[("QQMX_API_TOKEN", "s3cret")]);
    let url = format!("http://{}", sidecar.api);
    match Remote::connect(&url) {
        Err(RemoteError::Status { status: 401, .. }) => {}
        other => panic!("expected a 401, got {other:?}"),
    }
    let remote = Remote::connect_with_token(&url, Some("s3cret")).expect("connect");
    let err = remote
        .post::<serde_json::Value>("/api/v1/clock/advance", &serde_json::json!({"by": "soon"}))
        .expect_err("a bad duration");
    assert!(
        err.to_string().contains("`soon` is not a duration"),
        "{err}"
    );
    drop(sidecar);
    assert!(matches!(
        Remote::connect(&url),
        Err(RemoteError::Http { .. })
    ));
}
