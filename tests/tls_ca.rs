//! The test CA, checked by clients that really verify: rustls (through tokio-rustls and
//! lettre) with only the CA as a root, Python's `ssl` with hostname checking, and
//! `openssl s_client -verify_return_error`. A listener's certificate verifies for its MX
//! name, its banner host and `127.0.0.1` with the CA, and fails without it. The CA is the
//! same whether it is read from the embedded handle, the API or `qqmx ca`, and survives a
//! reload; the default stays a self-signed certificate that no CA vouches for.
//!
//! The Python and openssl tests run `python3` and `openssl` as child processes
//! (`scripts/test.sh` installs them on Debian); a missing tool fails the test.

mod common;

#[cfg(feature = "control")]
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
#[cfg(feature = "control")]
use qqmx::config::ListenerConfig;
#[cfg(feature = "control")]
use qqmx::sidecar::{Sidecar, SidecarOptions};
use qqmx::{Clock, Config, EventKind, QqMx, Server, TestCa};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types};

/// Every network step waits at most this long: only a hang reaches it.
const PATIENCE: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------ clients

/// A rustls client that trusts the CA certificates in `pem` and nothing else.
fn trusting(pem: &[&str]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for text in pem {
        for cert in rustls_pemfile::certs(&mut text.as_bytes()) {
            roots.add(cert.expect("PEM")).expect("a root");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Reads one whole reply.
async fn reply<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut BufReader<S>) -> String {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(PATIENCE, stream.read_line(&mut line))
            .await
            .expect("a reply in time")
            .expect("read");
        assert!(n > 0, "closed after {text:?}");
        text.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return text;
        }
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    line: &str,
) -> String {
    stream
        .get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .expect("write");
    reply(stream).await
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Greeting, EHLO, STARTTLS, then the handshake with `client` expecting `name`: the TLS
/// stream, with the certificate the server presented, or rustls's refusal.
async fn starttls(
    addr: SocketAddr,
    name: &str,
    client: rustls::ClientConfig,
) -> Result<(BufReader<TlsStream>, Vec<u8>), String> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut plain = BufReader::new(tcp);
    assert!(reply(&mut plain).await.starts_with("220"));
    assert!(
        command(&mut plain, "EHLO client.example.org")
            .await
            .contains("STARTTLS")
    );
    assert!(command(&mut plain, "STARTTLS").await.starts_with("220"));
    let name = pki_types::ServerName::try_from(name.to_owned()).expect("a server name");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tls = tokio::time::timeout(PATIENCE, connector.connect(name, plain.into_inner()))
        .await
        .expect("a handshake in time")
        .map_err(|e| e.to_string())?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("a certificate");
    Ok((BufReader::new(tls), presented))
}

/// Sends one message inside TLS; the reply at the end of data.
async fn send_inside(tls: &mut BufReader<TlsStream>) -> String {
    assert!(
        command(tls, "EHLO client.example.org")
            .await
            .starts_with("250")
    );
    assert!(
        command(tls, "MAIL FROM:<a@example.org>")
            .await
            .starts_with("250")
    );
    assert!(
        command(tls, "RCPT TO:<10001@qq.com>")
            .await
            .starts_with("250")
    );
    assert!(command(tls, "DATA").await.starts_with("354"));
    let end = command(tls, "Subject: over verified TLS\r\n\r\nHello.\r\n.").await;
    command(tls, "QUIT").await;
    end
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A directory of its own under the system's temporary directory, emptied.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qqmx-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} does not run ({e}); see scripts/test.sh"))
}

// ------------------------------------------------------------------------ rustls, lettre

#[tokio::test]
async fn rustls_trusting_only_the_ca_verifies_mx1_by_name_and_by_address() {
    let ca = Arc::new(TestCa::generate().expect("a CA"));
    let server = QqMx::builder().tls_ca(ca.clone()).no_limits().start();
    assert_eq!(server.ca_pem().as_deref(), Some(ca.cert_pem()));

    for name in [
        "mx1.qq.com",
        "127.0.0.1",
        "localhost",
        "newxmmxszc23-0.qq.com",
    ] {
        let verified = starttls(server.addr(), name, trusting(&[ca.cert_pem()])).await;
        assert!(verified.is_ok(), "{name}: {:?}", verified.err());
    }
    let (mut tls, presented) = starttls(server.addr(), "mx1.qq.com", trusting(&[ca.cert_pem()]))
        .await
        .expect("verified");
    assert!(contains(&presented, "mx1.qq.com"));
    assert!(send_inside(&mut tls).await.starts_with("250"));

    let message = &server.wait_for_messages(1, PATIENCE).expect("the message")[0];
    assert!(message.tls);
    assert!(
        server
            .events()
            .iter()
            .any(|e| matches!(e.kind, EventKind::TlsStarted))
    );
}

#[tokio::test]
async fn without_the_ca_or_for_another_name_the_certificate_does_not_verify() {
    let ca = TestCa::generate().expect("a CA");
    let other = TestCa::generate().expect("another CA");
    let server = QqMx::builder().tls_ca(ca).start();

    let unknown = starttls(server.addr(), "mx1.qq.com", trusting(&[]))
        .await
        .expect_err("no root");
    assert!(unknown.contains("UnknownIssuer"), "{unknown}");
    let another = starttls(server.addr(), "mx1.qq.com", trusting(&[other.cert_pem()]))
        .await
        .expect_err("another CA");
    assert!(another.contains("invalid peer certificate"), "{another}");
    let ca_pem = server.ca_pem().expect("the CA");
    let wrong = starttls(server.addr(), "mx1.example.com", trusting(&[&ca_pem]))
        .await
        .expect_err("another name");
    assert!(wrong.contains("not valid for name"), "{wrong}");
}

#[tokio::test]
async fn lettre_delivers_over_verified_starttls_with_the_ca_as_its_only_root() {
    let ca = TestCa::generate().expect("a CA");
    let root = Certificate::from_pem(ca.cert_pem().as_bytes()).expect("the CA for lettre");
    let server = QqMx::builder().tls_ca(ca).no_limits().start();
    let email = Message::builder()
        .from(
            "Sender <sender@example.org>"
                .parse::<Mailbox>()
                .expect("from"),
        )
        .to("10001@qq.com".parse::<Mailbox>().expect("to"))
        .subject("Hello over verified TLS")
        .body("Hi there.\r\n".to_owned())
        .expect("message");
    let transport = |root: Option<Certificate>| {
        let mut tls = TlsParameters::builder("mx1.qq.com".to_owned())
            .certificate_store(CertificateStore::None);
        if let Some(root) = root {
            tls = tls.add_root_certificate(root);
        }
        let tls = tls.build_rustls().expect("TLS parameters");
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(server.addr().port())
            .tls(Tls::Required(tls))
            .build()
    };

    let refused = transport(None).send(email.clone()).await;
    assert!(refused.is_err(), "delivered without trusting the CA");
    transport(Some(root)).send(email).await.expect("delivered");

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].tls);
}

