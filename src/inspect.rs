//! The inspection and control API, written once: what the embedded
//! [`QqMx`](crate::QqMx) and a sidecar's `Remote` client (feature `remote`) offer a test.
//!
//! [`Handle`] has the methods (messages, events, stats, waiting, the clock, policy
//! commands, faults, taking the MX down); [`QqMx`](crate::QqMx) and `Remote` both
//! dereference to one, and [`Mx`](crate::Mx) is the trait a test written once for both takes. A
//! handle reaches its server through a [`Backend`]: [`Local`] over an in-process
//! [`Server`], or the HTTP client of `remote` over a sidecar, whose routes (`control`)
//! call the same functions of this module over the sidecar's [`Server`]. So each
//! operation exists once: a policy [`Command`], the [`Refusal`] that explains a client's
//! trouble, the [`MessageFilter`] of a message listing, waiting for messages (over the
//! store's own wait); header unfolding is [`Message::headers`].

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::chaos::Fault;
use crate::config::Config;
use crate::event::{Event, EventKind};
use crate::policy::{BlockInfo, Decision};
use crate::server::Server;
#[cfg(feature = "control")]
use crate::store::Folder;
use crate::store::{Held, InLog, Message, SinceReset, SinceStart, Store};
use crate::units::{IpNet, QuotaName, Window};

/// A change to the policy in force, as a handle asks for it and a route of the control
/// API reads it from its JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Blacklist an IP or range until a time, or for good.
    BlacklistIp {
        net: IpNet,
        until: Option<SystemTime>,
    },
    /// Lift the listings of an IP or range, its random listing and its complaints.
    UnblacklistIp(IpNet),
    /// Blacklist a sender address or domain until a time, or for good.
    BlacklistSender {
        sender: String,
        until: Option<SystemTime>,
    },
    /// Lift the listings of a sender address or domain.
    UnblacklistSender(String),
    /// A recipient whitelists a sender address or domain.
    Whitelist { recipient: String, sender: String },
    /// A QQ user marks mail from an IP (and sender) as spam.
    Complain { ip: IpAddr, sender: Option<String> },
    /// Set (or with `None` remove) one tier of a quota.
    SetLimit {
        quota: QuotaName,
        window: Window,
        limit: Option<u64>,
    },
    /// Forget every quota counter and block.
    ResetCounters,
}

impl Command {
    /// Applies the command to `server`'s policy; false when its shared state (Redis)
    /// could not be reached, so that nothing changed.
    pub(crate) fn apply(self, server: &Server) -> bool {
        server.with_policy(|p, now| {
            self.apply_to(p, now);
            !p.state_unreachable()
        })
    }

    fn apply_to(self, p: &mut crate::policy::Policy, now: std::time::SystemTime) {
        match self {
            Self::BlacklistIp { net, until } => p.blacklist_ip(net, until),
            Self::UnblacklistIp(net) => p.unblacklist_ip(net),
            Self::BlacklistSender { sender, until } => p.blacklist_sender(&sender, until),
            Self::UnblacklistSender(sender) => p.unblacklist_sender(&sender),
            Self::Whitelist { recipient, sender } => p.whitelist(&recipient, &sender),
            Self::Complain { ip, sender } => p.complain(ip, sender.as_deref(), now),
            Self::SetLimit {
                quota,
                window,
                limit,
            } => p.set_limit(quota, window, limit),
            Self::ResetCounters => p.reset_counters(),
        }
    }
}

/// The config in force: the server's, with the quota tiers changed since it was loaded
/// (through `set_limit`), so that what is read back is what is enforced.
pub(crate) fn config_in_force(server: &Server) -> Config {
    let mut config = Config::clone(&server.config());
    config.quotas = server.with_policy(|p, _| p.quotas().clone());
    config
}

/// An IP's reputation now on `server`; 0 means blacklisted.
pub(crate) fn reputation(server: &Server, ip: IpAddr) -> u64 {
    server.with_policy(|p, now| p.reputation(ip, now))
}

/// The quota blocks in force now on `server`.
pub(crate) fn blocks(server: &Server) -> Vec<BlockInfo> {
    server.with_policy(|p, now| p.blocks(now))
}

