//! The routes of the control API and their handlers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};

use super::fanout::{Cursor, EventPage, add_counts, merge_events, requery};
use super::wire::{Answer, ApiState, Reputation, Scope, body, duration, query, time};
use super::{Api, ApiError, OPENAPI, ca, commands, dashboard, guard, messages, metrics};
use crate::clock::Rfc3339;
use crate::config::Config;
use crate::event::{Event, EventKind};
use crate::inspect::{self, Refusal};
use crate::policy::BlockInfo;
use crate::provenance;
use crate::reply::Generation;
use crate::scenario::Scenario;

pub(super) fn router(api: Arc<Api>) -> Router {
    let v1 = Router::new()
        .route("/info", get(info))
        .route(
            "/messages",
            get(messages::messages).delete(messages::delete_messages),
        )
        .route("/message/{id}", get(messages::message))
        .route("/message/{id}/raw", get(messages::message_raw))
        .route("/message/{id}/headers", get(messages::message_headers))
        .route(
            "/search",
            get(messages::search).delete(messages::delete_search),
        )
        .route("/events", get(events))
        .route("/events/stream", get(event_stream))
        .route("/stats", get(stats))
        .route("/replies", get(replies))
        .route("/blocks", get(blocks))
        .route("/explain", get(explain))
        .route("/reputation/{ip}", get(reputation))
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance))
        .route("/blacklist", post(commands::blacklist))
        .route("/unblacklist", post(commands::unblacklist))
        .route("/whitelist", post(commands::whitelist))
        .route("/complain", post(commands::complain))
        .route("/limit", post(commands::set_limit))
        .route("/reset", post(commands::reset))
        .route("/config", get(config).put(load_config))
        .route("/faults", get(commands::faults).put(commands::set_faults))
        .route("/scenario", axum::routing::put(load_scenario))
        .route("/mx/{mx}/down", post(commands::mx_down))
        .route("/mx/{mx}/up", post(commands::mx_up))
        .route("/tls/ca.pem", get(ca::ca_pem));
    let guarded = Router::new()
        .nest("/api/v1", v1)
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route_layer(middleware::from_fn(guard::strict_inputs))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(dashboard::index))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style))
        .route_layer(middleware::from_fn(guard::strict_inputs))
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
async fn require_token(State(api): ApiState, request: Request, next: Next) -> Response {
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

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

async fn readyz(State(api): ApiState) -> Response {
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

async fn metrics(State(api): ApiState) -> Response {
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
    /// The DNS server's address, `None` when it does not run.
    dns: Option<std::net::SocketAddr>,
    draining: bool,
    /// This replica's name.
    replica: String,
    /// Where the policy's state lives.
    state: crate::config::StateBackend,
}

#[derive(Serialize)]
struct ListenerInfo {
    mx: String,
    addr: std::net::SocketAddr,
    host: String,
    /// Whether it accepts connections (false after `POST /api/v1/mx/{mx}/down`).
    up: bool,
}

async fn info(State(api): ApiState) -> Json<Info> {
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
        dns: api.options.dns,
        draining: api.server.is_draining(),
        replica: config.state.replica_name().to_owned(),
        state: config.state.backend,
    })
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
    scope: Option<Scope>,
    /// Where a list of every replica's events goes on (its `next_cursor`).
    cursor: Option<String>,
}

impl EventFilter {
    /// The filter, or a `400` for a `type` that no event has: a misspelt filter must not
    /// match nothing in silence.
    fn checked(self) -> Answer<Self> {
        match self.kind.as_deref() {
            Some(kind) if !EventKind::NAMES.contains(&kind) => Err(ApiError::bad_request(format!(
                "unknown event type `{kind}`; one of: {}",
                EventKind::NAMES.join(", ")
            ))),
            _ => Ok(self),
        }
    }

    fn matches(&self, event: &Event) -> bool {
        self.session.is_none_or(|s| event.session == s)
            && self.client.is_none_or(|c| event.client == c)
            && self.kind.as_deref().is_none_or(|k| k == event.kind.name())
    }
}

/// The most events one request returns.
const MAX_EVENTS: usize = 10_000;

/// An event as the API shows it: with the Redis state, with the replica that recorded it.
#[derive(Serialize)]
struct EventView<'a> {
    #[serde(flatten)]
    event: &'a Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<&'a str>,
}

fn views<'a>(events: &'a [Event], replica: Option<&'a str>) -> Vec<EventView<'a>> {
    events
        .iter()
        .map(|event| EventView { event, replica })
        .collect()
}

#[derive(Serialize)]
struct EventList<'a> {
    events: Vec<EventView<'a>>,
    /// The sequence number to pass as `after` for the next page.
    next_after: u64,
}

