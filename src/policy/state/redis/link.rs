//! The connection the stages' round trips share: RESP2 over one TCP or Unix socket,
//! with several pipelines in flight at once. A session adds its pipeline to what is to
//! be written and waits for its replies; a writer writes what the sessions ready at that
//! moment added, in one write (it lets them run first when others are at work), and one
//! reader takes every
//! reply as it comes (Redis answers in order) and hands each pipeline its own. Commands
//! are encoded by the `redis` crate; replies are read here, by a reader made for the
//! few kinds a RESP2 server sends, since this is the hot path of every stage (error and
//! status lines, which are rare, are read by the crate's parser).
//!
//! A connection that fails (a read or write error, the server gone, a pipeline left
//! unanswered past the timeout) fails every pipeline waiting on it; the next round trip
//! makes a new one.
//!
//! The timeout is kept by one watch per connection rather than a timer per round trip:
//! a timer set for each round trip would fall before every other timer of the server
//! and wake its event loop once more per round trip, which on one connection costs as
//! much as the round trip's own reading and writing. The watch looks at the oldest
//! pipeline waiting at least four times a timeout, and at its deadline when that comes
//! first, so that none waits past its timeout by more than the server's own delays.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, RedisError, RedisResult, Value};

use super::packed::Packed;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A socket to Redis.
trait Socket: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Socket for T {}

/// A pipeline sent, waiting for its replies.
struct Waiting {
    replies: usize,
    /// When it was added.
    since: Instant,
    answer: oneshot::Sender<RedisResult<Vec<Value>>>,
}

/// What the connection holds between the sessions, the writer and the reader.
#[derive(Default)]
struct State {
    /// Pipelines to write, in the order of `waiting`'s last entries.
    out: Vec<u8>,
    /// The pipelines sent or to be sent and not yet answered, in order.
    waiting: VecDeque<Waiting>,
    /// Whether the connection failed: nothing more is sent on it.
    broken: bool,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection to Redis, shared by the sessions.
pub(super) struct Link {
    state: Shared,
    /// Wakes the writer.
    ready: Arc<Notify>,
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
    watch: JoinHandle<()>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.writer.abort();
        self.reader.abort();
        self.watch.abort();
        fail(&self.state, CLOSED, "the connection to Redis was closed");
    }
}

impl Link {
    /// Connects to the server `info` names, signs in and selects its database as it
    /// says, then sends `setup`, each command of which must succeed. A pipeline not
    /// answered within `timeout` fails the connection.
    pub async fn open(
        info: &ConnectionInfo,
        setup: &Packed,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let socket: Box<dyn Socket> = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("no connection to {other} for the policy state's stages"),
                )
                .into());
            }
        };
        let (read, write) = tokio::io::split(socket);
        let state = Shared::default();
        let ready = Arc::new(Notify::new());
        let link = Self {
            writer: tokio::spawn(write_pipelines(write, state.clone(), ready.clone())),
            reader: tokio::spawn(read_replies(read, state.clone())),
            watch: tokio::spawn(watch(state.clone(), timeout)),
            state,
            ready,
        };
        let settings = info.redis_settings();
        let mut hello = Packed::default();
        if let Some(password) = settings.password() {
            let mut auth = hello.command("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password);
        }
        if settings.db() != 0 {
            hello.command("SELECT").arg(settings.db());
        }
        hello.append(setup);
        link.exchange(&hello).await.and_then(super::answered)?;
        Ok(link)
    }

    /// Whether the connection failed.
    pub fn is_broken(&self) -> bool {
        lock(&self.state).broken
            || self.reader.is_finished()
            || self.writer.is_finished()
            || self.watch.is_finished()
    }

    /// Sends the commands of `packed` and waits for their replies.
    pub async fn exchange(&self, packed: &Packed) -> RedisResult<Vec<Value>> {
        if packed.count() == 0 {
            return Ok(Vec::new());
        }
        let (answer, answered) = oneshot::channel();
        {
            let mut state = lock(&self.state);
            if state.broken {
                return Err(closed("the connection to Redis failed"));
            }
            state.out.extend_from_slice(packed.bytes());
            state.waiting.push_back(Waiting {
                replies: packed.count(),
                since: Instant::now(),
                answer,
            });
        }
        self.ready.notify_one();
        answered
            .await
            .unwrap_or_else(|_| Err(closed("the connection to Redis was closed")))
    }
}

