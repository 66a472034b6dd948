//! Expectations about a sender's behaviour, checked against the event log of a run.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock::Rfc3339;
use crate::config::duration_text;
use crate::policy::{AuthResult, Decision};
use crate::reply::ReplyKind;
use crate::store::{Event, EventKind, Folder, Message};

/// One expectation of a scenario (`[[expect]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Expect {
    /// What is checked.
    pub kind: ExpectKind,
    /// A label for reports; by default one is made from the kind and its parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Lower bound of a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    /// Upper bound of a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// `rejected`: the reply kind counted (every refusal when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyKind>,
    /// `accepted`: only messages that arrived at this MX host; `failover`: the host
    /// that goes down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx: Option<String>,
    /// `accepted`: only messages delivered to this folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<Folder>,
    /// `retries`: what the sender retries after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<RetryAfter>,
    /// `retries`: the earliest acceptable retry, in virtual time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_text::option"
    )]
    pub min_delay: Option<Duration>,
    /// `retries`: the latest acceptable retry, in virtual time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_text::option"
    )]
    pub max_delay: Option<Duration>,
}

/// The kinds of expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExpectKind {
    /// Messages accepted (optionally at one `mx`, into one `folder`): between `min` and
    /// `max`.
    Accepted,
    /// Replies of kind `reply` (every refusal when unset): between `min` and `max`.
    Rejected,
    /// Attempts made while the sender's IP or sender key is blocked (a quota block or a
    /// blacklisting): at most `max` (default 0) per block.
    RespectsBlocks,
    /// After a temporary failure (`after = "temporary"`: a 4xx reply) or a dropped
    /// connection (`after = "dropped"`), the next attempt at the same recipient comes no
    /// sooner than `min_delay` and no later than `max_delay`.
    Retries,
    /// Recipients tried again after `Mailbox not found`: at most `max` (default 0).
    NoResendToUnknown,
    /// Refusals by the new-IP warm-up allowance: at most `max` (default 0).
    WithinWarmup,
    /// While MX host `mx` is down, mail still arrives at another host: at least `min`
    /// (default 1) messages accepted elsewhere during the outage.
    Failover,
    /// Every accepted message passes DMARC.
    Authenticated,
}

/// What a retry follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryAfter {
    /// A 4xx reply.
    Temporary,
    /// A connection closed or reset without a reply.
    Dropped,
}

/// The result of one expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Outcome {
    /// The expectation's name.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was seen, in words (`"12 accepted, expected 10 to 20"`).
    pub seen: String,
}

impl Expect {
    /// Checks that the parameters fit the kind.
    ///
    /// # Errors
    ///
    /// What is wrong, in words.
    pub fn check(&self) -> Result<(), String> {
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            return Err(format!("min {min} is above max {max}"));
        }
        match self.kind {
            ExpectKind::Retries if self.after.is_none() => {
                Err("retries: needs `after = \"temporary\"` or `\"dropped\"`".into())
            }
            ExpectKind::Retries if self.min_delay.is_none() && self.max_delay.is_none() => {
                Err("retries: needs `min_delay`, `max_delay` or both".into())
            }
            ExpectKind::Failover if self.mx.is_none() => {
                Err("failover: needs the `mx` that goes down".into())
            }
            _ => Ok(()),
        }
    }
}

/// An MX host's outage during a run, by the server's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outage {
    /// The MX host that was down.
    pub mx: String,
    /// When it went down.
    pub from: SystemTime,
    /// When it came back; `None` if it never did.
    pub until: Option<SystemTime>,
}

impl Outage {
    /// An outage of `mx` from `from` to `until`.
    pub fn new(mx: impl Into<String>, from: SystemTime, until: Option<SystemTime>) -> Self {
        Self {
            mx: mx.into(),
            from,
            until,
        }
    }
}

/// What a run left behind, for [`evaluate`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Run<'a> {
    /// The event log, oldest first.
    pub events: &'a [Event],
    /// The messages accepted.
    pub messages: &'a [Message],
    /// The MX outages the timeline caused.
    pub outages: &'a [Outage],
    /// The scenario's seed.
    pub seed: u64,
}

