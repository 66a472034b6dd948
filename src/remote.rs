//! A client for a qqmx sidecar (`qqmx serve`) over its HTTP control API, with the
//! inspection and control methods of the embedded [`QqMx`](crate::QqMx).
//!
//! [`Remote`] dereferences to the same [`Handle`] as [`QqMx`](crate::QqMx), whose
//! methods here speak to the sidecar's routes, and both implement [`Mx`]; a test switches
//! between an in-process server and a sidecar by changing the line that makes the server:
//!
//! ```no_run
//! use std::time::Duration;
//! use qqmx::Expectation;
//!
//! // let server = qqmx::QqMx::start();
//! let server = qqmx::remote::Remote::from_env()?; // QQMX_API_URL, QQMX_API_TOKEN
//! server.expect(Expectation::accepted(1));
//! // ... the code under test sends one message to server.addr() ...
//! server.wait_for_messages(1, Duration::from_secs(5))?;
//! server.advance(Duration::from_secs(86_400));
//! server.verify()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Like the embedded handle's, the methods are test helpers: they panic when the sidecar
//! cannot be reached or answers with an error, saying which request failed and why.
//! [`Remote::get`] and [`Remote::post`] return a [`RemoteError`] instead, for any route of
//! the API.
//!
//! The client speaks plain HTTP/1.1 (a sidecar's API has no TLS), ignores the
//! `HTTP_PROXY` variables, and gives up on a request after 30 seconds. The sidecar's API
//! shows times to the microsecond, so the times a `Remote` returns are truncated to it.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::chaos::Fault;
use crate::clock::Rfc3339;
use crate::embedded::{Mx, sealed};
use crate::event::Event;
use crate::expect::{Expectation, Report, Run, evaluate};
use crate::inspect::{Backend, Command, Handle, Pending, Refusal, Stats};
use crate::policy::BlockInfo;
use crate::store::Message;

/// Why a request to the sidecar failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The sidecar could not be reached, or the exchange broke off.
    #[error("qqmx API at {url}: {source}")]
    Http {
        /// The URL asked.
        url: String,
        /// Why.
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The sidecar answered with an error status.
    #[error("qqmx API at {url} answered {status}: {message}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The `error` of the JSON answer, or the body.
        message: String,
    },
    /// The answer was not what that route gives.
    #[error("qqmx API at {url}: unexpected answer: {source}")]
    Decode {
        /// The URL asked.
        url: String,
        /// Why.
        source: Box<dyn StdError + Send + Sync>,
    },
    /// `QQMX_API_URL` is not set.
    #[error(
        "QQMX_API_URL is not set: start `qqmx serve --api ADDR` and set QQMX_API_URL=http://ADDR"
    )]
    NoUrl,
}

/// A running sidecar (`qqmx serve`), reached over its control API.
///
/// It dereferences to a [`Handle`], whose methods ask the sidecar's routes. It keeps its
/// own [`Expectation`]s, checked by [`verify`](Self::verify) and when it is dropped (a
/// failed one panics with the same report as [`QqMx`](crate::QqMx)'s); the sidecar
/// itself keeps running.
///
/// ```no_run
/// use qqmx::remote::Remote;
///
/// let server = Remote::connect("http://127.0.0.1:8025")?;
/// println!("point the sender at {}", server.addr());
/// assert!(server.messages().is_empty());
/// # Ok::<(), qqmx::remote::RemoteError>(())
/// ```
pub struct Remote {
    handle: Handle,
    http: Arc<Http>,
    expectations: Mutex<Vec<Expectation>>,
}

/// The HTTP side of a [`Remote`]: the sidecar's address and token, and where its first
/// SMTP listener is.
struct Http {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    smtp: SocketAddr,
    mx: String,
}

#[derive(Deserialize)]
struct Info {
    seed: u64,
    listeners: Vec<Listener>,
}

#[derive(Deserialize)]
struct Listener {
    mx: String,
    addr: SocketAddr,
}

#[derive(Deserialize)]
struct MessageList {
    messages: Vec<RemoteMessage>,
}

#[derive(Deserialize)]
struct RemoteMessage {
    #[serde(flatten)]
    message: Message,
    raw_base64: Option<String>,
}

