//! Expectations about a sender's behaviour, checked against the event log of a run.
//!
//! [`evaluate`] is pure: it reads a [`Run`] (the events, the accepted messages, the MX
//! outages, all in the server's virtual time) and returns one [`Outcome`] per
//! [`Expect`], whose `seen` says what was observed, the worst offender first when it
//! failed. [`ExpectKind`] documents what each kind counts.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::clock::{Rfc3339, unix_secs};
use crate::event::{CloseReason, Command, Event, EventKind, Verb};
use crate::policy::{AuthResult, Decision};
use crate::reply::{Reply, ReplyKind};
use crate::store::{Folder, Message};
use crate::units::{Stage, duration_text};

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
///
/// Every kind is checked over the event log and the accepted messages of a run ([`Run`]),
/// in the server's virtual time. Where a kind counts *attempts*, an attempt is one
/// transaction (from its `MAIL`; for a refusal at connect or `HELO`, the connection):
/// a sender that pipelines ten `RCPT`s into a refusal makes one attempt, not ten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExpectKind {
    /// Messages accepted (only those at `mx` and in `folder`, when given): between `min`
    /// and `max`, either bound optional; at least 1 when neither is given.
    Accepted,
    /// Refusals sent: replies with a code of 400 or more (only those of kind `reply`,
    /// when given), between `min` and `max` as for `accepted`.
    Rejected,
    /// Attempts made while a key (`ip:...`, `sender:...`, `domain:...`,
    /// `recipient:...`) is blocked: at most `max` (default 0) in each block.
    ///
    /// A block begins at a refusal that carries a block end (`block_until`: the quota
    /// blocks, and the blacklistings that expire) on a key that is not blocked then. It
    /// lasts until that end, pushed later by any refusal during it that names a later one.
    /// Every later refusal on the same key before the end is an attempt while blocked,
    /// except refusals of transactions (or connections) that began before the refusal
    /// that started the block: the sender could not have known yet (the refusal that
    /// starts a block, the other recipients pipelined with it, a concurrent session
    /// already past `MAIL`). Refusals of one transaction count once. The block with the
    /// most attempts is reported.
    RespectsBlocks,
    /// How soon a failed recipient is tried again.
    ///
    /// A failure is, with `after = "temporary"`, a 4xx reply that decides a recipient: to
    /// its `RCPT`, or, for the recipients accepted in the transaction, to `DATA`, at the
    /// end of data, or a `421` that closes the session mid-transaction; with `after =
    /// "dropped"`, a session that ends dropped while the recipient's transaction is
    /// still open (accepted at `RCPT`, or its `RCPT` unanswered, and no final reply to
    /// the message yet). Dropped means closed by a fault (`fault: ...`), a failed write,
    /// or the client closing (`client closed`, `read failed`) while it waited for a
    /// reply.
    ///
    /// The retry is the next `RCPT TO` of the same address (compared without case), in
    /// any session; its delay from the failure must be at least `min_delay` and at most
    /// `max_delay`. A failure never retried breaks `max_delay` only if the run went on
    /// past the failure plus `max_delay` (the end of the run is [`Run::end`], by default
    /// the last event). The worst violation is reported: the one furthest outside its
    /// bound, relatively.
    ///
    /// Limits: a recipient is named only by a logged `RCPT`, so a drop before any (a
    /// fault at connect, `HELO`, `MAIL`, or before the reply to the first `RCPT`) is
    /// counted in the report but not measured; and the next message to the same address
    /// counts as the retry, so scenarios that check retries send each recipient one
    /// message at a time.
    Retries,
    /// `RCPT`s to an address after a `Mailbox not found` reply to an earlier `RCPT` of it
    /// (compared without case): at most `max` (default 0) in all. The address with the
    /// most is reported.
    NoResendToUnknown,
    /// Attempts refused by the new-IP warm-up allowance (rule `reputation.warmup`): at
    /// most `max` (default 0).
    WithinWarmup,
    /// While MX host `mx` is down, mail still arrives: during each of its outages, at
    /// least `min` (default 1) messages accepted at another host (received between the
    /// outage's start and end). Fails when `mx` was never down. The outage with the
    /// fewest is reported.
    Failover,
    /// Every accepted message passes DMARC (authentication on, DMARC `pass`); holds when
    /// none was accepted. How many did not, and why the first did not, is reported.
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
    /// What was seen, in words (`"12 accepted, expected between 10 and 20"`); when it
    /// failed, the worst offender first.
    pub seen: String,
}

