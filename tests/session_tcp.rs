//! The SMTP session over TCP, byte by byte: pipelining, sequence errors, limits, bad
//! input, STARTTLS, timeouts and shutdown.

mod common;

use std::time::Duration;

use common::{Smtp, deliver};
use qqmx::{Config, EventKind, QqMx};

fn server_with(toml: &str) -> QqMx {
    QqMx::builder()
        .config(Config::from_toml(toml).expect("test config"))
        .start()
}

fn code(reply: &str) -> &str {
    &reply[..3]
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;

    smtp.write_raw(
        b"EHLO a.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<10001@qq.com>\r\n\
          RCPT TO:<nobody@qq.com>\r\nRCPT TO:<10002@qq.com>\r\nDATA\r\n",
    )
    .await;
    let replies = [
        smtp.read_reply().await,
        smtp.read_reply().await,
        smtp.read_reply().await,
        smtp.read_reply().await,
        smtp.read_reply().await,
        smtp.read_reply().await,
    ];
    smtp.write_raw(b"Subject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        .await;
    let queued = smtp.read_reply().await;
    let bye = smtp.read_reply().await;

    let codes: Vec<&str> = replies.iter().map(|r| code(r)).collect();
    assert_eq!(codes, ["250", "250", "250", "550", "250", "354"]);
    assert_eq!(replies[2], "250 OK 1");
    assert_eq!(
        replies[4], "250 OK 2",
        "the ordinal counts accepted recipients"
    );
    assert_eq!(
        (queued.as_str(), bye.as_str()),
        ("250 Ok: queued as ", "221 Bye.")
    );
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["10001@qq.com", "10002@qq.com"]);
}

#[tokio::test]
async fn sequence_errors_get_503() {
    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;

    let mail_first = smtp.send("MAIL FROM:<a@example.org>").await;
    smtp.send("HELO a.example").await;
    let rcpt_first = smtp.send("RCPT TO:<10001@qq.com>").await;
    let data_first = smtp.send("DATA").await;
    smtp.send("MAIL FROM:<a@example.org>").await;
    let data_no_rcpt = smtp.send("DATA").await;

    assert_eq!(mail_first, "503 Error: send HELO/EHLO first");
    assert_eq!(rcpt_first, "503 Error: need MAIL command");
    assert_eq!(data_first, "503 Error: need MAIL command");
    assert_eq!(data_no_rcpt, "503 Error: need RCPT command");
}

#[tokio::test]
async fn several_transactions_and_a_second_mail_without_rset() {
    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("HELO a.example").await;

    for i in 0..3 {
        smtp.send("MAIL FROM:<first@example.org>").await;
        // QQ answers a second MAIL without RSET with 250; it replaces the first.
        assert_eq!(
            smtp.send(&format!("MAIL FROM:<s{i}@example.org>")).await,
            "250 OK."
        );
        smtp.send("RCPT TO:<10001@qq.com>").await;
        smtp.send("DATA").await;
        assert_eq!(
            smtp.data("Subject: x\r\n\r\nbody").await,
            "250 Ok: queued as "
        );
    }
    assert_eq!(smtp.send("RSET").await, "250 OK");
    assert_eq!(smtp.send("NOOP").await, "250 OK");

    let senders: Vec<String> = server.messages().into_iter().map(|m| m.mail_from).collect();
    assert_eq!(
        senders,
        ["s0@example.org", "s1@example.org", "s2@example.org"]
    );
}

#[tokio::test]
async fn vrfy_help_and_unknown_commands() {
    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;

    assert_eq!(code(&smtp.send("VRFY 10001@qq.com").await), "252");
    assert_eq!(code(&smtp.send("HELP").await), "214");
    assert_eq!(
        smtp.send("FROB").await,
        "502 Error: command not implemented"
    );
    assert_eq!(
        smtp.send("AUTH PLAIN AGFAYg==").await,
        "502 Error: command not implemented"
    );
    assert_eq!(
        smtp.send("BDAT 10 LAST").await,
        "502 Error: command not implemented"
    );
    assert_eq!(smtp.send("").await, "502 Error: command not implemented");
}

