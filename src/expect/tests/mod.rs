//! The engine's tests: an event log built by hand ([`Log`]), and each kind's checks over
//! it, in `counts` and `behaviour`.

mod behaviour;
mod counts;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::behaviour::WARMUP_RULE;
use super::model::{ExpectError, Expectation, Kind, RetryAfter};
use super::words::{plural, span, stamp};
use super::{Outage, Outcome, Run, evaluate};
use crate::event::{CloseReason, Command, Event, EventKind, Verb};
use crate::policy::{AuthReport, AuthResult, Decision, DmarcCheck, SpfCheck, Verdict};
use crate::reply::{Reply, ReplyKind};
use crate::store::{Folder, Message};
use crate::units::Stage;

/// 2025-06-02T01:00:00Z, where runs start.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_748_826_000)
}

fn t(secs: u64) -> SystemTime {
    t0() + Duration::from_secs(secs)
}

const MIN: u64 = 60;

/// Builds an event log: each event one second after the one before, unless told to
/// wait.
struct Log {
    events: Vec<Event>,
    now: SystemTime,
    client: IpAddr,
}

impl Log {
    fn new() -> Self {
        Self {
            events: Vec::new(),
            now: t0(),
            client: IpAddr::from([127, 0, 0, 1]),
        }
    }

    fn wait(&mut self, secs: u64) -> &mut Self {
        self.now += Duration::from_secs(secs);
        self
    }

    fn client(&mut self, ip: [u8; 4]) -> &mut Self {
        self.client = IpAddr::from(ip);
        self
    }

    fn push(&mut self, session: u64, kind: EventKind) -> &mut Self {
        self.events.push(Event {
            seq: self.events.len() as u64 + 1,
            at: self.now,
            session,
            transaction: None,
            client: self.client,
            kind,
        });
        self.now += Duration::from_secs(1);
        self
    }

    fn connect(&mut self, session: u64) -> &mut Self {
        self.push(
            session,
            EventKind::Connected {
                local: SocketAddr::from(([127, 0, 0, 1], 25)),
                mx: "mx1".into(),
            },
        )
    }

    fn cmd(&mut self, session: u64, verb: Verb) -> &mut Self {
        self.push(
            session,
            EventKind::Command(Command::new(verb, format!("{verb:?}"))),
        )
    }

    fn addressed(&mut self, session: u64, verb: Verb, address: &str) -> &mut Self {
        let mut command = Command::new(verb, format!("{verb:?} <{address}>"));
        command.address = Some(address.to_owned());
        self.push(session, EventKind::Command(command))
    }

    fn mail_cmd(&mut self, session: u64, from: &str) -> &mut Self {
        self.addressed(session, Verb::Mail, from)
    }

    fn rcpt_cmd(&mut self, session: u64, to: &str) -> &mut Self {
        self.addressed(session, Verb::Rcpt, to)
    }

    fn reply(&mut self, session: u64, kind: ReplyKind, code: u16) -> &mut Self {
        self.push(
            session,
            EventKind::Reply(Reply {
                kind,
                code,
                text: format!("{code} {kind}"),
            }),
        )
    }

    /// A greeting, EHLO and `MAIL`, all accepted.
    fn open(&mut self, session: u64) -> &mut Self {
        self.connect(session)
            .reply(session, ReplyKind::Greeting, 220)
            .cmd(session, Verb::Ehlo)
            .reply(session, ReplyKind::Ehlo, 250)
            .mail_cmd(session, "news@example.org")
            .reply(session, ReplyKind::MailOk, 250)
    }

    fn rcpt(&mut self, session: u64, to: &str, kind: ReplyKind, code: u16) -> &mut Self {
        self.rcpt_cmd(session, to).reply(session, kind, code)
    }

    /// `DATA`, `354` and the final reply.
    fn data(&mut self, session: u64, kind: ReplyKind, code: u16) -> &mut Self {
        self.cmd(session, Verb::Data)
            .reply(session, ReplyKind::DataStart, 354)
            .reply(session, kind, code)
    }

    fn quit(&mut self, session: u64) -> &mut Self {
        self.cmd(session, Verb::Quit)
            .reply(session, ReplyKind::Bye, 221)
            .close(session, CloseReason::Quit)
    }

    fn close(&mut self, session: u64, reason: CloseReason) -> &mut Self {
        self.push(session, EventKind::Closed { reason })
    }