/// Writes what the sessions added, each time the writer is woken, once the sessions
/// ready to run have added theirs; stops at the first error.
async fn write_pipelines(mut write: WriteHalf<Box<dyn Socket>>, state: Shared, ready: Arc<Notify>) {
    let mut spare = Vec::new();
    loop {
        ready.notified().await;
        // With other pipelines in flight, other sessions are at work: those ready to run
        // add theirs first, for one write for all. (One session alone is not kept
        // waiting.)
        if lock(&state).waiting.len() > 1 {
            tokio::task::yield_now().await;
        }
        std::mem::swap(&mut lock(&state).out, &mut spare);
        if spare.is_empty() {
            continue;
        }
        if write.write_all(&spare).await.is_err() {
            fail(&state, CLOSED, "the connection to Redis failed");
            return;
        }
        spare.clear();
    }
}

/// What a pipeline on a connection that failed gets, but for a timeout.
const CLOSED: io::ErrorKind = io::ErrorKind::ConnectionAborted;

fn closed(why: &'static str) -> RedisError {
    io::Error::new(CLOSED, why).into()
}

/// Marks the connection failed and answers every pipeline waiting with an error of
/// `kind`, saying `why`.
fn fail(state: &Shared, kind: io::ErrorKind, why: &'static str) {
    let waiting = {
        let mut state = lock(state);
        state.broken = true;
        state.out.clear();
        std::mem::take(&mut state.waiting)
    };
    for waiting in waiting {
        let _ = waiting.answer.send(Err(io::Error::new(kind, why).into()));
    }
}

/// Fails the connection when its oldest pipeline has waited `timeout`: Redis answers in
/// order, so every later one would wait as long.
async fn watch(state: Shared, timeout: Duration) {
    let every = (timeout / 4).max(Duration::from_millis(1));
    loop {
        let now = Instant::now();
        let oldest = lock(&state).waiting.front().map(|w| w.since + timeout);
        match oldest {
            Some(deadline) if deadline <= now => {
                fail(
                    &state,
                    io::ErrorKind::TimedOut,
                    "no reply within state.timeout",
                );
                return;
            }
            Some(deadline) => tokio::time::sleep_until(deadline.min(now + every)).await,
            None => tokio::time::sleep_until(now + every).await,
        }
    }
}

