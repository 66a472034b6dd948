//! The session in memory, the fastest level of session tests: a client script over a
//! `tokio::io::duplex` pipe against a session whose engine is assembled as the server
//! assembles it, on a manual clock, with no socket and (unless a test asks) no TLS. The
//! same conversations over TCP are in `tests/session_tcp.rs`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use super::{Engine, Inflight, Listener, serve};
use crate::chaos::{Fault, FaultKind, Faults};
use crate::clock::Clock;
use crate::config::Config;
use crate::event::{CloseReason, Event, EventKind, Verb};
use crate::server::engine_with_tls;
use crate::store::Store;
use crate::units::Stage;

/// The manual clock's reading for every session here.
const NOW_UNIX: u64 = 1_748_826_000;

/// Far longer than any session here takes; only a session that hangs reaches it (a test
/// that waits for more replies than come), and the test then fails with what it read.
const HUNG: Duration = Duration::from_secs(60);

/// An engine for `config`, with `faults` in force and no TLS acceptor.
fn engine(config: Config, faults: Vec<Fault>) -> Arc<Engine> {
    let clock = Clock::manual_at_unix(NOW_UNIX);
    let store = Store::new(clock.clone(), config.store.clone());
    let mut chaos = Faults::new(config.seed);
    chaos.set(faults);
    let engine = engine_with_tls(
        config,
        store,
        clock,
        Arc::new(Mutex::new(chaos)),
        Arc::new(Inflight::default()),
        None,
    )
    .expect("the test configs are valid");
    Arc::new(engine)
}

/// A config read from `toml`.
fn config(toml: &str) -> Config {
    Config::from_toml(toml).expect("a valid test config")
}

/// What a session said and recorded: the conversation as `C:` and `S:` lines (without
/// CRLF), and the session's events.
struct Transcript {
    lines: Vec<String>,
    events: Vec<Event>,
}

impl Transcript {
    /// The server's lines, in order.
    fn replies(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|line| line.strip_prefix("S: "))
            .collect()
    }

    /// The reply codes of the server's last lines (one per reply), in order.
    fn codes(&self) -> Vec<&str> {
        self.replies()
            .into_iter()
            .filter(|line| line.as_bytes().get(3) != Some(&b'-'))
            .map(|line| &line[..3])
            .collect()
    }

    /// Why the session closed.
    fn closed(&self) -> Option<CloseReason> {
        self.events.iter().find_map(|event| match event.kind {
            EventKind::Closed { reason } => Some(reason),
            _ => None,
        })
    }
}

/// Runs a session on `engine`: the client sends each step's bytes, then waits for that
/// many replies (final reply lines) before the next step; after the last, it closes its
/// side and reads until the server closes.
async fn converse(engine: &Arc<Engine>, steps: &[(&[u8], usize)]) -> Transcript {
    let (client, server) = tokio::io::duplex(1024 * 1024);
    let (_stop, stopped) = watch::channel(false);
    let peer = SocketAddr::from(([192, 0, 2, 1], 40_000));
    let local = SocketAddr::from(([127, 0, 0, 1], 25));
    let listener = Listener { mx: "mx1", local };
    let server_side = serve(engine.clone(), server, peer, listener, stopped);
    let (lines, ()) = tokio::time::timeout(HUNG, async {
        tokio::join!(client_run(client, steps), server_side)
    })
    .await
    .expect("the session ends once the client has closed");
    Transcript {
        lines,
        events: engine.store.events(),
    }
}

/// The client's side of [`converse`].
async fn client_run(mut stream: DuplexStream, steps: &[(&[u8], usize)]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut unread = Vec::new();
    for &(send, replies) in steps {
        for line in String::from_utf8_lossy(send).split_terminator("\r\n") {
            lines.push(format!("C: {line}"));
        }
        // The server may have closed: what it said is still read below.
        let _ = stream.write_all(send).await;
        let mut finals = 0;
        while finals < replies {
            let Some(line) = read_line(&mut stream, &mut unread).await else {
                panic!("the server closed after {lines:?}");
            };
            if line.as_bytes().get(3) != Some(&b'-') {
                finals += 1;
            }
            lines.push(format!("S: {line}"));
        }
    }
    let _ = stream.shutdown().await;
    while let Some(line) = read_line(&mut stream, &mut unread).await {
        lines.push(format!("S: {line}"));
    }
    lines
}

