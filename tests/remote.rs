//! The remote client against the real `qqmx serve` binary, and one test body run against
//! both the embedded server and the sidecar through the `Mx` trait.
#![cfg(all(feature = "remote", feature = "cli"))]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::sidecar::Sidecar;
use lettre::message::Mailbox;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use qqmx::chaos::{Fault, FaultKind};
use qqmx::remote::{Remote, RemoteError};
use qqmx::units::{IpNet, QuotaName, Stage, Window};
use qqmx::{Expectation, Mx, QqMx, ReplyKind};

const PATIENCE: Duration = Duration::from_secs(10);

fn local() -> IpAddr {
    "127.0.0.1".parse().expect("ip")
}

/// Sends one message with lettre, a real SMTP client, in plain text or over STARTTLS.
async fn send(server: &impl Mx, to: &str, tls: bool) -> Result<Response, String> {
    let tls = if tls {
        let parameters = TlsParameters::builder("mx1.qq.com".to_owned())
            .dangerous_accept_invalid_certs(true)
            .build_rustls()
            .expect("TLS parameters");
        Tls::Required(parameters)
    } else {
        Tls::None
    };
    let transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.addr().ip().to_string())
            .port(server.addr().port())
            .tls(tls)
            .timeout(Some(PATIENCE))
            .build();
    let email = lettre::Message::builder()
        .from("News <news@example.org>".parse::<Mailbox>().expect("from"))
        .to(to.parse::<Mailbox>().expect("to"))
        .subject("hi")
        .body("hello from lettre\r\n".to_owned())
        .expect("message");
    transport.send(email).await.map_err(|e| e.to_string())
}

/// One test, written once against the trait: deliveries, a quota, the clock, the lists,
/// a complaint, refusals and expectations.
async fn the_same_test(server: &impl Mx) {
    server.reset();
    server.reset_counters();
    server.expect(Expectation::accepted(2));
    server.expect(Expectation::replies(ReplyKind::MailboxNotFound, 1));
    server.set_limit(QuotaName::IpMessages, Window::Minute, Some(2));

    send(server, "10001@qq.com", false).await.expect("first");
    send(server, "10002@qq.com", false).await.expect("second");
    let unknown = send(server, "0nobody@qq.com", false)
        .await
        .expect_err("no such mailbox");
    assert!(unknown.contains("Mailbox not found"), "{unknown}");
    let limited = send(server, "10003@qq.com", false)
        .await
        .expect_err("over the quota");
    assert!(limited.contains("Ip frequency limited"), "{limited}");

    let messages = server.wait_for_messages(2, PATIENCE).expect("two messages");
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].rcpt_to, ["10001@qq.com"]);
    assert_eq!(messages[0].mail_from, "news@example.org");
    assert!(
        messages[0].text().contains("hello from lettre"),
        "the source comes along"
    );
    assert_eq!(messages[0].header("Subject").as_deref(), Some("hi"));
    assert!(
        messages[0].header("X-QQ-mid").is_some(),
        "qqmx's own headers too"
    );
    assert_eq!(server.stats().since_reset.messages_accepted, 2);
    assert!(server.events().len() > 20);

    let refusals = server.refusals(local());
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert_eq!(refusals[1].1.rule, "quota.ip_messages");
    let why = server.explain(local(), server.now()).expect("a refusal");
    assert_eq!(why, refusals[1].1);
    assert_eq!(
        server.explain(local(), refusals[1].0),
        Some(why),
        "a refusal is there at its own time"
    );
    assert_eq!(
        server.explain(local(), refusals[0].0 - Duration::from_secs(1)),
        None
    );
    assert_eq!(server.blocks().len(), 1);

    let before = server.now();
    server.advance(Duration::from_secs(3600));
    assert_eq!(
        server.now().duration_since(before).expect("forward"),
        Duration::from_secs(3600)
    );
    assert!(
        server.blocks().is_empty(),
        "the block is over an hour later"
    );

    server.complain(local(), None);
    assert_eq!(server.reputation(local()), 90);
    server.blacklist_sender("spam@example.org", None);
    server.unblacklist_sender("spam@example.org");
    let range: IpNet = "127.0.9.0/24".parse().expect("a range");
    let inside = IpAddr::from([127, 0, 9, 1]);
    server.complain(inside, None);
    server.blacklist_ip(IpAddr::from([127, 0, 0, 9]), None);
    server.blacklist_ip(range, Some(server.now() + Duration::from_secs(60)));
    server.unblacklist_ip(IpAddr::from([127, 0, 0, 9]));
    assert_eq!(server.reputation(inside), 90);
    server.unblacklist_ip(range);
    assert_eq!(
        server.reputation(inside),
        100,
        "lifting the range lifts the complaints inside it"
    );
    server.whitelist("10001@qq.com", "news@example.org");
    server.set_faults(vec![Fault::new(FaultKind::Close).at(Stage::Rcpt)]);
    server.set_faults(Vec::new());
    server.verify().expect("expectations met");
    server.reset();
    assert!(server.messages().is_empty());
    server.verify().expect("no expectations after a reset");
}

