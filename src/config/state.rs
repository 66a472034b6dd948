//! `[state]`: where the policy keeps what it remembers (one process, or a Redis server
//! that several replicas share).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::Problem;
use crate::units::duration_text;

/// Where the policy's state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StateBackend {
    /// In this process: the default, and the fastest.
    #[default]
    Memory,
    /// In a Redis server at `state.url`, shared by every replica that names it and the
    /// same `state.prefix` (needs the `redis` feature, which `cli` turns on).
    Redis,
}

/// Where the policy's state lives, and how a shared one is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StateConfig {
    /// `memory` or `redis`.
    pub backend: StateBackend,
    /// The Redis server (`redis://host:6379/0`, `rediss://...`, `redis+unix:///path`).
    pub url: String,
    /// The prefix of every key qqmx writes, so that several simulated QQs share a Redis.
    pub prefix: String,
    /// How long one call to Redis may take (connecting, sending, reading) before the
    /// stage it serves is answered `451` (`state_unavailable`).
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// This replica's name, shown in `/api/v1/info`, the metrics, and (with the Redis
    /// backend) on every message and event of the API; empty: `qqmx`. Letters, digits,
    /// `.`, `_` and `-`, as it names messages in paths (`b:7`).
    pub replica: String,
    /// The URL at which the other replicas reach this one's control API
    /// (`http://10.0.0.5:8025`), registered in Redis so that any replica's API lists the
    /// messages and events of all. Empty: `http://` and the address the API is bound to,
    /// unless that is unspecified (`0.0.0.0`, `[::]`): such a replica is not registered.
    pub advertise: String,
    /// How long a replica's registration lasts unless renewed; it is renewed every third
    /// of this, so a replica that dies drops out of the others' answers after it.
    #[serde(with = "duration_text")]
    pub advertise_ttl: Duration,
    /// How long a replica's API waits for another's answer when it gathers the messages
    /// and events of all; a replica that takes longer is reported as failed.
    #[serde(with = "duration_text")]
    pub peer_timeout: Duration,
    /// How long a replica's lease on an open connection lasts in Redis: the connections
    /// of a replica that dies stop counting toward `quotas.ip_concurrent` after it. At
    /// least `limits.session_timeout` and a minute, as no session outlives that.
    #[serde(with = "duration_text")]
    pub lease: Duration,
    /// How long lists, whitelists, personal blacklists and outbound records made through
    /// the API stay in Redis after their last change (every key qqmx writes expires).
    #[serde(with = "duration_text")]
    pub retention: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            backend: StateBackend::Memory,
            url: "redis://127.0.0.1:6379/".to_owned(),
            prefix: "qqmx".to_owned(),
            timeout: Duration::from_secs(1),
            replica: String::new(),
            advertise: String::new(),
            advertise_ttl: Duration::from_secs(15),
            peer_timeout: Duration::from_secs(5),
            lease: Duration::from_secs(1800),
            retention: Duration::from_secs(30 * 86_400),
        }
    }
}

impl StateConfig {
    /// The replica's name as shown: `replica`, or `qqmx` when it is empty.
    pub fn replica_name(&self) -> &str {
        if self.replica.is_empty() {
            "qqmx"
        } else {
            &self.replica
        }
    }

    /// The first problem with the section.
    pub(super) fn validate(&self) -> Result<(), Problem> {
        let err = |key: &str, message: &str| Err(Problem::new("state", key, message));
        if self.backend == StateBackend::Redis && !cfg!(feature = "redis") {
            return err(
                "backend",
                "this build has no Redis support (build with the `redis` feature)",
            );
        }
        if !["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|scheme| self.url.starts_with(scheme))
        {
            return err(
                "url",
                "a Redis URL starts with redis://, rediss://, redis+unix:// or unix://",
            );
        }
        if self.timeout.is_zero() {
            return err("timeout", "must be more than zero");
        }
        if !self
            .replica
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            || self.replica.len() > 64
        {
            return err(
                "replica",
                "at most 64 letters, digits, `.`, `_` and `-` (it names messages: `b:7`)",
            );
        }
        if !(self.advertise.is_empty() || self.advertise.starts_with("http://")) {
            return err(
                "advertise",
                "an http:// URL of this replica's control API (`http://10.0.0.5:8025`)",
            );
        }
        if self.advertise_ttl < Duration::from_secs(1) {
            return err("advertise_ttl", "must be at least 1s");
        }
        if self.peer_timeout.is_zero() {
            return err("peer_timeout", "must be more than zero");
        }
        if self.lease < Duration::from_secs(1) {
            return err("lease", "must be at least 1s");
        }
        if self.retention < Duration::from_secs(1) {
            return err("retention", "must be at least 1s");
        }
        Ok(())
    }
}
