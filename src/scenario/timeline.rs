//! What a run's chart draws: per calendar minute of the server's clock, the attempts,
//! messages accepted and refusals by kind, with the blocks, MX outages and phases over
//! them; gathered once from the run's events, so that the HTML page and the SVG chart
//! read the same numbers.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Scenario;
use crate::event::{Event, EventKind, Verb};
use crate::policy::Verdict;

/// What the chart of a run draws, gathered from its events, outages and phases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeline {
    /// One per calendar minute from the run's start to its end, or to the end of the
    /// scenario's duration when the run ended sooner.
    pub minutes: Vec<Minute>,
    /// Quota blocks and blacklistings seen in refusals: the key, what refused, from the
    /// first refusal that named it until its end.
    pub blocks: Vec<Span>,
    /// MX hosts down.
    pub outages: Vec<Span>,
    /// The scenario's phases: when, after the start, and their names.
    pub phases: Vec<(Duration, String)>,
}

/// One minute's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Minute {
    /// Its start, by the server's clock.
    pub start: SystemTime,
    /// MAIL commands, and connections refused before one.
    pub attempts: u64,
    /// Messages accepted.
    pub accepted: u64,
    /// Refusals (replies of 400 and more), by reply kind.
    pub refusals: BTreeMap<String, u64>,
}

/// A stretch of time with a label: a block, or an outage.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Span {
    /// The block's key (`ip:127.0.0.1`) or the MX host.
    pub label: String,
    /// The rule that blocked; empty for an outage.
    pub rule: String,
    /// When it began (for a block: the first refusal that named it).
    pub from: SystemTime,
    /// When it ended, or the run did.
    pub until: SystemTime,
}

fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 60
}

impl Timeline {
    /// The timeline of a run of `scenario` from `started` to `ended`, without outages
    /// ([`RunReport::with_outages`] adds them).
    pub fn new(
        scenario: &Scenario,
        events: &[Event],
        started: SystemTime,
        ended: SystemTime,
    ) -> Self {
        // The whole of the scenario's time, even when its sender stopped sooner: what
        // followed (a block that outlived the sender) shows too.
        let first = minute_of(started);
        let end = ended.max(started + scenario.duration);
        // The minute of the last instant before the end (an end on a minute's first second
        // does not start another).
        let last = minute_of(
            end - Duration::from_micros(1).min(end.duration_since(started).unwrap_or_default()),
        )
        .max(first);
        let mut minutes: Vec<Minute> = (first..=last)
            .map(|m| Minute {
                start: UNIX_EPOCH + Duration::from_secs(m * 60),
                attempts: 0,
                accepted: 0,
                refusals: BTreeMap::new(),
            })
            .collect();
        let mut blocks: Vec<Span> = Vec::new();
        for event in events {
            let index = minute_of(event.at).saturating_sub(first);
            let Some(minute) = usize::try_from(index).ok().and_then(|i| minutes.get_mut(i)) else {
                continue;
            };
            match &event.kind {
                EventKind::Command(c) if c.verb == Verb::Mail => minute.attempts += 1,
                EventKind::Decision(d) if matches!(d.verdict, Verdict::Disconnect(_)) => {
                    minute.attempts += 1;
                }
                EventKind::Accepted { .. } => minute.accepted += 1,
                EventKind::Reply(r) if r.code >= 400 => {
                    *minute.refusals.entry(r.kind.to_string()).or_default() += 1;
                }
                _ => {}
            }
            if let EventKind::Decision(d) = &event.kind
                && let (Some(key), Some(until)) = (&d.key, d.until)
                && !d.is_accept()
            {
                match blocks
                    .iter_mut()
                    .find(|b| &b.label == key && b.from <= event.at && event.at <= b.until)
                {
                    Some(block) => block.until = block.until.max(until),
                    None => blocks.push(Span {
                        label: key.clone(),
                        rule: d.rule.to_string(),
                        from: event.at,
                        until,
                    }),
                }
            }
        }
        Self {
            minutes,
            blocks,
            outages: Vec::new(),
            phases: scenario
                .phases
                .iter()
                .map(|p| (p.at, p.name.clone()))
                .collect(),
        }
    }
}