// ------------------------------------------------------------------------ the default

#[tokio::test]
async fn the_default_is_a_self_signed_certificate_and_no_ca() {
    let server = QqMx::start();
    assert_eq!(server.ca_pem(), None);
    let some_ca = TestCa::generate().expect("a CA");
    let refused = starttls(server.addr(), "mx1.qq.com", trusting(&[some_ca.cert_pem()]))
        .await
        .expect_err("nothing vouches for a self-signed certificate");
    assert!(refused.contains("invalid peer certificate"), "{refused}");

    let mut config = Config::default();
    config.tls.ca = true;
    let asked = QqMx::builder().config(config).start();
    let pem = asked.ca_pem().expect("a CA made for `[tls] ca = true`");
    assert!(
        starttls(asked.addr(), "mx1.qq.com", trusting(&[&pem]))
            .await
            .is_ok()
    );
}

#[test]
fn a_reload_keeps_the_ca_and_conflicting_settings_are_refused() {
    let mut config = Config::default();
    config.tls.ca = true;
    let server = Server::new(config.clone(), Clock::manual_at_unix(0)).expect("a server");
    let first = server.ca_pem().expect("a CA");
    config.seed = 9;
    server.reload(config.clone()).expect("reloaded");
    assert_eq!(server.ca_pem().as_deref(), Some(first.as_str()));
    config.tls.enabled = false;
    server.reload(config.clone()).expect("reloaded");
    assert_eq!(server.ca_pem(), None, "no TLS, no CA in use");

    config.tls.enabled = true;
    config.tls.cert = Some("cert.pem".into());
    config.tls.key = Some("key.pem".into());
    let err = config.check().expect_err("a CA and a certificate");
    assert!(
        err.to_string()
            .contains("`cert` and `key` cannot be given too"),
        "{err}"
    );
}

