//! The embedded API as a test author uses it: start, deliver, wait, expect, reset, and
//! move the clock.

mod common;

use std::time::{Duration, Instant};

use common::deliver;
use qqmx::chaos::{Fault, FaultKind};
use qqmx::expect::{Run, evaluate};
use qqmx::scenario::{RunReport, Scenario};
use qqmx::units::Stage;
use qqmx::{Clock, Config, Expectation, QqMx, ReplyKind, Times};

fn deliver_blocking(server: &QqMx, to: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(deliver(
        server.addr(),
        "a@example.org",
        to,
        "Subject: x\r\n\r\ny",
    ))
}

#[test]
fn works_from_a_plain_test_and_waits_for_messages() {
    let server = QqMx::start();
    let addr = server.addr();
    let sender = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            for to in ["10001@qq.com", "10002@qq.com"] {
                deliver(addr, "a@example.org", to, "hi").await;
            }
        });
    });

    let messages = server
        .wait_for_messages(2, Duration::from_secs(10))
        .expect("two messages");
    sender.join().expect("sender thread");

    assert_eq!(messages.len(), 2);
    let err = server
        .wait_for_messages(3, Duration::from_millis(20))
        .expect_err("only two");
    assert_eq!(
        err.to_string(),
        "waited 20ms for 3 accepted messages, got 2"
    );
    let none = QqMx::start()
        .wait_for_messages(1, Duration::from_millis(20))
        .expect_err("nothing sent");
    assert_eq!(
        none.to_string(),
        "waited 20ms for 1 accepted message, got 0"
    );
}

#[tokio::test]
async fn waits_asynchronously_inside_tokio() {
    let server = QqMx::start();
    let addr = server.addr();
    tokio::spawn(async move { deliver(addr, "a@example.org", "10001@qq.com", "hi").await });

    let messages = server
        .wait_for_messages_async(1, Duration::from_secs(10))
        .await
        .expect("one message");

    assert_eq!(messages[0].rcpt_to, ["10001@qq.com"]);
}

#[test]
fn expectations_report_what_failed_and_what_was_seen() {
    let server = QqMx::builder().seed(9).start();
    server.expect(Expectation::accepted(3));
    server.expect(Expectation::replies(ReplyKind::MailboxNotFound, 1..).named("stale list"));
    server.expect(Expectation::replies(ReplyKind::Queued, ..=1));
    deliver_blocking(&server, "10001@qq.com");

    let report = server.verify().expect_err("two expectations fail");

    assert_eq!(
        report.to_string(),
        "qqmx: 1 of 3 expectations held\n  \
         ✗ FAIL accepted exactly 3: 1 accepted, expected exactly 3\n  \
         ✗ FAIL stale list: 0 `mailbox_not_found` replies, expected at least 1\n  \
         ✓ ok   `queued` replies at most 1: 1 `queued` reply, expected at most 1\n  \
         replay with seed 9\n"
    );
    assert_eq!((report.seed, report.failures()), (9, 2));
    assert!(report.outcomes[2].passed);
    server.reset();
}

#[test]
#[should_panic(
    expected = "qqmx: 0 of 1 expectation held\n  ✗ FAIL accepted between 1 and 2: 0 accepted, expected between 1 and 2\n  replay with seed 0\n"
)]
fn failed_expectations_panic_on_drop() {
    let server = QqMx::start();
    server.expect(Expectation::accepted(1..=2));
}

#[test]
fn met_expectations_pass_silently_and_reset_forgets() {
    let server = QqMx::start();
    server.expect(Expectation::accepted(1));
    server.expect(Expectation::replies(ReplyKind::MailboxNotFound, 1));
    deliver_blocking(&server, "10001@qq.com");
    deliver_blocking(&server, "nobody@qq.com");
    assert_eq!(server.verify(), Ok(()));

    server.reset();

    assert!(server.messages().is_empty() && server.events().is_empty());
    assert_eq!(
        server.verify(),
        Ok(()),
        "the expectations went with the reset"
    );
}

#[test]
fn a_day_passes_in_no_time() {
    let server = QqMx::start();
    let start = server.clock().now();
    let real = Instant::now();

    for _ in 0..24 {
        server.clock().advance(Duration::from_secs(3600));
    }
    deliver_blocking(&server, "10001@qq.com");

    let stamped = server.messages()[0].received_at;
    assert_eq!(
        stamped.duration_since(start).ok(),
        Some(Duration::from_secs(86_400))
    );
    // A day that cost real time would take a day; a minute is far above what one
    // delivery takes even on a loaded machine, and far below the day.
    assert!(
        real.elapsed() < Duration::from_secs(60),
        "virtual time costs no real time"
    );
}

