//! The embedded server for tests: one line starts a qqmx on `127.0.0.1:0`.
//!
//! [`QqMx`] runs a [`Server`] on its own thread with its own tokio runtime, so it works
//! from a plain `#[test]` and from any async runtime, and every test gets its own port,
//! clock and store. The handle reads the store, moves the clock, waits for messages and
//! checks [`Expectation`]s when it is dropped.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::config::{ClockMode, Config};
use crate::expect::{Expectation, Report, Run, evaluate};
use crate::policy::{BlockInfo, Decision, IpNet, Policy, QuotaName, Window};
use crate::reply::Generation;
use crate::server::{Server, StartError};
use crate::store::{Event, EventKind, Message, Store, StoreStats};

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
    addr: SocketAddr,
    server: Server,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    expectations: Mutex<Vec<Expectation>>,
}

/// Settings for a [`QqMx`] before it starts.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct Builder {
    config: Config,
    clock: Option<Clock>,
    listen: SocketAddr,
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

    /// Listens on `addr` instead of `127.0.0.1:0`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
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
        let server = Server::new(self.config, clock)?;
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
        let (stop, stopped) = oneshot::channel();
        let running = server.clone();
        let thread = std::thread::Builder::new()
            .name(format!("qqmx-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    running
                        .run(listener, async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .map_err(StartError::Runtime)?;
        Ok(QqMx {
            addr,
            server,
            stop: Some(stop),
            thread: Some(thread),
            expectations: Mutex::new(Vec::new()),
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
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's clock: advance it to move the server through time.
    pub fn clock(&self) -> &Clock {
        self.server.clock()
    }

    /// The time on the server's clock; short for `clock().now()`.
    pub fn now(&self) -> SystemTime {
        self.clock().now()
    }

    /// Moves the server's clock forward; short for `clock().advance(by)`, and what
    /// `Remote::advance` (feature `remote`) does to a sidecar's.
    pub fn advance(&self, by: Duration) {
        self.clock().advance(by);
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.server.config()
    }

    /// The store, for anything the handle does not offer directly.
    pub fn store(&self) -> &Store {
        self.server.store()
    }

    /// The accepted messages still held, oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.store().messages()
    }

    /// The events still held, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.store().events()
    }

    /// Counts of what is held and what was evicted.
    pub fn stats(&self) -> StoreStats {
        self.store().stats()
    }

    /// Waits (real time) until `n` messages have been accepted since start or
    /// [`reset`](Self::reset).
    ///
    /// # Errors
    ///
    /// [`WaitError`] with the number accepted when `timeout` passes first.
    pub fn wait_for_messages(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Message>, WaitError> {
        self.store()
            .wait_for_messages(n, timeout)
            .map_err(|got| WaitError {
                wanted: n,
                got,
                timeout,
            })
    }

    /// The async form of [`wait_for_messages`](Self::wait_for_messages), for tokio tests.
    ///
    /// # Errors
    ///
    /// [`WaitError`] with the number accepted when `timeout` passes first.
    pub async fn wait_for_messages_async(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Message>, WaitError> {
        self.store()
            .wait_for_messages_async(n, timeout)
            .await
            .map_err(|got| WaitError {
                wanted: n,
                got,
                timeout,
            })
    }

    /// Forgets messages, events and expectations.
    pub fn reset(&self) {
        self.store().clear();
        self.lock_expectations().clear();
    }

    /// Adds an expectation, checked when the server is dropped (or by
    /// [`verify`](Self::verify)).
    pub fn expect(&self, expectation: Expectation) {
        self.lock_expectations().push(expectation);
    }

    /// Checks the expectations now, over the messages and events the store holds (an
    /// outcome says how many its caps evicted), as `qqmx run` checks a scenario's: the
    /// same events give the same report text. The run ends now, by the server's clock; the embedded
    /// server records no MX outages, so `failover` does not hold here.
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
            .evicted(stats.messages_evicted, stats.events_evicted);
        evaluate(&expectations, &run).into_result()
    }

    // ---- policy control ----------------------------------------------------------------

    /// Blacklists an IP or CIDR range (`"127.0.0.3"`, `"127.0.1.0/24"`), until `until`
    /// or for good.
    ///
    /// # Panics
    ///
    /// When `net` is not an IP address or CIDR range.
    pub fn blacklist_ip(&self, net: &str, until: Option<SystemTime>) {
        let net = parse_net(net);
        self.server.with_policy(|p, _| p.blacklist_ip(net, until));
    }

    /// Lifts the listings of an IP or range, its random listing and its complaints.
    ///
    /// # Panics
    ///
    /// When `net` is not an IP address or CIDR range.
    pub fn unblacklist_ip(&self, net: &str) {
        let net = parse_net(net);
        self.server.with_policy(|p, _| p.unblacklist_ip(net));
    }

    /// Blacklists a sender address (`a@example.org`) or domain (`example.org`).
    pub fn blacklist_sender(&self, sender: &str, until: Option<SystemTime>) {
        self.server
            .with_policy(|p, _| p.blacklist_sender(sender, until));
    }

    /// Lifts the listings of a sender address or domain.
    pub fn unblacklist_sender(&self, sender: &str) {
        self.server.with_policy(|p, _| p.unblacklist_sender(sender));
    }

    /// `recipient` whitelists a sender address or domain (QQ's feedback form): its mail
    /// to them passes blacklists until a complaint about that sender.
    pub fn whitelist(&self, recipient: &str, sender: &str) {
        self.server
            .with_policy(|p, _| p.whitelist(recipient, sender));
    }

    /// A QQ user marks mail from `ip` (and `sender`) as spam: the IP loses reputation.
    pub fn complain(&self, ip: IpAddr, sender: Option<&str>) {
        self.server
            .with_policy(|p, now| p.complain(ip, sender, now));
    }

    /// Sets (or with `None` removes) one tier of a quota.
    pub fn set_limit(&self, quota: QuotaName, window: Window, limit: Option<u64>) {
        self.server
            .with_policy(|p, _| p.set_limit(quota, window, limit));
    }

    /// Forgets every quota counter and block.
    pub fn reset_counters(&self) {
        self.server.with_policy(|p, _| p.reset_counters());
    }

    /// An IP's reputation now; 0 means blacklisted.
    pub fn reputation(&self, ip: IpAddr) -> u64 {
        self.server.with_policy(|p, now| p.reputation(ip, now))
    }

    /// The quota blocks in force now.
    pub fn blocks(&self) -> Vec<BlockInfo> {
        self.server.with_policy(|p, now| p.blocks(now))
    }

    /// Replaces the faults in force: tarpits, closes, resets, slow links, greylisting
    /// (see [`chaos`](crate::chaos)).
    ///
    /// ```
    /// use qqmx::chaos::{Fault, FaultKind};
    /// use qqmx::policy::Stage;
    /// let server = qqmx::QqMx::start();
    /// server.set_faults(vec![Fault::new(FaultKind::Close).at(Stage::Rcpt)]);
    /// ```
    pub fn set_faults(&self, faults: Vec<crate::chaos::Fault>) {
        self.server.set_faults(faults);
    }

    /// Takes the server's port down (connections are refused) or brings it back.
    pub fn set_up(&self, up: bool) {
        self.server.set_mx_up("mx1", up);
    }

    /// Anything else the policy offers, locked, with the current time.
    pub fn with_policy<R>(&self, f: impl FnOnce(&mut Policy, SystemTime) -> R) -> R {
        self.server.with_policy(f)
    }

    /// Why `ip` was refused: the last refusal of that client at or before `at`.
    ///
    /// ```
    /// # use qqmx::QqMx;
    /// let server = QqMx::start();
    /// let now = server.clock().now();
    /// assert!(server.explain("127.0.0.3".parse().unwrap(), now).is_none());
    /// ```
    pub fn explain(&self, ip: IpAddr, at: SystemTime) -> Option<Decision> {
        self.refusals(ip)
            .into_iter()
            .filter(|(when, _)| *when <= at)
            .map(|(_, d)| d)
            .next_back()
    }

    /// Every refusal of `ip` still in the event log, with its time, oldest first.
    pub fn refusals(&self, ip: IpAddr) -> Vec<(SystemTime, Decision)> {
        self.events()
            .into_iter()
            .filter(|e| e.client == ip)
            .filter_map(|e| match e.kind {
                EventKind::Decision(d) if !d.is_accept() => Some((e.at, d)),
                _ => None,
            })
            .collect()
    }

    fn lock_expectations(&self) -> std::sync::MutexGuard<'_, Vec<Expectation>> {
        self.expectations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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

impl fmt::Debug for QqMx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QqMx")
            .field("addr", &self.addr)
            .field("server", &self.server)
            .finish()
    }
}

fn parse_net(net: &str) -> IpNet {
    net.parse().unwrap_or_else(|e: String| panic!("qqmx: {e}"))
}

/// Waiting for messages took longer than allowed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("waited {timeout:?} for {wanted} accepted messages, got {got}")]
pub struct WaitError {
    /// How many were awaited.
    pub wanted: usize,
    /// How many had arrived.
    pub got: usize,
    /// How long it waited.
    pub timeout: Duration,
}

/// What the embedded server and a sidecar's `Remote` client (feature `remote`) have in
/// common: inspection and control, so that a test can be written once and switched
/// between the two by changing the line that creates the server.
///
/// Both types also have each of these as an inherent method, so a test that does not
/// need to be generic does not need the trait in scope.
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
pub trait Mx: sealed::Sealed {
    /// The address of the first SMTP listener (`mx1`).
    fn addr(&self) -> SocketAddr;
    /// The time on the server's clock.
    fn now(&self) -> SystemTime;
    /// Moves the server's clock forward.
    fn advance(&self, by: Duration);
    /// The accepted messages still held, oldest first, with their raw source.
    fn messages(&self) -> Vec<Message>;
    /// The events still held, oldest first.
    fn events(&self) -> Vec<Event>;
    /// Counts of what is held and what was evicted.
    fn stats(&self) -> StoreStats;
    /// Waits (real time) until `n` messages have been accepted since start or
    /// [`reset`](Self::reset).
    ///
    /// # Errors
    ///
    /// [`WaitError`] with the number accepted when `timeout` passes first.
    fn wait_for_messages(&self, n: usize, timeout: Duration) -> Result<Vec<Message>, WaitError>;
    /// Forgets messages, events and expectations.
    fn reset(&self);
    /// Adds an expectation, checked by [`verify`](Self::verify) and when dropped.
    fn expect(&self, expectation: Expectation);
    /// Checks the expectations now, with the engine `qqmx run` uses.
    ///
    /// # Errors
    ///
    /// The [`Report`] of every expectation when one failed.
    fn verify(&self) -> Result<(), Report>;
    /// Blacklists an IP or CIDR range until `until`, or for good.
    fn blacklist_ip(&self, net: &str, until: Option<SystemTime>);
    /// Lifts the listings of an IP or range, its random listing and its complaints.
    fn unblacklist_ip(&self, net: &str);
    /// Blacklists a sender address or domain.
    fn blacklist_sender(&self, sender: &str, until: Option<SystemTime>);
    /// Lifts the listings of a sender address or domain.
    fn unblacklist_sender(&self, sender: &str);
    /// `recipient` whitelists a sender address or domain.
    fn whitelist(&self, recipient: &str, sender: &str);
    /// A QQ user marks mail from `ip` (and `sender`) as spam.
    fn complain(&self, ip: IpAddr, sender: Option<&str>);
    /// Sets (or with `None` removes) one tier of a quota.
    fn set_limit(&self, quota: QuotaName, window: Window, limit: Option<u64>);
    /// Forgets every quota counter and block.
    fn reset_counters(&self);
    /// An IP's reputation now; 0 means blacklisted.
    fn reputation(&self, ip: IpAddr) -> u64;
    /// The quota blocks in force now.
    fn blocks(&self) -> Vec<BlockInfo>;
    /// The last refusal of `ip` at or before `at`.
    fn explain(&self, ip: IpAddr, at: SystemTime) -> Option<Decision>;
    /// Every refusal of `ip` still in the event log, with its time, oldest first.
    fn refusals(&self, ip: IpAddr) -> Vec<(SystemTime, Decision)>;
    /// Replaces the faults in force.
    fn set_faults(&self, faults: Vec<crate::chaos::Fault>);
    /// Takes the first MX host down (connections are refused) or brings it back.
    fn set_up(&self, up: bool);
}

/// Keeps [`Mx`] to the types of this crate.
pub(crate) mod sealed {
    /// Implemented by the types that implement [`Mx`](super::Mx).
    pub trait Sealed {}
}

impl sealed::Sealed for QqMx {}

impl Mx for QqMx {
    fn addr(&self) -> SocketAddr {
        QqMx::addr(self)
    }
    fn now(&self) -> SystemTime {
        QqMx::now(self)
    }
    fn advance(&self, by: Duration) {
        QqMx::advance(self, by);
    }
    fn messages(&self) -> Vec<Message> {
        QqMx::messages(self)
    }
    fn events(&self) -> Vec<Event> {
        QqMx::events(self)
    }
    fn stats(&self) -> StoreStats {
        QqMx::stats(self)
    }
    fn wait_for_messages(&self, n: usize, timeout: Duration) -> Result<Vec<Message>, WaitError> {
        QqMx::wait_for_messages(self, n, timeout)
    }
    fn reset(&self) {
        QqMx::reset(self);
    }
    fn expect(&self, expectation: Expectation) {
        QqMx::expect(self, expectation);
    }
    fn verify(&self) -> Result<(), Report> {
        QqMx::verify(self)
    }
    fn blacklist_ip(&self, net: &str, until: Option<SystemTime>) {
        QqMx::blacklist_ip(self, net, until);
    }
    fn unblacklist_ip(&self, net: &str) {
        QqMx::unblacklist_ip(self, net);
    }
    fn blacklist_sender(&self, sender: &str, until: Option<SystemTime>) {
        QqMx::blacklist_sender(self, sender, until);
    }
    fn unblacklist_sender(&self, sender: &str) {
        QqMx::unblacklist_sender(self, sender);
    }
    fn whitelist(&self, recipient: &str, sender: &str) {
        QqMx::whitelist(self, recipient, sender);
    }
    fn complain(&self, ip: IpAddr, sender: Option<&str>) {
        QqMx::complain(self, ip, sender);
    }
    fn set_limit(&self, quota: QuotaName, window: Window, limit: Option<u64>) {
        QqMx::set_limit(self, quota, window, limit);
    }
    fn reset_counters(&self) {
        QqMx::reset_counters(self);
    }
    fn reputation(&self, ip: IpAddr) -> u64 {
        QqMx::reputation(self, ip)
    }
    fn blocks(&self) -> Vec<BlockInfo> {
        QqMx::blocks(self)
    }
    fn explain(&self, ip: IpAddr, at: SystemTime) -> Option<Decision> {
        QqMx::explain(self, ip, at)
    }
    fn refusals(&self, ip: IpAddr) -> Vec<(SystemTime, Decision)> {
        QqMx::refusals(self, ip)
    }
    fn set_faults(&self, faults: Vec<crate::chaos::Fault>) {
        QqMx::set_faults(self, faults);
    }
    fn set_up(&self, up: bool) {
        QqMx::set_up(self, up);
    }
}