/// The next CRLF-ended line from `stream`, or `None` at its end.
async fn read_line(stream: &mut DuplexStream, unread: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = unread.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&unread[..end]).into_owned();
            unread.drain(..end + 2);
            return Some(line);
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => unread.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let engine = engine(Config::default(), Vec::new());

    let transcript = converse(
        &engine,
        &[
            (b"", 1),
            (
                b"EHLO a.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<10001@qq.com>\r\n\
                  RCPT TO:<nobody@qq.com>\r\nRCPT TO:<10002@qq.com>\r\nDATA\r\n",
                6,
            ),
            (b"Subject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n", 2),
        ],
    )
    .await;

    assert_eq!(
        transcript.codes(),
        [
            "220", "250", "250", "250", "550", "250", "354", "250", "221"
        ]
    );
    let replies = transcript.replies();
    assert!(replies.contains(&"250 OK 1") && replies.contains(&"250 OK 2"));
    assert_eq!(transcript.closed(), Some(CloseReason::Quit));
    let messages = engine.store.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["10001@qq.com", "10002@qq.com"]);
    assert_eq!(
        messages[0].received_at,
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_UNIX),
        "the message is stamped by the manual clock"
    );
}

#[tokio::test]
async fn over_long_lines_are_refused_and_the_session_goes_on() {
    let mut config = Config::default();
    config.limits.max_line_length = 64;
    let engine = engine(config, Vec::new());
    let long = format!("NOOP {}\r\nNOOP\r\n", "x".repeat(100));
    let unended = "y".repeat(100);

    let transcript = converse(
        &engine,
        &[
            (b"", 1),
            (long.as_bytes(), 2),
            // Refused as soon as it is too long; the rest of it is thrown away.
            (unended.as_bytes(), 1),
            (b"still the same line\r\nNOOP\r\nQUIT\r\n", 2),
        ],
    )
    .await;

    assert_eq!(
        transcript.replies()[1..],
        [
            "500 Error: line too long",
            "250 OK",
            "500 Error: line too long",
            "250 OK",
            "221 Bye."
        ]
    );
}

#[tokio::test]
async fn a_blacklisted_client_is_refused_at_connect_instead_of_greeted() {
    let config = config(
        "[blacklist]\nips = [\"192.0.2.1\"]\nip_stage = \"connect\"\nip_reply = \"connection_denied\"\n",
    );
    let engine = engine(config, Vec::new());

    let transcript = converse(&engine, &[(b"", 1), (b"EHLO a.example\r\n", 0)]).await;

    assert_eq!(transcript.codes().len(), 1, "{:?}", transcript.lines);
    assert!(!transcript.codes()[0].starts_with('2'));
    assert_eq!(transcript.closed(), Some(CloseReason::RefusedAtConnect));
    assert!(
        !transcript
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Command(_))),
        "nothing after the refusal is read"
    );
}

#[tokio::test]
async fn data_outside_a_transaction_is_refused_and_a_refusal_keeps_the_transaction() {
    let engine = engine(Config::default(), Vec::new());

    let transcript = converse(
        &engine,
        &[
            (b"", 1),
            (
                b"EHLO a.example\r\nDATA\r\nMAIL FROM:<a@example.org>\r\n",
                3,
            ),
            (
                b"DATA\r\nRCPT TO:<nobody@qq.com>\r\nRCPT TO:<10001@qq.com>\r\n",
                3,
            ),
            (b"DATA\r\n", 1),
            (b"Subject: x\r\n\r\nx\r\n.\r\nQUIT\r\n", 2),
        ],
    )
    .await;

    assert_eq!(
        transcript.codes(),
        [
            "220", "250", "503", "250", "503", "550", "250", "354", "250", "221"
        ]
    );
    assert_eq!(engine.store.messages().len(), 1);
    let transactions: Vec<Option<u32>> = transcript
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Reply(_)))
        .map(|e| e.transaction)
        .collect();
    assert_eq!(
        transactions,
        [
            None,
            None,
            None,
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            None
        ],
        "the transaction runs from MAIL to the reply at the end of data"
    );
}

