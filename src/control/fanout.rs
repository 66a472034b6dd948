//! Any replica's API answering for all (the Redis state): it asks every registered
//! replica for its own (`scope=local`, so the question never travels further), with the
//! caller's bearer token and within `state.peer_timeout`, merges the answers, and says
//! which replicas answered. A replica that does not answer in time, or answers with an
//! error, is named in the answer's `replicas` and left out; it never fails the request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Value, json};

use super::replicas::{Peer, Registration, Registry};
use super::{ApiError, wire::Answer};
use crate::clock::parse_rfc3339;
use crate::config::{Config, StateBackend};

/// The most bytes of one replica's answer read (a list with raw sources can be large).
const MAX_ANSWER: usize = 512 * 1024 * 1024;

/// What a replica's API needs to answer for all.
pub(super) struct Fanout {
    registry: Arc<Registry>,
    /// This replica's own registration, renewed while the API lives.
    _registration: Option<Registration>,
    name: String,
    token: Option<String>,
    timeout: Duration,
}

/// Whether a replica answered, in a merged answer's `replicas`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ReplicaStatus {
    pub(super) replica: String,
    pub(super) ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
}

/// The answers of the replicas asked, and how each fared (this one first).
pub(super) struct Gathered {
    /// Each replica that answered `200` with JSON, with its answer.
    pub(super) answers: Vec<(String, Value)>,
    pub(super) replicas: Vec<ReplicaStatus>,
}

/// One answer from another replica.
pub(super) struct Fetched {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

impl Fetched {
    /// The answer as this API's own: status, type and body.
    pub(super) fn relay(self) -> Response {
        let mut response = (self.status, Body::from(self.body)).into_response();
        if let Some(kind) = self.content_type {
            response.headers_mut().insert(header::CONTENT_TYPE, kind);
        }
        response
    }

    /// A `200` answer with `value` as its JSON body.
    pub(super) fn of_json(value: &Value) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: Some(HeaderValue::from_static("application/json")),
            body: Bytes::from(value.to_string()),
        }
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl Fanout {
    /// The fan-out of a replica whose config keeps its state in Redis; `None` with the
    /// memory state. With `advertise`, the replica registers its API there.
    pub(super) fn start(
        config: &Config,
        advertise: Option<String>,
        token: Option<String>,
    ) -> Option<Self> {
        let state = &config.state;
        if state.backend != StateBackend::Redis {
            return None;
        }
        let registry = Registry::new(state)?;
        let registration = match advertise {
            Some(url) => Some(registry.register(url)),
            None => {
                tracing::warn!(
                    replica = state.replica_name(),
                    "no URL to register this replica's control API at (set `state.advertise`, --advertise, when the API listens on 0.0.0.0 or [::]): the other replicas' APIs do not list this one's messages and events"
                );
                None
            }
        };
        Some(Self {
            registry,
            _registration: registration,
            name: state.replica_name().to_owned(),
            token,
            timeout: state.peer_timeout,
        })
    }

    /// This replica's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The registered replica `name`, another than this one.
    pub(super) async fn peer(&self, name: &str) -> Answer<Peer> {
        let found = self.registry.peers().await;
        found
            .peers
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "no replica `{name}` is registered (a replica that stopped drops out after `state.advertise_ttl`)"
                ))
            })
    }

    /// `GET path(name)` on every other registered replica at once, each within the
    /// timeout.
    pub(super) async fn gather(&self, path: impl Fn(&str) -> String) -> Gathered {
        self.gather_each(&Method::GET, |name| Some((path(name), None)))
            .await
    }

    /// `method` on every other registered replica that `ask(name)` gives a path (and a
    /// JSON body) for, at once, each within the timeout.
    pub(super) async fn gather_each(
        &self,
        method: &Method,
        ask: impl Fn(&str) -> Option<(String, Option<String>)>,
    ) -> Gathered {
        let found = self.registry.peers().await;
        let mut replicas = vec![ReplicaStatus {
            replica: self.name.clone(),
            ok: true,
            error: found.error,
        }];
        let asks: Vec<_> = found
            .peers
            .into_iter()
            .filter_map(|peer| {
                let (path, body) = ask(&peer.name)?;
                let call = Call {
                    method: method.clone(),
                    path,
                    body,
                    token: self.token.clone(),
                };
                let timeout = self.timeout;
                let name = peer.name.clone();
                let task = tokio::spawn(async move { fetch(&peer, &call, timeout).await });
                Some((name, task))
            })
            .collect();
        let mut answers = Vec::new();
        for (name, task) in asks {
            let result = task
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .and_then(|fetched| json_of(fetched, &name));
            match result {
                Ok(value) => {
                    answers.push((name.clone(), value));
                    replicas.push(ReplicaStatus {
                        replica: name,
                        ok: true,
                        error: None,
                    });
                }
                Err(error) => {
                    tracing::warn!(replica = %name, %error, "another replica did not answer");
                    replicas.push(ReplicaStatus {
                        replica: name,
                        ok: false,
                        error: Some(error),
                    });
                }
            }
        }
        Gathered { answers, replicas }
    }

    /// `GET path` on `peer`, or a `502` saying why it did not answer.
    pub(super) async fn ask(&self, peer: &Peer, path: &str) -> Answer<Fetched> {
        let call = Call {
            method: Method::GET,
            path: path.to_owned(),
            body: None,
            token: self.token.clone(),
        };
        fetch(peer, &call, self.timeout)
            .await
            .map_err(|e| ApiError {
                status: StatusCode::BAD_GATEWAY,
                message: format!("replica `{}` did not answer: {e}", peer.name),
            })
    }
}

