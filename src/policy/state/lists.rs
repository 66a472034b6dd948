//! The blacklists and the recipients' lists, in memory.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::Source;
use crate::clock::{parse_rfc3339, unix_secs};
use crate::config::{Blacklist, Content, ListEntry};
use crate::policy::lru::Lru;
use crate::units::IpNet;

/// A listing: what, until when (Unix seconds), and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed<T> {
    pub value: T,
    pub until: Option<u64>,
    pub source: Source,
}

impl<T> Listed<T> {
    pub fn active(&self, now: u64) -> bool {
        self.until.is_none_or(|u| now < u)
    }
}

/// A sender domain that drew a random listing.
#[derive(Debug, Default)]
pub(super) struct DomainHistory {
    pub last_seen: u64,
    pub random_until: u64,
}

/// Static listings, and the domains the draw listed.
#[derive(Debug)]
pub(super) struct Lists {
    pub(super) seed: u64,
    /// Chance and duration (seconds) of a new domain's random listing.
    pub(super) random_domain: (f64, u64),
    pub(super) ips: Vec<Listed<IpNet>>,
    pub(super) senders: Vec<Listed<String>>,
    pub(super) domains_listed: Vec<Listed<String>>,
    /// Domains the draw listed, counted toward the cap.
    pub domains: Lru<DomainHistory>,
}

fn until_secs(until: Option<&str>) -> Option<u64> {
    until.and_then(parse_rfc3339).map(unix_secs)
}

fn text_list(entries: &[ListEntry]) -> Vec<Listed<String>> {
    entries
        .iter()
        .map(|e| Listed {
            value: e.value().to_lowercase(),
            until: until_secs(e.until()),
            source: Source::Config,
        })
        .collect()
}

impl Lists {
    pub(super) fn new(seed: u64, config: &Blacklist) -> Self {
        let ips = config
            .ips
            .iter()
            .filter_map(|e| {
                Some(Listed {
                    value: e.value().parse().ok()?,
                    until: until_secs(e.until()),
                    source: Source::Config,
                })
            })
            .collect();
        Self {
            seed,
            random_domain: (
                config.random_domain_probability,
                config.random_domain_duration.as_secs(),
            ),
            ips,
            senders: text_list(&config.senders),
            domains_listed: text_list(&config.domains),
            domains: Lru::default(),
        }
    }

    pub(super) fn sweep(&mut self, now: u64, idle: u64) {
        self.domains.retain(|h| now < h.last_seen + idle);
        self.ips.retain(|l| l.active(now));
        self.senders.retain(|l| l.active(now));
        self.domains_listed.retain(|l| l.active(now));
    }
}

/// Whitelists, personal blacklists and outbound records, from the config and the API.
#[derive(Debug)]
pub(super) struct Recipients {
    /// (recipient, sender address or domain).
    pub(super) whitelist: HashSet<(String, String)>,
    /// Recipient to the sender addresses and domains they blocked.
    pub(super) personal: HashMap<String, HashSet<String>>,
    /// (QQ user, IP they sent mail to).
    pub(super) outbound: HashSet<(String, IpAddr)>,
}

impl Recipients {
    pub(super) fn new(config: &Content) -> Self {
        let personal = config
            .personal_blacklists
            .iter()
            .map(|(rcpt, senders)| {
                let senders = senders.iter().map(|s| s.to_lowercase()).collect();
                (rcpt.to_lowercase(), senders)
            })
            .collect();
        Self {
            whitelist: HashSet::new(),
            personal,
            outbound: HashSet::new(),
        }
    }
}