impl<'a> Run<'a> {
    /// A run's record.
    pub fn new(
        events: &'a [Event],
        messages: &'a [Message],
        outages: &'a [Outage],
        seed: u64,
    ) -> Self {
        Self {
            events,
            messages,
            outages,
            seed,
        }
    }

    /// The time of the last event, the end of the run as far as the log knows.
    fn end(&self) -> Option<SystemTime> {
        self.events.last().map(|e| e.at)
    }
}

/// Checks every expectation against `run`, in order.
pub fn evaluate(expectations: &[Expect], run: &Run<'_>) -> Vec<Outcome> {
    expectations
        .iter()
        .map(|e| {
            let (passed, seen) = match e.kind {
                ExpectKind::Accepted => accepted(e, run),
                ExpectKind::Rejected => rejected(e, run),
                ExpectKind::RespectsBlocks => respects_blocks(e, run),
                ExpectKind::Retries => retries(e, run),
                ExpectKind::NoResendToUnknown => no_resend(e, run),
                ExpectKind::WithinWarmup => within_warmup(e, run),
                ExpectKind::Failover => failover(e, run),
                ExpectKind::Authenticated => authenticated(run),
            };
            Outcome {
                name: e.name.clone().unwrap_or_else(|| e.describe()),
                passed,
                seen,
            }
        })
        .collect()
}

impl Expect {
    /// A name made from the kind and its parameters.
    pub fn describe(&self) -> String {
        let range = self.range_text();
        match self.kind {
            ExpectKind::Accepted => {
                let mut text = format!("accepted {range}");
                if let Some(mx) = &self.mx {
                    text.push_str(&format!(" at {mx}"));
                }
                if let Some(folder) = self.folder {
                    text.push_str(&format!(" into {folder:?}").to_lowercase());
                }
                text
            }
            ExpectKind::Rejected => match self.reply {
                Some(kind) => format!("`{kind}` replies {range}"),
                None => format!("refusals {range}"),
            },
            ExpectKind::RespectsBlocks => format!(
                "respects blocks (at most {} attempts while blocked)",
                self.max.unwrap_or(0)
            ),
            ExpectKind::Retries => {
                let after = match self.after {
                    Some(RetryAfter::Dropped) => "a dropped connection",
                    _ => "a temporary failure",
                };
                let min = self.min_delay.map_or(String::new(), |d| {
                    format!(" no sooner than {}", duration_text::Text(d))
                });
                let max = self.max_delay.map_or(String::new(), |d| {
                    format!(" no later than {}", duration_text::Text(d))
                });
                format!("retries after {after}{min}{max}")
            }
            ExpectKind::NoResendToUnknown => format!(
                "drops unknown mailboxes (at most {} retries)",
                self.max.unwrap_or(0)
            ),
            ExpectKind::WithinWarmup => format!(
                "stays within the warm-up allowance (at most {} refusals)",
                self.max.unwrap_or(0)
            ),
            ExpectKind::Failover => format!(
                "fails over while {} is down",
                self.mx.as_deref().unwrap_or("?")
            ),
            ExpectKind::Authenticated => "every message passes DMARC".to_owned(),
        }
    }

    fn range_text(&self) -> String {
        match (self.min, self.max) {
            (Some(min), Some(max)) if min == max => format!("exactly {min}"),
            (Some(min), Some(max)) => format!("between {min} and {max}"),
            (Some(min), None) => format!("at least {min}"),
            (None, Some(max)) => format!("at most {max}"),
            (None, None) => "at least 1".to_owned(),
        }
    }

    /// Whether `n` is within `min` and `max` (at least 1 when neither is set).
    fn in_range(&self, n: u64) -> bool {
        match (self.min, self.max) {
            (None, None) => n >= 1,
            (min, max) => min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m),
        }
    }
}

fn accepted(e: &Expect, run: &Run<'_>) -> (bool, String) {
    let n = run
        .messages
        .iter()
        .filter(|m| e.mx.as_ref().is_none_or(|mx| &m.mx == mx))
        .filter(|m| e.folder.is_none_or(|f| m.folder == f))
        .count() as u64;
    (
        e.in_range(n),
        format!("{n} accepted, expected {}", e.range_text()),
    )
}

