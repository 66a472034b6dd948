//! A client for a qqmx sidecar (`qqmx serve`) over its HTTP control API, with the
//! inspection and control methods of the embedded [`QqMx`](crate::QqMx).
//!
//! A test written against the [`Mx`] trait runs in-process or against a sidecar; only
//! the line that makes the server changes:
//!
//! ```no_run
//! use std::time::Duration;
//! use qqmx::{Expectation, Mx};
//!
//! // let server = qqmx::QqMx::start();
//! let server = qqmx::remote::Remote::from_env()?; // QQMX_API_URL, QQMX_API_TOKEN
//! server.expect(Expectation::accepted(1));
//! // ... the code under test sends one message to server.addr() ...
//! server.wait_for_messages(1, Duration::from_secs(5))?;
//! server.advance(Duration::from_secs(86_400));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The methods of [`Mx`] panic when the sidecar cannot be reached or answers with an
//! error, as a test helper should; [`Remote::get`] and [`Remote::post`] return the error
//! instead.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::chaos::Fault;
use crate::clock::Rfc3339;
use crate::embedded::{Expectation, Mx, Report, WaitError, check};
use crate::policy::{BlockInfo, Decision, QuotaName, Window};
use crate::reply::ReplyKind;
use crate::store::{Event, Message, StoreStats};

/// Why a request to the sidecar failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The sidecar could not be reached, or the exchange broke.
    #[error("qqmx at {url}: {source}")]
    Http {
        /// The URL asked.
        url: String,
        /// Why.
        source: Box<ureq::Error>,
    },
    /// The sidecar answered with an error status.
    #[error("qqmx at {url}: {status}: {message}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The `error` of the JSON answer, or the body.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("qqmx at {url}: unexpected answer: {source}")]
    Json {
        /// The URL asked.
        url: String,
        /// Why.
        source: serde_json::Error,
    },
    /// `QQMX_API_URL` is not set.
    #[error("QQMX_API_URL is not set: start qqmx serve and point QQMX_API_URL at its API")]
    NoUrl,
}

/// A sidecar's control API.
pub struct Remote {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    smtp: SocketAddr,
    seed: u64,
    expectations: Mutex<Vec<Expectation>>,
}

#[derive(Deserialize)]
struct Info {
    seed: u64,
    listeners: Vec<Listener>,
}

#[derive(Deserialize)]
struct Listener {
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
    #[serde(default)]
    raw_base64: String,
}

#[derive(Deserialize)]
struct EventList {
    events: Vec<Event>,
    next_after: u64,
}

#[derive(Deserialize)]
struct Stats {
    store: StoreStats,
    replies: BTreeMap<ReplyKind, usize>,
}

#[derive(Deserialize)]
struct Explanation {
    decision: Decision,
}

#[derive(Deserialize)]
struct Reputation {
    reputation: u64,
}

impl Remote {
    /// Connects to the control API at `url` (`http://127.0.0.1:8025`) and reads where its
    /// first SMTP listener is.
    ///
    /// # Errors
    ///
    /// [`RemoteError`] when the API does not answer.
    pub fn connect(url: &str) -> Result<Self, RemoteError> {
        Self::connect_with_token(url, None)
    }

    /// [`connect`](Self::connect) with a bearer token.
    ///
    /// # Errors
    ///
    /// [`RemoteError`] when the API does not answer or refuses the token.
    pub fn connect_with_token(url: &str, token: Option<&str>) -> Result<Self, RemoteError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut remote = Self {
            base: url.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
            agent,
            smtp: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 0,
            expectations: Mutex::new(Vec::new()),
        };
        let info: Info = remote.get("/api/v1/info")?;
        remote.seed = info.seed;
        if let Some(first) = info.listeners.first() {
            remote.smtp = first.addr;
        }
        Ok(remote)
    }

    /// Connects to `QQMX_API_URL`, with `QQMX_API_TOKEN` when it is set.
    ///
    /// # Errors
    ///
    /// [`RemoteError::NoUrl`] when the variable is not set, or as
    /// [`connect`](Self::connect).
    pub fn from_env() -> Result<Self, RemoteError> {
        let url = std::env::var("QQMX_API_URL").map_err(|_| RemoteError::NoUrl)?;
        let token = std::env::var("QQMX_API_TOKEN").ok();
        Self::connect_with_token(&url, token.as_deref().filter(|t| !t.is_empty()))
    }

    /// `GET path`, decoded from JSON.
    ///
    /// # Errors
    ///
    /// [`RemoteError`] when the request fails or the answer is not `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        self.request("GET", path, None)
    }

    /// `POST path` with a JSON body, the answer decoded from JSON.
    ///
    /// # Errors
    ///
    /// [`RemoteError`] when the request fails or the answer is not `T`.
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, RemoteError> {
        self.request("POST", path, Some(body))
    }

    fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, RemoteError> {
        let url = format!("{}{path}", self.base);
        let http = |source| RemoteError::Http {
            url: url.clone(),
            source: Box::new(source),
        };
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
        }
        .map_err(http)?;
        decode(&url, answer)
    }

    fn put<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, RemoteError> {
        self.request("PUT", path, Some(body))
    }

    fn call<T: DeserializeOwned>(&self, result: Result<T, RemoteError>) -> T {
        result.unwrap_or_else(|e| panic!("{e}"))
    }

    fn lock_expectations(&self) -> std::sync::MutexGuard<'_, Vec<Expectation>> {
        self.expectations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn done(&self, path: &str, body: Value) {
        let _: Value = self.call(self.post(path, &body));
    }

    /// Takes MX host `mx` down (its port refuses connections) or brings it back.
    pub fn set_mx_up(&self, mx: &str, up: bool) {
        let path = format!("/api/v1/mx/{mx}/{}", if up { "up" } else { "down" });
        self.done(&path, json!({}));
    }
}

