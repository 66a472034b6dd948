//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their
//! corpus (feature `fuzzing`). Not a stable API: each function takes raw bytes, runs one
//! part of qqmx on them with no socket and no real time, and panics when an invariant
//! breaks, which is what a fuzzer reports.
//!
//! - [`smtp_session`]: a whole SMTP session over an in-memory stream.
//! - [`proxy_header`]: the PROXY protocol header reader.
//! - [`config`] and [`scenario`]: the TOML parsers, and what is built from a config.
//! - [`api_body`]: one request to the control API's router.
//!
//! Sessions and API calls run on a current-thread runtime whose time is paused, so that
//! timeouts, tarpits and slow links pass at once (time jumps ahead whenever every task
//! waits), and on a manual [`Clock`].

#![cfg(feature = "fuzzing")]
#![doc(hidden)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::chaos::{Fault, FaultKind, Faults};
use crate::clock::Clock;
use crate::config::Config;
use crate::policy::Policy;
use crate::reply::{Context, ReplyKind};
use crate::scenario::Scenario;
use crate::server::{self, Server};
use crate::session::{self, Engine, Inflight};
use crate::store::Store;
use crate::units::Stage;

/// In a session script, ends a piece of client input: what comes after it is written once
/// the server has answered everything before it.
pub const PAUSE: &[u8] = b"\xff\xff";
/// In a session script, makes the client start TLS (a real handshake) and send the rest
/// of the script inside it.
pub const START_TLS: &[u8] = b"\xff\xfe";
/// In a session script, starts the server's shutdown.
pub const SHUTDOWN: &[u8] = b"\xff\xfd";

/// Session inputs are cut at this many bytes, so that one input stays quick.
const MAX_SESSION_INPUT: usize = 64 * 1024;
/// The longest reply line (RFC 5321 4.5.3.1.5: 512 octets with the CRLF).
const MAX_REPLY_LINE: usize = 512;
/// Far more than any session takes in virtual time; a session still open then is stuck.
const SESSION_BOUND: Duration = Duration::from_secs(30 * 24 * 3600);

/// A current-thread runtime with paused time.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds")
}

/// Lets every other task run until all of them wait: with paused time, the sleep ends only
/// once nothing else can make progress.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// The STARTTLS acceptor for the default host, made once: generating its certificate
/// would otherwise dominate every run.
fn acceptor() -> TlsAcceptor {
    static ACCEPTOR: OnceLock<TlsAcceptor> = OnceLock::new();
    ACCEPTOR
        .get_or_init(|| {
            let config = Config::default();
            crate::tls::acceptor(&config.tls, config.host())
                .expect("the self-signed certificate generates")
                .expect("TLS is on by default")
        })
        .clone()
}

/// Accepts any certificate: the client only needs a working TLS channel to the server.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn connector() -> TlsConnector {
    static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            TlsConnector::from(Arc::new(config))
        })
        .clone()
}

/// What the client does, in order.
#[derive(Debug, PartialEq, Eq)]
enum Step<'a> {
    Send(&'a [u8]),
    StartTls,
    Shutdown,
}

/// Cuts a script at its markers.
fn steps(mut script: &[u8]) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    loop {
        let Some(at) = script.windows(2).position(|w| w[0] == 0xff && w[1] >= 0xfd) else {
            if !script.is_empty() {
                steps.push(Step::Send(script));
            }
            return steps;
        };
        if at > 0 {
            steps.push(Step::Send(&script[..at]));
        }
        match &script[at..at + 2] {
            m if m == START_TLS => steps.push(Step::StartTls),
            m if m == SHUTDOWN => steps.push(Step::Shutdown),
            _ => {}
        }
        script = &script[at + 2..];
    }
}

/// The session's settings, from the first two bytes of an input.
///
/// First byte, bit by bit from the lowest: PROXY protocol; TLS off; no limits;
/// authentication off; tight limits (short lines, few commands, recipients and bytes);
/// the 2019 generation; the client's address (two bits: an ordinary IPv4 address, one in
/// qq.com's SPF range, IPv6, loopback). Second byte: a fault (low three bits: none,
/// tarpit, slow link, close, unavailable, reset, stall, TLS failure; greylisting instead
/// of none when bit 6 is set) at a stage (next three bits: connect, HELO, MAIL, RCPT,
/// DATA, end of data), on the `mxbiz1` listener instead of `mx1` when bit 7 is set.
struct Settings {
    config: Config,
    peer: SocketAddr,
    mx: &'static str,
    faults: Vec<Fault>,
}