#[derive(Deserialize)]
struct EventList {
    events: Vec<Event>,
    /// Where one replica's list goes on.
    #[serde(default)]
    next_after: u64,
    /// Where a list of every replica's events goes on (the Redis state).
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct Reputation {
    reputation: u64,
}

#[derive(Deserialize)]
struct ClockInfo {
    #[serde(with = "crate::clock::rfc3339")]
    now: SystemTime,
}

impl Remote {
    /// Connects to the control API at `url` (`http://127.0.0.1:8025`) and reads where its
    /// first SMTP listener is.
    ///
    /// # Errors
    ///
    /// [`RemoteError`] when the API does not answer, or asks for a token.
    pub fn connect(url: &str) -> Result<Self, RemoteError> {
        Self::open(url, None)
    }

    /// [`connect`](Self::connect) to an API that wants `Authorization: Bearer <token>`
    /// (`qqmx serve --api-token`, `QQMX_API_TOKEN`).
    ///
    /// # Errors
    ///
    /// [`RemoteError`] when the API does not answer or refuses the token.
    pub fn connect_with_token(url: &str, token: &str) -> Result<Self, RemoteError> {
        Self::open(url, Some(token))
    }

    /// Connects to `QQMX_API_URL`, with the token in `QQMX_API_TOKEN` when it is set.
    ///
    /// # Errors
    ///
    /// [`RemoteError::NoUrl`] when `QQMX_API_URL` is not set, or as
    /// [`connect`](Self::connect).
    pub fn from_env() -> Result<Self, RemoteError> {
        let url = std::env::var("QQMX_API_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .ok_or(RemoteError::NoUrl)?;
        let token = std::env::var("QQMX_API_TOKEN").ok();
        Self::open(url.trim(), token.as_deref().filter(|t| !t.is_empty()))
    }

    fn open(url: &str, token: Option<&str>) -> Result<Self, RemoteError> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(30)))
            .user_agent(concat!("qqmx-remote/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let mut http = Http {
            base: url.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
            agent,
            smtp: SocketAddr::from(([127, 0, 0, 1], 0)),
            mx: "mx1".to_owned(),
        };
        let info: Info = http.request("GET", "/api/v1/info", None)?;
        if let Some(first) = info.listeners.into_iter().next() {
            http.smtp = first.addr;
            http.mx = first.mx;
        }
        let http = Arc::new(http);
        Ok(Self {
            handle: Handle::new(http.clone()),
            http,
            expectations: Mutex::new(Vec::new()),
        })
    }

    /// The API's base URL, as given to [`connect`](Self::connect) (without a trailing `/`).
    pub fn url(&self) -> &str {
        &self.http.base
    }

    /// Forgets messages, events and expectations (the sidecar's store is cleared; its
    /// policy stays as it is, as with the embedded server).
    pub fn reset(&self) {
        self.backend().clear();
        self.lock_expectations().clear();
    }

    /// Adds an expectation, checked when the client is dropped (or by
    /// [`verify`](Self::verify)).
    pub fn expect(&self, expectation: Expectation) {
        self.lock_expectations().push(expectation);
    }

    /// Checks the expectations now, here, over the sidecar's events and messages.
    ///
    /// # Errors
    ///
    /// The [`Report`] of every expectation, naming the seed in force now, when one failed.
    pub fn verify(&self) -> Result<(), Report> {
        let expectations = self.lock_expectations();
        if expectations.is_empty() {
            return Ok(());
        }
        let info: Info = must(self.get("/api/v1/info"));
        let (events, messages, stats) = (self.events(), self.messages(), self.stats());
        let run = Run::new(&events, &messages, &[], info.seed)
            .ending_at(self.now())
            .evicted(
                stats.since_reset.messages_evicted,
                stats.since_reset.events_evicted,
            );
        evaluate(&expectations, &run).into_result()
    }

    /// Takes MX host `mx` down (its port refuses connections) or brings it back.
    ///
    /// # Panics
    ///
    /// When the sidecar has no listener called `mx`.
    pub fn set_mx_up(&self, mx: &str, up: bool) {
        self.http.set_mx_up(mx, up);
    }

