//! The sidecar's HTTP JSON control API and its Prometheus metrics.
//!
//! [`router`] builds the API over a running [`Server`]; [`serve`] runs it on a listener.
//! Every route is listed in `openapi.json` at the root of the repository, which the API
//! also serves at `/openapi.json`. Requests and answers are JSON (the raw source of a
//! message and the metrics excepted); a bad request gets `{"error": "..."}` with a 4xx
//! status. Times are RFC 3339 in UTC, durations text such as `"90s"` or `"1h30m"`.
//!
//! When a bearer token is set, every route but `/healthz` and `/readyz` asks for it;
//! [`check_bind`] refuses an address other than loopback without one. Without a token,
//! requests that a web page could send (another `Host` than loopback, another `Origin`,
//! a body typed as a form could type it) are refused with 403 or 415. Every error status
//! has a JSON body. [`serve_with`] bounds connections in number and in time
//! ([`ServeLimits`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let server = qqmx::Server::new(qqmx::Config::default(), qqmx::Clock::system())?;
//! let api = qqmx::control::router(server.clone(), qqmx::control::ApiOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8025").await?;
//! qqmx::control::serve(listener, api, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod ca;
mod commands;
mod dashboard;
mod fanout;
mod guard;
mod mailpit;
mod messages;
mod metrics;
mod replicas;
mod routes;
mod serve;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::server::Server;

pub use crate::inspect::Stats;
pub use crate::store::Count;
pub use serve::ServeLimits;

/// What the API tells about the server besides its state.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ApiOptions {
    /// Bearer token every route but the health checks asks for.
    pub token: Option<String>,
    /// The SMTP listeners, by MX name, with the addresses they are bound to.
    pub listeners: Vec<(String, SocketAddr)>,
    /// Switch the limits off in every config loaded through `PUT /api/v1/config`
    /// ([`Config::no_limits`](crate::Config::no_limits)), as `qqmx serve --no-limits` did
    /// in the one it started with.
    pub no_limits: bool,
    /// The address the DNS server (feature `dns`) is bound to, if it runs.
    pub dns: Option<SocketAddr>,
    /// With the Redis state: the URL at which the other replicas reach this API
    /// (`http://10.0.0.5:8025`), registered in Redis so that their APIs list this
    /// replica's messages and events. `None`: not registered.
    pub advertise: Option<String>,
}

impl ApiOptions {
    /// Options with `token` and no listeners.
    pub fn new(token: Option<String>) -> Self {
        Self {
            token,
            listeners: Vec::new(),
            no_limits: false,
            dns: None,
            advertise: None,
        }
    }

    /// Registers this API at `url` for the other replicas (see [`ApiOptions::advertise`]).
    #[must_use]
    pub fn advertise(mut self, url: Option<String>) -> Self {
        self.advertise = url;
        self
    }

    /// Keeps the limits off in configs loaded over the API (see [`ApiOptions::no_limits`]).
    #[must_use]
    pub fn no_limits(mut self, no_limits: bool) -> Self {
        self.no_limits = no_limits;
        self
    }

    /// Reports the DNS server on `addr`.
    #[must_use]
    pub fn dns(mut self, addr: Option<SocketAddr>) -> Self {
        self.dns = addr;
        self
    }

    /// Adds a listener to report.
    #[must_use]
    pub fn listener(mut self, mx: impl Into<String>, addr: SocketAddr) -> Self {
        self.listeners.push((mx.into(), addr));
        self
    }
}

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The API would listen beyond loopback without a token.
    #[error(
        "the control API on {0} is reachable from other hosts: set a bearer token (--api-token or QQMX_API_TOKEN), or bind it to a loopback address"
    )]
    TokenRequired(SocketAddr),
    /// The listener failed.
    #[error("control API: {0}")]
    Io(#[from] std::io::Error),
}

/// Refuses an address other than loopback when no token is set.
///
/// ```
/// use qqmx::control::check_bind;
/// assert!(check_bind("127.0.0.1:8025".parse().unwrap(), None).is_ok());
/// assert!(check_bind("0.0.0.0:8025".parse().unwrap(), None).is_err());
/// assert!(check_bind("0.0.0.0:8025".parse().unwrap(), Some("s3cret")).is_ok());
/// ```
///
/// # Errors
///
/// [`ControlError::TokenRequired`].
pub fn check_bind(addr: SocketAddr, token: Option<&str>) -> Result<(), ControlError> {
    if addr.ip().is_loopback() || token.is_some_and(|t| !t.is_empty()) {
        Ok(())
    } else {
        Err(ControlError::TokenRequired(addr))
    }
}

/// The API's routes over `server`.
///
/// With the Redis state, the API answers for every replica registered in Redis (see
/// `openapi.json`, `scope`), and registers this one at [`ApiOptions::advertise`] while
/// the router lives.
pub fn router(server: Server, options: ApiOptions) -> Router {
    let fanout = fanout::Fanout::start(
        &server.config(),
        options.advertise.clone(),
        options.token.clone(),
    );
    routes::router(Arc::new(Api {
        server,
        options,
        scenario: std::sync::Mutex::new(None),
        fanout,
    }))
}

/// Serves `router` on `listener` until `shutdown` completes, within the default
/// [`ServeLimits`].
///
/// # Errors
///
/// When the listener's address cannot be read.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    serve_with(listener, router, ServeLimits::default(), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` completes, within `limits`: a
/// connection that takes too long over a request head or stays silent is closed, and
/// connections beyond the cap get `503` with a JSON error. A listener that fails (out of
/// file descriptors) is retried after a growing pause, with a warning logged at most
/// every 10 seconds. Once `shutdown` completes, open connections get a few seconds to
/// finish their answers.
///
/// # Errors
///
/// When the listener's address cannot be read.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    serve::serve(listener, router, limits, shutdown).await
}

/// The OpenAPI document of the API, as served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// What every handler reads.
struct Api {
    server: Server,
    options: ApiOptions,
    /// The timeline of the scenario loaded last, while it plays.
    scenario: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// With the Redis state: the other replicas, to answer for all.
    fanout: Option<fanout::Fanout>,
}

impl Api {
    /// This replica's name, which every message and event carries with the Redis state.
    fn replica(&self) -> Option<&str> {
        self.fanout.as_ref().map(fanout::Fanout::name)
    }

    /// The other replicas to ask as well, unless the request is for this one's own.
    fn fanout(&self, scope: Option<wire::Scope>) -> Option<&fanout::Fanout> {
        match scope {
            Some(wire::Scope::Local) => None,
            _ => self.fanout.as_ref(),
        }
    }
}

/// An error answered as `{"error": "..."}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            message: message.into(),
        }
    }

    /// `503`: the policy's shared state (Redis) cannot be reached; nothing changed.
    fn state_unreachable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message:
                "the shared policy state (Redis) cannot be reached: nothing changed; try again"
                    .to_owned(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(ErrorBody {
                error: &self.message,
            }),
        )
            .into_response()
    }
}
