//! What the policy remembers, in owners with one job each, behind small interfaces.
//!
//! The rules ([`Policy`](super::Policy)) decide; the owners remember:
//!
//! - [`Blacklists`]: static listings of IPs, senders and domains (from the config or the
//!   API, with optional expiry) and the seeded random listings of new IPs and domains;
//! - [`RecipientLists`]: what recipients asked for: whitelists, personal blacklists, and
//!   the outbound records that tell a bounce from backscatter;
//! - [`QuotaCounters`]: events per key in calendar windows, and blocks;
//! - [`IpRecords`]: what is known about a client IP: when it was first seen (its warm-up
//!   day), the complaints against it (its reputation), its open connections;
//! - [`BulkPrints`]: the recipients each message body went to (bulk detection).
//!
//! Each operation is one call that a shared store could answer in one round trip: a quota
//! check names every key with its tiers and the time, and the store checks (and, for
//! connections, counts) them at once, rather than the rules reading a count and writing
//! it back. Times are Unix seconds.
//!
//! [`Memory`] is the in-memory store, with every owner's state side by side because
//! `[memory] max_tracked_keys` caps them together: making room for a key of one owner
//! may forget the least recently used key of another.
//!
//! With the `redis` feature, `redis::Redis` keeps every owner's state in a Redis server
//! shared by replicas (`[state] backend = "redis"`): the policy announces each stage
//! ([`Store::ahead`]) so that the store reads what the stage may ask, with its writes,
//! in one round trip, or plans that round trip for a session to send without the
//! policy's lock ([`Store::prepare`], [`Fetch`], [`Store::install`]); a call that fails
//! leaves the [`Health`] failed, which the policy answers `451`.

mod bulk;
mod ips;
mod lists;
mod memory;
mod quotas;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::BlockInfo;
use super::quota::{Breach, Subject};
use crate::config::Quota;
use crate::units::{IpNet, QuotaName, Stage, Window};

pub(crate) use memory::Memory;
#[cfg(feature = "redis")]
pub(crate) use redis::SharedClock;

/// How a shared store is doing: whether the call of the policy in progress (a stage, an
/// API change) met an error, and how many errors there were. The in-memory store has
/// none; the policy answers a stage whose store failed `451`.
#[derive(Debug, Default)]
pub(crate) struct Health {
    failed: AtomicBool,
    errors: AtomicU64,
    /// Round trips to the store.
    calls: AtomicU64,
    /// Calls of the policy begun: what a store reads may be kept for the rest of one.
    stage: AtomicU64,
    /// What the call in progress is: an index of [`PHASES`].
    phase: AtomicU64,
    /// Round trips per phase.
    by_phase: [AtomicU64; PHASES.len()],
}

/// What a round trip to the store is made for: an SMTP stage, a connection's close, the
/// API, or writes sent on their own after a while (see `redis`).
pub(crate) const PHASES: [&str; 9] = [
    "connect",
    "helo",
    "mail",
    "rcpt",
    "data",
    "end_of_data",
    "close",
    "api",
    "background",
];
/// The phase of a call of the policy that is no SMTP stage.
const API: usize = 7;
/// The phase of a connection's close.
#[cfg(feature = "redis")]
const CLOSE: usize = 6;
/// The phase of writes sent on their own.
#[cfg(feature = "redis")]
const BACKGROUND: usize = 8;

impl Health {
    /// A call of the policy begins: nothing has failed yet.
    pub fn begin(&self) {
        self.failed.store(false, Ordering::Relaxed);
        self.stage.fetch_add(1, Ordering::Relaxed);
        self.phase.store(API as u64, Ordering::Relaxed);
    }

    /// The call in progress is `phase`, an index of [`PHASES`].
    #[cfg(feature = "redis")]
    pub fn enter(&self, phase: usize) {
        self.phase.store(phase as u64, Ordering::Relaxed);
    }

    /// The call of the policy in progress, as a number.
    #[cfg(feature = "redis")]
    pub fn stage(&self) -> u64 {
        self.stage.load(Ordering::Relaxed)
    }