impl Outcome {
    /// An outcome, for callers that check something of their own.
    pub fn new(name: impl Into<String>, passed: bool, seen: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed,
            seen: seen.into(),
        }
    }
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
        if let (Some(min), Some(max)) = (self.min_delay, self.max_delay)
            && min > max
        {
            return Err(format!(
                "min_delay {} is above max_delay {}",
                duration_text::Text(min),
                duration_text::Text(max)
            ));
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

/// What a run left behind, for [`evaluate`]. Times are the server's (virtual) clock.
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
    /// When the run ended, if the caller knows; see [`Run::end`].
    pub ended: Option<SystemTime>,
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

/// Checks every expectation against `run`, in order: one [`Outcome`] each. Pure: it
/// reads the log and the messages, nothing else.
pub fn evaluate(expectations: &[Expect], run: &Run<'_>) -> Vec<Outcome> {
    let log = Transcript::read(run.events);
    expectations
        .iter()
        .map(|e| {
            let (passed, seen) = match e.kind {
                ExpectKind::Accepted => accepted(e, run),
                ExpectKind::Rejected => rejected(e, run),
                ExpectKind::RespectsBlocks => respects_blocks(e, &log),
                ExpectKind::Retries => retries(e, run, &log),
                ExpectKind::NoResendToUnknown => no_resend(e, &log),
                ExpectKind::WithinWarmup => within_warmup(e, &log),
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
    /// A name made from the kind and its parameters (`accepted between 90 and 100`).
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

/// The rule of the new-IP warm-up allowance's refusals (`policy`).
const WARMUP_RULE: &str = "reputation.warmup";

// ---- the transcript: one pass over the log -------------------------------------------

/// A reply, as the transcript keeps it.
#[derive(Debug, Clone, Copy)]
struct Answer {
    event: usize,
    at: SystemTime,
    code: u16,
    kind: ReplyKind,
}

/// One `RCPT` in the log.
#[derive(Debug)]
struct Rcpt {
    /// Index of its event.
    event: usize,
    at: SystemTime,
    address: String,
    /// The reply to it, if it got one.
    answer: Option<Answer>,
}

/// A recipient that failed: its `RCPT`, when and why.
#[derive(Debug)]
struct Failure {
    /// Index of the event that failed it (the reply, or the close).
    event: usize,
    at: SystemTime,
    /// Index in [`Transcript::rcpts`].
    rcpt: usize,
    /// `a 451`, `a dropped connection (fault: close)`.
    cause: String,
}

/// A refused policy decision.
#[derive(Debug)]
struct Refusal<'a> {
    /// Index of its event.
    index: usize,
    event: &'a Event,
    decision: &'a Decision,
    /// Index of the event that began the attempt it refuses: the session's `MAIL`, or its
    /// connection for a refusal at connect or `HELO` (or before any `MAIL`).
    attempt: usize,
}

/// What one session is doing, while the log is read.
#[derive(Debug, Default)]
struct SessionState {
    /// Index of its first event (its `Connected`).
    start: usize,
    /// Index of its latest `MAIL`.
    mail: Option<usize>,
    /// Whether the server has said anything yet.
    greeted: bool,
    /// The logged command not answered yet.
    awaiting: Option<Verb>,
    /// The `RCPT` not answered yet.
    rcpt: Option<usize>,
    /// The recipients accepted in the open transaction.
    tx: Vec<usize>,
    /// A `421` already failed them (they fail again only by a drop).
    tx_failed: bool,
    /// `DATA` was answered `354`: the final reply is awaited.
    data: bool,
    /// A fault fired since the last command.
    fault: bool,
}

impl SessionState {
    fn end_transaction(&mut self) {
        self.tx.clear();
        self.tx_failed = false;
        self.data = false;
    }
}

/// The log read once: every `RCPT` with its reply, every refusal with its attempt, and
/// the recipients that failed.
#[derive(Debug, Default)]
struct Transcript<'a> {
    rcpts: Vec<Rcpt>,
    /// Per address, its `RCPT`s (indices in `rcpts`), in order.
    by_address: HashMap<String, Vec<usize>>,
    refusals: Vec<Refusal<'a>>,
    /// Recipients failed by a 4xx.
    temporary: Vec<Failure>,
    /// 4xx replies that failed no named recipient (at connect, `MAIL`, ...).
    unnamed_temporary: usize,
    /// Recipients whose transaction was dropped.
    dropped: Vec<Failure>,
    /// Drops that cut no named recipient's transaction.
    unnamed_dropped: usize,
}

impl<'a> Transcript<'a> {
    fn read(events: &'a [Event]) -> Self {
        let mut t = Self::default();
        let mut sessions: HashMap<u64, SessionState> = HashMap::new();
        for (i, ev) in events.iter().enumerate() {
            let s = sessions.entry(ev.session).or_insert_with(|| SessionState {
                start: i,
                ..SessionState::default()
            });
            match &ev.kind {
                EventKind::Connected { .. } => s.start = i,
                EventKind::Command(command) => t.command(s, i, ev.at, command),
                EventKind::Reply(reply) => t.reply(s, i, ev.at, reply),
                EventKind::Decision(decision) if !decision.is_accept() => {
                    let attempt = if decision.stage <= Stage::Helo {
                        s.start
                    } else {
                        s.mail.unwrap_or(s.start)
                    };
                    t.refusals.push(Refusal {
                        index: i,
                        event: ev,
                        decision,
                        attempt,
                    });
                }
                EventKind::Fault { .. } => s.fault = true,
                EventKind::Closed { reason } => {
                    t.closed(s, i, ev.at, *reason);
                    sessions.remove(&ev.session);
                }
                _ => {}
            }
        }
        t
    }

    fn command(&mut self, s: &mut SessionState, i: usize, at: SystemTime, command: &Command) {
        s.fault = false;
        if command.verb == Verb::Mail {
            s.mail = Some(i);
        }
        if command.ends_transaction() {
            s.end_transaction();
        }
        if command.verb == Verb::Rcpt
            && let Some(address) = &command.address
        {
            let address = address.to_ascii_lowercase();
            let k = self.rcpts.len();
            self.by_address.entry(address.clone()).or_default().push(k);
            self.rcpts.push(Rcpt {
                event: i,
                at,
                address,
                answer: None,
            });
            s.rcpt = Some(k);
        }
        s.awaiting = Some(command.verb);
    }

    fn reply(&mut self, s: &mut SessionState, i: usize, at: SystemTime, reply: &Reply) {
        let verb = s.awaiting.take();
        let greeting = !s.greeted;
        s.greeted = true;
        let code = reply.code;
        let temporary = (400..500).contains(&code);
        let fail = |k: usize| Failure {
            event: i,
            at,
            rcpt: k,
            cause: format!("a {code}"),
        };
        if verb == Some(Verb::Rcpt) {
            if let Some(k) = s.rcpt.take() {
                self.rcpts[k].answer = Some(Answer {
                    event: i,
                    at,
                    code,
                    kind: reply.kind,
                });
                if code < 400 {
                    let address = &self.rcpts[k].address;
                    if !s.tx.iter().any(|&j| self.rcpts[j].address == *address) {
                        s.tx.push(k);
                    }
                } else if temporary {
                    self.temporary.push(fail(k));
                }
            }
            return;
        }
        if verb == Some(Verb::Data) && code == 354 {
            s.data = true;
            return;
        }
        // Replies that decide the open transaction: to DATA, at the end of data, and a
        // 421 that closes the session.
        let decides = verb == Some(Verb::Data) || (verb.is_none() && s.data) || code == 421;
        if decides {
            if temporary && !s.tx_failed {
                if s.tx.is_empty() {
                    if reply.kind != ReplyKind::Timeout && (verb.is_some() || greeting || s.fault) {
                        self.unnamed_temporary += 1;
                    }
                } else {
                    self.temporary.extend(s.tx.iter().map(|&k| fail(k)));
                }
            }
            if code == 421 {
                // The close that follows may still count as a drop for them.
                s.tx_failed = true;
                s.data = false;
            } else {
                s.end_transaction();
            }
        } else if temporary && (greeting || verb == Some(Verb::Mail)) {
            self.unnamed_temporary += 1;
        }
    }

    fn closed(&mut self, s: &SessionState, i: usize, at: SystemTime, reason: CloseReason) {
        let waiting = s.awaiting.is_some() || s.rcpt.is_some() || s.data || !s.greeted;
        let dropped = reason.is_fault()
            || reason == CloseReason::WriteFailed
            || (matches!(reason, CloseReason::ClientClosed | CloseReason::ReadFailed) && waiting);
        if !dropped {
            return;
        }
        let mut cut = s.tx.clone();
        if let Some(k) = s.rcpt
            && !cut
                .iter()
                .any(|&j| self.rcpts[j].address == self.rcpts[k].address)
        {
            cut.push(k);
        }
        if cut.is_empty() {
            self.unnamed_dropped += 1;
        }
        for k in cut {
            self.dropped.push(Failure {
                event: i,
                at,
                rcpt: k,
                cause: format!("a dropped connection ({reason})"),
            });
        }
    }

    /// The first `RCPT` of `address` after event `after`.
    fn next_rcpt(&self, address: &str, after: usize) -> Option<&Rcpt> {
        let list = self.by_address.get(address)?;
        let n = list.partition_point(|&k| self.rcpts[k].event <= after);
        list.get(n).map(|&k| &self.rcpts[k])
    }
}

// ---- the kinds -------------------------------------------------------------------------

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

fn respects_blocks(e: &Expect, log: &Transcript<'_>) -> (bool, String) {
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
                if let Some(until) = r.decision.block_until {
                    block.until = block.until.max(until);
                }
                if r.attempt > block.began && block.attempts.insert(r.attempt) {
                    block.clients.push(r.event.client);
                }
            }
            None => {
                if let Some(until) = r.decision.block_until.filter(|&u| u > at) {
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

fn retries(e: &Expect, run: &Run<'_>, log: &Transcript<'_>) -> (bool, String) {
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

fn no_resend(e: &Expect, log: &Transcript<'_>) -> (bool, String) {
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

fn within_warmup(e: &Expect, log: &Transcript<'_>) -> (bool, String) {
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
        "{} refused by the warm-up allowance, at most {allowed} allowed",
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
            seen.push_str(&format!(" ({key})"));
        }
    }
    (passed, seen)
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

// ---- words -----------------------------------------------------------------------------

/// `1 attempt`, `2 attempts`.
fn plural(n: impl TryInto<u64>, word: &str) -> String {
    count(n, word, &format!("{word}s"))
}

/// `1 reply`, `2 replies`.
fn count(n: impl TryInto<u64>, one: &str, many: &str) -> String {
    let n = n.try_into().unwrap_or(u64::MAX);
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A duration in words: `0s`, `250ms`, `12s`, `1h5m`, `2d3h`.
fn span(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return match d.as_millis() {
            0 => "0s".to_owned(),
            ms => format!("{ms}ms"),
        };
    }
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

/// A time in RFC 3339, to the second.
fn stamp(t: SystemTime) -> String {
    Rfc3339(UNIX_EPOCH + Duration::from_secs(unix_secs(t))).to_string()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::*;
    use crate::policy::{AuthReport, DmarcCheck, SpfCheck, Verdict};

    /// 2025-06-02T01:00:00Z, where runs start.
    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_748_826_000)
    }

    fn t(secs: u64) -> SystemTime {
        t0() + Duration::from_secs(secs)
    }

    const MIN: u64 = 60;

    /// Builds an event log: each event one second after the one before, unless told to
    /// wait.
    struct Log {
        events: Vec<Event>,
        now: SystemTime,
        client: IpAddr,
    }

    impl Log {
        fn new() -> Self {
            Self {
                events: Vec::new(),
                now: t0(),
                client: IpAddr::from([127, 0, 0, 1]),
            }
        }

        fn wait(&mut self, secs: u64) -> &mut Self {
            self.now += Duration::from_secs(secs);
            self
        }

        fn client(&mut self, ip: [u8; 4]) -> &mut Self {
            self.client = IpAddr::from(ip);
            self
        }

        fn push(&mut self, session: u64, kind: EventKind) -> &mut Self {
            self.events.push(Event {
                seq: self.events.len() as u64 + 1,
                at: self.now,
                session,
                transaction: None,
                client: self.client,
                kind,
            });
            self.now += Duration::from_secs(1);
            self
        }

        fn connect(&mut self, session: u64) -> &mut Self {
            self.push(
                session,
                EventKind::Connected {
                    local: SocketAddr::from(([127, 0, 0, 1], 25)),
                    mx: "mx1".into(),
                },
            )
        }

        fn cmd(&mut self, session: u64, verb: Verb) -> &mut Self {
            self.push(
                session,
                EventKind::Command(Command::new(verb, format!("{verb:?}"))),
            )
        }

        fn addressed(&mut self, session: u64, verb: Verb, address: &str) -> &mut Self {
            let mut command = Command::new(verb, format!("{verb:?} <{address}>"));
            command.address = Some(address.to_owned());
            self.push(session, EventKind::Command(command))
        }

        fn mail_cmd(&mut self, session: u64, from: &str) -> &mut Self {
            self.addressed(session, Verb::Mail, from)
        }

        fn rcpt_cmd(&mut self, session: u64, to: &str) -> &mut Self {
            self.addressed(session, Verb::Rcpt, to)
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

        /// A greeting, EHLO and `MAIL`, all accepted.
        fn open(&mut self, session: u64) -> &mut Self {
            self.connect(session)
                .reply(session, ReplyKind::Greeting, 220)
                .cmd(session, Verb::Ehlo)
                .reply(session, ReplyKind::Ehlo, 250)
                .mail_cmd(session, "news@example.org")
                .reply(session, ReplyKind::MailOk, 250)
        }

        fn rcpt(&mut self, session: u64, to: &str, kind: ReplyKind, code: u16) -> &mut Self {
            self.rcpt_cmd(session, to).reply(session, kind, code)
        }

        /// `DATA`, `354` and the final reply.
        fn data(&mut self, session: u64, kind: ReplyKind, code: u16) -> &mut Self {
            self.cmd(session, Verb::Data)
                .reply(session, ReplyKind::DataStart, 354)
                .reply(session, kind, code)
        }

        fn quit(&mut self, session: u64) -> &mut Self {
            self.cmd(session, Verb::Quit)
                .reply(session, ReplyKind::Bye, 221)
                .close(session, CloseReason::Quit)
        }

        fn close(&mut self, session: u64, reason: CloseReason) -> &mut Self {
            self.push(session, EventKind::Closed { reason })
        }

        /// A refused decision on `key` by `rule`, blocking until `until` if given.
        fn refusal(
            &mut self,
            session: u64,
            stage: Stage,
            rule: &'static str,
            key: &str,
            until: Option<SystemTime>,
        ) -> &mut Self {
            let decision = Decision {
                stage,
                verdict: Verdict::Reject(ReplyKind::IpFrequency),
                rule: Cow::Borrowed(rule),
                detail: format!("refused by {rule}"),
                key: Some(key.to_owned()),
                counter: None,
                limit: None,
                window: None,
                block_until: until,
            };
            self.push(session, EventKind::Decision(decision)).reply(
                session,
                ReplyKind::IpFrequency,
                550,
            )
        }

        /// A transaction refused at `RCPT` by the ip_messages quota.
        fn blocked_message(&mut self, session: u64, until: SystemTime) -> &mut Self {
            self.open(session)
                .rcpt_cmd(session, "10001@qq.com")
                .refusal(
                    session,
                    Stage::Rcpt,
                    "quota.ip_messages",
                    "ip:127.0.0.1",
                    Some(until),
                )
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

    fn check(e: &Expect, log: &Log) -> Outcome {
        check_run(e, &Run::new(&log.events, &[], &[], 7))
    }

    fn check_run(e: &Expect, run: &Run<'_>) -> Outcome {
        let mut outcomes = evaluate(std::slice::from_ref(e), run);
        assert_eq!(outcomes.len(), 1);
        outcomes.remove(0)
    }

    #[track_caller]
    fn passes(outcome: &Outcome) {
        assert!(outcome.passed, "expected a pass: {}", outcome.seen);
    }

    #[track_caller]
    fn fails_with(outcome: &Outcome, seen: &str) {
        assert!(!outcome.passed, "expected a failure: {}", outcome.seen);
        assert!(
            outcome.seen.starts_with(seen),
            "`{}` does not start with `{seen}`",
            outcome.seen
        );
    }

    fn message(id: u64, mx: &str, at: SystemTime, folder: Folder) -> Message {
        Message {
            id,
            session: id,
            mx: mx.to_owned(),
            received_at: at,
            client: SocketAddr::from(([127, 0, 0, 1], 40000)),
            helo: "client.example.org".into(),
            mail_from: "news@example.org".into(),
            rcpt_to: vec!["10001@qq.com".into()],
            tls: false,
            folder,
            auth: None,
            raw: Arc::from(&b"Subject: hi\r\n\r\nhi\r\n"[..]),
        }
    }

    fn dmarc(result: AuthResult, reason: &str) -> AuthReport {
        AuthReport {
            spf: SpfCheck::new(AuthResult::Pass, "example.org", "pass"),
            dkim: Vec::new(),
            dmarc: DmarcCheck {
                result,
                domain: "example.org".into(),
                policy: None,
                pct: 100,
                spf_aligned: result == AuthResult::Pass,
                dkim_aligned: false,
                reason: reason.into(),
            },
        }
    }

    // ---- accepted ----------------------------------------------------------------------

    #[test]
    fn accepted_counts_messages_by_mx_and_folder() {
        let messages = [
            message(1, "mx1", t(0), Folder::Inbox),
            message(2, "mx2", t(60), Folder::Inbox),
            message(3, "mx2", t(120), Folder::Junk),
        ];
        let run = Run::new(&[], &messages, &[], 1);
        let between = Expect {
            min: Some(2),
            max: Some(3),
            ..expect(ExpectKind::Accepted)
        };
        let outcome = check_run(&between, &run);
        passes(&outcome);
        assert_eq!(outcome.name, "accepted between 2 and 3");
        assert_eq!(outcome.seen, "3 accepted, expected between 2 and 3");

        let mx2_inbox = Expect {
            mx: Some("mx2".into()),
            folder: Some(Folder::Inbox),
            min: Some(2),
            ..expect(ExpectKind::Accepted)
        };
        let outcome = check_run(&mx2_inbox, &run);
        fails_with(&outcome, "1 accepted, expected at least 2");
        assert_eq!(outcome.name, "accepted at least 2 at mx2 into inbox");

        let too_many = Expect {
            max: Some(2),
            ..expect(ExpectKind::Accepted)
        };
        fails_with(
            &check_run(&too_many, &run),
            "3 accepted, expected at most 2",
        );
    }

    #[test]
    fn accepted_without_bounds_means_at_least_one() {
        let any = expect(ExpectKind::Accepted);
        let none = check_run(&any, &Run::new(&[], &[], &[], 1));
        fails_with(&none, "0 accepted, expected at least 1");
        let one = [message(1, "mx1", t(0), Folder::Inbox)];
        passes(&check_run(&any, &Run::new(&[], &one, &[], 1)));
        let nothing = Expect {
            max: Some(0),
            ..expect(ExpectKind::Accepted)
        };
        passes(&check_run(&nothing, &Run::new(&[], &[], &[], 1)));
    }

    // ---- rejected ----------------------------------------------------------------------

    #[test]
    fn rejected_counts_replies_from_400_of_a_kind() {
        let mut log = Log::new();
        log.reply(1, ReplyKind::IpFrequency, 550)
            .reply(1, ReplyKind::MailboxNotFound, 550)
            .reply(1, ReplyKind::Greylisted, 451)
            .reply(1, ReplyKind::DataStart, 354)
            .reply(1, ReplyKind::Queued, 250);
        let none_of_these = Expect {
            reply: Some(ReplyKind::IpFrequency),
            max: Some(0),
            ..expect(ExpectKind::Rejected)
        };
        let outcome = check(&none_of_these, &log);
        fails_with(
            &outcome,
            "1 `ip_frequency` reply, expected at most 0; the first at 2025-06-02T01:00:00Z: 550",
        );
        assert_eq!(outcome.name, "`ip_frequency` replies at most 0");
        let all = Expect {
            min: Some(3),
            max: Some(3),
            ..expect(ExpectKind::Rejected)
        };
        let outcome = check(&all, &log);
        passes(&outcome);
        assert_eq!(outcome.seen, "3 refusals, expected exactly 3");
        let unknown = Expect {
            reply: Some(ReplyKind::MailboxNotFound),
            min: Some(2),
            ..expect(ExpectKind::Rejected)
        };
        fails_with(
            &check(&unknown, &log),
            "1 `mailbox_not_found` reply, expected at least 2",
        );
    }

    // ---- respects_blocks ---------------------------------------------------------------

    #[test]
    fn the_refusal_that_starts_a_block_is_not_an_attempt_while_blocked() {
        let respects = expect(ExpectKind::RespectsBlocks);
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
        let lenient = Expect {
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
        let outcome = check(&expect(ExpectKind::RespectsBlocks), &log);
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
        let outcome = check(&expect(ExpectKind::RespectsBlocks), &log);
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
        let outcome = check(&expect(ExpectKind::RespectsBlocks), &log);
        fails_with(
            &outcome,
            "2 attempts from 10.0.0.1 while ip:10.0.0.1 was blocked until 2025-06-02T01:20:00Z",
        );
    }

    // ---- retries -----------------------------------------------------------------------

    fn retries(after: RetryAfter, min: Option<u64>, max: Option<u64>) -> Expect {
        Expect {
            after: Some(after),
            min_delay: min.map(Duration::from_secs),
            max_delay: max.map(Duration::from_secs),
            ..expect(ExpectKind::Retries)
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
        let rule = expect(ExpectKind::NoResendToUnknown);
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
        let lenient = Expect {
            max: Some(2),
            ..rule
        };
        passes(&check(&lenient, &log));
    }

    // ---- within_warmup -----------------------------------------------------------------

    #[test]
    fn refusals_by_the_warm_up_allowance_are_counted_per_attempt() {
        let rule = expect(ExpectKind::WithinWarmup);
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
            "1 attempt refused by the warm-up allowance, at most 0 allowed; the first at \
             2025-06-02T01:00:19Z: refused by reputation.warmup (ip:127.0.0.1)",
        );
        let lenient = Expect {
            max: Some(1),
            ..rule
        };
        passes(&check(&lenient, &log));
    }

    // ---- failover ----------------------------------------------------------------------

    #[test]
    fn failover_needs_an_outage_and_mail_elsewhere_during_each() {
        let rule = Expect {
            mx: Some("mx1".into()),
            ..expect(ExpectKind::Failover)
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
        let rule = expect(ExpectKind::Authenticated);
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

    // ---- the parts ---------------------------------------------------------------------

    #[test]
    fn spans_and_stamps_read_well() {
        assert_eq!(span(Duration::ZERO), "0s");
        assert_eq!(span(Duration::from_millis(250)), "250ms");
        assert_eq!(span(Duration::from_secs(12)), "12s");
        assert_eq!(span(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(span(Duration::from_secs(2 * 86_400 + 3600)), "2d1h");
        assert_eq!(
            stamp(t(0) + Duration::from_millis(1500)),
            "2025-06-02T01:00:01Z"
        );
        assert_eq!(plural(1u64, "block"), "1 block");
        assert_eq!(plural(0usize, "block"), "0 blocks");
    }

    #[test]
    fn the_end_of_a_run_is_the_later_of_its_end_and_its_last_event() {
        let mut log = Log::new();
        log.wait(MIN).connect(1);
        let run = Run::new(&log.events, &[], &[], 1);
        assert_eq!(run.end(), Some(t(MIN)));
        assert_eq!(run.ending_at(t(5 * MIN)).end(), Some(t(5 * MIN)));
        assert_eq!(run.ending_at(t(0)).end(), Some(t(MIN)));
        assert_eq!(Run::new(&[], &[], &[], 1).end(), None);
    }

    #[test]
    fn a_given_name_wins_and_outcomes_follow_the_order_of_the_expectations() {
        let named = Expect {
            name: Some("mail gets through".into()),
            ..expect(ExpectKind::Accepted)
        };
        let outcomes = evaluate(
            &[named, expect(ExpectKind::Authenticated)],
            &Run::new(&[], &[], &[], 1),
        );
        assert_eq!(outcomes[0].name, "mail gets through");
        assert!(!outcomes[0].passed);
        assert_eq!(outcomes[1].name, "every message passes DMARC");
        assert!(outcomes[1].passed);
    }

    #[test]
    fn bounds_are_checked_when_a_scenario_is_read() {
        let upside_down = Expect {
            min_delay: Some(Duration::from_secs(600)),
            max_delay: Some(Duration::from_secs(60)),
            ..retries(RetryAfter::Dropped, None, None)
        };
        assert_eq!(
            upside_down.check(),
            Err("min_delay 10m is above max_delay 1m".into())
        );
        assert!(retries(RetryAfter::Dropped, Some(60), None).check().is_ok());
    }
}