#[tokio::test]
async fn over_long_lines_are_refused_and_the_session_goes_on() {
    let server = server_with("[limits]\nmax_line_length = 100\n");
    let mut smtp = Smtp::connect(server.addr()).await;

    // One long line in one write, and one that arrives in pieces without a newline.
    let long = format!("HELO {}", "a".repeat(200));
    let first = smtp.send(&long).await;
    smtp.write_raw(format!("NOOP {}", "b".repeat(150)).as_bytes())
        .await;
    let second = smtp.read_reply().await;
    smtp.write_raw("c".repeat(300).as_bytes()).await;
    smtp.write_raw(b"\r\nNOOP\r\n").await;
    let after = smtp.read_reply().await;

    assert_eq!(first, "500 Error: line too long");
    assert_eq!(second, "500 Error: line too long");
    assert_eq!(
        after, "250 OK",
        "the rest of the long line is skipped, not parsed"
    );
}

#[tokio::test]
async fn empty_message_and_dot_stuffed_first_line() {
    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("HELO a.example").await;

    smtp.send("MAIL FROM:<a@example.org>").await;
    smtp.send("RCPT TO:<10001@qq.com>").await;
    smtp.send("DATA").await;
    let empty = smtp.data("").await;
    smtp.send("MAIL FROM:<a@example.org>").await;
    smtp.send("RCPT TO:<10001@qq.com>").await;
    smtp.send("DATA").await;
    let stuffed = smtp.data("..leading dot\r\nline\r\n..\r\n").await;

    assert_eq!(empty, "250 Ok: queued as ");
    assert_eq!(stuffed, "250 Ok: queued as ");
    let messages = server.messages();
    assert_eq!(messages[0].body(), b"", "headers only, then nothing");
    let text = messages[1].text();
    let after_headers = text
        .split_once("\r\n")
        .map(|_| ())
        .and(text.find("\r\n.leading"));
    assert!(after_headers.is_some(), "{text}");
    assert!(
        text.ends_with("\r\n.leading dot\r\nline\r\n.\r\n"),
        "{text:?}"
    );
}

#[tokio::test]
async fn size_is_enforced_at_mail_and_during_data() {
    let server = server_with("[limits]\nmax_message_size = 1000\n");
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO a.example").await;

    let declared = smtp.send("MAIL FROM:<a@example.org> SIZE=1001").await;
    smtp.send("MAIL FROM:<a@example.org> SIZE=1000").await;
    smtp.send("RCPT TO:<10001@qq.com>").await;
    smtp.send("DATA").await;
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(5000));
    let streamed = smtp.data(&big).await;
    let after = smtp.send("NOOP").await;

    assert!(
        declared.starts_with("552 Message too large ["),
        "{declared}"
    );
    assert!(
        streamed.starts_with("552 Message too large ["),
        "{streamed}"
    );
    assert_eq!(after, "250 OK");
    assert!(server.messages().is_empty());
    let rules: Vec<String> = server
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Decision(d) if !d.is_accept() => Some(d.rule.into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(
        rules,
        ["limits.max_message_size", "limits.max_message_size"]
    );
}

#[tokio::test]
async fn recipients_per_transaction_are_capped() {
    let server = server_with("[limits]\nmax_recipients = 2\n");
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("HELO a.example").await;
    smtp.send("MAIL FROM:<a@example.org>").await;

    let replies = [
        smtp.send("RCPT TO:<10001@qq.com>").await,
        smtp.send("RCPT TO:<10002@qq.com>").await,
        smtp.send("RCPT TO:<10003@qq.com>").await,
    ];

    assert_eq!(replies[2], "452 Error: too many recipients");
}

#[tokio::test]
async fn bad_addresses_and_foreign_domains() {
    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("HELO a.example").await;

    let bad_sender = smtp.send("MAIL FROM:<no-at-sign>").await;
    smtp.send("MAIL FROM:<a@example.org>").await;
    let bad_rcpt = smtp.send("RCPT TO:<a@@qq.com>").await;
    let relay = smtp.send("RCPT TO:<10001@gmail.com>").await;
    let unknown = smtp.send("RCPT TO:<nobody@qq.com>").await;

    assert!(
        bad_sender.starts_with("501 Bad address syntax ["),
        "{bad_sender}"
    );
    assert!(
        bad_rcpt.starts_with("501 Bad address syntax ["),
        "{bad_rcpt}"
    );
    assert!(bad_sender.ends_with(" IP: 127.0.0.1]. https://service.mail.qq.com/detail/122/167."));
    assert_eq!(relay, "550 Relay access denied");
    assert!(
        unknown.starts_with("550 Mailbox not found. http://service.mail.qq.com/detail/122/169 [M")
    );
}

