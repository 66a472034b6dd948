//! The routes of the control API and their handlers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures_util::stream::{self, Stream};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::stats::Stats;
use super::{Api, ApiError, OPENAPI, guard, metrics};
use crate::chaos::Fault;
use crate::clock::{Rfc3339, parse_rfc3339};
use crate::config::Config;
use crate::policy::{BlockInfo, Decision};
use crate::provenance;
use crate::reply::Generation;
use crate::scenario::Scenario;
use crate::store::{Event, EventKind, Folder, Message};
use crate::units::{IpNet, QuotaName, Window, duration_text};

type Shared = State<Arc<Api>>;
type Answer<T> = Result<T, ApiError>;

pub(super) fn router(api: Arc<Api>) -> Router {
    let v1 = Router::new()
        .route("/info", get(info))
        .route("/messages", get(messages).delete(delete_messages))
        .route("/message/{id}", get(message))
        .route("/message/{id}/raw", get(message_raw))
        .route("/events", get(events))
        .route("/events/stream", get(event_stream))
        .route("/stats", get(stats))
        .route("/replies", get(replies))
        .route("/blocks", get(blocks))
        .route("/explain", get(explain))
        .route("/reputation/{ip}", get(reputation))
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance))
        .route("/blacklist", post(blacklist))
        .route("/unblacklist", post(unblacklist))
        .route("/whitelist", post(whitelist))
        .route("/complain", post(complain))
        .route("/limit", post(set_limit))
        .route("/reset", post(reset))
        .route("/config", get(config).put(load_config))
        .route("/faults", get(faults).put(set_faults))
        .route("/scenario", axum::routing::put(load_scenario))
        .route("/mx/{mx}/down", post(mx_down))
        .route("/mx/{mx}/up", post(mx_up));
    let guarded = Router::new()
        .nest("/api/v1", v1)
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            api.clone(),
            guard::same_site,
        ))
        .layer(middleware::from_fn(guard::json_errors))
        .with_state(api)
}

/// Asks for `Authorization: Bearer <token>` when a token is set.
async fn require_token(State(api): Shared, request: Request, next: Next) -> Response {
    let Some(token) = api.options.token.as_deref() else {
        return next.run(request).await;
    };
    let mut given = request.headers().get_all(header::AUTHORIZATION).iter();
    let (first, second) = (given.next(), given.next());
    if second.is_some() {
        return ApiError::bad_request("more than one `Authorization` header").into_response();
    }
    let given = first.and_then(|v| v.to_str().ok()).and_then(bearer);
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        next.run(request).await
    } else {
        let mut response = ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "this API needs `Authorization: Bearer <token>` with the server's token"
                .into(),
        }
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
    }
}

/// The credentials of a `Bearer` authorization; the scheme is case-insensitive (RFC 9110
/// section 11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim_start())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: "this route does not take that method; see /openapi.json".into(),
    }
}

/// The query string, or a JSON error naming what is wrong with it.
fn query<T>(query: Result<Query<T>, QueryRejection>) -> Answer<T> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
}

/// A JSON body (an empty body reads as `{}`), or a JSON error naming what is wrong.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Answer<T> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

fn time(text: &str, name: &str) -> Answer<SystemTime> {
    parse_rfc3339(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`{name}`: `{text}` is not an RFC 3339 time such as 2025-06-02T09:00:00+08:00"
        ))
    })
}

fn duration(text: &str, name: &str) -> Answer<Duration> {
    duration_text::parse(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`{name}`: `{text}` is not a duration such as \"30s\", \"5m\" or \"1h30m\""
        ))
    })
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

async fn readyz(State(api): Shared) -> Response {
    if api.server.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status { status: "draining" }),
        )
            .into_response()
    } else {
        Json(Status { status: "ready" }).into_response()
    }
}

async fn metrics(State(api): Shared) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&api.server),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[derive(Serialize)]
struct Info {
    version: &'static str,
    generation: crate::reply::Generation,
    seed: u64,
    clock: ClockInfo,
    listeners: Vec<ListenerInfo>,
    draining: bool,
}

#[derive(Serialize)]
struct ListenerInfo {
    mx: String,
    addr: std::net::SocketAddr,
    host: String,
    /// Whether it accepts connections (false after `POST /api/v1/mx/{mx}/down`).
    up: bool,
}

