//! The embedded server for tests: one line starts a qqmx on `127.0.0.1:0`.
//!
//! [`QqMx`] runs a [`Server`] on its own thread with its own tokio runtime, so it works
//! from a plain `#[test]` and from any async runtime, and every test gets its own port,
//! clock and store. The handle reads the store, moves the clock, waits for messages and
//! checks [`Expectation`]s when it is dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::config::{ClockMode, Config};
use crate::policy::{BlockInfo, Decision, Policy};
use crate::reply::{Generation, ReplyKind};
use crate::server::{Server, StartError};
use crate::store::{Event, EventKind, Message, Store, StoreStats};
use crate::units::{IpNet, QuotaName, Window};

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

    /// Checks the expectations now.
    ///
    /// # Errors
    ///
    /// A [`Report`] of the ones that failed.
    pub fn verify(&self) -> Result<(), Report> {
        let stats = self.stats();
        let counts = self.store().reply_counts();
        check(
            &self.lock_expectations(),
            stats.accepted_total,
            &counts,
            self.config().seed,
        )
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
    /// use qqmx::units::Stage;
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

/// Checks `expectations` against what a server saw: how many messages it accepted and
/// how many replies of each kind its event log holds.
pub(crate) fn check(
    expectations: &[Expectation],
    accepted: u64,
    counts: &BTreeMap<ReplyKind, usize>,
    seed: u64,
) -> Result<(), Report> {
    let failures: Vec<String> = expectations
        .iter()
        .filter_map(|e| {
            let got = match e.what {
                What::Accepted => usize::try_from(accepted).unwrap_or(usize::MAX),
                What::Replies(kind) => counts.get(&kind).copied().unwrap_or(0),
            };
            (!e.times.contains(got)).then(|| e.failure(got))
        })
        .collect();
    if failures.is_empty() {
        return Ok(());
    }
    Err(Report {
        failures,
        total: expectations.len(),
        seed,
        replies: counts
            .iter()
            .map(|(kind, n)| format!("{kind} ×{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        accepted,
    })
}

fn parse_net(net: &str) -> IpNet {
    net.parse().unwrap_or_else(|e| panic!("qqmx: {e}"))
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

/// Expectations that were not met, with what the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    failures: Vec<String>,
    total: usize,
    seed: u64,
    replies: String,
    accepted: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "qqmx: {} of {} expectations not met (seed {}):",
            self.failures.len(),
            self.total,
            self.seed
        )?;
        for failure in &self.failures {
            writeln!(f, "  - {failure}")?;
        }
        let replies = if self.replies.is_empty() {
            "none"
        } else {
            &self.replies
        };
        write!(
            f,
            "qqmx accepted {} messages; replies sent: {replies}",
            self.accepted
        )
    }
}

impl std::error::Error for Report {}

impl Report {
    /// The same report, naming `seed` as the seed in force.
    #[cfg(feature = "remote")]
    pub(crate) fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Something the test expects the server to have seen by the end.
///
/// ```
/// use qqmx::{Expectation, ReplyKind};
///
/// let exactly_three = Expectation::accepted(3);
/// let some_unknown = Expectation::replies(ReplyKind::MailboxNotFound, 1..)
///     .named("the list has a stale address");
/// # let _ = (exactly_three, some_unknown);
/// ```
#[derive(Debug, Clone)]
#[must_use = "an expectation does nothing until passed to `QqMx::expect`"]
pub struct Expectation {
    what: What,
    times: Times,
    name: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum What {
    Accepted,
    Replies(ReplyKind),
}

impl Expectation {
    /// The number of messages accepted (answered 250 at end of data).
    pub fn accepted(times: impl Into<Times>) -> Self {
        Self {
            what: What::Accepted,
            times: times.into(),
            name: None,
        }
    }

    /// The number of replies of `kind` sent.
    pub fn replies(kind: ReplyKind, times: impl Into<Times>) -> Self {
        Self {
            what: What::Replies(kind),
            times: times.into(),
            name: None,
        }
    }

    /// Names the expectation in the report.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    fn failure(&self, got: usize) -> String {
        let what = match self.what {
            What::Accepted => "accepted messages".to_owned(),
            What::Replies(kind) => format!("`{kind}` replies"),
        };
        let name = self
            .name
            .as_ref()
            .map_or_else(String::new, |n| format!("{n:?}: "));
        format!("{name}expected {} {what}, got {got}", self.times)
    }
}

/// How many times something may happen: a number or a range.
///
/// ```
/// use qqmx::Times;
/// assert!(Times::from(2).contains(2));
/// assert!(Times::from(1..).contains(50));
/// assert!(!Times::from(..=3).contains(4));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    min: usize,
    max: Option<usize>,
}

impl Times {
    /// Whether `n` is allowed.
    pub fn contains(&self, n: usize) -> bool {
        n >= self.min && self.max.is_none_or(|max| n <= max)
    }

    fn from_bounds(range: impl RangeBounds<usize>) -> Self {
        let min = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n + 1,
            Bound::Unbounded => 0,
        };
        let max = match range.end_bound() {
            Bound::Included(&n) => Some(n),
            Bound::Excluded(&n) => Some(n.saturating_sub(1)),
            Bound::Unbounded => None,
        };
        Self { min, max }
    }
}

impl fmt::Display for Times {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.max {
            Some(max) if max == self.min => write!(f, "exactly {max}"),
            Some(max) if self.min == 0 => write!(f, "at most {max}"),
            Some(max) => write!(f, "between {} and {max}", self.min),
            None => write!(f, "at least {}", self.min),
        }
    }
}

impl From<usize> for Times {
    fn from(n: usize) -> Self {
        Self {
            min: n,
            max: Some(n),
        }
    }
}

impl From<u64> for Times {
    fn from(n: u64) -> Self {
        Self::from(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

impl From<i32> for Times {
    /// Integer literals; negative numbers mean zero.
    fn from(n: i32) -> Self {
        Self::from(usize::try_from(n).unwrap_or(0))
    }
}

macro_rules! times_from_range {
    ($($range:ty),*) => {$(
        impl From<$range> for Times {
            fn from(range: $range) -> Self {
                Self::from_bounds(range)
            }
        }
    )*};
}

times_from_range!(
    std::ops::Range<usize>,
    std::ops::RangeInclusive<usize>,
    std::ops::RangeFrom<usize>,
    std::ops::RangeTo<usize>,
    std::ops::RangeToInclusive<usize>
);

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
    /// Checks the expectations now.
    ///
    /// # Errors
    ///
    /// A [`Report`] of those that failed.
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
