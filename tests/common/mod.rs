//! A small SMTP client for tests: raw lines in, whole replies out, a transcript kept.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types};

pub mod postfix;
#[cfg(feature = "cli")]
pub mod sidecar;

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Every read waits at most this long, so a broken server fails the test instead of
/// hanging it.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How long [`eventually`] waits for a condition that holds at once on an idle machine:
/// only a bound on a hang, never what decides a normal run, so generous enough for a
/// loaded 2-core machine.
pub const HANG: Duration = Duration::from_secs(30);

/// Checks `condition` every 20 ms until it holds (true) or [`HANG`] has passed (false).
pub async fn eventually<F, Fut>(mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Smtp {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    pub transcript: String,
}

impl Smtp {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect to qqmx");
        let mut smtp = Self {
            stream: Box::new(stream),
            buf: Vec::new(),
            transcript: String::new(),
        };
        smtp.read_reply().await;
        smtp
    }

    /// Connects from `source` (any address in 127.0.0.0/8 is a distinct client) and
    /// reads the greeting.
    pub async fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .expect("bind the source address");
        let stream = socket.connect(addr).await.expect("connect to qqmx");
        let mut smtp = Self {
            stream: Box::new(stream),
            buf: Vec::new(),
            transcript: String::new(),
        };
        smtp.read_reply().await;
        smtp
    }

    /// Connects, sends a PROXY protocol header, and reads the greeting.
    pub async fn connect_after_proxy(addr: SocketAddr, header: &[u8]) -> Self {
        let mut stream = TcpStream::connect(addr).await.expect("connect to qqmx");
        stream.write_all(header).await.expect("PROXY header");
        let mut smtp = Self {
            stream: Box::new(stream),
            buf: Vec::new(),
            transcript: String::new(),
        };
        smtp.read_reply().await;
        smtp
    }

    /// Sends one command line and returns the whole reply (lines joined by CRLF).
    pub async fn send(&mut self, line: &str) -> String {
        self.transcript.push_str(&format!("C: {line}\n"));
        self.write_raw(format!("{line}\r\n").as_bytes()).await;
        self.read_reply().await
    }

    /// Sends a message body (already dot-stuffed) and the final dot.
    pub async fn data(&mut self, body: &str) -> String {
        self.transcript.push_str("C: <message>\nC: .\n");
        let mut bytes = body.as_bytes().to_vec();
        if !body.is_empty() && !body.ends_with("\r\n") {
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b".\r\n");
        self.write_raw(&bytes).await;
        self.read_reply().await
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(PATIENCE, self.stream.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write");
    }

    /// Reads one complete reply, single- or multi-line.
    pub async fn read_reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await;
            let last = line.as_bytes().get(3) != Some(&b'-');
            self.transcript.push_str(&format!("S: {line}\n"));
            lines.push(line);
            if last {
                return lines.join("\r\n");
            }
        }
    }

    /// Reads one line without its CRLF; panics if the server closes first.
    pub async fn read_line(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let text = String::from_utf8(line).expect("replies are UTF-8");
                return text.trim_end_matches(['\r', '\n']).to_owned();
            }
            let n = self.fill().await;
            assert!(
                n > 0,
                "qqmx closed the connection; transcript:\n{}",
                self.transcript
            );
        }
    }

    /// Reads more bytes; 0 means the server closed.
    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk))
            .await
            .expect("qqmx answers in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// The stream, for reading what is not a reply (nothing must be buffered).
    pub fn into_inner(self) -> Box<dyn Stream> {
        assert!(self.buf.is_empty(), "unread bytes: {:?}", self.buf);
        self.stream
    }

    /// Whether the server closes the connection with nothing more to say.
    pub async fn closed(&mut self) -> bool {
        self.buf.is_empty() && self.fill().await == 0
    }

    /// Upgrades like [`tls`](Self::tls) and returns the certificate the server presented.
    pub async fn tls_with_peer_certificate(mut self) -> (Self, Vec<u8>) {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(insecure_client()));
        let name = pki_types::ServerName::try_from("mx1.qq.com").expect("name");
        let stream = std::mem::replace(&mut self.stream, Box::new(tokio::io::duplex(1).0));
        let tls = connector
            .connect(name, stream)
            .await
            .expect("TLS handshake");
        let presented = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .expect("a certificate");
        self.stream = Box::new(tls);
        self.transcript.push_str("(TLS)\n");
        (self, presented)
    }

    /// Upgrades the stream after a `220` to STARTTLS.
    pub async fn tls(self) -> Self {
        self.tls_with_peer_certificate().await.0
    }
}

/// Runs a whole delivery: EHLO, MAIL, RCPT, DATA (if RCPT was accepted), QUIT.
/// Returns the transcript.
pub async fn deliver(addr: SocketAddr, from: &str, to: &str, body: &str) -> String {
    let mut smtp = Smtp::connect(addr).await;
    smtp.send("EHLO client.example.org").await;
    smtp.send(&format!("MAIL FROM:<{from}>")).await;
    if smtp
        .send(&format!("RCPT TO:<{to}>"))
        .await
        .starts_with("250")
        && smtp.send("DATA").await.starts_with("354")
    {
        smtp.data(body).await;
    }
    smtp.send("QUIT").await;
    assert!(smtp.closed().await, "qqmx closes after QUIT");
    smtp.transcript
}

/// A rustls client that accepts any certificate: qqmx's is self-signed.
pub fn insecure_client() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &pki_types::CertificateDer<'_>,
        _: &[pki_types::CertificateDer<'_>],
        _: &pki_types::ServerName<'_>,
        _: &[u8],
        _: pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
