//! Addresses and mailboxes: which domains QQ serves and which users exist there.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use crate::config::{Existing, Mailboxes};

/// The domains of the QQ MX fleet itself.
pub(crate) const QQ_DOMAINS: [&str; 3] = ["qq.com", "foxmail.com", "vip.qq.com"];

/// A syntactically valid address, with the domain lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Address {
    local: String,
    domain: String,
}

/// Why an address is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AddressError {
    /// No `@`, or more than one outside the local part.
    #[error("not of the form local@domain")]
    Shape,
    /// Empty or over 64 bytes.
    #[error("bad local part")]
    Local,
    /// Not a host name.
    #[error("bad domain")]
    Domain,
    /// Non-ASCII characters without SMTPUTF8.
    #[error("non-ASCII address without SMTPUTF8")]
    NeedsUtf8,
}

impl Address {
    /// Parses `local@domain`. Non-ASCII is accepted only when `smtputf8` is set.
    ///
    /// # Errors
    ///
    /// An [`AddressError`] saying what is wrong.
    pub(crate) fn parse(text: &str, smtputf8: bool) -> Result<Self, AddressError> {
        if !smtputf8 && !text.is_ascii() {
            return Err(AddressError::NeedsUtf8);
        }
        let (local, domain) = text.rsplit_once('@').ok_or(AddressError::Shape)?;
        if local.is_empty() || local.len() > 64 || local.contains('@') && !local.starts_with('"') {
            return Err(AddressError::Local);
        }
        if local
            .chars()
            .any(|c| c.is_control() || c == ' ' && !local.starts_with('"'))
        {
            return Err(AddressError::Local);
        }
        if !valid_domain(domain) {
            return Err(AddressError::Domain);
        }
        Ok(Self {
            local: local.to_owned(),
            domain: domain.to_ascii_lowercase(),
        })
    }

    /// The part before the `@`, as sent.
    pub(crate) fn local(&self) -> &str {
        &self.local
    }

    /// The domain, lower-cased.
    pub(crate) fn domain(&self) -> &str {
        &self.domain
    }

    /// `local@domain` with both parts lower-cased, the form mailboxes are listed in.
    pub(crate) fn canonical(&self) -> String {
        format!("{}@{}", self.local.to_lowercase(), self.domain)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

fn valid_domain(domain: &str) -> bool {
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        return literal.parse::<std::net::IpAddr>().is_ok()
            || literal
                .strip_prefix("IPv6:")
                .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    }
    !domain.is_empty()
        && domain.len() <= 255
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || !c.is_ascii())
        })
}

/// The domain of a bare `<Postmaster>` recipient: the first domain QQ serves.
pub(crate) const POSTMASTER_DOMAIN: &str = QQ_DOMAINS[0];

/// `address` with its local part in quotes when it needs them (`"john doe"@qq.com`).
///
/// smtp-proto hands over quoted local parts without their quotes (`john doe@qq.com`);
/// this puts them back, escaping `"` and `\`, so that [`Address::parse`] reads the
/// local part the client meant. A local part that is a dot-atom (`"10001"` as well as
/// `10001`) is left bare: quoting it changes nothing (RFC 5321, 4.1.2).
pub(crate) fn quote_local_part(address: &str) -> Cow<'_, str> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Cow::Borrowed(address);
    };
    if local.is_empty() || is_dot_atom(local) {
        return Cow::Borrowed(address);
    }
    let mut quoted = String::with_capacity(address.len() + 4);
    quoted.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push_str("\"@");
    quoted.push_str(domain);
    Cow::Owned(quoted)
}

/// Atoms of RFC 5322 `atext` (non-ASCII allowed, for SMTPUTF8) joined by single dots.
fn is_dot_atom(local: &str) -> bool {
    local.split('.').all(|atom| {
        !atom.is_empty()
            && atom.chars().all(|c| {
                c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
            })
    })
}

/// Whether `local` is a QQ number: 5 to 11 digits, no leading zero.
pub(crate) fn is_qq_number(local: &str) -> bool {
    (5..=11).contains(&local.len())
        && local.bytes().all(|b| b.is_ascii_digit())
        && !local.starts_with('0')
}

/// The served domains and the mailboxes on them.
#[derive(Debug, Clone)]
pub(crate) struct Directory {
    domains: HashSet<String>,
    listed: HashSet<String>,
    existing: Existing,
}

impl Directory {
    pub(crate) fn new(config: &Mailboxes) -> Self {
        let domains = QQ_DOMAINS
            .iter()
            .map(|d| (*d).to_owned())
            .chain(config.hosted_domains.iter().map(|d| d.to_ascii_lowercase()))
            .collect();
        let listed = config.listed.iter().map(|a| a.to_lowercase()).collect();
        Self {
            domains,
            listed,
            existing: config.existing,
        }
    }

    pub(crate) fn serves(&self, address: &Address) -> bool {
        self.domains.contains(address.domain())
    }

    /// Whether `domain` is a hosted customer domain (served, but not QQ's own).
    pub(crate) fn is_hosted(&self, domain: &str) -> bool {
        let domain = domain.to_ascii_lowercase();
        self.domains.contains(&domain) && !QQ_DOMAINS.contains(&domain.as_str())
    }

    /// Why the mailbox exists, or `None` when it does not.
    pub(crate) fn lookup(&self, address: &Address) -> Option<&'static str> {
        if self.listed.contains(&address.canonical()) {
            return Some("is listed");
        }
        if address.local().eq_ignore_ascii_case("postmaster") {
            return Some("is the postmaster (RFC 5321 requires it)");
        }
        match self.existing {
            Existing::All => Some("exists (every address exists)"),
            Existing::QqNumbers if is_qq_number(address.local()) => Some("is a QQ number"),
            Existing::QqNumbers | Existing::Listed => None,
        }
    }

    pub(crate) fn why_missing(&self) -> &'static str {
        match self.existing {
            Existing::QqNumbers => "is neither a QQ number nor listed",
            _ => "is not listed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_put_back_where_the_local_part_needs_them() {
        assert_eq!(quote_local_part("john doe@qq.com"), "\"john doe\"@qq.com");
        assert_eq!(quote_local_part("a@b@qq.com"), "\"a@b\"@qq.com");
        assert_eq!(quote_local_part("a\"b@qq.com"), "\"a\\\"b\"@qq.com");
        assert_eq!(quote_local_part("a..b@qq.com"), "\"a..b\"@qq.com");
        assert_eq!(quote_local_part("10001@qq.com"), "10001@qq.com");
        assert_eq!(
            quote_local_part("first.last+tag@qq.com"),
            "first.last+tag@qq.com"
        );
        assert_eq!(quote_local_part("用户@qq.com"), "用户@qq.com");
        assert_eq!(quote_local_part(""), "");
        assert_eq!(quote_local_part("no-at-sign"), "no-at-sign");
    }

    #[test]
    fn quoted_local_parts_parse_and_postmaster_exists() {
        let quoted = Address::parse("\"john doe\"@qq.com", false).expect("quoted");
        assert_eq!(quoted.local(), "\"john doe\"");
        let directory = Directory::new(&Mailboxes::default());
        assert_eq!(directory.lookup(&quoted), None);
        let postmaster = Address::parse("PostMaster@vip.qq.com", false).expect("postmaster");
        assert!(directory.lookup(&postmaster).is_some());
    }
}
