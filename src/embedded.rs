//! The embedded server for tests: one line starts a qqmx on `127.0.0.1:0`.
//!
//! [`QqMx`] runs a [`Server`] on its own thread with its own tokio runtime, so it works
//! from a plain `#[test]` and from any async runtime, and every test gets its own port,
//! clock and store. It dereferences to a [`Handle`], whose methods read the store, move
//! the clock, wait for messages and steer the policy; it checks [`Expectation`]s when it
//! is dropped.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::config::{ClockMode, Config};
use crate::expect::{Expectation, Report, Run, evaluate};
use crate::inspect::{Handle, Local};
use crate::reply::Generation;
use crate::server::{Server, StartError};
use crate::store::Store;
use crate::tls::TestCa;

/// A qqmx server running for one test.
///
/// Dropping it stops the server (open sessions get a `421`) and verifies the
/// expectations; a failed expectation panics with a report, unless the thread is already
/// panicking.
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use qqmx::{Expectation, QqMx, ReplyKind};
///
/// let server = QqMx::start();
/// server.expect(Expectation::replies(ReplyKind::MailboxNotFound, 1));
///
/// let mut smtp = std::net::TcpStream::connect(server.addr()).unwrap();
/// let mut replies = BufReader::new(smtp.try_clone().unwrap());
/// let mut line = String::new();
/// replies.read_line(&mut line).unwrap();
/// assert_eq!(line, "220 newxmmxszc23-0.qq.com MX QQ Mail Server.\r\n");
/// smtp.write_all(b"HELO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<nobody@qq.com>\r\nQUIT\r\n").unwrap();
/// for _ in 0..4 {
///     line.clear();
///     replies.read_line(&mut line).unwrap();
/// }
/// assert!(line.starts_with("221"));
/// # drop(smtp);
/// ```
pub struct QqMx {
    handle: Handle,
    server: Server,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    expectations: Mutex<Vec<Expectation>>,
    dns: Option<SocketAddr>,
}

/// Settings for a [`QqMx`] before it starts.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct Builder {
    config: Config,
    clock: Option<Clock>,
    listen: SocketAddr,
    ca: Option<Arc<TestCa>>,
    dns: Option<SocketAddr>,
}

impl Builder {
    /// Uses `config` (replacing any earlier settings from it).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the seed of the random generator.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Imitates `generation`.
    pub fn generation(mut self, generation: Generation) -> Self {
        self.config.generation = generation;
        self
    }

    /// Switches off every quota, the warm-up and bulk detection, for tests that are not
    /// about limits (see [`Config::no_limits`]).
    pub fn no_limits(mut self) -> Self {
        self.config = self.config.no_limits();
        self
    }

    /// Reads time from `clock` instead of a manual clock made from the config.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Issues the listener's certificate from `ca`, which the code under test can then be
    /// told to trust (`ca.cert_pem()`), instead of a self-signed one.
    ///
    /// ```
    /// let ca = std::sync::Arc::new(qqmx::TestCa::generate().unwrap());
    /// let server = qqmx::QqMx::builder().tls_ca(ca.clone()).start();
    /// assert_eq!(server.ca_pem().as_deref(), Some(ca.cert_pem()));
    /// ```
    pub fn tls_ca(mut self, ca: impl Into<Arc<TestCa>>) -> Self {
        self.ca = Some(ca.into());
        self
    }

    /// Listens on `addr` instead of `127.0.0.1:0`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Also answers DNS on `addr` (UDP and TCP; port 0: any free port), with `mx1.qq.com`
    /// pointing at the server's address: see [`QqMx::dns_addr`] and the [`dns`](crate::dns)
    /// module. The config's `[dns] listen` does the same; this wins over it.
    #[cfg(feature = "dns")]
    pub fn dns(mut self, addr: SocketAddr) -> Self {
        self.dns = Some(addr);
        self
    }

    /// Starts the server.
    ///
    /// # Panics
    ///
    /// When it cannot start; see [`try_start`](Self::try_start).
    pub fn start(self) -> QqMx {
        self.try_start()
            .unwrap_or_else(|e| panic!("qqmx could not start: {e}"))
    }

