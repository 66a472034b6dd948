//! Every scenario in `scenarios/` tells the reference senders apart: played by
//! `qqmx run`, its expectations hold for `examples/senders/well_behaved.py` and fail for
//! `examples/senders/naive.py`.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

const QQMX: &str = env!("CARGO_BIN_EXE_qqmx");

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn play(scenario: &Path, sender: &str, reports: &Path) -> Output {
    let sender = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/senders")
        .join(sender);
    Command::new(QQMX)
        .arg("run")
        .arg(scenario)
        .args(["--quiet", "--report-dir"])
        .arg(reports)
        .arg("--")
        .arg("python3")
        .arg(sender)
        .output()
        .expect("qqmx run starts")
}

#[test]
fn the_library_has_at_least_twelve_valid_scenarios() {
    let files = scenarios();
    assert!(files.len() >= 12, "{} scenarios", files.len());
    let output = Command::new(QQMX)
        .arg("check")
        .args(&files)
        .output()
        .expect("qqmx check runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_scenario_passes_the_well_behaved_sender_and_fails_the_naive_one() {
    let reports = std::env::temp_dir().join(format!("qqmx-scenarios-{}", std::process::id()));
    let files = scenarios();
    let failures = Mutex::new(Vec::new());
    // Four at a time: each run mostly waits on its timeline.
    let next = Mutex::new(files.iter());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                loop {
                    let Some(file) = next.lock().expect("lock").next() else {
                        break;
                    };
                    for (sender, should_pass) in [("well_behaved.py", true), ("naive.py", false)] {
                        let dir = reports.join(sender);
                        let output = play(file, sender, &dir);
                        if output.status.code() != Some(if should_pass { 0 } else { 1 }) {
                            failures.lock().expect("lock").push(format!(
                                "{} with {sender}: exit {:?}, expected {}\n{}{}",
                                file.display(),
                                output.status.code(),
                                if should_pass { "0 (pass)" } else { "1 (fail)" },
                                String::from_utf8_lossy(&output.stdout),
                                String::from_utf8_lossy(&output.stderr),
                            ));
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("lock");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// How a client sends in [`first_refusal`].
#[derive(Clone, Copy)]
struct Sending {
    /// Messages per connection.
    per_connection: u32,
    /// Whether every message has a sender address of its own (in one domain).
    distinct_senders: bool,
    /// Whether every message goes to one recipient (else each to its own).
    one_recipient: bool,
}

/// Sends up to 200 messages from 127.0.0.1 to a server
/// under `config` whose manual clock stands still at 09:00 China time, so that every
/// message falls in one minute, one hour and one day; returns the number of the first
/// message refused, the rule that refused it and the reply kind, read from the event
/// log.
fn first_refusal(config: &str, sending: Sending) -> (u32, String, String) {
    use std::io::{BufRead, BufReader, Write};

    let config = qqmx::Config::from_toml(config).expect("config");
    let clock = qqmx::Clock::manual_at_unix(1_748_826_000);
    let server = qqmx::QqMx::builder().config(config).clock(clock).start();
    let mut n = 0;
    'connections: loop {
        let stream = std::net::TcpStream::connect(server.addr()).expect("connect");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut writer = stream;
        let mut reply = |line: Option<&str>| -> u16 {
            if let Some(line) = line {
                writer
                    .write_all(format!("{line}\r\n").as_bytes())
                    .expect("write");
            }
            loop {
                let mut text = String::new();
                if reader.read_line(&mut text).expect("read") == 0 {
                    return 0;
                }
                if text.as_bytes().get(3) != Some(&b'-') {
                    return text[..3].parse().expect("a code");
                }
            }
        };
        if reply(None) >= 400 || reply(Some("EHLO client.example.org")) >= 400 {
            n += 1;
            break;
        }
        for _ in 0..sending.per_connection {
            n += 1;
            let from = if sending.distinct_senders {
                format!("news{n}@example.org")
            } else {
                "news@example.org".to_owned()
            };
            let body = format!("Subject: {n}\r\n\r\nMessage {n}.\r\n.");
            let steps = [
                format!("MAIL FROM:<{from}>"),
                format!(
                    "RCPT TO:<{}@qq.com>",
                    if sending.one_recipient {
                        10_000
                    } else {
                        10_000 + n
                    }
                ),
                "DATA".to_owned(),
                body,
            ];
            if steps.iter().any(|step| reply(Some(step)) >= 400) || n == 200 {
                break 'connections;
            }
        }
        reply(Some("QUIT"));
    }
    let events = server.store().events();
    let decision = events
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            qqmx::event::EventKind::Decision(d) if !d.is_accept() => Some(d.clone()),
            _ => None,
        })
        .expect("a refusal");
    let kind = events
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            qqmx::event::EventKind::Reply(r) if r.code >= 400 => Some(r.kind.to_string()),
            _ => None,
        })
        .expect("a refused reply");
    (n, decision.rule.to_string(), kind)
}

/// The README's table of which rule refuses first ("QQ's policy"), measured.
#[test]
fn which_rule_refuses_first_is_as_the_readme_says() {
    let warmed = "[reputation]\nwarmup = false\n";
    let pooled = Sending {
        per_connection: 10,
        distinct_senders: true,
        one_recipient: false,
    };
    let one_per_connection = Sending {
        per_connection: 1,
        ..pooled
    };
    let one_sender = Sending {
        distinct_senders: false,
        ..pooled
    };
    let one_recipient = Sending {
        one_recipient: true,
        ..pooled
    };
    let measured = [
        first_refusal("", pooled),
        first_refusal("", one_sender),
        first_refusal(warmed, pooled),
        first_refusal(warmed, one_per_connection),
        first_refusal(warmed, one_sender),
        first_refusal("", one_recipient),
    ];
    let expected = [
        (51, "reputation.warmup", "ip_frequency"),
        (51, "reputation.warmup", "ip_frequency"),
        (61, "quota.ip_messages", "ip_frequency"),
        (61, "quota.ip_connections", "connection_frequency"),
        (61, "quota.sender", "sender_frequency"),
        (11, "quota.recipient", "mailbox_unavailable"),
    ];
    let measured: Vec<(u32, &str, &str)> = measured
        .iter()
        .map(|(n, rule, kind)| (*n, rule.as_str(), kind.as_str()))
        .collect();
    assert_eq!(measured, expected);
}
