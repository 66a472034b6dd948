//! The SMTP session: QQ's side of one conversation, over any async stream.
//!
//! [`serve`] greets the client, then alternates between reading bytes and answering
//! every complete command in them, in order, so pipelined commands get correct replies
//! although PIPELINING is never advertised (QQ does not). Commands are framed here (the
//! line-length limit is ours, not smtp-proto's) and each complete line is parsed on its
//! own by smtp-proto's `Request::parse`, so nothing of a bad line is carried over to the
//! next; a line the parser finds unfinished is a syntax error. Message data goes through
//! a strict scanner of our own (`body`): only `<CRLF>.<CRLF>` ends it, so no look-alike
//! can smuggle a second transaction. The body never grows past the SIZE limit (which is
//! inclusive) nor the server's in-flight byte budget; past either, the rest of the
//! message is read and thrown away, and the end of data gets `552` or `451`.
//!
//! At each stage the session asks `policy` for a decision, records it in the `store`,
//! and renders the verdict through the `reply` catalogue; it writes no text of its own.
//! STARTTLS ends the drive on the plain stream; [`serve`] runs the handshake and drives
//! the same session again over TLS. Which of the two a drive runs over is a type
//! ([`channel`]), so that STARTTLS cannot ask for an upgrade inside TLS.
//!
//! Idle, command and session timeouts and the minimum data rate are real time (they are
//! about sockets), unlike every timestamp, which comes from the server's
//! [`Clock`](crate::Clock). Every byte resets the idle timeout, but a command line must
//! still arrive within `limits.command_timeout` of the reply before it, and message data
//! at `limits.min_data_rate`, so that a client trickling bytes cannot hold its slot for
//! the whole session.
//!
//! The parts: `input` frames what arrives (commands, over-long lines, message data),
//! `command` answers each command, `data` stores what the data brought, `verdict` asks
//! the policy and renders replies, `drive` reads and writes the stream under the
//! timeouts, `channel` upgrades it to TLS, `fault` carries out chaos faults and paces a
//! slow link, and `body` scans message data. Tests in memory, over a `tokio::io::duplex`
//! pipe, are in `tests`.

mod body;
mod channel;
mod command;
mod data;
mod drive;
mod fault;
mod input;
mod parse;
#[cfg(test)]
mod tests;
mod verdict;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

use crate::auth::Authenticator;
use crate::chaos::Faults;
use crate::clock::Clock;
use crate::config::Config;
use crate::event::{CloseReason, EventKind};
use crate::policy::{Decision, Policy, SpfCheck};
use crate::reply::{Catalogue, ReplyKind};
use crate::store::{EventRef, Store};
use crate::tls::Acceptors;
use body::Body;
pub(crate) use body::Inflight;
use channel::Plain;
use fault::FaultState;
use input::Mode;

/// Everything sessions of one server share: built from one config, and replaced as a
/// whole when the server loads another (sessions already open keep the one they began
/// with). The store and the clock outlive every replacement.
pub(crate) struct Engine {
    pub config: Arc<Config>,
    /// The catalogue of each listener, by MX name.
    pub catalogues: BTreeMap<String, Arc<Catalogue>>,
    /// The catalogue of a listener without a name in the config.
    pub catalogue: Arc<Catalogue>,
    /// SPF, DKIM and DMARC, unless `auth.enabled` is off. A command that waits for these
    /// checks holds a handle on them.
    pub auth: Option<Arc<Authenticator>>,
    pub policy: Mutex<Policy>,
    /// Whether the policy's state is shared (in Redis): then each stage's round trip is
    /// made without the policy's lock, while the session waits (see [`Pending`]).
    pub shared: bool,
    pub store: Store,
    pub clock: Clock,
    /// STARTTLS, unless TLS is off: each listener's certificate.
    pub tls: Option<Acceptors>,
    /// Faults in force (chaos scenarios); kept across config reloads.
    pub faults: Arc<Mutex<Faults>>,
    /// Message data held by all sessions; kept across config reloads.
    pub inflight: Arc<Inflight>,
}

impl Engine {
    /// The catalogue of the listener called `mx`.
    pub(crate) fn catalogue(&self, mx: &str) -> Arc<Catalogue> {
        self.catalogues.get(mx).unwrap_or(&self.catalogue).clone()
    }