#[test]
fn ca_files_are_read_or_made_and_bad_ones_are_named() {
    let dir = temp_dir("files");
    let mut config = Config::default();
    config.tls.ca_cert = Some(dir.join("ca.pem"));
    let server = Server::new(config.clone(), Clock::manual_at_unix(0)).expect("a server");
    let made = server.ca_pem().expect("a CA");
    assert!(
        dir.join("ca.key").exists(),
        "the key beside the certificate"
    );
    let again = Server::new(config.clone(), Clock::manual_at_unix(0)).expect("a server");
    assert_eq!(again.ca_pem(), Some(made));

    std::fs::write(dir.join("bad.pem"), "-----BEGIN NOTHING-----\n").expect("write");
    config.tls.ca_cert = Some(dir.join("bad.pem"));
    config.tls.ca_key = Some(dir.join("ca.key"));
    let err = Server::new(config, Clock::manual_at_unix(0)).expect_err("bad PEM");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no PEM certificate found",
            dir.join("bad.pem").display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------ listeners, API
// (the sidecar assembly and the control API: feature `control`)

#[cfg(feature = "control")]
/// One HTTP GET: status, lower-cased head, body.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the API");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[cfg(feature = "control")]
fn listeners(names: &[&str]) -> Config {
    let mut config = Config::default();
    config.listeners.0.clear();
    for name in names {
        config.listeners.0.insert(
            (*name).to_owned(),
            ListenerConfig::new("127.0.0.1:0".parse().expect("address")),
        );
    }
    config
}

#[cfg(feature = "control")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_has_a_certificate_for_its_mx_name_and_the_api_serves_the_ca() {
    let mut config = listeners(&["mx1", "mx2", "mxbiz1"]);
    config.tls.ca = true;
    let options = SidecarOptions::default()
        .api("127.0.0.1:0".parse().expect("address"))
        .token(Some("t0ken".into()));
    let sidecar = Sidecar::start(config, options).await.expect("started");
    let api = sidecar.api_addr().expect("the API");
    let pem = sidecar.server().ca_pem().expect("a CA");

    let (status, head, body) = get(api, "/api/v1/tls/ca.pem", Some("t0ken"));
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("content-type: application/x-pem-file"),
        "{head}"
    );
    assert_eq!(body, pem);
    let (status, _, _) = get(api, "/api/v1/tls/ca.pem", None);
    assert_eq!(status, 401, "the API's token guards the CA too");

    let config = sidecar.server().config();
    for (mx, addr) in sidecar.listeners() {
        let name = format!("{mx}.qq.com");
        let (_, presented) = starttls(*addr, &name, trusting(&[&pem]))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            contains(&presented, config.listener_host(mx)),
            "{mx}'s banner host"
        );
        for (other, _) in sidecar.listeners() {
            let named = contains(&presented, &format!("{other}.qq.com"));
            assert_eq!(named, other == mx, "{mx}'s certificate and {other}.qq.com");
        }
        for name in ["127.0.0.1", "anything.qq.com"] {
            let verified = starttls(*addr, name, trusting(&[&pem])).await;
            assert!(verified.is_ok(), "{mx} as {name}: {:?}", verified.err());
        }
    }
    sidecar.shutdown().await;
}

#[cfg(feature = "control")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ca_the_api_says_so_in_json() {
    let sidecar = Sidecar::start(
        listeners(&["mx1"]),
        SidecarOptions::default().api("127.0.0.1:0".parse().expect("address")),
    )
    .await
    .expect("started");
    let (status, head, body) = get(sidecar.api_addr().expect("API"), "/api/v1/tls/ca.pem", None);
    assert_eq!(status, 404);
    assert!(head.contains("content-type: application/json"), "{head}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let text = error["error"].as_str().expect("an error");
    assert!(text.starts_with("no test CA is in use"), "{text}");
    sidecar.shutdown().await;
}

// ------------------------------------------------------------------------ Python, openssl