#[tokio::test]
async fn garbage_bytes_get_replies_not_a_crash() {
    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;

    let garbage: Vec<u8> = (0..=255u8)
        .cycle()
        .take(3000)
        .filter(|&b| b != b'\n')
        .collect();
    smtp.write_raw(&garbage).await;
    smtp.write_raw(b"\r\n\xff\xfe\x00MAIL\r\n").await;
    let first = smtp.read_reply().await;
    let second = smtp.read_reply().await;
    let quit = smtp.send("QUIT").await;

    assert_eq!(code(&first), "502");
    assert_eq!(code(&second), "502");
    assert_eq!(quit, "221 Bye.");
}

#[tokio::test]
async fn a_silent_client_is_timed_out() {
    let server = server_with("[limits]\nidle_timeout = \"200ms\"\n");
    let mut smtp = Smtp::connect(server.addr()).await;

    let reply = smtp.read_reply().await;

    assert_eq!(reply, "421 newxmmxszc23-0.qq.com Error: timeout exceeded");
    assert!(smtp.closed().await);
}

#[tokio::test]
async fn a_chatty_client_is_cut_off() {
    let server = server_with("[limits]\nmax_commands = 3\n");
    let mut smtp = Smtp::connect(server.addr()).await;

    for _ in 0..3 {
        assert_eq!(smtp.send("NOOP").await, "250 OK");
    }
    let cut = smtp.send("NOOP").await;

    assert_eq!(cut, "421 newxmmxszc23-0.qq.com Error: too many commands");
    assert!(smtp.closed().await);
}

#[tokio::test]
async fn starttls_discards_pipelined_plaintext_and_hides_itself() {
    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO a.example").await;

    smtp.write_raw(b"STARTTLS\r\nNOOP\r\n").await;
    assert_eq!(smtp.read_reply().await, "220 Ready to start TLS");
    let mut smtp = smtp.tls().await;
    let ehlo = smtp.send("EHLO a.example").await;
    let again = smtp.send("STARTTLS").await;
    smtp.send("MAIL FROM:<a@example.org>").await;
    smtp.send("RCPT TO:<10001@qq.com>").await;
    smtp.send("DATA").await;
    smtp.data("Subject: secret\r\n\r\nhi").await;

    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(again, "503 Error: TLS already active");
    assert!(server.messages()[0].tls);
    let discarded: Vec<usize> = server
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Discarded { bytes } => Some(bytes),
            _ => None,
        })
        .collect();
    assert_eq!(discarded, [6], "NOOP\\r\\n was thrown away");
}

#[tokio::test]
async fn starttls_can_be_switched_off() {
    let server = server_with("[tls]\nenabled = false\n");
    let mut smtp = Smtp::connect(server.addr()).await;

    let ehlo = smtp.send("EHLO a.example").await;
    let starttls = smtp.send("STARTTLS").await;

    assert!(!ehlo.contains("STARTTLS"));
    assert_eq!(code(&starttls), "454");
}

