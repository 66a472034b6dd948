//! The DNS zone the checks read, as the resolver caches of mail-auth.
//!
//! mail-auth asks its caches before its resolver. Every name the checks may ask about is
//! answered here from the config's records, already parsed; in the default offline mode a
//! name that is not in the zone is answered too (it does not exist), so no lookup ever
//! reaches the resolver. In system mode a miss falls through to the system's resolver.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dmarc::Dmarc;
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::spf::Spf;
use mail_auth::{DnsError, DnssecStatus, Error, MX, RecordSet, ResolverCache, Txt};

use crate::config::{DnsConfig, Records, Resolver};

/// The records of qq.com, foxmail.com and vip.qq.com, with QQ's SPF ranges replaced by
/// documentation addresses that no test sends from.
const BUILTIN: &[(&str, &str)] = &[
    ("qq.com", "v=spf1 include:spf.mail.qq.com -all"),
    (
        "_dmarc.qq.com",
        "v=DMARC1; p=none; rua=mailto:mailauth-reports@qq.com",
    ),
    ("foxmail.com", "v=spf1 include:spf.mail.qq.com -all"),
    (
        "_dmarc.foxmail.com",
        "v=DMARC1; p=none; rua=mailto:mailauth-reports@qq.com",
    ),
    ("vip.qq.com", "v=spf1 include:spf.mail.qq.com -all"),
    (
        "spf.mail.qq.com",
        "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/24 -all",
    ),
];

/// The MX hosts of the built-in domains.
const BUILTIN_MX: &[(u16, &str)] = &[(10, "mx3.qq.com"), (20, "mx2.qq.com"), (30, "mx1.qq.com")];

/// A zone: every record parsed once, keyed as mail-auth asks (lower case, trailing dot).
pub(crate) struct Zone {
    offline: bool,
    txt: HashMap<Box<str>, Txt>,
    /// Raw DMARC records by the name they hang under (`example.com.`), for `pct=`.
    dmarc_raw: HashMap<Box<str>, String>,
    a: HashMap<Box<str>, RecordSet<Ipv4Addr>>,
    aaaa: HashMap<Box<str>, RecordSet<Ipv6Addr>>,
    mx: HashMap<Box<str>, RecordSet<MX>>,
    ptr: HashMap<IpAddr, RecordSet<Box<str>>>,
}

impl Zone {
    pub(crate) fn new(config: &DnsConfig) -> Self {
        let merged = records(config);
        let mut zone = Self {
            offline: config.resolver == Resolver::Zone,
            txt: HashMap::new(),
            dmarc_raw: HashMap::new(),
            a: HashMap::new(),
            aaaa: HashMap::new(),
            mx: HashMap::new(),
            ptr: HashMap::new(),
        };
        for (name, r) in merged {
            if !r.txt.is_empty() {
                let (txt, dmarc) = parse_txt(&name, &r.txt);
                if let Some(raw) = dmarc
                    && let Some(owner) = name.strip_prefix("_dmarc.")
                {
                    zone.dmarc_raw.insert(owner.into(), raw);
                }
                zone.txt.insert(name.clone(), txt);
            }
            if !r.a.is_empty() {
                zone.a.insert(name.clone(), set(r.a));
            }
            if !r.aaaa.is_empty() {
                zone.aaaa.insert(name.clone(), set(r.aaaa));
            }
            if !r.mx.is_empty() {
                let mx =
                    r.mx.into_iter()
                        .map(|m| MX {
                            exchanges: vec![fqdn(&m.exchange)].into_boxed_slice(),
                            preference: m.preference,
                        })
                        .collect::<Vec<_>>();
                zone.mx.insert(name, set(mx));
            }
        }
        for (ip, names) in &config.ptr {
            let names = names.iter().map(|n| fqdn(n)).collect::<Vec<_>>();
            zone.ptr.insert(*ip, set(names));
        }
        zone
    }

