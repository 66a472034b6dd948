//! What the handlers share: their state and answer types, reading query strings, bodies,
//! times and durations with errors that name what is wrong, and shared answers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Api, ApiError};
use crate::clock::parse_rfc3339;
use crate::units::duration_text;

/// The handlers' state.
pub(super) type ApiState = State<Arc<Api>>;
/// A handler's result: its answer or a JSON error.
pub(super) type Answer<T> = Result<T, ApiError>;

/// The query string, or a JSON error naming what is wrong with it.
pub(super) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Answer<T> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
}

/// A JSON body (an empty body reads as `{}`), or a JSON error naming what is wrong.
pub(super) fn body<T: DeserializeOwned>(bytes: &Bytes) -> Answer<T> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

/// An RFC 3339 time, or a JSON error naming the parameter.
pub(super) fn time(text: &str, name: &str) -> Answer<SystemTime> {
    parse_rfc3339(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`{name}`: `{text}` is not an RFC 3339 time such as 2025-06-02T09:00:00+08:00"
        ))
    })
}

/// A duration as in config files, or a JSON error naming the parameter.
pub(super) fn duration(text: &str, name: &str) -> Answer<Duration> {
    duration_text::parse(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`{name}`: `{text}` is not a duration such as \"30s\", \"5m\" or \"1h30m\""
        ))
    })
}

/// The answer of `GET /api/v1/reputation/{ip}` and of `POST /api/v1/complain`.
#[derive(Serialize)]
pub(super) struct Reputation {
    pub(super) ip: IpAddr,
    pub(super) reputation: u64,
}

/// Whose messages and events a list gathers: with the Redis state, every replica's by
/// default; `local`, the replica asked alone (as one replica asks another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Scope {
    All,
    Local,
}