/// Python's smtplib, STARTTLS with `ssl.create_default_context(cafile=...)`, which checks
/// the host name: connects to 127.0.0.1 whatever name it is given (as an `/etc/hosts`
/// line would) and expects the certificate to be valid for that name.
const PYTHON: &str = r#"
import smtplib, socket, ssl, sys
name, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class Loopback(smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        return socket.create_connection(("127.0.0.1", port), timeout)

context = ssl.create_default_context(cafile=cafile)
with Loopback(name, port, timeout=30) as smtp:
    smtp.ehlo("client.example.org")
    try:
        smtp.starttls(context=context)
    except ssl.SSLCertVerificationError as e:
        print("verification failed:", e.verify_message)
        sys.exit(3)
    smtp.ehlo("client.example.org")
    smtp.sendmail("a@example.org", ["10001@qq.com"], "Subject: from Python\r\n\r\nHi.\r\n")
print("sent")
"#;

fn python(name: &str, port: u16, cafile: &Path) -> Output {
    run(Command::new("python3")
        .args(["-c", PYTHON, name, &port.to_string()])
        .arg(cafile))
}

#[test]
fn python_smtplib_verifies_the_listener_with_the_ca_and_checks_the_name() {
    let dir = temp_dir("python");
    let ca = TestCa::generate().expect("a CA");
    let other = TestCa::generate().expect("another CA");
    let (cafile, otherfile) = (dir.join("ca.pem"), dir.join("other.pem"));
    std::fs::write(&cafile, ca.cert_pem()).expect("write");
    std::fs::write(&otherfile, other.cert_pem()).expect("write");
    let server = QqMx::builder().tls_ca(ca).no_limits().start();
    let port = server.addr().port();

    for name in ["mx1.qq.com", "127.0.0.1"] {
        let out = python(name, port, &cafile);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    assert!(messages.iter().all(|m| m.tls));

    let out = python("mx1.qq.com", port, &otherfile);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains("unable to get local issuer certificate"),
        "{said}"
    );
    let out = python("mx1.example.com", port, &cafile);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("Hostname mismatch"), "{said}");
    assert_eq!(server.messages().len(), 2, "nothing more arrived");
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "control")]
fn s_client(port: u16, cafile: &Path, check: &[&str]) -> Output {
    run(Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-verify_return_error",
            "-connect",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-CAfile")
        .arg(cafile)
        .args(check)
        .stdin(std::process::Stdio::null()))
}

#[cfg(feature = "control")]
#[test]
fn openssl_s_client_verifies_every_listener_for_its_mx_name() {
    let dir = temp_dir("openssl");
    let other = TestCa::generate().expect("another CA");
    let (cafile, otherfile) = (dir.join("ca.pem"), dir.join("other.pem"));
    std::fs::write(&otherfile, other.cert_pem()).expect("write");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mut config = listeners(&["mx1", "mx2", "mx3", "mxbiz1"]);
    config.tls.ca = true;
    let sidecar = runtime.block_on(async {
        Sidecar::start(config, SidecarOptions::default())
            .await
            .expect("started")
    });
    let pem = sidecar.server().ca_pem().expect("a CA");
    std::fs::write(&cafile, &pem).expect("write");

    for (mx, addr) in sidecar.listeners() {
        let name = format!("{mx}.qq.com");
        let out = s_client(addr.port(), &cafile, &["-verify_hostname", &name]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mx}: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains("Verify return code: 0 (ok)"), "{mx}: {said}");
        let out = s_client(addr.port(), &cafile, &["-verify_ip", "127.0.0.1"]);
        assert!(out.status.success(), "{mx} by address");
        let out = s_client(addr.port(), &otherfile, &["-verify_hostname", &name]);
        assert!(!out.status.success(), "{mx} verified with another CA");
    }
    runtime.block_on(sidecar.shutdown());
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------ qqmx ca

#[cfg(feature = "cli")]
#[test]
fn qqmx_ca_and_qqmx_serve_share_the_ca_of_one_config() {
    use common::sidecar::{QQMX, Sidecar as Binary};
    let dir = temp_dir("cli");
    let config = dir.join("qqmx.toml");
    let (cert, key) = (dir.join("ca/cert.pem"), dir.join("ca/key.pem"));
    std::fs::write(
        &config,
        format!(
            "[tls]\nca_cert = {:?}\nca_key = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .expect("write");

    let printed = run(Command::new(QQMX).arg("ca").arg("--config").arg(&config));
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let printed = String::from_utf8(printed.stdout).expect("PEM");
    assert!(
        printed.starts_with("-----BEGIN CERTIFICATE-----"),
        "{printed}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key)
            .expect("the key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = run(Command::new(QQMX).arg("ca").env("QQMX_CONFIG", &config));
    assert_eq!(String::from_utf8_lossy(&again.stdout), printed);

    let serve = Binary::start(
        &[
            "--config",
            &config.display().to_string(),
            "--smtp",
            "mx1=127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ],
        &[],
    );
    let (status, body) = serve.get("/api/v1/tls/ca.pem");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, printed);
    let out = s_client(
        serve.mx("mx1").port(),
        &cert,
        &["-verify_hostname", "mx1.qq.com"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(serve);

    let none = run(Command::new(QQMX).arg("ca").env_remove("QQMX_CONFIG"));
    assert!(!none.status.success());
    let said = String::from_utf8_lossy(&none.stderr);
    assert!(said.contains("no test CA file in the config"), "{said}");
    std::fs::write(&key, "not a key").expect("write");
    let bad = run(Command::new(QQMX).arg("ca").arg("-c").arg(&config));
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        said.starts_with(&format!("qqmx: {}: ", key.display())),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
