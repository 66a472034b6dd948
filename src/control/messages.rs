//! The message routes: qqmx's list, one message, its source and headers, deletes, and
//! Mailpit's search, in qqmx's shapes with Mailpit's fields beside them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::fanout::{self, Fanout, Fetched, Gathered, ReplicaStatus, merge_messages, requery};
use super::mailpit::{self, DeleteRequest, Search};
use super::wire::{Answer, ApiState, Scope, body, query, time};
use super::{Api, ApiError};
use crate::inspect::MessageFilter;
use crate::store::{Folder, Message};

/// A message as the API shows it.
#[derive(Serialize)]
struct MessageView<'a> {
    #[serde(flatten)]
    message: &'a Message,
    /// The replica that holds it, with the Redis state.
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<&'a str>,
    size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<Vec<(String, String)>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_base64: Option<String>,
    /// Mailpit's fields of a message in a list.
    #[serde(flatten)]
    summary: Option<mailpit::Summary>,
    /// Mailpit's fields of one message.
    #[serde(flatten)]
    detail: Option<mailpit::Detail>,
}

impl<'a> MessageView<'a> {
    /// The view in a list, with Mailpit's summary fields.
    fn listed(message: &'a Message, replica: Option<&'a str>) -> Self {
        Self {
            summary: Some(mailpit::Summary::new(message, replica)),
            ..Self::one(message, replica)
        }
    }

