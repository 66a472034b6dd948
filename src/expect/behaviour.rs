//! The checks of behaviour, over the transcript: attempts while blocked, retries, resends
//! to unknown mailboxes, refusals by the warm-up allowance.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::reply::ReplyKind;

use super::model::{Expectation, RetryAfter};
use super::run::Run;
use super::transcript::{Answer, Refusal, Transcript};
use super::words::{count, plural, span, stamp};

/// The rule of the new-IP warm-up allowance's refusals (`policy`).
pub(super) const WARMUP_RULE: &str = "reputation.warmup";

/// A block on a key, and the attempts made during it.
struct Block<'a> {
    key: &'a str,
    rule: &'a str,
    /// Index of the refusal that began it.
    began: usize,
    began_at: SystemTime,
    until: SystemTime,
    /// The attempts (indices of the events that began them) and where they came from.
    attempts: HashSet<usize>,
    clients: Vec<IpAddr>,
}

pub(super) fn respects_blocks(e: &Expectation, log: &Transcript<'_>) -> (bool, String) {
    let allowed = e.max.unwrap_or(0);
    let mut blocks: Vec<Block<'_>> = Vec::new();
    let mut current: HashMap<&str, usize> = HashMap::new();
    for r in &log.refusals {
        let Some(key) = r.decision.key.as_deref() else {
            continue;
        };
        let at = r.event.at;
        match current.get(key).copied().filter(|&b| at < blocks[b].until) {
            Some(b) => {
                let block = &mut blocks[b];
                if let Some(until) = r.decision.until {
                    block.until = block.until.max(until);
                }
                if r.attempt > block.began && block.attempts.insert(r.attempt) {
                    block.clients.push(r.event.client);
                }
            }
            None => {
                if let Some(until) = r.decision.until.filter(|&u| u > at) {
                    current.insert(key, blocks.len());
                    blocks.push(Block {
                        key,
                        rule: &r.decision.rule,
                        began: r.index,
                        began_at: at,
                        until,
                        attempts: HashSet::new(),
                        clients: Vec::new(),
                    });
                }
            }
        }
    }
    // The most attempts; the first such block on a tie.
    let Some(worst) = blocks
        .iter()
        .rev()
        .max_by_key(|b| b.attempts.len())
        .filter(|b| !b.attempts.is_empty())
    else {
        return (
            true,
            if blocks.is_empty() {
                "never blocked".to_owned()
            } else {
                format!(
                    "{}, no attempt while blocked",
                    plural(blocks.len(), "block")
                )
            },
        );
    };
    let n = worst.attempts.len() as u64;
    if n <= allowed {
        return (
            true,
            format!(
                "{}, at most {} while blocked ({}), {allowed} allowed",
                plural(blocks.len(), "block"),
                plural(n, "attempt"),
                worst.key
            ),
        );
    }
    let from = worst.clients[0];
    let others = {
        let mut ips: Vec<IpAddr> = worst.clients.clone();
        ips.sort_unstable();
        ips.dedup();
        match ips.len() {
            1 => String::new(),
            n => format!(" and {} more", plural(n - 1, "IP")),
        }
    };
    (
        false,
        format!(
            "{} from {from}{others} while {} was blocked until {}, at most {allowed} allowed \
             (blocked by {} at {}; {} in all)",
            plural(n, "attempt"),
            worst.key,
            stamp(worst.until),
            worst.rule,
            stamp(worst.began_at),
            plural(blocks.len(), "block"),
        ),
    )
}

