//! The store: accepted messages and the event log, with bounded memory.
//!
//! [`Store`] is a `Clone` handle over shared state. The session records every command,
//! reply and policy decision as an [`Event`], and puts each accepted [`Message`] here
//! *before* it writes the `250` that acknowledges it. Both collections are capped by the
//! config; what falls out is counted, never silently lost.
//!
//! The state sits behind a `std::sync::Mutex`, not a tokio one: it is held for a few
//! pushes at a time and never across an `.await`, and the embedded API reads it from
//! threads outside any runtime.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::StoreConfig;
use crate::policy::{AuthReport, Decision, DkimCheck, SpfCheck};
use crate::reply::{Reply, ReplyKind};
use crate::units::Stage;

/// Where an accepted message was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Folder {
    /// The inbox.
    Inbox,
    /// The junk folder.
    Junk,
}

/// A message answered `250` at end of data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Message {
    /// Store-wide number, from 1.
    pub id: u64,
    /// The session it arrived in.
    pub session: u64,
    /// The simulated MX host it arrived at (`mx1`).
    pub mx: String,
    /// When it was accepted, by the server's clock.
    #[serde(with = "crate::clock::rfc3339")]
    pub received_at: SystemTime,
    /// The client's address.
    pub client: SocketAddr,
    /// The HELO/EHLO argument.
    pub helo: String,
    /// The reverse path, empty for the null sender.
    pub mail_from: String,
    /// The accepted recipients.
    pub rcpt_to: Vec<String>,
    /// Whether it arrived over TLS.
    pub tls: bool,
    /// Where it was delivered.
    pub folder: Folder,
    /// SPF, DKIM and DMARC results, when authentication is on.
    pub auth: Option<AuthReport>,
    /// The message as stored, with the headers qqmx added (`Received`, `X-QQ-mid`).
    #[serde(skip)]
    pub raw: Arc<[u8]>,
}

impl Message {
    /// The stored bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.raw)
    }

    /// The first header called `name` (case-insensitive), unfolded, without its name.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let mut found: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(value) = found.as_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            if found.is_some() {
                break;
            }
            if let Some((field, value)) = line.split_once(':')
                && field.eq_ignore_ascii_case(name)
            {
                found = Some(value.trim().to_owned());
            }
        }
        found
    }

    /// The body after the first blank line.
    pub fn body(&self) -> &[u8] {
        self.raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(&[][..], |i| &self.raw[i + 4..])
    }
}

/// One thing that happened, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// Store-wide sequence number, from 1.
    pub seq: u64,
    /// When, by the server's clock.
    #[serde(with = "crate::clock::rfc3339")]
    pub at: SystemTime,
    /// The session, numbered from 1 in accept order.
    pub session: u64,
    /// The client's address.
    pub client: IpAddr,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// Roughly the memory the event holds: its fixed size plus the text it owns.
    fn approx_bytes(&self) -> usize {
        let text = match &self.kind {
            EventKind::Command { line } => line.len(),
            EventKind::Reply(reply) => reply.text.len(),
            EventKind::Decision(d) => {
                d.rule.len() + d.detail.len() + d.key.as_ref().map_or(0, String::len)
            }
            EventKind::TlsFailed { error } => error.len(),
            EventKind::Connected { mx, .. } => mx.len(),
            EventKind::Closed { reason } => reason.len(),
            EventKind::Spf(spf) => spf.domain.len() + spf.reason.len(),
            EventKind::Authenticated(report) => {
                let dkim: usize = report
                    .dkim
                    .iter()
                    .map(|d| d.domain.len() + d.selector.len() + d.algorithm.len() + d.reason.len())
                    .sum();
                let spf = report.spf.domain.len() + report.spf.reason.len();
                let dmarc = report.dmarc.domain.len() + report.dmarc.reason.len();
                dkim + report.dkim.len() * std::mem::size_of::<DkimCheck>() + spf + dmarc
            }
            EventKind::Fault { .. }
            | EventKind::TlsStarted
            | EventKind::Discarded { .. }
            | EventKind::Accepted { .. } => 0,
        };
        std::mem::size_of::<Self>() + text
    }
}

