//! `GET /api/v1/tls/ca.pem`: the certificate of the test CA that issues the listeners'
//! certificates, for a sender to trust.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::wire::{Answer, ApiState};

/// The CA's certificate as `application/x-pem-file`; 404 when no test CA is in use.
pub(super) async fn ca_pem(State(api): ApiState) -> Answer<Response> {
    let pem = api.server.ca_pem().ok_or_else(|| {
        ApiError::not_found(
            "no test CA is in use: the listeners have a self-signed certificate (or TLS is \
             off); set `[tls] ca = true`, or `ca_cert` and `ca_key`, or start with --tls-ca",
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
}
