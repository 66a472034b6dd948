//! The server: the listener, the accept loop, the connection cap and graceful shutdown.
//!
//! [`Server`] owns the state every session shares (config, catalogue, policy, store,
//! clock, TLS). [`Server::run`] accepts connections on one listener until its shutdown
//! future completes, then tells every open session to answer `421` and waits for them.
//! This is the only module that touches a listener; it knows nothing about tests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::config::Config;
use crate::policy::Policy;
use crate::proxy;
use crate::session::{self, Shared};
use crate::store::Store;
use crate::tls::{self, TlsError};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The config does not pass [`Config::check`].
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The DNS resolver for authentication could not be set up.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The server's thread or runtime could not be started.
    #[error("cannot start the server's runtime: {0}")]
    Runtime(std::io::Error),
}

/// A qqmx server: shared state plus the accept loop.
///
/// The embedded [`QqMx`](crate::QqMx) and `qqmx serve` both run one of these.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let server = qqmx::Server::new(qqmx::Config::default(), qqmx::Clock::system())?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await?;
/// server.run(listener, async { tokio::signal::ctrl_c().await.ok(); }).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    /// Builds the shared state for `config`, reading time from `clock`.
    ///
    /// # Errors
    ///
    /// [`StartError::Tls`] when the certificate cannot be loaded or generated.
    pub fn new(config: Config, clock: Clock) -> Result<Self, StartError> {
        let policy = Policy::new(&config)?;
        let tls = tls::acceptor(&config.tls, config.host())?;
        let store = Store::new(clock.clone(), config.store.clone());
        let auth = if config.auth.enabled {
            Some(Authenticator::new(&config)?)
        } else {
            None
        };
        Ok(Self {
            shared: Arc::new(Shared {
                catalogue: config.catalogue(),
                auth,
                policy: Mutex::new(policy),
                store,
                clock,
                tls,
                sessions: AtomicU64::new(0),
                config,
            }),
        })
    }

    /// The store of messages and events.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Runs `f` on the policy, locked, with the server's current time: how the embedded
    /// handle and the control API blacklist, whitelist, complain and set limits.
    ///
    /// ```
    /// use qqmx::policy::{QuotaName, Window};
    /// let server = qqmx::Server::new(qqmx::Config::default(), qqmx::Clock::manual_at_unix(0)).unwrap();
    /// server.with_policy(|policy, _now| policy.set_limit(QuotaName::IpMessages, Window::Minute, Some(5)));
    /// ```
    pub fn with_policy<R>(&self, f: impl FnOnce(&mut Policy, std::time::SystemTime) -> R) -> R {
        let now = self.shared.clock.now();
        f(&mut self.shared.policy(), now)
    }

    /// Serves connections from `listener` until `shutdown` completes; then answers open
    /// sessions with `421` and returns once they have all ended.
    pub async fn run(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let (stop, stopped) = watch::channel(false);
        let limit = Arc::new(Semaphore::new(self.shared.config.limits.max_connections));
        let mut sessions = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                permit = limit.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                () = &mut shutdown => break,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off and go on.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or_else(|_| {
                listener
                    .local_addr()
                    .expect("a bound listener has an address")
            });
            let shared = self.shared.clone();
            let stopped = stopped.clone();
            sessions.spawn(async move {
                let mut stream = stream;
                let peer = if shared.config.server.proxy_protocol {
                    let idle = shared.config.limits.idle_timeout;
                    match tokio::time::timeout(idle, proxy::read_header(&mut stream)).await {
                        Ok(Ok(addr)) => addr.unwrap_or(peer),
                        Ok(Err(e)) => {
                            warn!(%peer, error = %e, "connection closed");
                            return;
                        }
                        Err(_) => {
                            warn!(%peer, "no PROXY header in time; connection closed");
                            return;
                        }
                    }
                } else {
                    peer
                };
                session::serve(shared, stream, peer, local, stopped).await;
                drop(permit);
            });
            while sessions.try_join_next().is_some() {}
        }
        while sessions.try_join_next().is_some() {}
        info!(open = sessions.len(), "shutting down");
        let _ = stop.send(true);
        while sessions.join_next().await.is_some() {}
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("host", &self.shared.catalogue.host())
            .field("generation", &self.shared.catalogue.generation())
            .finish()
    }
}
