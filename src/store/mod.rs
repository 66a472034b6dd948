//! The store: accepted messages and the event log, with bounded memory.
//!
//! [`Store`] is a `Clone` handle over shared state. The session records every command,
//! reply and policy decision as an [`Event`], kept in a compact form (a few bytes a
//! record, see `codec`) and decoded when read, and puts each accepted [`Message`] here
//! *before* it writes the `250` that acknowledges it. Both collections are capped by the
//! config; what falls out is counted, never silently lost.
//!
//! The state sits behind a `std::sync::Mutex`, not a tokio one: it is held for a few
//! pushes at a time and never across an `.await`, and the embedded API reads it from
//! threads outside any runtime.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::config::StoreConfig;
use crate::event::{Event, EventKind};
use crate::reply::ReplyKind;

mod codec;
mod decode;
mod log;
mod message;
mod tally;

use codec::Header;
pub(crate) use codec::{CommandRef, EventRef, ParamsRef};
use log::Log;

pub use message::{Folder, Message};
use tally::Tally;
pub use tally::{Count, Held, InLog, SinceReset, SinceStart};
use tally::{Counted, Counters};

/// The shared store. Cloning gives another handle on the same data.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    notify: tokio::sync::Notify,
    /// The sequence number of the newest event, for live readers.
    newest: tokio::sync::watch::Sender<u64>,
    sessions: AtomicU64,
    clock: Clock,
    limits: StoreConfig,
}

struct State {
    /// Held as `Arc`s so that a reader can take a page, or all of them, without copying
    /// messages while the lock is held.
    messages: VecDeque<Arc<Message>>,
    /// The event log, in its compact form.
    events: Log,
    /// Counts over `events`.
    tally: Tally,
    next_message: u64,
    next_event: u64,
    counters: Counters,
    /// Threads blocked in `wait_for_messages`; the condvar is only signalled for them
    /// (signalling costs a system call even when nobody waits).
    waiters: usize,
    /// Replies ever sent, indexed by kind.
    replies_total: Vec<u64>,
    /// Those with a 4xx or 5xx code.
    refusals_total: Vec<u64>,
}

/// The kinds with a count above zero.
fn nonzero(counts: &[u64]) -> std::collections::BTreeMap<ReplyKind, u64> {
    ReplyKind::ALL
        .iter()
        .map(|&kind| (kind, counts[kind as usize]))
        .filter(|&(_, n)| n > 0)
        .collect()
}

