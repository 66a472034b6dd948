//! Hardening of the SMTP side, over raw TCP: SMTP smuggling, bursts of connections past
//! the cap, the in-flight byte budget, trickling clients, and strict command syntax.

mod common;

use std::time::Duration;

use common::Smtp;
use qqmx::{Config, QqMx};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn server_with(toml: &str) -> QqMx {
    QqMx::builder()
        .config(Config::from_toml(toml).expect("test config").no_limits())
        .start()
}

fn code(reply: &str) -> &str {
    &reply[..3]
}

// ---- SMTP smuggling ------------------------------------------------------------------

/// Every end-of-data look-alike published by SEC Consult's SMTP-Smuggling-Tools (inbound
/// and outbound lists) and by smtpsmug, and more of the same family. None of them may end
/// the data: only `<CRLF>.<CRLF>` does.
const LOOK_ALIKES: &[&[u8]] = &[
    b"\n.\n",           // <LF>.<LF>
    b"\n.\r",           // <LF>.<CR>
    b"\r.\n",           // <CR>.<LF>
    b"\r.\r",           // <CR>.<CR>
    b"\n.\r\n",         // <LF>.<CRLF>
    b"\r.\r\n",         // <CR>.<CRLF>
    b"\r\n.\n",         // <CRLF>.<LF>
    b"\r\n.\r",         // <CRLF>.<CR>
    b"\r\n\x00.\r\n",   // <CRLF><NUL>.<CRLF>
    b"\r\n.\x00\r\n",   // <CRLF>.<NUL><CRLF>
    b"\r\n.\r\r\n",     // <CRLF>.<CR><CRLF>
    b"\r\r\n.\r\r\n",   // <CR><CRLF>.<CR><CRLF>
    b"\r\r\n.\n",       // <CR><CRLF>.<LF>
    b"\n.\r\r\n",       // <LF>.<CR><CRLF>
    b"\r\n.\r\r\r\n",   // <CRLF>.<CR><CR><CRLF>
    b"\r\n .\r\n",      // <CRLF><SP>.<CRLF>
    b"\r\n.\n\r\n",     // <CRLF>.<LF><CRLF>
    b"\n\r.\r\n",       // <LF><CR>.<CRLF>
    b"\r\n\r\n.\r\r\n", // an empty line, then <CRLF>.<CR><CRLF>
    b"\r\n..\r\n",      // a dot-stuffed dot line: content, not the end
];

/// A message body with `look_alike` (framed by `around` on both sides) after its first
/// line and again inside a hidden transaction, then the real end of data.
fn smuggling_body(look_alike: &[u8], around: &[u8]) -> Vec<u8> {
    let mut body = b"Subject: outer\r\n\r\nbefore".to_vec();
    for part in [around, look_alike, around] {
        body.extend_from_slice(part);
    }
    body.extend_from_slice(
        b"MAIL FROM:<smuggled@example.org>\r\nRCPT TO:<10002@qq.com>\r\nDATA\r\n\
          Subject: smuggled\r\n\r\nhidden",
    );
    for part in [around, look_alike, around] {
        body.extend_from_slice(part);
    }
    body.extend_from_slice(b"after\r\n.\r\n");
    body
}

/// Checks that the newest message is the outer one, with the hidden transaction inside.
fn assert_one_message_with_the_hidden_text(server: &QqMx, before: usize, what: &str) {
    let messages = server.messages();
    assert_eq!(messages.len(), before + 1, "{what}: exactly one message");
    let message = &messages[before];
    assert_eq!(message.rcpt_to, ["10001@qq.com"], "{what}");
    let text = message.text();
    for hidden in [
        "before",
        "MAIL FROM:<smuggled@example.org>",
        "RCPT TO:<10002@qq.com>",
        "Subject: smuggled",
        "hidden",
        "after\r\n",
    ] {
        assert!(text.contains(hidden), "{what}: {hidden:?} not in {text:?}");
    }
    assert!(text.ends_with("after\r\n"), "{what}: {text:?}");
}

