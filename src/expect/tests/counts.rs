//! The counting checks: accepted, rejected, replies, failover, authenticated.

use super::*;

// ---- accepted ----------------------------------------------------------------------

#[test]
fn accepted_counts_messages_by_mx_and_folder() {
    let messages = [
        message(1, "mx1", t(0), Folder::Inbox),
        message(2, "mx2", t(60), Folder::Inbox),
        message(3, "mx2", t(120), Folder::Junk),
    ];
    let run = Run::new(&[], &messages, &[], 1);
    let between = Expectation {
        min: Some(2),
        max: Some(3),
        ..expect(Kind::Accepted)
    };
    let outcome = check_run(&between, &run);
    passes(&outcome);
    assert_eq!(outcome.name, "accepted between 2 and 3");
    assert_eq!(outcome.seen, "3 accepted, expected between 2 and 3");

    let mx2_inbox = Expectation {
        mx: Some("mx2".into()),
        folder: Some(Folder::Inbox),
        min: Some(2),
        ..expect(Kind::Accepted)
    };
    let outcome = check_run(&mx2_inbox, &run);
    fails_with(&outcome, "1 accepted, expected at least 2");
    assert_eq!(outcome.name, "accepted at least 2 at mx2 into inbox");

    let too_many = Expectation {
        max: Some(2),
        ..expect(Kind::Accepted)
    };
    fails_with(
        &check_run(&too_many, &run),
        "3 accepted, expected at most 2",
    );
}

#[test]
fn accepted_without_bounds_means_at_least_one() {
    let any = expect(Kind::Accepted);
    let none = check_run(&any, &Run::new(&[], &[], &[], 1));
    fails_with(&none, "0 accepted, expected at least 1");
    let one = [message(1, "mx1", t(0), Folder::Inbox)];
    passes(&check_run(&any, &Run::new(&[], &one, &[], 1)));
    let nothing = Expectation {
        max: Some(0),
        ..expect(Kind::Accepted)
    };
    passes(&check_run(&nothing, &Run::new(&[], &[], &[], 1)));
}

// ---- rejected ----------------------------------------------------------------------

#[test]
fn rejected_counts_replies_from_400_of_a_kind() {
    let mut log = Log::new();
    log.connect(1)
        .rcpt_cmd(1, "10001@qq.com")
        .refusal(
            1,
            Stage::Rcpt,
            "quota.ip_messages",
            "ip:127.0.0.1",
            Some(t(10 * MIN)),
        )
        .reply(1, ReplyKind::MailboxNotFound, 550)
        .reply(1, ReplyKind::Greylisted, 451)
        .reply(1, ReplyKind::DataStart, 354)
        .reply(1, ReplyKind::Queued, 250);
    let none_of_these = Expectation {
        reply: Some(ReplyKind::IpFrequency),
        max: Some(0),
        ..expect(Kind::Rejected)
    };
    let outcome = check(&none_of_these, &log);
    fails_with(
        &outcome,
        "1 `ip_frequency` reply, expected at most 0: 1 `ip_frequency` 550 by \
         quota.ip_messages on ip:127.0.0.1; the first at 2025-06-02T01:00:03Z: \
         550 ip_frequency",
    );
    assert_eq!(outcome.name, "`ip_frequency` replies at most 0");
    let all = Expectation {
        min: Some(3),
        max: Some(3),
        ..expect(Kind::Rejected)
    };
    let outcome = check(&all, &log);
    passes(&outcome);
    assert_eq!(outcome.seen, "3 refusals, expected exactly 3");
    let unknown = Expectation {
        reply: Some(ReplyKind::MailboxNotFound),
        min: Some(2),
        ..expect(Kind::Rejected)
    };
    fails_with(
        &check(&unknown, &log),
        "1 `mailbox_not_found` reply, expected at least 2",
    );
}

