//! The server: the listener, the accept loop, the connection cap and graceful shutdown.
//!
//! [`Server`] owns the state every session shares (config, catalogue, policy, store,
//! clock, TLS). [`Server::run`] accepts connections on one listener until its shutdown
//! future completes, then tells every open session to answer `421` and waits for them.
//! This is the only module that touches a listener; it knows nothing about tests.
//! Listeners are bound with an accept queue at least as long as the connection cap, and a
//! connection over the cap is answered `421` and closed rather than left waiting.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, TryAcquireError, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::accept::{Backoff, is_connection_error};
use crate::auth::Authenticator;
use crate::chaos::{Fault, Faults};
use crate::clock::Clock;
use crate::config::Config;
use crate::policy::Policy;
use crate::proxy;
use crate::session::{self, Engine, Inflight};
use crate::store::Store;
use crate::tls::{self, Acceptors, CaSource, TestCa, TlsError};

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

/// A qqmx server: shared state plus the accept loops of its listeners.
///
/// The embedded [`QqMx`](crate::QqMx) and `qqmx serve` both run one of these. Every
/// listener (one per simulated MX host) shares the policy, the store and the clock.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let server = qqmx::Server::new(qqmx::Config::default(), qqmx::Clock::system())?;
/// let listener = server.listen("127.0.0.1:2525".parse()?)?;
/// server.run(listener, async { tokio::signal::ctrl_c().await.ok(); }).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    /// The state built from the config in force; replaced by [`Server::reload`].
    engine: RwLock<Arc<Engine>>,
    store: Store,
    clock: Clock,
    /// Connections served at once, across listeners (sized by the first config).
    slots: Arc<Semaphore>,
    /// The accept queue of every listener bound here: at least the connection cap.
    backlog: u32,
    /// Message data held by all sessions, against `limits.max_inflight_bytes`.
    inflight: Arc<Inflight>,
    /// Set once shutdown has begun: open sessions answer `421`.
    stop: watch::Sender<bool>,
    /// Set by [`Server::begin_drain`]: not ready, though still serving.
    draining: AtomicBool,
    /// Connections open now.
    active: watch::Sender<usize>,
    /// Faults in force, for chaos scenarios.
    faults: Arc<Mutex<Faults>>,
    /// Whether each listener accepts connections, by MX name (absent: up).
    up: watch::Sender<BTreeMap<String, bool>>,
    /// With the Redis state: the clock's offset shared with the other replicas.
    #[cfg(feature = "redis")]
    _shared_clock: Option<crate::policy::SharedClock>,
    /// Where the test CA comes from; kept across config reloads.
    ca: CaSource,
}

impl Server {
    /// Builds the shared state for `config`, reading time from `clock`.
    ///
    /// # Errors
    ///
    /// [`StartError::Tls`] when the certificate cannot be loaded or generated,
    /// [`StartError::Auth`] when the resolver cannot be set up.
    pub fn new(config: Config, clock: Clock) -> Result<Self, StartError> {
        Self::with_ca_source(config, clock, CaSource::default())
    }

