//! One running sidecar: a [`Server`] with a listener for each MX host of its config and
//! the control API, started and stopped together. `qqmx serve` and the scenario runner
//! (`qqmx run`) both run one of these; the binary only parses arguments, handles signals
//! and prints the addresses.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use qqmx::sidecar::{Sidecar, SidecarOptions};
//!
//! let options = SidecarOptions::default().api("127.0.0.1:8025".parse()?);
//! let sidecar = Sidecar::start(qqmx::Config::default(), options).await?;
//! for (mx, addr) in sidecar.listeners() {
//!     println!("{mx} on {addr}");
//! }
//! tokio::signal::ctrl_c().await?;
//! sidecar.drain(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

use crate::chaos::Fault;
use crate::clock::Clock;
use crate::config::{ClockMode, Config};
use crate::control::{self, ApiOptions, ControlError};
use crate::server::{Server, StartError};

/// How long the control API gets to finish its answers once the SMTP side has stopped:
/// live event streams never end on their own.
const API_GRACE: Duration = Duration::from_secs(2);

/// How long a health check waits to connect, to send and to read.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// What a sidecar runs besides its config.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SidecarOptions {
    /// Address of the control API; `None` runs none.
    pub api: Option<SocketAddr>,
    /// Bearer token the control API asks for; required when it listens beyond loopback.
    pub token: Option<String>,
    /// Switch off every quota, the warm-up and bulk detection, in the config it starts
    /// with and in every config loaded through the API.
    pub no_limits: bool,
    /// The clock; `None` takes the config's (`[clock]`), the system clock by default.
    pub clock: Option<Clock>,
    /// Faults in force from the start, for chaos scenarios.
    pub faults: Vec<Fault>,
}

impl SidecarOptions {
    /// Runs the control API on `addr`.
    #[must_use]
    pub fn api(mut self, addr: SocketAddr) -> Self {
        self.api = Some(addr);
        self
    }

    /// Asks for `token` on the control API; an empty one is none.
    #[must_use]
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// Switches the limits off (see [`SidecarOptions::no_limits`]).
    #[must_use]
    pub fn no_limits(mut self, no_limits: bool) -> Self {
        self.no_limits = no_limits;
        self
    }

    /// Reads time from `clock` instead of the config's.
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Starts with `faults` in force.
    #[must_use]
    pub fn faults(mut self, faults: Vec<Fault>) -> Self {
        self.faults = faults;
        self
    }
}

