//! A test's-eye view of qqmx: start a server, send with a real client (lettre), and look
//! at what QQ would have answered and stored.
//!
//! Run with `cargo run --example embedded`.

use std::time::Duration;

use lettre::transport::smtp::client::Tls;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use qqmx::{Expectation, QqMx, ReplyKind};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A fresh server on 127.0.0.1:<random port>, with a manual clock.
    let server = QqMx::start();
    server.expect(Expectation::accepted(1));
    server.expect(Expectation::replies(ReplyKind::MailboxNotFound, 1));

    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.addr().port())
        .tls(Tls::None)
        .build();

    for to in ["10001@qq.com", "no.such.user@qq.com"] {
        let message = Message::builder()
            .from("Shop <noreply@shop.example>".parse()?)
            .to(to.parse()?)
            .subject("Your order has shipped")
            .body(String::from("It is on its way.\r\n"))?;
        match mailer.send(message).await {
            Ok(response) => println!("{to}: accepted ({})", response.code()),
            Err(e) => println!("{to}: refused: {e}"),
        }
    }

    // Tomorrow, in no time at all.
    server.clock().advance(Duration::from_secs(86_400));

    for message in server.messages() {
        println!("\nstored message {} for {:?}:", message.id, message.rcpt_to);
        println!("{}", message.text());
    }
    Ok(())
}