fn rejected(e: &Expect, run: &Run<'_>) -> (bool, String) {
    let n = run
        .events
        .iter()
        .filter(|ev| match &ev.kind {
            EventKind::Reply(r) => !r.is_positive() && e.reply.is_none_or(|k| r.kind == k),
            _ => false,
        })
        .count() as u64;
    let what = e
        .reply
        .map_or("refusals".to_owned(), |k| format!("`{k}` replies"));
    (
        e.in_range(n),
        format!("{n} {what}, expected {}", e.range_text()),
    )
}

/// A refusal with a key, and the end of the block it stands for.
fn refusals<'a>(run: &Run<'a>) -> impl Iterator<Item = (&'a Event, &'a Decision)> {
    run.events.iter().filter_map(|ev| match &ev.kind {
        EventKind::Decision(d) if !d.is_accept() => Some((ev, d)),
        _ => None,
    })
}

fn respects_blocks(e: &Expect, run: &Run<'_>) -> (bool, String) {
    let allowed = e.max.unwrap_or(0);
    // Per key: the end of the block in force, and attempts seen inside it.
    let mut blocks: HashMap<&str, (SystemTime, u64, SystemTime)> = HashMap::new();
    let mut worst: Option<(String, u64, SystemTime, IpAddr)> = None;
    for (ev, d) in refusals(run) {
        let (Some(key), Some(until)) = (d.key.as_deref(), d.block_until) else {
            continue;
        };
        match blocks.get_mut(key) {
            Some((end, attempts, _)) if ev.at < *end => {
                *attempts += 1;
                *end = (*end).max(until);
                if worst.as_ref().is_none_or(|w| *attempts > w.1) {
                    worst = Some((key.to_owned(), *attempts, *end, ev.client));
                }
            }
            _ => {
                blocks.insert(key, (until, 0, ev.at));
            }
        }
    }
    match worst {
        Some((key, attempts, until, client)) if attempts > allowed => (
            false,
            format!(
                "{attempts} attempts from {client} while {key} was blocked until {}, at most {allowed} allowed",
                Rfc3339(until)
            ),
        ),
        Some((key, attempts, _, _)) => (
            true,
            format!("at most {attempts} attempts while blocked ({key})"),
        ),
        None if blocks.is_empty() => (true, "never blocked".to_owned()),
        None => (
            true,
            format!("{} blocks, no attempts while blocked", blocks.len()),
        ),
    }
}

/// Each RCPT in the log: (time, session, recipient, index of the event).
fn rcpts(run: &Run<'_>) -> Vec<(SystemTime, u64, String, usize)> {
    run.events
        .iter()
        .enumerate()
        .filter_map(|(i, ev)| match &ev.kind {
            EventKind::Command { line } => rcpt_address(line).map(|a| (ev.at, ev.session, a, i)),
            _ => None,
        })
        .collect()
}

/// The address of a `RCPT TO:<...>` line, lower-cased.
fn rcpt_address(line: &str) -> Option<String> {
    let head = line.get(..8)?;
    if !head.eq_ignore_ascii_case("RCPT TO:") {
        return None;
    }
    let path = line[8..]
        .trim_start()
        .strip_prefix('<')?
        .split('>')
        .next()?;
    Some(path.to_ascii_lowercase())
}

/// The first reply to the session's command at event `i`.
fn reply_after<'a>(run: &Run<'a>, i: usize, session: u64) -> Option<&'a crate::reply::Reply> {
    for ev in run.events[i + 1..]
        .iter()
        .filter(|ev| ev.session == session)
    {
        match &ev.kind {
            EventKind::Reply(r) => return Some(r),
            EventKind::Command { .. } | EventKind::Closed { .. } => return None,
            _ => {}
        }
    }
    None
}