/// Why a sidecar could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarError {
    /// The server could not be built from the config.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The control API would listen beyond loopback without a token.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// An MX host's listener could not be bound.
    #[error("cannot listen on {addr} for {mx}: {source}")]
    Listen {
        /// The MX host.
        mx: String,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The DNS server (`[dns] listen`) could not be bound, or qqmx was built without the
    /// `dns` feature.
    #[error("cannot listen on {addr} for DNS: {source}")]
    Dns {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The control API's listener could not be bound.
    #[error("cannot listen on {addr} for the control API: {source}")]
    Api {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running sidecar. Dropping it stops it without waiting; [`Sidecar::shutdown`] and
/// [`Sidecar::drain`] wait until it has stopped.
#[derive(Debug)]
pub struct Sidecar {
    server: Server,
    listeners: Vec<(String, SocketAddr)>,
    api: Option<SocketAddr>,
    dns: Option<SocketAddr>,
    stop_dns: oneshot::Sender<()>,
    dns_task: Option<JoinHandle<()>>,
    stop_smtp: oneshot::Sender<()>,
    smtp: JoinHandle<()>,
    stop_api: oneshot::Sender<()>,
    api_task: Option<JoinHandle<Result<(), ControlError>>>,
}

impl Sidecar {
    /// Builds the server for `config`, binds a listener for each of its MX hosts (in the
    /// order of their names) and the control API, and starts serving them all.
    ///
    /// # Errors
    ///
    /// [`SidecarError`] when the API would be reachable from other hosts without a token,
    /// the server cannot be built, or an address cannot be bound.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub async fn start(config: Config, options: SidecarOptions) -> Result<Self, SidecarError> {
        if let Some(addr) = options.api {
            control::check_bind(addr, options.token.as_deref())?;
        }
        let config = if options.no_limits {
            config.no_limits()
        } else {
            config
        };
        let clock = options
            .clock
            .unwrap_or_else(|| config.make_clock(ClockMode::System));
        let server = Server::new(config.clone(), clock)?;
        server.set_faults(options.faults);

        let mut bound = Vec::new();
        let mut listeners = Vec::new();
        for (mx, listener) in &config.listeners.0 {
            let failed = |source| SidecarError::Listen {
                mx: mx.clone(),
                addr: listener.addr,
                source,
            };
            let socket = server.listen(listener.addr).map_err(failed)?;
            listeners.push((mx.clone(), socket.local_addr().map_err(failed)?));
            bound.push((mx.clone(), socket));
        }
        let (stop_dns, dns_stopped) = oneshot::channel::<()>();
        let (dns, dns_task) = match config.dns.listen {
            Some(addr) => {
                let (local, task) = start_dns(&server, addr, &listeners, async {
                    let _ = dns_stopped.await;
                })?;
                (Some(local), Some(task))
            }
            None => (None, None),
        };

        let (stop_api, api_stopped) = oneshot::channel::<()>();
        let (api, api_task) = match options.api {
            Some(addr) => {
                let failed = |source| SidecarError::Api { addr, source };
                let socket = tokio::net::TcpListener::bind(addr).await.map_err(failed)?;
                let local = socket.local_addr().map_err(failed)?;
                // The URL the other replicas reach this API at: the config's, else the
                // bound address unless it is unspecified (then no one can be told).
                let advertise = if config.state.advertise.is_empty() {
                    (!local.ip().is_unspecified()).then(|| format!("http://{local}"))
                } else {
                    Some(config.state.advertise.clone())
                };
                let mut api_options = ApiOptions::new(options.token)
                    .no_limits(options.no_limits)
                    .dns(dns)
                    .advertise(advertise);
                for (mx, addr) in &listeners {
                    api_options = api_options.listener(mx.clone(), *addr);
                }
                let router = control::router(server.clone(), api_options);
                let task = tokio::spawn(control::serve(socket, router, async {
                    let _ = api_stopped.await;
                }));
                (Some(local), Some(task))
            }
            None => (None, None),
        };

        let (stop_smtp, smtp_stopped) = oneshot::channel::<()>();
        let smtp = {
            let server = server.clone();
            tokio::spawn(async move {
                server
                    .run_all(bound, async {
                        let _ = smtp_stopped.await;
                    })
                    .await;
            })
        };
        Ok(Self {
            server,
            listeners,
            api,
            dns,
            stop_dns,
            dns_task,
            stop_smtp,
            smtp,
            stop_api,
            api_task,
        })
    }

    /// The server: its store, clock, policy and faults.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Each MX host with the address its listener is bound to, in the order of the names.
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// The address the control API is bound to, if it runs.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api
    }

    /// The address the DNS server answers on (UDP and TCP), if it runs (`[dns] listen`).
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns
    }

    /// Stops now: no more connections, open sessions answered with `421`; returns once
    /// they have ended and the API has finished its answers (or had a few seconds to).
    pub async fn shutdown(self) {
        let _ = self.stop_smtp.send(());
        let _ = self.smtp.await;
        let _ = self.stop_dns.send(());
        if let Some(task) = self.dns_task {
            let _ = task.await;
        }
        let _ = self.stop_api.send(());
        if let Some(task) = self.api_task {
            let _ = tokio::time::timeout(API_GRACE, task).await;
        }
    }

    /// Stops gracefully: readiness checks fail at once (`/readyz` answers 503) while
    /// everything goes on serving for `delay`, so that traffic can move elsewhere; then
    /// [`shutdown`](Self::shutdown).
    pub async fn drain(self, delay: Duration) {
        self.server.begin_drain();
        info!(delay = ?delay, "draining");
        tokio::time::sleep(delay).await;
        self.shutdown().await;
    }
}

/// Binds the DNS server on `addr` and serves it for `server` until `shutdown`.
#[cfg(feature = "dns")]
fn start_dns(
    server: &Server,
    addr: SocketAddr,
    listeners: &[(String, SocketAddr)],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, JoinHandle<()>), SidecarError> {
    let sockets =
        crate::dns::DnsSockets::bind(addr).map_err(|source| SidecarError::Dns { addr, source })?;
    let local = sockets.addr();
    let task = tokio::spawn(sockets.serve(server.clone(), listeners.to_vec(), shutdown));
    Ok((local, task))
}