    /// The store could not answer.
    #[cfg(feature = "redis")]
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the store failed since [`begin`](Self::begin).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Errors since the store was made.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// A round trip to the store, for the call in progress.
    #[cfg(feature = "redis")]
    pub fn call(&self) {
        let phase = usize::try_from(self.phase.load(Ordering::Relaxed)).unwrap_or(API);
        self.call_at(phase);
    }

    /// A round trip to the store, for `phase` (an index of [`PHASES`]).
    #[cfg(feature = "redis")]
    pub fn call_at(&self, phase: usize) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = self.by_phase.get(phase) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Round trips since the store was made, per phase.
    pub fn calls_by_phase(&self) -> Vec<(&'static str, u64)> {
        PHASES
            .iter()
            .zip(&self.by_phase)
            .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Round trips since the store was made.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// A store, with its health when it can fail.
pub(crate) type Opened = (Box<dyn Store>, Option<Arc<Health>>);

/// The store `config.state` asks for, with its health when it can fail.
pub(crate) fn open(config: &crate::config::Config) -> Result<Opened, crate::config::ConfigError> {
    match config.state.backend {
        #[cfg(feature = "redis")]
        crate::config::StateBackend::Redis => {
            let health = Arc::new(Health::default());
            let store = redis::Redis::new(config, health.clone())?;
            Ok((Box::new(store), Some(health)))
        }
        // Without the `redis` feature, `Config::check` refuses the Redis backend.
        _ => Ok((Box::new(Memory::new(config)), None)),
    }
}

/// Where a static listing came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The config file.
    Config,
    /// The control API.
    Api,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Config => "config",
            Self::Api => "api",
        })
    }
}

/// Why a client IP is blacklisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpListedBy {
    /// The IP is in this listed network.
    Net(IpNet, Source),
    /// The seeded draw listed the IP when it was first seen.
    Draw,
}

/// Why a sender is blacklisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SenderListedBy {
    /// The sender address is listed.
    Sender(Source),
    /// The sender's domain is listed.
    Domain(Source),
    /// The seeded draw listed the domain when it was first seen.
    Draw,
}

/// A blacklisting in force: why, and until when (Unix seconds) if it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listing<By> {
    pub by: By,
    pub until: Option<u64>,
}

/// The counter of one quota for one subject.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuotaKey<'a> {
    pub name: QuotaName,
    pub subject: Subject<'a>,
}

/// One key to check, with the tiers it is held to and an extra limit in one window (the
/// warm-up allowance).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Check<'a> {
    pub key: QuotaKey<'a>,
    pub quota: &'a Quota,
    pub extra: Option<(Window, u64)>,
}

/// A block in force on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockOf {
    /// When it ends.
    pub until: u64,
    /// Refusals since it began.
    pub refused: u64,
}

/// Static and random blacklists.
pub(crate) trait Blacklists {
    /// The listing of `ip` in force at `now`: a listed network first, then its draw.
    fn ip_listing(&self, ip: IpAddr, now: u64) -> Option<Listing<IpListedBy>>;
    /// The listing of a sender (lower-cased) in force at `now`: the address, then its
    /// `domain`, then the domain's draw, which a domain seen for the first time gets now.
    fn sender_listing(
        &mut self,
        sender: &str,
        domain: &str,
        now: u64,
    ) -> Option<Listing<SenderListedBy>>;
    /// Lists `net` until `until`, or for good.
    fn list_ip(&mut self, net: IpNet, until: Option<u64>);
    /// Lifts every listing of exactly `net`, and the draws of the IPs inside it.
    fn unlist_ip(&mut self, net: IpNet);
    /// Lists a sender address (with `@`) or domain, lower-cased.
    fn list_sender(&mut self, sender: &str, until: Option<u64>);
    /// Lifts the listings of a sender address or domain (lower-cased), its draw included.
    fn unlist_sender(&mut self, sender: &str);
}

