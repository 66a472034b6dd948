//! The checks that count: messages accepted, replies sent, mail during an outage,
//! messages that pass DMARC. They read the run's messages and events, not the
//! transcript.

use std::collections::HashMap;

use crate::event::{Event, EventKind};
use crate::policy::{AuthResult, Decision};
use crate::reply::ReplyKind;
use crate::store::Message;

use super::model::Expectation;
use super::report::ReplyCount;
use super::run::{Outage, Run};
use super::words::{count, plural, stamp};

/// Every reply in `events`, grouped by kind, code and the rule, window and key of the refused
/// decision behind it (the session's latest since its previous reply), in order of
/// each group's first reply.
pub fn reply_counts(events: &[Event]) -> Vec<ReplyCount> {
    let mut pending: HashMap<u64, &Decision> = HashMap::new();
    let mut counts: Vec<ReplyCount> = Vec::new();
    for ev in events {
        match &ev.kind {
            EventKind::Decision(d) if !d.is_accept() => {
                pending.insert(ev.session, d);
            }
            EventKind::Reply(r) => {
                let decision = pending.remove(&ev.session);
                let rule = decision.map(|d| d.rule.to_string());
                let key = decision.and_then(|d| d.key.clone());
                let window = decision.and_then(|d| d.window);
                match counts.iter_mut().find(|c| {
                    c.kind == r.kind
                        && c.code == r.code
                        && c.rule == rule
                        && c.window == window
                        && c.key == key
                }) {
                    Some(c) => c.count += 1,
                    None => counts.push(ReplyCount {
                        kind: r.kind,
                        code: r.code,
                        rule,
                        window,
                        key,
                        count: 1,
                    }),
                }
            }
            _ => {}
        }
    }
    counts
}

/// The groups in words, the largest first (at most four, then how many more).
fn groups(mut counts: Vec<ReplyCount>) -> String {
    counts.sort_by_key(|c| std::cmp::Reverse(c.count));
    let mut text: Vec<String> = counts.iter().take(4).map(ToString::to_string).collect();
    if counts.len() > 4 {
        text.push(format!("{} more", plural(counts.len() - 4, "group")));
    }
    text.join(", ")
}

/// The replies of `kind` (all of them), or of 400 and more (`refusals`).
fn counted(
    run: &Run<'_>,
    kind: Option<ReplyKind>,
    refusals: bool,
) -> (u64, Vec<ReplyCount>, Option<String>) {
    let wanted =
        |code: u16, k: ReplyKind| (!refusals || code >= 400) && kind.is_none_or(|w| k == w);
    let first = run.events.iter().find_map(|ev| match &ev.kind {
        EventKind::Reply(r) if wanted(r.code, r.kind) => Some(format!(
            "the first at {}: {}",
            stamp(ev.at),
            r.text.lines().next().unwrap_or_default()
        )),
        _ => None,
    });
    let counts: Vec<ReplyCount> = reply_counts(run.events)
        .into_iter()
        .filter(|c| wanted(c.code, c.kind))
        .collect();
    (counts.iter().map(|c| c.count).sum(), counts, first)
}

pub(super) fn accepted(e: &Expectation, run: &Run<'_>) -> (bool, String) {
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

/// Refusals (of kind `reply`, when given); when the count is out of range, which rule
/// refused them on which key, and the first.
pub(super) fn rejected(e: &Expectation, run: &Run<'_>) -> (bool, String) {
    let (n, counts, first) = counted(run, e.reply, true);
    let what = match e.reply {
        Some(kind) => count(n, &format!("`{kind}` reply"), &format!("`{kind}` replies")),
        None => plural(n, "refusal"),
    };
    let passed = e.in_range(n);
    let mut seen = format!("{what}, expected {}", e.range_text());
    if let Some(first) = first.filter(|_| !passed) {
        seen.push_str(&format!(": {}; {first}", groups(counts)));
    }
    (passed, seen)
}

/// Replies of one kind, whatever their code.
pub(super) fn replies(e: &Expectation, run: &Run<'_>) -> (bool, String) {
    let Some(kind) = e.reply else {
        return (false, "no `reply` kind named".to_owned());
    };
    let (n, counts, first) = counted(run, Some(kind), false);
    let passed = e.in_range(n);
    let mut seen = format!(
        "{}, expected {}",
        count(n, &format!("`{kind}` reply"), &format!("`{kind}` replies")),
        e.range_text()
    );
    if let Some(first) = first.filter(|_| !passed) {
        seen.push_str(&format!(": {}; {first}", groups(counts)));
    }
    (passed, seen)
}

pub(super) fn failover(e: &Expectation, run: &Run<'_>) -> (bool, String) {
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
    // The fewest; the first such outage on a tie.
    let (worst, least) = outages
        .iter()
        .map(|o| (*o, elsewhere(o)))
        .min_by_key(|(_, n)| *n)
        .expect("at least one outage");
    let window = match worst.until {
        Some(until) => format!("from {} to {}", stamp(worst.from), stamp(until)),
        None => format!("from {} on", stamp(worst.from)),
    };
    let of = if outages.len() > 1 {
        format!(" (the worst of {} outages)", outages.len())
    } else {
        String::new()
    };
    (
        least >= wanted,
        format!(
            "{} accepted elsewhere while {mx} was down {window}{of}, expected at least {wanted}",
            plural(least, "message")
        ),
    )
}

pub(super) fn authenticated(run: &Run<'_>) -> (bool, String) {
    let failing: Vec<&Message> = run
        .messages
        .iter()
        .filter(|m| {
            m.auth
                .as_ref()
                .is_none_or(|a| a.dmarc.result != AuthResult::Pass)
        })
        .collect();
    let Some(first) = failing.first() else {
        return (
            true,
            match run.messages.len() {
                0 => "no message accepted".to_owned(),
                n => format!("{}, all pass DMARC", plural(n, "message")),
            },
        );
    };
    let why = match &first.auth {
        None => "authentication was off".to_owned(),
        Some(a) if a.dmarc.reason.is_empty() => format!("dmarc={}", a.dmarc.result),
        Some(a) => format!("dmarc={}: {}", a.dmarc.result, a.dmarc.reason),
    };
    (
        false,
        format!(
            "{} of {} do not pass DMARC; the first, message {} from <{}>: {why}",
            failing.len(),
            plural(run.messages.len(), "message"),
            first.id,
            first.mail_from,
        ),
    )
}
