//! The test shown in the README, run as it is written there.

use lettre::transport::smtp::client::Tls;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use qqmx::{Expectation, QqMx, ReplyKind};
use std::time::Duration;

#[tokio::test]
async fn stale_addresses_get_mailbox_not_found() {
    let server = QqMx::start(); // 127.0.0.1:<random port>, own thread, manual clock
    server.expect(Expectation::accepted(1));
    server.expect(Expectation::replies(ReplyKind::MailboxNotFound, 1));

    // The code under test would be configured with server.addr().
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.addr().port())
        .tls(Tls::None)
        .build();
    for to in ["10001@qq.com", "gone@qq.com"] {
        let mail = Message::builder()
            .from("shop@example.org".parse().expect("valid"))
            .to(to.parse().expect("valid"))
            .subject("Weekly news")
            .body(String::from("Hello\r\n"))
            .expect("valid");
        let _ = mailer.send(mail).await;
    }

    server.clock().advance(Duration::from_secs(86_400)); // tomorrow, instantly
    assert_eq!(server.messages()[0].rcpt_to, ["10001@qq.com"]);
} // expectations are checked here: exactly 1 accepted, 1 `Mailbox not found`
