//! The `auth` layer: SPF, DKIM and DMARC, evaluated with mail-auth against the config's
//! DNS zone.
//!
//! The [`Authenticator`] answers two questions, each at the stage where QQ asks it: SPF for
//! the envelope sender at MAIL ([`Authenticator::spf`]), and DKIM and DMARC for a complete
//! message at the end of data ([`Authenticator::message`]). It returns facts
//! ([`SpfCheck`], [`AuthReport`]); the policy turns them into verdicts and the session
//! writes the `Authentication-Results` header ([`results_header`]).
//!
//! By default every DNS question is answered from the zone; the resolver
//! mail-auth carries then has no name servers at all, so even a lookup that slipped past
//! the zone could not leave the process. With `dns.resolver = "system"` misses go to the
//! system's resolver.
//!
//! One thing does not follow the server's clock: mail-auth judges a DKIM signature's
//! expiry (`x=`) by the system time.

mod zone;
#[cfg(feature = "dns")]
pub(crate) use zone::{fqdn, records};

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use mail_auth::dkim::DkimError;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcResult, DnsError, Error,
    MessageAuthenticator, Parameters, SpfOutput, SpfResult,
};

use crate::config::{Config, DnsConfig, Resolver};
use crate::policy::{AuthReport, AuthResult, DkimCheck, DmarcCheck, DmarcPolicy, SpfCheck};

use zone::Zone;

/// The auth layer could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The system's resolver could not be configured.
    #[error("DNS resolver: {0}")]
    Resolver(String),
}

/// SPF, DKIM and DMARC against a zone that can be replaced at run time.
pub struct Authenticator {
    resolver: MessageAuthenticator,
    zone: RwLock<Arc<Zone>>,
    host: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator for `config`'s zone and resolver mode.
    ///
    /// # Errors
    ///
    /// [`AuthError::Resolver`] when the system resolver is asked for and cannot be set up.
    pub fn new(config: &Config) -> Result<Self, AuthError> {
        let resolver = match config.dns.resolver {
            Resolver::Zone => MessageAuthenticator::new(
                ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                ResolverOpts::default(),
            ),
            Resolver::System => MessageAuthenticator::new_system_conf(),
        }
        .map_err(|e| AuthError::Resolver(e.to_string()))?;
        Ok(Self {
            resolver,
            zone: RwLock::new(Arc::new(Zone::new(&config.dns))),
            host: config.host().to_owned(),
        })
    }

    /// Replaces the zone.
    pub fn set_zone(&self, dns: &DnsConfig) {
        *self.zone.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Zone::new(dns));
    }

    fn zone(&self) -> Arc<Zone> {
        self.zone
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// SPF for the envelope sender `from` (the HELO name for the null sender), as sent by
    /// `ip`.
    pub async fn spf(&self, ip: IpAddr, helo: &str, from: &str) -> SpfCheck {
        let zone = self.zone();
        let params = if from.is_empty() {
            SpfParameters::verify_ehlo(ip, helo, &self.host)
        } else {
            SpfParameters::verify_mail_from(ip, helo, &self.host, from)
        };
        let output = self.resolver.verify_spf(with_zone(params, &zone)).await;
        spf_check(&output, ip)
    }

    /// DKIM and DMARC for a complete message, given the SPF result of its envelope.
    pub async fn message(&self, spf: &SpfCheck, mail_from: &str, raw: &[u8]) -> AuthReport {
        let zone = self.zone();
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return AuthReport {
                spf: spf.clone(),
                dkim: Vec::new(),
                dmarc: DmarcCheck {
                    result: AuthResult::None,
                    domain: String::new(),
                    policy: None,
                    pct: 100,
                    spf_aligned: false,
                    dkim_aligned: false,
                    reason: "the message has no header to check".into(),
                },
            };
        };
        let outputs = self.resolver.verify_dkim(with_zone(&message, &zone)).await;
        let dkim = outputs.iter().map(dkim_check).collect::<Vec<_>>();
        // DMARC reads SPF as mail-auth reports it; rebuild that from our result.
        let spf_output = SpfOutput::new(spf.domain.clone()).with_result(spf_result(spf.result));
        let mail_from_domain = mail_from
            .rsplit_once('@')
            .map_or(spf.domain.as_str(), |(_, d)| d);
        let dmarc = self
            .resolver
            .verify_dmarc(with_zone(
                DmarcParameters::new(&message, &outputs, mail_from_domain, &spf_output),
                &zone,
            ))
            .await;
        let from_domain = message
            .from()
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_ascii_lowercase();
        let pct = zone.dmarc_record(&from_domain).map_or(100, pct_of);
        AuthReport {
            spf: spf.clone(),
            dkim,
            dmarc: dmarc_check(&dmarc, from_domain, pct),
        }
    }

    /// Whether `ip` has a PTR record whose name resolves back to it.
    pub async fn ptr_matches(&self, ip: IpAddr) -> bool {
        let zone = self.zone();
        let params = Parameters::new(ip)
            .with_ptr_cache(&*zone)
            .with_ipv4_cache(&*zone)
            .with_ipv6_cache(&*zone);
        let output = self.resolver.verify_iprev(params).await;
        matches!(output.result, mail_auth::IprevResult::Pass)
    }
}

