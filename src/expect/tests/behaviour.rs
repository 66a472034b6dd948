//! The checks of behaviour: blocks, retries, unknown mailboxes, the warm-up allowance.

use super::*;

// ---- respects_blocks ---------------------------------------------------------------

#[test]
fn the_refusal_that_starts_a_block_is_not_an_attempt_while_blocked() {
    let respects = expect(Kind::RespectsBlocks);
    let mut log = Log::new();
    passes(&check(&respects, &log));
    assert_eq!(check(&respects, &log).seen, "never blocked");

    let until = t(10 * MIN);
    log.blocked_message(1, until).quit(1);
    let once = check(&respects, &log);
    passes(&once);
    assert_eq!(once.seen, "1 block, no attempt while blocked");

    log.blocked_message(2, until)
        .quit(2)
        .wait(MIN)
        .blocked_message(3, until)
        .quit(3);
    let hammered = check(&respects, &log);
    fails_with(
        &hammered,
        "2 attempts from 127.0.0.1 while ip:127.0.0.1 was blocked until \
         2025-06-02T01:10:00Z, at most 0 allowed (blocked by quota.ip_messages at \
         2025-06-02T01:00:07Z; 1 block in all)",
    );
    assert_eq!(
        hammered.name,
        "respects blocks (at most 0 attempts while blocked)"
    );
    let lenient = Expectation {
        max: Some(2),
        ..respects
    };
    passes(&check(&lenient, &log));
}

#[test]
fn refusals_the_sender_could_not_have_avoided_are_not_attempts() {
    let until = t(10 * MIN);
    let mut log = Log::new();
    // Session 2 is already past MAIL when session 1's refusal starts the block.
    log.open(2).blocked_message(1, until);
    // Recipients pipelined with the first refusal, in the same transaction.
    log.rcpt_cmd(1, "10002@qq.com").refusal(
        1,
        Stage::Rcpt,
        "quota.ip_messages",
        "ip:127.0.0.1",
        Some(until),
    );
    log.rcpt_cmd(2, "10003@qq.com").refusal(
        2,
        Stage::Rcpt,
        "quota.ip_messages",
        "ip:127.0.0.1",
        Some(until),
    );
    // Another key's refusal is another block.
    log.rcpt_cmd(2, "10004@qq.com").refusal(
        2,
        Stage::Rcpt,
        "quota.recipient",
        "recipient:10004@qq.com",
        Some(until),
    );
    // After the block ends, a refusal starts a new block.
    log.quit(1).quit(2).wait(10 * MIN);
    log.blocked_message(3, t(30 * MIN));
    let outcome = check(&expect(Kind::RespectsBlocks), &log);
    passes(&outcome);
    assert_eq!(outcome.seen, "3 blocks, no attempt while blocked");

    // A new transaction in the same session is an attempt.
    log.cmd(3, Verb::Rset)
        .reply(3, ReplyKind::RsetOk, 250)
        .mail_cmd(3, "news@example.org")
        .reply(3, ReplyKind::MailOk, 250)
        .rcpt_cmd(3, "10001@qq.com")
        // A refusal without a block end counts while the key is blocked.
        .refusal(3, Stage::Rcpt, "content.backscatter", "ip:127.0.0.1", None);
    let outcome = check(&expect(Kind::RespectsBlocks), &log);
    fails_with(
        &outcome,
        "1 attempt from 127.0.0.1 while ip:127.0.0.1 was blocked until 2025-06-02T01:30:00Z",
    );
}

#[test]
fn a_connection_refused_while_blocked_is_an_attempt_and_blocks_are_extended() {
    let mut log = Log::new();
    log.client([10, 0, 0, 1])
        .connect(1)
        .refusal(
            1,
            Stage::Connect,
            "quota.ip_connections",
            "ip:10.0.0.1",
            Some(t(5 * MIN)),
        )
        .close(1, CloseReason::RefusedAtConnect)
        .wait(4 * MIN)
        .connect(2)
        .refusal(
            1,
            Stage::Connect,
            "quota.deny_after",
            "ip:10.0.0.1",
            Some(t(20 * MIN)),
        )
        .close(2, CloseReason::RefusedAtConnect)
        // Past the first end, but inside the extended block.
        .wait(10 * MIN)
        .connect(3)
        .refusal(
            3,
            Stage::Connect,
            "quota.ip_connections",
            "ip:10.0.0.1",
            Some(t(20 * MIN)),
        )
        .close(3, CloseReason::RefusedAtConnect);
    let outcome = check(&expect(Kind::RespectsBlocks), &log);
    fails_with(
        &outcome,
        "2 attempts from 10.0.0.1 while ip:10.0.0.1 was blocked until 2025-06-02T01:20:00Z",
    );
}

// ---- retries -----------------------------------------------------------------------