fn decode<T: DeserializeOwned>(
    url: &str,
    mut answer: ureq::http::Response<ureq::Body>,
) -> Result<T, RemoteError> {
    let status = answer.status().as_u16();
    let text = answer
        .body_mut()
        .read_to_string()
        .map_err(|source| RemoteError::Http {
            url: url.to_owned(),
            source: Box::new(source),
        })?;
    if status >= 400 {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(RemoteError::Status {
            url: url.to_owned(),
            status,
            message,
        });
    }
    serde_json::from_str(&text).map_err(|source| RemoteError::Json {
        url: url.to_owned(),
        source,
    })
}

impl Mx for Remote {
    fn addr(&self) -> SocketAddr {
        self.smtp
    }

    fn messages(&self) -> Vec<Message> {
        let list: MessageList = self.call(self.get("/api/v1/messages?raw=true"));
        list.messages
            .into_iter()
            .map(|m| {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(&m.raw_base64)
                    .unwrap_or_default();
                Message {
                    raw: raw.into(),
                    ..m.message
                }
            })
            .collect()
    }

    fn events(&self) -> Vec<Event> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page: EventList = self.call(self.get(&format!("/api/v1/events?after={after}")));
            if page.events.is_empty() {
                return events;
            }
            after = page.next_after;
            events.extend(page.events);
        }
    }

    fn stats(&self) -> StoreStats {
        let stats: Stats = self.call(self.get("/api/v1/stats"));
        stats.store
    }

    fn wait_for_messages(&self, n: usize, timeout: Duration) -> Result<Vec<Message>, WaitError> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = usize::try_from(self.stats().accepted_total).unwrap_or(usize::MAX);
            if got >= n {
                return Ok(self.messages());
            }
            if Instant::now() >= deadline {
                return Err(WaitError {
                    wanted: n,
                    got,
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn reset(&self) {
        self.done("/api/v1/reset", json!({"store": true}));
        self.lock_expectations().clear();
    }

    fn expect(&self, expectation: Expectation) {
        self.lock_expectations().push(expectation);
    }

    fn verify(&self) -> Result<(), Report> {
        let stats: Stats = self.call(self.get("/api/v1/stats"));
        check(
            &self.lock_expectations(),
            stats.store.accepted_total,
            &stats.replies,
            self.seed,
        )
    }

    fn advance(&self, by: Duration) {
        self.done(
            "/api/v1/clock/advance",
            json!({ "by": format!("{}ms", by.as_millis()) }),
        );
    }

    fn blacklist_ip(&self, net: &str, until: Option<SystemTime>) {
        let until = until.map(|u| Rfc3339(u).to_string());
        self.done("/api/v1/blacklist", json!({ "ip": net, "until": until }));
    }

    fn unblacklist_ip(&self, net: &str) {
        self.done("/api/v1/unblacklist", json!({ "ip": net }));
    }

    fn blacklist_sender(&self, sender: &str, until: Option<SystemTime>) {
        let until = until.map(|u| Rfc3339(u).to_string());
        self.done(
            "/api/v1/blacklist",
            json!({ "sender": sender, "until": until }),
        );
    }

    fn unblacklist_sender(&self, sender: &str) {
        self.done("/api/v1/unblacklist", json!({ "sender": sender }));
    }

    fn whitelist(&self, recipient: &str, sender: &str) {
        self.done(
            "/api/v1/whitelist",
            json!({ "recipient": recipient, "sender": sender }),
        );
    }

    fn complain(&self, ip: IpAddr, sender: Option<&str>) {
        self.done("/api/v1/complain", json!({ "ip": ip, "sender": sender }));
    }

    fn set_limit(&self, quota: QuotaName, window: Window, limit: Option<u64>) {
        self.done(
            "/api/v1/limit",
            json!({ "quota": quota, "window": window, "limit": limit }),
        );
    }

    fn reset_counters(&self) {
        self.done("/api/v1/reset", json!({ "counters": true }));
    }

    fn reputation(&self, ip: IpAddr) -> u64 {
        let r: Reputation = self.call(self.get(&format!("/api/v1/reputation/{ip}")));
        r.reputation
    }

    fn blocks(&self) -> Vec<BlockInfo> {
        self.call(self.get("/api/v1/blocks"))
    }

    fn explain(&self, ip: IpAddr, at: SystemTime) -> Option<Decision> {
        let path = format!("/api/v1/explain?ip={ip}&at={}", Rfc3339(at));
        match self.get::<Explanation>(&path) {
            Ok(e) => Some(e.decision),
            Err(RemoteError::Status { status: 404, .. }) => None,
            Err(e) => panic!("{e}"),
        }
    }

    fn set_faults(&self, faults: Vec<Fault>) {
        let body = serde_json::to_value(faults).unwrap_or_default();
        let _: Value = self.call(self.put("/api/v1/faults", &body));
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
            .field("url", &self.base)
            .field("smtp", &self.smtp)
            .finish_non_exhaustive()
    }
}