/// What an [`Event`] records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum EventKind {
    /// A client connected to the listener of MX host `mx` on `local`.
    Connected {
        /// The listener's address.
        local: SocketAddr,
        /// The simulated MX host (`mx1`).
        mx: String,
    },
    /// A command line, without CRLF (cut at 512 bytes).
    Command {
        /// The line.
        line: String,
    },
    /// A reply qqmx sent.
    Reply(Reply),
    /// A policy decision and its reason.
    Decision(Decision),
    /// The TLS handshake completed.
    TlsStarted,
    /// The TLS handshake failed.
    TlsFailed {
        /// The error.
        error: String,
    },
    /// Bytes the client pipelined after STARTTLS, thrown away as RFC 3207 requires.
    Discarded {
        /// How many.
        bytes: usize,
    },
    /// SPF for the envelope sender, checked at MAIL.
    Spf(SpfCheck),
    /// SPF, DKIM and DMARC for a complete message, checked at the end of data.
    Authenticated(AuthReport),
    /// A chaos fault fired.
    Fault {
        /// Which.
        fault: crate::chaos::FaultKind,
        /// At which stage, when it is not the one the next reply answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<Stage>,
    },
    /// A message went into the store.
    Accepted {
        /// Its id.
        message: u64,
    },
    /// The connection ended.
    Closed {
        /// Why (`quit`, `client closed`, `idle timeout`, ...).
        reason: String,
    },
}

/// How much the store holds and how much it has dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoreStats {
    /// Messages held now.
    pub messages: usize,
    /// Raw bytes held now.
    pub bytes: usize,
    /// Events held now.
    pub events: usize,
    /// Bytes the events held use, roughly (fixed size plus text).
    pub event_bytes: usize,
    /// Messages ever accepted.
    pub accepted_total: u64,
    /// Messages evicted to stay under the caps.
    pub messages_evicted: u64,
    /// Events evicted to stay under the caps (count and bytes).
    pub events_evicted: u64,
}

/// Decisions made, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Count {
    /// Decisions that let the client go on (a message into the inbox or junk included).
    pub accepted: u64,
    /// Refusals, disconnections and delays.
    pub refused: u64,
}

impl Count {
    fn add(&mut self, accepted: bool) {
        if accepted {
            self.accepted += 1;
        } else {
            self.refused += 1;
        }
    }

    /// Takes one away; true when nothing is left.
    fn remove(&mut self, accepted: bool) -> bool {
        if accepted {
            self.accepted = self.accepted.saturating_sub(1);
        } else {
            self.refused = self.refused.saturating_sub(1);
        }
        self.accepted == 0 && self.refused == 0
    }
}

/// Counts over the events held, kept up to date as events are recorded and evicted, so
/// that reading them costs nothing like a pass over the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventTally {
    /// Replies, by kind.
    pub replies: BTreeMap<ReplyKind, usize>,
    /// Decisions by stage.
    pub by_stage: BTreeMap<Stage, Count>,
    /// Decisions by client IP.
    pub by_ip: BTreeMap<IpAddr, Count>,
    /// Decisions from `MAIL` on, by envelope sender (`<>` for the null sender).
    pub by_sender: BTreeMap<String, Count>,
}

/// The live form of [`EventTally`].
#[derive(Default)]
struct Tally {
    replies: Vec<usize>,
    by_stage: BTreeMap<Stage, Count>,
    by_ip: HashMap<IpAddr, Count>,
    by_sender: HashMap<Arc<str>, Count>,
    /// The sender of each open session's transaction, from its MAIL command.
    senders: HashMap<u64, Arc<str>>,
    /// The sender each held decision was counted under, by event sequence number.
    counted: HashMap<u64, Arc<str>>,
}

impl Tally {
    fn new() -> Self {
        Self {
            replies: vec![0; ReplyKind::ALL.len()],
            ..Self::default()
        }
    }

    fn add(&mut self, event: &Event) {
        match &event.kind {
            EventKind::Command { line } => {
                if let Some(sender) = mail_from(line) {
                    self.senders.insert(event.session, Arc::from(sender));
                }
            }
            EventKind::Closed { .. } => {
                self.senders.remove(&event.session);
            }
            EventKind::Reply(reply) => self.replies[reply.kind as usize] += 1,
            EventKind::Decision(decision) => {
                let accepted = decision.is_accept();
                self.by_stage
                    .entry(decision.stage)
                    .or_default()
                    .add(accepted);
                self.by_ip.entry(event.client).or_default().add(accepted);
                if decision.stage >= Stage::Mail
                    && let Some(sender) = self.senders.get(&event.session)
                {
                    self.by_sender
                        .entry(sender.clone())
                        .or_default()
                        .add(accepted);
                    self.counted.insert(event.seq, sender.clone());
                }
            }
            _ => {}
        }
    }