fn retries(after: RetryAfter, min: Option<u64>, max: Option<u64>) -> Expectation {
    Expectation {
        after: Some(after),
        min_delay: min.map(Duration::from_secs),
        max_delay: max.map(Duration::from_secs),
        ..expect(Kind::Retries)
    }
}

#[test]
fn a_retry_after_a_4xx_at_rcpt_is_timed_from_the_reply() {
    let rule = retries(RetryAfter::Temporary, Some(5 * MIN), Some(60 * MIN));
    let mut hasty = Log::new();
    hasty
        .open(1)
        .rcpt(1, "10001@qq.com", ReplyKind::Greylisted, 451)
        .quit(1)
        .open(2)
        .rcpt(2, "10001@QQ.com", ReplyKind::RcptOk, 250);
    let outcome = check(&rule, &hasty);
    fails_with(
        &outcome,
        "retry of 10001@qq.com 10s after a 451 at 2025-06-02T01:00:07Z, expected at least 5m \
         (1 of 1 temporary failure: 1 retried too soon)",
    );
    assert_eq!(
        outcome.name,
        "retries after a temporary failure no sooner than 5m no later than 1h"
    );

    let mut patient = Log::new();
    patient
        .open(1)
        .rcpt(1, "10001@qq.com", ReplyKind::Greylisted, 451)
        .quit(1)
        .wait(10 * MIN)
        .open(2)
        .rcpt(2, "10001@qq.com", ReplyKind::RcptOk, 250);
    let outcome = check(&rule, &patient);
    passes(&outcome);
    assert_eq!(outcome.seen, "1 temporary failure, retried 10m10s later");
}

#[test]
fn a_4xx_at_the_end_of_data_fails_every_recipient_of_the_message() {
    let rule = retries(RetryAfter::Temporary, Some(5 * MIN), None);
    let mut log = Log::new();
    log.open(1)
        .rcpt(1, "10001@qq.com", ReplyKind::RcptOk, 250)
        .rcpt(1, "10002@qq.com", ReplyKind::RcptOk, 250)
        .data(1, ReplyKind::IpFrequency, 451)
        .quit(1)
        .wait(10 * MIN)
        .open(2)
        .rcpt(2, "10001@qq.com", ReplyKind::RcptOk, 250)
        .quit(2)
        .wait(MIN)
        .open(3)
        .rcpt(3, "10002@qq.com", ReplyKind::RcptOk, 250);
    passes(&check(&rule, &log));
    let sooner = retries(RetryAfter::Temporary, Some(15 * MIN), None);
    // 10002 came back later than 10001: 10001 is the worse.
    fails_with(
        &check(&sooner, &log),
        "retry of 10001@qq.com 10m10s after a 451 at 2025-06-02T01:00:12Z, expected at \
         least 15m (2 of 2 temporary failures: 2 retried too soon)",
    );
}

#[test]
fn a_failure_never_retried_breaks_max_delay_only_once_the_run_is_past_it() {
    let rule = retries(RetryAfter::Temporary, None, Some(60 * MIN));
    let mut log = Log::new();
    log.open(1)
        .rcpt(1, "10001@qq.com", ReplyKind::Greylisted, 451)
        .quit(1);
    let outcome = check(&rule, &log);
    passes(&outcome);
    assert_eq!(
        outcome.seen,
        "1 temporary failure; 1 not retried before the run ended"
    );
    let run = Run::new(&log.events, &[], &[], 7).ending_at(t(3 * 60 * MIN));
    fails_with(
        &check_run(&rule, &run),
        "10001@qq.com not retried in the 2h59m53s after a 451 at 2025-06-02T01:00:07Z \
         before the run ended, expected a retry within 1h",
    );
    // Too late is as bad as never.
    log.wait(2 * 60 * MIN)
        .open(2)
        .rcpt(2, "10001@qq.com", ReplyKind::RcptOk, 250);
    fails_with(
        &check(&rule, &log),
        "retry of 10001@qq.com 2h10s after a 451 at 2025-06-02T01:00:07Z, expected at most 1h",
    );
}

