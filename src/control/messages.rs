//! The message routes: qqmx's list, one message, its source and headers, deletes, and
//! Mailpit's search, in qqmx's shapes with Mailpit's fields beside them.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::mailpit::{self, DeleteRequest, Search};
use super::wire::{Answer, ApiState, body, query, time};
use super::{Api, ApiError};
use crate::inspect::MessageFilter;
use crate::store::{Folder, Message};

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
    /// Mailpit's fields of a message in a list.
    #[serde(flatten)]
    summary: Option<mailpit::Summary>,
    /// Mailpit's fields of one message.
    #[serde(flatten)]
    detail: Option<mailpit::Detail>,
}

impl<'a> MessageView<'a> {
    /// The view in a list, with Mailpit's summary fields.
    fn listed(message: &'a Message) -> Self {
        Self {
            summary: Some(mailpit::Summary::new(message)),
            ..Self::one(message)
        }
    }

    /// qqmx's fields alone.
    fn one(message: &'a Message) -> Self {
        Self {
            message,
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
    fn new(total: usize, start: usize, page: &'a [Arc<Message>], raw: bool) -> Self {
        let messages: Vec<MessageView<'a>> = page
            .iter()
            .map(|m| {
                let mut view = MessageView::listed(m);
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

pub(super) async fn messages(
    State(api): ApiState,
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
    let (total, page) =
        api.server
            .store()
            .messages_page(f.start, f.limit.unwrap_or(usize::MAX), |m| {
                filter.matches(m)
            });
    Ok(Json(MessageList::new(total, f.start, &page, f.raw)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchQuery {
    /// Mailpit's search: `to:`, `from:`, `subject:`, `before:`, `after:` and plain words.
    query: String,
    #[serde(default)]
    start: usize,
    limit: Option<usize>,
}

/// Mailpit's search: the messages that match, newest first as Mailpit lists them.
pub(super) async fn search(
    State(api): ApiState,
    query_string: Result<Query<SearchQuery>, QueryRejection>,
) -> Answer<Response> {
    let q = query(query_string)?;
    let search = Search::parse(&q.query)?;
    let found: Vec<Arc<Message>> = api
        .server
        .store()
        .snapshot()
        .into_iter()
        .rev()
        .filter(|m| search.matches(m))
        .collect();
    let total = found.len();
    let page: Vec<Arc<Message>> = found
        .into_iter()
        .skip(q.start)
        .take(q.limit.unwrap_or(usize::MAX))
        .collect();
    Ok(Json(MessageList::new(total, q.start, &page, false)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchDelete {
    query: String,
}

/// Mailpit's delete by search: forgets the messages that match.
pub(super) async fn delete_search(
    State(api): ApiState,
    query_string: Result<Query<SearchDelete>, QueryRejection>,
) -> Answer<Json<Deleted>> {
    let q = query(query_string)?;
    let search = Search::parse(&q.query)?;
    Ok(Json(Deleted {
        deleted: api.server.store().remove_messages(|m| search.matches(m)),
    }))
}

#[derive(Serialize)]
pub(super) struct Deleted {
    deleted: usize,
}

/// Deletes every message, or with Mailpit's `{"IDs": ["7"]}` only those (a 404 naming
/// the ones not held, deleting none, when some are not).
pub(super) async fn delete_messages(State(api): ApiState, bytes: Bytes) -> Answer<Json<Deleted>> {
    let request: DeleteRequest = body(&bytes)?;
    let store = api.server.store();
    if request.ids.is_empty() {
        return Ok(Json(Deleted {
            deleted: store.clear_messages(),
        }));
    }
    let mut ids = Vec::with_capacity(request.ids.len());
    for id in &request.ids {
        ids.push(
            id.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("`{id}` is not a message id")))?,
        );
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
    Ok(Json(Deleted {
        deleted: store.remove_messages(|m| ids.contains(&m.id)),
    }))
}

/// The message `id` names: its number, or `latest` for the newest.
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
    let message = find(&api, &id)?;
    let view = MessageView {
        headers: Some(message.headers()),
        detail: Some(mailpit::Detail::new(&message)),
        ..MessageView::one(&message)
    };
    Ok(Json(view).into_response())
}

/// Mailpit's header map: each name (canonical, sorted) with its values.
pub(super) async fn message_headers(
    State(api): ApiState,
    Path(id): Path<String>,
) -> Answer<Json<std::collections::BTreeMap<String, Vec<String>>>> {
    let message = find(&api, &id)?;
    Ok(Json(mailpit::headers(&message)))
}

pub(super) async fn message_raw(State(api): ApiState, Path(id): Path<String>) -> Answer<Response> {
    let message = find(&api, &id)?;
    Ok((
        [(header::CONTENT_TYPE, "message/rfc822")],
        Body::from(Bytes::copy_from_slice(&message.raw)),
    )
        .into_response())
}
