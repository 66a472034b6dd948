//! [`IpRecords`] over the in-memory IP records (`state::ips`): reputation, complaints,
//! warm-up days and connections, under the shared key cap.

use std::net::IpAddr;

use super::Memory;
use crate::policy::lists::draw;
use crate::policy::quota::Subject;
use crate::policy::state::IpRecords;
use crate::policy::state::ips::{IpHistory, ip_bytes};
use crate::units::IpNet;

impl IpRecords for Memory {
    fn see(&mut self, ip: IpAddr, now: u64) {
        let id = Subject::Ip(ip).record_id();
        let tick = self.cap.next_tick();
        if let Some(history) = self.ips.lru.get_mut(id, tick).filter(|h| h.ip == ip) {
            history.last_seen = now;
            return;
        }
        // A new IP (or an IPv6 address whose id another one had: it takes the place).
        let (p, duration) = self.ips.random_ip;
        let listed = draw(self.ips.seed, "ip", &ip_bytes(ip), p);
        if !self.ips.lru.contains(id) {
            self.make_room(1, now);
        }
        let history = IpHistory {
            ip,
            first_seen: now,
            last_seen: now,
            random_until: if listed { now + duration } else { 0 },
            complaints: Vec::new(),
        };
        self.ips.lru.insert(id, history, tick);
    }

    fn first_seen(&self, ip: IpAddr) -> Option<u64> {
        self.ips.history(ip).map(|h| h.first_seen)
    }

    fn complaints(&self, ip: IpAddr, now: u64) -> Vec<u64> {
        let window = self.ips.complaint_window;
        self.ips.history(ip).map_or_else(Vec::new, |h| {
            h.complaints
                .iter()
                .copied()
                .filter(|t| *t + window > now)
                .collect()
        })
    }

    fn complain(&mut self, ip: IpAddr, now: u64) {
        self.see(ip, now);
        let (kept, window) = (self.ips.complaints_kept, self.ips.complaint_window);
        let tick = self.cap.next_tick();
        if let Some(h) = self.ips.lru.get_mut(Subject::Ip(ip).record_id(), tick) {
            h.complaints.retain(|t| *t + window > now);
            h.complaints.push(now);
            while h.complaints.len() > kept {
                let oldest = (0..h.complaints.len()).min_by_key(|i| h.complaints[*i]);
                if let Some(i) = oldest {
                    h.complaints.remove(i);
                }
            }
        }
    }

    fn forgive(&mut self, net: IpNet) {
        for h in self.ips.lru.values_mut() {
            if net.contains(h.ip) {
                h.complaints.clear();
            }
        }
    }

    fn connected(&mut self, ip: IpAddr) -> u64 {
        let active = self.ips.active.entry(ip).or_insert(0);
        *active += 1;
        *active
    }

    fn disconnected(&mut self, ip: IpAddr) {
        if let Some(n) = self.ips.active.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.ips.active.remove(&ip);
            }
        }
    }
}