/// `params` with every cache answered from `zone`.
fn with_zone<'x, P>(
    params: impl Into<
        Parameters<
            'x,
            P,
            mail_auth::common::cache::NoCache<Box<str>, mail_auth::Txt>,
            mail_auth::common::cache::NoCache<Box<str>, mail_auth::RecordSet<mail_auth::MX>>,
            mail_auth::common::cache::NoCache<Box<str>, mail_auth::RecordSet<std::net::Ipv4Addr>>,
            mail_auth::common::cache::NoCache<Box<str>, mail_auth::RecordSet<std::net::Ipv6Addr>>,
            mail_auth::common::cache::NoCache<IpAddr, mail_auth::RecordSet<Box<str>>>,
        >,
    >,
    zone: &'x Zone,
) -> Parameters<'x, P, Zone, Zone, Zone, Zone, Zone> {
    params
        .into()
        .with_txt_cache(zone)
        .with_mx_cache(zone)
        .with_ipv4_cache(zone)
        .with_ipv6_cache(zone)
        .with_ptr_cache(zone)
}

fn spf_check(output: &SpfOutput, ip: IpAddr) -> SpfCheck {
    let domain = output.domain().to_owned();
    let result = match output.result() {
        SpfResult::Pass => AuthResult::Pass,
        SpfResult::Fail => AuthResult::Fail,
        SpfResult::SoftFail => AuthResult::SoftFail,
        SpfResult::Neutral => AuthResult::Neutral,
        SpfResult::TempError => AuthResult::TempError,
        SpfResult::PermError => AuthResult::PermError,
        SpfResult::None => AuthResult::None,
    };
    let reason = match result {
        AuthResult::Pass => format!("{ip} is permitted by {domain}"),
        AuthResult::Fail => format!("{ip} is not permitted by {domain}"),
        AuthResult::SoftFail => format!("{ip} is not permitted by {domain} (~all)"),
        AuthResult::Neutral => format!("{domain} says nothing about {ip} (?all)"),
        AuthResult::None => format!("{domain} publishes no SPF record"),
        AuthResult::TempError => format!("DNS error looking up the SPF record of {domain}"),
        AuthResult::PermError => format!("the SPF record of {domain} is malformed"),
    };
    SpfCheck::new(result, domain, reason)
}

fn spf_result(result: AuthResult) -> SpfResult {
    match result {
        AuthResult::Pass => SpfResult::Pass,
        AuthResult::Fail => SpfResult::Fail,
        AuthResult::SoftFail => SpfResult::SoftFail,
        AuthResult::Neutral => SpfResult::Neutral,
        AuthResult::TempError => SpfResult::TempError,
        AuthResult::PermError => SpfResult::PermError,
        AuthResult::None => SpfResult::None,
    }
}

fn dkim_check(output: &DkimOutput<'_>) -> DkimCheck {
    let (domain, selector, algorithm) = output.signature().map_or_else(Default::default, |s| {
        let algorithm = match s.a {
            mail_auth::common::crypto::Algorithm::RsaSha256 => "rsa-sha256",
            mail_auth::common::crypto::Algorithm::RsaSha1 => "rsa-sha1",
            mail_auth::common::crypto::Algorithm::Ed25519Sha256 => "ed25519-sha256",
        };
        (s.d.clone(), s.s.clone(), algorithm.to_owned())
    });
    let (result, reason) = match output.result() {
        DkimResult::Pass => (AuthResult::Pass, "signature verified".to_owned()),
        DkimResult::None => (AuthResult::None, "no signature".to_owned()),
        DkimResult::Fail(e) => (AuthResult::Fail, dkim_reason(e, &selector, &domain)),
        // mail-auth calls a body hash mismatch neutral; RFC 8601 verifiers report fail.
        DkimResult::Neutral(e @ Error::Dkim(DkimError::FailedBodyHashMatch)) => {
            (AuthResult::Fail, dkim_reason(e, &selector, &domain))
        }
        DkimResult::Neutral(e) => (AuthResult::Neutral, dkim_reason(e, &selector, &domain)),
        DkimResult::PermError(e) => (AuthResult::PermError, dkim_reason(e, &selector, &domain)),
        DkimResult::TempError(e) => (AuthResult::TempError, dkim_reason(e, &selector, &domain)),
    };
    DkimCheck {
        result,
        domain,
        selector,
        algorithm,
        reason,
    }
}

