//! What a run left behind, for [`evaluate`](super::evaluate): its events, messages, MX
//! outages, seed and end.

use std::time::SystemTime;

use crate::event::Event;
use crate::store::Message;

/// An MX host's outage during a run, by the server's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outage {
    /// The MX host that was down.
    pub mx: String,
    /// When it went down.
    pub from: SystemTime,
    /// When it came back; `None` if it never did (until the end of the run).
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

/// What a run left behind, for [`evaluate`](super::evaluate). Times are the server's
/// (virtual) clock.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Run<'a> {
    /// The event log, oldest first.
    pub events: &'a [Event],
    /// The messages accepted.
    pub messages: &'a [Message],
    /// The MX outages the timeline caused (none for the embedded server).
    pub outages: &'a [Outage],
    /// The seed of the run (a scenario's, or the config's): the report names it.
    pub seed: u64,
    /// When the run ended, if the caller knows; see [`Run::end`].
    pub ended: Option<SystemTime>,
    /// Messages the store evicted before the check (its `max_messages`): not seen.
    pub evicted_messages: u64,
    /// Events the store evicted before the check (its `max_events`): not seen.
    pub evicted_events: u64,
}

impl<'a> Run<'a> {
    /// A run's record; it ends at its last event unless [`ending_at`](Self::ending_at)
    /// says otherwise.
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
            ended: None,
            evicted_messages: 0,
            evicted_events: 0,
        }
    }

    /// The same run, ended at `ended` (the runner knows when the timeline stopped; the
    /// log only knows its last event).
    #[must_use]
    pub fn ending_at(self, ended: SystemTime) -> Self {
        Self {
            ended: Some(ended),
            ..self
        }
    }

    /// The same run, whose store evicted `messages` and `events` before the check (the
    /// store's [`SinceReset`](crate::store::SinceReset)): the outcomes that read them say
    /// so, as what they saw is then short.
    #[must_use]
    pub fn evicted(self, messages: u64, events: u64) -> Self {
        Self {
            evicted_messages: messages,
            evicted_events: events,
            ..self
        }
    }

    /// The end of the run: the later of [`ended`](Self::ended) and the last event;
    /// `None` for an empty log with no end given.
    pub fn end(&self) -> Option<SystemTime> {
        let last = self.events.last().map(|e| e.at);
        match (self.ended, last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}