#[test]
fn servers_in_parallel_do_not_share_anything() {
    let servers: Vec<QqMx> = (0..4).map(|_| QqMx::start()).collect();

    for (i, server) in servers.iter().enumerate() {
        for _ in 0..=i {
            deliver_blocking(server, "10001@qq.com");
        }
    }

    let counts: Vec<usize> = servers.iter().map(|s| s.messages().len()).collect();
    assert_eq!(counts, [1, 2, 3, 4]);
}

#[test]
fn the_builder_takes_a_config_and_a_clock() {
    let config = Config::from_toml("generation = \"2017\"\n[mailboxes]\nexisting = \"all\"\n")
        .expect("config");
    let clock = Clock::manual_at_unix(1_000_000_000);
    let server = QqMx::builder().config(config).clock(clock.clone()).start();

    let transcript = deliver_blocking(&server, "anyone@foxmail.com");

    assert!(transcript.starts_with("S: 220 newmx17.qq.com MX QQ Mail Server\n"));
    clock.advance(Duration::from_secs(1));
    assert_eq!(qqmx::clock::unix_secs(server.clock().now()), 1_000_000_001);
    assert_eq!(server.messages()[0].rcpt_to, ["anyone@foxmail.com"]);
}

#[test]
fn the_store_cap_evicts_and_counts() {
    let config = Config::from_toml("[store]\nmax_messages = 2\n").expect("config");
    let server = QqMx::builder().config(config).start();

    for _ in 0..5 {
        deliver_blocking(&server, "10001@qq.com");
    }

    let stats = server.stats();
    assert_eq!(
        (
            stats.held.messages,
            stats.since_reset.messages_evicted,
            stats.since_reset.messages_accepted,
            stats.since_start.messages_accepted,
        ),
        (2, 3, 5, 5)
    );
    let ids: Vec<u64> = server.messages().iter().map(|m| m.id).collect();
    assert_eq!(ids, [4, 5]);

    // Expectations see what the store holds, and say what it evicted.
    server.expect(Expectation::accepted(5));
    let report = server.verify().expect_err("three were evicted").to_string();
    assert!(
        report.contains(
            "✗ FAIL accepted exactly 5: 2 accepted, expected exactly 5; 3 messages evicted by \
             the store before the check, not seen\n"
        ),
        "{report}"
    );
    server.reset();
}

#[test]
fn times_read_naturally() {
    assert_eq!(Times::from(3).to_string(), "exactly 3");
    assert_eq!(Times::from(1..).to_string(), "at least 1");
    assert_eq!(Times::from(..3).to_string(), "at most 2");
    assert_eq!(Times::from(2..=5).to_string(), "between 2 and 5");
}

#[test]
fn the_example_configs_parse() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let config = Config::from_file(format!("{dir}/qq-2019.toml")).expect("example config");
    assert_eq!(config.host(), "newxmmxszc27.qq.com");
}

/// Which of 127.0.0.2 ..= 127.0.0.40 a server with `seed` blacklists at random.
fn randomly_listed(seed: u64) -> Vec<u8> {
    let config = Config::from_toml(&format!(
        "seed = {seed}\n[blacklist]\nrandom_ip_probability = 0.5\n"
    ))
    .expect("config");
    let server = QqMx::builder().config(config).start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut listed = Vec::new();
        for last in 2..=40u8 {
            let source = std::net::IpAddr::from([127, 0, 0, last]);
            let mut smtp = common::Smtp::connect_from(source, server.addr()).await;
            smtp.send("HELO client.example.org").await;
            smtp.send("MAIL FROM:<a@example.org>").await;
            smtp.send("RCPT TO:<10001@qq.com>").await;
            smtp.send("DATA").await;
            if smtp
                .data("Subject: x\r\n\r\ny")
                .await
                .starts_with("550 Ip frequency limited")
            {
                listed.push(last);
            }
            smtp.send("QUIT").await;
        }
        listed
    })
}

#[test]
fn the_same_seed_blacklists_the_same_ips() {
    let first = randomly_listed(2025);

    assert_eq!(randomly_listed(2025), first);
    assert_ne!(randomly_listed(2026), first);
    assert!((5..35).contains(&first.len()), "{first:?}");
}

