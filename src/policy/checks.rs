//! What the `auth` layer found, as facts the policy decides on.
//!
//! The `auth` layer evaluates SPF, DKIM and DMARC and fills these in; the policy's auth
//! rules (`policy/auth.rs`) turn them into verdicts, and they are kept with each message
//! and in the event log.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The result of one check, with the names of RFC 8601.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AuthResult {
    /// The check passed.
    Pass,
    /// The check failed.
    Fail,
    /// SPF `~all`: a weak fail.
    SoftFail,
    /// SPF `?all`, or a DKIM signature that could not be checked.
    Neutral,
    /// Nothing to check: no record, no signature.
    None,
    /// A transient error (a DNS failure).
    TempError,
    /// A permanent error (a malformed record or signature).
    PermError,
}

impl fmt::Display for AuthResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::SoftFail => "softfail",
            Self::Neutral => "neutral",
            Self::None => "none",
            Self::TempError => "temperror",
            Self::PermError => "permerror",
        })
    }
}

/// SPF for the envelope sender (or the HELO name, for the null sender).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SpfCheck {
    /// The result.
    pub result: AuthResult,
    /// The domain checked.
    pub domain: String,
    /// Why, in words (`127.0.0.1 is not permitted by qq.com`).
    pub reason: String,
}

impl SpfCheck {
    /// A result with its reason.
    pub fn new(result: AuthResult, domain: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            result,
            domain: domain.into(),
            reason: reason.into(),
        }
    }
}

/// One DKIM signature, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DkimCheck {
    /// The result.
    pub result: AuthResult,
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// The algorithm (`rsa-sha256`, `ed25519-sha256`).
    pub algorithm: String,
    /// Why, in words (`body hash mismatch`, `key revoked`, `no key for selector`).
    pub reason: String,
}

/// A DMARC policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DmarcPolicy {
    /// `p=none`: report only.
    None,
    /// `p=quarantine`: deliver to the junk folder.
    Quarantine,
    /// `p=reject`: refuse.
    Reject,
}

impl fmt::Display for DmarcPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Quarantine => "quarantine",
            Self::Reject => "reject",
        })
    }
}

/// DMARC for the From header's domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DmarcCheck {
    /// `pass` when SPF or DKIM passed aligned with the From domain; `fail` when neither
    /// did; `none` when the domain publishes no DMARC record.
    pub result: AuthResult,
    /// The From header's domain (empty when the header has none).
    pub domain: String,
    /// The policy that applies to the domain (`sp=` for a subdomain), when it publishes one.
    pub policy: Option<DmarcPolicy>,
    /// The `pct=` of the record: the share of failing messages the policy applies to.
    pub pct: u8,
    /// Whether SPF passed for a domain aligned with the From domain.
    pub spf_aligned: bool,
    /// Whether a DKIM signature passed for a domain aligned with the From domain.
    pub dkim_aligned: bool,
    /// Why, in words.
    pub reason: String,
}

/// Everything checked at the end of data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuthReport {
    /// SPF, as checked at MAIL.
    pub spf: SpfCheck,
    /// Every DKIM signature, in header order.
    pub dkim: Vec<DkimCheck>,
    /// DMARC.
    pub dmarc: DmarcCheck,
}

impl AuthReport {
    /// Whether a signature of `domain` (or of a domain it is a subdomain of) passed.
    pub fn dkim_passed_for(&self, domain: &str) -> bool {
        self.dkim.iter().any(|d| {
            d.result == AuthResult::Pass
                && (d.domain.eq_ignore_ascii_case(domain)
                    || domain
                        .to_ascii_lowercase()
                        .ends_with(&format!(".{}", d.domain.to_ascii_lowercase())))
        })
    }
}
