//! Config of the `auth` layer: which checks run, and the DNS zone they read.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// SPF, DKIM and DMARC checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Run SPF at MAIL and DKIM and DMARC at the end of data.
    pub enabled: bool,
    /// Envelope-sender domains whose SPF `fail` is refused at MAIL with `SPF check
    /// failed`, as QQ refuses a forged qq.com sender. `"*"` means every domain. Other
    /// domains are handled by `spf_reject_others`.
    pub spf_reject_at_mail: Vec<String>,
    /// Where an SPF `fail` of a sender outside `spf_reject_at_mail` is refused:
    /// `"end_of_data"` (as QQ was seen doing, with `SPF check failed [<token>  IP: <ip>]`),
    /// `"mail"`, or `"off"` (SPF then only feeds DMARC, which sees the result either way).
    pub spf_reject_others: SpfStage,
    /// The authserv-id of the `Authentication-Results` header.
    pub authserv_id: String,
    /// Refuse clients whose address has no PTR record that resolves back to it (Tencent
    /// asks senders for one; that QQ refuses without one, and the reply, are assumptions).
    pub require_ptr: bool,
    /// Refuse, with exmail's `Mime from domain is a local domain`, a message from outside
    /// whose From header names a hosted domain and that has no valid DKIM signature of it.
    pub mime_from_local: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            spf_reject_at_mail: ["qq.com", "foxmail.com", "vip.qq.com"]
                .map(String::from)
                .to_vec(),
            spf_reject_others: SpfStage::EndOfData,
            authserv_id: "mx.qq.com".into(),
            require_ptr: false,
            mime_from_local: false,
        }
    }
}

impl AuthConfig {
    /// Whether an SPF `fail` for `domain` is refused at MAIL.
    pub(crate) fn rejects_spf_at_mail(&self, domain: &str) -> bool {
        self.spf_reject_at_mail
            .iter()
            .any(|d| d == "*" || d.eq_ignore_ascii_case(domain))
    }
}

/// Where an SPF failure is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpfStage {
    /// Never: the result only feeds DMARC.
    Off,
    /// At MAIL FROM.
    Mail,
    /// At the end of data, after the message.
    #[default]
    EndOfData,
}

/// Where DNS answers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolver {
    /// Only the zone below: a name that is not in it does not exist. Nothing leaves the
    /// process.
    #[default]
    Zone,
    /// The zone first, then the system's resolver (`/etc/resolv.conf`), for tests of
    /// real domains.
    System,
}

/// The DNS records the checks read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DnsConfig {
    /// `"zone"` (offline, the default) or `"system"`.
    pub resolver: Resolver,
    /// Include the published SPF and DMARC records of qq.com, foxmail.com and vip.qq.com,
    /// with QQ's SPF ranges replaced by documentation addresses (192.0.2.0/24,
    /// 198.51.100.0/24) that no test sends from, so that a forged QQ sender fails.
    pub builtin: bool,
    /// Records by owner name (`"example.com"`, `"s1._domainkey.example.com"`).
    pub records: BTreeMap<String, Records>,
    /// PTR records by address (`"127.0.0.2" = ["mail.example.com"]`).
    pub ptr: BTreeMap<IpAddr, Vec<String>>,
    /// Serve these records over DNS (UDP and TCP) on this address (`"127.0.0.1:5353"`;
    /// port 0: any free port), with the MX hosts' A records pointing at the listeners;
    /// unset (the default): no DNS server. Needs the `dns` feature (in the `qqmx` tool).
    /// Read at start only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<std::net::SocketAddr>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            resolver: Resolver::Zone,
            builtin: true,
            records: BTreeMap::new(),
            ptr: BTreeMap::new(),
            listen: None,
        }
    }
}

/// The records of one name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Records {
    /// TXT records: SPF (`v=spf1 ...`), DKIM keys (`v=DKIM1; k=ed25519; p=...`), DMARC
    /// (`v=DMARC1; p=reject`).
    pub txt: Vec<String>,
    /// IPv4 addresses.
    pub a: Vec<std::net::Ipv4Addr>,
    /// IPv6 addresses.
    pub aaaa: Vec<std::net::Ipv6Addr>,
    /// Mail exchangers, `"10 mx.example.com"`.
    pub mx: Vec<MxRecord>,
}

/// One MX record: preference and exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MxRecord {
    /// Lower is preferred.
    pub preference: u16,
    /// The exchange's host name.
    pub exchange: String,
}

/// Text that is not an MX record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MxRecordError {
    /// Not two words.
    #[error("`{0}` is not `PREFERENCE HOST`")]
    Shape(String),
    /// The first word is not a number from 0 to 65535.
    #[error("`{0}` is not a preference from 0 to 65535")]
    Preference(String),
}

impl FromStr for MxRecord {
    type Err = MxRecordError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split_whitespace();
        let (Some(preference), Some(exchange), None) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(MxRecordError::Shape(s.to_owned()));
        };
        let preference = preference
            .parse()
            .map_err(|_| MxRecordError::Preference(preference.to_owned()))?;
        Ok(Self {
            preference,
            exchange: exchange.to_owned(),
        })
    }
}

impl TryFrom<String> for MxRecord {
    type Error = MxRecordError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MxRecord> for String {
    fn from(mx: MxRecord) -> Self {
        mx.to_string()
    }
}

impl fmt::Display for MxRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.preference, self.exchange)
    }
}

impl DnsConfig {
    /// Adds a TXT record.
    pub fn txt(&mut self, name: &str, value: &str) -> &mut Self {
        self.entry(name).txt.push(value.to_owned());
        self
    }

    /// Adds an A or AAAA record.
    pub fn ip(&mut self, name: &str, ip: IpAddr) -> &mut Self {
        let records = self.entry(name);
        match ip {
            IpAddr::V4(v4) => records.a.push(v4),
            IpAddr::V6(v6) => records.aaaa.push(v6),
        }
        self
    }

    /// Adds an MX record.
    pub fn mx(&mut self, name: &str, preference: u16, exchange: &str) -> &mut Self {
        self.entry(name).mx.push(MxRecord {
            preference,
            exchange: exchange.to_owned(),
        });
        self
    }

    /// Adds a PTR record.
    pub fn ptr(&mut self, ip: IpAddr, name: &str) -> &mut Self {
        self.ptr.entry(ip).or_default().push(name.to_owned());
        self
    }

    fn entry(&mut self, name: &str) -> &mut Records {
        self.records.entry(normalise(name)).or_default()
    }

    /// Names that cannot be DNS names, for validation: (name, why).
    pub(crate) fn bad_name(&self) -> Option<(&str, String)> {
        let names = self
            .records
            .keys()
            .map(String::as_str)
            .chain(self.ptr.values().flatten().map(String::as_str))
            .chain(
                self.records
                    .values()
                    .flat_map(|r| r.mx.iter().map(|mx| mx.exchange.as_str())),
            );
        for name in names {
            let bare = name.strip_suffix('.').unwrap_or(name);
            if bare.is_empty() {
                return Some((name, "a name must not be empty".into()));
            }
            if bare.len() > 253 {
                return Some((name, "a name is at most 253 bytes".into()));
            }
            if let Some(label) = bare.split('.').find(|l| l.is_empty() || l.len() > 63) {
                return Some((name, format!("label `{label}` must be 1 to 63 bytes long")));
            }
        }
        None
    }
}

/// A name as the zone keys it: lower case, without a trailing dot.
pub(crate) fn normalise(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}