    fn evict(&mut self, event: &Event) {
        match &event.kind {
            EventKind::Reply(reply) => {
                let n = &mut self.replies[reply.kind as usize];
                *n = n.saturating_sub(1);
            }
            EventKind::Decision(decision) => {
                let accepted = decision.is_accept();
                if let Some(count) = self.by_stage.get_mut(&decision.stage)
                    && count.remove(accepted)
                {
                    self.by_stage.remove(&decision.stage);
                }
                if let Some(count) = self.by_ip.get_mut(&event.client)
                    && count.remove(accepted)
                {
                    self.by_ip.remove(&event.client);
                }
                if let Some(sender) = self.counted.remove(&event.seq)
                    && let Some(count) = self.by_sender.get_mut(&sender)
                    && count.remove(accepted)
                {
                    self.by_sender.remove(&sender);
                }
            }
            _ => {}
        }
    }

    fn snapshot(&self) -> EventTally {
        EventTally {
            replies: ReplyKind::ALL
                .iter()
                .map(|&kind| (kind, self.replies[kind as usize]))
                .filter(|&(_, n)| n > 0)
                .collect(),
            by_stage: self.by_stage.clone(),
            by_ip: self.by_ip.iter().map(|(ip, n)| (*ip, *n)).collect(),
            by_sender: self
                .by_sender
                .iter()
                .map(|(sender, n)| (sender.to_string(), *n))
                .collect(),
        }
    }
}

/// The address of a `MAIL FROM:<...>` line, lower case, `<>` for the null sender.
fn mail_from(line: &str) -> Option<String> {
    let head = line.get(..10)?;
    if !head.eq_ignore_ascii_case("MAIL FROM:") {
        return None;
    }
    let rest = line[10..].trim_start();
    let path = rest.strip_prefix('<')?.split('>').next()?;
    Some(if path.is_empty() {
        "<>".to_owned()
    } else {
        path.to_ascii_lowercase()
    })
}

