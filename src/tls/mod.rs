//! TLS for STARTTLS: a rustls server config from PEM files, from a self-signed
//! certificate for the banner host name generated at start (rcgen, ring provider only),
//! or, with a test CA ([`TestCa`]), a certificate per listener issued by that CA.

mod ca;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

use crate::config::{Config, TlsConfig};

pub use ca::TestCa;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file held no certificate or no key.
    #[error("{path}: no {what} found")]
    Missing {
        /// The file.
        path: String,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// A PEM file (or text) is not what it should be.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file, or what the text was.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A certificate or key could not be generated.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The acceptor for STARTTLS, or `None` when TLS is switched off.
pub(crate) fn acceptor(config: &TlsConfig, host: &str) -> Result<Option<TlsAcceptor>, TlsError> {
    if !config.enabled {
        return Ok(None);
    }
    let (certs, key) = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => (read_certs(cert)?, read_key(key)?),
        _ => self_signed(host)?,
    };
    server_acceptor(certs, key).map(Some)
}

fn server_acceptor(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The STARTTLS acceptors of a server: with a test CA, one per listener, each with its
/// own certificate; otherwise one for all.
#[derive(Clone)]
pub(crate) struct Acceptors {
    all: TlsAcceptor,
    by_mx: BTreeMap<String, TlsAcceptor>,
    ca: Option<Arc<TestCa>>,
}

impl Acceptors {
    /// One acceptor for every listener.
    pub(crate) fn single(all: TlsAcceptor) -> Self {
        Self {
            all,
            by_mx: BTreeMap::new(),
            ca: None,
        }
    }

    /// The acceptor of the listener called `mx`.
    pub(crate) fn for_mx(&self, mx: &str) -> &TlsAcceptor {
        self.by_mx.get(mx).unwrap_or(&self.all)
    }

    /// The test CA that issued the certificates, if one did.
    pub(crate) fn ca(&self) -> Option<&Arc<TestCa>> {
        self.ca.as_ref()
    }
}

/// The acceptors `config` describes, or `None` when TLS is switched off. With a test CA
/// (`ca`, when given), every listener gets a certificate from it; else one certificate
/// serves all, as [`acceptor`] makes it.
pub(crate) fn acceptors(
    config: &Config,
    ca: Option<Arc<TestCa>>,
) -> Result<Option<Acceptors>, TlsError> {
    let Some(ca) = ca else {
        return Ok(acceptor(&config.tls, config.host())?.map(Acceptors::single));
    };
    if !config.tls.enabled {
        return Ok(None);
    }
    let issue = |mx: &str, host: &str, ip: Option<IpAddr>| {
        let (certs, key) = ca.issue(&listener_names(mx, host, ip))?;
        server_acceptor(certs, key)
    };
    let all = issue("mx1", config.host(), None)?;
    let by_mx = config
        .listeners
        .0
        .iter()
        .map(|(mx, listener)| {
            let acceptor = issue(mx, config.listener_host(mx), Some(listener.addr.ip()))?;
            Ok((mx.clone(), acceptor))
        })
        .collect::<Result<_, TlsError>>()?;
    Ok(Some(Acceptors {
        all,
        by_mx,
        ca: Some(ca),
    }))
}

/// The host name a sender dials for the listener called `mx`: `mx1` is `mx1.qq.com`; a
/// name with a dot is one already.
pub(crate) fn mx_host_name(mx: &str) -> String {
    if mx.contains('.') {
        mx.to_owned()
    } else {
        format!("{mx}.qq.com")
    }
}

/// The names a listener's certificate is for: its MX name, its banner host, `*.qq.com`,
/// `localhost`, loopback, and the address it is bound to when that is a particular one.
/// A listener or banner name that cannot be a DNS name in a certificate is left out.
fn listener_names(mx: &str, host: &str, ip: Option<IpAddr>) -> Vec<String> {
    let mx = mx_host_name(mx);
    let ip = ip
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| ip.to_string());
    let all = [
        mx.as_str(),
        host,
        "*.qq.com",
        "localhost",
        "127.0.0.1",
        "::1",
    ];
    let mut names: Vec<String> = Vec::new();
    for name in all.into_iter().map(str::to_owned).chain(ip) {
        let usable = name.parse::<IpAddr>().is_ok()
            || (!name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._*".contains(c)));
        if usable && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Where a server's test CA comes from, so that a config reload keeps the CA when the
/// settings that made it are the same (an in-memory CA lives as long as its server).
#[derive(Debug, Default)]
pub(crate) struct CaSource {
    /// A CA handed over by the program ([`QqMx::builder`](crate::QqMx::builder)'s
    /// `tls_ca`): used whatever the config says.
    given: Option<Arc<TestCa>>,
    /// The CA made for the settings last asked for, with those settings.
    made: Mutex<Option<(CaSettings, Arc<TestCa>)>>,
}

/// The settings of `[tls]` that choose a test CA.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CaSettings {
    ca: bool,
    files: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl CaSource {
    /// Always `ca`.
    pub(crate) fn given(ca: Arc<TestCa>) -> Self {
        Self {
            given: Some(ca),
            made: Mutex::new(None),
        }
    }

    /// The CA for `config`: the given one; else, when the config asks for one and TLS is
    /// on, the CA already made for the same settings, or one read, made or written anew.
    pub(crate) fn for_config(&self, config: &TlsConfig) -> Result<Option<Arc<TestCa>>, TlsError> {
        if let Some(ca) = &self.given {
            return Ok(Some(ca.clone()));
        }
        if !config.enabled || !config.uses_ca() {
            return Ok(None);
        }
        if let (None, Some(key)) = (&config.ca_cert, &config.ca_key) {
            return Err(TlsError::Invalid {
                path: key.display().to_string(),
                problem: "a test CA key without its certificate: set `[tls] ca_cert` too".into(),
            });
        }
        let files = config.ca_files();
        let settings = CaSettings {
            ca: config.ca,
            files: files.clone(),
        };
        let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, ca)) = made.as_ref().filter(|(made_for, _)| *made_for == settings) {
            return Ok(Some(ca.clone()));
        }
        let ca = Arc::new(match &files {
            Some((cert, key)) => TestCa::load_or_create(cert, key)?,
            None => TestCa::generate()?,
        });
        *made = Some((settings, ca.clone()));
        Ok(Some(ca))
    }
}

fn self_signed(
    host: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let signing_key = rcgen::KeyPair::generate()?;
    // The banner host, the MX names a sender dials, and loopback.
    let names = [host, "*.qq.com", "localhost", "127.0.0.1"];
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host);
    let cert = params.self_signed(&signing_key)?;
    let key = PrivatePkcs8KeyDer::from(signing_key.serialize_der());
    Ok((vec![cert.der().clone()], key.into()))
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::Missing {
            path: path.display().to_string(),
            what: "private key",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_certificate_names_its_mx_its_banner_and_loopback() {
        let names = listener_names("mx2", "newxmmxszc27.qq.com", "0.0.0.0".parse().ok());
        assert_eq!(
            names,
            [
                "mx2.qq.com",
                "newxmmxszc27.qq.com",
                "*.qq.com",
                "localhost",
                "127.0.0.1",
                "::1"
            ]
        );
        let names = listener_names("mx.example", "bad host\u{7f}", "10.0.0.5".parse().ok());
        assert_eq!(names[0], "mx.example");
        assert!(!names.iter().any(|n| n.starts_with("bad")));
        assert_eq!(names.last().map(String::as_str), Some("10.0.0.5"));
    }
}