/// What qqmx has counted: the same from [`QqMx::stats`](crate::QqMx), a sidecar's
/// `Remote::stats` and `GET /api/v1/stats`. Each group says what its counts count and
/// whether a reset of the store clears them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Counted since the server started; a reset keeps them.
    pub since_start: SinceStart,
    /// Counted since the server started or the store was last reset.
    pub since_reset: SinceReset,
    /// What the store holds now; a reset empties it.
    pub held: Held,
    /// Counts over the events held; they shrink as old events are evicted, and a reset
    /// clears them.
    pub in_log: InLog,
    /// Connections open now.
    pub connections_open: usize,
    /// Quota blocks in force now.
    pub blocks: Vec<BlockInfo>,
}

impl Stats {
    /// What `server` has counted.
    pub(crate) fn of(server: &Server) -> Self {
        let store = server.store();
        Self {
            since_start: store.since_start(),
            since_reset: store.since_reset(),
            held: store.held(),
            in_log: store.in_log(),
            connections_open: server.active_connections(),
            blocks: blocks(server),
        }
    }
}

/// A refusal in the event log: the answer to "why was this client refused?".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Refusal {
    /// When, by the server's clock.
    #[serde(with = "crate::clock::rfc3339")]
    pub at: SystemTime,
    /// The session it happened in.
    pub session: u64,
    /// The client refused.
    pub client: IpAddr,
    /// The decision, with its rule and reason: in JSON, its fields beside the ones above,
    /// as a decision event has them.
    #[serde(flatten)]
    pub decision: Decision,
}

impl Refusal {
    /// The refusal `event` records, if it records one.
    pub(crate) fn of(event: &Event) -> Option<Self> {
        match &event.kind {
            EventKind::Decision(d) if !d.is_accept() => Some(Self {
                at: event.at,
                session: event.session,
                client: event.client,
                decision: d.clone(),
            }),
            _ => None,
        }
    }

    /// The last refusal of `ip` at or before `at` still in `store`'s event log.
    pub(crate) fn last(store: &Store, ip: IpAddr, at: SystemTime) -> Option<Self> {
        store
            .find_last(|e| e.client == ip && e.at <= at && Self::of(e).is_some())
            .as_ref()
            .and_then(Self::of)
    }
}

/// Which messages a listing shows; every part that is set must match.
#[cfg(feature = "control")]
#[derive(Debug, Clone, Default)]
pub(crate) struct MessageFilter {
    /// A recipient, matched without regard to case.
    pub to: Option<String>,
    /// The envelope sender, matched without regard to case; empty for the null sender.
    pub from: Option<String>,
    /// The folder it was delivered to.
    pub folder: Option<Folder>,
    /// The MX host it arrived at.
    pub mx: Option<String>,
    /// The client's IP address.
    pub client: Option<IpAddr>,
    /// Received at or after.
    pub since: Option<SystemTime>,
    /// Received at or before.
    pub until: Option<SystemTime>,
}

#[cfg(feature = "control")]
impl MessageFilter {
    /// Whether `m` passes the filter.
    pub(crate) fn matches(&self, m: &Message) -> bool {
        self.to
            .as_ref()
            .is_none_or(|to| m.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(to)))
            && self
                .from
                .as_ref()
                .is_none_or(|from| m.mail_from.eq_ignore_ascii_case(from))
            && self.folder.is_none_or(|folder| m.folder == folder)
            && self.mx.as_ref().is_none_or(|mx| &m.mx == mx)
            && self.client.is_none_or(|ip| m.client == ip)
            && self.since.is_none_or(|t| m.received_at >= t)
            && self.until.is_none_or(|t| m.received_at <= t)
    }
}