impl Settings {
    fn new(flags: u8, fault: u8) -> Self {
        let mut config = Config::default();
        config.server.proxy_protocol = flags & 1 != 0;
        config.tls.enabled = flags & 2 == 0;
        if flags & 4 != 0 {
            config = config.no_limits();
        }
        config.auth.enabled = flags & 8 == 0;
        if flags & 16 != 0 {
            config.limits.max_line_length = 64;
            config.limits.max_commands = 16;
            config.limits.max_recipients = 2;
            config.limits.max_message_size = 256;
        }
        if flags & 32 != 0 {
            config.generation = crate::reply::Generation::G2019;
        }
        let ip = match flags >> 6 {
            0 => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
            1 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 25)),
            2 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let stage = match (fault >> 3) & 7 {
            0 => None,
            1 => Some(Stage::Helo),
            2 => Some(Stage::Mail),
            3 => Some(Stage::Rcpt),
            4 => Some(Stage::Data),
            _ => Some(Stage::EndOfData),
        };
        let kind = match fault & 7 {
            0 if fault & 64 != 0 => Some(FaultKind::Greylist),
            0 => None,
            1 => Some(FaultKind::Tarpit),
            2 => Some(FaultKind::SlowLink),
            3 => Some(FaultKind::Close),
            4 => Some(FaultKind::Unavailable),
            5 => Some(FaultKind::Reset),
            6 => Some(FaultKind::Stall),
            _ => Some(FaultKind::TlsFailure),
        };
        let faults = kind
            .map(|kind| {
                let mut f = Fault::new(kind);
                f.stage = if kind == FaultKind::Greylist {
                    Some(Stage::Rcpt)
                } else {
                    stage
                };
                f.delay = Some(Duration::from_secs(30));
                f.bytes_per_second = Some(1000);
                f.attempts = Some(1);
                f
            })
            .into_iter()
            .collect();
        Self {
            config,
            peer: SocketAddr::new(ip, 40_000),
            mx: if fault & 128 != 0 { "mxbiz1" } else { "mx1" },
            faults,
        }
    }

    /// The state a server shares with its sessions, built as the server builds it.
    fn shared(self) -> (Arc<Engine>, SocketAddr, &'static str) {
        let config = self.config;
        let clock = Clock::manual_at_unix(1_748_826_000);
        let store = Store::new(clock.clone(), config.store.clone());
        let mut faults = Faults::new(config.seed);
        faults.set(self.faults);
        let tls = config.tls.enabled.then(acceptor);
        let shared = server::engine_with_tls(
            config,
            store,
            clock,
            Arc::new(Mutex::new(faults)),
            Arc::new(Inflight::default()),
            tls,
        )
        .expect("the fuzzing configs are valid and the offline resolver needs no setup");
        (Arc::new(shared), self.peer, self.mx)
    }
}

/// Runs one SMTP session: the server's side as `qqmx serve` runs it, the client's side
/// from `bytes`. The first two bytes choose the settings (see the fuzz README); the rest
/// is a script of client input cut by the markers [`PAUSE`], [`START_TLS`] and
/// [`SHUTDOWN`].
///
/// # Panics
///
/// When the session panics, does not end once the client has closed, or sends anything
/// but well-formed reply lines (in plain text and inside TLS), or more replies than the
/// client sent lines (plus the greeting, an unfinished over-long line and a closing reply).
pub fn smtp_session(bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(MAX_SESSION_INPUT)];
    let (flags, fault, script) = match bytes {
        [flags, fault, script @ ..] => (*flags, *fault, script),
        _ => return,
    };
    let (shared, peer, mx) = Settings::new(flags, fault).shared();
    let steps = steps(script);
    runtime().block_on(run_session(shared, peer, mx, &steps));
}