#[tokio::test]
async fn no_look_alike_ends_the_data_step_by_step() {
    let server = server_with("");
    for look_alike in LOOK_ALIKES {
        for around in [&b""[..], b"\r\n"] {
            let what = format!("{look_alike:?} framed by {around:?}, step by step");
            let before = server.messages().len();
            let mut smtp = Smtp::connect(server.addr()).await;
            smtp.send("EHLO a.example").await;
            smtp.send("MAIL FROM:<a@example.org>").await;
            smtp.send("RCPT TO:<10001@qq.com>").await;
            assert_eq!(code(&smtp.send("DATA").await), "354", "{what}");

            smtp.write_raw(&smuggling_body(look_alike, around)).await;
            let end = smtp.read_reply().await;
            let bye = smtp.send("QUIT").await;

            assert_eq!(end, "250 Ok: queued as ", "{what}");
            assert_eq!(bye, "221 Bye.", "{what}: no reply in between");
            assert!(smtp.closed().await, "{what}");
            assert_one_message_with_the_hidden_text(&server, before, &what);
        }
    }
}

#[tokio::test]
async fn no_look_alike_ends_the_data_pipelined() {
    let server = server_with("");
    for look_alike in LOOK_ALIKES {
        for around in [&b""[..], b"\r\n"] {
            let what = format!("{look_alike:?} framed by {around:?}, in one write");
            let before = server.messages().len();
            let mut smtp = Smtp::connect(server.addr()).await;
            let mut all =
                b"EHLO a.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<10001@qq.com>\r\nDATA\r\n"
                    .to_vec();
            all.extend_from_slice(&smuggling_body(look_alike, around));
            all.extend_from_slice(b"QUIT\r\n");

            smtp.write_raw(&all).await;
            let mut codes = Vec::new();
            for _ in 0..6 {
                codes.push(code(&smtp.read_reply().await).to_owned());
            }

            assert_eq!(codes, ["250", "250", "250", "354", "250", "221"], "{what}");
            assert!(smtp.closed().await, "{what}: nothing after the 221");
            assert_one_message_with_the_hidden_text(&server, before, &what);
        }
    }
}

#[tokio::test]
async fn dot_stuffing_and_bare_line_ends_survive_the_strict_end() {
    let server = server_with("");
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("HELO a.example").await;
    smtp.send("MAIL FROM:<a@example.org>").await;
    smtp.send("RCPT TO:<10001@qq.com>").await;
    smtp.send("DATA").await;

    // Sent a byte at a time, so that every state of the scanner meets a read boundary.
    let body = b"..first\r\nbare\nlf and bare\rcr\r\n..\r\n.\r\r\nend\r\n.\r\n";
    for byte in body {
        smtp.write_raw(std::slice::from_ref(byte)).await;
    }
    let end = smtp.read_reply().await;

    assert_eq!(end, "250 Ok: queued as ");
    let messages = server.messages();
    let raw = &messages[0].raw;
    let content = b".first\r\nbare\nlf and bare\rcr\r\n.\r\n\r\r\nend\r\n";
    assert!(raw.ends_with(content), "{:?}", String::from_utf8_lossy(raw));
}