    // ---- any route ---------------------------------------------------------------------

    /// `GET path` (`/api/v1/config`), the JSON answer decoded as `T` (`serde_json::Value`
    /// takes anything): for the routes the [`Handle`] has no method for.
    ///
    /// # Errors
    ///
    /// [`RemoteError`] when the request fails, the status is an error or the answer is
    /// not a `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        self.http.request("GET", path, None)
    }

    /// `POST path` with a JSON body, the JSON answer decoded as `T`: for the routes the
    /// [`Handle`] has no method for.
    ///
    /// # Errors
    ///
    /// [`RemoteError`] when the request fails, the status is an error or the answer is
    /// not a `T`.
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, RemoteError> {
        self.http.request("POST", path, Some(body))
    }

    /// The certificate (PEM) of the sidecar's test CA (`GET /api/v1/tls/ca.pem`), for a
    /// client to trust; `None` when the sidecar has no test CA (its listeners have the
    /// default self-signed certificate).
    ///
    /// # Panics
    ///
    /// When the sidecar cannot be reached or answers with another error.
    pub fn ca_pem(&self) -> Option<String> {
        match self.http.text("GET", "/api/v1/tls/ca.pem", None) {
            Ok(pem) => Some(pem),
            Err(RemoteError::Status { status: 404, .. }) => None,
            Err(e) => panic!("{e}"),
        }
    }

    fn lock_expectations(&self) -> MutexGuard<'_, Vec<Expectation>> {
        self.expectations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Deref for Remote {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Http {
    fn url_of(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, RemoteError> {
        let text = self.text(method, path, body)?;
        serde_json::from_str(&text).map_err(|e| RemoteError::Decode {
            url: self.url_of(path),
            source: Box::new(e),
        })
    }

    /// The body of a successful answer, as text.
    fn text(&self, method: &str, path: &str, body: Option<&Value>) -> Result<String, RemoteError> {
        let url = self.url_of(path);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let answer = match body {
            None => {
                let mut request = self.agent.get(&url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            Some(body) => {
                let mut request = if method == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request
                    .header("Content-Type", "application/json")
                    .send(body.to_string().as_str())
            }
        };
        let mut answer = answer.map_err(|e| RemoteError::Http {
            url: url.clone(),
            source: Box::new(e),
        })?;
        let status = answer.status().as_u16();
        let text = answer
            .body_mut()
            .read_to_string()
            .map_err(|e| RemoteError::Http {
                url: url.clone(),
                source: Box::new(e),
            })?;
        if status >= 400 {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return Err(RemoteError::Status {
                url,
                status,
                message,
            });
        }
        Ok(text)
    }

    /// `GET path`, or a panic that says why.
    fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        must(self.request("GET", path, None))
    }

    /// `POST path`, which answers `{"ok": true}` or similar, or a panic that says why.
    fn done(&self, path: &str, body: &Value) {
        let _: Value = must(self.request("POST", path, Some(body)));
    }

    fn try_messages(&self) -> Result<Vec<Message>, RemoteError> {
        let path = "/api/v1/messages?raw=true";
        let list: MessageList = self.request("GET", path, None)?;
        list.messages
            .into_iter()
            .map(|m| {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(m.raw_base64.unwrap_or_default())
                    .map_err(|e| RemoteError::Decode {
                        url: self.url_of(path),
                        source: format!("message {}: raw_base64: {e}", m.message.id).into(),
                    })?;
                Ok(Message {
                    raw: raw.into(),
                    ..m.message
                })
            })
            .collect()
    }

    /// The events matching `filter` (`&client=127.0.0.1&type=decision`), page by page:
    /// one replica's by `after`, every replica's (the Redis state) by `cursor`.
    fn events_where(&self, filter: &str) -> Vec<Event> {
        let mut events = Vec::new();
        let mut after = 0;
        let mut cursor: Option<String> = None;
        loop {
            let from = match &cursor {
                Some(cursor) => format!("cursor={cursor}"),
                None if after == 0 => String::new(),
                None => format!("after={after}"),
            };
            let query = format!("{from}{filter}");
            let page: EventList =
                self.get(&format!("/api/v1/events?{}", query.trim_start_matches('&')));
            if page.events.is_empty() {
                return events;
            }
            match page.next_cursor {
                Some(next) if cursor.as_ref() != Some(&next) => cursor = Some(next),
                Some(_) => return events,
                None if page.next_after > after => after = page.next_after,
                None => return events,
            }
            events.extend(page.events);
        }
    }

    fn accepted(&self) -> usize {
        usize::try_from(self.stats().since_reset.messages_accepted).unwrap_or(usize::MAX)
    }

    fn set_mx_up(&self, mx: &str, up: bool) {
        let path = format!("/api/v1/mx/{mx}/{}", if up { "up" } else { "down" });
        self.done(&path, &json!({}));
    }
}

impl Backend for Http {
    fn addr(&self) -> SocketAddr {
        self.smtp
    }

    fn now(&self) -> SystemTime {
        let clock: ClockInfo = self.get("/api/v1/clock");
        clock.now
    }

    fn advance(&self, by: Duration) {
        self.done("/api/v1/clock/advance", &json!({ "by": duration_text(by) }));
    }

    fn messages(&self) -> Vec<Message> {
        must(self.try_messages())
    }

    fn events(&self) -> Vec<Event> {
        self.events_where("")
    }

    fn events_of(&self, client: IpAddr) -> Vec<Event> {
        self.events_where(&format!("&client={client}&type=decision"))
    }

    fn stats(&self) -> Stats {
        self.get("/api/v1/stats")
    }

    /// Asks the sidecar every few milliseconds.
    fn wait_for_messages(&self, n: usize, timeout: Duration) -> Result<Vec<Message>, usize> {
        let mut poll = Poll::new(n, timeout);
        loop {
            match poll.next(self.accepted()) {
                Step::Done => return Ok(self.messages()),
                Step::Wait(pause) => std::thread::sleep(pause),
                Step::Fail(got) => return Err(got),
            }
        }
    }

    /// Sleeps between polls without holding the runtime (each poll is a short blocking
    /// request to the sidecar).
    fn wait_for_messages_async(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Pending<'_, Result<Vec<Message>, usize>> {
        Box::pin(async move {
            let mut poll = Poll::new(n, timeout);
            loop {
                match poll.next(self.accepted()) {
                    Step::Done => return Ok(self.messages()),
                    Step::Wait(pause) => tokio::time::sleep(pause).await,
                    Step::Fail(got) => return Err(got),
                }
            }
        })
    }

    fn clear(&self) {
        self.done("/api/v1/reset", &json!({ "store": true }));
    }

    fn command(&self, command: Command) {
        let until = |until: Option<SystemTime>| until.map(|u| Rfc3339(u).to_string());
        let (path, body) = match command {
            Command::BlacklistIp { net, until: u } => (
                "/api/v1/blacklist",
                json!({ "ip": net.to_string(), "until": until(u) }),
            ),
            Command::UnblacklistIp(net) => {
                ("/api/v1/unblacklist", json!({ "ip": net.to_string() }))
            }
            Command::BlacklistSender { sender, until: u } => (
                "/api/v1/blacklist",
                json!({ "sender": sender, "until": until(u) }),
            ),
            Command::UnblacklistSender(sender) => {
                ("/api/v1/unblacklist", json!({ "sender": sender }))
            }
            Command::Whitelist { recipient, sender } => (
                "/api/v1/whitelist",
                json!({ "recipient": recipient, "sender": sender }),
            ),
            Command::Complain { ip, sender } => {
                ("/api/v1/complain", json!({ "ip": ip, "sender": sender }))
            }
            Command::SetLimit {
                quota,
                window,
                limit,
            } => (
                "/api/v1/limit",
                json!({ "quota": quota, "window": window, "limit": limit }),
            ),
            Command::ResetCounters => ("/api/v1/reset", json!({ "counters": true })),
        };
        self.done(path, &body);
    }

    fn reputation(&self, ip: IpAddr) -> u64 {
        let r: Reputation = self.get(&format!("/api/v1/reputation/{ip}"));
        r.reputation
    }

    fn blocks(&self) -> Vec<BlockInfo> {
        self.get("/api/v1/blocks")
    }

    fn explain(&self, ip: IpAddr, at: SystemTime) -> Option<Refusal> {
        let path = format!("/api/v1/explain?ip={ip}&at={}", query_time(at));
        match self.request("GET", &path, None) {
            Ok(refusal) => Some(refusal),
            Err(RemoteError::Status { status: 404, .. }) => None,
            Err(e) => panic!("{e}"),
        }
    }

    fn set_faults(&self, faults: Vec<Fault>) {
        let body = serde_json::to_value(faults).unwrap_or_else(|e| panic!("qqmx: {e}"));
        let _: Value = must(self.request("PUT", "/api/v1/faults", Some(&body)));
    }

    fn set_up(&self, up: bool) {
        self.set_mx_up(&self.mx, up);
    }
}

/// The answer, or a panic that says which request failed and why.
fn must<T>(result: Result<T, RemoteError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// `by` as the API's duration text (`"1d2h3s250ms"`), to the millisecond.
fn duration_text(by: Duration) -> String {
    let secs = by.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let mut text = String::new();
    if days > 0 {
        let _ = write!(text, "{days}d");
    }
    let _ = write!(text, "{rest}s");
    if by.subsec_millis() > 0 {
        let _ = write!(text, "{}ms", by.subsec_millis());
    }
    text
}

/// `at` for the `at` of `/explain`: the API shows times to the microsecond, so an event
/// counts as at or before `at` when its time, so shown, is. To the nanosecond, that is the
/// end of `at`'s microsecond.
fn query_time(at: SystemTime) -> String {
    let Ok(since) = at.duration_since(UNIX_EPOCH) else {
        return Rfc3339(at).to_string();
    };
    let nanos = since.subsec_micros() * 1000 + 999;
    let text = Rfc3339(at).to_the_second();
    let stem = text.strip_suffix('Z').unwrap_or(&text);
    format!("{stem}.{nanos:09}Z")
}

/// Polling for a sidecar's messages: a pause that grows from 5 to 100 ms.
struct Poll {
    wanted: usize,
    deadline: Instant,
    pause: Duration,
}

enum Step {
    Done,
    Wait(Duration),
    /// The time is up, with the number accepted.
    Fail(usize),
}

impl Poll {
    fn new(wanted: usize, timeout: Duration) -> Self {
        Self {
            wanted,
            deadline: Instant::now() + timeout,
            pause: Duration::from_millis(5),
        }
    }

    fn next(&mut self, got: usize) -> Step {
        if got >= self.wanted {
            return Step::Done;
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Step::Fail(got);
        }
        let pause = self.pause.min(left);
        self.pause = (self.pause * 2).min(Duration::from_millis(100));
        Step::Wait(pause)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if std::thread::panicking() || self.lock_expectations().is_empty() {
            return;
        }
        if let Err(report) = self.verify() {
            panic!("{report}");
        }
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.http.base)
            .field("smtp", &self.http.smtp)
            .finish_non_exhaustive()
    }
}

impl sealed::Sealed for Remote {}

impl Mx for Remote {
    fn reset(&self) {
        Remote::reset(self);
    }
    fn expect(&self, expectation: Expectation) {
        Remote::expect(self, expectation);
    }
    fn verify(&self) -> Result<(), Report> {
        Remote::verify(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Remote>();
    }

    #[test]
    fn durations_read_back_as_themselves() {
        for (by, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "0s250ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(60 * 86_400 + 5), "60d5s"),
        ] {
            assert_eq!(duration_text(by), text);
            assert_eq!(crate::units::duration_text::parse(text), Some(by), "{text}");
        }
    }

    #[test]
    fn an_explain_time_covers_its_microsecond() {
        let at = UNIX_EPOCH + Duration::new(1_750_000_000, 123_456_789);
        let text = query_time(at);
        assert_eq!(text, "2025-06-15T15:06:40.123456999Z");
        assert_eq!(
            crate::clock::parse_rfc3339(&text),
            Some(UNIX_EPOCH + Duration::new(1_750_000_000, 123_456_999))
        );
    }
}
