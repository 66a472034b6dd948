//! The shared store: every owner's state in one Redis server, so that several qqmx
//! replicas enforce one policy.
//!
//! A stage of a message is at most one round trip on its way to acceptance (see
//! [`view`]): the policy announces the stage, and one pipeline carries the writes held
//! back and every read the stage's rules may make. A session sends it before the stage
//! is decided, without the policy's lock, on the connection the sessions share (see
//! [`stage`] and [`link`]); a stage asked without it (the embedded policy's own calls)
//! sends it at its first question, under the lock. A quota check
//! that counts is a Lua script (its check and count are one atomic step, whatever other
//! replicas do at the same moment) sent with those writes, and a check that does not
//! count is answered from the counters read, unless a key is over a limit or blocked:
//! then the script decides, and blocks the key. The end of data adds the body's
//! recipients in its round trip too, and takes them out again if the message is
//! refused. Writes that need no answer (sightings of an IP, a domain's random listing, a
//! lease given back, counts or recipients given back) are held back and sent ahead of
//! the next call, or after [`FLUSH_EVERY`] by a thread of their own when no call comes;
//! a write whose call fails is sent again with the next (except a give-back of counts,
//! which Redis may have run before the call failed: it is dropped, leaving the counts
//! high rather than low). Times are the ones the policy passes in (the server's clock),
//! except the leases on open connections, which Redis times itself. Every key has a TTL
//! and starts with `{prefix}:` (the braces make it a Redis
//! Cluster hash tag: a script's keys share a slot).
//!
//! The config's own lists (static blacklists, personal blacklists) are the same on every
//! replica and are read locally; what the API changes lives in Redis. The seeded random
//! listings are drawn locally (a draw is a pure function of the seed and the subject)
//! and remembered in Redis with their end.
//!
//! When a call fails (Redis down, slow past `state.timeout`, restarted) the store
//! answers as if nothing were known, marks the [`Health`] failed so that the policy
//! answers the stage `451`, drops the connection and reconnects at the next call; the
//! other calls of the same stage do not wait on Redis again. The writes held back stay
//! held (at most [`PENDING_MAX`]) and go with the first call that succeeds. A Redis
//! Cluster's redirection is followed (see [`endpoint`]).

mod clock;
mod endpoint;
mod ips;
mod link;
mod packed;
use ips::SEEN_KEPT;
mod lists;
mod plan;
mod quotas;
mod scripts;
mod stage;
mod view;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::{Client, Cmd, Connection, ConnectionLike, RedisError, RedisResult, Script, Value};
use tracing::{debug, info, warn};

use super::lists::{Lists, Recipients};
use super::{Ahead, Health, Store};
use crate::config::{Config, ConfigError, Stages};
use endpoint::{Endpoint, redirected};
use packed::Packed;
use scripts::Scripts;

pub(crate) use clock::SharedClock;
pub(crate) use stage::{Fetch, Fetched};

/// Leases made by this process, for unique lease ids across the stores it runs.
static LEASES: AtomicU64 = AtomicU64::new(0);

/// How long held-back writes wait for a call to carry them before they are sent alone.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Writes held back at most (while Redis cannot be reached); more are dropped, logged.
pub(crate) const PENDING_MAX: usize = 10_000;

/// Writes that need no answer, waiting for the next call; shared with the thread that
/// sends them when no call comes.
#[derive(Debug, Default)]
struct Pending {
    /// The writes, each with whether it may be sent again after a call that failed
    /// (whether Redis ran it or not): a give-back may not, as it would give back twice.
    cmds: Vec<(Cmd, bool)>,
    /// Whether writes were dropped since the queue was last sent.
    dropped: bool,
}

type Held = Arc<Mutex<Pending>>;

fn lock(held: &Held) -> MutexGuard<'_, Pending> {
    held.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection with a timeout and the scripts loaded, so that a pipeline may call them
