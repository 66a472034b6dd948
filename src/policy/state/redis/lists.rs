//! [`Blacklists`] and [`RecipientLists`] in Redis. The config's listings are read
//! locally (every replica has the same); the API's are hashes of value to end (0: for
//! good), and a config listing lifted through the API is remembered in a set.

use std::net::IpAddr;

use super::Redis;
use crate::policy::lists::draw;
use crate::policy::state::{
    Blacklists, IpListedBy, Listing, RecipientLists, SenderListedBy, Source,
};
use crate::units::IpNet;

impl Redis {
    pub(super) fn ip_key(&self, ip: IpAddr) -> String {
        self.ip_key_of("ip:", ip)
    }

    pub(super) fn domain_key(&self, domain: &str) -> String {
        let mut key = self.key_with("dom:");
        key.push_str(domain);
        key
    }

    /// Adds `members` to the set `key` and keeps it `retention`.
    fn add_kept(&self, what: &str, key: &str, members: &[&str]) {
        let mut add = redis::cmd("SADD");
        add.arg(key).arg(members);
        self.write_kept(what, key, add);
    }

    /// Sets `field` of the hash `key` to `value` and keeps it `retention`.
    fn set_kept(&self, what: &str, key: &str, field: &str, value: u64) {
        let mut set = redis::cmd("HSET");
        set.arg(key).arg(field).arg(value);
        self.write_kept(what, key, set);
    }

    /// Runs `write` on `key` and keeps the key `retention`, in one round trip.
    fn write_kept(&self, what: &str, key: &str, write: redis::Cmd) {
        self.forget_view();
        let mut keep = redis::cmd("EXPIRE");
        keep.arg(key).arg(self.retention);
        self.call(what, |conn| {
            redis::pipe()
                .add_command(write)
                .ignore()
                .add_command(keep)
                .ignore()
                .query::<()>(conn)
        });
    }

    /// Ends the random listing recorded in the hash `key`, if it is still there.
    pub(super) fn end_draw(&self, key: &str) {
        self.forget_view();
        let mut invocation = self.scripts.set_if_exists.key(key);
        invocation.arg("ru").arg(0);
        self.call("end_draw", |conn| invocation.invoke::<()>(conn));
    }
}

