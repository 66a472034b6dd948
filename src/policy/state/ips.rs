//! What is known about client IPs, in memory: first sight, random listing, complaints and
//! open connections.

use std::collections::HashMap;
use std::net::IpAddr;

use super::IpRecords;
use super::memory::Memory;
use crate::config::{Blacklist, Reputation};
use crate::policy::lists::draw;
use crate::policy::lru::Lru;
use crate::policy::quota::Subject;
use crate::units::IpNet;

/// What is remembered about a client IP.
#[derive(Debug)]
pub(super) struct IpHistory {
    pub ip: IpAddr,
    pub first_seen: u64,
    pub last_seen: u64,
    /// When its random listing ends; 0 when it drew none.
    pub random_until: u64,
    /// Times of the complaints that still count, at most as many as can matter.
    pub complaints: Vec<u64>,
}

impl Default for IpHistory {
    fn default() -> Self {
        Self {
            ip: IpAddr::from([0, 0, 0, 0]),
            first_seen: 0,
            last_seen: 0,
            random_until: 0,
            complaints: Vec::new(),
        }
    }
}

impl IpHistory {
    /// Until when forgetting it would change a decision: while its random listing lasts
    /// and while a complaint counts.
    pub fn stays_until(&self, now: u64, complaint_window: u64) -> Option<u64> {
        let complained = self
            .complaints
            .iter()
            .max()
            .map_or(0, |t| t + complaint_window);
        let until = self.random_until.max(complained);
        (until > now).then_some(until)
    }
}

/// IP histories, counted toward the cap, and open connections.
#[derive(Debug)]
pub(super) struct Ips {
    seed: u64,
    /// Chance and duration (seconds) of a new IP's random listing.
    random_ip: (f64, u64),
    /// How long a complaint counts, in seconds.
    pub complaint_window: u64,
    /// How many complaints about an IP can matter: enough to take its reputation to 0.
    /// Older ones change nothing, neither the reputation nor when it rises again, so
    /// they are not kept.
    complaints_kept: usize,
    pub lru: Lru<IpHistory>,
    /// Connections open per IP.
    active: HashMap<IpAddr, u64>,
}

/// The octets of an IP, as the random draw hashes them.
fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    }
}

impl Ips {
    pub(super) fn new(seed: u64, blacklist: &Blacklist, reputation: &Reputation) -> Self {
        let (initial, penalty) = (reputation.initial, reputation.complaint_penalty);
        let complaints_kept = if initial == 0 || penalty == 0 {
            0
        } else {
            usize::try_from((initial - 1) / penalty + 1).unwrap_or(usize::MAX)
        };
        Self {
            seed,
            random_ip: (
                blacklist.random_ip_probability,
                blacklist.random_ip_duration.as_secs(),
            ),
            complaint_window: reputation.complaint_window.as_secs(),
            complaints_kept,
            lru: Lru::default(),
            active: HashMap::new(),
        }
    }

    fn history(&self, ip: IpAddr) -> Option<&IpHistory> {
        self.lru
            .get(Subject::Ip(ip).record_id())
            .filter(|h| h.ip == ip)
    }

    /// When the random listing of `ip` in force at `now` ends.
    pub(super) fn random_until(&self, ip: IpAddr, now: u64) -> Option<u64> {
        self.history(ip)
            .map(|h| h.random_until)
            .filter(|u| *u > now)
    }

    /// Ends the random listings of the IPs in `net`.
    pub(super) fn end_draws(&mut self, net: IpNet) {
        for h in self.lru.values_mut() {
            if net.contains(h.ip) {
                h.random_until = 0;
            }
        }
    }

    pub(super) fn sweep(&mut self, now: u64, idle: u64) {
        let window = self.complaint_window;
        let active = &self.active;
        self.lru.retain(|h| {
            h.complaints.retain(|t| *t + window > now);
            active.contains_key(&h.ip) || now < h.last_seen + idle
        });
    }
}

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