/// A DKIM error in the words a test asserts on.
fn dkim_reason(error: &Error, selector: &str, domain: &str) -> String {
    match error {
        Error::Dkim(DkimError::FailedBodyHashMatch) => "body hash mismatch".into(),
        Error::Dkim(DkimError::RevokedPublicKey) => "key revoked".into(),
        Error::Dkim(DkimError::SignatureExpired) => "signature expired".into(),
        Error::Dkim(DkimError::FailedAuidMatch) => "i= is not within d=".into(),
        Error::Crypto(mail_auth::common::crypto::CryptoError::FailedVerification) => {
            "signature does not verify".into()
        }
        Error::Dns(DnsError::RecordNotFound(_)) => {
            format!("no key at {selector}._domainkey.{domain}")
        }
        Error::Dns(DnsError::InvalidRecordType) => {
            format!("no valid key at {selector}._domainkey.{domain}")
        }
        other => other.to_string().to_lowercase(),
    }
}

fn dmarc_check(output: &mail_auth::DmarcOutput, domain: String, pct: u8) -> DmarcCheck {
    let spf_aligned = matches!(output.spf_result(), DmarcResult::Pass);
    let dkim_aligned = matches!(output.dkim_result(), DmarcResult::Pass);
    let policy = output.dmarc_record().map(|_| match output.policy() {
        Policy::Reject => DmarcPolicy::Reject,
        Policy::Quarantine => DmarcPolicy::Quarantine,
        Policy::None | Policy::Unspecified => DmarcPolicy::None,
    });
    let (result, reason) = match (output.result(), policy) {
        (_, None) if domain.is_empty() => (AuthResult::None, "no From domain".to_owned()),
        (_, None) => (
            AuthResult::None,
            format!("{domain} publishes no DMARC record"),
        ),
        (DmarcResult::Pass, Some(_)) => (
            AuthResult::Pass,
            match (spf_aligned, dkim_aligned) {
                (true, true) => "SPF and DKIM aligned",
                (true, false) => "SPF aligned",
                _ => "DKIM aligned",
            }
            .to_owned(),
        ),
        (DmarcResult::TempError(e), Some(_)) => (AuthResult::TempError, e.to_string()),
        (DmarcResult::PermError(e), Some(_)) => (AuthResult::PermError, e.to_string()),
        (_, Some(_)) => (
            AuthResult::Fail,
            format!("neither SPF nor DKIM passed aligned with {domain}"),
        ),
    };
    DmarcCheck {
        result,
        domain,
        policy,
        pct,
        spf_aligned,
        dkim_aligned,
        reason,
    }
}

/// The `pct=` of a raw DMARC record: 100 when absent or malformed.
fn pct_of(record: &str) -> u8 {
    record
        .split(';')
        .filter_map(|tag| tag.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("pct"))
        .and_then(|(_, v)| v.trim().parse::<u8>().ok())
        .filter(|pct| *pct <= 100)
        .unwrap_or(100)
}

/// The value of the `Authentication-Results` header for a message (without the field
/// name), in QQ's shape: `mx.qq.com; spf=none smtp.mailfrom=; dkim=none; dmarc=none(permerror)
/// header.from=example.org`. Beyond that one captured header, the spelling of each
/// result is an assumption.
pub fn results_header(authserv_id: &str, mail_from: &str, report: &AuthReport) -> String {
    let mut out = format!(
        "{authserv_id}; spf={} smtp.mailfrom={mail_from}; ",
        report.spf.result
    );
    let best = report
        .dkim
        .iter()
        .find(|d| d.result == AuthResult::Pass)
        .or_else(|| report.dkim.first());
    match best {
        Some(d) if !d.domain.is_empty() => {
            let _ = write!(out, "dkim={} header.d={}; ", d.result, d.domain);
        }
        Some(d) => {
            let _ = write!(out, "dkim={}; ", d.result);
        }
        None => out.push_str("dkim=none; "),
    }
    let dmarc = &report.dmarc;
    match dmarc.policy {
        Some(policy) => {
            let _ = write!(out, "dmarc={}(p={policy})", dmarc.result);
        }
        None => out.push_str("dmarc=none(permerror)"),
    }
    let _ = write!(out, " header.from={}", dmarc.domain);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pct_is_read_from_the_record() {
        assert_eq!(pct_of("v=DMARC1; p=reject; pct=25"), 25);
        assert_eq!(pct_of("v=DMARC1; p=reject"), 100);
        assert_eq!(pct_of("v=DMARC1; p=reject; pct=250"), 100);
    }

    #[test]
    fn the_header_has_qq_shape_for_a_message_with_nothing_to_check() {
        let report = AuthReport {
            spf: SpfCheck::new(AuthResult::None, "", ""),
            dkim: Vec::new(),
            dmarc: DmarcCheck {
                result: AuthResult::None,
                domain: "solar.sec".into(),
                policy: None,
                pct: 100,
                spf_aligned: false,
                dkim_aligned: false,
                reason: String::new(),
            },
        };
        assert_eq!(
            results_header("mx.qq.com", "", &report),
            "mx.qq.com; spf=none smtp.mailfrom=; dkim=none; dmarc=none(permerror) header.from=solar.sec"
        );
    }
}