// ---- connections past the cap --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_connection_cap_gets_an_answer_on_every_connection() {
    const CAP: usize = 10;
    let burst = burst_size(1500);
    let server = server_with(&format!("[limits]\nmax_connections = {CAP}\n"));
    let addr = server.addr();

    let (answer, mut answers_in) = tokio::sync::mpsc::unbounded_channel();
    let (hold, held) = tokio::sync::watch::channel(false);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..burst {
        let (answer, mut held) = (answer.clone(), held.clone());
        clients.spawn(async move {
            let mut line = Vec::new();
            // A hang guard only: the answer comes at once, but a connection may wait
            // in the accept queue while the burst is accepted on a loaded machine.
            let read = tokio::time::timeout(Duration::from_secs(60), async {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    return None;
                };
                let mut byte = [0u8; 1];
                while !line.ends_with(b"\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        break;
                    }
                    line.push(byte[0]);
                }
                Some(stream)
            })
            .await;
            let answered = matches!(read, Ok(Some(_)));
            let line = String::from_utf8_lossy(&line).into_owned();
            let _ = answer.send((answered, line));
            // The greeted keep their slots until every client has its answer.
            let _ = held.wait_for(|release| *release).await;
            drop(read);
        });
    }
    drop(answer);
    let mut answers = Vec::new();
    while answers.len() < burst {
        let next = tokio::time::timeout(Duration::from_secs(90), answers_in.recv())
            .await
            .expect("every client is done within its hang guard")
            .expect("every client answers");
        answers.push(next);
    }
    hold.send_replace(true);
    while clients.join_next().await.is_some() {}

    let mut seen = std::collections::BTreeMap::new();
    for (_, line) in &answers {
        *seen.entry(line.as_str()).or_insert(0) += 1;
    }
    let silent = answers.iter().filter(|(read, _)| !read).count();
    let greeted = answers
        .iter()
        .filter(|(_, line)| line.starts_with("220 "))
        .count();
    let turned_away = answers
        .iter()
        .filter(|(_, line)| line == "421 newxmmxszc23-0.qq.com Error: too many connections\r\n")
        .count();
    assert_eq!(silent, 0, "every connection gets a line: {seen:?}");
    assert_eq!(greeted, CAP, "the cap is served");
    assert_eq!(greeted + turned_away, burst, "{seen:?}");
}

/// `wanted` connections, or fewer if the process may not open that many files: each
/// connection takes two descriptors here, the client's and the server's.
fn burst_size(wanted: usize) -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        })
        .unwrap_or(1024);
    wanted.min(limit.saturating_sub(200) / 2)
}

// ---- the in-flight byte budget -------------------------------------------------------

const BUDGET: &str = "[limits]\nmax_inflight_bytes = 1048576\n";

async fn ready_for_data(server: &QqMx, size: Option<u64>) -> (Smtp, String) {
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO a.example").await;
    let mail = match size {
        Some(size) => format!("MAIL FROM:<a@example.org> SIZE={size}"),
        None => "MAIL FROM:<a@example.org>".to_owned(),
    };
    assert_eq!(code(&smtp.send(&mail).await), "250");
    assert_eq!(code(&smtp.send("RCPT TO:<10001@qq.com>").await), "250");
    let data = smtp.send("DATA").await;
    (smtp, data)
}

fn filler(bytes: usize) -> Vec<u8> {
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n";
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    while body.len() < bytes {
        body.extend_from_slice(line);
    }
    body
}

#[tokio::test]
async fn data_past_the_inflight_budget_gets_451() {
    let server = server_with(BUDGET);

    // The announced size is taken from the budget at DATA.
    let (mut big, data) = ready_for_data(&server, Some(900_000)).await;
    assert_eq!(code(&data), "354");
    // A little room is left: DATA is accepted, but the message outgrows it.
    let (mut outgrown, data) = ready_for_data(&server, None).await;
    assert_eq!(code(&data), "354");
    outgrown.write_raw(&filler(300_000)).await;
    let busy_at_end = outgrown.data("").await;
    // No room for what this one announces: refused at DATA.
    let (mut refused, busy_at_data) = ready_for_data(&server, Some(200_000)).await;

    big.write_raw(&filler(800_000)).await;
    let stored = big.data("").await;
    // Once the big message is stored, its room is free again.
    let retried = refused.send("DATA").await;
    let small = refused.data("Subject: small\r\n\r\nhi\r\n").await;

    assert_eq!(busy_at_end, "451 Error: system busy, try again later");
    assert_eq!(busy_at_data, "451 Error: system busy, try again later");
    assert_eq!(stored, "250 Ok: queued as ");
    assert_eq!(
        (code(&retried), small.as_str()),
        ("354", "250 Ok: queued as ")
    );
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    assert!(messages[0].raw.len() > 800_000);
    // The sessions go on after a 451.
    assert_eq!(outgrown.send("RSET").await, "250 OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_messages_are_stored_or_refused_never_dropped_silently() {
    const CLIENTS: usize = 8;
    let server = server_with(BUDGET);
    let addr = server.addr();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        clients.spawn(async move {
            let mut smtp = Smtp::connect(addr).await;
            smtp.send("EHLO a.example").await;
            smtp.send("MAIL FROM:<a@example.org>").await;
            smtp.send("RCPT TO:<10001@qq.com>").await;
            let data = smtp.send("DATA").await;
            if code(&data) != "354" {
                return data;
            }
            smtp.write_raw(&filler(400_000)).await;
            smtp.data("").await
        });
    }
    let mut replies = Vec::new();
    while let Some(reply) = clients.join_next().await {
        replies.push(reply.expect("client task"));
    }

    let stored = replies
        .iter()
        .filter(|r| r.as_str() == "250 Ok: queued as ")
        .count();
    let busy = replies
        .iter()
        .filter(|r| r.as_str() == "451 Error: system busy, try again later")
        .count();
    assert_eq!(stored + busy, CLIENTS, "{replies:?}");
    assert_eq!(server.messages().len(), stored);
    // However the race went, every share of the budget was given back: a message that
    // fills most of it fits now.
    let (mut alone, data) = ready_for_data(&server, Some(900_000)).await;
    assert_eq!(code(&data), "354");
    alone.write_raw(&filler(890_000)).await;
    assert_eq!(alone.data("").await, "250 Ok: queued as ");
}