/// Whether the session ended without completing the transaction that began before
/// event `i`: closed by a fault or by the client without a final reply.
fn dropped_after(run: &Run<'_>, i: usize, session: u64) -> Option<SystemTime> {
    for ev in run.events[i + 1..]
        .iter()
        .filter(|ev| ev.session == session)
    {
        match &ev.kind {
            EventKind::Accepted { .. } => return None,
            EventKind::Reply(r) if r.kind == ReplyKind::Queued => return None,
            EventKind::Closed { reason } => {
                return (reason.starts_with("fault:")
                    || reason == "client closed"
                    || reason == "read failed"
                    || reason == "write failed")
                    .then_some(ev.at);
            }
            _ => {}
        }
    }
    None
}

fn retries(e: &Expect, run: &Run<'_>) -> (bool, String) {
    let after = e.after.unwrap_or(RetryAfter::Temporary);
    let attempts = rcpts(run);
    let end = run.end();
    let mut failures = 0;
    let mut worst: Option<String> = None;
    let mut shortest: Option<Duration> = None;
    for (n, (at, session, address, i)) in attempts.iter().enumerate() {
        let failed_at = match after {
            RetryAfter::Temporary => reply_after(run, *i, *session)
                .filter(|r| (400..500).contains(&r.code))
                .map(|_| *at),
            RetryAfter::Dropped => dropped_after(run, *i, *session),
        };
        let Some(failed_at) = failed_at else { continue };
        failures += 1;
        let next = attempts[n + 1..]
            .iter()
            .find(|(t, _, a, _)| a == address && *t >= failed_at);
        let what = match after {
            RetryAfter::Temporary => "a 4xx",
            RetryAfter::Dropped => "a dropped connection",
        };
        match next {
            Some((t, _, _, _)) => {
                let delay = t.duration_since(failed_at).unwrap_or_default();
                shortest = Some(shortest.map_or(delay, |s| s.min(delay)));
                if e.min_delay.is_some_and(|min| delay < min) {
                    worst.get_or_insert(format!(
                        "retry of {address} {} after {what} at {}, expected at least {}",
                        duration_text::Text(whole_seconds(delay)),
                        Rfc3339(failed_at),
                        duration_text::Text(e.min_delay.unwrap_or_default())
                    ));
                } else if e.max_delay.is_some_and(|max| delay > max) {
                    worst.get_or_insert(format!(
                        "retry of {address} {} after {what} at {}, expected at most {}",
                        duration_text::Text(whole_seconds(delay)),
                        Rfc3339(failed_at),
                        duration_text::Text(e.max_delay.unwrap_or_default())
                    ));
                }
            }
            None => {
                if let (Some(max), Some(end)) = (e.max_delay, end)
                    && end.duration_since(failed_at).unwrap_or_default() > max
                {
                    worst.get_or_insert(format!(
                        "{address} never retried after {what} at {}, expected within {}",
                        Rfc3339(failed_at),
                        duration_text::Text(max)
                    ));
                }
            }
        }
    }
    match worst {
        Some(seen) => (false, seen),
        None if failures == 0 => (true, "no failures to retry".to_owned()),
        None => (
            true,
            format!(
                "{failures} failures, shortest retry {}",
                shortest.map_or("none".to_owned(), |d| duration_text::Text(whole_seconds(d))
                    .to_string())
            ),
        ),
    }
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs().max(1))
}

fn no_resend(e: &Expect, run: &Run<'_>) -> (bool, String) {
    let allowed = e.max.unwrap_or(0);
    let mut unknown: HashMap<String, SystemTime> = HashMap::new();
    let mut resent: HashMap<String, u64> = HashMap::new();
    for (at, session, address, i) in rcpts(run) {
        if unknown.contains_key(&address) {
            *resent.entry(address.clone()).or_insert(0) += 1;
        }
        if reply_after(run, i, session).is_some_and(|r| r.kind == ReplyKind::MailboxNotFound) {
            unknown.entry(address).or_insert(at);
        }
    }
    let total: u64 = resent.values().sum();
    match resent.iter().max_by_key(|(_, n)| **n) {
        Some((address, n)) if total > allowed => (
            false,
            format!(
                "{total} RCPTs to unknown mailboxes after `Mailbox not found`; {address} {n} times"
            ),
        ),
        _ => (
            true,
            format!("{} unknown mailboxes, {total} tried again", unknown.len()),
        ),
    }
}