#[test]
fn refusals_name_every_kind_with_its_rule_and_key_escalations_included() {
    // A naive sender: refused by the minute quota, then denied at connect while blocked.
    let mut log = Log::new();
    for session in 1..=3 {
        log.open(session).rcpt_cmd(session, "10001@qq.com").refusal(
            session,
            Stage::Rcpt,
            "quota.ip_messages",
            "ip:127.0.0.1",
            Some(t(10 * MIN)),
        );
    }
    for session in 4..=5 {
        let denied = Decision {
            stage: Stage::Connect,
            verdict: Verdict::Disconnect(ReplyKind::ConnectionDenied),
            rule: Cow::Borrowed("quota.deny_after"),
            detail: "3 refusals while blocked, limit 3".into(),
            key: Some("ip:127.0.0.1".into()),
            counter: Some(3),
            limit: Some(3),
            window: None,
            until: Some(t(10 * MIN)),
        };
        log.connect(session)
            .push(session, EventKind::Decision(denied))
            .reply(session, ReplyKind::ConnectionDenied, 554)
            .close(session, CloseReason::RefusedAtConnect);
    }
    let none = Expectation {
        max: Some(0),
        ..expect(Kind::Rejected)
    };
    fails_with(
        &check(&none, &log),
        "5 refusals, expected at most 0: 3 `ip_frequency` 550 by quota.ip_messages on \
         ip:127.0.0.1, 2 `connection_denied` 554 by quota.deny_after on ip:127.0.0.1; \
         the first at ",
    );
    let counts = super::super::reply_counts(&log.events);
    let text: Vec<String> = counts.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "3 `greeting` 220",
            "3 `ehlo` 250",
            "3 `mail_ok` 250",
            "3 `ip_frequency` 550 by quota.ip_messages on ip:127.0.0.1",
            "2 `connection_denied` 554 by quota.deny_after on ip:127.0.0.1",
        ]
    );
    // Replies counts name the rule too when they fail.
    let greetings = Expectation {
        max: Some(1),
        ..Expectation::replies(ReplyKind::ConnectionDenied, 0..)
    };
    fails_with(
        &check(&greetings, &log),
        "2 `connection_denied` replies, expected at most 1: 2 `connection_denied` 554 by \
         quota.deny_after on ip:127.0.0.1; the first at ",
    );
}

// ---- failover ----------------------------------------------------------------------

#[test]
fn failover_needs_an_outage_and_mail_elsewhere_during_each() {
    let rule = Expectation {
        mx: Some("mx1".into()),
        ..expect(Kind::Failover)
    };
    let never = check_run(&rule, &Run::new(&[], &[], &[], 1));
    fails_with(&never, "mx1 was never down");
    assert_eq!(never.name, "fails over while mx1 is down");

    let messages = [
        message(1, "mx1", t(0), Folder::Inbox),
        message(2, "mx2", t(10 * MIN), Folder::Inbox),
        message(3, "mx1", t(12 * MIN), Folder::Inbox),
        message(4, "mx3", t(40 * MIN), Folder::Inbox),
    ];
    let outages = [
        Outage::new("mx1", t(5 * MIN), Some(t(15 * MIN))),
        Outage::new("mx2", t(0), Some(t(60 * MIN))),
    ];
    let outcome = check_run(&rule, &Run::new(&[], &messages, &outages, 1));
    passes(&outcome);
    assert_eq!(
        outcome.seen,
        "1 message accepted elsewhere while mx1 was down from 2025-06-02T01:05:00Z to \
         2025-06-02T01:15:00Z, expected at least 1"
    );

    let twice = [
        Outage::new("mx1", t(5 * MIN), Some(t(15 * MIN))),
        Outage::new("mx1", t(20 * MIN), Some(t(30 * MIN))),
        Outage::new("mx1", t(35 * MIN), None),
    ];
    fails_with(
        &check_run(&rule, &Run::new(&[], &messages, &twice, 1)),
        "0 messages accepted elsewhere while mx1 was down from 2025-06-02T01:20:00Z to \
         2025-06-02T01:30:00Z (the worst of 3 outages), expected at least 1",
    );
}

// ---- authenticated -----------------------------------------------------------------

#[test]
fn every_accepted_message_must_pass_dmarc() {
    let rule = expect(Kind::Authenticated);
    let none = check_run(&rule, &Run::new(&[], &[], &[], 1));
    passes(&none);
    assert_eq!(none.seen, "no message accepted");

    let mut good = message(1, "mx1", t(0), Folder::Inbox);
    good.auth = Some(dmarc(AuthResult::Pass, "spf aligned"));
    let messages = [good.clone(), good.clone()];
    let outcome = check_run(&rule, &Run::new(&[], &messages, &[], 1));
    passes(&outcome);
    assert_eq!(outcome.seen, "2 messages, all pass DMARC");

    let mut unsigned = message(2, "mx1", t(60), Folder::Inbox);
    unsigned.auth = Some(dmarc(AuthResult::None, "no DMARC record for example.org"));
    let unchecked = message(3, "mx1", t(120), Folder::Inbox);
    let messages = [good, unsigned, unchecked];
    fails_with(
        &check_run(&rule, &Run::new(&[], &messages, &[], 1)),
        "2 of 3 messages do not pass DMARC; the first, message 2 from \
         <news@example.org>: dmarc=none: no DMARC record for example.org",
    );
}
