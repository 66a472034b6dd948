//! The checks that count: messages accepted, replies sent, mail during an outage,
//! messages that pass DMARC. They read the run's messages and events, not the
//! transcript.

use crate::event::EventKind;
use crate::policy::AuthResult;
use crate::store::Message;

use super::model::Expectation;
use super::run::{Outage, Run};
use super::words::{count, plural, stamp};

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

pub(super) fn rejected(e: &Expectation, run: &Run<'_>) -> (bool, String) {
    let mut refusals = run.events.iter().filter_map(|ev| match &ev.kind {
        EventKind::Reply(r) if r.code >= 400 && e.reply.is_none_or(|k| r.kind == k) => {
            Some((ev.at, r))
        }
        _ => None,
    });
    let first = refusals.next();
    let n = first.map_or(0, |_| 1 + refusals.count() as u64);
    let what = match e.reply {
        Some(kind) => count(n, &format!("`{kind}` reply"), &format!("`{kind}` replies")),
        None => plural(n, "refusal"),
    };
    let passed = e.in_range(n);
    let mut seen = format!("{what}, expected {}", e.range_text());
    if let Some((at, reply)) = first.filter(|_| !passed) {
        seen.push_str(&format!("; the first at {}: {}", stamp(at), reply.code));
    }
    (passed, seen)
}

/// Replies of one kind, whatever their code.
pub(super) fn replies(e: &Expectation, run: &Run<'_>) -> (bool, String) {
    let Some(kind) = e.reply else {
        return (false, "no `reply` kind named".to_owned());
    };
    let n = run
        .events
        .iter()
        .filter(|ev| matches!(&ev.kind, EventKind::Reply(r) if r.kind == kind))
        .count() as u64;
    (
        e.in_range(n),
        format!(
            "{}, expected {}",
            count(n, &format!("`{kind}` reply"), &format!("`{kind}` replies")),
            e.range_text()
        ),
    )
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