    /// The policy, locked. It is a plain value: a poisoned lock still guards valid state.
    pub(crate) fn policy(&self) -> MutexGuard<'_, Policy> {
        self.policy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The faults, locked.
    pub(crate) fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A client's connection: a stream that can also be reset.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin + Send {
    /// Makes the coming close a reset (TCP RST), for the `reset` fault.
    fn reset_on_close(&self) {}
}

impl Conn for tokio::net::TcpStream {
    fn reset_on_close(&self) {
        let _ = self.set_zero_linger();
    }
}

impl<S: Conn> Conn for tokio_rustls::server::TlsStream<S> {
    fn reset_on_close(&self) {
        self.get_ref().0.reset_on_close();
    }
}

/// An in-memory connection (tests, fuzzing): a reset is a plain close.
impl Conn for tokio::io::DuplexStream {}

/// Tells the policy that a connection closed, however the session ends.
struct Open {
    engine: Arc<Engine>,
    ip: std::net::IpAddr,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.engine.policy().disconnect(self.ip);
    }
}

/// Read this much at a time.
const READ_CHUNK: usize = 16 * 1024;
/// A closing reply gets this long to be written.
const LAST_WORDS: Duration = Duration::from_secs(5);

/// An open mail transaction.
#[derive(Debug)]
struct Transaction {
    from: String,
    rcpts: Vec<String>,
    smtputf8: bool,
    /// The SIZE the client announced (0 if none).
    size: u64,
    /// SPF for `from`, when authentication is on.
    spf: Option<SpfCheck>,
}

/// A complete message and the transaction it ends.
#[derive(Debug)]
struct Submission {
    tx: Transaction,
    body: Body,
}

/// A command whose answer waits: for DNS-based checks (when authentication is on, each
/// holds the checks it waits for), or for the round trip of its stage to a shared store.
enum Pending {
    /// HELO or EHLO, waiting for its stage's round trip.
    Helo { host: String, kind: ReplyKind },
    /// MAIL, waiting for SPF (and the PTR record, when one is required).
    Mail {
        auth: Option<Arc<Authenticator>>,
        from: String,
        size: u64,
        smtputf8: bool,
    },
    /// RCPT, waiting for its stage's round trip.
    Rcpt { address: String },
    /// DATA, waiting for its stage's round trip.
    Data,
    /// The end of data, waiting for DKIM and DMARC.
    Message {
        auth: Option<Arc<Authenticator>>,
        submission: Submission,
    },
}

/// One client's conversation.
pub(crate) struct Session {
    engine: Arc<Engine>,
    /// The replies of the listener the client reached.
    catalogue: Arc<Catalogue>,
    /// That listener's MX name.
    mx: Arc<str>,
    id: u64,
    peer: SocketAddr,
    rng: StdRng,
    helo: Option<String>,
    /// TLS is on: for the replies (STARTTLS is no longer offered) and the stored messages.
    tls: bool,
    /// The transaction between MAIL and DATA; message data carries it on from there.
    tx: Option<Transaction>,
    commands: usize,
    input: Vec<u8>,
    output: Vec<u8>,
    /// The trace headers of the message being stored; kept to be reused.
    headers: Vec<u8>,
    /// The reply being rendered; kept to be reused.
    reply_text: String,
    mode: Mode,
    deadline: Instant,
    /// Refusals decided at connect and answered at a later stage.
    deferred: Vec<Decision>,
    /// A command waiting for its checks.
    pending: Option<Pending>,
    /// Chaos faults: the one due, the message it holds, the link speed.
    fault: FaultState,
    /// Something was answered since the last read: the next command's time starts.
    answered: bool,
    /// The number of the mail transaction events belong to now (see [`Event`]).
    ///
    /// [`Event`]: crate::event::Event
    transaction: Option<u32>,
    /// Mail transactions begun.
    transactions: u32,
    /// Since when the next command line has been awaited (`limits.command_timeout`).
    awaiting_since: Instant,
    /// While message data streams in under `limits.min_data_rate`: when it will have
    /// fallen too far behind, unless more arrives.
    data_deadline: Option<Instant>,
}

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Listener<'a> {
    /// The simulated MX host's name (`mx1`).
    pub mx: &'a str,
    /// The address the client connected to.
    pub local: SocketAddr,
}

