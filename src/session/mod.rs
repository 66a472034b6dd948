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
//! STARTTLS ends [`Session::drive`] on the plain stream; [`serve`] runs the handshake and
//! drives the same session again over TLS.
//!
//! Idle, command and session timeouts and the minimum data rate are real time (they are
//! about sockets), unlike every timestamp, which comes from the server's
//! [`Clock`](crate::Clock). Every byte resets the idle timeout, but a command line must
//! still arrive within `limits.command_timeout` of the reply before it, and message data
//! at `limits.min_data_rate`, so that a client trickling bytes cannot hold its slot for
//! the whole session.

mod body;
mod command;
mod data;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use crate::auth::Authenticator;
use crate::chaos::{Action as FaultAction, FaultKind, Faults};
use crate::clock::Clock;
use crate::config::Config;
use crate::policy::{Decision, Facts, Policy, SpfCheck, Verdict};
use crate::reply::{Catalogue, Context, ReplyKind};
use crate::store::{EventKind, Store};
use crate::units::Stage;
pub(crate) use body::Inflight;
use body::{Body, Incoming};

/// Everything sessions of one server share: built from one config, and replaced as a
/// whole when the server loads another (sessions already open keep the one they began
/// with). The store and the clock outlive every replacement.
pub(crate) struct Shared {
    pub config: Arc<Config>,
    /// The catalogue of each listener, by MX name.
    pub catalogues: BTreeMap<String, Arc<Catalogue>>,
    /// The catalogue of a listener without a name in the config.
    pub catalogue: Arc<Catalogue>,
    /// SPF, DKIM and DMARC, unless `auth.enabled` is off.
    pub auth: Option<Authenticator>,
    pub policy: Mutex<Policy>,
    pub store: Store,
    pub clock: Clock,
    pub tls: Option<TlsAcceptor>,
    /// Faults in force (chaos scenarios); kept across config reloads.
    pub faults: Arc<Mutex<Faults>>,
    /// Message data held by all sessions; kept across config reloads.
    pub inflight: Arc<Inflight>,
}

impl Shared {
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

/// Tells the policy that a connection closed, however the session ends.
struct Open {
    shared: Arc<Shared>,
    ip: std::net::IpAddr,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.shared.policy().disconnect(self.ip);
    }
}

/// Read this much at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Command lines are kept in the event log up to this many bytes.
const LOGGED_LINE: usize = 512;
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

/// A command whose answer waits for DNS-based checks, which are asynchronous.
enum Pending {
    /// MAIL, waiting for SPF (and the PTR record, when one is required).
    Mail {
        from: String,
        size: u64,
        smtputf8: bool,
    },
    /// The end of data, waiting for DKIM and DMARC.
    Message { body: Body },
}

/// What the session is reading.
enum Mode {
    Commands,
    /// The rest of an over-long line, to be thrown away.
    SkipLine,
    /// Message data, up to the end-of-data line.
    Data(Incoming),
}

/// What to do after answering what has been read.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Continue,
    /// Run the pending checks, then go on.
    Authenticate,
    /// Carry out the fault in `Session::fault`.
    Fault,
    StartTls,
    Close(&'static str),
}