#[tokio::test]
async fn accepted_messages_carry_qq_headers_and_the_virtual_time() {
    let server = QqMx::builder().seed(3).start();
    server.clock().advance(Duration::from_secs(86_400));

    deliver(
        server.addr(),
        "a@example.org",
        "10001@qq.com",
        "Subject: t\r\n\r\nhi",
    )
    .await;

    let message = &server.messages()[0];
    let received = message.header("Received").expect("Received header");
    assert!(
        received.starts_with("from client.example.org (client.example.org [127.0.0.1]) by newxmmxszc23-0.qq.com (NewMX) with SMTP id "),
        "{received}"
    );
    // The default manual clock starts on Monday 2 June 2025, 09:00 in China.
    assert!(
        received.ends_with("for <10001@qq.com>; Tue, 3 Jun 2025 09:00:00 +0800"),
        "{received}"
    );
    let mid = message.header("X-QQ-mid").expect("X-QQ-mid");
    assert!(mid.starts_with("xmmxszc23-0t1748912400t"), "{mid}");
    assert_eq!(mid.len(), "xmmxszc23-0t1748912400t".len() + 8);
    // Like QQ's `NgToQqU5s31XQ+vYT/V7+uk=`: 17 bytes, 24 characters, a single `=`.
    let info = message.header("X-QQ-XMRINFO").expect("X-QQ-XMRINFO");
    assert_eq!(info.len(), 24, "{info}");
    assert!(info.ends_with('=') && !info.ends_with("=="), "{info}");
    assert_eq!(message.helo, "client.example.org");
    assert_eq!(message.client.to_string(), "127.0.0.1");
}

#[tokio::test]
async fn shutdown_answers_open_sessions_with_421() {
    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("HELO a.example").await;

    drop(server);
    let reply = smtp.read_reply().await;

    assert_eq!(
        reply,
        "421 newxmmxszc23-0.qq.com Service not available, closing transmission channel"
    );
    assert!(smtp.closed().await);
}

#[tokio::test]
async fn every_command_reply_and_decision_is_an_event() {
    let server = QqMx::start();

    deliver(server.addr(), "a@example.org", "10001@qq.com", "hi").await;

    let kinds: Vec<String> = server
        .events()
        .iter()
        .map(|e| match &e.kind {
            EventKind::Connected { .. } => "connected".to_owned(),
            EventKind::Command(command) => format!("C {}", command.line),
            EventKind::Reply(r) => format!("S {}", r.kind),
            EventKind::Decision(d) => format!("D {}", d.rule),
            EventKind::Accepted { message } => format!("accepted {message}"),
            EventKind::Closed { reason } => format!("closed: {reason}"),
            EventKind::Spf(spf) => format!("spf {}", spf.result),
            EventKind::Authenticated(report) => format!("dmarc {}", report.dmarc.result),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "connected",
            "D connect.ok",
            "S greeting",
            "C EHLO client.example.org",
            "D helo.ok",
            "S ehlo",
            "C MAIL FROM:<a@example.org>",
            "spf none",
            "D mail.ok",
            "S mail_ok",
            "C RCPT TO:<10001@qq.com>",
            "D mailbox.exists",
            "S rcpt_ok",
            "C DATA",
            "D data.ok",
            "S data_start",
            "dmarc none",
            "D message.ok",
            "accepted 1",
            "S queued",
            "C QUIT",
            "S bye",
            "closed: quit",
        ]
    );
}

#[tokio::test]
async fn a_recipient_named_twice_gets_the_message_once() {
    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("HELO a.example").await;
    smtp.send("MAIL FROM:<a@example.org>").await;

    let first = smtp.send("RCPT TO:<10001@qq.com>").await;
    let again = smtp.send("RCPT TO:<10001@QQ.com>").await;
    smtp.send("DATA").await;
    smtp.data("Subject: once\r\n\r\nhi").await;

    assert_eq!((first.as_str(), again.as_str()), ("250 OK 1", "250 OK 1"));
    assert_eq!(server.messages()[0].rcpt_to, ["10001@qq.com"]);
}

#[tokio::test]
async fn a_proxy_protocol_header_gives_the_client_address() {
    let server = server_with("[server]\nproxy_protocol = true\n");
    let mut stream = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 25\r\n",
    )
    .await
    .expect("header");
    drop(stream);
    let mut smtp = Smtp::connect_after_proxy(
        server.addr(),
        b"PROXY TCP4 198.51.100.7 127.0.0.1 4444 25\r\n",
    )
    .await;

    smtp.send("HELO a.example").await;
    let unknown = smtp.send("RCPT TO:<nobody@qq.com>").await;
    smtp.send("MAIL FROM:<a@example.org>").await;
    let refused = smtp.send("RCPT TO:<nobody@qq.com>").await;

    assert_eq!(unknown, "503 Error: need MAIL command");
    assert!(refused.ends_with(" IP: 198.51.100.7]"), "{refused}");
    let clients: Vec<String> = server
        .events()
        .iter()
        .map(|e| e.client.to_string())
        .collect();
    assert!(
        clients
            .iter()
            .all(|c| c == "198.51.100.7" || c == "203.0.113.9"),
        "{clients:?}"
    );
}

