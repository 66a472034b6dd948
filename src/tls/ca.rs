//! The test CA: a certificate authority that issues each listener a certificate for its
//! MX name, so that a sender which verifies TLS can be told to trust qqmx.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::TlsError;

/// The common name of a CA qqmx makes.
const CA_NAME: &str = "qqmx test CA";

/// A certificate authority for tests: qqmx issues each listener's certificate from it, and
/// a sender that trusts its certificate ([`cert_pem`](Self::cert_pem)) can verify them.
///
/// Made in memory ([`generate`](Self::generate)), from PEM text
/// ([`from_pem`](Self::from_pem)) or from two files, made and written there when absent
/// ([`load_or_create`](Self::load_or_create)). Its key signs certificates for
/// `*.qq.com`: trust it in tests only.
///
/// ```
/// let ca = qqmx::TestCa::generate().unwrap();
/// assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
/// let again = qqmx::TestCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
/// assert_eq!(again.cert_pem(), ca.cert_pem());
/// ```
pub struct TestCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// The file the certificate was read from or written to.
    path: Option<PathBuf>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA with a new key, in memory.
    ///
    /// # Errors
    ///
    /// [`TlsError::Generate`] when the key or certificate cannot be made.
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, CA_NAME);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "qqmx");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            path: None,
        })
    }

    /// The CA whose certificate and private key are these PEM texts.
    ///
    /// # Errors
    ///
    /// [`TlsError::Invalid`] when either is not PEM of the right kind, the certificate may
    /// not sign certificates, or the key is not the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        Self::parse(cert_pem, key_pem, "the CA certificate", "the CA key")
    }

    /// The CA kept in the files `cert` and `key`: read when both exist; made and written
    /// there when neither does (the key with mode 0600, missing directories created).
    /// Two processes that start at once end up with the same CA.
    ///
    /// # Errors
    ///
    /// [`TlsError::Read`] or [`TlsError::Invalid`], naming the file, when a file cannot
    /// be read or written or holds no usable PEM, or when one exists without the other.
    pub fn load_or_create(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        match (cert.exists(), key.exists()) {
            (true, true) => Self::load(cert, key),
            (false, false) => Self::create(cert, key),
            (true, false) => Err(invalid(
                key,
                format!(
                    "missing, though the CA certificate {} exists",
                    cert.display()
                ),
            )),
            (false, true) => Self::load_when_written(cert, key),
        }
    }

    /// The CA's certificate, PEM: what a sender is told to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA's private key, PEM (PKCS #8).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The file the certificate was read from or written to; `None` for a CA in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// A certificate for `names` (host names, `*.` wildcards or IP addresses), the first
    /// being its common name, signed by this CA, with its new key.
    pub(crate) fn issue(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let der = PrivatePkcs8KeyDer::from(key.serialize_der());
        Ok((vec![cert.der().clone()], der.into()))
    }

    fn parse(cert_pem: &str, key_pem: &str, cert: &str, key: &str) -> Result<Self, TlsError> {
        let bad = |what: &str, problem: String| TlsError::Invalid {
            path: what.to_owned(),
            problem,
        };
        let cert_der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| bad(cert, "no PEM certificate found".into()))?;
        let signing_key = KeyPair::from_pem(key_pem).map_err(|e| {
            bad(
                key,
                format!(
                    "not a PKCS #8 PEM private key qqmx can sign with ({e}); convert \
                     another form with `openssl pkcs8 -topk8 -nocrypt -in KEY`"
                ),
            )
        })?;
        let spki = signing_key.subject_public_key_info();
        if !cert_der.windows(spki.len()).any(|w| w == spki.as_slice()) {
            return Err(bad(key, format!("not the private key of {cert}")));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, signing_key)
            .map_err(|e| bad(cert, format!("not a CA certificate: {e}")))?;
        let usages = issuer.key_usages();
        if !usages.is_empty() && !usages.contains(&KeyUsagePurpose::KeyCertSign) {
            return Err(bad(
                cert,
                "its key usage does not allow signing certificates".into(),
            ));
        }
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            issuer,
            path: None,
        })
    }

    fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let text = |path: &Path| {
            let bytes = super::read(path)?;
            String::from_utf8(bytes).map_err(|_| invalid(path, "not PEM text".into()))
        };
        let mut ca = Self::parse(
            &text(cert)?,
            &text(key)?,
            &cert.display().to_string(),
            &key.display().to_string(),
        )?;
        ca.path = Some(cert.to_owned());
        Ok(ca)
    }

    /// Loads the CA whose key another process has just written and whose certificate it
    /// is about to write (it writes the key first); errs if the certificate never comes.
    fn load_when_written(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        for _ in 0..WAIT_TRIES {
            if cert.exists() {
                return Self::load(cert, key);
            }
            std::thread::sleep(WAIT_STEP);
        }
        Err(invalid(
            cert,
            format!("missing, though the CA key {} exists", key.display()),
        ))
    }

    /// Makes a CA and writes it to `cert` and `key`. Each file is written whole under a
    /// temporary name and then linked into place, which fails if the name is taken: a
    /// process that loses the race reads the winner's CA instead.
    fn create(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let mut ca = Self::generate()?;
        let key_tmp = write_temporary(key, ca.key_pem().as_bytes(), 0o600)?;
        let linked = std::fs::hard_link(&key_tmp, key);
        let _ = std::fs::remove_file(&key_tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Self::load_when_written(cert, key);
            }
            Err(source) => return Err(read_error(key, source)),
        }
        let cert_tmp = write_temporary(cert, ca.cert_pem.as_bytes(), 0o644)?;
        let linked = std::fs::hard_link(&cert_tmp, cert);
        let _ = std::fs::remove_file(&cert_tmp);
        linked.map_err(|source| read_error(cert, source))?;
        tracing::info!(cert = %cert.display(), key = %key.display(), "wrote a new test CA");
        ca.path = Some(cert.to_owned());
        Ok(ca)
    }
}

