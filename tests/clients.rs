//! Real SMTP clients against qqmx: lettre (Rust), smtplib (Python) and swaks.
//!
//! The Python and swaks tests run the tools as child processes; `scripts/test.sh` (and
//! CI) install swaks from Debian. A missing tool fails the test with what to install.

use std::process::Command;

use lettre::message::Mailbox;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use qqmx::{Expectation, Generation, QqMx, ReplyKind};

fn lettre(server: &QqMx, tls: Tls) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.addr().port())
        .tls(tls)
        .build()
}

fn email(to: &str) -> Message {
    Message::builder()
        .from(
            "Sender <sender@example.org>"
                .parse::<Mailbox>()
                .expect("from"),
        )
        .to(to.parse::<Mailbox>().expect("to"))
        .subject("Hello from lettre")
        .body("Hi there.\r\n".to_owned())
        .expect("message")
}

#[tokio::test]
async fn lettre_delivers_in_plain_text() {
    let server = QqMx::start();
    server.expect(Expectation::accepted(1));

    let response = lettre(&server, Tls::None)
        .send(email("10001@qq.com"))
        .await
        .expect("accepted");

    assert_eq!(response.code().to_string(), "250");
    let message = &server.messages()[0];
    assert_eq!(message.rcpt_to, ["10001@qq.com"]);
    assert_eq!(
        message.header("Subject").as_deref(),
        Some("Hello from lettre")
    );
    assert!(!message.tls);
}

#[tokio::test]
async fn lettre_delivers_over_starttls() {
    let server = QqMx::start();
    let tls = TlsParameters::builder("mx1.qq.com".to_owned())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .expect("TLS parameters");

    lettre(&server, Tls::Required(tls))
        .send(email("10001@qq.com"))
        .await
        .expect("accepted");

    assert!(server.messages()[0].tls);
}

#[tokio::test]
async fn lettre_sees_the_exact_mailbox_not_found_text() {
    let server = QqMx::start();
    server.expect(Expectation::replies(ReplyKind::MailboxNotFound, 1));

    let error = lettre(&server, Tls::None)
        .send(email("nobody@qq.com"))
        .await
        .expect_err("unknown user");

    assert!(error.is_permanent());
    let text = error.to_string();
    assert!(
        text.contains("Mailbox not found. http://service.mail.qq.com/detail/122/169 [M"),
        "{text}"
    );
    assert!(text.contains(" IP: 127.0.0.1]"), "{text}");
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}); install it (`apt-get install swaks`, or run scripts/test.sh)")
    });
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn smtplib(server: &QqMx, mode: &str) -> serde_json::Value {
    let port = server.addr().port().to_string();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/smtplib_client.py"
    );
    let (ok, out) = run("python3", &[script, "127.0.0.1", &port, mode]);
    assert!(ok, "smtplib client failed:\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn python_smtplib_delivers_and_sees_qq_ehlo() {
    let server = QqMx::start();

    let out = smtplib(&server, "deliver");

    assert_eq!(
        out["ehlo"],
        serde_json::json!([
            250,
            "newxmmxszc23-0.qq.com\nSTARTTLS\n8BITMIME\nSMTPUTF8\nSIZE 73400320\nOK"
        ])
    );
    assert_eq!(out["refused"], serde_json::json!({}));
    let message = &server.messages()[0];
    assert_eq!(message.helo, "python.example.org");
    assert!(message.text().ends_with("\r\n\r\nHello from Python.\r\n"));
}

#[test]
fn python_smtplib_delivers_over_starttls() {
    let server = QqMx::start();

    let out = smtplib(&server, "starttls");

    assert_eq!(
        out["starttls"],
        serde_json::json!([220, "Ready to start TLS"])
    );
    assert_eq!(
        out["ehlo_tls"],
        serde_json::json!([
            250,
            "newxmmxszc23-0.qq.com\n8BITMIME\nSMTPUTF8\nSIZE 73400320\nOK"
        ])
    );
    assert!(server.messages()[0].tls);
}

#[test]
fn python_smtplib_is_told_which_recipient_is_unknown() {
    let server = QqMx::start();

    let out = smtplib(&server, "unknown");

    let refused = &out["refused"]["nobody@qq.com"];
    assert_eq!(refused[0], 550);
    let text = refused[1].as_str().expect("text");
    assert!(text.starts_with("Mailbox not found. http://service.mail.qq.com/detail/122/169 [M"));
    assert_eq!(server.messages()[0].rcpt_to, ["10001@qq.com"]);
}

/// The server's lines in a swaks transcript (`<-  ` plain, `<~  ` TLS, `<** ` error).
fn server_lines(transcript: &str) -> Vec<&str> {
    transcript
        .lines()
        .filter_map(|l| {
            ["<-  ", "<~  ", "<** ", "<~* "]
                .iter()
                .find_map(|p| l.strip_prefix(p))
        })
        .collect()
}

fn swaks(server: &QqMx, extra: &[&str]) -> (bool, String) {
    let addr = server.addr().to_string();
    let mut args = vec![
        "--server",
        &addr,
        "--from",
        "root@kali.lan",
        "--helo",
        "kali.lan",
    ];
    args.extend_from_slice(extra);
    run("swaks", &args)
}

#[test]
fn swaks_sees_the_2025_banner_and_ehlo() {
    let server = QqMx::start();

    let (ok, transcript) = swaks(&server, &["--to", "1871973389@qq.com"]);

    assert!(ok, "{transcript}");
    assert_eq!(
        server_lines(&transcript)[..7],
        [
            "220 newxmmxszc23-0.qq.com MX QQ Mail Server.",
            "250-newxmmxszc23-0.qq.com",
            "250-STARTTLS",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250-SIZE 73400320",
            "250 OK",
        ]
    );
}

#[test]
fn swaks_2019_delivery_matches_qq_byte_for_byte() {
    let server = QqMx::builder().generation(Generation::G2019).start();

    let (ok, transcript) = swaks(&server, &["--to", "1871973389@qq.com"]);

    assert!(ok, "{transcript}");
    assert_eq!(
        server_lines(&transcript),
        [
            "220 newxmmxsza22.qq.com MX QQ Mail Server.",
            "250-newxmmxsza22.qq.com",
            "250-STARTTLS",
            "250-SIZE 73400320",
            "250 OK",
            "250 OK.",
            "250 OK 1",
            "354 End data with <CR><LF>.<CR><LF>.",
            "250 Ok: queued as ",
            "221 Bye.",
        ]
    );
}

#[test]
fn swaks_delivers_over_starttls() {
    let server = QqMx::start();

    let (ok, transcript) = swaks(&server, &["--to", "10001@qq.com", "--tls"]);

    assert!(ok, "{transcript}");
    assert!(
        transcript.contains("<-  220 Ready to start TLS"),
        "{transcript}"
    );
    assert!(
        transcript.contains("<~  250 Ok: queued as "),
        "{transcript}"
    );
    assert!(server.messages()[0].tls);
}

#[test]
fn swaks_is_refused_an_unknown_mailbox() {
    let server = QqMx::start();

    let (ok, transcript) = swaks(&server, &["--to", "nobody@qq.com"]);

    assert!(!ok, "swaks exits non-zero on a refused recipient");
    let refused = server_lines(&transcript)
        .into_iter()
        .find(|l| l.starts_with("550"))
        .unwrap_or_else(|| panic!("no 550 in:\n{transcript}"));
    assert!(
        refused.starts_with("550 Mailbox not found. http://service.mail.qq.com/detail/122/169 [M"),
        "{refused}"
    );
    assert!(server.messages().is_empty());
}