#[tokio::test]
async fn without_a_proxy_header_the_connection_is_closed() {
    let server = server_with("[server]\nproxy_protocol = true\n");
    let mut stream = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"EHLO client.example\r\n")
        .await
        .expect("write");

    let mut buf = Vec::new();
    // The close may arrive as a reset: the client's bytes were left unread.
    let _ = tokio::time::timeout(
        common::PATIENCE,
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut buf),
    )
    .await
    .expect("closed in time");

    assert!(buf.is_empty(), "closed without a word: {buf:?}");
}

#[tokio::test]
async fn starttls_presents_a_certificate_from_pem_files() {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["mx1.qq.com".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let dir = std::env::temp_dir().join(format!("qqmx-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("key");
    let server = server_with(&format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        cert_path.display().to_string(),
        key_path.display().to_string()
    ));

    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO a.example").await;
    smtp.send("STARTTLS").await;
    let (smtp, presented) = smtp.tls_with_peer_certificate().await;

    assert_eq!(presented, cert.der().to_vec());
    drop(smtp);
}

#[test]
fn a_missing_pem_file_is_a_start_error() {
    let config = Config::from_toml(
        "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
    )
    .expect("config parses");

    let err = QqMx::builder()
        .config(config)
        .try_start()
        .expect_err("no such file");

    assert!(
        err.to_string().starts_with("/nonexistent/cert.pem: "),
        "{err}"
    );
}

#[tokio::test]
async fn a_line_the_parser_finds_unfinished_does_not_spill_into_the_next() {
    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO a.example").await;

    // smtp-proto asks for more data after "MAIL FROM" although the line is complete.
    let unfinished = smtp.send("MAIL FROM").await;
    let noop = smtp.send("NOOP").await;
    let mail = smtp.send("MAIL FROM:<a@example.org>").await;

    assert_eq!(unfinished, "501 Error: bad syntax");
    assert_eq!(noop, "250 OK", "the next line is parsed on its own");
    assert_eq!(mail, "250 OK.");
}

#[tokio::test]
async fn a_message_of_exactly_the_size_limit_is_accepted() {
    let server = server_with("[limits]\nmax_message_size = 1000\n");
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO a.example").await;
    let head = "Subject: size\r\n\r\n";
    let exact = format!("{head}{}\r\n", "x".repeat(1000 - head.len() - 2));
    let over = format!("{head}{}\r\n", "x".repeat(1001 - head.len() - 2));
    assert_eq!((exact.len(), over.len()), (1000, 1001));

    smtp.send("MAIL FROM:<a@example.org> SIZE=1000").await;
    smtp.send("RCPT TO:<10001@qq.com>").await;
    smtp.send("DATA").await;
    let at_limit = smtp.data(&exact).await;
    smtp.send("MAIL FROM:<a@example.org>").await;
    smtp.send("RCPT TO:<10001@qq.com>").await;
    smtp.send("DATA").await;
    let one_over = smtp.data(&over).await;
    let after = smtp.send("NOOP").await;

    assert_eq!(at_limit, "250 Ok: queued as ");
    assert!(
        one_over.starts_with("552 Message too large ["),
        "{one_over}"
    );
    assert_eq!(after, "250 OK");
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].raw.ends_with(exact.as_bytes()));
}

