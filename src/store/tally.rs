//! What the store counts: what it holds, what it has counted since start and since the
//! last reset, and counts over the events held.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::reply::ReplyKind;
use crate::units::Stage;

/// What the store holds now. A reset of the store empties it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Held {
    /// Messages.
    pub messages: usize,
    /// The messages' stored sources, in bytes.
    pub message_bytes: usize,
    /// Events.
    pub events: usize,
    /// The event log's memory, in bytes: each event's compact record and its place in
    /// the log's index (not the table of repeated texts, which has a fixed bound).
    pub event_bytes: usize,
}

/// Counted since the server started; a reset keeps them, as a metric's counters must.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SinceStart {
    /// Sessions begun.
    pub sessions: u64,
    /// Messages answered `250` at the end of data.
    pub messages_accepted: u64,
    /// Messages dropped, oldest first, to stay under the store's caps.
    pub messages_evicted: u64,
    /// Events dropped, oldest first, to stay under the store's caps.
    pub events_evicted: u64,
    /// Replies sent, by kind (kinds never sent are left out).
    pub replies: BTreeMap<ReplyKind, u64>,
}

/// Counted since the server started or the store was last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SinceReset {
    /// Messages answered `250` at the end of data (what `wait_for_messages` counts).
    pub messages_accepted: u64,
    /// Messages dropped to stay under the store's caps: when not 0, the messages held
    /// are not all there were.
    pub messages_evicted: u64,
    /// Events dropped to stay under the store's caps: when not 0, the event log held is
    /// not the whole story.
    pub events_evicted: u64,
}

/// The store's running counters.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counters {
    pub(super) message_bytes: usize,
    pub(super) event_bytes: usize,
    pub(super) accepted_since_start: u64,
    pub(super) accepted_since_reset: u64,
    pub(super) messages_evicted: u64,
    pub(super) events_evicted: u64,
    pub(super) messages_evicted_since_reset: u64,
    pub(super) events_evicted_since_reset: u64,
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

/// Counts over the events held: they shrink as old events are evicted, and a reset of
/// the store clears them. Kept up to date as events are recorded and evicted, so that
/// reading them costs nothing like a pass over the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InLog {
    /// Replies, by kind.
    pub replies: BTreeMap<ReplyKind, usize>,
    /// Policy decisions (one per command judged, not per message), by stage.
    pub decisions_by_stage: BTreeMap<Stage, Count>,
    /// Policy decisions, by client IP.
    pub decisions_by_ip: BTreeMap<IpAddr, Count>,
    /// Policy decisions from `MAIL` on, by envelope sender (`<>` for the null sender).
    pub decisions_by_sender: BTreeMap<String, Count>,
}

/// The tally's hasher, for the several lookups every message makes: eight bytes at a
/// time, one rotate, xor and multiply each (the multiplicative hash of the policy's
/// keys). Not keyed, like the policy's: a client that crafts colliding senders slows only
/// the counts of its own test server.
#[derive(Default)]
pub(super) struct Fast(u64);

impl Hasher for Fast {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(super) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fast>>;

/// What the counts take from an event, as it is recorded or evicted.
pub(super) enum Counted<'a> {
    /// A `MAIL` command, with the path as the policy judged it.
    Sender(&'a str),
    /// The end of a session.
    Closed,
    /// A reply.
    Reply { kind: ReplyKind, code: u16 },
    /// A policy decision.
    Decision { stage: Stage, accepted: bool },
    /// Anything else.
    Other,
}

/// The live form of [`InLog`].
#[derive(Default)]
pub(super) struct Tally {
    replies: Vec<usize>,
    by_stage: BTreeMap<Stage, Count>,
    by_ip: FastMap<IpAddr, Count>,
    by_sender: FastMap<Arc<str>, Count>,
    /// The sender of each open session's transaction, from its MAIL command.
    senders: FastMap<u64, Arc<str>>,
    /// The sender each held decision was counted under, with the decision's event
    /// sequence number, oldest first (events are evicted oldest first).
    counted: VecDeque<(u64, Arc<str>)>,
}

impl Tally {
    pub(super) fn new() -> Self {
        Self {
            replies: vec![0; ReplyKind::ALL.len()],
            ..Self::default()
        }
    }

    /// Counts event `seq` of `session`, from `client`.
    pub(super) fn add(&mut self, seq: u64, session: u64, client: IpAddr, counted: &Counted<'_>) {
        match *counted {
            Counted::Sender(address) => {
                // A session sends from one address, message after message: the key it
                // already has is kept, without a new string.
                let same = |held: &Arc<str>| match address {
                    "" => &**held == "<>",
                    address => {
                        held.len() == address.len()
                            && held
                                .bytes()
                                .zip(address.bytes())
                                .all(|(h, a)| h == a.to_ascii_lowercase())
                    }
                };
                if self.senders.get(&session).is_some_and(same) {
                    return;
                }
                let sender = if address.is_empty() {
                    Arc::from("<>")
                } else {
                    Arc::from(address.to_ascii_lowercase())
                };
                self.senders.insert(session, sender);
            }
            Counted::Closed => {
                self.senders.remove(&session);
            }
            Counted::Reply { kind, .. } => self.replies[kind as usize] += 1,
            Counted::Decision { stage, accepted } => {
                self.by_stage.entry(stage).or_default().add(accepted);
                self.by_ip.entry(client).or_default().add(accepted);
                if stage >= Stage::Mail
                    && let Some(sender) = self.senders.get(&session)
                {
                    self.by_sender
                        .entry(sender.clone())
                        .or_default()
                        .add(accepted);
                    self.counted.push_back((seq, sender.clone()));
                }
            }
            Counted::Other => {}
        }
    }

    /// Takes event `seq`, from `client`, out of the counts.
    pub(super) fn evict(&mut self, seq: u64, client: IpAddr, counted: &Counted<'_>) {
        match *counted {
            Counted::Reply { kind, .. } => {
                let n = &mut self.replies[kind as usize];
                *n = n.saturating_sub(1);
            }
            Counted::Decision { stage, accepted } => {
                if let Some(count) = self.by_stage.get_mut(&stage)
                    && count.remove(accepted)
                {
                    self.by_stage.remove(&stage);
                }
                if let Some(count) = self.by_ip.get_mut(&client)
                    && count.remove(accepted)
                {
                    self.by_ip.remove(&client);
                }
                let sender = match self.counted.front() {
                    Some((held, _)) if *held == seq => self.counted.pop_front(),
                    _ => None,
                };
                if let Some((_, sender)) = sender
                    && let Some(count) = self.by_sender.get_mut(&sender)
                    && count.remove(accepted)
                {
                    self.by_sender.remove(&sender);
                }
            }
            Counted::Sender(_) | Counted::Closed | Counted::Other => {}
        }
    }

    pub(super) fn snapshot(&self) -> InLog {
        InLog {
            replies: ReplyKind::ALL
                .iter()
                .map(|&kind| (kind, self.replies[kind as usize]))
                .filter(|&(_, n)| n > 0)
                .collect(),
            decisions_by_stage: self.by_stage.clone(),
            decisions_by_ip: self.by_ip.iter().map(|(ip, n)| (*ip, *n)).collect(),
            decisions_by_sender: self
                .by_sender
                .iter()
                .map(|(sender, n)| (sender.to_string(), *n))
                .collect(),
        }
    }
}