#[tokio::test]
async fn one_test_body_runs_in_process_and_against_the_sidecar() {
    let embedded = QqMx::start();
    the_same_test(&embedded).await;

    let mut sidecar = Sidecar::manual(&[], &[]);
    let remote = Remote::connect(&format!("http://{}", sidecar.api)).expect("connect");
    assert_eq!(remote.addr(), sidecar.mx("mx1"));
    the_same_test(&remote).await;

    // Through a `dyn Mx` too, as a test that picks the server at run time would.
    let servers: [&dyn Mx; 2] = [&embedded, &remote];
    for server in servers {
        server.expect(Expectation::accepted(0));
        server.verify().expect("nothing sent");
        server.reset();
    }

    drop(remote);
    sidecar.terminate();
    let status = sidecar.child.wait().expect("exit");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn messages_come_with_their_source_and_tls() {
    let sidecar = Sidecar::manual(&[], &[]);
    let remote = Remote::connect(&format!("http://{}/", sidecar.api)).expect("connect");
    assert_eq!(remote.url(), format!("http://{}", sidecar.api));
    remote.expect(Expectation::accepted(1));

    send(&remote, "10001@qq.com", true).await.expect("accepted");
    let messages = remote
        .wait_for_messages_async(1, PATIENCE)
        .await
        .expect("one message");

    let message = &messages[0];
    assert!(message.tls, "sent over STARTTLS");
    assert_eq!(message.mx, "mx1");
    assert_eq!(message.client, local());
    assert!(
        message.text().starts_with("Received: from "),
        "{}",
        message.text()
    );
    assert!(message.text().contains("\r\n\r\nhello from lettre"));
    // The same bytes as the API's raw route gives.
    let (status, raw) = sidecar.get(&format!("/api/v1/message/{}/raw", message.id));
    assert_eq!(status, 200);
    assert_eq!(raw.as_bytes(), &message.raw[..]);

    let err = remote
        .wait_for_messages(2, Duration::from_millis(50))
        .expect_err("only one");
    assert_eq!((err.wanted, err.got), (2, 1));
}

#[test]
fn the_clock_moves_by_long_and_odd_amounts() {
    let sidecar = Sidecar::manual(&[], &[]);
    let remote = Remote::connect(&format!("http://{}", sidecar.api)).expect("connect");
    let start = remote.now();
    // More milliseconds than the API's duration text holds in one number.
    remote.advance(Duration::from_secs(60 * 86_400));
    remote.advance(Duration::from_millis(1_250));
    remote.advance(Duration::ZERO);
    assert_eq!(
        remote.now().duration_since(start).expect("forward"),
        Duration::from_secs(60 * 86_400) + Duration::from_millis(1_250)
    );
}

#[tokio::test]
async fn a_failed_expectation_reads_the_same_from_the_sidecar() {
    let sidecar = Sidecar::manual(&["--seed", "42"], &[]);
    let remote = Remote::connect(&format!("http://{}", sidecar.api)).expect("connect");
    let embedded = QqMx::builder().seed(42).start();
    for server in [&remote as &dyn Mx, &embedded] {
        server.expect(Expectation::accepted(3).named("three newsletters"));
        server.expect(Expectation::replies(ReplyKind::MailboxNotFound, 1..));
        server.expect(Expectation::respects_blocks());
        server.expect(Expectation::no_resend_to_unknown());
    }
    send(&remote, "10001@qq.com", false).await.expect("sent");
    send(&embedded, "10001@qq.com", false).await.expect("sent");
    remote.wait_for_messages(1, PATIENCE).expect("one");

    // Checked here over the sidecar's events, by the engine the embedded server uses.
    let report = remote.verify().expect_err("two of four").to_string();
    assert_eq!(
        report,
        "qqmx: 2 of 4 expectations held\n  \
         ✗ FAIL three newsletters: 1 accepted, expected exactly 3\n  \
         ✗ FAIL `mailbox_not_found` replies at least 1: 0 `mailbox_not_found` replies, \
         expected at least 1\n  \
         ✓ ok   respects blocks (at most 0 attempts while blocked): never blocked\n  \
         ✓ ok   drops unknown mailboxes (at most 0 retries): no `Mailbox not found` reply\n  \
         replay with seed 42\n"
    );
    assert_eq!(report, embedded.verify().expect_err("the same").to_string());
    remote.reset();
    embedded.reset();
}

#[test]
fn tokens_and_errors_come_back_as_errors() {
    let sidecar = Sidecar::manual(&[], &[("QQMX_API_TOKEN", "s3cret")]);
    let url = format!("http://{}", sidecar.api);
    match Remote::connect(&url) {
        Err(RemoteError::Status { status: 401, .. }) => {}
        other => panic!("expected a 401, got {other:?}"),
    }
    assert!(matches!(
        Remote::connect_with_token(&url, "wrong"),
        Err(RemoteError::Status { status: 401, .. })
    ));
    let remote = Remote::connect_with_token(&url, "s3cret").expect("connect");
    assert!(remote.messages().is_empty());
    assert_eq!(remote.ca_pem(), None, "no test CA: the self-signed default");

    let err = remote
        .post::<serde_json::Value>("/api/v1/clock/advance", &serde_json::json!({"by": "soon"}))
        .expect_err("a bad duration");
    assert!(
        matches!(err, RemoteError::Status { status: 400, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("`soon` is not a duration"),
        "{err}"
    );

    let no_such_mx = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        remote.set_mx_up("mx9", false);
    }))
    .expect_err("a panic, as a test helper's");
    let text = no_such_mx
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        text.contains("/api/v1/mx/mx9/down answered 404"),
        "the panic names the request: {text}"
    );

    drop(sidecar);
    assert!(matches!(
        Remote::connect(&url),
        Err(RemoteError::Http { .. })
    ));
}

#[test]
fn from_env_wants_a_url() {
    if std::env::var_os("QQMX_API_URL").is_none() {
        assert!(matches!(Remote::from_env(), Err(RemoteError::NoUrl)));
    }
}

#[test]
fn the_test_ca_comes_through_the_client() {
    let sidecar = Sidecar::manual(&["--tls-ca"], &[]);
    let remote = Remote::connect(&format!("http://{}", sidecar.api)).expect("connect");

    let pem = remote.ca_pem().expect("the sidecar's test CA");

    let (status, served) = sidecar.get("/api/v1/tls/ca.pem");
    assert_eq!(status, 200);
    assert_eq!(pem, served);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
}