/// by their hash.
fn open(client: &Client, timeout: Duration) -> RedisResult<Connection> {
    let mut conn = client.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    let mut pipe = redis::pipe();
    for code in Scripts::CODES {
        pipe.cmd("SCRIPT").arg("LOAD").arg(code).ignore();
    }
    pipe.query::<()>(&mut conn)?;
    Ok(conn)
}

/// Whether an error is Redis refusing a command (which sending it again would not
/// change), not a connection that failed.
fn refused(e: &RedisError) -> bool {
    !redirected(e)
        && matches!(e.kind(), redis::ErrorKind::Server(kind) if kind != redis::ServerErrorKind::NoScript)
}

/// Holds again, ahead of the writes held since, those of `writes` that may be sent
/// again.
fn hold_again(held: &Held, writes: Vec<(Cmd, bool)>) {
    let mut pending = lock(held);
    let later = std::mem::replace(&mut pending.cmds, writes);
    pending.cmds.retain(|(_, again)| *again);
    pending.cmds.extend(later);
}

/// The replies of a pipeline, or the first error among them.
fn answered(replies: Vec<Value>) -> RedisResult<Vec<Value>> {
    match replies.iter().find_map(|v| match v {
        Value::ServerError(e) => Some(e.clone()),
        _ => None,
    }) {
        Some(e) => Err(e.into()),
        None => Ok(replies),
    }
}

/// Sends the writes held back when no call has carried them for [`FLUSH_EVERY`]; stops
/// when `stop` is set.
fn flusher(
    endpoint: Arc<Endpoint>,
    timeout: Duration,
    held: Held,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
) {
    let mut conn: Option<Connection> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(FLUSH_EVERY);
        let mut pending = lock(&held);
        if pending.cmds.is_empty() {
            continue;
        }
        let mut packed = Packed::default();
        for (cmd, _) in &pending.cmds {
            packed.cmd(cmd);
        }
        health.call_at(super::BACKGROUND);
        let send = |c: &mut Connection| {
            c.req_packed_commands(packed.bytes(), 0, packed.count())
                .and_then(answered)
        };
        let sent = match conn.as_mut() {
            Some(c) => send(c),
            None => endpoint
                .client()
                .and_then(|client| open(&client, timeout))
                .and_then(|c| send(conn.insert(c))),
        };
        match sent {
            Ok(_) => pending.cmds.clear(),
            Err(e) => {
                conn = None;
                debug!(error = %e, "held-back policy state writes not sent");
                endpoint.follow(&e);
                if refused(&e) {
                    pending.cmds.clear();
                    warn!(error = %e, "policy state writes refused by Redis, dropped");
                }
                pending.cmds.retain(|(_, again)| *again);
            }
        }
    }
}

/// Stops the thread of [`flusher`] when the store goes.
#[derive(Debug)]
struct Flusher(Arc<AtomicBool>);

