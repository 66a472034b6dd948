//! The records the DNS server answers with, as hickory's in-memory zones.
//!
//! Everything comes from the zone the authentication layer reads ([`auth::records`]:
//! qq.com's built-in records and the config's own) plus what only a server on the network
//! can know: the addresses its listeners are bound to. On top of those:
//!
//! - each listener `NAME` is the MX host `NAME.qq.com.` (`mx1` is `mx1.qq.com.`), whose A
//!   (or AAAA) record is the address the listener is bound to, and whose address has a PTR
//!   record back to that name;
//! - a hosted domain (`mailboxes.hosted_domains`) without an MX record of its own gets
//!   exmail's published pair, `5 mxbiz1.qq.com.` and `10 mxbiz2.qq.com.`;
//! - the name server `ns1.qq.com.` is qqmx's DNS server itself.
//!
//! Records the config gives a name replace those made up here for the same name and type.
//! Every name belongs to a zone whose apex is its last two labels (`qq.com.`,
//! `example.com.`, `in-addr.arpa.`), with an SOA and an NS record at the apex; a root zone
//! delegates to each, so that a name outside them all does not exist (NXDOMAIN) while
//! their ancestors (`com.`) exist without records.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_server::proto::rr::rdata::{A, AAAA, MX, NS, PTR, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use tracing::warn;

use crate::auth;
use crate::config::{Config, MxRecord, Records};

/// Time to live of every record, and of negative answers (an assumption: short, so that a
/// caching resolver in between follows a config reloaded through the control API).
pub(crate) const TTL: u32 = 60;

/// The name server every zone names: qqmx's DNS server.
pub(crate) const NAME_SERVER: &str = "ns1.qq.com.";

/// The mailbox of every zone's SOA record.
const HOSTMASTER: &str = "webmaster.qq.com.";

/// The MX records of a hosted domain that publishes none: exmail's published pair.
const HOSTED_MX: &[(u16, &str)] = &[(5, "mxbiz1.qq.com."), (10, "mxbiz2.qq.com.")];

/// The MX host name a listener answers DNS as: `mx1` is `mx1.qq.com.`.
pub(crate) fn mx_host(listener: &str) -> String {
    format!("{}.qq.com.", listener.to_ascii_lowercase())
}

/// The catalog of zones for `config`, its listeners bound at `listeners` and the DNS
/// server at `dns`.
pub(crate) fn catalog(config: &Config, listeners: &[(String, SocketAddr)], dns: IpAddr) -> Catalog {
    let mut zones: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    for (name, data) in records(config, listeners, dns) {
        let Ok(owner) = Name::from_ascii(&name) else {
            warn!(%name, "not a DNS name; left out of the DNS zone");
            continue;
        };
        let zone = zones.entry(apex(&name)).or_default();
        zone.extend(
            data.into_iter()
                .map(|data| Record::from_rdata(owner.clone(), TTL, data)),
        );
    }
    let mut catalog = Catalog::new();
    let root: Vec<Record> = zones
        .keys()
        .filter_map(|apex| Name::from_ascii(apex).ok())
        .map(|apex| Record::from_rdata(apex, TTL, RData::NS(NS(name(NAME_SERVER)))))
        .collect();
    for (apex, records) in zones.into_iter().chain([(".".to_owned(), root)]) {
        let Ok(origin) = Name::from_ascii(&apex) else {
            continue;
        };
        let zone = zone(origin.clone(), records);
        catalog.upsert(
            LowerName::new(&origin),
            vec![Arc::new(zone) as Arc<dyn ZoneHandler>],
        );
    }
    catalog
}

/// One zone: its SOA and NS records, then `records`.
fn zone(origin: Name, records: Vec<Record>) -> InMemoryZoneHandler {
    const SERIAL: u32 = 1;
    let mut zone = InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
    let soa = SOA::new(
        name(NAME_SERVER),
        name(HOSTMASTER),
        SERIAL,
        3600,
        600,
        86_400,
        TTL,
    );
    let apex = [RData::SOA(soa), RData::NS(NS(name(NAME_SERVER)))];
    for data in apex {
        zone.upsert_mut(Record::from_rdata(origin.clone(), TTL, data), SERIAL);
    }
    for record in records {
        if !zone.upsert_mut(record.clone(), SERIAL) {
            warn!(%record, "cannot be added to the DNS zone");
        }
    }
    zone
}