/// A future a [`Backend`] returns, boxed so that the trait stays dyn-compatible.
pub(crate) type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The seam between a [`Handle`] and a server: the primitive operations, each done in
/// process ([`Local`]) or over the control API (`remote`). A sidecar's answers fail only
/// when it cannot be reached or refuses; the remote backend panics then, saying which
/// request failed, as a test helper should.
pub(crate) trait Backend: Send + Sync {
    /// The address of the first SMTP listener (`mx1`).
    fn addr(&self) -> SocketAddr;
    /// The time on the server's clock.
    fn now(&self) -> SystemTime;
    /// Moves the server's clock forward.
    fn advance(&self, by: Duration);
    /// The messages held, oldest first, with their source.
    fn messages(&self) -> Vec<Message>;
    /// The events held, oldest first.
    fn events(&self) -> Vec<Event>;
    /// The events held about `client`, oldest first: at least its decisions.
    fn events_of(&self, client: IpAddr) -> Vec<Event>;
    /// Counts of what the store holds and has evicted.
    fn stats(&self) -> Stats;
    /// Waits (real time) until `n` messages were accepted; the messages held then, or
    /// the number accepted when `timeout` passed.
    fn wait_for_messages(&self, n: usize, timeout: Duration) -> Result<Vec<Message>, usize>;
    /// The async form of [`wait_for_messages`](Self::wait_for_messages).
    fn wait_for_messages_async(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Pending<'_, Result<Vec<Message>, usize>>;
    /// Forgets the messages and events held.
    fn clear(&self);
    /// Changes the policy.
    fn command(&self, command: Command);
    /// An IP's reputation now.
    fn reputation(&self, ip: IpAddr) -> u64;
    /// The quota blocks in force now.
    fn blocks(&self) -> Vec<BlockInfo>;
    /// The last refusal of `ip` at or before `at` (see [`Refusal::last`]).
    fn explain(&self, ip: IpAddr, at: SystemTime) -> Option<Refusal>;
    /// Replaces the faults in force.
    fn set_faults(&self, faults: Vec<Fault>);
    /// Takes the first MX host down or brings it back.
    fn set_up(&self, up: bool);
}

/// The backend of a server in this process.
pub(crate) struct Local {
    server: Server,
    addr: SocketAddr,
}

impl Local {
    /// `server`, listening (as `mx1`) on `addr`.
    pub(crate) fn new(server: Server, addr: SocketAddr) -> Self {
        Self { server, addr }
    }
}

impl Backend for Local {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn now(&self) -> SystemTime {
        self.server.clock().now()
    }

    fn advance(&self, by: Duration) {
        self.server.clock().advance(by);
    }

    fn messages(&self) -> Vec<Message> {
        self.server.store().messages()
    }

    fn events(&self) -> Vec<Event> {
        self.server.store().events()
    }

    fn events_of(&self, client: IpAddr) -> Vec<Event> {
        let store = self.server.store();
        store
            .scan_events(0, usize::MAX, usize::MAX, |e| e.client == client)
            .0
    }

    fn stats(&self) -> Stats {
        Stats::of(&self.server)
    }

    fn wait_for_messages(&self, n: usize, timeout: Duration) -> Result<Vec<Message>, usize> {
        self.server.store().wait_for_messages(n, timeout)
    }

    fn wait_for_messages_async(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Pending<'_, Result<Vec<Message>, usize>> {
        Box::pin(self.server.store().wait_for_messages_async(n, timeout))
    }

    fn clear(&self) {
        self.server.store().clear();
    }

    fn command(&self, command: Command) {
        command.apply(&self.server);
    }

    fn reputation(&self, ip: IpAddr) -> u64 {
        reputation(&self.server, ip)
    }

    fn blocks(&self) -> Vec<BlockInfo> {
        blocks(&self.server)
    }

    fn explain(&self, ip: IpAddr, at: SystemTime) -> Option<Refusal> {
        Refusal::last(self.server.store(), ip, at)
    }

    fn set_faults(&self, faults: Vec<Fault>) {
        self.server.set_faults(faults);
    }

    fn set_up(&self, up: bool) {
        self.server.set_mx_up("mx1", up);
    }
}

/// Inspection and control of a qqmx server, in this process or a sidecar: what
/// [`QqMx`](crate::QqMx) and `Remote` (feature `remote`) both give through `Deref`, so
/// `server.messages()` works on either without a trait in scope.
///
/// ```
/// use std::net::IpAddr;
/// use std::time::Duration;
/// use qqmx::QqMx;
/// use qqmx::units::{QuotaName, Window};
///
/// let server = QqMx::start();
/// let client = IpAddr::from([127, 0, 0, 3]);
/// server.set_limit(QuotaName::IpMessages, Window::Minute, Some(5));
/// server.complain(client, None);
/// assert_eq!(server.reputation(client), 90);
/// server.blacklist_ip(client, None);
/// server.advance(Duration::from_secs(60));
/// assert!(server.messages().is_empty() && server.blocks().is_empty());
/// ```
///
/// The methods are test helpers: against a sidecar they panic when it cannot be reached
/// or answers with an error, saying which request failed and why.
pub struct Handle {
    backend: Arc<dyn Backend>,
}

impl Handle {
    /// A handle over `backend`.
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    /// The seam itself, for what the handles add (expectations, resets).
    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The address of the first SMTP listener (`mx1`): where the code under test sends.
    /// A sidecar reports it, so one listening on `0.0.0.0` or behind a port mapping may
    /// be reached at another.
    pub fn addr(&self) -> SocketAddr {
        self.backend.addr()
    }