    /// qqmx's fields alone.
    fn one(message: &'a Message, replica: Option<&'a str>) -> Self {
        Self {
            message,
            replica,
            size: message.raw.len(),
            subject: message.header("subject"),
            headers: None,
            raw_base64: None,
            summary: None,
            detail: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MessageQuery {
    /// A recipient, matched without regard to case.
    to: Option<String>,
    /// The envelope sender (`<>` or empty for the null sender).
    from: Option<String>,
    folder: Option<Folder>,
    mx: Option<String>,
    /// The client's IP address.
    client: Option<IpAddr>,
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    start: usize,
    limit: Option<usize>,
    #[serde(default)]
    raw: bool,
    scope: Option<Scope>,
}

#[derive(Serialize)]
struct MessageList<'a> {
    /// Messages that match, before `start` and `limit`.
    total: usize,
    start: usize,
    count: usize,
    messages: Vec<MessageView<'a>>,
    /// Mailpit's count of the matches (the same as `total`).
    messages_count: usize,
    /// Mailpit's unread counts: qqmx keeps no read state, so 0.
    unread: usize,
    messages_unread: usize,
    /// Mailpit's tags: qqmx has none.
    tags: Vec<String>,
}

impl<'a> MessageList<'a> {
    fn new(
        total: usize,
        start: usize,
        page: &'a [Arc<Message>],
        raw: bool,
        replica: Option<&'a str>,
    ) -> Self {
        let messages: Vec<MessageView<'a>> = page
            .iter()
            .map(|m| {
                let mut view = MessageView::listed(m, replica);
                if raw {
                    view.raw_base64 =
                        Some(base64::engine::general_purpose::STANDARD.encode(&m.raw));
                }
                view
            })
            .collect();
        Self {
            total,
            start,
            count: messages.len(),
            messages,
            messages_count: total,
            unread: 0,
            messages_unread: 0,
            tags: Vec::new(),
        }
    }
}

/// The MX name of a `mx` filter, or a 400 naming the names there are: the API's
/// listeners and the MX hosts of the messages held.
fn known_mx(api: &Api, mx: String) -> Answer<String> {
    let mut names: Vec<String> = api
        .options
        .listeners
        .iter()
        .map(|(name, _)| name.clone())
        .chain(api.server.store().snapshot().iter().map(|m| m.mx.clone()))
        .collect();
    names.sort();
    names.dedup();
    if names.contains(&mx) {
        Ok(mx)
    } else {
        Err(ApiError::bad_request(format!(
            "unknown MX `{mx}`; one of: {}",
            names.join(", ")
        )))
    }
}

/// The query parameters a replica asked for its share of a merged list does not take
/// as given: it is asked for its own, from its first match.
const PAGING: [&str; 3] = ["scope", "start", "limit"];

/// The parameters that ask a replica for its share of a merged page `start`, `limit`:
/// its own first `start + limit` matches.
fn share(start: usize, limit: Option<usize>) -> Vec<(&'static str, String)> {
    let mut add = vec![("scope", "local".to_owned()), ("start", "0".to_owned())];
    if let Some(limit) = limit {
        add.push(("limit", start.saturating_add(limit).to_string()));
    }
    add
}

/// The messages of every replica: this one's `list` and the others' shares, merged.
async fn merged(
    fanout: &Fanout,
    route: &str,
    raw_query: Option<&str>,
    list: &MessageList<'_>,
    (start, limit): (usize, Option<usize>),
    newest_first: bool,
) -> Response {
    let add = share(start, limit);
    let gathered = fanout
        .gather(|_| format!("{route}?{}", requery(raw_query, &PAGING, &add)))
        .await;
    let mut lists = vec![serde_json::to_value(list).unwrap_or_default()];
    lists.extend(gathered.answers.into_iter().map(|(_, list)| list));
    let limit = limit.unwrap_or(usize::MAX);
    Json(merge_messages(
        lists,
        newest_first,
        start,
        limit,
        gathered.replicas,
    ))
    .into_response()
}

pub(super) async fn messages(
    State(api): ApiState,
    RawQuery(raw_query): RawQuery,
    query_string: Result<Query<MessageQuery>, QueryRejection>,
) -> Answer<Response> {
    let f = query(query_string)?;
    let filter = MessageFilter {
        since: f.since.as_deref().map(|t| time(t, "since")).transpose()?,
        until: f.until.as_deref().map(|t| time(t, "until")).transpose()?,
        from: f
            .from
            .as_deref()
            .map(|s| if s == "<>" { "" } else { s }.to_owned()),
        to: f.to,
        folder: f.folder,
        mx: f.mx.map(|mx| known_mx(&api, mx)).transpose()?,
        client: f.client,
    };
    let fanout = api.fanout(f.scope);
    // Asked for every replica's, this one's share is its first `start + limit`.
    let (start, limit) = match fanout {
        Some(_) => (0, f.start.saturating_add(f.limit.unwrap_or(usize::MAX))),
        None => (f.start, f.limit.unwrap_or(usize::MAX)),
    };
    let (total, page) = api
        .server
        .store()
        .messages_page(start, limit, |m| filter.matches(m));
    let list = MessageList::new(total, start, &page, f.raw, api.replica());
    Ok(match fanout {
        None => Json(list).into_response(),
        Some(fanout) => {
            let paging = (f.start, f.limit);
            let route = "/api/v1/messages";
            merged(fanout, route, raw_query.as_deref(), &list, paging, false).await
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchQuery {
    /// Mailpit's search: `to:`, `from:`, `subject:`, `before:`, `after:` and plain words.
    query: String,
    #[serde(default)]
    start: usize,
    limit: Option<usize>,
    scope: Option<Scope>,
}

/// Mailpit's search: the messages that match, newest first as Mailpit lists them.
pub(super) async fn search(
    State(api): ApiState,
    RawQuery(raw_query): RawQuery,
    query_string: Result<Query<SearchQuery>, QueryRejection>,
) -> Answer<Response> {
    let q = query(query_string)?;
    let search = Search::parse(&q.query)?;
    let fanout = api.fanout(q.scope);
    let (start, limit) = match fanout {
        Some(_) => (0, q.start.saturating_add(q.limit.unwrap_or(usize::MAX))),
        None => (q.start, q.limit.unwrap_or(usize::MAX)),
    };
    let found: Vec<Arc<Message>> = api
        .server
        .store()
        .snapshot()
        .into_iter()
        .rev()
        .filter(|m| search.matches(m))
        .collect();
    let total = found.len();
    let page: Vec<Arc<Message>> = found.into_iter().skip(start).take(limit).collect();
    let list = MessageList::new(total, start, &page, false, api.replica());
    Ok(match fanout {
        None => Json(list).into_response(),
        Some(fanout) => {
            let paging = (q.start, q.limit);
            let route = "/api/v1/search";
            merged(fanout, route, raw_query.as_deref(), &list, paging, true).await
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchDelete {
    query: String,
    scope: Option<Scope>,
}

/// Mailpit's delete by search: forgets the messages that match (with the Redis state,
/// on every replica unless `scope=local`).
pub(super) async fn delete_search(
    State(api): ApiState,
    RawQuery(raw_query): RawQuery,
    query_string: Result<Query<SearchDelete>, QueryRejection>,
) -> Answer<Json<Deleted>> {
    let q = query(query_string)?;
    let search = Search::parse(&q.query)?;
    let deleted = api.server.store().remove_messages(|m| search.matches(m));
    let Some(fanout) = api.fanout(q.scope) else {
        return Ok(Json(Deleted::here(deleted)));
    };
    let local = [("scope", "local".to_owned())];
    let path = format!(
        "/api/v1/search?{}",
        requery(raw_query.as_deref(), &["scope"], &local)
    );
    let gathered = fanout
        .gather_each(&Method::DELETE, |_| Some((path.clone(), None)))
        .await;
    Ok(Json(Deleted::everywhere(deleted, gathered)))
}

/// How many messages a delete forgot.
#[derive(Serialize)]
pub(super) struct Deleted {
    deleted: usize,
    /// With the Redis state, unless `scope=local`: the replicas asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<Vec<ReplicaStatus>>,
}

impl Deleted {
    fn here(deleted: usize) -> Self {
        Self {
            deleted,
            replicas: None,
        }
    }

    /// This replica's count and those of the replicas that answered.
    fn everywhere(deleted: usize, gathered: Gathered) -> Self {
        let theirs: u64 = gathered
            .answers
            .iter()
            .map(|(_, answer)| answer["deleted"].as_u64().unwrap_or(0))
            .sum();
        Self {
            deleted: deleted.saturating_add(usize::try_from(theirs).unwrap_or(usize::MAX)),
            replicas: Some(gathered.replicas),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteQuery {
    scope: Option<Scope>,
}

/// Deletes every message, or with Mailpit's `{"IDs": ["7"]}` only those (a 404 naming
/// the ones not held, deleting none, when some are not). With the Redis state, every
/// replica's unless `scope=local`, and an id such as `b:7` is replica `b`'s.
pub(super) async fn delete_messages(
    State(api): ApiState,
    query_string: Result<Query<DeleteQuery>, QueryRejection>,
    bytes: Bytes,
) -> Answer<Json<Deleted>> {
    let scope = query(query_string)?.scope;
    let request: DeleteRequest = body(&bytes)?;
    let store = api.server.store();
    let fanout = api.fanout(scope);
    if request.ids.is_empty() {
        let deleted = store.clear_messages();
        let Some(fanout) = fanout else {
            return Ok(Json(Deleted::here(deleted)));
        };
        let path = "/api/v1/messages?scope=local";
        let gathered = fanout
            .gather_each(&Method::DELETE, |_| Some((path.to_owned(), None)))
            .await;
        return Ok(Json(Deleted::everywhere(deleted, gathered)));
    }
    let mut ids = Vec::with_capacity(request.ids.len());
    let mut theirs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for id in &request.ids {
        match (fanout, id.split_once(':')) {
            (Some(fanout), Some((name, _))) if name != fanout.name() => {
                theirs.entry(name).or_default().push(id);
            }
            _ => ids.push(own_id(&api, id)?),
        }
    }
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| store.message(**id).is_none())
        .map(u64::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::not_found(format!(
            "no message {} in the store; nothing deleted",
            missing.join(", ")
        )));
    }
    if let Some(fanout) = fanout {
        for name in theirs.keys() {
            fanout.peer(name).await?;
        }
    }
    let deleted = store.remove_messages(|m| ids.contains(&m.id));
    let Some(fanout) = fanout else {
        return Ok(Json(Deleted::here(deleted)));
    };
    let gathered = fanout
        .gather_each(&Method::DELETE, |name| {
            let ids = theirs.get(name)?;
            let body = serde_json::json!({ "IDs": ids }).to_string();
            Some(("/api/v1/messages?scope=local".to_owned(), Some(body)))
        })
        .await;
    Ok(Json(Deleted::everywhere(deleted, gathered)))
}

/// The number of a message of this replica: `7`, or with the Redis state also `a:7`
/// where `a` is this replica (a 400 for another replica's).
fn own_id(api: &Api, id: &str) -> Answer<u64> {
    let number = match (api.replica(), id.split_once(':')) {
        (Some(own), Some((name, number))) if name == own => number,
        (Some(_), Some((name, _))) => {
            return Err(ApiError::bad_request(format!(
                "message `{id}` is held by replica `{name}`: `scope=local` deletes only this replica's"
            )));
        }
        _ => id,
    };
    number
        .parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("`{id}` is not a message id")))
}

/// Where the message an id names is: here, or the answer of the replica that holds it.
enum Located {
    Here(Box<Message>),
    There(Fetched),
}

/// The message `id` names for the route `/api/v1/message/{id}{suffix}`. With the Redis
/// state, `b:7` is replica `b`'s message 7 (asked of `b`), and `latest` the newest of
/// every replica's; a bare number is this replica's.
async fn locate(api: &Api, id: &str, suffix: &str) -> Answer<Located> {
    let Some(fanout) = api.fanout.as_ref() else {
        return find(api, id).map(|m| Located::Here(Box::new(m)));
    };
    if id == "latest" {
        return latest(api, fanout, suffix).await;
    }
    match id.split_once(':') {
        Some((name, number)) if name == fanout.name() => {
            find(api, number).map(|m| Located::Here(Box::new(m)))
        }
        Some((name, _)) => {
            let peer = fanout.peer(name).await?;
            let path = format!("/api/v1/message/{id}{suffix}");
            fanout.ask(&peer, &path).await.map(Located::There)
        }
        None => find(api, id).map(|m| Located::Here(Box::new(m))),
    }
}

/// The newest message of every replica's (each asked for its `latest`).
async fn latest(api: &Api, fanout: &Fanout, suffix: &str) -> Answer<Located> {
    let gathered = fanout
        .gather(|name| format!("/api/v1/message/{name}:latest"))
        .await;
    let own = api
        .server
        .store()
        .snapshot()
        .last()
        .map(|m| Message::clone(m));
    let mut candidates: Vec<serde_json::Value> =
        gathered.answers.into_iter().map(|(_, m)| m).collect();
    if let Some(message) = &own {
        let view = MessageView::one(message, Some(fanout.name()));
        candidates.push(serde_json::to_value(view).unwrap_or_default());
    }
    let newest = fanout::newest(candidates)
        .ok_or_else(|| ApiError::not_found("no message in the store of any replica"))?;
    let name = newest["replica"].as_str().unwrap_or_default();
    match own {
        Some(message) if name == fanout.name() => Ok(Located::Here(Box::new(message))),
        _ if suffix.is_empty() => Ok(Located::There(Fetched::of_json(&newest))),
        _ => {
            let peer = fanout.peer(name).await?;
            let path = format!("/api/v1/message/{name}:{}{suffix}", newest["id"]);
            fanout.ask(&peer, &path).await.map(Located::There)
        }
    }
}

/// The message `id` names in this replica's store: its number, or `latest` for the
/// newest.
fn find(api: &Api, id: &str) -> Answer<Message> {
    if id == "latest" {
        return api
            .server
            .store()
            .snapshot()
            .last()
            .map(|m| Message::clone(m))
            .ok_or_else(|| ApiError::not_found("no message in the store"));
    }
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{id}` is not a message id")))?;
    api.server
        .store()
        .message(id)
        .ok_or_else(|| ApiError::not_found(format!("no message {id} in the store")))
}

pub(super) async fn message(State(api): ApiState, Path(id): Path<String>) -> Answer<Response> {
    let message = match locate(&api, &id, "").await? {
        Located::Here(message) => message,
        Located::There(answer) => return Ok(answer.relay()),
    };
    let replica = api.replica();
    let view = MessageView {
        headers: Some(message.headers()),
        detail: Some(mailpit::Detail::new(&message, replica)),
        ..MessageView::one(&message, replica)
    };
    Ok(Json(view).into_response())
}

/// Mailpit's header map: each name (canonical, sorted) with its values.
pub(super) async fn message_headers(
    State(api): ApiState,
    Path(id): Path<String>,
) -> Answer<Response> {
    match locate(&api, &id, "/headers").await? {
        Located::Here(message) => Ok(Json(mailpit::headers(&message)).into_response()),
        Located::There(answer) => Ok(answer.relay()),
    }
}

pub(super) async fn message_raw(State(api): ApiState, Path(id): Path<String>) -> Answer<Response> {
    let message = match locate(&api, &id, "/raw").await? {
        Located::Here(message) => message,
        Located::There(answer) => return Ok(answer.relay()),
    };
    Ok((
        [(header::CONTENT_TYPE, "message/rfc822")],
        Body::from(Bytes::copy_from_slice(&message.raw)),
    )
        .into_response())
}