/// What recipients asked for. Addresses and domains are lower-cased by the caller.
pub(crate) trait RecipientLists {
    /// Whether `rcpt` whitelisted `sender` or its `domain`.
    fn whitelists(&self, rcpt: &str, sender: &str, domain: &str) -> bool;
    /// Whether some recipient whitelisted `sender` or its domain; with `None`, whether
    /// any whitelist exists at all.
    fn whitelisted_anywhere(&self, sender: Option<(&str, &str)>) -> bool;
    /// Whether `rcpt`'s personal blacklist holds `sender` or its `domain`.
    fn blocked_by(&self, rcpt: &str, sender: &str, domain: &str) -> bool;
    /// Whether QQ user `rcpt` sent mail to `ip`.
    fn mailed(&self, rcpt: &str, ip: IpAddr) -> bool;
    /// `rcpt` whitelists a sender address or domain.
    fn whitelist(&mut self, rcpt: &str, sender: &str);
    /// Ends every whitelisting of `sender` and of `domain`.
    fn end_whitelistings(&mut self, sender: &str, domain: &str);
    /// `rcpt` adds a sender address or domain to their personal blacklist.
    fn block_sender(&mut self, rcpt: &str, sender: &str);
    /// QQ user `address` sent mail to `ip`.
    fn record_outbound(&mut self, address: &str, ip: IpAddr);
}