/// Every record by owner name (lower case, trailing dot), PTR records under
/// `in-addr.arpa.` and `ip6.arpa.`.
fn records(
    config: &Config,
    listeners: &[(String, SocketAddr)],
    dns: IpAddr,
) -> BTreeMap<String, Vec<RData>> {
    let mut records: BTreeMap<String, Records> = auth::records(&config.dns)
        .into_iter()
        .map(|(name, r)| (name.into_string(), r))
        .collect();
    let configured: BTreeSet<String> = records
        .iter()
        .filter(|(_, r)| !r.a.is_empty() || !r.aaaa.is_empty())
        .map(|(name, _)| name.clone())
        .collect();
    for domain in &config.mailboxes.hosted_domains {
        let entry = records.entry(auth::fqdn(domain).into_string()).or_default();
        if entry.mx.is_empty() {
            entry.mx = HOSTED_MX
                .iter()
                .map(|&(preference, exchange)| MxRecord {
                    preference,
                    exchange: exchange.to_owned(),
                })
                .collect();
        }
    }
    let mut hosts = vec![(NAME_SERVER.to_owned(), advertised(dns, dns))];
    hosts.extend(
        listeners
            .iter()
            .map(|(mx, addr)| (mx_host(mx), advertised(addr.ip(), dns))),
    );
    let mut ptr: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for (host, ip) in hosts {
        if host != NAME_SERVER {
            ptr.entry(ip).or_default().push(host.clone());
        }
        if configured.contains(&host) {
            continue;
        }
        let entry = records.entry(host).or_default();
        match ip {
            IpAddr::V4(v4) if !entry.a.contains(&v4) => entry.a.push(v4),
            IpAddr::V6(v6) if !entry.aaaa.contains(&v6) => entry.aaaa.push(v6),
            _ => {}
        }
    }
    let mut data: BTreeMap<String, Vec<RData>> = records
        .iter()
        .map(|(name, r)| (name.clone(), rdata(r).collect()))
        .collect();
    // The config's PTR records replace those of the listeners at the same address.
    ptr.extend(config.dns.ptr.clone());
    for (ip, names) in ptr {
        let owner = Name::from(ip).to_ascii().to_ascii_lowercase();
        data.entry(owner).or_default().extend(
            names
                .iter()
                .filter_map(|n| Name::from_ascii(auth::fqdn(n)).ok())
                .map(|n| RData::PTR(PTR(n))),
        );
    }
    data
}

/// The address published for a listener bound to `ip`: itself, or for an unspecified
/// address (`0.0.0.0`, `::`) the DNS server's own when that is specific and of the same
/// family, else loopback.
fn advertised(ip: IpAddr, dns: IpAddr) -> IpAddr {
    if !ip.is_unspecified() {
        return ip;
    }
    match (ip, dns) {
        (IpAddr::V4(_), IpAddr::V4(d)) if !d.is_unspecified() => dns,
        (IpAddr::V6(_), IpAddr::V6(d)) if !d.is_unspecified() => dns,
        (IpAddr::V4(_), _) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V6(_), _) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// The apex of the zone `name` belongs to: its last two labels.
fn apex(name: &str) -> String {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    let start = labels.len().saturating_sub(2);
    format!("{}.", labels[start..].join("."))
}

/// The record data of `r`: TXT strings longer than a DNS character-string (255 bytes)
/// split into several, as a DKIM key of 2048 bits must be.
fn rdata(r: &Records) -> impl Iterator<Item = RData> + '_ {
    let txt = r.txt.iter().map(|t| RData::TXT(TXT::new(chunks(t))));
    let a = r.a.iter().map(|ip| RData::A(A(*ip)));
    let aaaa = r.aaaa.iter().map(|ip| RData::AAAA(AAAA(*ip)));
    let mx = r.mx.iter().filter_map(|m| {
        let exchange = Name::from_ascii(auth::fqdn(&m.exchange)).ok()?;
        Some(RData::MX(MX::new(m.preference, exchange)))
    });
    txt.chain(a).chain(aaaa).chain(mx)
}

/// `text` in pieces of at most 255 bytes, cut at character boundaries.
fn chunks(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut piece = String::new();
    for c in text.chars() {
        if piece.len() + c.len_utf8() > 255 {
            pieces.push(std::mem::take(&mut piece));
        }
        piece.push(c);
    }
    if !piece.is_empty() || pieces.is_empty() {
        pieces.push(piece);
    }
    pieces
}

/// A name this module spells itself.
fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("the names this module spells are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_apex_is_the_last_two_labels() {
        assert_eq!(apex("mx1.qq.com."), "qq.com.");
        assert_eq!(apex("s1._domainkey.example.com."), "example.com.");
        assert_eq!(apex("2.0.0.127.in-addr.arpa."), "in-addr.arpa.");
        assert_eq!(apex("localhost."), "localhost.");
    }

    #[test]
    fn long_txt_records_are_split_into_character_strings() {
        let key = "k".repeat(600);
        let pieces = chunks(&key);
        assert_eq!(
            pieces.iter().map(String::len).collect::<Vec<_>>(),
            [255, 255, 90]
        );
        assert_eq!(pieces.concat(), key);
        assert_eq!(chunks(""), [""]);
    }

    #[test]
    fn listeners_become_mx_hosts_and_config_addresses_win() {
        let mut config = Config::default();
        config
            .dns
            .ip("mx2.qq.com", "192.0.2.7".parse().expect("an address"));
        config.mailboxes.hosted_domains = vec!["Corp.Example".into()];
        let listeners = [
            ("mx1".to_owned(), SocketAddr::from(([127, 0, 0, 11], 25))),
            ("mx2".to_owned(), SocketAddr::from(([127, 0, 0, 12], 25))),
            ("mx3".to_owned(), SocketAddr::from(([0, 0, 0, 0], 25))),
        ];
        let dns = IpAddr::from([127, 0, 0, 53]);

        let records = records(&config, &listeners, dns);

        let shown =
            |name: &str| -> Vec<String> { records[name].iter().map(ToString::to_string).collect() };
        assert_eq!(shown("mx1.qq.com."), ["127.0.0.11"]);
        assert_eq!(shown("mx2.qq.com."), ["192.0.2.7"]);
        assert_eq!(shown("mx3.qq.com."), ["127.0.0.53"], "unspecified");
        assert_eq!(shown("ns1.qq.com."), ["127.0.0.53"]);
        assert_eq!(
            shown("corp.example."),
            ["5 mxbiz1.qq.com.", "10 mxbiz2.qq.com."]
        );
        assert_eq!(shown("11.0.0.127.in-addr.arpa."), ["mx1.qq.com."]);
    }
}