// ---- trickling clients ---------------------------------------------------------------

/// Writes one byte of `bytes` every `every` until the server stops taking them, and
/// returns what the server said and how long after `start` it closed.
async fn trickle(
    mut stream: TcpStream,
    start: Instant,
    bytes: &[u8],
    every: Duration,
) -> (String, Duration) {
    let (mut reader, mut writer) = stream.split();
    let mut said = Vec::new();
    let reading = async {
        let _ = reader.read_to_end(&mut said).await;
        start.elapsed()
    };
    let writing = async {
        for byte in bytes {
            if writer.write_all(std::slice::from_ref(byte)).await.is_err() {
                break;
            }
            tokio::time::sleep(every).await;
        }
        std::future::pending::<()>().await;
    };
    // A hang guard of tens of seconds; the limits under test are a few seconds.
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::select! {
            closed = reading => closed,
            () = writing => unreachable!("writing never ends"),
        }
    })
    .await
    .expect("the server closes the connection");
    (String::from_utf8_lossy(&said).into_owned(), closed)
}

#[tokio::test]
async fn a_command_trickled_a_byte_at_a_time_is_timed_out() {
    let server = server_with("[limits]\ncommand_timeout = \"2s\"\n");
    let (stream, said, sent) = raw_session(&server, &["HELO a.example"]).await;
    assert_eq!(code(&said[1]), "250");

    // One byte every 300 ms keeps the 5-minute idle timeout at bay for ever.
    let line = b"MAIL FROM:<a@example.org>".repeat(8);
    let (said, closed) = trickle(stream, sent, &line, Duration::from_millis(300)).await;

    assert_eq!(
        said,
        "421 newxmmxszc23-0.qq.com Error: timeout exceeded\r\n"
    );
    // Only a lower bound: the deadline counts from the reply to HELO, which the server
    // wrote after the client sent HELO.
    assert!(closed >= Duration::from_secs(2), "{closed:?}");
    let closes = server.events();
    assert!(
        closes.iter().any(|e| matches!(&e.kind,
            qqmx::EventKind::Closed { reason } if *reason == qqmx::CloseReason::CommandTimeout)),
        "{closes:?}"
    );
}