impl Drop for Flusher {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Every owner's state, in Redis.
pub(crate) struct Redis {
    endpoint: Arc<Endpoint>,
    /// The connection, made at the first call and after a failure.
    conn: RefCell<Option<Connection>>,
    timeout: Duration,
    health: Arc<Health>,
    /// Whether the last call failed, to log the fall and the return once.
    down: Cell<bool>,
    /// `{prefix}:`.
    prefix: String,
    scripts: Scripts,
    seed: u64,
    /// The config's static listings (its API listings are in Redis).
    lists: Lists,
    /// The config's personal blacklists.
    recipients: Recipients,
    /// Chance and duration (seconds) of a new IP's random listing.
    random_ip: (f64, u64),
    /// How long a complaint counts, in seconds.
    complaint_window: u64,
    /// How many complaints about an IP can matter.
    complaints_kept: usize,
    /// Seconds an idle IP record and an idle counter stay.
    idle_ips: u64,
    idle_counters: u64,
    /// The bulk window, in seconds.
    bulk_window: u64,
    /// A lease on an open connection, in milliseconds.
    lease_ms: u64,
    /// Seconds API lists stay after their last change.
    retention: u64,
    /// `replica:pid:` for lease ids.
    lease_base: String,
    /// The leases this store holds on open connections, per IP.
    leases: HashMap<IpAddr, Vec<String>>,
    /// When this store last told Redis it saw each IP: every stage sees the client, and
    /// one sight a minute keeps its record (Redis keeps its first sight and draw).
    /// Forgotten when Redis fails: a Redis that comes back empty must hear of them.
    seen: RefCell<HashMap<IpAddr, u64>>,
    /// When each IP was first seen, as last read: what a stage announces it will check
    /// before it reads (the warm-up allowance); the stage's read then confirms it.
    firsts: RefCell<HashMap<IpAddr, u64>>,
    /// Where refusals are answered, and whether backscatter is: what a stage may read.
    stages: Stages,
    /// Where IP and sender listings are answered.
    list_stages: (crate::units::Stage, crate::units::Stage),
    backscatter: bool,
    /// What the stage in progress may ask about, until its first question.
    plan: RefCell<Option<plan::Plan>>,
    /// What the stage in progress read.
    view: RefCell<Option<view::View>>,
    /// Writes held back for the next call.
    held: Held,
    /// The connection of the stages' round trips sent without the policy's lock.
    shared: Arc<stage::Shared>,
    _flusher: Option<Flusher>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("down", &self.down.get())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A store on the Redis `config.state.url` names; connects at the first call.
    pub(crate) fn new(config: &Config, health: Arc<Health>) -> Result<Self, ConfigError> {
        let state = &config.state;
        let client = Client::open(state.url.as_str()).map_err(|e| ConfigError::Invalid {
            path: "<config>".into(),
            line: 0,
            column: 0,
            key: "state.url".into(),
            message: e.to_string(),
        })?;
        let ips = super::ips::Ips::new(config.seed, &config.blacklist, &config.reputation);
        let endpoint = Arc::new(Endpoint::new(&client));
        let held = Held::default();
        let stop = Arc::new(AtomicBool::new(false));
        let flusher = {
            let (endpoint, timeout, held, health, halt) = (
                endpoint.clone(),
                state.timeout,
                held.clone(),
                health.clone(),
                stop.clone(),
            );
            std::thread::Builder::new()
                .name("qqmx-state-writes".to_owned())
                .spawn(move || flusher(endpoint, timeout, held, health, halt))
                .ok()
                .map(|_| Flusher(stop))
        };
        let shared = Arc::new(stage::Shared::new(endpoint.clone(), state.timeout));
        Ok(Self {
            endpoint,
            conn: RefCell::new(None),
            timeout: state.timeout,
            health,
            down: Cell::new(false),
            prefix: format!("{{{}}}:", state.prefix),
            scripts: Scripts::new(),
            seed: config.seed,
            lists: Lists::new(config.seed, &config.blacklist),
            recipients: Recipients::new(&config.content),
            random_ip: ips.random_ip,
            complaint_window: ips.complaint_window,
            complaints_kept: ips.complaints_kept,
            idle_ips: config.memory.idle_ips.as_secs().max(1),
            idle_counters: config.memory.idle_counters.as_secs().max(1),
            bulk_window: config.content.bulk_window.as_secs().max(1),
            // A lease outlives the longest session, which renews none.
            lease_ms: u64::try_from(
                state
                    .lease
                    .max(config.limits.session_timeout + Duration::from_secs(60))
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
            retention: state.retention.as_secs().max(1),
            lease_base: format!("{}:{}:", state.replica_name(), std::process::id()),
            leases: HashMap::new(),
            seen: RefCell::new(HashMap::new()),
            firsts: RefCell::new(HashMap::new()),
            stages: config.stages.clone(),
            list_stages: (config.blacklist.ip_stage, config.blacklist.sender_stage),
            backscatter: config.content.backscatter,
            plan: RefCell::new(None),
            view: RefCell::new(None),
            held,
            shared,
            _flusher: flusher,
        })
    }

    /// The key `parts` under the prefix.
    fn key(&self, parts: fmt::Arguments<'_>) -> String {
        let mut key = self.key_with(parts.as_str().unwrap_or_default());
        if parts.as_str().is_none() {
            // Writing to a string cannot fail.
            let _ = fmt::Write::write_fmt(&mut key, parts);
        }
        key
    }

    /// The key that starts with `{prefix}:` and `kind`, with room for more.
    fn key_with(&self, kind: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + 48);
        key.push_str(&self.prefix);
        key.push_str(kind);
        key
    }

