//! Where the other replicas' APIs are: with the Redis state, each replica registers the
//! URL of its control API under `{prefix}:replica:{name}` with a TTL it renews, and
//! lists its name in the set `{prefix}:replicas`; any replica's API reads them to gather
//! the messages and events of all. The registry has a Redis connection of its own, not
//! the policy's, and a thread that renews the registration every third of
//! `state.advertise_ttl`: a replica that dies drops out once its key expires.
//!
//! Without the `redis` feature there is no Redis state, hence no registry: the type is
//! empty and the API answers for its own replica alone.

use crate::config::StateConfig;

/// Another replica's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Peer {
    /// Its replica name.
    pub(super) name: String,
    /// The URL it registered (`http://10.0.0.5:8025`).
    pub(super) url: String,
}

/// The peers found, and why the registry could not be read when it could not (the
/// peers are then the ones last read).
pub(super) struct Found {
    pub(super) peers: Vec<Peer>,
    pub(super) error: Option<String>,
}

#[cfg(feature = "redis")]
pub(super) use with_redis::{Registration, Registry};

#[cfg(not(feature = "redis"))]
pub(super) use without_redis::{Registration, Registry};

#[cfg(feature = "redis")]
mod with_redis {
    use std::sync::mpsc::{self, RecvTimeoutError};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    use redis::{Client, Connection, RedisResult};
    use tracing::{info, warn};

    use super::{Found, Peer, StateConfig};

    /// How often a registration is renewed: a third of its TTL, so that one missed
    /// renewal does not drop a live replica.
    fn renewal(ttl: Duration) -> Duration {
        ttl / 3
    }

    /// The registry of replicas in Redis.
    pub(in crate::control) struct Registry {
        client: Client,
        conn: Mutex<Option<Connection>>,
        timeout: Duration,
        /// `{prefix}:` as the policy's keys begin.
        prefix: String,
        /// This replica's name.
        name: String,
        ttl: Duration,
        /// The peers last read, for when Redis cannot be reached.
        last: Mutex<Vec<Peer>>,
    }

    /// Renews this replica's registration until dropped, then removes it.
    pub(in crate::control) struct Registration {
        _stop: mpsc::Sender<()>,
    }

    impl Registry {
        /// The registry of the replicas sharing `state`, or `None` when its URL cannot be
        /// read (the policy's store has refused it already).
        pub(in crate::control) fn new(state: &StateConfig) -> Option<Arc<Self>> {
            let client = Client::open(state.url.as_str()).ok()?;
            Some(Arc::new(Self {
                client,
                conn: Mutex::new(None),
                timeout: state.timeout,
                prefix: format!("{{{}}}:", state.prefix),
                name: state.replica_name().to_owned(),
                ttl: state.advertise_ttl,
                last: Mutex::new(Vec::new()),
            }))
        }

        /// Registers `url` as this replica's API now and every third of the TTL, on a
        /// thread of its own, until the registration is dropped.
        pub(in crate::control) fn register(self: &Arc<Self>, url: String) -> Registration {
            let (stop, stopped) = mpsc::channel::<()>();
            let registry = self.clone();
            let every = renewal(self.ttl);
            let spawned = std::thread::Builder::new()
                .name("qqmx-replicas".into())
                .spawn(move || {
                    let mut failing = false;
                    loop {
                        match registry.renew(&url) {
                            Ok(()) if failing => {
                                failing = false;
                                info!(replica = %registry.name, "replica registered again");
                            }
                            Ok(()) => {}
                            Err(e) if !failing => {
                                failing = true;
                                warn!(replica = %registry.name, error = %e, "cannot register the replica in Redis; retrying");
                            }
                            Err(_) => {}
                        }
                        if !matches!(stopped.recv_timeout(every), Err(RecvTimeoutError::Timeout)) {
                            break;
                        }
                    }
                    if let Err(e) = registry.remove() {
                        warn!(replica = %registry.name, error = %e, "cannot remove the replica's registration; it expires");
                    }
                });
            if let Err(e) = spawned {
                warn!(error = %e, "cannot start the thread that registers the replica");
            }
            Registration { _stop: stop }
        }

        fn url_key(&self, name: &str) -> String {
            format!("{}replica:{name}", self.prefix)
        }