async fn info(State(api): Shared) -> Json<Info> {
    let config = api.server.config();
    Json(Info {
        version: env!("CARGO_PKG_VERSION"),
        generation: config.generation,
        seed: config.seed,
        clock: clock_info(&api),
        listeners: api
            .options
            .listeners
            .iter()
            .map(|(mx, addr)| ListenerInfo {
                mx: mx.clone(),
                addr: *addr,
                host: config.listener_host(mx).to_owned(),
                up: api.server.is_mx_up(mx),
            })
            .collect(),
        draining: api.server.is_draining(),
    })
}

/// A message as the API shows it.
#[derive(Serialize)]
struct MessageView<'a> {
    #[serde(flatten)]
    message: &'a Message,
    size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<Vec<(String, String)>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_base64: Option<String>,
}

impl<'a> MessageView<'a> {
    fn new(message: &'a Message) -> Self {
        Self {
            message,
            size: message.raw.len(),
            subject: message.header("subject"),
            headers: None,
            raw_base64: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageFilter {
    /// A recipient, matched without regard to case.
    to: Option<String>,
    /// The envelope sender (`<>` or empty for the null sender).
    from: Option<String>,
    folder: Option<Folder>,
    mx: Option<String>,
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    start: usize,
    limit: Option<usize>,
    #[serde(default)]
    raw: bool,
}

#[derive(Serialize)]
struct MessageList<'a> {
    /// Messages that match, before `start` and `limit`.
    total: usize,
    start: usize,
    count: usize,
    messages: Vec<MessageView<'a>>,
}

async fn messages(
    State(api): Shared,
    filter: Result<Query<MessageFilter>, QueryRejection>,
) -> Answer<Response> {
    let f = query(filter)?;
    let since = f.since.as_deref().map(|t| time(t, "since")).transpose()?;
    let until = f.until.as_deref().map(|t| time(t, "until")).transpose()?;
    let from = f
        .from
        .as_deref()
        .map(|s| if s == "<>" { "" } else { s }.to_ascii_lowercase());
    let matches = |m: &Message| {
        f.to.as_ref()
            .is_none_or(|to| m.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(to)))
            && from
                .as_ref()
                .is_none_or(|from| m.mail_from.eq_ignore_ascii_case(from))
            && f.folder.is_none_or(|folder| m.folder == folder)
            && f.mx.as_ref().is_none_or(|mx| &m.mx == mx)
            && since.is_none_or(|t| m.received_at >= t)
            && until.is_none_or(|t| m.received_at <= t)
    };
    let (total, page) =
        api.server
            .store()
            .messages_page(f.start, f.limit.unwrap_or(usize::MAX), matches);
    let views: Vec<MessageView<'_>> = page
        .iter()
        .map(|m| {
            let mut view = MessageView::new(m);
            if f.raw {
                view.raw_base64 = Some(base64::engine::general_purpose::STANDARD.encode(&m.raw));
            }
            view
        })
        .collect();
    Ok(Json(MessageList {
        total,
        start: f.start,
        count: views.len(),
        messages: views,
    })
    .into_response())
}

#[derive(Serialize)]
struct Deleted {
    deleted: usize,
}

async fn delete_messages(State(api): Shared) -> Json<Deleted> {
    Json(Deleted {
        deleted: api.server.store().clear_messages(),
    })
}

fn find(api: &Api, id: &str) -> Answer<Message> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{id}` is not a message id")))?;
    api.server
        .store()
        .message(id)
        .ok_or_else(|| ApiError::not_found(format!("no message {id} in the store")))
}

async fn message(State(api): Shared, Path(id): Path<String>) -> Answer<Response> {
    let message = find(&api, &id)?;
    let mut view = MessageView::new(&message);
    view.headers = Some(headers(&message.raw));
    Ok(Json(view).into_response())
}

async fn message_raw(State(api): Shared, Path(id): Path<String>) -> Answer<Response> {
    let message = find(&api, &id)?;
    Ok((
        [(header::CONTENT_TYPE, "message/rfc822")],
        Body::from(Bytes::copy_from_slice(&message.raw)),
    )
        .into_response())
}

/// The header fields of `raw`, unfolded, in order.
fn headers(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    fields
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFilter {
    /// Only events with a sequence number above this. The list reads from the start of
    /// the log without it; the stream from the live end (unless `history`).
    after: Option<u64>,
    /// For the stream without `after`: replay the events held before following.
    #[serde(default)]
    history: bool,
    session: Option<u64>,
    client: Option<IpAddr>,
    /// The event type (`reply`, `decision`, ...).
    #[serde(rename = "type")]
    kind: Option<String>,
    limit: Option<usize>,
}

impl EventFilter {
    fn matches(&self, event: &Event) -> bool {
        self.session.is_none_or(|s| event.session == s)
            && self.client.is_none_or(|c| event.client == c)
            && self
                .kind
                .as_deref()
                .is_none_or(|k| k == event_type(&event.kind))
    }
}

/// The `type` tag of an event, as it is serialized.
fn event_type(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Connected { .. } => "connected",
        EventKind::Command { .. } => "command",
        EventKind::Reply(_) => "reply",
        EventKind::Decision(_) => "decision",
        EventKind::TlsStarted => "tls_started",
        EventKind::TlsFailed { .. } => "tls_failed",
        EventKind::Discarded { .. } => "discarded",
        EventKind::Spf(_) => "spf",
        EventKind::Authenticated(_) => "authenticated",
        EventKind::Fault { .. } => "fault",
        EventKind::Accepted { .. } => "accepted",
        EventKind::Closed { .. } => "closed",
    }
}

/// The most events one request returns.
const MAX_EVENTS: usize = 10_000;

#[derive(Serialize)]
struct EventList {
    events: Vec<Event>,
    /// The sequence number to pass as `after` for the next page.
    next_after: u64,
}

async fn events(
    State(api): Shared,
    filter: Result<Query<EventFilter>, QueryRejection>,
) -> Answer<Json<EventList>> {
    let f = query(filter)?;
    if f.history {
        return Err(ApiError::bad_request(
            "`history` belongs to /events/stream; the list reads from `after`",
        ));
    }
    let limit = f.limit.unwrap_or(MAX_EVENTS).min(MAX_EVENTS);
    let mut after = f.after.unwrap_or(0);
    let mut found = Vec::new();
    // Scan in slices, each under the lock once, copying only what matches: a narrow
    // filter over a long log neither holds the lock long nor copies the log.
    while found.len() < limit {
        let (page, last) = api
            .server
            .store()
            .scan_events(after, SCAN, limit - found.len(), |e| f.matches(e));
        if last == after {
            break;
        }
        after = last;
        found.extend(page);
    }
    Ok(Json(EventList {
        next_after: after,
        events: found,
    }))
}

/// How many events one look at the store scans.
const SCAN: usize = 4096;

/// How long a stream waits after new events before it reads them: a stream reads the
/// store at most this often, in batches, however fast SMTP records events.
const STREAM_BATCH: Duration = Duration::from_millis(50);

/// The most events a stream holds read but not yet sent.
const STREAM_QUEUE: usize = 256;

async fn event_stream(
    State(api): Shared,
    filter: Result<Query<EventFilter>, QueryRejection>,
) -> Answer<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let filter = query(filter)?;
    if filter.history && filter.after.is_some() {
        return Err(ApiError::bad_request(
            "give at most one of `after` and `history`",
        ));
    }
    let store = api.server.store().clone();
    // Subscribe before reading where the log ends, so that nothing recorded in between
    // is missed.
    let newest = store.subscribe();
    let after = match filter.after {
        Some(after) => after,
        None if filter.history => 0,
        None => store.last_seq(),
    };
    let follow = Follow {
        newest,
        store,
        after,
        filter,
        queue: VecDeque::new(),
    };
    let events = stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        let sse = SseEvent::default()
            .id(event.seq.to_string())
            .event(event_type(&event.kind))
            .data(serde_json::to_string(&event).unwrap_or_default());
        Some((Ok(sse), follow))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// A live reader of the event log. It is polled only as fast as its client reads (the
/// connection stops asking for more while its send buffer is full), and holds at most
/// [`STREAM_QUEUE`] events, so a client that does not read costs nothing but its socket.
/// A client that falls behind further than the log holds skips what was evicted.
struct Follow {
    store: crate::store::Store,
    newest: tokio::sync::watch::Receiver<u64>,
    /// The last event looked at.
    after: u64,
    filter: EventFilter,
    queue: VecDeque<Event>,
}

impl Follow {
    /// The next matching event, waiting for it; `None` once the store is gone.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            let filter = &self.filter;
            let (page, last) = self
                .store
                .scan_events(self.after, SCAN, STREAM_QUEUE, |e| filter.matches(e));
            if last != self.after {
                self.after = last;
                self.queue.extend(page);
                continue;
            }
            self.newest.changed().await.ok()?;
            // Let events gather: one read for many, not one wake-up per event.
            tokio::time::sleep(STREAM_BATCH).await;
        }
    }
}

async fn stats(State(api): Shared) -> Json<Stats> {
    let store = api.server.store();
    Json(Stats::new(
        store.stats(),
        store.sessions_total(),
        api.server.active_connections(),
        store.replies_total(),
        store.tally(),
        api.server.with_policy(|p, now| p.blocks(now)),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepliesQuery {
    generation: Option<Generation>,
}

/// The reply catalogue with the provenance of every text and stage.
async fn replies(
    q: Result<Query<RepliesQuery>, QueryRejection>,
) -> Answer<Json<Vec<provenance::Entry>>> {
    let generations = query(q)?
        .generation
        .map_or(Generation::ALL.to_vec(), |g| vec![g]);
    Ok(Json(
        generations
            .into_iter()
            .flat_map(provenance::entries)
            .collect(),
    ))
}

async fn blocks(State(api): Shared) -> Json<Vec<BlockInfo>> {
    Json(api.server.with_policy(|p, now| p.blocks(now)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainQuery {
    ip: IpAddr,
    /// The time to look back from; now when unset.
    at: Option<String>,
}

#[derive(Serialize)]
struct Explanation {
    #[serde(with = "crate::clock::rfc3339")]
    at: SystemTime,
    session: u64,
    decision: Decision,
}

async fn explain(
    State(api): Shared,
    q: Result<Query<ExplainQuery>, QueryRejection>,
) -> Answer<Json<Explanation>> {
    let q = query(q)?;
    let at = match &q.at {
        Some(t) => time(t, "at")?,
        None => api.server.clock().now(),
    };
    api.server
        .store()
        .find_last(|e| {
            e.client == q.ip
                && e.at <= at
                && matches!(&e.kind, EventKind::Decision(d) if !d.is_accept())
        })
        .and_then(|e| match e.kind {
            EventKind::Decision(decision) => Some(Explanation {
                at: e.at,
                session: e.session,
                decision,
            }),
            _ => None,
        })
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no refusal of {} at or before {} in the event log",
                q.ip,
                Rfc3339(at)
            ))
        })
}

#[derive(Serialize)]
struct Reputation {
    ip: IpAddr,
    reputation: u64,
}

async fn reputation(State(api): Shared, Path(ip): Path<String>) -> Answer<Json<Reputation>> {
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{ip}` is not an IP address")))?;
    let reputation = api.server.with_policy(|p, now| p.reputation(ip, now));
    Ok(Json(Reputation { ip, reputation }))
}

