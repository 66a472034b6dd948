//! The same check against an in-process server or a running sidecar.
//!
//! `QqMx` and `Remote` have the same methods, and both implement `qqmx::Mx`: in a test,
//! `let server = QqMx::start();` becomes `let server = Remote::from_env()?;` and nothing
//! else changes. Here the choice is made at run time, through `Box<dyn Mx>`.
//!
//! In-process: `cargo run --example remote --features remote`.
//! Against a sidecar: start `qqmx serve --clock manual` elsewhere, then
//! `QQMX_API_URL=http://127.0.0.1:8025 cargo run --example remote --features remote`.

use std::time::Duration;

use qqmx::{Expectation, Mx, QqMx, remote::Remote};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server: Box<dyn Mx> = if std::env::var_os("QQMX_API_URL").is_some() {
        Box::new(Remote::from_env()?)
    } else {
        Box::new(QqMx::start())
    };
    server.reset();
    server.expect(Expectation::accepted(1));

    // The code under test would send here; this example sends with a raw conversation.
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(server.addr())?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    for command in [
        "EHLO example.org",
        "MAIL FROM:<news@example.org>",
        "RCPT TO:<10001@qq.com>",
        "DATA",
        "Subject: hello\r\n\r\nfrom the example\r\n.",
        "QUIT",
    ] {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        write!(writer, "{command}\r\n")?;
    }

    let messages = server.wait_for_messages(1, Duration::from_secs(5))?;
    println!(
        "{} accepted; subject: {:?}",
        messages.len(),
        messages[0].header("Subject")
    );
    server.advance(Duration::from_secs(86_400));
    server.verify()?;
    Ok(())
}