/// A `200` JSON answer's value, or why there is none.
fn json_of(fetched: Fetched, name: &str) -> Result<Value, String> {
    if fetched.status != StatusCode::OK {
        let said = fetched
            .json()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(format!("answered {}: {said}", fetched.status));
    }
    fetched
        .json()
        .ok_or_else(|| format!("replica `{name}` answered something other than JSON"))
}

/// One request to another replica's API.
struct Call {
    method: Method,
    /// The path and query.
    path: String,
    /// A JSON body.
    body: Option<String>,
    token: Option<String>,
}

/// One request on a replica's API: connect, send, read the whole answer, within
/// `timeout`.
async fn fetch(peer: &Peer, call: &Call, timeout: Duration) -> Result<Fetched, String> {
    let path = &call.path;
    let rest = peer
        .url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{}` is not an http:// URL", peer.url))?;
    let (authority, base) = rest.split_once('/').unwrap_or((rest, ""));
    let base = base.trim_end_matches('/');
    let addr = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:80")
    } else {
        authority.to_owned()
    };
    let target = if base.is_empty() {
        path.to_owned()
    } else {
        format!("/{base}{path}")
    };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", peer.url))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| describe(&e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(target.as_str())
            .header(header::HOST, authority);
        if let Some(token) = &call.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if call.body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(call.body.clone().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| describe(&e))?;
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(Body::new(body), MAX_ANSWER)
            .await
            .map_err(|e| describe(&e))?;
        Ok(Fetched {
            status: parts.status,
            content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

/// An error with its causes: hyper's own says little (`connection error`).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// The pairs of a raw query string but those named in `drop`, with `add` after them.
pub(super) fn requery(raw: Option<&str>, drop: &[&str], add: &[(&str, String)]) -> String {
    let mut pairs: Vec<String> = raw
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let key = p.split_once('=').map_or(*p, |(k, _)| k);
            !drop.contains(&key)
        })
        .map(str::to_owned)
        .collect();
    pairs.extend(add.iter().map(|(k, v)| format!("{k}={v}")));
    pairs.join("&")
}

/// `theirs` added into `ours`: numbers summed, objects merged key by key (a key only
/// in `theirs` taken as it is); anything else, such as a list, kept as ours.
pub(super) fn add_counts(ours: &mut Value, theirs: Value) {
    match (ours, theirs) {
        (Value::Number(a), Value::Number(b)) => {
            if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
                *a = x.saturating_add(y).into();
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in b {
                match a.get_mut(&key) {
                    Some(mine) => add_counts(mine, value),
                    None => {
                        a.insert(key, value);
                    }
                }
            }
        }
        _ => {}
    }
}

/// An RFC 3339 field of a JSON object, the epoch when missing.
fn time_of(value: &Value, field: &str) -> SystemTime {
    value[field]
        .as_str()
        .and_then(parse_rfc3339)
        .unwrap_or(UNIX_EPOCH)
}

/// The order of messages from several replicas: when accepted, then replica, then id.
fn message_key(m: &Value) -> (SystemTime, String, u64) {
    (
        time_of(m, "received_at"),
        m["replica"].as_str().unwrap_or_default().to_owned(),
        m["id"].as_u64().unwrap_or(0),
    )
}

/// The newest of messages given as one message's JSON each (the answers of
/// `/message/{replica}:latest`).
pub(super) fn newest(messages: Vec<Value>) -> Option<Value> {
    messages.into_iter().max_by_key(message_key)
}

/// Lists of messages (as `GET /api/v1/messages` answers them) merged into one: the
/// totals added, the messages in order (oldest first, or newest first as search lists
/// them), then `start` and `limit`.
pub(super) fn merge_messages(
    lists: Vec<Value>,
    newest_first: bool,
    start: usize,
    limit: usize,
    replicas: Vec<ReplicaStatus>,
) -> Value {
    let mut total = 0u64;
    let mut messages = Vec::new();
    for mut list in lists {
        total += list["total"].as_u64().unwrap_or(0);
        if let Value::Array(page) = list["messages"].take() {
            messages.extend(page);
        }
    }
    messages.sort_by_cached_key(message_key);
    if newest_first {
        messages.reverse();
    }
    let page: Vec<Value> = messages.into_iter().skip(start).take(limit).collect();
    json!({
        "total": total,
        "start": start,
        "count": page.len(),
        "messages": page,
        "messages_count": total,
        "unread": 0,
        "messages_unread": 0,
        "tags": [],
        "replicas": replicas,
    })
}

/// Where a merged list of events goes on from: per replica, the last sequence number
/// looked at. As text: `a:120,b:57`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Cursor(BTreeMap<String, u64>);

impl Cursor {
    /// The cursor of `text`, or a 400 naming what is wrong.
    pub(super) fn parse(text: &str) -> Answer<Self> {
        let mut map = BTreeMap::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let parsed = part
                .rsplit_once(':')
                .and_then(|(name, seq)| Some((name, seq.parse::<u64>().ok()?)));
            let Some((name, seq)) = parsed else {
                return Err(ApiError::bad_request(format!(
                    "`cursor`: `{part}` is not `replica:seq`; pass the `next_cursor` of the previous page"
                )));
            };
            map.insert(name.to_owned(), seq);
        }
        Ok(Self(map))
    }

    /// Where `replica`'s events go on from.
    pub(super) fn after(&self, replica: &str) -> u64 {
        self.0.get(replica).copied().unwrap_or(0)
    }

    fn text(&self) -> String {
        self.0
            .iter()
            .map(|(name, seq)| format!("{name}:{seq}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One replica's page of events: its events (in its order, each with `replica`) and the
/// `next_after` it answered.
pub(super) struct EventPage {
    pub(super) replica: String,
    pub(super) events: Vec<Value>,
    pub(super) next_after: u64,
}

/// Pages of events from several replicas merged by time, then replica, then sequence
/// number, at most `limit`; the cursor after them. A replica's events stay in its own
/// order, so the cursor says exactly where each goes on.
pub(super) fn merge_events(
    pages: Vec<EventPage>,
    cursor: &Cursor,
    limit: usize,
    replicas: Vec<ReplicaStatus>,
) -> Value {
    let mut next = cursor.clone();
    let mut queues: Vec<(String, std::collections::VecDeque<Value>, u64)> = pages
        .into_iter()
        .map(|p| (p.replica, p.events.into(), p.next_after))
        .collect();
    let mut merged = Vec::new();
    while merged.len() < limit {
        let head = queues
            .iter()
            .enumerate()
            .filter_map(|(i, (name, queue, _))| {
                queue
                    .front()
                    .map(|e| ((time_of(e, "at"), name.clone(), e["seq"].as_u64()), i))
            })
            .min();
        let Some((_, i)) = head else { break };
        let (name, queue, _) = &mut queues[i];
        if let Some(event) = queue.pop_front() {
            next.0
                .insert(name.clone(), event["seq"].as_u64().unwrap_or(0));
            merged.push(event);
        }
    }
    // A replica whose events were all taken goes on from where its own scan ended.
    for (name, queue, next_after) in &queues {
        if queue.is_empty() {
            next.0.insert(name.clone(), *next_after);
        }
    }
    json!({
        "events": merged,
        "next_cursor": next.text(),
        "replicas": replicas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(replica: &str, seq: u64, at: &str) -> Value {
        json!({"replica": replica, "seq": seq, "at": at})
    }

    fn ok(names: &[&str]) -> Vec<ReplicaStatus> {
        names
            .iter()
            .map(|n| ReplicaStatus {
                replica: (*n).to_owned(),
                ok: true,
                error: None,
            })
            .collect()
    }

    #[test]
    fn events_merge_by_time_then_replica_and_the_cursor_goes_on_exactly() {
        let t = |s: u32| format!("2025-06-02T01:00:{s:02}.000000Z");
        let pages = || {
            vec![
                EventPage {
                    replica: "b".into(),
                    events: vec![event("b", 4, &t(1)), event("b", 5, &t(3))],
                    next_after: 9,
                },
                EventPage {
                    replica: "a".into(),
                    events: vec![event("a", 1, &t(1)), event("a", 2, &t(2))],
                    next_after: 2,
                },
            ]
        };
        let all = merge_events(pages(), &Cursor::default(), 10, ok(&["a", "b"]));
        let order: Vec<(String, u64)> = all["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                (
                    e["replica"].as_str().expect("replica").to_owned(),
                    e["seq"].as_u64().expect("seq"),
                )
            })
            .collect();
        assert_eq!(
            order,
            [
                ("a".into(), 1),
                ("b".into(), 4),
                ("a".into(), 2),
                ("b".into(), 5)
            ]
        );
        assert_eq!(all["next_cursor"], "a:2,b:9");

        let first = merge_events(pages(), &Cursor::default(), 3, ok(&["a", "b"]));
        assert_eq!(first["next_cursor"], "a:2,b:4", "b's 5 is still to come");
        let cursor = Cursor::parse(first["next_cursor"].as_str().expect("text")).expect("parses");
        assert_eq!(
            (cursor.after("a"), cursor.after("b"), cursor.after("c")),
            (2, 4, 0)
        );
        assert!(Cursor::parse("a:1,b").is_err());
    }

    #[test]
    fn messages_merge_in_order_then_page() {
        let m = |replica: &str, id: u64, s: u32| json!({"replica": replica, "id": id, "received_at": format!("2025-06-02T01:00:{s:02}.000000Z")});
        let lists = vec![
            json!({"total": 2, "messages": [m("a", 1, 1), m("a", 2, 4)]}),
            json!({"total": 3, "messages": [m("b", 1, 2), m("b", 2, 3)]}),
        ];
        let merged = merge_messages(lists.clone(), false, 1, 2, ok(&["a"]));
        let ids: Vec<String> = merged["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| format!("{}:{}", m["replica"].as_str().expect("r"), m["id"]))
            .collect();
        assert_eq!(ids, ["b:1", "b:2"]);
        assert_eq!(
            (merged["total"].as_u64(), merged["count"].as_u64()),
            (Some(5), Some(2))
        );
        let newest = merge_messages(lists, true, 0, 1, ok(&["a"]));
        assert_eq!(newest["messages"][0]["id"], 2);
        assert_eq!(newest["messages"][0]["replica"], "a");
    }

    #[test]
    fn counts_add_up_and_lists_stay() {
        let mut ours = json!({"held": {"messages": 2}, "replies": {"ok": 1}, "blocks": [1]});
        add_counts(
            &mut ours,
            json!({"held": {"messages": 3}, "replies": {"ok": 1, "ip_frequency": 4}, "blocks": [1]}),
        );
        assert_eq!(
            ours,
            json!({"held": {"messages": 5}, "replies": {"ok": 2, "ip_frequency": 4}, "blocks": [1]})
        );
    }

    #[test]
    fn requery_drops_and_adds() {
        assert_eq!(
            requery(
                Some("to=x%40qq.com&start=3&scope=all"),
                &["start", "scope"],
                &[("scope", "local".into())]
            ),
            "to=x%40qq.com&scope=local"
        );
        assert_eq!(requery(None, &[], &[("limit", "2".into())]), "limit=2");
    }
}