    /// A refused decision on `key` by `rule`, blocking until `until` if given.
    fn refusal(
        &mut self,
        session: u64,
        stage: Stage,
        rule: &'static str,
        key: &str,
        until: Option<SystemTime>,
    ) -> &mut Self {
        let decision = Decision {
            stage,
            verdict: Verdict::Reject(ReplyKind::IpFrequency),
            rule: Cow::Borrowed(rule),
            detail: format!("refused by {rule}"),
            key: Some(key.to_owned()),
            counter: None,
            limit: None,
            window: None,
            until,
        };
        self.push(session, EventKind::Decision(decision)).reply(
            session,
            ReplyKind::IpFrequency,
            550,
        )
    }

    /// A transaction refused at `RCPT` by the ip_messages quota.
    fn blocked_message(&mut self, session: u64, until: SystemTime) -> &mut Self {
        self.open(session)
            .rcpt_cmd(session, "10001@qq.com")
            .refusal(
                session,
                Stage::Rcpt,
                "quota.ip_messages",
                "ip:127.0.0.1",
                Some(until),
            )
    }
}

fn expect(kind: Kind) -> Expectation {
    Expectation::of(kind)
}

fn check(e: &Expectation, log: &Log) -> Outcome {
    check_run(e, &Run::new(&log.events, &[], &[], 7))
}

fn check_run(e: &Expectation, run: &Run<'_>) -> Outcome {
    let mut report = evaluate(std::slice::from_ref(e), run);
    assert_eq!(report.outcomes.len(), 1);
    report.outcomes.remove(0)
}

#[track_caller]
fn passes(outcome: &Outcome) {
    assert!(outcome.passed, "expected a pass: {}", outcome.seen);
}

#[track_caller]
fn fails_with(outcome: &Outcome, seen: &str) {
    assert!(!outcome.passed, "expected a failure: {}", outcome.seen);
    assert!(
        outcome.seen.starts_with(seen),
        "`{}` does not start with `{seen}`",
        outcome.seen
    );
}

fn message(id: u64, mx: &str, at: SystemTime, folder: Folder) -> Message {
    Message {
        id,
        session: id,
        mx: mx.to_owned(),
        received_at: at,
        client: IpAddr::from([127, 0, 0, 1]),
        client_port: 40000,
        helo: "client.example.org".into(),
        mail_from: "news@example.org".into(),
        rcpt_to: vec!["10001@qq.com".into()],
        tls: false,
        folder,
        auth: None,
        raw: Arc::from(&b"Subject: hi\r\n\r\nhi\r\n"[..]),
    }
}

fn dmarc(result: AuthResult, reason: &str) -> AuthReport {
    AuthReport {
        spf: SpfCheck::new(AuthResult::Pass, "example.org", "pass"),
        dkim: Vec::new(),
        dmarc: DmarcCheck {
            result,
            domain: "example.org".into(),
            policy: None,
            pct: 100,
            spf_aligned: result == AuthResult::Pass,
            dkim_aligned: false,
            reason: reason.into(),
        },
    }
}

// ---- the parts ---------------------------------------------------------------------

#[test]
fn spans_and_stamps_read_well() {
    assert_eq!(span(Duration::ZERO), "0s");
    assert_eq!(span(Duration::from_millis(250)), "250ms");
    assert_eq!(span(Duration::from_secs(12)), "12s");
    assert_eq!(span(Duration::from_secs(3723)), "1h2m3s");
    assert_eq!(span(Duration::from_secs(2 * 86_400 + 3600)), "2d1h");
    assert_eq!(
        stamp(t(0) + Duration::from_millis(1500)),
        "2025-06-02T01:00:01Z"
    );
    assert_eq!(plural(1u64, "block"), "1 block");
    assert_eq!(plural(0usize, "block"), "0 blocks");
}

#[test]
fn the_end_of_a_run_is_the_later_of_its_end_and_its_last_event() {
    let mut log = Log::new();
    log.wait(MIN).connect(1);
    let run = Run::new(&log.events, &[], &[], 1);
    assert_eq!(run.end(), Some(t(MIN)));
    assert_eq!(run.ending_at(t(5 * MIN)).end(), Some(t(5 * MIN)));
    assert_eq!(run.ending_at(t(0)).end(), Some(t(MIN)));
    assert_eq!(Run::new(&[], &[], &[], 1).end(), None);
}

#[test]
fn a_given_name_wins_and_outcomes_follow_the_order_of_the_expectations() {
    let report = evaluate(
        &[
            Expectation::accepted(1..).named("mail gets through"),
            Expectation::authenticated(),
        ],
        &Run::new(&[], &[], &[], 1),
    );
    let outcomes = &report.outcomes;
    assert_eq!(outcomes[0].name, "mail gets through");
    assert!(!outcomes[0].passed);
    assert_eq!(outcomes[1].name, "every message passes DMARC");
    assert!(outcomes[1].passed);
    assert_eq!(report.seed, 1);
    assert!(!report.passed);
}