#[derive(Serialize)]
struct ClockInfo {
    #[serde(with = "crate::clock::rfc3339")]
    now: SystemTime,
    manual: bool,
}

fn clock_info(api: &Api) -> ClockInfo {
    let clock = api.server.clock();
    ClockInfo {
        now: clock.now(),
        manual: clock.is_manual(),
    }
}

async fn clock(State(api): Shared) -> Json<ClockInfo> {
    Json(clock_info(&api))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    /// How far, as text (`"10m"`).
    by: Option<String>,
    /// How far, in seconds.
    seconds: Option<u64>,
}

async fn advance(State(api): Shared, bytes: Bytes) -> Answer<Json<ClockInfo>> {
    let advance: Advance = body(&bytes)?;
    let by = match (&advance.by, advance.seconds) {
        (Some(text), None) => duration(text, "by")?,
        (None, Some(secs)) => Duration::from_secs(secs),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `by` (\"10m\") and `seconds` (600)",
            ));
        }
    };
    if !api.server.clock().is_manual() {
        return Err(ApiError::conflict(
            "the server runs on the system clock, which cannot be advanced; start it with [clock] mode = \"manual\" (QQMX__CLOCK__MODE=manual)",
        ));
    }
    api.server.clock().advance(by);
    Ok(Json(clock_info(&api)))
}

