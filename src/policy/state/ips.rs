//! What is known about client IPs, in memory: first sight, random listing, complaints and
//! open connections.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::config::{Blacklist, Reputation};
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
    pub(super) seed: u64,
    /// Chance and duration (seconds) of a new IP's random listing.
    pub(super) random_ip: (f64, u64),
    /// How long a complaint counts, in seconds.
    pub complaint_window: u64,
    /// How many complaints about an IP can matter: enough to take its reputation to 0.
    /// Older ones change nothing, neither the reputation nor when it rises again, so
    /// they are not kept.
    pub(super) complaints_kept: usize,
    pub lru: Lru<IpHistory>,
    /// Connections open per IP.
    pub(super) active: HashMap<IpAddr, u64>,
}

/// The octets of an IP, as the random draw hashes them.
pub(super) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
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

    pub(super) fn history(&self, ip: IpAddr) -> Option<&IpHistory> {
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