/// Without the `dns` feature there is no DNS server to start.
#[cfg(not(feature = "dns"))]
fn start_dns(
    _: &Server,
    addr: SocketAddr,
    _: &[(String, SocketAddr)],
    _: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, JoinHandle<()>), SidecarError> {
    Err(SidecarError::Dns {
        addr,
        source: std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "qqmx was built without the `dns` feature",
        ),
    })
}

/// Why a sidecar is not healthy: see [`check_health`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// The API could not be reached, or did not answer in time.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The API answered with another status than 200.
    #[error("{url} answered `{status}`")]
    Status {
        /// What was asked.
        url: String,
        /// The status line of the answer.
        status: String,
    },
}

/// Asks the control API on `api` whether the sidecar is alive (`GET /healthz`) or, with
/// `ready`, whether it takes traffic (`GET /readyz`, failing while it drains): one plain
/// HTTP/1.1 request, healthy when answered `200`. An unspecified address (`0.0.0.0`)
/// means loopback. Blocking, with a few seconds' timeout: `qqmx health` runs it as a
/// container's health check in an image without a shell.
///
/// # Errors
///
/// [`HealthError`] when the API cannot be reached or answers another status.
pub fn check_health(api: SocketAddr, ready: bool) -> Result<(), HealthError> {
    let path = if ready { "/readyz" } else { "/healthz" };
    let (status, _) = ask(api, path, None)?;
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(HealthError::Status {
            url: format!("http://{}{path}", loopback(api)),
            status,
        })
    }
}