#[tokio::test]
async fn data_trickled_below_the_minimum_rate_is_timed_out() {
    let server = server_with("[limits]\nmin_data_rate = 1000\nmin_data_rate_window = \"3s\"\n");
    let (stream, said, sent) = raw_session(&server, TO_DATA).await;
    assert_eq!(code(&said[4]), "354");

    // Three bytes a second against a thousand.
    let body = filler(1000);
    let (said, closed) = trickle(stream, sent, &body, Duration::from_millis(300)).await;

    assert_eq!(
        said,
        "421 newxmmxszc23-0.qq.com Error: timeout exceeded\r\n"
    );
    // The window is also the grace period, counted from the 354, which the server wrote
    // after the client sent DATA: never sooner than that.
    assert!(closed >= Duration::from_secs(3), "{closed:?}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn data_at_a_fair_rate_is_not_cut_off() {
    let server = server_with("[limits]\nmin_data_rate = 1000\nmin_data_rate_window = \"5s\"\n");
    let (mut smtp, data) = ready_for_data(&server, None).await;
    assert_eq!(code(&data), "354");

    // 40 kB/s for a second against 1 kB/s; only a stall of 5 s would fail this.
    for chunk in filler(40_000).chunks(4000) {
        smtp.write_raw(chunk).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = smtp.data("").await;

    assert_eq!(end, "250 Ok: queued as ");
}

/// A plain session up to `commands`, each answered with one line, on a bare stream;
/// with the time just before the last command was sent.
async fn raw_session(server: &QqMx, commands: &[&str]) -> (TcpStream, Vec<String>, Instant) {
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    let mut said = vec![read_line(&mut stream).await];
    let mut sent = Instant::now();
    for command in commands {
        sent = Instant::now();
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .expect("write");
        said.push(read_line(&mut stream).await);
    }
    (stream, said, sent)
}

/// Reads one line, byte by byte so that nothing after it is taken.
async fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        let n = tokio::time::timeout(common::PATIENCE, stream.read(&mut byte))
            .await
            .expect("qqmx answers in time")
            .expect("read");
        assert!(n > 0, "closed after {line:?}");
        line.push(byte[0]);
    }
    String::from_utf8(line).expect("UTF-8")
}

const TO_DATA: &[&str] = &[
    "HELO a.example",
    "MAIL FROM:<a@example.org>",
    "RCPT TO:<10001@qq.com>",
    "DATA",
];

// ---- command syntax ------------------------------------------------------------------

#[tokio::test]
async fn starttls_with_an_argument_is_a_syntax_error() {
    let server = server_with("");
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO a.example").await;

    let reply = smtp.send("STARTTLS now please").await;
    let still_plain = smtp.send("NOOP").await;

    assert_eq!(reply, "501 Error: bad syntax");
    assert_eq!(still_plain, "250 OK");
}

#[tokio::test]
async fn address_literals_are_valid_senders() {
    let server = server_with("");
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO a.example").await;

    for from in [
        "<a@[127.0.0.1]>",
        "<a@[IPv6:::1]>",
        "<a@[IPv6:2001:db8::1]>",
    ] {
        let reply = smtp.send(&format!("MAIL FROM:{from}")).await;
        assert_eq!(reply, "250 OK.", "{from}");
    }
}

#[tokio::test]
async fn a_sender_without_a_domain_or_with_an_empty_path_is_refused() {
    let server = server_with("");
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO a.example").await;

    for from in ["<postmaster>", "<@a,@b:>", "<@a:>"] {
        let reply = smtp.send(&format!("MAIL FROM:{from}")).await;
        assert_eq!(code(&reply), "501", "{from}: {reply}");
    }
    // Postmaster without a domain stays valid as a recipient.
    smtp.send("MAIL FROM:<a@example.org>").await;
    assert_eq!(smtp.send("RCPT TO:<postmaster>").await, "250 OK 1");
}

#[tokio::test]
async fn a_repeated_size_parameter_is_refused() {
    let server = server_with("");
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO a.example").await;

    let twice = smtp
        .send("MAIL FROM:<a@example.org> SIZE=10 SIZE=999999999999")
        .await;
    let once = smtp.send("MAIL FROM:<a@example.org> SIZE=10").await;

    assert_eq!(twice, "501 Error: bad syntax");
    assert_eq!(once, "250 OK.");
}

#[tokio::test]
async fn a_control_byte_in_helo_is_refused_and_never_reaches_received() {
    let server = server_with("");
    let mut smtp = Smtp::connect(server.addr()).await;

    smtp.write_raw(b"HELO evil\x00.example\r\n").await;
    let nul = smtp.read_reply().await;
    smtp.write_raw(b"EHLO evil\x1b[31m.example\r\n").await;
    let escape = smtp.read_reply().await;
    let mail = smtp.send("MAIL FROM:<a@example.org>").await;

    assert_eq!(nul, "501 Error: bad syntax");
    assert_eq!(escape, "501 Error: bad syntax");
    assert_eq!(mail, "503 Error: send HELO/EHLO first");
}
