//! [`Blacklists`] and [`RecipientLists`] over the in-memory lists (`state::lists`),
//! under the shared key cap.

use std::net::IpAddr;

use super::Memory;
use crate::policy::lists::draw;
use crate::policy::quota::Subject;
use crate::policy::state::lists::{DomainHistory, Listed};
use crate::policy::state::{
    Blacklists, IpListedBy, Listing, RecipientLists, SenderListedBy, Source,
};
use crate::units::IpNet;

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