    /// A glob matching the keys that start with `{prefix}:` and `kind`.
    fn pattern(&self, kind: &str) -> String {
        let mut glob = String::new();
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                glob.push('\\');
            }
            glob.push(c);
        }
        format!("{glob}{kind}*")
    }

    fn connect(&self) -> RedisResult<Connection> {
        open(&self.endpoint.client()?, self.timeout)
    }

    /// Holds `cmd` back for the next call.
    pub(super) fn hold(&self, cmd: Cmd) {
        self.hold_with(cmd, true);
    }

    /// Holds `cmd` back for the next call, not to be sent again if that call fails.
    pub(super) fn hold_once(&self, cmd: Cmd) {
        self.hold_with(cmd, false);
    }

    fn hold_with(&self, cmd: Cmd, again: bool) {
        let mut pending = lock(&self.held);
        if pending.cmds.len() >= PENDING_MAX {
            if !pending.dropped {
                warn!(prefix = %self.prefix, "too many policy state writes held back while Redis cannot be reached; dropping");
            }
            pending.dropped = true;
            return;
        }
        pending.cmds.push((cmd, again));
    }

    /// A call to `script` with `keys`; its arguments follow.
    pub(super) fn evalsha(&self, script: &Script, keys: &[String]) -> Cmd {
        // Room for the keys and as many arguments again, so that the call is not grown
        // as it is built. (The quota script's calls are made by `quota_call`.)
        let args = 3 + keys.len() * 2;
        let mut cmd = Cmd::with_capacity(args, 32 * args);
        cmd.arg("EVALSHA");
        cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
        cmd
    }

    /// Sends the writes held back and the commands `fill` adds in one pipeline; the
    /// replies to those commands, or `None` when the call failed (the writes then stay
    /// held).
    fn exchange(&self, what: &str, fill: impl FnOnce(&mut Packed)) -> Option<Vec<Value>> {
        if self.health.failed() {
            return None;
        }
        let (mut packed, held) = self.with_held();
        fill(&mut packed);
        self.health.call();
        let replies = self.attempt(|conn| {
            conn.req_packed_commands(packed.bytes(), 0, packed.count())
                .and_then(answered)
        });
        self.settle(what, held, replies)
    }

    /// A pipeline that starts with the writes held back, taken out; with those writes,
    /// each with whether it may be sent again.
    fn with_held(&self) -> (Packed, Vec<(Cmd, bool)>) {
        let held = std::mem::take(&mut lock(&self.held).cmds);
        let mut packed = Packed::default();
        for (cmd, _) in &held {
            packed.cmd(cmd);
        }
        (packed, held)
    }

    /// What a pipeline that started with the writes `held` brought: the replies after
    /// those writes', or `None` when the call failed. The writes of a call that failed
    /// are held again, unless Redis refused them (it would again): they are dropped,
    /// logged.
    pub(super) fn settle(
        &self,
        what: &str,
        held: Vec<(Cmd, bool)>,
        replies: RedisResult<Vec<Value>>,
    ) -> Option<Vec<Value>> {
        match replies {
            Ok(mut replies) => {
                self.reached();
                lock(&self.held).dropped = false;
                replies.drain(..held.len().min(replies.len()));
                Some(replies)
            }
            Err(e) => {
                self.fell(what, &e);
                if refused(&e) {
                    warn!(prefix = %self.prefix, "policy state writes refused by Redis, dropped");
                } else {
                    hold_again(&self.held, held);
                }
                None
            }
        }
    }

    /// A reply could not be read: the call failed.
    pub(super) fn failed(&self, what: &str, e: &RedisError) {
        *self.conn.borrow_mut() = None;
        self.seen.borrow_mut().clear();
        self.health.fail();
        warn!(prefix = %self.prefix, call = what, error = %e, "unexpected reply from the policy state");
    }

    /// Runs `f` on the connection. On a failure, or when this stage already met one,
    /// returns the default (nothing known) and leaves the health failed.
    fn call<T: Default>(&self, what: &str, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> T {
        if self.health.failed() {
            return T::default();
        }
        self.health.call();
        match self.attempt(f) {
            Ok(value) => {
                self.reached();
                value
            }
            Err(e) => {
                self.fell(what, &e);
                T::default()
            }
        }
    }

    /// Runs `f` on the connection, made now if there is none; a connection that failed
    /// is dropped.
    fn attempt<T>(&self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> RedisResult<T> {
        let mut slot = self.conn.borrow_mut();
        let result = match slot.as_mut() {
            Some(conn) => f(conn),
            None => self.connect().and_then(|conn| f(slot.insert(conn))),
        };
        if result.is_err() {
            *slot = None;
        }
        result
    }

    /// A call succeeded: Redis is back if it was down.
    fn reached(&self) {
        if self.down.replace(false) {
            info!(prefix = %self.prefix, "policy state reachable again");
        }
    }

    /// A call failed: the stage is answered as if nothing were known, and the IPs seen
    /// are told again once Redis is back.
    fn fell(&self, what: &str, e: &RedisError) {
        self.seen.borrow_mut().clear();
        self.health.fail();
        if let Some(node) = self.endpoint.follow(e) {
            *self.conn.borrow_mut() = None;
            info!(prefix = %self.prefix, call = what, %node, "the Redis Cluster moved the policy state's slot: following it");
            return;
        }
        if !self.down.replace(true) {
            warn!(prefix = %self.prefix, call = what, error = %e, "policy state unreachable");
        } else {
            debug!(call = what, error = %e, "policy state still unreachable");
        }
    }

    /// Every key matching `pattern`.
    fn scan(conn: &mut Connection, pattern: &str) -> RedisResult<Vec<String>> {
        let mut cursor = 0u64;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query(conn)?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Deletes every key starting with `{prefix}:` and `kind`.
    fn delete_all(&self, what: &str, kind: &str) {
        let pattern = self.pattern(kind);
        self.call(what, |conn| {
            for chunk in Self::scan(conn, &pattern)?.chunks(500) {
                redis::cmd("DEL").arg(chunk).query::<()>(conn)?;
            }
            Ok(())
        });
    }

    /// A new lease id.
    fn lease_id(&self) -> String {
        format!(
            "{}{}",
            self.lease_base,
            LEASES.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl Store for Redis {
    /// Redis expires idle keys itself.
    fn sweep(&mut self, _now: u64) {}

    fn ahead(&self, ahead: &Ahead<'_>) {
        self.health.enter(ahead.stage as usize);
        self.plan(ahead);
    }

    fn prepare(&self, ahead: &Ahead<'_>) -> Option<super::Fetch> {
        self.prepare_stage(ahead).map(super::Fetch)
    }

    fn install(&self, fetched: super::Fetched) {
        self.install_stage(fetched.0);
    }

    fn clear_all(&mut self) {
        self.forget_view();
        lock(&self.held).cmds.clear();
        self.seen.borrow_mut().clear();
        self.firsts.borrow_mut().clear();
        self.leases.clear();
        let (pattern, clock) = (self.pattern(""), self.key(format_args!("clock")));
        self.call("clear_all", |conn| {
            let keys: Vec<String> = Self::scan(conn, &pattern)?
                .into_iter()
                .filter(|k| *k != clock)
                .collect();
            for chunk in keys.chunks(500) {
                redis::cmd("DEL").arg(chunk).query::<()>(conn)?;
            }
            Ok(())
        });
    }

    /// Keys live in Redis, bounded by their TTLs rather than a count.
    fn tracked_keys(&self) -> usize {
        0
    }

    fn evictions(&self) -> u64 {
        0
    }

    #[cfg(test)]
    fn memory(&self) -> &super::Memory {
        unreachable!("the policy tests that look inside use the in-memory store")
    }
}
