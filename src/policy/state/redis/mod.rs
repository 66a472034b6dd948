//! The shared store: every owner's state in one Redis server, so that several qqmx
//! replicas enforce one policy.
//!
//! Each call of an owner is one round trip: a Lua script where a decision reads and
//! writes (a quota's check and count are one atomic step, whatever other replicas do at
//! the same moment), a pipeline where it only reads. Times are the ones the policy passes
//! in (the server's clock), except the leases on open connections, which Redis times
//! itself. Every key has a TTL and starts with `{prefix}:` (the braces make it a Redis
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
//! other calls of the same stage do not wait on Redis again.

mod clock;
mod ips;
mod lists;
mod quotas;
mod scripts;
mod view;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::{Client, Connection, RedisResult};
use tracing::{info, warn};

use super::lists::{Lists, Recipients};
use super::{Health, Store};
use crate::config::{Config, ConfigError};
use scripts::Scripts;

pub(crate) use clock::SharedClock;

/// Leases made by this process, for unique lease ids across the stores it runs.
static LEASES: AtomicU64 = AtomicU64::new(0);

/// Every owner's state, in Redis.
pub(crate) struct Redis {
    client: Client,
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
    /// The IP read in this stage: (stage, IP, what is known about it).
    view: RefCell<Option<(u64, IpAddr, view::IpView)>>,
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
        Ok(Self {
            client,
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
            view: RefCell::new(None),
        })
    }

    /// The key `parts` under the prefix.
    fn key(&self, parts: fmt::Arguments<'_>) -> String {
        format!("{}{parts}", self.prefix)
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
        let conn = self.client.get_connection_with_timeout(self.timeout)?;
        conn.set_read_timeout(Some(self.timeout))?;
        conn.set_write_timeout(Some(self.timeout))?;
        Ok(conn)
    }

    /// Runs `f` on the connection. On a failure, or when this stage already met one,
    /// returns the default (nothing known) and leaves the health failed.
    fn call<T: Default>(&self, what: &str, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> T {
        if self.health.failed() {
            return T::default();
        }
        self.health.call();
        let mut slot = self.conn.borrow_mut();
        let result = match slot.as_mut() {
            Some(conn) => f(conn),
            None => self.connect().and_then(|conn| f(slot.insert(conn))),
        };
        match result {
            Ok(value) => {
                if self.down.replace(false) {
                    info!(prefix = %self.prefix, "policy state reachable again");
                }
                value
            }
            Err(e) => {
                *slot = None;
                self.seen.borrow_mut().clear();
                self.health.fail();
                if !self.down.replace(true) {
                    warn!(prefix = %self.prefix, call = what, error = %e, "policy state unreachable");
                } else {
                    tracing::debug!(call = what, error = %e, "policy state still unreachable");
                }
                T::default()
            }
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

    fn clear_all(&mut self) {
        self.forget_view();
        self.seen.borrow_mut().clear();
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