impl Blacklists for Redis {
    fn ip_listing(&self, ip: IpAddr, now: u64) -> Option<Listing<IpListedBy>> {
        let view = self.ip_view(ip);
        let lifted = &view.lifted;
        if let Some(l) = self.lists.ips.iter().find(|l| {
            l.active(now) && l.value.contains(ip) && !lifted.contains(&l.value.to_string())
        }) {
            return Some(Listing {
                by: IpListedBy::Net(l.value, l.source),
                until: l.until,
            });
        }
        for (net, until) in &view.api_nets {
            let (net, until) = (net, *until);
            let Ok(net) = net.parse::<IpNet>() else {
                continue;
            };
            if net.contains(ip) && (until == 0 || until > now) {
                return Some(Listing {
                    by: IpListedBy::Net(net, Source::Api),
                    until: (until > 0).then_some(until),
                });
            }
        }
        view.drawn.filter(|u| *u > now).map(|until| Listing {
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
        let config = |list: &[crate::policy::state::lists::Listed<String>], value: &str| {
            list.iter()
                .find(|l| l.active(now) && l.value == value)
                .map(|l| l.until)
        };
        let by_sender = config(&self.lists.senders, sender);
        let by_domain = config(&self.lists.domains_listed, domain);
        let (p, duration) = self.lists.random_domain;
        let read = self
            .staged(|view| {
                let (f, d, read) = view.sender.as_ref()?;
                (f == sender && d == domain).then(|| read.clone())
            })
            .unwrap_or_else(|| self.read_sender(sender, domain));
        let api = |until: Option<u64>| until.filter(|u| *u == 0 || *u > now);
        let (by, until) = if by_sender.is_some() && !read.lifted.0 {
            (SenderListedBy::Sender(Source::Config), by_sender.flatten())
        } else if let Some(u) = api(read.api.0) {
            (SenderListedBy::Sender(Source::Api), Some(u))
        } else if by_domain.is_some() && !read.lifted.1 {
            (SenderListedBy::Domain(Source::Config), by_domain.flatten())
        } else if let Some(u) = api(read.api.1) {
            (SenderListedBy::Domain(Source::Api), Some(u))
        } else if p <= 0.0 {
            return None;
        } else {
            // The domain's record: kept while it is seen, made when its draw lists it.
            let until = match read.drawn {
                Some(until) => until,
                None if draw(self.seed, "domain", domain.as_bytes(), p) => now + duration,
                None => return None,
            };
            let mut cmd = self.evalsha(&self.scripts.draw, &[self.domain_key(domain)]);
            cmd.arg(now).arg(until).arg(self.idle_counters);
            self.hold(cmd);
            if until <= now {
                return None;
            }
            (SenderListedBy::Draw, Some(until))
        };
        Some(Listing {
            by,
            until: until.filter(|u| *u > 0),
        })
    }

    fn list_ip(&mut self, net: IpNet, until: Option<u64>) {
        let key = self.key(format_args!("bl:ip"));
        self.set_kept("list_ip", &key, &net.to_string(), until.unwrap_or(0));
    }

    fn unlist_ip(&mut self, net: IpNet) {
        self.forget_view();
        let text = net.to_string();
        let key = self.key(format_args!("bl:ip"));
        self.call("unlist_ip", |conn| {
            redis::cmd("HDEL").arg(&key).arg(&text).query::<()>(conn)
        });
        if self.lists.ips.iter().any(|l| l.value == net) {
            let lifted = self.key(format_args!("lifted:ip"));
            self.add_kept("unlist_ip", &lifted, &[&text]);
        }
        let pattern = self.pattern("ip:");
        let drawn: Vec<String> = self.call("unlist_ip", |conn| Self::scan(conn, &pattern));
        let ips = drawn.iter().filter(|key| {
            key.rsplit_once("ip:")
                .and_then(|(_, ip)| ip.parse::<IpAddr>().ok())
                .is_some_and(|ip| net.contains(ip))
        });
        for key in ips {
            self.end_draw(key);
        }
    }

    fn list_sender(&mut self, sender: &str, until: Option<u64>) {
        let key = self.key(format_args!("bl:s"));
        self.set_kept("list_sender", &key, sender, until.unwrap_or(0));
    }

    fn unlist_sender(&mut self, sender: &str) {
        let key = self.key(format_args!("bl:s"));
        self.call("unlist_sender", |conn| {
            redis::cmd("HDEL").arg(&key).arg(sender).query::<()>(conn)
        });
        let listed = |l: &crate::policy::state::lists::Listed<String>| l.value == sender;
        if self.lists.senders.iter().any(listed) || self.lists.domains_listed.iter().any(listed) {
            let lifted = self.key(format_args!("lifted:s"));
            self.add_kept("unlist_sender", &lifted, &[sender]);
        }
        self.end_draw(&self.domain_key(sender));
    }
}

impl RecipientLists for Redis {
    fn whitelists(&self, rcpt: &str, sender: &str, domain: &str) -> bool {
        let (a, b): (bool, bool) = self.call("whitelists", |conn| {
            redis::pipe()
                .cmd("SISMEMBER")
                .arg(self.key(format_args!("wl:{sender}")))
                .arg(rcpt)
                .cmd("SISMEMBER")
                .arg(self.key(format_args!("wl:{domain}")))
                .arg(rcpt)
                .query(conn)
        });
        a || b
    }

    fn whitelisted_anywhere(&self, sender: Option<(&str, &str)>) -> bool {
        let read = self.staged(|view| match sender {
            None => view.whitelists,
            Some(_) => view.named,
        });
        if let Some(found) = read {
            return found;
        }
        let found: u64 = self.call("whitelisted_anywhere", |conn| match sender {
            None => redis::cmd("EXISTS")
                .arg(self.key(format_args!("wl-any")))
                .query(conn),
            Some((sender, domain)) => redis::cmd("EXISTS")
                .arg(self.key(format_args!("wl:{sender}")))
                .arg(self.key(format_args!("wl:{domain}")))
                .query(conn),
        });
        found > 0
    }

    fn blocked_by(&self, rcpt: &str, sender: &str, domain: &str) -> bool {
        let local = self
            .recipients
            .personal
            .get(rcpt)
            .is_some_and(|blocked| blocked.contains(sender) || blocked.contains(domain));
        if local {
            return true;
        }
        let read = self.staged(|view| {
            let (f, d, _) = view.sender.as_ref()?;
            if f != sender || d != domain {
                return None;
            }
            view.personal
                .iter()
                .find(|(r, _)| r == rcpt)
                .map(|(_, b)| *b)
        });
        if let Some(blocked) = read {
            return blocked;
        }
        let key = self.key(format_args!("pb:{rcpt}"));
        let (a, b): (bool, bool) = self.call("blocked_by", |conn| {
            redis::pipe()
                .cmd("SISMEMBER")
                .arg(&key)
                .arg(sender)
                .cmd("SISMEMBER")
                .arg(&key)
                .arg(domain)
                .query(conn)
        });
        a || b
    }

    fn mailed(&self, rcpt: &str, ip: IpAddr) -> bool {
        let read = self.staged(|view| {
            (view.ip == Some(ip))
                .then(|| view.mailed.iter().find(|(r, _)| r == rcpt).map(|(_, m)| *m))
                .flatten()
        });
        if let Some(mailed) = read {
            return mailed;
        }
        let key = self.key(format_args!("out:{rcpt}"));
        self.call("mailed", |conn| {
            redis::cmd("SISMEMBER")
                .arg(&key)
                .arg(ip.to_string())
                .query(conn)
        })
    }

    fn whitelist(&mut self, rcpt: &str, sender: &str) {
        let key = self.key(format_args!("wl:{sender}"));
        self.add_kept("whitelist", &key, &[rcpt]);
        let any = self.key(format_args!("wl-any"));
        self.add_kept("whitelist", &any, &[sender]);
    }

    fn end_whitelistings(&mut self, sender: &str, domain: &str) {
        let any = self.key(format_args!("wl-any"));
        self.call("end_whitelistings", |conn| {
            redis::pipe()
                .cmd("DEL")
                .arg(self.key(format_args!("wl:{sender}")))
                .arg(self.key(format_args!("wl:{domain}")))
                .ignore()
                .cmd("SREM")
                .arg(&any)
                .arg(sender)
                .arg(domain)
                .ignore()
                .query::<()>(conn)
        });
    }

    fn block_sender(&mut self, rcpt: &str, sender: &str) {
        let key = self.key(format_args!("pb:{rcpt}"));
        self.add_kept("block_sender", &key, &[sender]);
    }

    fn record_outbound(&mut self, address: &str, ip: IpAddr) {
        let key = self.key(format_args!("out:{address}"));
        self.add_kept("record_outbound", &key, &[&ip.to_string()]);
    }
}