        fn set_key(&self) -> String {
            format!("{}replicas", self.prefix)
        }

        fn ttl_ms(&self) -> u64 {
            u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
        }

        /// Runs `f` on the registry's connection, connecting first if need be; a failure
        /// drops the connection, to reconnect at the next call.
        fn with_conn<T>(
            &self,
            f: impl FnOnce(&mut Connection) -> RedisResult<T>,
        ) -> RedisResult<T> {
            let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
            let result = match conn.as_mut() {
                Some(c) => f(c),
                None => {
                    let c = self.client.get_connection_with_timeout(self.timeout)?;
                    c.set_read_timeout(Some(self.timeout))?;
                    c.set_write_timeout(Some(self.timeout))?;
                    f(conn.insert(c))
                }
            };
            if result.is_err() {
                *conn = None;
            }
            result
        }

        /// One round trip: the URL with its TTL, the name in the set, the set's TTL.
        fn renew(&self, url: &str) -> RedisResult<()> {
            let ttl = self.ttl_ms();
            self.with_conn(|conn| {
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(self.url_key(&self.name))
                    .arg(url)
                    .arg("PX")
                    .arg(ttl)
                    .ignore()
                    .cmd("SADD")
                    .arg(self.set_key())
                    .arg(&self.name)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(self.set_key())
                    .arg(ttl)
                    .ignore()
                    .query::<()>(conn)
            })
        }

        fn remove(&self) -> RedisResult<()> {
            self.with_conn(|conn| {
                redis::pipe()
                    .atomic()
                    .cmd("DEL")
                    .arg(self.url_key(&self.name))
                    .ignore()
                    .cmd("SREM")
                    .arg(self.set_key())
                    .arg(&self.name)
                    .ignore()
                    .query::<()>(conn)
            })
        }

        /// The registered replicas but this one, by name; names whose URL has expired
        /// are taken out of the set.
        fn read(&self) -> RedisResult<Vec<Peer>> {
            self.with_conn(|conn| {
                let names: Vec<String> = redis::cmd("SMEMBERS").arg(self.set_key()).query(conn)?;
                if names.is_empty() {
                    return Ok(Vec::new());
                }
                let keys: Vec<String> = names.iter().map(|n| self.url_key(n)).collect();
                let urls: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(conn)?;
                let gone: Vec<&String> = names
                    .iter()
                    .zip(&urls)
                    .filter(|(_, url)| url.is_none())
                    .map(|(name, _)| name)
                    .collect();
                if !gone.is_empty() {
                    redis::cmd("SREM")
                        .arg(self.set_key())
                        .arg(&gone)
                        .query::<()>(conn)?;
                }
                let mut peers: Vec<Peer> = names
                    .into_iter()
                    .zip(urls)
                    .filter(|(name, _)| *name != self.name)
                    .filter_map(|(name, url)| url.map(|url| Peer { name, url }))
                    .collect();
                peers.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(peers)
            })
        }

        /// The other replicas registered now; the ones last read when Redis cannot be
        /// reached, with the error.
        pub(in crate::control) async fn peers(self: &Arc<Self>) -> Found {
            let registry = self.clone();
            let read = tokio::task::spawn_blocking(move || registry.read())
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            match read {
                Ok(peers) => {
                    last.clone_from(&peers);
                    Found { peers, error: None }
                }
                Err(error) => {
                    warn!(%error, "cannot read the registered replicas; asking the ones last seen");
                    Found {
                        peers: last.clone(),
                        error: Some(format!(
                            "the registry in Redis cannot be read ({error}); asked the replicas last seen"
                        )),
                    }
                }
            }
        }
    }
}

#[cfg(not(feature = "redis"))]
mod without_redis {
    use std::sync::Arc;

    use super::{Found, StateConfig};

    /// No registry without Redis: this type has no value.
    pub(in crate::control) enum Registry {}

    /// No registration without Redis.
    pub(in crate::control) struct Registration;

    impl Registry {
        pub(in crate::control) fn new(_: &StateConfig) -> Option<Arc<Self>> {
            None
        }

        pub(in crate::control) fn register(self: &Arc<Self>, _: String) -> Registration {
            match **self {}
        }

        pub(in crate::control) async fn peers(self: &Arc<Self>) -> Found {
            match **self {}
        }
    }
}