async fn run_session(shared: Arc<Engine>, peer: SocketAddr, mx: &'static str, steps: &[Step<'_>]) {
    let (client, server) = tokio::io::duplex(16 * 1024 * 1024);
    let (stop, stopped) = watch::channel(false);
    let local = SocketAddr::from(([127, 0, 0, 1], 25));
    let server_side = async move {
        let mut stream = server;
        let peer = if shared.config.server.proxy_protocol {
            let idle = shared.config.limits.idle_timeout;
            match tokio::time::timeout(idle, crate::proxy::read_header(&mut stream)).await {
                Ok(Ok(addr)) => addr.unwrap_or(peer),
                Ok(Err(_)) | Err(_) => return,
            }
        } else {
            peer
        };
        let listener = session::Listener { mx, local };
        session::serve(shared, stream, peer, listener, stopped).await;
    };
    let client_side = client_run(client, steps, &stop);
    let ((), transcript) = tokio::time::timeout(SESSION_BOUND, async {
        tokio::join!(server_side, client_side)
    })
    .await
    .expect("the session ends once the client has closed");
    let lines = steps
        .iter()
        .map(|step| match step {
            Step::Send(bytes) => bytes.iter().filter(|&&b| b == b'\n').count(),
            Step::StartTls | Step::Shutdown => 0,
        })
        .sum::<usize>();
    let mut replies = 0;
    for part in &transcript {
        replies += check_replies(part);
    }
    // The greeting (or a refusal), one reply per line, one for an over-long line the input
    // ends in the middle of, and one closing reply (shutdown, `unavailable` fault).
    assert!(
        replies <= lines + 3,
        "{replies} replies to {lines} lines: {transcript:?}"
    );
}

/// The client: runs the steps, then closes and reads to the end. Returns what it read,
/// one part before TLS and one inside it.
async fn client_run(
    mut client: DuplexStream,
    steps: &[Step<'_>],
    stop: &watch::Sender<bool>,
) -> Vec<Vec<u8>> {
    let mut plain = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Send(_) | Step::Shutdown => {
                if !send_or_shut(&mut client, step, stop, &mut plain).await {
                    break;
                }
            }
            Step::StartTls => {
                settle().await;
                drain(&mut client, &mut plain).await;
                let name = ServerName::try_from("mx1.qq.com").expect("a valid DNS name");
                let handshake = connector().connect(name, client);
                return match tokio::time::timeout(Duration::from_secs(3600), handshake).await {
                    Ok(Ok(tls)) => vec![plain, inside_tls(tls, &steps[i + 1..], stop).await],
                    // The handshake failed: the server was not ready for it, or had already
                    // failed one on bytes sent after STARTTLS.
                    Ok(Err(_)) | Err(_) => vec![strip_tls(plain)],
                };
            }
        }
    }
    let _ = client.shutdown().await;
    let _ = client.read_to_end(&mut plain).await;
    vec![strip_tls(plain)]
}

/// Plays a `Send` (false when the server has gone) or a `Shutdown`, then collects what
/// the server said; the same in the clear and inside TLS.
async fn send_or_shut<S>(
    stream: &mut S,
    step: &Step<'_>,
    stop: &watch::Sender<bool>,
    out: &mut Vec<u8>,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match step {
        Step::Send(bytes) => {
            if stream.write_all(bytes).await.is_err() {
                return false;
            }
        }
        Step::Shutdown => {
            stop.send_replace(true);
        }
        Step::StartTls => {}
    }
    settle().await;
    drain(stream, out).await;
    true
}