/// Quota counters and blocks.
pub(crate) trait QuotaCounters {
    /// Checks whether one more event of each key fits its tiers at `now`, in order, and
    /// stops at the first that does not: that key is blocked (or was already), and its
    /// index comes back with the breach. With `count`, every key checked is counted
    /// once, fitting or not (connection attempts count either way). A key that is only
    /// checked, fits and is not counted leaves nothing behind.
    fn check(&mut self, checks: &[Check<'_>], count: bool, now: u64) -> Option<(usize, Breach)>;
    /// Counts one event of each key at `now`.
    fn count(&mut self, keys: &[QuotaKey<'_>], now: u64);
    /// Checks `checks` as [`check`](Self::check) does without counting, for a message
    /// about to be accepted, and, when every check fits, counts one event of each of
    /// `keys` in the same atomic step, so that no other replica sharing the store takes
    /// the place in between. A message refused after all is given back with
    /// [`cancel`](Self::cancel). The in-memory store, which one lock guards, only checks:
    /// the policy counts an accepted message with [`count`](Self::count) instead.
    fn reserve(
        &mut self,
        checks: &[Check<'_>],
        _keys: &[QuotaKey<'_>],
        now: u64,
    ) -> Option<(usize, Breach)> {
        self.check(checks, false, now)
    }
    /// Gives back the events [`reserve`](Self::reserve) counted for `keys`.
    fn cancel(&mut self, _keys: &[QuotaKey<'_>], _now: u64) {}
    /// The block in force on `key` at `now`.
    fn block_of(&self, key: QuotaKey<'_>, now: u64) -> Option<BlockOf>;
    /// Every block in force at `now`.
    fn blocks(&self, now: u64) -> Vec<BlockInfo>;
    /// Forgets every counter and block.
    fn clear_counters(&mut self);
}

/// What is known about client IPs.
pub(crate) trait IpRecords {
    /// `ip` is seen at `now`; an IP seen for the first time draws its random listing.
    fn see(&mut self, ip: IpAddr, now: u64);
    /// When `ip` was first seen, if it is known.
    fn first_seen(&self, ip: IpAddr) -> Option<u64>;
    /// The times of the complaints against `ip` that count at `now`.
    fn complaints(&self, ip: IpAddr, now: u64) -> Vec<u64>;
    /// A complaint against `ip` at `now`.
    fn complain(&mut self, ip: IpAddr, now: u64);
    /// Forgets the complaints against the IPs in `net`.
    fn forgive(&mut self, net: IpNet);
    /// A connection from `ip` opened; returns how many are open.
    fn connected(&mut self, ip: IpAddr) -> u64;
    /// A connection from `ip` closed.
    fn disconnected(&mut self, ip: IpAddr);
}

/// The recipients each message body went to, per bulk window.
pub(crate) trait BulkPrints {
    /// How many distinct recipients the body `print` would have in the bulk window of
    /// `now` with `rcpts` added.
    fn recipients_with(&mut self, print: u64, rcpts: &[String], now: u64) -> usize;
    /// Adds `rcpts` to the recipients of the body `print` at `now`.
    fn add_recipients(&mut self, print: u64, rcpts: &[String], now: u64);
    /// Forgets every body.
    fn clear_prints(&mut self);
}

/// What the rules of a stage may ask the store about, announced as the stage begins.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(
    not(feature = "redis"),
    expect(
        dead_code,
        reason = "only the shared store reads what a stage announces"
    )
)]
pub(crate) struct Ahead<'a> {
    pub stage: Stage,
    pub ip: IpAddr,
    /// The envelope sender once MAIL was given (empty for the null sender).
    pub from: Option<&'a str>,
    /// At RCPT: the recipient being decided.
    pub rcpt: Option<&'a str>,
    /// The recipients accepted so far (at the end of data: the message's).
    pub rcpts: &'a [String],
    /// At the end of data: the body's fingerprint, when bulk detection is on.
    pub print: Option<u64>,
    /// The quota checks the stage makes in one atomic step with a count if its rules
    /// come to them: at connect, the connection attempt's (counted fitting or not); at
    /// the end of data, the message's, with `reserves` counted when they all fit (see
    /// [`QuotaCounters::reserve`]).
    pub counts: &'a [Check<'a>],
    pub reserves: Option<&'a [QuotaKey<'a>]>,
    /// The keys a quota check without a count reads (HELO to DATA).
    pub reads: &'a [QuotaKey<'a>],
    pub now: u64,
}

/// A stage's round trip to a shared store: planned under the policy's lock
/// ([`Store::prepare`]), sent without it, and brought back under it again
/// ([`Store::install`]), so that one session's wait on Redis holds up no other.
#[derive(Debug)]
pub(crate) struct Fetch(Sending);

/// What a stage's round trip brought: its replies, or the error that ended it.
#[derive(Debug)]
pub(crate) struct Fetched(Sent);

#[cfg(feature = "redis")]
type Sending = redis::Fetch;
#[cfg(feature = "redis")]
type Sent = redis::Fetched;
/// Nothing: only the shared store makes round trips.
#[cfg(not(feature = "redis"))]
#[derive(Debug)]
enum Sending {}
#[cfg(not(feature = "redis"))]
#[derive(Debug)]
enum Sent {}

impl Fetch {
    /// Sends the round trip and waits for its replies, at most the store's timeout.
    pub async fn send(self) -> Fetched {
        #[cfg(feature = "redis")]
        return Fetched(self.0.send().await);
        #[cfg(not(feature = "redis"))]
        match self.0 {}
    }
}

impl Fetched {
    /// The body's fingerprint the stage was planned with, when bulk detection is on.
    pub fn print(&self) -> Option<u64> {
        #[cfg(feature = "redis")]
        return self.0.print();
        #[cfg(not(feature = "redis"))]
        match self.0 {}
    }
}

/// Everything the policy remembers.
pub(crate) trait Store:
    Blacklists + RecipientLists + QuotaCounters + IpRecords + BulkPrints + fmt::Debug + Send
{
    /// Forgets idle state; runs at most every ten virtual minutes.
    fn sweep(&mut self, now: u64);
    /// A stage begins: a shared store reads at once what its rules may ask about, with
    /// the writes it holds back; nothing to do in memory.
    fn ahead(&self, _ahead: &Ahead<'_>) {}
    /// A stage begins as [`ahead`](Self::ahead) announces, but what it may read is read
    /// without the policy's lock: the round trip to send, when the stage's rules may ask
    /// anything; `None` in memory.
    fn prepare(&self, _ahead: &Ahead<'_>) -> Option<Fetch> {
        None
    }
    /// The stage [`prepare`](Self::prepare) planned begins, with what its round trip
    /// brought.
    fn install(&self, _fetched: Fetched) {}
    /// Forgets everything, as a store made afresh from the config: nothing to do for one
    /// that was just made in memory; a shared store forgets what every replica wrote
    /// (the clock's offset excepted).
    fn clear_all(&mut self) {}
    /// How many keys are remembered, as `memory.max_tracked_keys` counts them.
    fn tracked_keys(&self) -> usize;
    /// How many keys were forgotten to stay within bounds.
    fn evictions(&self) -> u64;
    /// The in-memory store, for tests that look inside.
    #[cfg(test)]
    fn memory(&self) -> &Memory;
}