    /// Builds the shared state for `config` as [`new`](Self::new) does, with `ca` issuing
    /// every listener's certificate, whatever the config's `[tls]` says of a CA.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_tls_ca(
        config: Config,
        clock: Clock,
        ca: impl Into<Arc<TestCa>>,
    ) -> Result<Self, StartError> {
        Self::with_ca_source(config, clock, CaSource::given(ca.into()))
    }

    fn with_ca_source(config: Config, clock: Clock, ca: CaSource) -> Result<Self, StartError> {
        let store = Store::new(clock.clone(), config.store.clone());
        let slots = Arc::new(Semaphore::new(config.limits.max_connections));
        let backlog = u32::try_from(config.limits.max_connections)
            .unwrap_or(u32::MAX)
            .max(MIN_BACKLOG);
        let faults = Arc::new(Mutex::new(Faults::new(config.seed)));
        let inflight = Arc::new(Inflight::default());
        #[cfg(feature = "redis")]
        let shared_clock = (config.state.backend == crate::config::StateBackend::Redis)
            .then(|| crate::policy::SharedClock::start(&config, clock.clone()))
            .flatten();
        let engine = engine(
            config,
            store.clone(),
            clock.clone(),
            faults.clone(),
            inflight.clone(),
            &ca,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine: RwLock::new(Arc::new(engine)),
                store,
                clock,
                slots,
                backlog,
                inflight,
                stop: watch::Sender::new(false),
                draining: AtomicBool::new(false),
                active: watch::Sender::new(0),
                faults,
                up: watch::Sender::new(BTreeMap::new()),
                #[cfg(feature = "redis")]
                _shared_clock: shared_clock,
                ca,
            }),
        })
    }

    fn engine(&self) -> Arc<Engine> {
        self.inner
            .engine
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The store of messages and events.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.engine().config.clone()
    }

    /// Puts `config` in force without a restart. Sessions already open finish under the
    /// old one; new sessions get the new replies, limits and checks. The policy starts
    /// afresh from the new config (counters, blocks and reputation are forgotten); the
    /// store, the clock and the listeners' addresses stay as they are.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), and when the config does not pass [`Config::check`]; the
    /// old config then stays in force.
    pub fn reload(&self, config: Config) -> Result<(), StartError> {
        config.check()?;
        let engine = engine(
            config,
            self.inner.store.clone(),
            self.inner.clock.clone(),
            self.inner.faults.clone(),
            self.inner.inflight.clone(),
            &self.inner.ca,
        )?;
        // A policy state shared by replicas starts afresh too.
        engine.policy().forget_shared();
        *self
            .inner
            .engine
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(engine);
        Ok(())
    }

    /// Runs `f` on the policy, locked, with the server's current time: how the embedded
    /// handle and the control API blacklist, whitelist, complain and set limits.
    ///
    /// ```
    /// use qqmx::units::{QuotaName, Window};
    /// let server = qqmx::Server::new(qqmx::Config::default(), qqmx::Clock::manual_at_unix(0)).unwrap();
    /// server.with_policy(|policy, _now| policy.set_limit(QuotaName::IpMessages, Window::Minute, Some(5)));
    /// ```
    pub fn with_policy<R>(&self, f: impl FnOnce(&mut Policy, std::time::SystemTime) -> R) -> R {
        let now = self.inner.clock.now();
        let engine = self.engine();
        let mut policy = engine.policy();
        f(&mut policy, now)
    }

    /// The test CA that issues the listeners' certificates, when one does (`[tls] ca`,
    /// `ca_cert`, or [`with_tls_ca`](Self::with_tls_ca)) and TLS is on.
    pub fn tls_ca(&self) -> Option<Arc<TestCa>> {
        self.engine().tls.as_ref().and_then(|t| t.ca().cloned())
    }

    /// The certificate of the test CA in use, PEM (see [`tls_ca`](Self::tls_ca)).
    pub fn ca_pem(&self) -> Option<String> {
        self.tls_ca().map(|ca| ca.cert_pem().to_owned())
    }

    /// Replaces the faults in force (see [`chaos`](crate::chaos)).
    pub fn set_faults(&self, faults: Vec<Fault>) {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set(faults);
    }

    /// The faults in force.
    pub fn faults(&self) -> Vec<Fault> {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .list()
            .to_vec()
    }

    /// Takes the listener of MX host `mx` down (its port refuses connections; open
    /// sessions go on) or brings it back up on the same address.
    pub fn set_mx_up(&self, mx: &str, up: bool) {
        self.inner.up.send_modify(|hosts| {
            hosts.insert(mx.to_owned(), up);
        });
    }

    /// Whether the listener of `mx` accepts connections (true unless taken down).
    pub fn is_mx_up(&self, mx: &str) -> bool {
        self.inner.up.borrow().get(mx).copied().unwrap_or(true)
    }

    /// Whether shutdown has begun or [`begin_drain`](Self::begin_drain) was called: the
    /// control API's `/readyz` then answers 503.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed) || *self.inner.stop.borrow()
    }

    /// Marks the server as about to stop, so that readiness checks fail and traffic moves
    /// elsewhere, while it goes on serving until the shutdown future of
    /// [`run_all`](Self::run_all) completes.
    pub fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// Connections open now, across listeners.
    pub fn active_connections(&self) -> usize {
        *self.inner.active.borrow()
    }

    /// Binds a listener on `addr` whose accept queue holds at least `max_connections`
    /// connections (of the first config), so that a burst of connections within the cap
    /// is never left waiting, silent, in a short queue. Bind every listener passed to
    /// [`run`](Self::run) or [`run_all`](Self::run_all) with it.
    ///
    /// # Errors
    ///
    /// When the socket cannot be made, bound or set listening.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn listen(&self, addr: SocketAddr) -> std::io::Result<TcpListener> {
        listen(addr, self.inner.backlog)
    }

    /// Serves connections from `listener` as `mx1` until `shutdown` completes; then
    /// answers open sessions with `421` and returns once they have all ended.
    pub async fn run(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.run_all(vec![("mx1".to_owned(), listener)], shutdown)
            .await;
    }

    /// Serves every listener, each as the simulated MX host it is named after (`mx1`,
    /// `mx2`, ...), until `shutdown` completes; then stops accepting, answers open
    /// sessions with `421` and returns once they have all ended.
    pub async fn run_all(
        &self,
        listeners: Vec<(String, TcpListener)>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut accepting = JoinSet::new();
        for (mx, listener) in listeners {
            let server = self.clone();
            accepting.spawn(async move {
                server.accept_loop(Arc::from(mx), listener).await;
            });
        }
        shutdown.await;
        self.inner.stop.send_replace(true);
        info!(open = self.active_connections(), "shutting down");
        accepting.abort_all();
        while accepting.join_next().await.is_some() {}
        // Sessions see `stop`, answer 421 and end on their own.
        let _ = self
            .inner
            .active
            .subscribe()
            .wait_for(|&open| open == 0)
            .await;
    }

    /// Accepts on `listener` while `mx` is up. While it is down, the port is held by a
    /// socket that is bound but not listening: connections are refused, as by a host that
    /// is gone, and no other program (nor a client's own end of a connection) can take
    /// the port in the meantime. Coming back, that socket starts listening.
    async fn accept_loop(&self, mx: Arc<str>, listener: TcpListener) {
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        let mut listener = Some(listener);
        let mut held: Option<TcpSocket> = None;
        let mut up = self.inner.up.subscribe();
        loop {
            if self.is_mx_up(&mx) {
                let bound = match (listener.take(), held.take()) {
                    (Some(bound), _) => bound,
                    (None, Some(socket)) => match socket.listen(self.inner.backlog) {
                        Ok(bound) => bound,
                        Err(e) => {
                            warn!(%mx, %addr, error = %e, "cannot listen again");
                            held = hold(addr);
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    (None, None) => match self.listen(addr) {
                        Ok(bound) => bound,
                        Err(e) => {
                            warn!(%mx, %addr, error = %e, "cannot listen again");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                info!(%mx, %addr, "accepting");
                tokio::select! {
                    () = self.accept_while_up(&mx, &bound, addr) => {}
                    _ = up.wait_for(|hosts| hosts.get(&*mx) == Some(&false)) => {}
                }
                info!(%mx, %addr, "down: refusing connections");
                drop(bound);
                held = hold(addr);
            } else {
                // Down before its accept loop first ran: close the port it was given too.
                if let Some(bound) = listener.take() {
                    drop(bound);
                    held = hold(addr);
                }
                if up
                    .wait_for(|hosts| hosts.get(&*mx) != Some(&false))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }

    async fn accept_while_up(
        &self,
        mx: &Arc<str>,
        listener: &TcpListener,
        local_default: SocketAddr,
    ) {
        let mut failures = Backoff::default();
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(pair) => {
                    failures.succeeded();
                    pair
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, typically: wait for some to be freed, longer
                    // each time, and say so once in a while rather than at every attempt.
                    let (pause, log) = failures.failed(tokio::time::Instant::now());
                    if let Some(repeated) = log {
                        warn!(%mx, error = %e, repeated, ?pause, "accept failed; pausing");
                    }
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or(local_default);
            let permit = match self.inner.slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(TryAcquireError::NoPermits) => {
                    // Over the cap: an answer and a close, never silence.
                    let listener = session::Listener { mx, local };
                    session::turn_away(self.engine(), stream, peer, listener);
                    continue;
                }
                Err(TryAcquireError::Closed) => return,
            };
            let server = self.clone();
            let mx = mx.clone();
            server.inner.active.send_modify(|open| *open += 1);
            tokio::spawn(async move {
                server.connection(stream, peer, local, &mx).await;
                server.inner.active.send_modify(|open| *open -= 1);
                drop(permit);
            });
        }
    }

    async fn connection(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        mx: &str,
    ) {
        let shared = self.engine();
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
        let listener = session::Listener { mx, local };
        session::serve(shared, stream, peer, listener, self.inner.stop.subscribe()).await;
    }
}

/// The accept queue of a listener when the connection cap is lower.
const MIN_BACKLOG: u32 = 1024;

/// Binds a listener on `addr` with an accept queue of `backlog` (the kernel may cap it at
/// `net.core.somaxconn`), reusing the address as `TcpListener::bind` does.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// A socket bound to `addr` but not listening, which keeps the port while its MX host is
/// down; `None` if the port cannot be bound (the loop then binds anew when it comes up).
fn hold(addr: SocketAddr) -> Option<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .ok()?;
    socket.set_reuseaddr(true).ok()?;
    socket.bind(addr).ok()?;
    Some(socket)
}

/// The state a config describes, over `store`, `clock`, `faults` and `inflight`.
fn engine(
    config: Config,
    store: Store,
    clock: Clock,
    faults: Arc<Mutex<Faults>>,
    inflight: Arc<Inflight>,
    ca: &CaSource,
) -> Result<Engine, StartError> {
    let ca = ca.for_config(&config.tls)?;
    let tls = tls::acceptors(&config, ca)?;
    engine_with_acceptors(config, store, clock, faults, inflight, tls)
}

/// [`engine`] with a TLS acceptor made elsewhere (the fuzz targets reuse one, since making
/// a certificate per run would dwarf the run).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn engine_with_tls(
    config: Config,
    store: Store,
    clock: Clock,
    faults: Arc<Mutex<Faults>>,
    inflight: Arc<Inflight>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<Engine, StartError> {
    let tls = tls.map(Acceptors::single);
    engine_with_acceptors(config, store, clock, faults, inflight, tls)
}

fn engine_with_acceptors(
    config: Config,
    store: Store,
    clock: Clock,
    faults: Arc<Mutex<Faults>>,
    inflight: Arc<Inflight>,
    tls: Option<Acceptors>,
) -> Result<Engine, StartError> {
    let policy = Policy::new(&config)?;
    let auth = if config.auth.enabled {
        Some(Arc::new(Authenticator::new(&config)?))
    } else {
        None
    };
    let catalogues = config
        .listeners
        .0
        .keys()
        .map(|mx| (mx.clone(), Arc::new(config.listener_catalogue(mx))))
        .collect();
    Ok(Engine {
        shared: policy.shared(),
        catalogue: Arc::new(config.catalogue()),
        catalogues,
        auth,
        policy: Mutex::new(policy),
        store,
        clock,
        tls,
        faults,
        inflight,
        config: Arc::new(config),
    })
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("host", &self.engine().catalogue.host())
            .field("generation", &self.engine().catalogue.generation())
            .finish()
    }
}