    /// The raw DMARC record published for `domain` or, failing that, for the nearest
    /// parent that has one.
    pub(crate) fn dmarc_record(&self, domain: &str) -> Option<&str> {
        let mut name = fqdn(domain).into_string();
        loop {
            if let Some(raw) = self.dmarc_raw.get(name.as_str()) {
                return Some(raw);
            }
            let (_, parent) = name.split_once('.')?;
            if parent.is_empty() {
                return None;
            }
            name = parent.to_owned();
        }
    }

    /// What a miss answers: nothing (ask the resolver) in system mode, NXDOMAIN offline.
    fn miss<V>(&self, offline: impl FnOnce() -> V) -> Option<V> {
        self.offline.then(offline)
    }
}

/// Every record of the zone by owner name (lower case, trailing dot): the built-in ones of
/// qq.com, foxmail.com and vip.qq.com unless switched off, then the config's own, which
/// replace built-in records of the same name and type. The checks read these, and so does
/// the DNS server (feature `dns`).
pub(crate) fn records(config: &DnsConfig) -> HashMap<Box<str>, Records> {
    let mut records: Vec<(String, Records)> = Vec::new();
    if config.builtin {
        for &(name, txt) in BUILTIN {
            let mut r = Records::default();
            r.txt.push(txt.to_owned());
            records.push((name.to_owned(), r));
        }
        for domain in ["qq.com", "foxmail.com", "vip.qq.com"] {
            let mut r = Records::default();
            for &(preference, exchange) in BUILTIN_MX {
                r.mx.push(crate::config::MxRecord {
                    preference,
                    exchange: exchange.to_owned(),
                });
            }
            records.push((domain.to_owned(), r));
        }
    }
    // The config's own records come last and replace built-in ones of the same name.
    let mut merged: HashMap<Box<str>, Records> = HashMap::new();
    for (name, r) in records {
        merge(merged.entry(fqdn(&name)).or_default(), r);
    }
    for (name, r) in &config.records {
        let entry = merged.entry(fqdn(name)).or_default();
        if !r.txt.is_empty() {
            entry.txt.clear();
        }
        if !r.mx.is_empty() {
            entry.mx.clear();
        }
        merge(entry, r.clone());
    }
    merged
}

fn merge(into: &mut Records, from: Records) {
    into.txt.extend(from.txt);
    into.a.extend(from.a);
    into.aaaa.extend(from.aaaa);
    into.mx.extend(from.mx);
}

/// A name as mail-auth's caches key it.
pub(crate) fn fqdn(name: &str) -> Box<str> {
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name.into_boxed_str()
}

fn set<T>(items: Vec<T>) -> RecordSet<T> {
    RecordSet {
        rrset: items.into(),
        dnssec_status: DnssecStatus::Indeterminate,
    }
}

fn nxdomain() -> Error {
    Error::Dns(DnsError::RecordNotFound(ResponseCode::NXDomain))
}