/// Reads replies and hands each pipeline waiting its own, in order, until the
/// connection fails; then fails every pipeline waiting.
async fn read_replies(mut read: ReadHalf<Box<dyn Socket>>, state: Shared) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut start = 0;
    let mut done: Vec<Value> = Vec::new();
    let why = loop {
        match read.read_buf(&mut buf).await {
            Ok(0) => break "Redis closed the connection",
            Ok(_) => {}
            Err(_) => break "the connection to Redis failed",
        }
        let mut failed = false;
        loop {
            match parse(&buf, start) {
                Ok(Some((value, next))) => {
                    start = next;
                    done.push(value);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
            let mut guard = lock(&state);
            let waiting = &mut guard.waiting;
            match waiting.front() {
                Some(w) if w.replies <= done.len() => {
                    if let Some(w) = waiting.pop_front() {
                        let _ = w.answer.send(Ok(std::mem::take(&mut done)));
                    }
                }
                Some(_) => {}
                // A reply nobody asked for: the connection is out of step.
                None => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            break "an unexpected reply from Redis";
        }
        buf.drain(..start);
        start = 0;
    };
    fail(&state, CLOSED, why);
}

/// One reply from `buf` at `at`: the value and where the next starts; `None` while the
/// reply is incomplete.
fn parse(buf: &[u8], at: usize) -> RedisResult<Option<(Value, usize)>> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((line, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    match kind {
        b':' => Ok(Some((Value::Int(number(line)?), next))),
        b'$' => {
            let len = number(line)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            let end = next + usize::try_from(len).map_err(|_| malformed())?;
            match buf.get(end..end + 2) {
                Some(b"\r\n") => Ok(Some((Value::BulkString(buf[next..end].to_vec()), end + 2))),
                Some(_) => Err(malformed()),
                None => Ok(None),
            }
        }
        b'*' => {
            let len = number(line)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            let len = usize::try_from(len).map_err(|_| malformed())?;
            let mut items = Vec::with_capacity(len.min(1024));
            let mut pos = next;
            for _ in 0..len {
                match parse(buf, pos)? {
                    Some((item, after)) => {
                        items.push(item);
                        pos = after;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(items), pos)))
        }
        // Status and error lines: the crate's own reading (`+OK` is `Okay`, an error its
        // kind).
        b'+' | b'-' => Ok(Some((redis::parse_redis_value(&buf[at..next])?, next))),
        _ => Err(malformed()),
    }
}

/// The line from `at` to its CRLF, and where the next starts.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = memchr::memchr(b'\n', rest)?;
    let line = rest[..end].strip_suffix(b"\r")?;
    Some((line, at + end + 1))
}

fn number(line: &[u8]) -> RedisResult<i64> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(malformed)
}

fn malformed() -> RedisError {
    io::Error::new(io::ErrorKind::InvalidData, "a malformed reply from Redis").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Vec<Value> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((value, next)) = parse(bytes, at).expect("well formed") {
            out.push(value);
            at = next;
        }
        assert_eq!(at, bytes.len(), "every byte read");
        out
    }

    #[test]
    fn replies_read_as_the_crate_reads_them() {
        let replies: [&[u8]; 14] = [
            b"+OK\r\n",
            b":42\r\n",
            b":-7\r\n",
            b":9223372036854775807\r\n",
            b":-9223372036854775808\r\n",
            b"$5\r\nhe\r\no\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n:3\r\n",
            b"+QUEUED\r\n",
            b"-ERR unknown command\r\n",
            b"-NOSCRIPT No matching script\r\n",
        ];
        let theirs: Vec<Value> = replies
            .iter()
            .map(|r| redis::parse_redis_value(r).expect("the crate reads it"))
            .collect();
        // Read one after another, as they come on the wire.
        let mine = all(&replies.concat());
        assert_eq!(format!("{mine:?}"), format!("{theirs:?}"));
        assert_eq!(mine.len(), replies.len());
    }

    #[test]
    fn an_incomplete_reply_waits_for_more_at_every_cut() {
        let wire: &[u8] = b"*2\r\n$3\r\nabc\r\n*1\r\n:12\r\n";
        for cut in 0..wire.len() {
            assert!(
                parse(&wire[..cut], 0).expect("no error").is_none(),
                "cut at {cut}"
            );
        }
        assert!(parse(wire, 0).expect("no error").is_some());
    }

    /// A server that takes the connection and every byte sent and never answers: the
    /// watch fails the pipeline after the timeout, and the connection with it.
    #[tokio::test]
    async fn a_pipeline_unanswered_past_the_timeout_fails_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let silent = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("the connection");
            let mut sink = Vec::new();
            let _ = socket.read_to_end(&mut sink).await;
        });
        let info = redis::Client::open(format!("redis://{addr}/0"))
            .expect("a URL")
            .get_connection_info()
            .clone();
        let link = Link::open(&info, &Packed::default(), Duration::from_millis(200))
            .await
            .expect("nothing to send at opening, so nothing to wait for");
        let mut ping = Packed::default();
        ping.command("PING");
        // Real time is the subject; the bound only keeps a broken watch from hanging the
        // suite, far above the 200 ms a loaded machine may stretch.
        let answer = tokio::time::timeout(Duration::from_secs(60), link.exchange(&ping))
            .await
            .expect("the watch answers");
        let error = answer.expect_err("no reply came");
        assert_eq!(error.kind(), redis::ErrorKind::Io, "{error}");
        assert!(error.to_string().contains("state.timeout"), "{error}");
        assert!(link.is_broken());
        silent.abort();
    }

    #[test]
    fn malformed_replies_are_errors() {
        for wire in [
            &b"?x\r\n"[..],
            b":abc\r\n",
            b":\r\n",
            b":-\r\n",
            b":1-2\r\n",
            b":99999999999999999999\r\n",
            b"$3\r\nabcd\r\n",
            b"*x\r\n",
        ] {
            assert!(parse(wire, 0).is_err(), "{wire:?}");
        }
    }
}