/// Asks the control API on `api` why `ip` was last refused, at or before `at` (an RFC 3339
/// time; the server's now without one), as `qqmx explain` does: the explanation's JSON
/// (`GET /api/v1/explain`), or `None` when the log holds no refusal of `ip`. Blocking, with
/// the timeout of [`check_health`].
///
/// # Errors
///
/// [`HealthError`] when the API cannot be reached or answers another status than `200`
/// or `404`.
pub fn explain(
    api: SocketAddr,
    token: Option<&str>,
    ip: IpAddr,
    at: Option<&str>,
) -> Result<Option<String>, HealthError> {
    let mut path = format!("/api/v1/explain?ip={ip}");
    if let Some(at) = at {
        path.push_str("&at=");
        for byte in at.bytes() {
            if byte.is_ascii_alphanumeric() || b"-.:_".contains(&byte) {
                path.push(char::from(byte));
            } else {
                path.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    let (status, body) = ask(api, &path, token)?;
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(Some(body)),
        Some("404") => Ok(None),
        _ => Err(HealthError::Status {
            url: format!("http://{}{path}", loopback(api)),
            status: format!("{status}: {}", body.trim()),
        }),
    }
}

/// `api`, with an unspecified address (`0.0.0.0`) made loopback.
fn loopback(api: SocketAddr) -> SocketAddr {
    let mut addr = api;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    addr
}

/// One `GET` to the API: the status line and the body (at most 1 MiB).
fn ask(api: SocketAddr, path: &str, token: Option<&str>) -> Result<(String, String), HealthError> {
    let addr = loopback(api);
    let mut stream = TcpStream::connect_timeout(&addr, HEALTH_TIMEOUT)?;
    stream.set_read_timeout(Some(HEALTH_TIMEOUT))?;
    stream.set_write_timeout(Some(HEALTH_TIMEOUT))?;
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    // HTTP/1.0: the answer comes whole, never chunked, and the connection then closes.
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{authorization}\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(1024 * 1024).read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or("").to_owned();
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::{Duration, UNIX_EPOCH};

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    use super::*;

    const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

    fn two_hosts() -> Config {
        Config::from_toml(
            "generation = \"2019\"\n\
             [listeners.mx2]\naddr = \"127.0.0.1:0\"\n\
             [listeners.mx1]\naddr = \"127.0.0.1:0\"\n",
        )
        .expect("a valid config")
    }

    fn manual() -> SidecarOptions {
        SidecarOptions::default().clock(Clock::manual(
            UNIX_EPOCH + Duration::from_secs(1_750_000_000),
        ))
    }

    /// One request over HTTP/1.1; the whole answer.
    async fn get(api: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(api).await.expect("API connects");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("request sent");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .await
            .expect("answer read");
        answer
    }

    #[tokio::test]
    async fn every_mx_host_and_the_api_listen_on_the_addresses_reported() {
        let sidecar = Sidecar::start(two_hosts(), manual().api(LOOPBACK))
            .await
            .expect("starts");

        let listeners = sidecar.listeners().to_vec();
        let api = sidecar.api_addr().expect("an API");
        let mut greetings = Vec::new();
        for (_, addr) in &listeners {
            let stream = TcpStream::connect(addr).await.expect("SMTP connects");
            let mut line = String::new();
            BufReader::new(stream)
                .read_line(&mut line)
                .await
                .expect("greeting");
            greetings.push(line);
        }
        let info = get(api, "/api/v1/info").await;
        sidecar.shutdown().await;

        let names: Vec<&str> = listeners.iter().map(|(mx, _)| mx.as_str()).collect();
        assert_eq!(names, ["mx1", "mx2"]);
        assert!(
            listeners.iter().all(|(_, a)| a.port() != 0),
            "{listeners:?}"
        );
        assert!(
            greetings.iter().all(|g| g.starts_with("220 ")),
            "{greetings:?}"
        );
        assert!(info.starts_with("HTTP/1.1 200"), "{info}");
        for (mx, addr) in &listeners {
            assert!(
                info.contains(&format!(r#""mx":"{mx}","addr":"{addr}""#)),
                "{info}"
            );
        }
    }

    #[tokio::test]
    async fn shutdown_answers_open_sessions_421_and_waits_for_them() {
        let sidecar = Sidecar::start(two_hosts(), manual()).await.expect("starts");
        let (_, mx1) = sidecar.listeners()[0].clone();
        let mut session = BufReader::new(TcpStream::connect(mx1).await.expect("connects"));
        let mut greeting = String::new();
        session.read_line(&mut greeting).await.expect("greeting");

        sidecar.shutdown().await;
        let mut last = String::new();
        session.read_line(&mut last).await.expect("a last line");

        assert!(last.starts_with("421 "), "{last}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_health_check_fails_while_draining_and_when_nothing_answers() {
        let sidecar = Sidecar::start(two_hosts(), manual().api(LOOPBACK))
            .await
            .expect("starts");
        let api = sidecar.api_addr().expect("an API");
        let probe = move |ready| tokio::task::spawn_blocking(move || check_health(api, ready));

        let ready = probe(true).await.expect("probe");
        sidecar.server().begin_drain();
        let draining = probe(true).await.expect("probe");
        let alive = probe(false).await.expect("probe");
        sidecar.shutdown().await;
        let gone = probe(false).await.expect("probe");

        assert!(ready.is_ok(), "{ready:?}");
        let status = draining.expect_err("not ready while draining").to_string();
        assert!(
            status.starts_with(&format!("http://{api}/readyz answered `HTTP/1.0 503")),
            "{status}"
        );
        assert!(alive.is_ok(), "still alive while draining: {alive:?}");
        assert!(matches!(gone, Err(HealthError::Io(_))), "{gone:?}");
    }

    #[tokio::test]
    async fn an_api_beyond_loopback_needs_a_token() {
        let open = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));

        let refused = Sidecar::start(two_hosts(), manual().api(open)).await;
        let empty =
            Sidecar::start(two_hosts(), manual().api(open).token(Some(String::new()))).await;
        let allowed =
            Sidecar::start(two_hosts(), manual().api(open).token(Some("s3cret".into()))).await;

        assert!(
            matches!(refused, Err(SidecarError::Control(_))),
            "{refused:?}"
        );
        assert!(matches!(empty, Err(SidecarError::Control(_))), "{empty:?}");
        allowed.expect("starts with a token").shutdown().await;
    }

    #[tokio::test]
    async fn a_taken_address_names_the_mx_host() {
        let taken = std::net::TcpListener::bind(LOOPBACK).expect("a free port");
        let addr = taken.local_addr().expect("its address");
        let config = Config::from_toml(&format!("[listeners.mx3]\naddr = \"{addr}\"\n"))
            .expect("a valid config");

        let failed = Sidecar::start(config, manual()).await.map(|_| ());

        let message = failed.expect_err("the port is taken").to_string();
        assert!(
            message.starts_with(&format!("cannot listen on {addr} for mx3: ")),
            "{message}"
        );
    }

    #[tokio::test]
    async fn no_limits_applies_to_the_config_it_starts_with() {
        let sidecar = Sidecar::start(two_hosts(), manual().no_limits(true))
            .await
            .expect("starts");

        let config = sidecar.server().config();
        sidecar.shutdown().await;

        assert_eq!(*config, two_hosts().no_limits());
    }
}