pub(super) fn retries(e: &Expectation, run: &Run<'_>, log: &Transcript<'_>) -> (bool, String) {
    let after = e.after.unwrap_or(RetryAfter::Temporary);
    let (failures, unnamed, what) = match after {
        RetryAfter::Temporary => (&log.temporary, log.unnamed_temporary, "temporary failure"),
        RetryAfter::Dropped => (&log.dropped, log.unnamed_dropped, "drop"),
    };
    let end = run.end();
    let mut worst: Option<(f64, String)> = None;
    let (mut soon, mut late, mut never, mut pending) = (0u64, 0u64, 0u64, 0u64);
    let mut delays: Option<(Duration, Duration)> = None;
    for f in failures {
        let address = &log.rcpts[f.rcpt].address;
        let violation = match log.next_rcpt(address, f.event) {
            Some(next) => {
                let delay = next.at.duration_since(f.at).unwrap_or_default();
                delays = Some(delays.map_or((delay, delay), |(a, b)| (a.min(delay), b.max(delay))));
                let retry = format!(
                    "retry of {address} {} after {} at {}",
                    span(delay),
                    f.cause,
                    stamp(f.at)
                );
                if let Some(min) = e.min_delay
                    && delay < min
                {
                    soon += 1;
                    Some((
                        ratio(min, delay),
                        format!("{retry}, expected at least {}", span(min)),
                    ))
                } else if let Some(max) = e.max_delay
                    && delay > max
                {
                    late += 1;
                    Some((
                        ratio(delay, max),
                        format!("{retry}, expected at most {}", span(max)),
                    ))
                } else {
                    None
                }
            }
            None => {
                let waited = end
                    .and_then(|end| end.duration_since(f.at).ok())
                    .unwrap_or_default();
                match e.max_delay {
                    Some(max) if waited > max => {
                        never += 1;
                        Some((
                            ratio(waited, max),
                            format!(
                                "{address} not retried in the {} after {} at {} before the run \
                                 ended, expected a retry within {}",
                                span(waited),
                                f.cause,
                                stamp(f.at),
                                span(max)
                            ),
                        ))
                    }
                    _ => {
                        pending += 1;
                        None
                    }
                }
            }
        };
        if let Some((badness, text)) = violation
            && worst.as_ref().is_none_or(|(b, _)| badness > *b)
        {
            worst = Some((badness, text));
        }
    }
    let unmeasured = if unnamed > 0 {
        format!(
            "; {} before any recipient was named, not measured",
            plural(unnamed, what)
        )
    } else {
        String::new()
    };
    let total = failures.len();
    if let Some((_, text)) = worst {
        let counts: Vec<String> = [
            (soon, "retried too soon"),
            (late, "retried too late"),
            (never, "never retried"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        return (
            false,
            format!(
                "{text} ({} of {}: {}){unmeasured}",
                soon + late + never,
                plural(total, what),
                counts.join(", ")
            ),
        );
    }
    if total == 0 {
        return (true, format!("no {what} of a recipient{unmeasured}"));
    }
    let mut seen = plural(total, what);
    if let Some((shortest, longest)) = delays {
        if shortest == longest {
            seen.push_str(&format!(", retried {} later", span(shortest)));
        } else {
            seen.push_str(&format!(
                ", retried {} to {} later",
                span(shortest),
                span(longest)
            ));
        }
    }
    if pending > 0 {
        seen.push_str(&format!("; {pending} not retried before the run ended"));
    }
    seen.push_str(&unmeasured);
    (true, seen)
}

/// How far `big` is past `small`, relatively (infinite past zero).
fn ratio(big: Duration, small: Duration) -> f64 {
    if small.is_zero() {
        f64::INFINITY
    } else {
        big.as_secs_f64() / small.as_secs_f64()
    }
}

pub(super) fn no_resend(e: &Expectation, log: &Transcript<'_>) -> (bool, String) {
    let allowed = e.max.unwrap_or(0);
    // Address -> the `Mailbox not found` that made it unknown.
    let mut unknown: HashMap<&str, Answer> = HashMap::new();
    // Address -> (RCPTs after it, the first of them).
    let mut again: HashMap<&str, (u64, SystemTime)> = HashMap::new();
    for r in &log.rcpts {
        if let Some(found) = unknown.get(r.address.as_str())
            && r.event > found.event
        {
            again.entry(&r.address).or_insert((0, r.at)).0 += 1;
        }
        if let Some(answer) = r.answer
            && matches!(
                answer.kind,
                ReplyKind::MailboxNotFound | ReplyKind::ExmailMailboxNotFound
            )
        {
            unknown.entry(&r.address).or_insert(answer);
        }
    }
    let total: u64 = again.values().map(|(n, _)| n).sum();
    if unknown.is_empty() {
        return (true, "no `Mailbox not found` reply".to_owned());
    }
    if total <= allowed {
        return (
            true,
            format!(
                "{}, {} to them afterwards, at most {allowed} allowed",
                count(unknown.len(), "unknown mailbox", "unknown mailboxes"),
                plural(total, "RCPT")
            ),
        );
    }
    // The most tries; on a tie, the earliest, then by address.
    let (address, (n, first)) = again
        .iter()
        .max_by(|(a, (n, t)), (b, (m, u))| n.cmp(m).then(u.cmp(t)).then(b.cmp(a)))
        .map(|(a, v)| (*a, *v))
        .expect("total > 0");
    let found = unknown[address];
    (
        false,
        format!(
            "{} to addresses after their `Mailbox not found`, at most {allowed} allowed; \
             {address} tried {n} more {}, the first {} after its {} at {}",
            plural(total, "RCPT"),
            if n == 1 { "time" } else { "times" },
            span(first.duration_since(found.at).unwrap_or_default()),
            found.code,
            stamp(found.at)
        ),
    )
}

pub(super) fn within_warmup(e: &Expectation, log: &Transcript<'_>) -> (bool, String) {
    let allowed = e.max.unwrap_or(0);
    let refused: Vec<&Refusal<'_>> = log
        .refusals
        .iter()
        .filter(|r| r.decision.rule == WARMUP_RULE)
        .collect();
    let attempts: HashSet<usize> = refused.iter().map(|r| r.attempt).collect();
    let n = attempts.len() as u64;
    let Some(first) = refused.first() else {
        return (true, "no refusal by the warm-up allowance".to_owned());
    };
    let mut seen = format!(
        "{} refused by the warm-up allowance ({WARMUP_RULE}), at most {allowed} allowed",
        plural(n, "attempt")
    );
    let passed = n <= allowed;
    if !passed {
        seen.push_str(&format!(
            "; the first at {}: {}",
            stamp(first.event.at),
            first.decision.detail
        ));
        if let Some(key) = &first.decision.key {
            seen.push_str(&format!(" (on {key})"));
        }
    }
    (passed, seen)
}