    /// The time on the server's clock (a sidecar's to the microsecond).
    pub fn now(&self) -> SystemTime {
        self.backend.now()
    }

    /// Moves the server's clock forward (a sidecar's to the millisecond; it must run on a
    /// manual clock).
    pub fn advance(&self, by: Duration) {
        self.backend.advance(by);
    }

    /// The accepted messages still held, oldest first, with their raw source.
    pub fn messages(&self) -> Vec<Message> {
        self.backend.messages()
    }

    /// The events still held, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.backend.events()
    }

    /// What qqmx has counted: since start, since the last reset, held now, over the
    /// event log.
    pub fn stats(&self) -> Stats {
        self.backend.stats()
    }

    /// Waits (real time) until `n` messages have been accepted since start or the last
    /// reset, and returns the messages held then.
    ///
    /// # Errors
    ///
    /// [`WaitError`] with the number accepted when `timeout` passes first.
    pub fn wait_for_messages(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Message>, WaitError> {
        self.backend
            .wait_for_messages(n, timeout)
            .map_err(|got| WaitError::new(n, got, timeout))
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
        self.backend
            .wait_for_messages_async(n, timeout)
            .await
            .map_err(|got| WaitError::new(n, got, timeout))
    }

    /// Blacklists an IP (`IpAddr` converts) or a CIDR range until `until`, or for good.
    ///
    /// ```
    /// # let server = qqmx::QqMx::start();
    /// use qqmx::units::IpNet;
    /// let range: IpNet = "127.0.1.0/24".parse().expect("a CIDR range");
    /// server.blacklist_ip(range, Some(server.now() + std::time::Duration::from_secs(3600)));
    /// server.unblacklist_ip(range);
    /// ```
    pub fn blacklist_ip(&self, net: impl Into<IpNet>, until: Option<SystemTime>) {
        self.backend.command(Command::BlacklistIp {
            net: net.into(),
            until,
        });
    }

    /// Lifts the listings of exactly this IP or range, and the random listing and the
    /// complaints of the IPs in it.
    pub fn unblacklist_ip(&self, net: impl Into<IpNet>) {
        self.backend.command(Command::UnblacklistIp(net.into()));
    }

    /// Blacklists a sender address (`a@example.org`) or domain (`example.org`) until
    /// `until`, or for good.
    pub fn blacklist_sender(&self, sender: &str, until: Option<SystemTime>) {
        self.backend.command(Command::BlacklistSender {
            sender: sender.to_owned(),
            until,
        });
    }

    /// Lifts the listings of a sender address or domain.
    pub fn unblacklist_sender(&self, sender: &str) {
        self.backend
            .command(Command::UnblacklistSender(sender.to_owned()));
    }

    /// `recipient` whitelists a sender address or domain (QQ's feedback form): its mail
    /// to them passes blacklists until a complaint about that sender.
    pub fn whitelist(&self, recipient: &str, sender: &str) {
        self.backend.command(Command::Whitelist {
            recipient: recipient.to_owned(),
            sender: sender.to_owned(),
        });
    }

    /// A QQ user marks mail from `ip` (and `sender`) as spam: the IP loses reputation.
    pub fn complain(&self, ip: IpAddr, sender: Option<&str>) {
        self.backend.command(Command::Complain {
            ip,
            sender: sender.map(str::to_owned),
        });
    }

    /// Sets (or with `None` removes) one tier of a quota.
    pub fn set_limit(&self, quota: QuotaName, window: Window, limit: Option<u64>) {
        self.backend.command(Command::SetLimit {
            quota,
            window,
            limit,
        });
    }

    /// Forgets every quota counter and block.
    pub fn reset_counters(&self) {
        self.backend.command(Command::ResetCounters);
    }

    /// An IP's reputation now; 0 means blacklisted.
    pub fn reputation(&self, ip: IpAddr) -> u64 {
        self.backend.reputation(ip)
    }

    /// The quota blocks in force now.
    pub fn blocks(&self) -> Vec<BlockInfo> {
        self.backend.blocks()
    }

    /// Why `ip` was refused: the last refusal of that client at or before `at` (by the
    /// server's clock; see [`now`](Self::now)).
    ///
    /// ```
    /// # let server = qqmx::QqMx::start();
    /// assert!(server.explain([127, 0, 0, 3].into(), server.now()).is_none());
    /// ```
    pub fn explain(&self, ip: IpAddr, at: SystemTime) -> Option<Decision> {
        self.backend.explain(ip, at).map(|r| r.decision)
    }

    /// Every refusal of `ip` still in the event log, with its time, oldest first.
    pub fn refusals(&self, ip: IpAddr) -> Vec<(SystemTime, Decision)> {
        self.backend
            .events_of(ip)
            .iter()
            .filter(|e| e.client == ip)
            .filter_map(Refusal::of)
            .map(|r| (r.at, r.decision))
            .collect()
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
    pub fn set_faults(&self, faults: Vec<Fault>) {
        self.backend.set_faults(faults);
    }

    /// Takes the first MX host (`mx1`) down (its port refuses connections; open sessions
    /// go on) or brings it back.
    pub fn set_up(&self, up: bool) {
        self.backend.set_up(up);
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("addr", &self.addr())
            .finish_non_exhaustive()
    }
}

/// Waiting for messages took longer than allowed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "waited {timeout:?} for {wanted} accepted {}, got {got}",
    if *wanted == 1 { "message" } else { "messages" }
)]
pub struct WaitError {
    /// How many were awaited.
    pub wanted: usize,
    /// How many had arrived.
    pub got: usize,
    /// How long it waited.
    pub timeout: Duration,
}