#[test]
fn a_dropped_transaction_is_retried_from_the_drop() {
    let rule = retries(RetryAfter::Dropped, Some(5 * MIN), Some(120 * MIN));
    let mut log = Log::new();
    log.open(1)
        .rcpt(1, "10001@qq.com", ReplyKind::RcptOk, 250)
        .cmd(1, Verb::Data)
        .reply(1, ReplyKind::DataStart, 354)
        .push(
            1,
            EventKind::Fault {
                fault: crate::chaos::FaultKind::Close,
                stage: None,
            },
        )
        .close(1, CloseReason::FaultClose)
        .wait(MIN)
        .open(2)
        .rcpt(2, "10001@qq.com", ReplyKind::RcptOk, 250)
        .data(2, ReplyKind::Queued, 250)
        .quit(2);
    fails_with(
        &check(&rule, &log),
        "retry of 10001@qq.com 1m7s after a dropped connection (fault: close) at \
         2025-06-02T01:00:11Z, expected at least 5m",
    );
    // A 4xx is not a drop.
    passes(&check(
        &retries(RetryAfter::Temporary, Some(5 * MIN), None),
        &log,
    ));

    let mut patient = Log::new();
    patient
        .open(1)
        .rcpt(1, "10001@qq.com", ReplyKind::RcptOk, 250)
        .cmd(1, Verb::Data)
        .reply(1, ReplyKind::DataStart, 354)
        // The client gave up waiting for the final reply.
        .close(1, CloseReason::ClientClosed)
        .wait(20 * MIN)
        .open(2)
        .rcpt(2, "10001@qq.com", ReplyKind::RcptOk, 250);
    let outcome = check(&rule, &patient);
    passes(&outcome);
    assert_eq!(outcome.seen, "1 drop, retried 20m7s later");
}

#[test]
fn a_client_that_closes_after_its_answers_dropped_nothing() {
    let rule = retries(RetryAfter::Dropped, Some(5 * MIN), None);
    let mut log = Log::new();
    log.open(1)
        .rcpt(1, "10001@qq.com", ReplyKind::RcptOk, 250)
        .data(1, ReplyKind::Queued, 250)
        .close(1, CloseReason::ClientClosed)
        .open(2)
        .rcpt(2, "10001@qq.com", ReplyKind::RcptOk, 250)
        .data(2, ReplyKind::Queued, 250)
        // A fault before the greeting names no recipient: counted, not measured.
        .connect(3)
        .close(3, CloseReason::FaultReset)
        .open(4)
        .rcpt(4, "10001@qq.com", ReplyKind::RcptOk, 250);
    let outcome = check(&rule, &log);
    passes(&outcome);
    assert_eq!(
        outcome.seen,
        "no drop of a recipient; 1 drop before any recipient was named, not measured"
    );
}

// ---- no_resend_to_unknown ----------------------------------------------------------

#[test]
fn an_address_found_unknown_must_not_be_tried_again() {
    let rule = expect(Kind::NoResendToUnknown);
    let mut log = Log::new();
    log.open(1)
        .rcpt(1, "gone@qq.com", ReplyKind::MailboxNotFound, 550)
        .rcpt(1, "10001@qq.com", ReplyKind::RcptOk, 250)
        .data(1, ReplyKind::Queued, 250)
        .quit(1)
        .open(2)
        .rcpt(2, "10001@qq.com", ReplyKind::RcptOk, 250);
    let outcome = check(&rule, &log);
    passes(&outcome);
    assert_eq!(
        outcome.seen,
        "1 unknown mailbox, 0 RCPTs to them afterwards, at most 0 allowed"
    );
    assert_eq!(outcome.name, "drops unknown mailboxes (at most 0 retries)");

    log.wait(MIN)
        .rcpt(2, "GONE@qq.com", ReplyKind::MailboxNotFound, 550)
        .rcpt(2, "gone@qq.com", ReplyKind::MailboxNotFound, 550);
    fails_with(
        &check(&rule, &log),
        "2 RCPTs to addresses after their `Mailbox not found`, at most 0 allowed; \
         gone@qq.com tried 2 more times, the first 1m17s after its 550 at \
         2025-06-02T01:00:07Z",
    );
    let lenient = Expectation {
        max: Some(2),
        ..rule
    };
    passes(&check(&lenient, &log));
}

// ---- within_warmup -----------------------------------------------------------------

#[test]
fn refusals_by_the_warm_up_allowance_are_counted_per_attempt() {
    let rule = expect(Kind::WithinWarmup);
    let mut log = Log::new();
    log.blocked_message(1, t(60 * MIN)).quit(1);
    let outcome = check(&rule, &log);
    passes(&outcome);
    assert_eq!(outcome.seen, "no refusal by the warm-up allowance");

    log.open(2)
        .rcpt_cmd(2, "10001@qq.com")
        .refusal(
            2,
            Stage::Rcpt,
            WARMUP_RULE,
            "ip:127.0.0.1",
            Some(t(60 * MIN)),
        )
        .rcpt_cmd(2, "10002@qq.com")
        .refusal(
            2,
            Stage::Rcpt,
            WARMUP_RULE,
            "ip:127.0.0.1",
            Some(t(60 * MIN)),
        );
    let outcome = check(&rule, &log);
    fails_with(
        &outcome,
        "1 attempt refused by the warm-up allowance (reputation.warmup), at most 0 allowed; \
         the first at 2025-06-02T01:00:19Z: refused by reputation.warmup (on ip:127.0.0.1)",
    );
    let lenient = Expectation {
        max: Some(1),
        ..rule
    };
    passes(&check(&lenient, &log));
}