/// The client inside TLS: runs the rest of the steps, then closes and reads to the end.
async fn inside_tls<S>(mut tls: S, steps: &[Step<'_>], stop: &watch::Sender<bool>) -> Vec<u8>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut inside = Vec::new();
    for step in steps {
        match step {
            Step::Send(_) | Step::Shutdown => {
                if !send_or_shut(&mut tls, step, stop, &mut inside).await {
                    break;
                }
            }
            // Inside TLS, a second handshake is bytes like any other.
            Step::StartTls => {
                if tls.write_all(START_TLS).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = tls.shutdown().await;
    let _ = tls.read_to_end(&mut inside).await;
    inside
}

/// Reads what the server has sent so far.
async fn drain<S: AsyncRead + Unpin>(stream: &mut S, into: &mut Vec<u8>) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await
    {
        if n == 0 {
            return;
        }
        into.extend_from_slice(&buf[..n]);
    }
}

/// Cuts what follows `220 Ready to start TLS` (TLS records answering the client's
/// garbage) off a plain transcript.
fn strip_tls(mut plain: Vec<u8>) -> Vec<u8> {
    let mut at = 0;
    let mut first = true;
    while let Some(end) = plain[at..].windows(2).position(|w| w == b"\r\n") {
        let line = &plain[at..at + end];
        let next = at + end + 2;
        if !first
            && line.starts_with(b"220 ")
            && plain.get(next).is_some_and(|&b| b == 0x15 || b == 0x16)
        {
            plain.truncate(next);
            return plain;
        }
        first = false;
        at = next;
    }
    plain
}

/// Checks that `out` is nothing but well-formed reply lines; returns how many replies.
fn check_replies(out: &[u8]) -> usize {
    assert!(
        out.is_empty() || out.ends_with(b"\r\n"),
        "output does not end with CRLF: {:?}",
        String::from_utf8_lossy(out)
    );
    let text = std::str::from_utf8(out).expect("replies are UTF-8");
    let mut replies = 0;
    let mut open: Option<&str> = None;
    for line in text.split_terminator("\r\n") {
        check_line(line);
        let code = &line[..3];
        if let Some(prev) = open {
            assert_eq!(prev, code, "a multi-line reply changes its code: {text:?}");
        }
        if line.as_bytes().get(3) == Some(&b'-') {
            open = Some(code);
        } else {
            open = None;
            replies += 1;
        }
    }
    assert!(
        open.is_none(),
        "a multi-line reply is not finished: {text:?}"
    );
    replies
}

/// One reply line, without its CRLF: a code from 200 to 599, then a space, a dash or the
/// end; no control characters; at most 510 bytes.
fn check_line(line: &str) {
    assert!(
        line.len() + 2 <= MAX_REPLY_LINE,
        "reply line of {} bytes: {line:?}",
        line.len() + 2
    );
    let bytes = line.as_bytes();
    assert!(
        bytes.len() >= 3
            && (b'2'..=b'5').contains(&bytes[0])
            && bytes[1].is_ascii_digit()
            && bytes[2].is_ascii_digit(),
        "reply line without a code: {line:?}"
    );
    assert!(
        matches!(bytes.get(3), None | Some(b' ' | b'-')),
        "reply code not followed by a space or dash: {line:?}"
    );
    assert!(
        !line.chars().any(|c| c.is_control() && c != '\t'),
        "control character in a reply line: {line:?}"
    );
}

/// Reads a PROXY protocol header from `bytes`.
///
/// # Panics
///
/// When the reader panics, does not finish on a complete input, reads past a header, or
/// returns an address for a header that does not carry one.
pub fn proxy_header(bytes: &[u8]) {
    let mut rest = bytes;
    let result = {
        let mut read = std::pin::pin!(crate::proxy::read_header(&mut rest));
        let mut cx = TaskContext::from_waker(std::task::Waker::noop());
        let Poll::Ready(result) = read.as_mut().poll(&mut cx) else {
            panic!("the header reader waits on an input that is all there");
        };
        result
    };
    let used = bytes.len() - rest.len();
    let Ok(addr) = result else {
        return;
    };
    let header = &bytes[..used];
    if header.starts_with(b"PROXY ") {
        assert!(header.ends_with(b"\r\n"), "a v1 header ends with CRLF");
        assert!(used <= 107, "a v1 header of {used} bytes");
        if let Some(addr) = addr {
            let text = std::str::from_utf8(header).expect("a v1 header read is ASCII");
            let ip = addr.ip().to_string();
            assert!(
                text.contains(&ip) || addr.ip().is_ipv6(),
                "{addr} is not in {text:?}"
            );
        }
    } else {
        let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
        assert_eq!(used, 16 + length, "a v2 header is read to its length");
        if addr.is_some() {
            assert_eq!(
                header[12] & 0x0f,
                1,
                "only a v2 PROXY command carries an address"
            );
        }
    }
}

/// Parses a config, and builds what a server builds from one.
///
/// # Panics
///
/// When parsing panics, when a config that parsed fails [`Config::check`], does not read
/// back the same from its own TOML, or cannot build its policy, or when one of its
/// catalogues renders a reply that is not well-formed.
pub fn config(text: &str) {
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    check_config(&config);
}

fn check_config(config: &Config) {
    config.check().expect("a parsed config passes its check");
    let toml = toml::to_string(config).expect("a config serializes");
    let again = Config::from_toml(&toml).expect("a config reads its own TOML");
    assert_eq!(&again, config, "a config changes through its TOML: {toml}");
    Policy::new(config).expect("a config that parsed builds its policy");
    let mut hosts = vec![config.host().to_owned()];
    hosts.extend(
        config
            .listeners
            .0
            .keys()
            .map(|mx| config.listener_host(mx).to_owned()),
    );
    let mut rng = StdRng::seed_from_u64(config.seed);
    for host in hosts {
        let catalogue = config.catalogue_for(&host);
        for &kind in ReplyKind::ALL {
            for starttls in [false, true] {
                let ctx = Context {
                    ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
                    n: 3,
                    starttls,
                };
                let reply = catalogue.render(kind, &ctx, &mut rng);
                let mut text = reply.text.into_bytes();
                text.extend_from_slice(b"\r\n");
                assert_eq!(check_replies(&text), 1, "{kind:?} renders one reply");
            }
        }
    }
}

/// Parses a scenario, and checks its config as [`config`] does.
///
/// # Panics
///
/// As [`config`], and when a scenario that parsed does not read back the same from its
/// own TOML or has no valid start.
pub fn scenario(text: &str) {
    let Ok(scenario) = Scenario::from_toml(text) else {
        return;
    };
    let toml = toml::to_string(&scenario).expect("a scenario serializes");
    let again = Scenario::from_toml(&toml).expect("a scenario reads its own TOML");
    assert_eq!(
        again, scenario,
        "a scenario changes through its TOML: {toml}"
    );
    let _ = scenario.start();
    check_config(&scenario.config);
}

/// The control API's routes that read a request body, as (method, path).
pub const API_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/clock/advance"),
    ("POST", "/api/v1/blacklist"),
    ("POST", "/api/v1/unblacklist"),
    ("POST", "/api/v1/whitelist"),
    ("POST", "/api/v1/complain"),
    ("POST", "/api/v1/limit"),
    ("POST", "/api/v1/reset"),
    ("PUT", "/api/v1/config"),
    ("PUT", "/api/v1/faults"),
    ("PUT", "/api/v1/scenario"),
];

/// Sends `body` to route `route` (an index into [`API_ROUTES`], wrapping; `PUT
/// /api/v1/config` gets it as JSON when `route` is past the end) of a fresh server's
/// control API, then reads the server's state back through the API.
///
/// # Panics
///
/// When a handler panics, answers with a 5xx status, or answers an error that is not
/// `{"error": "..."}`, or when the state read back afterwards does not answer 200.
pub fn api_body(route: u8, body: &[u8]) {
    let (method, path) = API_ROUTES[usize::from(route) % API_ROUTES.len()];
    let json_config = path.ends_with("/config") && usize::from(route) >= API_ROUTES.len();
    let server = Server::new(Config::default(), Clock::manual_at_unix(1_748_826_000))
        .expect("the default config starts");
    let options = crate::control::ApiOptions::default();
    let router = crate::control::router(server, options);
    runtime().block_on(async move {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("a valid method"))
            .uri(path);
        if json_config {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Body::from(body.to_vec()))
            .expect("a valid request");
        let (status, answer) = call(router.clone(), request).await;
        assert!(
            !status.is_server_error(),
            "{method} {path}: {status} {answer:?}"
        );
        if !status.is_success() {
            let error: serde_json::Value =
                serde_json::from_slice(&answer).expect("an error answer is JSON");
            assert!(error["error"].is_string(), "{method} {path}: {error}");
        }
        for path in [
            "/api/v1/config",
            "/api/v1/faults",
            "/api/v1/blocks",
            "/api/v1/stats",
        ] {
            let request = Request::builder()
                .uri(path)
                .body(Body::empty())
                .expect("a valid request");
            let (status, answer) = call(router.clone(), request).await;
            assert_eq!(status, StatusCode::OK, "GET {path}: {answer:?}");
        }
    });
}

/// Calls a router as a service, and reads the whole answer.
async fn call<S>(mut service: S, request: Request<Body>) -> (StatusCode, Vec<u8>)
where
    S: axum::ServiceExt<Request<Body>, Response = axum::response::Response>,
    S::Error: std::fmt::Debug,
{
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .expect("a router is always ready");
    let response = service.call(request).await.expect("a router never fails");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("an answer's body reads");
    (status, body.to_vec())
}