/// What a blacklist request names: exactly one of an IP (or range) and a sender.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Listing {
    ip: Option<String>,
    /// A sender address (`a@example.org`) or domain (`example.org`).
    sender: Option<String>,
    /// When the listing ends (RFC 3339).
    until: Option<String>,
    /// How long the listing lasts (`"2h"`); the alternative to `until`.
    #[serde(rename = "for")]
    lasting: Option<String>,
}

enum Target {
    Ip(IpNet),
    Sender(String),
}

impl Listing {
    fn target(&self) -> Answer<Target> {
        match (&self.ip, &self.sender) {
            (Some(ip), None) => ip
                .parse::<IpNet>()
                .map(Target::Ip)
                .map_err(|e| ApiError::bad_request(format!("`ip`: {e}"))),
            (None, Some(sender)) if !sender.trim().is_empty() => {
                Ok(Target::Sender(sender.trim().to_owned()))
            }
            _ => Err(ApiError::bad_request(
                "give exactly one of `ip` (an address or CIDR range) and `sender` (an address or domain)",
            )),
        }
    }

    fn until(&self, now: SystemTime) -> Answer<Option<SystemTime>> {
        match (&self.until, &self.lasting) {
            (Some(t), None) => time(t, "until").map(Some),
            (None, Some(d)) => Ok(Some(now + duration(d, "for")?)),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "give at most one of `until` and `for`",
            )),
        }
    }
}