#[test]
fn an_invalid_config_built_in_code_is_an_error_not_a_panic() {
    let mut config = Config::default();
    config.clock.start = Some("tomorrow".into());
    let started = std::panic::catch_unwind(|| QqMx::builder().config(config).try_start());
    let err = started
        .expect("try_start returns instead of panicking")
        .expect_err("a bad clock start");
    let text = err.to_string();
    assert!(
        text.starts_with("<config>: key `clock.start`: `tomorrow` is not an RFC 3339 time"),
        "{text}"
    );
    assert!(matches!(err, qqmx::StartError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn faults_and_an_outage_are_steered_from_the_embedded_handle() {
    use qqmx::chaos::{Fault, FaultKind};
    use qqmx::units::Stage;

    let server = QqMx::start();
    server.set_faults(vec![Fault::new(FaultKind::Close).at(Stage::Mail)]);
    let mut smtp = common::Smtp::connect(server.addr()).await;
    smtp.send("EHLO a.example.org").await;
    smtp.write_raw(b"MAIL FROM:<a@example.org>\r\n").await;
    assert!(smtp.closed().await, "closed at MAIL without a reply");

    server.set_faults(Vec::new());
    server.set_up(false);
    let refused = common::eventually(|| async {
        tokio::net::TcpStream::connect(server.addr()).await.is_err()
    })
    .await;
    assert!(refused, "the port still accepts");
    server.set_up(true);
    let back = common::eventually(|| async {
        tokio::net::TcpStream::connect(server.addr()).await.is_ok()
    })
    .await;
    assert!(back, "the port is back");
    let smtp = common::Smtp::connect(server.addr()).await;
    assert!(
        smtp.transcript.starts_with("S: 220 "),
        "{}",
        smtp.transcript
    );
}

#[tokio::test]
async fn personal_blocks_backscatter_and_ip_listings_are_typed_calls() {
    let config = Config::from_toml("[content]\nbackscatter = true\n").expect("config");
    let server = QqMx::builder().config(config).start();
    let client = std::net::IpAddr::from([127, 0, 0, 1]);
    server.block_for_recipient("10001@qq.com", "example.org");
    server.record_outbound("10002@qq.com", client);
    server.blacklist_ip(std::net::IpAddr::from([127, 0, 0, 9]), None);

    let mut smtp = common::Smtp::connect(server.addr()).await;
    smtp.send("EHLO a.example.org").await;
    smtp.send("MAIL FROM:<a@example.org>").await;
    let blocked = smtp.send("RCPT TO:<10001@qq.com>").await;
    smtp.send("RSET").await;
    smtp.send("MAIL FROM:<>").await;
    let expected_bounce = smtp.send("RCPT TO:<10002@qq.com>").await;
    let unexpected_bounce = smtp.send("RCPT TO:<10003@qq.com>").await;

    assert!(
        blocked.starts_with("550 Mail is rejected by recipients"),
        "{blocked}"
    );
    assert!(expected_bounce.starts_with("250"), "{expected_bounce}");
    assert!(unexpected_bounce.starts_with("550"), "{unexpected_bounce}");
    let refusals = server.refusals(client);
    let rules: Vec<String> = refusals.iter().map(|(_, d)| d.rule.to_string()).collect();
    assert_eq!(rules, ["content.personal_blacklist", "content.backscatter"]);
    assert_eq!(
        server
            .explain(client, server.now())
            .map(|d| d.rule.to_string()),
        Some("content.backscatter".to_owned())
    );
}

// ---- behaviour: the checks that tell a good sender from a naive one -------------------

const MINUTE: Duration = Duration::from_secs(60);

/// Whether qqmx refused something in a delivery's transcript.
fn refused(transcript: &str) -> bool {
    transcript
        .lines()
        .any(|line| line.starts_with("S: 4") || line.starts_with("S: 5"))
}

/// Sends `n` messages to one recipient, one after another. Refused, a polite sender waits
/// ten minutes (by the server's clock) before it sends again; a naive one goes on.
fn send_newsletter(server: &QqMx, n: usize, polite: bool) {
    for _ in 0..n {
        let transcript = deliver_blocking(server, "10001@qq.com");
        if polite && refused(&transcript) {
            server.advance(10 * MINUTE);
        }
    }
}

/// Two messages a minute per IP, then a five-minute block.
fn two_a_minute() -> Config {
    Config::from_toml("[quotas.ip_messages]\nminute = { limit = 2, block = \"5m\" }\n")
        .expect("config")
}

#[test]
fn respects_blocks_passes_a_polite_sender_and_fails_a_naive_one() {
    let polite = QqMx::builder().config(two_a_minute()).seed(99).start();
    polite.expect(Expectation::respects_blocks());
    send_newsletter(&polite, 5, true);
    assert_eq!(polite.verify(), Ok(()));
    assert_eq!(polite.messages().len(), 4, "one refused, four sent");

    let naive = QqMx::builder().config(two_a_minute()).seed(99).start();
    naive.expect(Expectation::respects_blocks());
    send_newsletter(&naive, 5, false);
    let report = naive.verify().expect_err("two attempts while blocked");
    let text = report.to_string();
    assert!(
        text.contains(
            "  ✗ FAIL respects blocks (at most 0 attempts while blocked): 2 attempts from \
             127.0.0.1 while ip:127.0.0.1 was blocked until "
        ),
        "{text}"
    );
    assert!(text.ends_with("\n  replay with seed 99\n"), "{text}");
    naive.reset();
}

#[test]
fn retries_passes_a_patient_sender_and_fails_a_hasty_one() {
    for patient in [true, false] {
        let server = QqMx::builder().seed(5).start();
        let mut greylist = Fault::new(FaultKind::Greylist).at(Stage::Rcpt);
        greylist.attempts = Some(1);
        server.set_faults(vec![greylist]);
        server.expect(
            Expectation::retries()
                .min_delay(5 * MINUTE)
                .max_delay(60 * MINUTE),
        );
        server.expect(Expectation::accepted(1));

        assert!(refused(&deliver_blocking(&server, "10001@qq.com")));
        if patient {
            server.advance(10 * MINUTE);
        }
        assert!(!refused(&deliver_blocking(&server, "10001@qq.com")));

        if patient {
            assert_eq!(server.verify(), Ok(()));
            continue;
        }
        let text = server.verify().expect_err("retried at once").to_string();
        assert!(
            text.contains(
                "  ✗ FAIL retries after a temporary failure no sooner than 5m no later than 1h: \
                 retry of 10001@qq.com 0s after a 451 at "
            ),
            "{text}"
        );
        assert!(text.ends_with("\n  replay with seed 5\n"), "{text}");
        server.reset();
    }
}

#[test]
fn the_embedded_report_is_the_text_qqmx_run_prints_for_the_same_events() {
    let scenario = Scenario::from_toml(
        r#"
name = "blocks"
seed = 99
duration = "1h"
[config.quotas.ip_messages]
minute = { limit = 2, block = "5m" }
[[expect]]
kind = "respects_blocks"
[[expect]]
kind = "accepted"
min = 2
"#,
    )
    .expect("scenario");
    // (a) The embedded server, with the scenario's config and the same expectations
    // built in Rust.
    let server = QqMx::builder()
        .config(scenario.config.clone())
        .seed(scenario.seed)
        .start();
    let started = server.now();
    server.expect(Expectation::respects_blocks());
    server.expect(Expectation::accepted(2..));
    send_newsletter(&server, 5, false);
    let embedded = server.verify().expect_err("the naive sender").to_string();

    // (b) The same events, checked as `qqmx run` checks them: the scenario's expectations
    // as read from its file, evaluated over the log, in the run's report.
    let (events, messages) = (server.events(), server.messages());
    let ended = server.now();
    let run = Run::new(&events, &messages, &[], scenario.seed).ending_at(ended);
    let report = evaluate(&scenario.expectations, &run);
    let printed =
        RunReport::new(&scenario, report, started, ended, &messages, &events, None).to_string();

    assert!(
        printed.starts_with("scenario blocks: FAILED (2 accepted, "),
        "{printed}"
    );
    // After the run's lines (its totals, the replies it saw), the text `verify` gives.
    assert!(printed.ends_with(&embedded), "{printed}");
    assert!(
        embedded.starts_with(
            "qqmx: 1 of 2 expectations held\n  \
             ✗ FAIL respects blocks (at most 0 attempts while blocked): 2 attempts from \
             127.0.0.1 while ip:127.0.0.1 was blocked until "
        ),
        "{embedded}"
    );
    assert!(
        embedded.ends_with(
            "\n  ✓ ok   accepted at least 2: 2 accepted, expected at least 2\n  \
             replay with seed 99\n"
        ),
        "{embedded}"
    );
    server.reset();
}