    /// Starts the server, or says why it could not.
    ///
    /// # Errors
    ///
    /// A [`StartError`] when the config does not pass [`Config::check`], the address
    /// cannot be bound or TLS cannot be set up.
    pub fn try_start(self) -> Result<QqMx, StartError> {
        // Before anything reads the config: a clock start that is not a time would
        // otherwise panic in `make_clock`.
        self.config.check()?;
        let clock = self
            .clock
            .unwrap_or_else(|| self.config.make_clock(ClockMode::Manual));
        let dns_listen = self.dns.or(self.config.dns.listen);
        let server = match self.ca {
            Some(ca) => Server::with_tls_ca(self.config, clock, ca)?,
            None => Server::new(self.config, clock)?,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let listener = {
            let _inside = runtime.enter();
            server.listen(self.listen)
        }
        .map_err(|source| StartError::Bind {
            addr: self.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(StartError::Runtime)?;
        let dns = match dns_listen {
            Some(listen) => Some(dns::bind(listen)?),
            None => None,
        };
        let dns_addr = dns.as_ref().map(dns::Sockets::addr);
        let (stop, stopped) = oneshot::channel();
        let running = server.clone();
        let thread = std::thread::Builder::new()
            .name(format!("qqmx-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let (stop_dns, dns_stopped) = oneshot::channel::<()>();
                    let dns = dns.map(|sockets| {
                        let listeners = vec![("mx1".to_owned(), addr)];
                        tokio::spawn(dns::serve(sockets, running.clone(), listeners, async {
                            let _ = dns_stopped.await;
                        }))
                    });
                    running
                        .run(listener, async {
                            let _ = stopped.await;
                        })
                        .await;
                    let _ = stop_dns.send(());
                    if let Some(dns) = dns {
                        let _ = dns.await;
                    }
                });
            })
            .map_err(StartError::Runtime)?;
        Ok(QqMx {
            handle: Handle::new(Arc::new(Local::new(server.clone(), addr))),
            server,
            stop: Some(stop),
            thread: Some(thread),
            expectations: Mutex::new(Vec::new()),
            dns: dns_addr,
        })
    }
}

impl QqMx {
    /// Starts a server with the default config on `127.0.0.1:0` with a manual clock.
    ///
    /// # Panics
    ///
    /// When no port can be bound on 127.0.0.1.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// Settings for a server.
    ///
    /// ```
    /// let server = qqmx::QqMx::builder()
    ///     .generation(qqmx::Generation::G2019)
    ///     .seed(7)
    ///     .start();
    /// assert_eq!(server.config().seed, 7);
    /// ```
    pub fn builder() -> Builder {
        Builder {
            config: Config::default(),
            clock: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ca: None,
            dns: None,
        }
    }

    /// The certificate (PEM) of the test CA that issued the listener's certificate:
    /// given to the builder ([`Builder::tls_ca`]) or made for `[tls] ca`/`ca_cert`;
    /// `None` with the default self-signed certificate.
    pub fn ca_pem(&self) -> Option<String> {
        self.server.ca_pem()
    }

    /// The address the DNS server answers on (UDP and TCP), when one was asked for with
    /// [`Builder::dns`] (feature `dns`) or the config's `[dns] listen`.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns
    }

    /// The server's clock: advance it to move the server through time.
    pub fn clock(&self) -> &Clock {
        self.server.clock()
    }

    /// The config in force, quota tiers changed through
    /// [`set_limit`](Handle::set_limit) included.
    pub fn config(&self) -> Arc<Config> {
        Arc::new(crate::inspect::config_in_force(&self.server))
    }

    /// The store, for anything the handle does not offer directly.
    pub fn store(&self) -> &Store {
        self.server.store()
    }

    /// Forgets messages, events and expectations.
    pub fn reset(&self) {
        self.backend().clear();
        self.lock_expectations().clear();
    }

    /// Adds an expectation, checked when the server is dropped (or by
    /// [`verify`](Self::verify)).
    pub fn expect(&self, expectation: Expectation) {
        self.lock_expectations().push(expectation);
    }

    /// Checks the expectations now, over the messages and events the store holds (an
    /// outcome says how many its caps evicted), as `qqmx run` checks a scenario's: the
    /// same events give the same report text. The run ends now, by the server's clock;
    /// the embedded server records no MX outages, so `failover` does not hold here.
    ///
    /// # Errors
    ///
    /// The [`Report`] of every expectation, naming the config's seed, when one failed.
    pub fn verify(&self) -> Result<(), Report> {
        let expectations = self.lock_expectations();
        if expectations.is_empty() {
            return Ok(());
        }
        let (events, messages, stats) = (self.events(), self.messages(), self.stats());
        let run = Run::new(&events, &messages, &[], self.config().seed)
            .ending_at(self.now())
            .evicted(
                stats.since_reset.messages_evicted,
                stats.since_reset.events_evicted,
            );
        evaluate(&expectations, &run).into_result()
    }

