//! The answer of `/api/v1/stats`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::policy::BlockInfo;
use crate::reply::ReplyKind;
use crate::store::{Count, EventTally, StoreStats};
use crate::units::Stage;

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

impl Stats {
    /// The counts of `tally`; the other fields are given.
    pub(super) fn new(
        store: StoreStats,
        sessions_total: u64,
        active_connections: usize,
        replies_total: BTreeMap<ReplyKind, u64>,
        tally: EventTally,
        blocks: Vec<BlockInfo>,
    ) -> Self {
        Self {
            store,
            sessions_total,
            active_connections,
            replies_total,
            replies: tally.replies,
            by_stage: tally.by_stage,
            by_ip: tally.by_ip,
            by_sender: tally.by_sender,
            blocks,
        }
    }
}