#[derive(Serialize)]
struct Done {
    ok: bool,
}

const DONE: Json<Done> = Json(Done { ok: true });

async fn blacklist(State(api): Shared, bytes: Bytes) -> Answer<Json<Done>> {
    let listing: Listing = body(&bytes)?;
    let target = listing.target()?;
    let until = listing.until(api.server.clock().now())?;
    api.server.with_policy(|p, _| match target {
        Target::Ip(net) => p.blacklist_ip(net, until),
        Target::Sender(sender) => p.blacklist_sender(&sender, until),
    });
    Ok(DONE)
}

async fn unblacklist(State(api): Shared, bytes: Bytes) -> Answer<Json<Done>> {
    let listing: Listing = body(&bytes)?;
    if listing.until.is_some() || listing.lasting.is_some() {
        return Err(ApiError::bad_request(
            "`until` and `for` belong to /blacklist",
        ));
    }
    let target = listing.target()?;
    api.server.with_policy(|p, _| match target {
        Target::Ip(net) => p.unblacklist_ip(net),
        Target::Sender(sender) => p.unblacklist_sender(&sender),
    });
    Ok(DONE)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Whitelist {
    recipient: String,
    sender: String,
}

async fn whitelist(State(api): Shared, bytes: Bytes) -> Answer<Json<Done>> {
    let w: Whitelist = body(&bytes)?;
    api.server
        .with_policy(|p, _| p.whitelist(&w.recipient, &w.sender));
    Ok(DONE)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Complaint {
    ip: IpAddr,
    sender: Option<String>,
}

async fn complain(State(api): Shared, bytes: Bytes) -> Answer<Json<Reputation>> {
    let c: Complaint = body(&bytes)?;
    let reputation = api.server.with_policy(|p, now| {
        p.complain(c.ip, c.sender.as_deref(), now);
        p.reputation(c.ip, now)
    });
    Ok(Json(Reputation {
        ip: c.ip,
        reputation,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    quota: QuotaName,
    window: Window,
    /// The new limit; `null` removes the tier.
    limit: Option<u64>,
}

async fn set_limit(State(api): Shared, bytes: Bytes) -> Answer<Json<Done>> {
    let l: Limit = body(&bytes)?;
    api.server
        .with_policy(|p, _| p.set_limit(l.quota, l.window, l.limit));
    Ok(DONE)
}

/// What to reset; an empty body resets the store and the policy.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    /// Forget messages and events.
    store: Option<bool>,
    /// Start the policy afresh from the config: counters, blocks, runtime listings,
    /// whitelists, complaints and reputation.
    policy: Option<bool>,
    /// Forget quota counters and blocks only.
    counters: Option<bool>,
}

async fn reset(State(api): Shared, bytes: Bytes) -> Answer<Json<Done>> {
    let r: Reset = body(&bytes)?;
    let everything = r.store.is_none() && r.policy.is_none() && r.counters.is_none();
    if everything || r.policy == Some(true) {
        let config = Config::clone(&api.server.config());
        api.server
            .reload(config)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    } else if r.counters == Some(true) {
        api.server.with_policy(|p, _| p.reset_counters());
    }
    if everything || r.store == Some(true) {
        api.server.store().clear();
    }
    Ok(DONE)
}

async fn config(State(api): Shared) -> Json<Config> {
    Json(Config::clone(&api.server.config()))
}

#[derive(Serialize)]
struct ConfigLoaded {
    ok: bool,
    /// Whether the server's `--no-limits` was applied over the config loaded.
    no_limits: bool,
}

/// Loads a new config in place of the one in force: TOML as in a config file, or JSON
/// (`Content-Type: application/json`) shaped as `GET /api/v1/config` answers. A server
/// started with `--no-limits` keeps its limits off: the switch applies over every config
/// loaded, as it did over the one it started with.
async fn load_config(
    State(api): Shared,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer<Json<ConfigLoaded>> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "an empty config: send the whole config (an empty one would reset every key)",
        ));
    }
    let config = if is_json {
        let config: Config = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("<request body>: {e}")))?;
        config
            .check()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        config
    } else {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ApiError::bad_request("the config must be UTF-8 TOML"))?;
        Config::parse_named(text, std::path::Path::new("<request body>"))
            .map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let no_limits = api.options.no_limits;
    let config = if no_limits {
        config.no_limits()
    } else {
        config
    };
    api.server
        .reload(config)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(ConfigLoaded {
        ok: true,
        no_limits,
    }))
}