#[tokio::test]
async fn a_close_fault_at_mail_ends_the_session_without_a_reply() {
    let engine = engine(
        Config::default(),
        vec![Fault::new(FaultKind::Close).at(Stage::Mail)],
    );

    let transcript = converse(
        &engine,
        &[
            (b"", 1),
            (b"EHLO a.example\r\n", 1),
            (
                b"MAIL FROM:<a@example.org>\r\nRCPT TO:<10001@qq.com>\r\n",
                0,
            ),
        ],
    )
    .await;

    assert_eq!(transcript.codes(), ["220", "250"]);
    assert_eq!(transcript.closed(), Some(CloseReason::FaultClose));
    let mail = transcript
        .events
        .iter()
        .find(|e| matches!(&e.kind, EventKind::Command(command) if command.verb == Verb::Mail));
    assert_eq!(
        mail.map(|e| e.transaction),
        Some(Some(1)),
        "the unanswered MAIL is in the log, in its transaction"
    );
}

#[tokio::test]
async fn a_message_held_by_a_tarpit_is_answered_after_it() {
    let mut tarpit = Fault::new(FaultKind::Tarpit).at(Stage::EndOfData);
    tarpit.delay = Some(Duration::from_millis(1));
    let engine = engine(Config::default(), vec![tarpit]);

    let transcript = converse(
        &engine,
        &[
            (b"", 1),
            (
                b"EHLO a.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<10001@qq.com>\r\nDATA\r\n",
                4,
            ),
            (b"Subject: held\r\n\r\nwait\r\n.\r\nQUIT\r\n", 2),
        ],
    )
    .await;

    assert_eq!(
        transcript.codes(),
        ["220", "250", "250", "250", "354", "250", "221"]
    );
    assert_eq!(engine.store.messages().len(), 1);
    let kinds: Vec<(&str, Option<u32>)> = transcript
        .events
        .iter()
        .skip_while(|e| !matches!(e.kind, EventKind::Fault { .. }))
        .map(|e| (e.kind.name(), e.transaction))
        .collect();
    assert_eq!(
        kinds[0],
        ("fault", Some(1)),
        "the fault belongs to the transaction whose message it holds"
    );
    assert!(kinds.contains(&("accepted", Some(1))), "{kinds:?}");
}

#[tokio::test]
async fn an_unavailable_fault_at_the_end_of_data_closes_inside_the_transaction() {
    let engine = engine(
        Config::default(),
        vec![Fault::new(FaultKind::Unavailable).at(Stage::EndOfData)],
    );

    let transcript = converse(
        &engine,
        &[
            (b"", 1),
            (
                b"EHLO a.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<10001@qq.com>\r\nDATA\r\n",
                4,
            ),
            (b"Subject: dropped\r\n\r\nlost\r\n.\r\n", 1),
        ],
    )
    .await;

    assert_eq!(
        transcript.codes(),
        ["220", "250", "250", "250", "354", "421"]
    );
    assert!(
        engine.store.messages().is_empty(),
        "the held message is dropped"
    );
    let closed = transcript
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Closed { .. }));
    assert_eq!(
        closed.map(|e| e.transaction),
        Some(Some(1)),
        "the message was never answered: its transaction is still open at the close"
    );
    assert_eq!(transcript.closed(), Some(CloseReason::FaultUnavailable));
}

#[tokio::test]
async fn starttls_is_refused_without_tls_and_not_offered() {
    let engine = engine(Config::default(), Vec::new());

    let transcript = converse(
        &engine,
        &[
            (b"", 1),
            (b"EHLO a.example\r\nSTARTTLS\r\nNOOP\r\nQUIT\r\n", 4),
        ],
    )
    .await;

    let replies = transcript.replies();
    assert!(
        !replies.iter().any(|line| line.contains("STARTTLS")),
        "{replies:?}"
    );
    assert_eq!(
        replies[replies.len() - 3..],
        [
            "454 TLS not available due to temporary reason",
            "250 OK",
            "221 Bye."
        ]
    );
    assert!(
        !transcript
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Discarded { .. })),
        "a refused STARTTLS leaves the pipelined commands to be answered"
    );
}
