//! The policy end to end: Python's smtplib sends from 127.0.0.2 and 127.0.0.3 to a qqmx
//! with the default (plausible QQ) limits, while the test moves the clock.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use qqmx::{Expectation, QqMx, ReplyKind};

/// A long-lived smtplib process that sends a batch per request.
struct Sender {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next: u64,
}

struct Batch {
    accepted: u64,
    refused: Vec<(u16, String)>,
}

impl Sender {
    fn start(server: &QqMx) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/smtplib_driver.py"
        );
        let mut child = Command::new("python3")
            .args([script, "127.0.0.1", &server.addr().port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            stdout,
            next: 100_000,
        }
    }

    /// Sends `count` messages from `source`, each to a new recipient with its own body.
    fn send(&mut self, source: &str, count: u64) -> Batch {
        let plan = format!(
            r#"{{"source": "{source}", "count": {count}, "first": {}}}"#,
            self.next
        );
        self.next += count;
        writeln!(self.stdin, "{plan}").expect("plan sent");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("batch result");
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        Batch {
            accepted: value["accepted"].as_u64().expect("accepted"),
            refused: value["refused"]
                .as_array()
                .expect("refused")
                .iter()
                .map(|r| {
                    (
                        r[0].as_u64().expect("code") as u16,
                        r[1].as_str().expect("text").to_owned(),
                    )
                })
                .collect(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// Tencent's advice as qqmx's default schedule has it.
fn allowance(day: u64) -> u64 {
    match day {
        1..=3 => 50,
        4..=7 => 150,
        8..=14 => 300,
        _ => 300 + 25 * (day - 14),
    }
}

#[test]
fn a_sender_that_follows_the_warm_up_schedule_gets_everything_accepted() {
    let server = QqMx::start();
    server.expect(Expectation::replies(ReplyKind::IpFrequency, 0));
    let mut sender = Sender::start(&server);

    let mut total = 0;
    for day in 1..=21 {
        let mut sent = 0;
        let mut elapsed = Duration::ZERO;
        while sent < allowance(day) {
            // Batches of 50, two minutes apart: under the minute and hour tiers.
            let count = 50.min(allowance(day) - sent);
            let batch = sender.send("127.0.0.2", count);
            assert_eq!(
                batch.accepted,
                count,
                "day {day}: {:?}",
                batch.refused.first()
            );
            sent += count;
            server.clock().advance(2 * MINUTE);
            elapsed += 2 * MINUTE;
        }
        total += sent;
        server.clock().advance(DAY - elapsed);
    }

    assert_eq!(server.stats().since_reset.messages_accepted, total);
    assert_eq!(total, 5650);
}

#[test]
fn five_hundred_on_day_one_are_cut_off_until_midnight() {
    let server = QqMx::start();
    let mut sender = Sender::start(&server);

    let day_one = sender.send("127.0.0.3", 500);

    assert_eq!(day_one.accepted, 50, "a new IP gets 50 on its first day");
    assert_eq!(day_one.refused.len(), 450);
    let (code, text) = &day_one.refused[0];
    assert_eq!(*code, 550);
    let prefix = "Ip frequency limited [M";
    let suffix = " IP: 127.0.0.3]. https://service.mail.qq.com/detail/122/172.";
    assert!(text.starts_with(prefix) && text.ends_with(suffix), "{text}");
    assert_eq!(
        text.len(),
        "Ip frequency limited [".len() + 68 + suffix.len()
    );
    let blocked = server.blocks();
    assert_eq!(blocked.len(), 1);
    let until = blocked[0].until;
    let why = server
        .explain("127.0.0.3".parse().expect("ip"), server.clock().now())
        .expect("a refusal");
    assert_eq!(why.rule, "reputation.warmup");
    assert_eq!(why.until, Some(until));

    // The block ends at midnight in China, 15 hours after the 09:00 start.
    server.clock().advance(Duration::from_secs(15 * 3600 - 1));
    assert_eq!(
        sender.send("127.0.0.3", 1).accepted,
        0,
        "a second before midnight"
    );
    server.clock().advance(Duration::from_secs(1));
    assert_eq!(
        sender.send("127.0.0.3", 1).accepted,
        1,
        "midnight lifts the block"
    );
}

#[test]
fn two_loopback_addresses_are_two_clients() {
    let server = QqMx::start();
    let mut sender = Sender::start(&server);

    let first = sender.send("127.0.0.2", 60);
    let second = sender.send("127.0.0.3", 10);

    assert_eq!((first.accepted, second.accepted), (50, 10));
    let clients: std::collections::BTreeSet<String> = server
        .messages()
        .iter()
        .map(|m| m.client.to_string())
        .collect();
    assert_eq!(
        clients.into_iter().collect::<Vec<_>>(),
        ["127.0.0.2", "127.0.0.3"]
    );
}

#[test]
fn no_limits_lets_anything_through() {
    let server = QqMx::builder().no_limits().start();
    let mut sender = Sender::start(&server);

    assert_eq!(sender.send("127.0.0.4", 300).accepted, 300);
}