#[test]
fn parameters_that_do_not_fit_are_typed_errors_and_fail_when_evaluated() {
    let upside_down = Expectation::retries()
        .after(RetryAfter::Dropped)
        .min_delay(Duration::from_secs(600))
        .max_delay(Duration::from_secs(60));
    let error = upside_down.check().expect_err("min above max");
    assert_eq!(
        error,
        ExpectError::Delays {
            min: Duration::from_secs(600),
            max: Duration::from_secs(60)
        }
    );
    assert_eq!(error.to_string(), "min_delay 10m is above max_delay 1m");
    assert_eq!(Expectation::retries().check(), Err(ExpectError::NoDelay));
    assert_eq!(
        Expectation::accepted(1).min(5).check(),
        Err(ExpectError::Bounds { min: 5, max: 1 })
    );
    assert_eq!(expect(Kind::Failover).check(), Err(ExpectError::NoMx));
    assert_eq!(expect(Kind::Replies).check(), Err(ExpectError::NoReply));
    assert_eq!(
        expect(Kind::Retries).check(),
        Err(ExpectError::NoRetryAfter)
    );
    assert!(
        Expectation::retries()
            .min_delay(Duration::from_secs(60))
            .check()
            .is_ok()
    );

    let outcome = check_run(&Expectation::retries(), &Run::new(&[], &[], &[], 1));
    fails_with(
        &outcome,
        "not checked: retries: needs `min_delay`, `max_delay` or both",
    );
}

#[test]
fn the_builders_make_what_a_scenario_file_says() {
    #[derive(serde::Deserialize)]
    struct File {
        expect: Vec<Expectation>,
    }
    let file: File = toml::from_str(
        r#"
        [[expect]]
        kind = "accepted"
        min = 3
        max = 3
        mx = "mx2"
        folder = "inbox"
        [[expect]]
        kind = "rejected"
        reply = "ip_frequency"
        min = 0
        max = 0
        [[expect]]
        kind = "replies"
        reply = "mailbox_not_found"
        min = 1
        [[expect]]
        kind = "respects_blocks"
        name = "waits"
        [[expect]]
        kind = "retries"
        after = "dropped"
        min_delay = "5m"
        max_delay = "1h"
        [[expect]]
        kind = "no_resend_to_unknown"
        max = 2
        [[expect]]
        kind = "within_warmup"
        [[expect]]
        kind = "failover"
        mx = "mx1"
        min = 2
        [[expect]]
        kind = "authenticated"
        "#,
    )
    .expect("valid TOML");
    let built = [
        Expectation::accepted(3).mx("mx2").folder(Folder::Inbox),
        Expectation::rejected(0).reply(ReplyKind::IpFrequency),
        Expectation::replies(ReplyKind::MailboxNotFound, 1..),
        Expectation::respects_blocks().named("waits"),
        Expectation::retries()
            .after(RetryAfter::Dropped)
            .min_delay(Duration::from_secs(300))
            .max_delay(Duration::from_secs(3600)),
        Expectation::no_resend_to_unknown().max(2),
        Expectation::within_warmup(),
        Expectation::failover("mx1").min(2),
        Expectation::authenticated(),
    ];
    let names: Vec<String> = built.iter().map(Expectation::name).collect();
    let read: Vec<String> = file.expect.iter().map(Expectation::name).collect();
    assert_eq!(names, read);
    for (built, read) in built.iter().zip(&file.expect) {
        assert_eq!(built.kind(), read.kind());
    }
    assert_eq!(built[..], file.expect[..]);
}

#[test]
fn what_the_store_evicted_is_said_where_it_is_missed() {
    let messages = [message(1, "mx1", t(0), Folder::Inbox)];
    let run = Run::new(&[], &messages, &[], 1).evicted(3, 40);
    let report = evaluate(
        &[Expectation::accepted(4), Expectation::respects_blocks()],
        &run,
    );
    assert_eq!(
        report.outcomes[0].seen,
        "1 accepted, expected exactly 4; 3 messages evicted by the store before the check, \
         not seen"
    );
    assert_eq!(
        report.outcomes[1].seen,
        "never blocked; 40 events evicted by the store before the check, not seen"
    );
    let whole = evaluate(
        &[Expectation::accepted(1)],
        &Run::new(&[], &messages, &[], 1),
    );
    assert_eq!(whole.outcomes[0].seen, "1 accepted, expected exactly 1");
}