#[tokio::test]
async fn a_size_too_big_for_any_integer_is_too_large_not_small() {
    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO a.example").await;

    let huge = smtp
        .send("MAIL FROM:<a@example.org> SIZE=99999999999999999999999999")
        .await;
    let max_u64 = smtp
        .send("MAIL FROM:<a@example.org> SIZE=18446744073709551615")
        .await;
    let lower_case = smtp
        .send("MAIL FROM:<a@example.org> size=000000000000000000000000073400321")
        .await;
    let padded = smtp
        .send("MAIL FROM:<a@example.org> SIZE=000000000000000000000000073400320")
        .await;
    let not_a_number = smtp.send("MAIL FROM:<a@example.org> SIZE=12x").await;

    for reply in [&huge, &max_u64, &lower_case] {
        assert!(reply.starts_with("552 Message too large ["), "{reply}");
    }
    assert_eq!(padded, "250 OK.", "leading zeros do not make it larger");
    assert_eq!(not_a_number, "501 Error: bad syntax");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn over_long_lines_count_towards_the_command_limit() {
    let server = server_with("[limits]\nmax_commands = 3\nmax_line_length = 100\n");
    let mut smtp = Smtp::connect(server.addr()).await;
    let long = format!("NOOP {}", "a".repeat(200));

    for _ in 0..3 {
        assert_eq!(smtp.send(&long).await, "500 Error: line too long");
    }
    // The fourth arrives in pieces, without a newline yet.
    smtp.write_raw(long.as_bytes()).await;
    let cut = smtp.read_reply().await;

    assert_eq!(cut, "421 newxmmxszc23-0.qq.com Error: too many commands");
    assert!(smtp.closed().await);
}

#[tokio::test]
async fn help_lists_starttls_only_while_it_is_on_offer() {
    let with_tls = QqMx::start();
    let without_tls = server_with("[tls]\nenabled = false\n");
    let mut plain = Smtp::connect(with_tls.addr()).await;
    let mut off = Smtp::connect(without_tls.addr()).await;

    let offered = plain.send("HELP").await;
    plain.send("EHLO a.example").await;
    plain.send("STARTTLS").await;
    let mut inside = plain.tls().await;
    let inside_tls = inside.send("HELP").await;
    let switched_off = off.send("HELP").await;

    assert_eq!(
        offered,
        "214 HELO EHLO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT STARTTLS"
    );
    assert_eq!(
        inside_tls,
        "214 HELO EHLO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT"
    );
    assert_eq!(switched_off, inside_tls);
}

#[tokio::test]
async fn postmaster_and_quoted_local_parts_are_mailboxes_like_any_other() {
    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO a.example").await;

    let quoted_sender = smtp.send("MAIL FROM:<\"john doe\"@example.org>").await;
    let bare_postmaster = smtp.send("RCPT TO:<Postmaster>").await;
    let postmaster = smtp.send("RCPT TO:<postmaster@foxmail.com>").await;
    let quoted_unknown = smtp.send("RCPT TO:<\"john doe\"@qq.com>").await;
    let quoted_number = smtp.send("RCPT TO:<\"10001\"@qq.com>").await;
    let null = smtp.send("RCPT TO:<>").await;
    smtp.send("DATA").await;
    let queued = smtp.data("Subject: hi\r\n\r\nhello").await;

    assert_eq!(quoted_sender, "250 OK.");
    // RFC 5321 4.5.1: <Postmaster> without a domain must be accepted.
    assert_eq!(bare_postmaster, "250 OK 1");
    assert_eq!(postmaster, "250 OK 2");
    assert!(
        quoted_unknown.starts_with("550 Mailbox not found. "),
        "judged by the mailbox rules, not as bad syntax: {quoted_unknown}"
    );
    assert_eq!(
        quoted_number, "250 OK 3",
        "\"10001\" is the QQ number 10001"
    );
    assert!(null.starts_with("501 Bad address syntax ["), "{null}");
    assert_eq!(queued, "250 Ok: queued as ");
    let messages = server.messages();
    assert_eq!(messages[0].mail_from, "\"john doe\"@example.org");
    assert_eq!(
        messages[0].rcpt_to,
        [
            "Postmaster@qq.com",
            "postmaster@foxmail.com",
            "10001@qq.com"
        ]
    );
}

#[tokio::test]
async fn a_proxy_v2_header_without_an_ip_leaves_the_real_peer() {
    let server = server_with("[server]\nproxy_protocol = true\n");
    let signature = b"\r\n\r\n\0\r\nQUIT\n";
    // PROXY over AF_UNIX: two 108-byte socket paths, no IP address.
    let mut unix = signature.to_vec();
    unix.extend_from_slice(&[0x21, 0x31, 0, 216]);
    unix.extend_from_slice(&[0u8; 216]);
    // LOCAL, the proxy's own health check.
    let mut local = signature.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);

    let mut over_unix = Smtp::connect_after_proxy(server.addr(), &unix).await;
    let mut health_check = Smtp::connect_after_proxy(server.addr(), &local).await;
    over_unix.send("HELO a.example").await;
    over_unix.send("MAIL FROM:<a@example.org>").await;
    let refused = over_unix.send("RCPT TO:<nobody@qq.com>").await;
    let bye = health_check.send("QUIT").await;

    assert!(refused.ends_with(" IP: 127.0.0.1]"), "{refused}");
    assert_eq!(bye, "221 Bye.");
}