/// How [`Session::drive`] ended.
#[derive(Clone, Copy)]
enum Outcome {
    StartTls,
    Closed(&'static str),
    /// Close with a TCP reset.
    Reset,
}

/// One client's conversation.
pub(crate) struct Session {
    shared: Arc<Shared>,
    /// The replies of the listener the client reached.
    catalogue: Arc<Catalogue>,
    /// That listener's MX name.
    mx: Arc<str>,
    id: u64,
    peer: SocketAddr,
    rng: StdRng,
    helo: Option<String>,
    tls: bool,
    tx: Option<Transaction>,
    commands: usize,
    input: Vec<u8>,
    output: Vec<u8>,
    mode: Mode,
    deadline: Instant,
    /// Refusals decided at connect and answered at a later stage.
    deferred: Vec<Decision>,
    /// A command waiting for its checks.
    pending: Option<Pending>,
    /// A fault to carry out before the next reply.
    fault: Option<(FaultKind, FaultAction)>,
    /// The fault before the next command (or end of data) has been carried out.
    fault_passed: bool,
    /// A complete message held back by a fault at the end of data.
    held: Option<Body>,
    /// Bytes per second of a slow link.
    link_speed: Option<u64>,
    /// Something was answered since the last read: the next command's time starts.
    answered: bool,
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
    shared: Arc<Shared>,
    mut stream: S,
    peer: SocketAddr,
    listener: Listener<'_>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Conn,
{
    let mut session = Session::new(shared.clone(), peer, listener.mx);
    session.record(EventKind::Connected {
        local: listener.local,
        mx: listener.mx.to_owned(),
    });
    info!(session = session.id, %peer, "connected");
    let connect = shared.policy().connect(peer.ip(), shared.clock.now());
    let _open = Open {
        shared,
        ip: peer.ip(),
    };
    session.deferred = connect.deferred;
    if !session.decide(connect.decision) {
        // Refused at connect: the refusal replaces the greeting and the session ends.
        let _ = session.flush(&mut stream).await;
        session.closed("refused at connect");
        let _ = tokio::time::timeout(LAST_WORDS, stream.shutdown()).await;
        return;
    }
    session.link_speed = session.shared.faults().link_speed(listener.mx);
    if let Some(fault) = session.fault_before(Stage::Connect) {
        session.fault = Some(fault);
        match session.carry_out_fault(&mut stream, &mut shutdown).await {
            None => {}
            Some(outcome) => {
                session.end(&mut stream, outcome).await;
                return;
            }
        }
    }
    session.reply(ReplyKind::Greeting);
    if let Outcome::StartTls = session.drive(&mut stream, &mut shutdown).await {
        session.upgrade(stream, &mut shutdown).await;
    }
}

/// Answers a connection over the connection cap with `421` and closes it, without
/// waiting: the reply fits in the empty send buffer of a new connection, so it is
/// written at once or not at all.
pub(crate) fn turn_away(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    listener: Listener<'_>,
) {
    let mut session = Session::new(shared, peer, listener.mx);
    session.record(EventKind::Connected {
        local: listener.local,
        mx: listener.mx.to_owned(),
    });
    session.reply(ReplyKind::TooManyConnections);
    session.closed("too many connections");
    if let Ok(mut stream) = stream.into_std() {
        let _ = std::io::Write::write(&mut stream, &session.output);
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
}

impl Session {
    fn new(shared: Arc<Shared>, peer: SocketAddr, mx: &str) -> Self {
        let catalogue = shared.catalogue(mx);
        let id = shared.store.next_session();
        let seed = shared.config.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let deadline = Instant::now() + shared.config.limits.session_timeout;
        Self {
            catalogue,
            mx: Arc::from(mx),
            shared,
            id,
            peer,
            rng: StdRng::seed_from_u64(seed),
            helo: None,
            tls: false,
            tx: None,
            commands: 0,
            input: Vec::with_capacity(READ_CHUNK),
            output: Vec::with_capacity(1024),
            mode: Mode::Commands,
            deadline,
            deferred: Vec::new(),
            pending: None,
            fault: None,
            fault_passed: false,
            held: None,
            link_speed: None,
            answered: false,
            awaiting_since: Instant::now(),
            data_deadline: None,
        }
    }

    async fn upgrade<S>(&mut self, mut stream: S, shutdown: &mut watch::Receiver<bool>)
    where
        S: Conn,
    {
        if self.shared.faults().tls_fails(&self.mx) {
            self.record(EventKind::Fault {
                fault: FaultKind::TlsFailure,
                stage: None,
            });
            // The client's hello, answered with a fatal handshake_failure alert, as by a
            // server that cannot agree on anything, then the close.
            let idle = self.shared.config.limits.idle_timeout;
            let mut hello = [0u8; 4096];
            let _ = tokio::time::timeout(idle, stream.read(&mut hello)).await;
            let _ = tokio::time::timeout(LAST_WORDS, stream.write_all(&HANDSHAKE_FAILURE)).await;
            self.closed("fault: tls_failure");
            let _ = tokio::time::timeout(LAST_WORDS, stream.shutdown()).await;
            return;
        }
        let acceptor = self
            .shared
            .tls
            .clone()
            .expect("STARTTLS is only accepted when TLS is configured");
        let idle = self.shared.config.limits.idle_timeout;
        let handshake = tokio::time::timeout(idle, acceptor.accept(stream)).await;
        match handshake {
            Ok(Ok(mut tls)) => {
                self.awaiting_since = Instant::now();
                self.tls = true;
                self.helo = None;
                self.tx = None;
                self.record(EventKind::TlsStarted);
                if let Outcome::StartTls = self.drive(&mut tls, shutdown).await {
                    unreachable!("STARTTLS is refused inside TLS");
                }
            }
            Ok(Err(e)) => {
                self.record(EventKind::TlsFailed {
                    error: e.to_string(),
                });
                self.closed("TLS handshake failed");
            }
            Err(_) => {
                self.record(EventKind::TlsFailed {
                    error: "handshake timed out".into(),
                });
                self.closed("TLS handshake timed out");
            }
        }
    }

    /// Records the end of the session; done before the socket closes, so that a client
    /// that has seen the close finds the event in the log.
    fn closed(&self, reason: &'static str) {
        self.record(EventKind::Closed {
            reason: reason.to_owned(),
        });
        info!(session = self.id, peer = %self.peer, reason, "closed");
    }

    /// Reads, answers and writes until the session ends or switches to TLS; records the
    /// end and closes the stream unless it switches.
    async fn drive<S>(&mut self, stream: &mut S, shutdown: &mut watch::Receiver<bool>) -> Outcome
    where
        S: Conn,
    {
        let outcome = self.converse(stream, shutdown).await;
        if let Outcome::Closed(_) | Outcome::Reset = outcome {
            self.end(stream, outcome).await;
        }
        outcome
    }

    /// Records the end and closes the stream, with a reset for [`Outcome::Reset`].
    async fn end<S: Conn>(&mut self, stream: &mut S, outcome: Outcome) {
        match outcome {
            Outcome::Closed(reason) => {
                self.closed(reason);
                let _ = tokio::time::timeout(LAST_WORDS, stream.shutdown()).await;
            }
            Outcome::Reset => {
                self.closed("fault: reset");
                stream.reset_on_close();
            }
            Outcome::StartTls => {}
        }
    }

    /// The fault that fires before the reply at `stage`, if any.
    fn fault_before(&mut self, stage: Stage) -> Option<(FaultKind, FaultAction)> {
        if std::mem::take(&mut self.fault_passed) {
            return None;
        }
        self.shared.faults().before_reply(stage, &self.mx)
    }

    /// Carries out `self.fault`: `None` to go on, or how the session ends.
    async fn carry_out_fault<S: Conn>(
        &mut self,
        stream: &mut S,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Outcome> {
        let (kind, action) = self.fault.take()?;
        self.record(EventKind::Fault {
            fault: kind,
            stage: None,
        });
        match action {
            FaultAction::Delay(delay) => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stopping(shutdown) => {
                        return Some(self.last_words(stream, ReplyKind::ShuttingDown, "server shutting down").await);
                    }
                }
                self.fault_passed = true;
                if let Some(body) = self.held.take() {
                    self.end_of_data(body);
                }
                None
            }
            FaultAction::Close => Some(Outcome::Closed("fault: close")),
            FaultAction::Unavailable => Some(
                self.last_words(stream, ReplyKind::ShuttingDown, "fault: unavailable")
                    .await,
            ),
            FaultAction::Reset => Some(Outcome::Reset),
            FaultAction::Stall => {
                let idle = self.shared.config.limits.idle_timeout;
                tokio::select! {
                    () = tokio::time::sleep(idle) => {}
                    () = stopping(shutdown) => {}
                }
                Some(Outcome::Closed("fault: stall"))
            }
        }
    }

    async fn converse<S>(&mut self, stream: &mut S, shutdown: &mut watch::Receiver<bool>) -> Outcome
    where
        S: Conn,
    {
        loop {
            let mut action = self.process();
            loop {
                match action {
                    Action::Authenticate => self.authenticate().await,
                    Action::Fault => {
                        // What was answered before the fault goes out first.
                        if !self.flush(stream).await {
                            return Outcome::Closed("write failed");
                        }
                        if let Some(outcome) = self.carry_out_fault(stream, shutdown).await {
                            return outcome;
                        }
                    }
                    _ => break,
                }
                // A message held by a fault may now wait for its checks.
                action = if self.pending.is_some() {
                    Action::Authenticate
                } else {
                    self.process()
                };
            }
            if !self.flush(stream).await {
                return Outcome::Closed("write failed");
            }
            self.start_clocks();
            match action {
                Action::Continue | Action::Authenticate | Action::Fault => {}
                Action::StartTls => return Outcome::StartTls,
                Action::Close(reason) => return Outcome::Closed(reason),
            }
            let (until, reason) = self.read_deadline();
            self.input.reserve(READ_CHUNK);
            let read = tokio::select! {
                read = tokio::time::timeout_at(until, stream.read_buf(&mut self.input)) => read,
                () = stopping(shutdown) => {
                    return self.last_words(stream, ReplyKind::ShuttingDown, "server shutting down").await;
                }
            };
            match read {
                Ok(Ok(0)) => return Outcome::Closed("client closed"),
                Ok(Ok(n)) => {
                    let crawled = Instant::now();
                    self.crawl(n).await;
                    self.paced(n, crawled.elapsed());
                }
                Ok(Err(_)) => return Outcome::Closed("read failed"),
                Err(_) => return self.last_words(stream, ReplyKind::Timeout, reason).await,
            }
        }
    }

    /// After the replies are written: the wait for the next command starts if something
    /// was answered, and the data rate is measured from the start of message data.
    fn start_clocks(&mut self) {
        if std::mem::take(&mut self.answered) {
            self.awaiting_since = Instant::now();
        }
        let limits = &self.shared.config.limits;
        match self.mode {
            Mode::Data(_) if limits.min_data_rate > 0 => {
                if self.data_deadline.is_none() {
                    self.data_deadline = Instant::now().checked_add(limits.min_data_rate_window);
                }
            }
            _ => self.data_deadline = None,
        }
    }

    /// When the next read times out, and why.
    fn read_deadline(&self) -> (Instant, &'static str) {
        let limits = &self.shared.config.limits;
        let mut until = (self.deadline, "session timeout");
        let idle = Instant::now() + limits.idle_timeout;
        if idle < until.0 {
            until = (idle, "idle timeout");
        }
        let stage = match (&self.mode, self.data_deadline) {
            (Mode::Data(_), Some(data)) => Some((data, "data rate too low")),
            (Mode::Data(_), None) => None,
            (Mode::Commands | Mode::SkipLine, _) => self
                .awaiting_since
                .checked_add(limits.command_timeout)
                .map(|command| (command, "command timeout")),
        };
        match stage {
            Some(stage) if stage.0 < until.0 => stage,
            _ => until,
        }
    }

    /// Credits `n` bytes of message data against `limits.min_data_rate`: each byte buys
    /// `1 / rate` seconds, and no more than the window can be saved up. Time the server
    /// spent on a simulated slow link (`slept`) is not the client's.
    fn paced(&mut self, n: usize, slept: Duration) {
        let limits = &self.shared.config.limits;
        if let (Mode::Data(_), Some(deadline)) = (&self.mode, self.data_deadline) {
            let earned = transfer_time(n, limits.min_data_rate);
            let later = deadline.checked_add(earned + slept);
            let cap = Instant::now().checked_add(limits.min_data_rate_window);
            self.data_deadline = match (later, cap) {
                (Some(later), Some(cap)) => Some(later.min(cap)),
                (later, cap) => later.or(cap),
            };
        }
    }

    /// Sends a closing reply and ends the session.
    async fn last_words<S>(
        &mut self,
        stream: &mut S,
        kind: ReplyKind,
        reason: &'static str,
    ) -> Outcome
    where
        S: AsyncWrite + Unpin,
    {
        self.reply(kind);
        let _ = tokio::time::timeout(LAST_WORDS, stream.write_all(&self.output)).await;
        self.output.clear();
        Outcome::Closed(reason)
    }

    async fn flush<S>(&mut self, stream: &mut S) -> bool
    where
        S: AsyncWrite + Unpin,
    {
        if self.output.is_empty() {
            return true;
        }
        let idle = self.shared.config.limits.idle_timeout;
        let speed = self.link_speed;
        let output = &self.output;
        let written = tokio::time::timeout(idle, async {
            match speed {
                None => stream.write_all(output).await?,
                Some(speed) => {
                    // A slow link: a tenth of a second's worth at a time.
                    let chunk = usize::try_from(speed / 10).unwrap_or(usize::MAX).max(1);
                    for piece in output.chunks(chunk) {
                        stream.write_all(piece).await?;
                        stream.flush().await?;
                        tokio::time::sleep(transfer_time(piece.len(), speed)).await;
                    }
                }
            }
            stream.flush().await
        })
        .await;
        self.output.clear();
        matches!(written, Ok(Ok(())))
    }

    /// On a slow link, waits as long as `n` bytes take to arrive.
    async fn crawl(&self, n: usize) {
        if let Some(speed) = self.link_speed {
            tokio::time::sleep(transfer_time(n, speed)).await;
        }
    }

    /// Answers everything complete in the input; keeps what is incomplete.
    fn process(&mut self) -> Action {
        let max_line = self.shared.config.limits.max_line_length;
        let mut pos = 0;
        let mut action = Action::Continue;
        while action == Action::Continue {
            let rest = &self.input[pos..];
            match &mut self.mode {
                Mode::Commands => match memchr(b'\n', rest) {
                    Some(end) if end < max_line => {
                        let line = rest[..=end].to_vec();
                        if let Some(stage) = command_stage(&line)
                            && let Some(fault) = self.fault_before(stage)
                        {
                            // Not answered yet: the line stays in the input, to be
                            // answered after a delay. A fault that ends the session
                            // leaves the command unanswered, but in the log.
                            if !matches!(fault.1, FaultAction::Delay(_)) {
                                self.record(EventKind::Command {
                                    line: loggable(&line),
                                });
                            }
                            self.fault = Some(fault);
                            action = Action::Fault;
                            break;
                        }
                        pos += end + 1;
                        action = self.command(&line);
                    }
                    Some(end) => {
                        pos += end + 1;
                        action = self.too_long();
                    }
                    None if rest.len() >= max_line => {
                        pos = self.input.len();
                        self.mode = Mode::SkipLine;
                        action = self.too_long();
                    }
                    None => break,
                },
                Mode::SkipLine => match memchr(b'\n', rest) {
                    Some(end) => {
                        pos += end + 1;
                        self.mode = Mode::Commands;
                    }
                    None => {
                        pos = self.input.len();
                        break;
                    }
                },
                Mode::Data(_) => {
                    let (used, done) = self.data(pos);
                    pos += used;
                    if !done && pos == self.input.len() {
                        break;
                    }
                }
            }
            if action == Action::StartTls {
                let left = self.input.len() - pos;
                if left > 0 {
                    self.record(EventKind::Discarded { bytes: left });
                }
                pos = self.input.len();
            }
            if action == Action::Continue && self.pending.is_some() {
                action = Action::Authenticate;
            }
            if action == Action::Continue && self.fault.is_some() {
                action = Action::Fault;
            }
        }
        self.input.drain(..pos);
        action
    }

    /// Runs the checks a pending command waits for, then answers it.
    async fn authenticate(&mut self) {
        let Some(auth) = self.shared.auth.as_ref() else {
            unreachable!("commands only wait for checks when authentication is on");
        };
        let ip = self.peer.ip();
        match self.pending.take() {
            Some(Pending::Mail {
                from,
                size,
                smtputf8,
            }) => {
                let helo = self.helo.as_deref().unwrap_or_default();
                let spf = auth.spf(ip, helo, &from).await;
                let ptr = if self.shared.config.auth.require_ptr {
                    Some(auth.ptr_matches(ip).await)
                } else {
                    None
                };
                self.finish_mail(from, size, smtputf8, Some(spf), ptr);
            }
            Some(Pending::Message { body }) => {
                let Some(tx) = self.tx.as_ref() else {
                    unreachable!("DATA is only accepted inside a transaction");
                };
                let report = match &tx.spf {
                    Some(spf) => Some(auth.message(spf, &tx.from, &body.bytes).await),
                    None => None,
                };
                self.finish_message(body, report);
            }
            None => {}
        }
    }

    /// Counts a command line against the per-session limit; past it, queues the closing
    /// reply.
    fn count_command(&mut self) -> Action {
        self.commands += 1;
        if self.commands > self.shared.config.limits.max_commands {
            self.reply(ReplyKind::TooManyCommands);
            return Action::Close("too many commands");
        }
        Action::Continue
    }

    /// Answers an over-long command line, which counts as a command like any other.
    fn too_long(&mut self) -> Action {
        let action = self.count_command();
        if action == Action::Continue {
            self.reply(ReplyKind::LineTooLong);
        }
        action
    }

    fn context(&self) -> Context {
        Context {
            ip: self.peer.ip(),
            n: self.tx.as_ref().map_or(0, |tx| tx.rcpts.len()),
            starttls: self.shared.tls.is_some() && !self.tls,
        }
    }

    /// Queues the reply of `kind` and records it.
    fn reply(&mut self, kind: ReplyKind) {
        let ctx = self.context();
        let reply = self.catalogue.render(kind, &ctx, &mut self.rng);
        debug!(session = self.id, reply = %reply.text, "reply");
        self.output.extend_from_slice(reply.text.as_bytes());
        self.output.extend_from_slice(b"\r\n");
        self.answered = true;
        self.record(EventKind::Reply(reply));
    }

    /// Records `decision` and, when it rejects, queues its reply. Returns whether it accepts.
    fn decide(&mut self, decision: Decision) -> bool {
        let accepted = decision.is_accept();
        let verdict = decision.verdict;
        debug!(session = self.id, %decision, "decision");
        self.record(EventKind::Decision(decision));
        if let Verdict::Reject(kind) | Verdict::Disconnect(kind) = verdict {
            self.reply(kind);
        }
        accepted
    }

    /// Asks the policy about `stage`, after any refusal deferred to it; records the
    /// decision and queues a refusal. Returns whether the client may go on.
    fn ask(&mut self, stage: Stage, facts: &Facts<'_>) -> bool {
        matches!(self.verdict(stage, facts), Verdict::Accept | Verdict::Junk)
    }

    /// [`ask`](Self::ask), returning the verdict.
    fn verdict(&mut self, stage: Stage, facts: &Facts<'_>) -> Verdict {
        let decision = match self.deferred.iter().find(|d| d.stage == stage) {
            Some(deferred) => deferred.clone(),
            None => {
                let now = self.shared.clock.now();
                let mut policy = self.shared.policy();
                if stage == Stage::EndOfData {
                    policy.end_of_data(facts, now)
                } else {
                    policy.check(stage, facts, now)
                }
            }
        };
        let verdict = decision.verdict;
        self.decide(decision);
        verdict
    }

    fn record(&self, kind: EventKind) {
        self.shared.store.record(self.id, self.peer.ip(), kind);
    }
}

/// Completes when the server starts shutting down.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not in the caller.
    let _ = shutdown.wait_for(|stop| *stop).await.is_ok();
}

/// A TLS alert record: fatal (2), handshake_failure (40).
const HANDSHAKE_FAILURE: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];

/// How long `bytes` take at `speed` bytes per second.
fn transfer_time(bytes: usize, speed: u64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / speed.max(1) as f64)
}

/// The stage a command line belongs to, for faults.
fn command_stage(line: &[u8]) -> Option<Stage> {
    let verb = line.get(..4)?;
    let stage = if verb.eq_ignore_ascii_case(b"HELO") || verb.eq_ignore_ascii_case(b"EHLO") {
        Stage::Helo
    } else if verb.eq_ignore_ascii_case(b"MAIL") {
        Stage::Mail
    } else if verb.eq_ignore_ascii_case(b"RCPT") {
        Stage::Rcpt
    } else if verb.eq_ignore_ascii_case(b"DATA") {
        Stage::Data
    } else {
        return None;
    };
    Some(stage)
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// A command line for the event log: without CRLF, cut at [`LOGGED_LINE`] bytes.
fn loggable(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let cut = &line[..line.len().min(LOGGED_LINE)];
    String::from_utf8_lossy(cut).into_owned()
}