/// How often, and how long apart, a CA whose key exists is looked for again while another
/// process writes its certificate: a second in all, far more than writing a file takes.
const WAIT_TRIES: u32 = 20;
const WAIT_STEP: Duration = Duration::from_millis(50);

fn invalid(path: &Path, problem: String) -> TlsError {
    TlsError::Invalid {
        path: path.display().to_string(),
        problem,
    }
}

fn read_error(path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Read {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` to a new file beside `path` with `mode`, creating missing directories;
/// returns the file's name.
fn write_temporary(path: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf, TlsError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| read_error(path, source))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = options
        .open(&tmp)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()));
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(read_error(path, source));
    }
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("qqmx-ca-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_ca_is_written_once_and_read_back() {
        let dir = temp_dir("files");
        let (cert, key) = (dir.join("sub/ca.pem"), dir.join("sub/ca.key"));
        let made = TestCa::load_or_create(&cert, &key).expect("made");
        assert_eq!(made.path(), Some(cert.as_path()));
        let read = TestCa::load_or_create(&cert, &key).expect("read");
        assert_eq!(read.cert_pem(), made.cert_pem());
        assert_eq!(read.key_pem(), made.key_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("sub"))
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = temp_dir("bad");
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        std::fs::write(&cert, "not pem").expect("write");
        let err = TestCa::load_or_create(&cert, &key).expect_err("no key");
        assert!(
            err.to_string().starts_with(&key.display().to_string()),
            "{err}"
        );

        let other = TestCa::generate().expect("ca");
        std::fs::write(&key, other.key_pem()).expect("write");
        let err = TestCa::load_or_create(&cert, &key).expect_err("no certificate");
        assert!(
            err.to_string().starts_with(&cert.display().to_string()),
            "{err}"
        );

        let ca = TestCa::generate().expect("ca");
        std::fs::write(&cert, ca.cert_pem()).expect("write");
        let err = TestCa::load_or_create(&cert, &key).expect_err("another CA's key");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: not the private key of {}",
                key.display(),
                cert.display()
            )
        );
        std::fs::write(&key, "garbage").expect("write");
        let err = TestCa::load_or_create(&cert, &key).expect_err("no key");
        assert!(
            err.to_string().starts_with(&key.display().to_string()),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_leaf_certificate_cannot_act_as_the_ca() {
        let ca = TestCa::generate().expect("ca");
        let leaf_key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["mx1.qq.com".to_owned()]).expect("params");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf = params.signed_by(&leaf_key, &ca.issuer).expect("leaf");
        let err = TestCa::from_pem(&leaf.pem(), &leaf_key.serialize_pem()).expect_err("a leaf");
        assert!(err.to_string().contains("does not allow signing"), "{err}");
    }
}