impl Store {
    /// An empty store with `limits`, stamping events with `clock`.
    pub fn new(clock: Clock, limits: StoreConfig) -> Self {
        Self {
            shared: Arc::new(Inner {
                state: Mutex::new(State {
                    messages: VecDeque::new(),
                    events: Log::new(limits.max_event_bytes),
                    tally: Tally::new(),
                    next_message: 1,
                    next_event: 1,
                    counters: Counters::default(),
                    waiters: 0,
                    replies_total: vec![0; ReplyKind::ALL.len()],
                    refusals_total: vec![0; ReplyKind::ALL.len()],
                }),
                changed: Condvar::new(),
                notify: tokio::sync::Notify::new(),
                newest: tokio::sync::watch::Sender::new(0),
                sessions: AtomicU64::new(0),
                clock,
                limits,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent before it can panic, so a poisoned
        // lock still guards valid data.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The clock events are stamped with.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Appends an event outside any mail transaction.
    pub fn record(&self, session: u64, client: IpAddr, kind: EventKind) {
        self.record_in(session, client, None, kind);
    }

    /// Appends an event of mail transaction `transaction` of the session.
    pub(crate) fn record_in(
        &self,
        session: u64,
        client: IpAddr,
        transaction: Option<u32>,
        kind: EventKind,
    ) {
        self.append(session, client, transaction, &EventRef::Kind(&kind));
    }

    /// Appends an event from borrowed parts: a command from its line, a reply from the
    /// buffer it was rendered into, a check from where it is kept.
    pub(crate) fn record_ref(
        &self,
        session: u64,
        client: IpAddr,
        transaction: Option<u32>,
        event: EventRef<'_>,
    ) {
        self.append(session, client, transaction, &event);
    }

    fn append(&self, session: u64, client: IpAddr, transaction: Option<u32>, entry: &EventRef<'_>) {
        let header = Header {
            at: self.shared.clock.now(),
            session,
            transaction,
            client,
        };
        let counted = entry.counted();
        let mut state = self.state();
        let seq = state.next_event;
        state.next_event += 1;
        if let Counted::Reply { kind, code } = counted {
            state.replies_total[kind as usize] += 1;
            // A 4xx or 5xx code, as `Reply::is_positive` tells.
            if code >= 400 {
                state.refusals_total[kind as usize] += 1;
            }
        }
        let bytes = state.events.push(seq, &header, entry);
        state.counters.event_bytes += bytes;
        state.tally.add(seq, session, client, &counted);
        let limits = &self.shared.limits;
        while state.events.len() > limits.max_events
            || (state.counters.event_bytes > limits.max_event_bytes && state.events.len() > 1)
        {
            let Some((old, bytes, client, counted)) = state.events.pop() else {
                break;
            };
            state.counters.event_bytes -= bytes;
            state.counters.events_evicted += 1;
            state.counters.events_evicted_since_reset += 1;
            state.tally.evict(old, client, &counted);
        }
        drop(state);
        if self.shared.newest.receiver_count() > 0 {
            self.shared.newest.send_replace(seq);
        }
    }

    /// A number for a new session, from 1.
    pub(crate) fn next_session(&self) -> u64 {
        self.shared.sessions.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Sessions begun so far.
    pub fn sessions_total(&self) -> u64 {
        self.shared.sessions.load(Ordering::Relaxed)
    }

    /// Watches the sequence number of the newest event: a live reader waits for a change,
    /// then reads [`events_after`](Self::events_after) the last one it saw.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.newest.subscribe()
    }

    /// Up to `limit` events held whose sequence number is above `seq`, oldest first.
    pub fn events_after(&self, seq: u64, limit: usize) -> Vec<Event> {
        let state = self.state();
        let skip = Self::skip(&state, seq);
        state.events.iter_from(skip).take(limit).collect()
    }

    /// How many held events have a sequence number up to `seq`.
    fn skip(state: &State, seq: u64) -> usize {
        let first = state.events.first_seq().unwrap_or(0);
        usize::try_from(seq.saturating_add(1).saturating_sub(first))
            .unwrap_or(usize::MAX)
            .min(state.events.len())
    }

    /// Scans at most `scan` held events after `seq`, oldest first, and returns up to
    /// `limit` of them that `matches`, with the sequence number of the last event looked
    /// at (`seq` when none was). Each event looked at is decoded from the compact log and
    /// only the matches are kept; `scan` bounds the time the lock is held.
    pub fn scan_events(
        &self,
        seq: u64,
        scan: usize,
        limit: usize,
        mut matches: impl FnMut(&Event) -> bool,
    ) -> (Vec<Event>, u64) {
        let state = self.state();
        let skip = Self::skip(&state, seq);
        let mut found = Vec::new();
        let mut last = seq;
        for event in state.events.iter_from(skip).take(scan) {
            if found.len() >= limit {
                break;
            }
            last = event.seq;
            if matches(&event) {
                found.push(event);
            }
        }
        (found, last)
    }

    /// The newest held event that `matches`, looking from the newest back.
    pub fn find_last(&self, mut matches: impl FnMut(&Event) -> bool) -> Option<Event> {
        self.state().events.iter_back().find(|e| matches(e))
    }

    /// The sequence number of the newest event recorded (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.state().next_event - 1
    }

    /// Counts over the events held: replies by kind, decisions by stage, IP and sender.
    /// Kept as events come and go, so this copies only the counts.
    pub fn in_log(&self) -> InLog {
        self.state().tally.snapshot()
    }

    /// Replies sent since the store was made, by kind; unlike the
    /// [`in_log`](Self::in_log) counts of the events held, these survive eviction and
    /// [`clear`](Self::clear), as a metric's counters must.
    pub fn replies_total(&self) -> std::collections::BTreeMap<ReplyKind, u64> {
        nonzero(&self.state().replies_total)
    }

    /// Refusals (replies with a 4xx or 5xx code) sent since the store was made, by kind;
    /// kept like [`replies_total`](Self::replies_total).
    pub fn refusals_total(&self) -> std::collections::BTreeMap<ReplyKind, u64> {
        nonzero(&self.state().refusals_total)
    }

    /// Stores an accepted message and returns its id. `build` receives the id.
    pub(crate) fn accept(&self, build: impl FnOnce(u64) -> Message) -> u64 {
        let limits = &self.shared.limits;
        let mut state = self.state();
        let id = state.next_message;
        state.next_message += 1;
        let message = build(id);
        state.counters.message_bytes += message.raw.len();
        state.counters.accepted_since_start += 1;
        state.counters.accepted_since_reset += 1;
        state.messages.push_back(Arc::new(message));
        while state.messages.len() > limits.max_messages
            || (state.counters.message_bytes > limits.max_bytes && state.messages.len() > 1)
        {
            let Some(old) = state.messages.pop_front() else {
                break;
            };
            state.counters.message_bytes -= old.raw.len();
            state.counters.messages_evicted += 1;
            state.counters.messages_evicted_since_reset += 1;
        }
        let waiters = state.waiters;
        drop(state);
        if waiters > 0 {
            self.shared.changed.notify_all();
        }
        self.shared.notify.notify_waiters();
        id
    }

    /// The messages held, oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.snapshot().iter().map(|m| Message::clone(m)).collect()
    }

    /// The messages held, oldest first, shared: taking them copies pointers, not messages.
    pub fn snapshot(&self) -> Vec<Arc<Message>> {
        self.state().messages.iter().cloned().collect()
    }

    /// The messages that `matches`, oldest first: how many there are, and up to `limit` of
    /// them after skipping `start`. Only the page is taken from the store.
    pub fn messages_page(
        &self,
        start: usize,
        limit: usize,
        mut matches: impl FnMut(&Message) -> bool,
    ) -> (usize, Vec<Arc<Message>>) {
        let state = self.state();
        let mut total = 0;
        let mut page = Vec::new();
        for message in &state.messages {
            if matches(message) {
                if total >= start && page.len() < limit {
                    page.push(message.clone());
                }
                total += 1;
            }
        }
        (total, page)
    }

    /// The message with id `id`, if it is still held.
    pub fn message(&self, id: u64) -> Option<Message> {
        let state = self.state();
        // Ids rise but may have gaps (messages removed one by one).
        let index = state.messages.binary_search_by_key(&id, |m| m.id).ok()?;
        state.messages.get(index).map(|m| Message::clone(m))
    }

    /// Forgets the messages that `matches`, keeping the others and the events; returns how
    /// many it forgot.
    pub fn remove_messages(&self, mut matches: impl FnMut(&Message) -> bool) -> usize {
        let mut state = self.state();
        let before = state.messages.len();
        let mut freed = 0;
        state.messages.retain(|m| {
            let gone = matches(m);
            if gone {
                freed += m.raw.len();
            }
            !gone
        });
        state.counters.message_bytes -= freed;
        before - state.messages.len()
    }

    /// Forgets every message, keeping the events; returns how many there were.
    pub fn clear_messages(&self) -> usize {
        let mut state = self.state();
        let n = state.messages.len();
        state.messages.clear();
        state.counters.message_bytes = 0;
        n
    }

    /// The events held, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.state().events.iter_from(0).collect()
    }

    /// What the store holds now.
    pub fn held(&self) -> Held {
        let state = self.state();
        Held {
            messages: state.messages.len(),
            message_bytes: state.counters.message_bytes,
            events: state.events.len(),
            event_bytes: state.counters.event_bytes,
        }
    }

    /// What was counted since the store was made; [`clear`](Self::clear) keeps it.
    pub fn since_start(&self) -> SinceStart {
        let state = self.state();
        SinceStart {
            sessions: self.sessions_total(),
            messages_accepted: state.counters.accepted_since_start,
            messages_evicted: state.counters.messages_evicted,
            events_evicted: state.counters.events_evicted,
            replies: nonzero(&state.replies_total),
        }
    }

    /// What was counted since the store was made or last cleared.
    pub fn since_reset(&self) -> SinceReset {
        let counters = self.state().counters;
        SinceReset {
            messages_accepted: counters.accepted_since_reset,
            messages_evicted: counters.messages_evicted_since_reset,
            events_evicted: counters.events_evicted_since_reset,
        }
    }

    /// Forgets every message and event (ids keep counting up) and what was counted over
    /// them; the counts [`since_start`](Self::since_start) stay.
    pub fn clear(&self) {
        let mut state = self.state();
        state.messages.clear();
        state.events.clear();
        state.tally = Tally::new();
        state.counters = Counters {
            message_bytes: 0,
            event_bytes: 0,
            accepted_since_reset: 0,
            messages_evicted_since_reset: 0,
            events_evicted_since_reset: 0,
            ..state.counters
        };
    }

    /// Blocks until at least `n` messages were accepted since the last
    /// [`clear`](Self::clear), or `timeout` passes (real time).
    ///
    /// # Errors
    ///
    /// The number accepted so far when the time runs out.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Result<Vec<Message>, usize> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            if state.counters.accepted_since_reset as usize >= n {
                let held: Vec<Arc<Message>> = state.messages.iter().cloned().collect();
                drop(state);
                return Ok(held.iter().map(|m| Message::clone(m)).collect());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(state.counters.accepted_since_reset as usize);
            }
            state.waiters += 1;
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiters -= 1;
        }
    }

    /// The async form of [`wait_for_messages`](Self::wait_for_messages), for tokio tests.
    ///
    /// # Errors
    ///
    /// The number accepted so far when the time runs out.
    pub async fn wait_for_messages_async(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Message>, usize> {
        let wait = async {
            loop {
                let notified = self.shared.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.state().counters.accepted_since_reset as usize >= n {
                    return self.messages();
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| self.state().counters.accepted_since_reset as usize)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("held", &self.held()).finish()
    }
}

#[cfg(test)]
mod tests;