async fn faults(State(api): Shared) -> Json<Vec<Fault>> {
    Json(api.server.faults())
}

/// Replaces the faults in force with the list in the body (`[]` clears them).
async fn set_faults(State(api): Shared, bytes: Bytes) -> Answer<Json<Done>> {
    let faults: Vec<Fault> = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))?;
    for (i, fault) in faults.iter().enumerate() {
        fault
            .check()
            .map_err(|e| ApiError::bad_request(format!("fault {i}: {e}")))?;
    }
    api.server.set_faults(faults);
    Ok(DONE)
}

fn listener(api: &Api, mx: &str) -> Answer<()> {
    if api.options.listeners.iter().any(|(name, _)| name == mx) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no listener called `{mx}`")))
    }
}

async fn mx_down(State(api): Shared, Path(mx): Path<String>) -> Answer<Json<Done>> {
    listener(&api, &mx)?;
    api.server.set_mx_up(&mx, false);
    Ok(DONE)
}

async fn mx_up(State(api): Shared, Path(mx): Path<String>) -> Answer<Json<Done>> {
    listener(&api, &mx)?;
    api.server.set_mx_up(&mx, true);
    Ok(DONE)
}

#[derive(Serialize)]
struct Loaded {
    ok: bool,
    name: String,
    phases: usize,
    /// The server's clock when the scenario was applied: its timeline's zero.
    #[serde(with = "crate::clock::rfc3339")]
    started: SystemTime,
}

/// Loads a scenario (TOML) in place of the config: its config and seed, its faults, and
/// its timeline, played from now by the server's clock. A timeline still playing from an
/// earlier load stops. The scenario's own clock does not apply: the server keeps its.
async fn load_scenario(State(api): Shared, bytes: Bytes) -> Answer<Json<Loaded>> {
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("the scenario must be UTF-8 TOML"))?;
    let scenario = Scenario::parse_named(text, std::path::Path::new("<request body>"))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut config = scenario.config.clone();
    config.seed = scenario.seed;
    api.server
        .reload(config)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    api.server.set_faults(scenario.faults.clone());
    // The timeline begins when the scenario is applied, not whenever the task first runs:
    // a clock advanced right after this answer must count.
    let start = api.server.clock().now();
    let loaded = Loaded {
        ok: true,
        name: scenario.name.clone(),
        phases: scenario.phases.len(),
        started: start,
    };
    let task = tokio::spawn(crate::timeline::play(api.server.clone(), scenario, start));
    let mut current = api
        .scenario
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(old) = current.replace(task) {
        old.abort();
    }
    Ok(Json(loaded))
}