/// Parses the TXT records of `name` as the record kind its position in the tree implies:
/// DMARC under `_dmarc`, a DKIM key under `_domainkey`, SPF elsewhere. Returns the record
/// and, for DMARC, its raw text.
fn parse_txt(name: &str, texts: &[String]) -> (Txt, Option<String>) {
    if name.starts_with("_dmarc.") {
        let Some(raw) = texts.iter().find(|t| starts_with_ci(t, "v=DMARC1")) else {
            return (Txt::Error(nxdomain()), None);
        };
        let txt = match Dmarc::parse(raw.as_bytes()) {
            Ok(d) => Txt::Dmarc(Arc::new(d)),
            Err(e) => Txt::Error(e),
        };
        return (txt, Some(raw.clone()));
    }
    if name.contains("._domainkey.") {
        // The first key that parses; else the first error (an empty `p=` is a revoked key).
        let mut error = None;
        for text in texts {
            match DomainKey::parse(text.as_bytes()) {
                Ok(key) => return (Txt::DomainKey(Arc::new(key)), None),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        let txt = Txt::Error(error.unwrap_or(Error::Dns(DnsError::InvalidRecordType)));
        return (txt, None);
    }
    let spf: Vec<&String> = texts
        .iter()
        .filter(|t| {
            let t = t.to_ascii_lowercase();
            t == "v=spf1" || t.starts_with("v=spf1 ")
        })
        .collect();
    let txt = match spf.as_slice() {
        [] => Txt::Error(nxdomain()),
        // RFC 7208 4.5: more than one SPF record is a permanent error.
        [_, _, ..] => Txt::Error(Error::ParseError),
        [one] => match Spf::parse(one.as_bytes()) {
            Ok(s) => Txt::Spf(Arc::new(s)),
            Err(e) => Txt::Error(e),
        },
    };
    (txt, None)
}

fn starts_with_ci(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// Caches that answer from the zone and ignore what the resolver would add.
macro_rules! cache {
    ($key:ty, $value:ty, $field:ident, $miss:expr) => {
        impl ResolverCache<$key, $value> for Zone {
            fn get<Q>(&self, name: &Q) -> Option<$value>
            where
                $key: Borrow<Q>,
                Q: Hash + Eq + ?Sized,
            {
                self.$field.get(name).cloned().or_else(|| self.miss($miss))
            }

            fn remove<Q>(&self, _: &Q) -> Option<$value>
            where
                $key: Borrow<Q>,
                Q: Hash + Eq + ?Sized,
            {
                None
            }

            fn insert(&self, _: $key, _: $value, _: Instant) {}
        }
    };
}

cache!(Box<str>, Txt, txt, || Txt::Error(nxdomain()));
cache!(Box<str>, RecordSet<Ipv4Addr>, a, || set(Vec::new()));
cache!(Box<str>, RecordSet<Ipv6Addr>, aaaa, || set(Vec::new()));
cache!(Box<str>, RecordSet<MX>, mx, || set(Vec::new()));
cache!(IpAddr, RecordSet<Box<str>>, ptr, || set(Vec::new()));

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(edit: impl FnOnce(&mut DnsConfig)) -> Zone {
        let mut config = DnsConfig::default();
        edit(&mut config);
        Zone::new(&config)
    }

    fn txt(zone: &Zone, name: &str) -> Option<Txt> {
        ResolverCache::<Box<str>, Txt>::get(zone, name)
    }

    #[test]
    fn names_are_answered_as_mail_auth_asks() {
        let z = zone(|c| {
            c.txt("Example.COM", "v=spf1 ip4:127.0.0.2 -all");
        });
        assert!(matches!(txt(&z, "example.com."), Some(Txt::Spf(_))));
        assert!(matches!(txt(&z, "qq.com."), Some(Txt::Spf(_))));
    }

    #[test]
    fn a_name_outside_the_zone_does_not_exist_offline_and_is_asked_in_system_mode() {
        let offline = zone(|_| {});
        assert!(matches!(
            txt(&offline, "nowhere.example."),
            Some(Txt::Error(Error::Dns(DnsError::RecordNotFound(
                ResponseCode::NXDomain
            ))))
        ));
        let system = zone(|c| c.resolver = Resolver::System);
        assert!(txt(&system, "nowhere.example.").is_none());
    }

    #[test]
    fn two_spf_records_are_a_permanent_error() {
        let z = zone(|c| {
            c.txt("example.com", "v=spf1 -all")
                .txt("example.com", "v=spf1 +all");
        });
        assert!(matches!(
            txt(&z, "example.com."),
            Some(Txt::Error(Error::ParseError))
        ));
    }

    #[test]
    fn config_records_replace_builtin_ones() {
        let z = zone(|c| {
            c.txt("_dmarc.qq.com", "v=DMARC1; p=reject");
        });
        assert_eq!(z.dmarc_record("qq.com"), Some("v=DMARC1; p=reject"));
        assert_eq!(
            z.dmarc_record("mail.qq.com"),
            Some("v=DMARC1; p=reject"),
            "a subdomain finds its organisation's record"
        );
        assert_eq!(z.dmarc_record("example.com"), None);
        let without = zone(|c| c.builtin = false);
        assert!(matches!(
            txt(&without, "qq.com."),
            Some(Txt::Error(Error::Dns(_)))
        ));
    }
}