impl WaitError {
    fn new(wanted: usize, got: usize, timeout: Duration) -> Self {
        Self {
            wanted,
            got,
            timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClockMode, Config};

    fn message(rcpt: &str, from: &str) -> Message {
        let mut m: Message = serde_json::from_value(serde_json::json!({
            "id": 1, "session": 1, "mx": "mx1", "received_at": "2025-06-02T01:00:00Z",
            "client": "127.0.0.1", "client_port": 1, "helo": "h", "mail_from": from, "rcpt_to": [rcpt],
            "tls": false, "folder": "inbox", "auth": null,
        }))
        .expect("a message");
        m.raw = Arc::from(&b"Subject: x\r\n\r\n"[..]);
        m
    }

    #[cfg(feature = "control")]
    #[test]
    fn a_filter_matches_addresses_without_regard_to_case() {
        let m = message("A@qq.com", "News@example.org");
        let filter = |to: &str, from: &str| MessageFilter {
            to: Some(to.into()),
            from: Some(from.into()),
            ..MessageFilter::default()
        };
        assert!(filter("a@QQ.com", "news@example.ORG").matches(&m));
        assert!(!filter("b@qq.com", "news@example.org").matches(&m));
        assert!(MessageFilter::default().matches(&m));
        let inbox = MessageFilter {
            folder: Some(Folder::Junk),
            ..MessageFilter::default()
        };
        assert!(!inbox.matches(&m));
    }

    #[test]
    fn commands_reach_the_policy() {
        let config = Config::default();
        let clock = config.make_clock(ClockMode::Manual);
        let server = Server::new(config, clock).expect("server");
        let ip = IpAddr::from([127, 0, 0, 3]);
        Command::Complain { ip, sender: None }.apply(&server);
        assert_eq!(reputation(&server, ip), 90);
        Command::BlacklistIp {
            net: ip.into(),
            until: None,
        }
        .apply(&server);
        Command::UnblacklistIp(ip.into()).apply(&server);
        assert_eq!(reputation(&server, ip), 100, "the complaint went too");
        assert!(Refusal::last(server.store(), ip, server.clock().now()).is_none());
    }
}