fn within_warmup(e: &Expect, run: &Run<'_>) -> (bool, String) {
    let allowed = e.max.unwrap_or(0);
    let n = refusals(run)
        .filter(|(_, d)| d.rule == "reputation.warmup")
        .count() as u64;
    (
        n <= allowed,
        format!("{n} refusals by the warm-up allowance, at most {allowed} allowed"),
    )
}

fn failover(e: &Expect, run: &Run<'_>) -> (bool, String) {
    let Some(mx) = e.mx.as_deref() else {
        return (false, "no `mx` named".to_owned());
    };
    let wanted = e.min.unwrap_or(1);
    let outages: Vec<&Outage> = run.outages.iter().filter(|o| o.mx == mx).collect();
    if outages.is_empty() {
        return (false, format!("{mx} was never down"));
    }
    let elsewhere = |o: &Outage| {
        run.messages
            .iter()
            .filter(|m| m.mx != mx)
            .filter(|m| m.received_at >= o.from && o.until.is_none_or(|u| m.received_at <= u))
            .count() as u64
    };
    let counts: Vec<u64> = outages.iter().map(|o| elsewhere(o)).collect();
    let least = counts.iter().copied().min().unwrap_or(0);
    (
        least >= wanted,
        format!(
            "{least} messages accepted elsewhere while {mx} was down (outage from {}), expected at least {wanted}",
            Rfc3339(outages[0].from)
        ),
    )
}

