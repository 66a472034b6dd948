//! Counts for `/api/v1/stats`, worked out from the event log.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::Serialize;

use crate::policy::{BlockInfo, Stage};
use crate::reply::ReplyKind;
use crate::store::{Event, EventKind, StoreStats};

/// Decisions made, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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
}

/// The answer of `GET /api/v1/stats`. Everything but `replies_total`, `sessions_total`
/// and `store` is counted over the events still held.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// What the store holds and has evicted.
    pub store: StoreStats,
    /// Sessions begun since start.
    pub sessions_total: u64,
    /// Connections open now.
    pub active_connections: usize,
    /// Replies sent since start, by kind.
    pub replies_total: BTreeMap<ReplyKind, u64>,
    /// Replies in the event log, by kind.
    pub replies: BTreeMap<ReplyKind, usize>,
    /// Decisions by stage.
    pub by_stage: BTreeMap<Stage, Count>,
    /// Decisions by client IP.
    pub by_ip: BTreeMap<IpAddr, Count>,
    /// Decisions from `MAIL` on, by envelope sender (`<>` for the null sender).
    pub by_sender: BTreeMap<String, Count>,
    /// Quota blocks in force.
    pub blocks: Vec<BlockInfo>,
}

/// Tallies `events`; the other fields are filled by the caller.
pub(super) fn tally(events: &[Event], stats: &mut Stats) {
    // The sender of each session's open transaction, from its MAIL command.
    let mut senders: HashMap<u64, String> = HashMap::new();
    for event in events {
        match &event.kind {
            EventKind::Command { line } => {
                if let Some(sender) = mail_from(line) {
                    senders.insert(event.session, sender);
                }
            }
            EventKind::Reply(reply) => {
                *stats.replies.entry(reply.kind).or_insert(0) += 1;
            }
            EventKind::Decision(decision) => {
                let accepted = decision.is_accept();
                stats
                    .by_stage
                    .entry(decision.stage)
                    .or_default()
                    .add(accepted);
                stats.by_ip.entry(event.client).or_default().add(accepted);
                if decision.stage >= Stage::Mail
                    && let Some(sender) = senders.get(&event.session)
                {
                    stats
                        .by_sender
                        .entry(sender.clone())
                        .or_default()
                        .add(accepted);
                }
            }
            _ => {}
        }
    }
}

/// The address of a `MAIL FROM:<...>` line, `<>` for the null sender.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
