//! [`IpRecords`] and [`BulkPrints`] in Redis: IP records (first sight, random listing),
//! complaints, leases on open connections, and the recipients of each body per bulk
//! window. A sighting, a lease given back and a body's recipients are held back for the
//! next call; the lease of a connection and a body's recipients are read with the stage.

use std::net::IpAddr;

use super::Redis;
use crate::policy::lists::draw;
use crate::policy::quota::Subject;
use crate::policy::state::ips::ip_bytes;
use crate::policy::state::{BulkPrints, IpRecords};
use crate::units::IpNet;

/// Virtual seconds between two sights of an IP told to Redis.
const SEEN_AGAIN: u64 = 60;
/// IPs whose last sight (and first) is remembered locally, at most.
pub(super) const SEEN_KEPT: usize = 10_000;

impl Redis {
    pub(super) fn complaints_key(&self, ip: IpAddr) -> String {
        self.ip_key_of("ipc:", ip)
    }

    pub(super) fn lease_key(&self, ip: IpAddr) -> String {
        self.ip_key_of("conn:", ip)
    }

    /// The key that starts with `{prefix}:` and `kind`, then names `ip`.
    pub(super) fn ip_key_of(&self, kind: &str, ip: IpAddr) -> String {
        let mut key = self.key_with(kind);
        Subject::Ip(ip).push_label(&mut key);
        key
    }

    pub(super) fn bulk_key(&self, print: u64, now: u64) -> String {
        self.key(format_args!("bulk:{print:016x}:{}", now / self.bulk_window))
    }
}

fn lowercase(rcpts: &[String]) -> Vec<String> {
    rcpts.iter().map(|r| r.to_lowercase()).collect()
}

impl IpRecords for Redis {
    fn see(&mut self, ip: IpAddr, now: u64) {
        {
            let mut seen = self.seen.borrow_mut();
            if seen.get(&ip).is_some_and(|t| now < t + SEEN_AGAIN) {
                return;
            }
            if seen.len() >= SEEN_KEPT {
                seen.clear();
            }
        }
        self.forget_view();
        let (p, duration) = self.random_ip;
        let listed = draw(self.seed, "ip", &ip_bytes(ip), p);
        let mut cmd = self.evalsha(&self.scripts.see, &[self.ip_key(ip)]);
        cmd.arg(now)
            .arg(if listed { now + duration } else { 0 })
            .arg(self.idle_ips);
        // Sent ahead of the stage's reads, which then see the record.
        self.hold(cmd);
        self.seen.borrow_mut().insert(ip, now);
    }

    fn first_seen(&self, ip: IpAddr) -> Option<u64> {
        self.first_sight(ip)
    }

    fn complaints(&self, ip: IpAddr, now: u64) -> Vec<u64> {
        let window = self.complaint_window;
        let mut times = self.ip_view(ip).complaints;
        times.retain(|t| *t + window > now);
        times
    }

    fn complain(&mut self, ip: IpAddr, now: u64) {
        self.see(ip, now);
        self.forget_view();
        let mut invocation = self.scripts.complain.key(self.complaints_key(ip));
        invocation
            .arg(now)
            .arg(self.complaint_window.max(1))
            .arg(self.complaints_kept);
        self.call("complain", |conn| invocation.invoke::<()>(conn));
    }

    fn forgive(&mut self, net: IpNet) {
        self.forget_view();
        let pattern = self.pattern("ipc:");
        self.call("forgive", |conn| {
            let keys: Vec<String> = Self::scan(conn, &pattern)?
                .into_iter()
                .filter(|key| {
                    key.rsplit_once("ipc:")
                        .and_then(|(_, ip)| ip.parse::<IpAddr>().ok())
                        .is_some_and(|ip| net.contains(ip))
                })
                .collect();
            if keys.is_empty() {
                return Ok(());
            }
            redis::cmd("DEL").arg(keys).query::<()>(conn)
        });
    }

    fn connected(&mut self, ip: IpAddr) -> u64 {
        let (id, open) = match self.staged(|view| view.lease.clone()) {
            Some(lease) => lease,
            None => {
                let id = self.lease_id();
                let mut cmd = self.evalsha(&self.scripts.lease, &[self.lease_key(ip)]);
                cmd.arg(&id).arg(self.lease_ms.max(1));
                let open = self
                    .exchange("connected", |p| p.cmd(&cmd))
                    .and_then(|mut replies| replies.pop())
                    .and_then(|reply| redis::from_redis_value::<u64>(reply).ok())
                    .unwrap_or(0);
                (id, open)
            }
        };
        if open > 0 {
            self.leases.entry(ip).or_default().push(id);
        }
        open
    }

    fn disconnected(&mut self, ip: IpAddr) {
        let Some(leases) = self.leases.get_mut(&ip) else {
            return;
        };
        let lease = leases.pop();
        if leases.is_empty() {
            self.leases.remove(&ip);
        }
        let Some(lease) = lease else {
            return;
        };
        self.health.enter(super::super::CLOSE);
        self.forget_view();
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(self.lease_key(ip)).arg(&lease);
        // Held back; when Redis cannot be told, the lease expires.
        self.hold(cmd);
    }
}

impl BulkPrints for Redis {
    fn recipients_with(&mut self, print: u64, rcpts: &[String], now: u64) -> usize {
        let window = now / self.bulk_window;
        let read = self.staged(|view| {
            view.bulk
                .filter(|(p, w, _)| *p == print && *w == window)
                .map(|(_, _, n)| n)
        });
        if let Some(n) = read {
            return n;
        }
        let mut invocation = self.scripts.bulk_with.key(self.bulk_key(print, now));
        invocation.arg(lowercase(rcpts));
        self.call("recipients_with", |conn| invocation.invoke(conn))
    }

    fn add_recipients(&mut self, print: u64, rcpts: &[String], now: u64) {
        if rcpts.is_empty() || self.claim_added(print, now) {
            return;
        }
        let key = self.bulk_key(print, now);
        let mut add = redis::cmd("SADD");
        add.arg(&key).arg(lowercase(rcpts));
        let mut keep = redis::cmd("EXPIRE");
        keep.arg(&key).arg(self.bulk_window + 60);
        self.hold(add);
        self.hold(keep);
    }

    fn clear_prints(&mut self) {
        self.delete_all("clear_prints", "bulk:");
    }
}
