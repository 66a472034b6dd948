//! The transcript: the event log read once, into every `RCPT` with its reply, every
//! refusal with the attempt it refused, and the recipients that failed.
//!
//! It reads the typed fields of the events (a command's verb and address, a reply's code
//! and kind, a close's reason); nothing here parses a logged line.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::event::{CloseReason, Command, Event, EventKind, Verb};
use crate::policy::Decision;
use crate::reply::{Reply, ReplyKind};
use crate::units::Stage;

/// A reply, as the transcript keeps it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answer {
    pub(super) event: usize,
    pub(super) at: SystemTime,
    pub(super) code: u16,
    pub(super) kind: ReplyKind,
}

/// One `RCPT` in the log.
#[derive(Debug)]
pub(super) struct Rcpt {
    /// Index of its event.
    pub(super) event: usize,
    pub(super) at: SystemTime,
    pub(super) address: String,
    /// The reply to it, if it got one.
    pub(super) answer: Option<Answer>,
}

/// A recipient that failed: its `RCPT`, when and why.
#[derive(Debug)]
pub(super) struct Failure {
    /// Index of the event that failed it (the reply, or the close).
    pub(super) event: usize,
    pub(super) at: SystemTime,
    /// Index in [`Transcript::rcpts`].
    pub(super) rcpt: usize,
    /// `a 451`, `a dropped connection (fault: close)`.
    pub(super) cause: String,
}

/// A refused policy decision.
#[derive(Debug)]
pub(super) struct Refusal<'a> {
    /// Index of its event.
    pub(super) index: usize,
    pub(super) event: &'a Event,
    pub(super) decision: &'a Decision,
    /// Index of the event that began the attempt it refuses: the session's `MAIL`, or its
    /// connection for a refusal at connect or `HELO` (or before any `MAIL`).
    pub(super) attempt: usize,
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
pub(super) struct Transcript<'a> {
    pub(super) rcpts: Vec<Rcpt>,
    /// Per address, its `RCPT`s (indices in `rcpts`), in order.
    by_address: HashMap<String, Vec<usize>>,
    pub(super) refusals: Vec<Refusal<'a>>,
    /// Recipients failed by a 4xx.
    pub(super) temporary: Vec<Failure>,
    /// 4xx replies that failed no named recipient (at connect, `MAIL`, ...).
    pub(super) unnamed_temporary: usize,
    /// Recipients whose transaction was dropped.
    pub(super) dropped: Vec<Failure>,
    /// Drops that cut no named recipient's transaction.
    pub(super) unnamed_dropped: usize,
}

impl<'a> Transcript<'a> {
    pub(super) fn read(events: &'a [Event]) -> Self {
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
    pub(super) fn next_rcpt(&self, address: &str, after: usize) -> Option<&Rcpt> {
        let list = self.by_address.get(address)?;
        let n = list.partition_point(|&k| self.rcpts[k].event <= after);
        list.get(n).map(|&k| &self.rcpts[k])
    }
}