#[tokio::test]
async fn a_refusal_at_rcpt_counts_the_recipients_of_its_transaction() {
    // `{n}` in a reply override is the number of recipients accepted so far; a refusal
    // at RCPT is rendered while the transaction is open.
    let server = server_with("[replies]\nmailbox_not_found = \"550 no such user after {n}\"\n");
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO client.example.org").await;
    smtp.send("MAIL FROM:<a@example.org>").await;
    assert_eq!(code(&smtp.send("RCPT TO:<10001@qq.com>").await), "250");
    assert_eq!(code(&smtp.send("RCPT TO:<10002@qq.com>").await), "250");
    let refused = smtp.send("RCPT TO:<0@qq.com>").await;
    assert_eq!(refused, "550 no such user after 2");
}

#[tokio::test]
async fn commands_are_recorded_with_their_verb_arguments_and_transaction() {
    use qqmx::CloseReason;
    use qqmx::event::Verb;

    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("ehlo client.example.org").await;
    smtp.send("MAIL FROM:<A@Example.org> SIZE=10 BODY=8BITMIME")
        .await;
    smtp.send("RCPT TO:<10001@qq.com>").await;
    smtp.send("RSET").await;
    smtp.send("NOOP").await;
    smtp.send("MAIL FROM:<>").await;
    smtp.send("RCPT TO:<10002@qq.com> NOTIFY=NEVER").await;
    smtp.send("QUIT").await;
    assert!(smtp.closed().await);

    let events = server.events();
    let commands: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Command(c) => Some((e.transaction, c)),
            _ => None,
        })
        .collect();
    let verbs: Vec<_> = commands.iter().map(|(_, c)| c.verb).collect();
    assert_eq!(
        verbs,
        [
            Verb::Ehlo,
            Verb::Mail,
            Verb::Rcpt,
            Verb::Rset,
            Verb::Noop,
            Verb::Mail,
            Verb::Rcpt,
            Verb::Quit
        ]
    );
    let transactions: Vec<_> = commands.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        transactions,
        [
            None,
            Some(1),
            Some(1),
            Some(1),
            None,
            Some(2),
            Some(2),
            Some(2)
        ]
    );
    let (_, helo) = commands[0];
    assert_eq!(helo.host.as_deref(), Some("client.example.org"));
    let (_, mail) = commands[1];
    assert_eq!(mail.address.as_deref(), Some("A@Example.org"));
    let params: Vec<_> = mail
        .params
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_deref()))
        .collect();
    assert_eq!(params, [("SIZE", Some("10")), ("BODY", Some("8BITMIME"))]);
    assert_eq!(commands[5].1.address.as_deref(), Some(""));
    assert_eq!(commands[6].1.address.as_deref(), Some("10002@qq.com"));
    assert_eq!(commands[6].1.params[0].name, "NOTIFY");
    // The reply to RSET is the last event of the first transaction.
    let rset = events
        .iter()
        .position(|e| matches!(&e.kind, EventKind::Command(c) if c.verb == Verb::Rset))
        .expect("RSET");
    assert_eq!(events[rset + 1].transaction, Some(1));
    assert!(matches!(events[rset + 1].kind, EventKind::Reply(_)));
    let last = events.last().expect("events");
    assert!(
        matches!(
            last.kind,
            EventKind::Closed {
                reason: CloseReason::Quit
            }
        ),
        "{last:?}"
    );
}