/// Serves one connection from greeting to close.
pub(crate) async fn serve<S>(
    engine: Arc<Engine>,
    mut stream: S,
    peer: SocketAddr,
    listener: Listener<'_>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Conn,
{
    let mut session = Session::new(engine.clone(), peer, listener.mx);
    session.record(EventKind::Connected {
        local: listener.local,
        mx: listener.mx.to_owned(),
    });
    info!(session = session.id, %peer, "connected");
    let connect = verdict::connect(&engine, peer.ip()).await;
    let _open = Open {
        engine,
        ip: peer.ip(),
    };
    session.deferred = connect.deferred;
    if !session.decide(connect.decision) {
        // Refused at connect: the refusal replaces the greeting and the session ends.
        let _ = session.flush(&mut stream).await;
        session.closed(CloseReason::RefusedAtConnect);
        let _ = tokio::time::timeout(LAST_WORDS, stream.shutdown()).await;
        return;
    }
    session.measure_link();
    if let Some(end) = session.fault_at_connect(&mut stream, &mut shutdown).await {
        session.end(&mut stream, end).await;
        return;
    }
    session.reply(ReplyKind::Greeting);
    if let Some(upgrade) = session.drive::<_, Plain>(&mut stream, &mut shutdown).await {
        session.upgrade(stream, upgrade, &mut shutdown).await;
    }
}

/// Answers a connection over the connection cap with `421` and closes it, without
/// waiting: the reply fits in the empty send buffer of a new connection, so it is
/// written at once or not at all.
pub(crate) fn turn_away(
    engine: Arc<Engine>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    listener: Listener<'_>,
) {
    let mut session = Session::new(engine, peer, listener.mx);
    session.record(EventKind::Connected {
        local: listener.local,
        mx: listener.mx.to_owned(),
    });
    session.reply(ReplyKind::TooManyConnections);
    session.closed(CloseReason::TooManyConnections);
    if let Ok(mut stream) = stream.into_std() {
        let _ = std::io::Write::write(&mut stream, &session.output);
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
}

impl Session {
    fn new(engine: Arc<Engine>, peer: SocketAddr, mx: &str) -> Self {
        let catalogue = engine.catalogue(mx);
        let id = engine.store.next_session();
        let seed = engine.config.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let deadline = Instant::now() + engine.config.limits.session_timeout;
        Self {
            catalogue,
            mx: Arc::from(mx),
            engine,
            id,
            peer,
            rng: StdRng::seed_from_u64(seed),
            helo: None,
            tls: false,
            tx: None,
            commands: 0,
            input: Vec::with_capacity(READ_CHUNK),
            output: Vec::with_capacity(1024),
            headers: Vec::new(),
            reply_text: String::new(),
            mode: Mode::Commands,
            deadline,
            deferred: Vec::new(),
            pending: None,
            fault: FaultState::default(),
            answered: false,
            transaction: None,
            transactions: 0,
            awaiting_since: Instant::now(),
            data_deadline: None,
        }
    }

    /// Records the end of the session; done before the socket closes, so that a client
    /// that has seen the close finds the event in the log.
    fn closed(&self, reason: CloseReason) {
        self.record(EventKind::Closed { reason });
        info!(session = self.id, peer = %self.peer, %reason, "closed");
    }

    /// A `MAIL` command begins the session's next mail transaction.
    fn begin_transaction(&mut self) {
        self.transactions += 1;
        self.transaction = Some(self.transactions);
    }

    /// The open mail transaction, wherever it is: between MAIL and DATA, in the message
    /// data being read, or with a complete message held by a fault or waiting for checks.
    fn open_transaction(&self) -> Option<&Transaction> {
        if let Some(tx) = &self.tx {
            return Some(tx);
        }
        if let Mode::Data(reading) = &self.mode {
            return Some(&reading.tx);
        }
        if let Some(Pending::Message { submission, .. }) = &self.pending {
            return Some(&submission.tx);
        }
        self.fault.held().map(|submission| &submission.tx)
    }

    fn record(&self, kind: EventKind) {
        self.engine
            .store
            .record_in(self.id, self.peer.ip(), self.transaction, kind);
    }

    /// Records an event from borrowed parts.
    fn record_ref(&self, event: EventRef<'_>) {
        self.engine
            .store
            .record_ref(self.id, self.peer.ip(), self.transaction, event);
    }
}

/// How long `bytes` take at `speed` bytes per second.
fn transfer_time(bytes: usize, speed: u64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / speed.max(1) as f64)
}