async fn events(
    State(api): ApiState,
    RawQuery(raw_query): RawQuery,
    filter: Result<Query<EventFilter>, QueryRejection>,
) -> Answer<Response> {
    let f = query(filter)?.checked()?;
    if f.history {
        return Err(ApiError::bad_request(
            "`history` belongs to /events/stream; the list reads from `after`",
        ));
    }
    let limit = f.limit.unwrap_or(MAX_EVENTS).min(MAX_EVENTS);
    let Some(fanout) = api.fanout(f.scope) else {
        if f.cursor.is_some() {
            return Err(ApiError::bad_request(
                "`cursor` pages a list of every replica's events (the Redis state); this list reads from `after`",
            ));
        }
        let (found, next_after) = local_events(&api, &f, f.after.unwrap_or(0), limit);
        let list = EventList {
            events: views(&found, api.replica()),
            next_after,
        };
        return Ok(Json(list).into_response());
    };
    if f.after.is_some() {
        return Err(ApiError::bad_request(
            "`after` is one replica's sequence number: page a list of every replica's events with `cursor` (the answer's `next_cursor`), or ask one replica's with `scope=local`",
        ));
    }
    let cursor = match &f.cursor {
        Some(text) => Cursor::parse(text)?,
        None => Cursor::default(),
    };
    let own = fanout.name();
    let (found, next_after) = local_events(&api, &f, cursor.after(own), limit);
    let gathered = fanout
        .gather(|name| {
            let add = [
                ("scope", "local".to_owned()),
                ("after", cursor.after(name).to_string()),
                ("limit", limit.to_string()),
            ];
            let drop = ["scope", "cursor", "after", "limit"];
            format!(
                "/api/v1/events?{}",
                requery(raw_query.as_deref(), &drop, &add)
            )
        })
        .await;
    let mut pages = vec![EventPage {
        replica: own.to_owned(),
        events: views(&found, Some(own))
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or_default())
            .collect(),
        next_after,
    }];
    for (replica, mut answer) in gathered.answers {
        let events = match answer["events"].take() {
            serde_json::Value::Array(events) => events,
            _ => Vec::new(),
        };
        let next_after = answer["next_after"]
            .as_u64()
            .unwrap_or(cursor.after(&replica));
        pages.push(EventPage {
            replica,
            events,
            next_after,
        });
    }
    Ok(Json(merge_events(pages, &cursor, limit, gathered.replicas)).into_response())
}

/// This replica's events that match `f` after `after`, at most `limit`, and the
/// sequence number to go on from.
fn local_events(api: &Api, f: &EventFilter, mut after: u64, limit: usize) -> (Vec<Event>, u64) {
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
    (found, after)
}

/// How many events one look at the store scans.
const SCAN: usize = 4096;

/// How long a stream waits after new events before it reads them: a stream reads the
/// store at most this often, in batches, however fast SMTP records events.
const STREAM_BATCH: Duration = Duration::from_millis(50);

/// The most events a stream holds read but not yet sent.
const STREAM_QUEUE: usize = 256;

async fn event_stream(
    State(api): ApiState,
    filter: Result<Query<EventFilter>, QueryRejection>,
) -> Answer<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let filter = query(filter)?.checked()?;
    if filter.history && filter.after.is_some() {
        return Err(ApiError::bad_request(
            "give at most one of `after` and `history`",
        ));
    }
    if filter.cursor.is_some() || filter.scope == Some(Scope::All) {
        return Err(ApiError::bad_request(
            "the stream follows the events of the replica asked (`scope=local`); follow each replica's stream, or list every replica's with /api/v1/events",
        ));
    }
    let replica = api.replica().map(str::to_owned);
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
    let events = stream::unfold(follow, move |mut follow| {
        let replica = replica.clone();
        async move {
            let event = follow.next().await?;
            let view = EventView {
                event: &event,
                replica: replica.as_deref(),
            };
            let sse = SseEvent::default()
                .id(event.seq.to_string())
                .event(event.kind.name())
                .data(serde_json::to_string(&view).unwrap_or_default());
            Some((Ok(sse), follow))
        }
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    scope: Option<Scope>,
}

/// What the store has counted; with the Redis state, the counts of every replica added
/// up (the blocks, in the shared state, are the same on every replica).
async fn stats(
    State(api): ApiState,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> Answer<Response> {
    let scope = query(q)?.scope;
    let stats = inspect::Stats::of(&api.server);
    let Some(fanout) = api.fanout(scope) else {
        return Ok(Json(stats).into_response());
    };
    let gathered = fanout
        .gather(|_| "/api/v1/stats?scope=local".to_owned())
        .await;
    let mut total = serde_json::to_value(&stats).unwrap_or_default();
    for (_, theirs) in gathered.answers {
        add_counts(&mut total, theirs);
    }
    total["replicas"] = serde_json::to_value(&gathered.replicas).unwrap_or_default();
    Ok(Json(total).into_response())
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

async fn blocks(State(api): ApiState) -> Json<Vec<BlockInfo>> {
    Json(inspect::blocks(&api.server))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainQuery {
    ip: IpAddr,
    /// The time to look back from; now when unset.
    at: Option<String>,
}

async fn explain(
    State(api): ApiState,
    q: Result<Query<ExplainQuery>, QueryRejection>,
) -> Answer<Json<Refusal>> {
    let q = query(q)?;
    let at = match &q.at {
        Some(t) => time(t, "at")?,
        None => api.server.clock().now(),
    };
    Refusal::last(api.server.store(), q.ip, at)
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no refusal of {} at or before {} in the event log",
                q.ip,
                Rfc3339(at)
            ))
        })
}

async fn reputation(State(api): ApiState, Path(ip): Path<String>) -> Answer<Json<Reputation>> {
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{ip}` is not an IP address")))?;
    let reputation = inspect::reputation(&api.server, ip);
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

async fn clock(State(api): ApiState) -> Json<ClockInfo> {
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

async fn advance(State(api): ApiState, bytes: Bytes) -> Answer<Json<ClockInfo>> {
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

/// The config in force, quota tiers changed through `/limit` included.
async fn config(State(api): ApiState) -> Json<Config> {
    Json(inspect::config_in_force(&api.server))
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
    State(api): ApiState,
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
async fn load_scenario(State(api): ApiState, bytes: Bytes) -> Answer<Json<Loaded>> {
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
