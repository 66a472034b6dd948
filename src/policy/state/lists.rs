//! The blacklists and the recipients' lists, in memory.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::memory::Memory;
use super::{Blacklists, IpListedBy, Listing, RecipientLists, SenderListedBy, Source};
use crate::clock::{parse_rfc3339, unix_secs};
use crate::config::{Blacklist, Content, ListEntry};
use crate::policy::lists::{Listed, draw};
use crate::policy::lru::Lru;
use crate::policy::quota::Subject;
use crate::units::IpNet;

/// A sender domain that drew a random listing.
#[derive(Debug, Default)]
pub(super) struct DomainHistory {
    pub last_seen: u64,
    pub random_until: u64,
}

/// Static listings, and the domains the draw listed.
#[derive(Debug)]
pub(super) struct Lists {
    seed: u64,
    /// Chance and duration (seconds) of a new domain's random listing.
    random_domain: (f64, u64),
    ips: Vec<Listed<IpNet>>,
    senders: Vec<Listed<String>>,
    domains_listed: Vec<Listed<String>>,
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

impl Memory {
    /// The random listing of `domain` in force at `now`; a domain seen for the first time
    /// draws it now.
    fn random_domain(&mut self, domain: &str, now: u64) -> Option<u64> {
        let (p, duration) = self.lists.random_domain;
        if p <= 0.0 {
            return None;
        }
        let id = Subject::Text(domain).record_id();
        let tick = self.cap.next_tick();
        if let Some(history) = self.lists.domains.get_mut(id, tick) {
            history.last_seen = now;
            return Some(history.random_until).filter(|u| *u > now);
        }
        // The draw is a pure function of the seed and the domain: only a domain it lists
        // needs remembering (for when its listing ends).
        if !draw(self.lists.seed, "domain", domain.as_bytes(), p) {
            return None;
        }
        let until = now + duration;
        self.make_room(1, now);
        let history = DomainHistory {
            last_seen: now,
            random_until: until,
        };
        self.lists.domains.insert(id, history, tick);
        Some(until)
    }
}

impl Blacklists for Memory {
    fn ip_listing(&self, ip: IpAddr, now: u64) -> Option<Listing<IpListedBy>> {
        if let Some(l) = self
            .lists
            .ips
            .iter()
            .find(|l| l.active(now) && l.value.contains(ip))
        {
            return Some(Listing {
                by: IpListedBy::Net(l.value, l.source),
                until: l.until,
            });
        }
        self.ips.random_until(ip, now).map(|until| Listing {
            by: IpListedBy::Draw,
            until: Some(until),
        })
    }

    fn sender_listing(
        &mut self,
        sender: &str,
        domain: &str,
        now: u64,
    ) -> Option<Listing<SenderListedBy>> {
        let listed = |list: &[Listed<String>], value: &str| {
            list.iter()
                .find(|l| l.active(now) && l.value == value)
                .map(|l| (l.source, l.until))
        };
        if let Some((source, until)) = listed(&self.lists.senders, sender) {
            return Some(Listing {
                by: SenderListedBy::Sender(source),
                until,
            });
        }
        if let Some((source, until)) = listed(&self.lists.domains_listed, domain) {
            return Some(Listing {
                by: SenderListedBy::Domain(source),
                until,
            });
        }
        self.random_domain(domain, now).map(|until| Listing {
            by: SenderListedBy::Draw,
            until: Some(until),
        })
    }

    fn list_ip(&mut self, net: IpNet, until: Option<u64>) {
        self.lists.ips.push(Listed {
            value: net,
            until,
            source: Source::Api,
        });
    }

    fn unlist_ip(&mut self, net: IpNet) {
        self.lists.ips.retain(|l| l.value != net);
        self.ips.end_draws(net);
    }

    fn list_sender(&mut self, sender: &str, until: Option<u64>) {
        let entry = Listed {
            value: sender.to_owned(),
            until,
            source: Source::Api,
        };
        if sender.contains('@') {
            self.lists.senders.push(entry);
        } else {
            self.lists.domains_listed.push(entry);
        }
    }

    fn unlist_sender(&mut self, sender: &str) {
        self.lists.senders.retain(|l| l.value != sender);
        self.lists.domains_listed.retain(|l| l.value != sender);
        let tick = self.cap.next_tick();
        if let Some(h) = self
            .lists
            .domains
            .get_mut(Subject::Text(sender).record_id(), tick)
        {
            h.random_until = 0;
        }
    }
}

/// Whitelists, personal blacklists and outbound records, from the config and the API.
#[derive(Debug)]
pub(super) struct Recipients {
    /// (recipient, sender address or domain).
    whitelist: HashSet<(String, String)>,
    /// Recipient to the sender addresses and domains they blocked.
    personal: HashMap<String, HashSet<String>>,
    /// (QQ user, IP they sent mail to).
    outbound: HashSet<(String, IpAddr)>,
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

impl RecipientLists for Memory {
    fn whitelists(&self, rcpt: &str, sender: &str, domain: &str) -> bool {
        let w = &self.recipients.whitelist;
        w.contains(&(rcpt.to_owned(), sender.to_owned()))
            || w.contains(&(rcpt.to_owned(), domain.to_owned()))
    }

    fn whitelisted_anywhere(&self, sender: Option<(&str, &str)>) -> bool {
        let w = &self.recipients.whitelist;
        match sender {
            None => !w.is_empty(),
            Some((sender, domain)) => w.iter().any(|(_, s)| s == sender || s == domain),
        }
    }

    fn blocked_by(&self, rcpt: &str, sender: &str, domain: &str) -> bool {
        self.recipients
            .personal
            .get(rcpt)
            .is_some_and(|blocked| blocked.contains(sender) || blocked.contains(domain))
    }

    fn mailed(&self, rcpt: &str, ip: IpAddr) -> bool {
        self.recipients.outbound.contains(&(rcpt.to_owned(), ip))
    }

    fn whitelist(&mut self, rcpt: &str, sender: &str) {
        self.recipients
            .whitelist
            .insert((rcpt.to_owned(), sender.to_owned()));
    }

    fn end_whitelistings(&mut self, sender: &str, domain: &str) {
        self.recipients
            .whitelist
            .retain(|(_, s)| s != sender && s != domain);
    }

    fn block_sender(&mut self, rcpt: &str, sender: &str) {
        self.recipients
            .personal
            .entry(rcpt.to_owned())
            .or_default()
            .insert(sender.to_owned());
    }

    fn record_outbound(&mut self, address: &str, ip: IpAddr) {
        self.recipients.outbound.insert((address.to_owned(), ip));
    }
}