    /// QQ user `recipient` blocks mail from `sender` (an address or a domain): it is
    /// refused at RCPT with `Mail is rejected by recipients`. Only the embedded server
    /// offers this; the control API has no route for it.
    pub fn block_for_recipient(&self, recipient: &str, sender: &str) {
        self.server
            .with_policy(|p, _| p.block_for_recipient(recipient, sender));
    }

    /// Records that QQ user `address` sent mail to `ip`, so that bounces from `ip` to
    /// them are expected when backscatter detection is on. Only the embedded server
    /// offers this; the control API has no route for it.
    pub fn record_outbound(&self, address: &str, ip: IpAddr) {
        self.server
            .with_policy(|p, _| p.record_outbound(address, ip));
    }

    fn lock_expectations(&self) -> std::sync::MutexGuard<'_, Vec<Expectation>> {
        self.expectations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Deref for QqMx {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for QqMx {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if std::thread::panicking() {
            return;
        }
        if let Err(report) = self.verify() {
            panic!("{report}");
        }
    }
}

/// The DNS server beside the embedded one, or the error of asking for one without the
/// `dns` feature.
mod dns {
    use std::future::Future;
    use std::net::SocketAddr;

    use crate::server::{Server, StartError};

    #[cfg(feature = "dns")]
    pub(super) use crate::dns::DnsSockets as Sockets;

    #[cfg(feature = "dns")]
    pub(super) fn bind(addr: SocketAddr) -> Result<Sockets, StartError> {
        Sockets::bind(addr).map_err(|source| StartError::Bind { addr, source })
    }

    #[cfg(feature = "dns")]
    pub(super) async fn serve(
        sockets: Sockets,
        server: Server,
        listeners: Vec<(String, SocketAddr)>,
        shutdown: impl Future<Output = ()>,
    ) {
        sockets.serve(server, listeners, shutdown).await;
    }

    /// Without the `dns` feature: nothing to serve.
    #[cfg(not(feature = "dns"))]
    #[derive(Debug)]
    pub(super) enum Sockets {}

    #[cfg(not(feature = "dns"))]
    impl Sockets {
        pub(super) fn addr(&self) -> SocketAddr {
            match *self {}
        }
    }

    #[cfg(not(feature = "dns"))]
    pub(super) fn bind(addr: SocketAddr) -> Result<Sockets, StartError> {
        Err(StartError::Bind {
            addr,
            source: std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "qqmx was built without the `dns` feature",
            ),
        })
    }

    #[cfg(not(feature = "dns"))]
    pub(super) async fn serve(
        sockets: Sockets,
        _: Server,
        _: Vec<(String, SocketAddr)>,
        _: impl Future<Output = ()>,
    ) {
        match sockets {}
    }
}

impl fmt::Debug for QqMx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QqMx")
            .field("addr", &self.addr())
            .field("server", &self.server)
            .finish()
    }
}

/// What the embedded server and a sidecar's `Remote` client (feature `remote`) have in
/// common, so that a test can be written once and switched between the two by changing
/// the line that creates the server: every method of [`Handle`] (through `Deref`), and
/// the expectations each keeps.
///
/// ```
/// use std::time::Duration;
/// use qqmx::{Expectation, Mx, QqMx};
///
/// fn nothing_sent(server: &impl Mx) {
///     server.expect(Expectation::accepted(0));
///     server.advance(Duration::from_secs(3600));
///     assert!(server.messages().is_empty());
///     server.verify().unwrap();
/// }
///
/// let server = QqMx::start(); // or qqmx::remote::Remote::from_env()? with a sidecar
/// nothing_sent(&server);
/// ```
///
/// The trait is sealed: only qqmx implements it, so that methods can be added to it
/// without breaking anyone. It is dyn-compatible (`Box<dyn Mx>`).
pub trait Mx: sealed::Sealed + Deref<Target = Handle> {
    /// Forgets messages, events and expectations.
    fn reset(&self);
    /// Adds an expectation, checked by [`verify`](Self::verify) and when dropped.
    fn expect(&self, expectation: Expectation);
    /// Checks the expectations now.
    ///
    /// # Errors
    ///
    /// A [`Report`] of those that failed.
    fn verify(&self) -> Result<(), Report>;
}

/// Keeps [`Mx`] to the types of this crate.
pub(crate) mod sealed {
    /// Implemented by the types that implement [`Mx`](super::Mx).
    pub trait Sealed {}
}

impl sealed::Sealed for QqMx {}

impl Mx for QqMx {
    fn reset(&self) {
        QqMx::reset(self);
    }
    fn expect(&self, expectation: Expectation) {
        QqMx::expect(self, expectation);
    }
    fn verify(&self) -> Result<(), Report> {
        QqMx::verify(self)
    }
}