fn authenticated(run: &Run<'_>) -> (bool, String) {
    let failing: Vec<&Message> = run
        .messages
        .iter()
        .filter(|m| {
            m.auth
                .as_ref()
                .is_none_or(|a| a.dmarc.result != AuthResult::Pass)
        })
        .collect();
    match failing.first() {
        None => (
            true,
            format!("{} messages, all pass DMARC", run.messages.len()),
        ),
        Some(first) => (
            false,
            format!(
                "{} of {} messages do not pass DMARC; message {}: {}",
                failing.len(),
                run.messages.len(),
                first.id,
                first
                    .auth
                    .as_ref()
                    .map_or("authentication was off".to_owned(), |a| a
                        .dmarc
                        .reason
                        .clone())
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::policy::{Stage, Verdict};
    use crate::reply::Reply;

    /// Builds an event log, one event per call, a minute apart.
    #[derive(Default)]
    struct Log {
        events: Vec<Event>,
    }

    impl Log {
        fn at(&self) -> SystemTime {
            UNIX_EPOCH + Duration::from_secs(self.events.len() as u64 * 60)
        }

        fn push(&mut self, session: u64, kind: EventKind) -> &mut Self {
            let seq = self.events.len() as u64 + 1;
            self.events.push(Event {
                seq,
                at: self.at(),
                session,
                client: IpAddr::from([127, 0, 0, 1]),
                kind,
            });
            self
        }

        fn command(&mut self, session: u64, line: &str) -> &mut Self {
            self.push(
                session,
                EventKind::Command {
                    line: line.to_owned(),
                },
            )
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

        fn refusal(&mut self, session: u64, key: &str, until_minutes: u64) -> &mut Self {
            let decision = Decision {
                stage: Stage::EndOfData,
                verdict: Verdict::Reject(ReplyKind::IpFrequency),
                rule: Cow::Borrowed("quota.ip_messages"),
                detail: String::new(),
                key: Some(key.to_owned()),
                counter: None,
                limit: None,
                window: None,
                block_until: Some(UNIX_EPOCH + Duration::from_secs(until_minutes * 60)),
            };
            self.push(session, EventKind::Decision(decision))
        }
    }

    fn expect(kind: ExpectKind) -> Expect {
        Expect {
            kind,
            name: None,
            min: None,
            max: None,
            reply: None,
            mx: None,
            folder: None,
            after: None,
            min_delay: None,
            max_delay: None,
        }
    }

    fn check(e: Expect, log: &Log, outages: &[Outage]) -> Outcome {
        let run = Run::new(&log.events, &[], outages, 7);
        evaluate(&[e], &run).remove(0)
    }

    #[test]
    fn the_refusal_that_starts_a_block_is_not_an_attempt_while_blocked() {
        let mut log = Log::default();
        log.refusal(1, "ip:127.0.0.1", 10);
        let once = check(expect(ExpectKind::RespectsBlocks), &log, &[]);
        assert!(once.passed, "{}", once.seen);

        log.refusal(2, "ip:127.0.0.1", 10)
            .refusal(3, "ip:127.0.0.1", 10);
        let hammered = check(expect(ExpectKind::RespectsBlocks), &log, &[]);
        assert!(!hammered.passed);
        assert!(
            hammered
                .seen
                .starts_with("2 attempts from 127.0.0.1 while ip:127.0.0.1"),
            "{}",
            hammered.seen
        );
        let lenient = check(
            Expect {
                max: Some(2),
                ..expect(ExpectKind::RespectsBlocks)
            },
            &log,
            &[],
        );
        assert!(lenient.passed, "{}", lenient.seen);
    }

    #[test]
    fn an_address_found_unknown_must_not_be_tried_again() {
        let mut log = Log::default();
        log.command(1, "RCPT TO:<gone@qq.com>")
            .reply(1, ReplyKind::MailboxNotFound, 550);
        assert!(check(expect(ExpectKind::NoResendToUnknown), &log, &[]).passed);
        log.command(2, "rcpt to:<GONE@qq.com>")
            .reply(2, ReplyKind::MailboxNotFound, 550);
        let outcome = check(expect(ExpectKind::NoResendToUnknown), &log, &[]);
        assert!(!outcome.passed);
        assert!(
            outcome.seen.contains("gone@qq.com 1 times"),
            "{}",
            outcome.seen
        );
    }

    #[test]
    fn a_retry_after_a_temporary_failure_is_timed() {
        let retries = Expect {
            after: Some(RetryAfter::Temporary),
            min_delay: Some(Duration::from_secs(300)),
            ..expect(ExpectKind::Retries)
        };
        // A 451, then the same recipient one minute later: too soon.
        let mut log = Log::default();
        log.command(1, "RCPT TO:<10001@qq.com>")
            .reply(1, ReplyKind::Greylisted, 451)
            .command(2, "RCPT TO:<10001@qq.com>");
        let hasty = check(retries.clone(), &log, &[]);
        assert!(!hasty.passed);
        assert!(
            hasty.seen.contains("expected at least 5m"),
            "{}",
            hasty.seen
        );

        let mut log = Log::default();
        log.command(1, "RCPT TO:<10001@qq.com>")
            .reply(1, ReplyKind::Greylisted, 451);
        for _ in 0..6 {
            log.command(9, "NOOP");
        }
        log.command(2, "RCPT TO:<10001@qq.com>");
        assert!(check(retries, &log, &[]).passed);
    }

    #[test]
    fn failover_needs_an_outage_and_mail_elsewhere_during_it() {
        let log = Log::default();
        let failover = Expect {
            mx: Some("mx1".into()),
            ..expect(ExpectKind::Failover)
        };
        let never = check(failover.clone(), &log, &[]);
        assert!(!never.passed);
        assert_eq!(never.seen, "mx1 was never down");
        let outage = Outage::new("mx1", UNIX_EPOCH, None);
        let nothing = check(failover, &log, &[outage]);
        assert!(!nothing.passed, "{}", nothing.seen);
    }

    #[test]
    fn counts_are_checked_against_their_range() {
        let mut log = Log::default();
        log.reply(1, ReplyKind::IpFrequency, 550)
            .reply(1, ReplyKind::MailboxNotFound, 550)
            .reply(1, ReplyKind::Queued, 250);
        let some = Expect {
            reply: Some(ReplyKind::IpFrequency),
            max: Some(0),
            ..expect(ExpectKind::Rejected)
        };
        let outcome = check(some, &log, &[]);
        assert!(!outcome.passed);
        assert_eq!(outcome.seen, "1 `ip_frequency` replies, expected at most 0");
        let all = Expect {
            min: Some(2),
            max: Some(2),
            ..expect(ExpectKind::Rejected)
        };
        assert!(check(all, &log, &[]).passed);
    }
}
