//! What a stage announced it may ask about ([`Plan`]), and where the replies to the
//! reads made for it are ([`Layout`]): planned before the round trip, read after it.

use std::net::IpAddr;

use redis::Value;

use super::packed::Packed;

use crate::units::{QuotaName, Stage};

/// What a stage announced it may ask about.
#[derive(Debug)]
pub(super) struct Plan {
    /// The call of the policy it belongs to.
    pub(super) call: u64,
    pub(super) stage: Stage,
    pub(super) ip: IpAddr,
    /// The sender and its domain, lower-cased; `None` for the null sender or none yet.
    pub(super) from: Option<(String, String)>,
    pub(super) null_sender: bool,
    /// The recipients decided, lower-cased, each once.
    pub(super) rcpts: Vec<String>,
    pub(super) print: Option<u64>,
    pub(super) now: u64,
    /// The counters a check without a count may read: name, hash of the subject, key.
    pub(super) counters: Vec<(QuotaName, u64, String)>,
    /// The quota script the stage's rules will call if they come to it, sent ahead.
    pub(super) ahead: Option<Ahead>,
}

/// A quota script sent before its rule asked for it.
#[derive(Debug)]
pub(super) struct Ahead {
    /// The call's signature: the rule's call is answered with the reply when it matches.
    pub(super) signature: Vec<u64>,
    /// The call, encoded.
    pub(super) call: Packed,
    /// The counters it counts, given back when no rule claims the reply.
    pub(super) counted: Vec<String>,
    pub(super) now: u64,
    /// Whether it counts whatever the reply (a connection attempt), rather than only
    /// when every key fits (a reservation).
    pub(super) always: bool,
}

/// A quota script's reply, until a rule claims it.
#[derive(Debug)]
pub(super) struct Unclaimed {
    pub(super) ahead: Ahead,
    pub(super) reply: Value,
}

/// What a stage reads beside the IP's record, as the config places its rules.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reads {
    /// The IP's listings and complaints.
    pub listing: bool,
    /// The blocks of the IP's quotas.
    pub blocks: bool,
    /// Whether any whitelist exists.
    pub whitelists: bool,
    /// Whether a whitelist names the sender or its domain.
    pub named: bool,
    /// The sender's listings.
    pub sender: bool,
    /// The recipients' personal blacklists.
    pub personal: bool,
    /// The recipients' outbound records.
    pub bounce: bool,
}

/// Where the replies to a stage's reads are: which reads [`super::Redis::request`] made.
#[derive(Debug)]
pub(super) struct Layout {
    /// At connect: the id of the lease taken on the connection.
    pub lease_id: Option<String>,
    pub reads: Reads,
    /// The body's fingerprint, when its recipients were read.
    pub bulk: Option<u64>,
    /// The quota script sent ahead.
    pub ahead: Option<Ahead>,
    /// The body's fingerprint, when the message's recipients were added to it.
    pub add: Option<u64>,
}