/// The shared store. Cloning gives another handle on the same data.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
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
    events: VecDeque<Event>,
    /// Counts over `events`.
    tally: Tally,
    next_message: u64,
    next_event: u64,
    stats: StoreStats,
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
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    messages: VecDeque::new(),
                    events: VecDeque::new(),
                    tally: Tally::new(),
                    next_message: 1,
                    next_event: 1,
                    stats: StoreStats::default(),
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

    /// Appends an event.
    pub fn record(&self, session: u64, client: IpAddr, kind: EventKind) {
        let at = self.shared.clock.now();
        let mut state = self.state();
        let seq = state.next_event;
        state.next_event += 1;
        let event = Event {
            seq,
            at,
            session,
            client,
            kind,
        };
        if let EventKind::Reply(reply) = &event.kind {
            state.replies_total[reply.kind as usize] += 1;
            if !reply.is_positive() {
                state.refusals_total[reply.kind as usize] += 1;
            }
        }
        state.stats.event_bytes += event.approx_bytes();
        state.tally.add(&event);
        state.events.push_back(event);
        let limits = &self.shared.limits;
        while state.events.len() > limits.max_events
            || (state.stats.event_bytes > limits.max_event_bytes && state.events.len() > 1)
        {
            let Some(old) = state.events.pop_front() else {
                break;
            };
            state.stats.event_bytes -= old.approx_bytes();
            state.stats.events_evicted += 1;
            state.tally.evict(&old);
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
        state.events.range(skip..).take(limit).cloned().collect()
    }

    /// How many held events have a sequence number up to `seq`.
    fn skip(state: &State, seq: u64) -> usize {
        let first = state.events.front().map_or(0, |e| e.seq);
        usize::try_from(seq.saturating_add(1).saturating_sub(first))
            .unwrap_or(usize::MAX)
            .min(state.events.len())
    }

    /// Scans at most `scan` held events after `seq`, oldest first, and returns up to
    /// `limit` of them that `matches`, with the sequence number of the last event looked
    /// at (`seq` when none was). Only the matches are copied, so a narrow filter over a
    /// long log holds the lock briefly and copies little.
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
        for event in state.events.range(skip..).take(scan) {
            if found.len() >= limit {
                break;
            }
            last = event.seq;
            if matches(event) {
                found.push(event.clone());
            }
        }
        (found, last)
    }

    /// The newest held event that `matches`, looking from the newest back.
    pub fn find_last(&self, mut matches: impl FnMut(&Event) -> bool) -> Option<Event> {
        self.state()
            .events
            .iter()
            .rev()
            .find(|e| matches(e))
            .cloned()
    }

    /// The sequence number of the newest event recorded (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.state().next_event - 1
    }

    /// Counts over the events held: replies by kind, decisions by stage, IP and sender.
    /// Kept as events come and go, so this copies only the counts.
    pub fn tally(&self) -> EventTally {
        self.state().tally.snapshot()
    }

    /// Replies sent since the store was made, by kind; unlike
    /// [`reply_counts`](Self::reply_counts) these survive eviction and
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
        state.stats.bytes += message.raw.len();
        state.stats.accepted_total += 1;
        state.messages.push_back(Arc::new(message));
        while state.messages.len() > limits.max_messages
            || (state.stats.bytes > limits.max_bytes && state.messages.len() > 1)
        {
            let Some(old) = state.messages.pop_front() else {
                break;
            };
            state.stats.bytes -= old.raw.len();
            state.stats.messages_evicted += 1;
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
        let first = state.messages.front()?.id;
        let index = usize::try_from(id.checked_sub(first)?).ok()?;
        state
            .messages
            .get(index)
            .filter(|m| m.id == id)
            .map(|m| Message::clone(m))
    }

    /// Forgets every message, keeping the events; returns how many there were.
    pub fn clear_messages(&self) -> usize {
        let mut state = self.state();
        let n = state.messages.len();
        state.messages.clear();
        state.stats.bytes = 0;
        n
    }

    /// The events held, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.state().events.iter().cloned().collect()
    }

    /// Counts of what is held and what was dropped.
    pub fn stats(&self) -> StoreStats {
        let state = self.state();
        StoreStats {
            messages: state.messages.len(),
            events: state.events.len(),
            ..state.stats
        }
    }

    /// Counts of replies in the event log, by kind.
    pub fn reply_counts(&self) -> BTreeMap<ReplyKind, usize> {
        self.tally().replies
    }

    /// Forgets every message and event (ids keep counting up).
    pub fn clear(&self) {
        let mut state = self.state();
        state.messages.clear();
        state.events.clear();
        state.tally = Tally::new();
        state.stats = StoreStats::default();
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
            if state.stats.accepted_total as usize >= n {
                let held: Vec<Arc<Message>> = state.messages.iter().cloned().collect();
                drop(state);
                return Ok(held.iter().map(|m| Message::clone(m)).collect());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(state.stats.accepted_total as usize);
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
                if self.state().stats.accepted_total as usize >= n {
                    return self.messages();
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| self.state().stats.accepted_total as usize)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64, bytes: usize) -> Message {
        Message {
            id,
            session: 1,
            mx: "mx1".into(),
            received_at: SystemTime::UNIX_EPOCH,
            client: "127.0.0.1:1".parse().expect("addr"),
            helo: "h".into(),
            mail_from: String::new(),
            rcpt_to: vec![],
            tls: false,
            folder: Folder::Inbox,
            auth: None,
            raw: vec![b'x'; bytes].into(),
        }
    }

    #[test]
    fn caps_evict_the_oldest_and_count_them() {
        let limits = StoreConfig {
            max_messages: 2,
            max_bytes: 1000,
            max_events: 3,
            ..StoreConfig::default()
        };
        let store = Store::new(Clock::manual_at_unix(0), limits);
        for _ in 0..3 {
            store.accept(|id| message(id, 10));
        }
        let ids: Vec<u64> = store.messages().iter().map(|m| m.id).collect();
        assert_eq!(ids, [2, 3]);
        store.accept(|id| message(id, 995));
        assert_eq!(store.messages().len(), 1, "byte cap keeps only the newest");
        for _ in 0..5 {
            store.record(1, "127.0.0.1".parse().expect("ip"), EventKind::TlsStarted);
        }
        let stats = store.stats();
        assert_eq!((stats.messages_evicted, stats.events_evicted), (3, 2));
        assert_eq!((stats.messages, stats.events, stats.bytes), (1, 3, 995));
    }

    #[test]
    fn the_event_log_is_capped_in_bytes_too() {
        let limits = StoreConfig {
            max_event_bytes: 25_000,
            ..StoreConfig::default()
        };
        let store = Store::new(Clock::manual_at_unix(0), limits);
        let client = "127.0.0.1".parse().expect("ip");
        for _ in 0..10 {
            let error = "x".repeat(10_000);
            store.record(1, client, EventKind::TlsFailed { error });
        }
        let stats = store.stats();
        assert_eq!((stats.events, stats.events_evicted), (2, 8));
        assert!(
            (20_000..=25_000).contains(&stats.event_bytes),
            "{}",
            stats.event_bytes
        );
        // One event larger than the cap is still kept, alone.
        let error = "y".repeat(40_000);
        store.record(1, client, EventKind::TlsFailed { error });
        let stats = store.stats();
        assert_eq!((stats.events, stats.events_evicted), (1, 10));
        store.clear();
        assert_eq!(store.stats().event_bytes, 0);
    }

    #[test]
    fn headers_unfold() {
        let mut m = message(1, 0);
        m.raw = b"Received: from a\r\n\tby b\r\nSubject: hi\r\n\r\nbody"
            .to_vec()
            .into();
        assert_eq!(m.header("received").as_deref(), Some("from a by b"));
        assert_eq!(m.header("Subject").as_deref(), Some("hi"));
        assert_eq!(m.header("To"), None);
        assert_eq!(m.body(), b"body");
    }

    #[test]
    fn waiting_times_out_with_the_count() {
        let store = Store::new(Clock::manual_at_unix(0), StoreConfig::default());
        store.accept(|id| message(id, 1));
        assert_eq!(
            store.wait_for_messages(2, Duration::from_millis(10)).err(),
            Some(1)
        );
        assert_eq!(
            store.wait_for_messages(1, Duration::ZERO).map(|m| m.len()),
            Ok(1)
        );
    }

    #[test]
    fn reads_the_sender_of_a_mail_command() {
        assert_eq!(
            mail_from("MAIL FROM:<A@Example.org> SIZE=10").as_deref(),
            Some("a@example.org")
        );
        assert_eq!(mail_from("mail from: <>").as_deref(), Some("<>"));
        assert_eq!(mail_from("RCPT TO:<a@qq.com>"), None);
        assert_eq!(mail_from("MAIL"), None);
    }

    fn decision(stage: Stage, accept: bool) -> EventKind {
        use crate::policy::Verdict;
        EventKind::Decision(Decision {
            stage,
            verdict: if accept {
                Verdict::Accept
            } else {
                Verdict::Reject(ReplyKind::SyntaxError)
            },
            rule: "test".into(),
            detail: String::new(),
            key: None,
            counter: None,
            limit: None,
            window: None,
            block_until: None,
        })
    }

    #[test]
    fn the_tally_follows_the_events_held() {
        let limits = StoreConfig {
            max_events: 4,
            ..StoreConfig::default()
        };
        let store = Store::new(Clock::manual_at_unix(0), limits);
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "127.0.0.3".parse().expect("ip");
        let line = "MAIL FROM:<X@example.org>".to_owned();
        store.record(1, a, EventKind::Command { line });
        store.record(1, a, decision(Stage::Mail, true));
        store.record(2, b, decision(Stage::Connect, false));
        let tally = store.tally();
        assert_eq!(tally.by_sender["x@example.org"].accepted, 1);
        assert_eq!(tally.by_ip[&a].accepted, 1);
        assert_eq!(tally.by_ip[&b].refused, 1);
        assert_eq!(tally.by_stage[&Stage::Connect].refused, 1);
        // Three more evict the MAIL command and the decision at MAIL.
        for _ in 0..3 {
            store.record(2, b, decision(Stage::Connect, false));
        }
        let tally = store.tally();
        assert!(tally.by_sender.is_empty(), "{tally:?}");
        assert!(!tally.by_ip.contains_key(&a), "{tally:?}");
        assert_eq!(tally.by_ip[&b].refused, 4);
        assert_eq!(tally.by_stage.len(), 1, "{tally:?}");
        store.clear();
        assert_eq!(store.tally(), EventTally::default());
    }

    #[test]
    fn pages_of_messages_and_events_take_only_the_page() {
        let store = Store::new(Clock::manual_at_unix(0), StoreConfig::default());
        for _ in 0..10 {
            store.accept(|id| message(id, 1));
        }
        let (total, page) = store.messages_page(2, 3, |m| m.id % 2 == 0);
        assert_eq!(total, 5);
        let ids: Vec<u64> = page.iter().map(|m| m.id).collect();
        assert_eq!(ids, [6, 8, 10]);
        let client = "127.0.0.1".parse().expect("ip");
        for _ in 0..10 {
            store.record(1, client, EventKind::TlsStarted);
        }
        let (found, last) = store.scan_events(2, 4, 10, |e| e.seq % 2 == 1);
        let seqs: Vec<u64> = found.iter().map(|e| e.seq).collect();
        assert_eq!((seqs, last), (vec![3, 5], 6));
        let (found, last) = store.scan_events(0, 100, 2, |_| true);
        assert_eq!((found.len(), last), (2, 2));
        assert_eq!(store.scan_events(10, 100, 2, |_| true).1, 10);
        assert_eq!(store.last_seq(), 10);
        assert_eq!(store.find_last(|e| e.seq < 4).map(|e| e.seq), Some(3));
    }
}
