//! Playing a scenario's timeline on a running server: the phases' changes at their
//! times, by the server's clock.

use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::duration_text;
use crate::expect::Outage;
use crate::policy::IpNet;
use crate::scenario::{Phase, Scenario};
use crate::server::Server;

/// The phases still to play, and the outages so far.
pub(crate) struct Timeline<'a> {
    phases: &'a [Phase],
    next: usize,
    /// MX hosts down now, since when.
    down: Vec<(String, SystemTime)>,
    outages: Vec<Outage>,
}

impl<'a> Timeline<'a> {
    pub(crate) fn new(scenario: &'a Scenario, server: &Server) -> Self {
        let mut timeline = Self {
            phases: &scenario.phases,
            next: 0,
            down: Vec::new(),
            outages: Vec::new(),
        };
        // Phases at zero apply before the sender's first connection can arrive.
        while timeline.next_at() == Some(Duration::ZERO) {
            timeline.play_next(server);
        }
        timeline
    }

    pub(crate) fn next_at(&self) -> Option<Duration> {
        self.phases.get(self.next).map(|p| p.at)
    }

    pub(crate) fn current(&self) -> String {
        match self.next.checked_sub(1).map(|i| &self.phases[i]) {
            None => "start".to_owned(),
            Some(p) if p.name.is_empty() => format!("at {}", duration_text::Text(p.at)),
            Some(p) => format!("`{}`", p.name),
        }
    }

    pub(crate) fn play_next(&mut self, server: &Server) {
        let Some(phase) = self.phases.get(self.next) else {
            return;
        };
        self.next += 1;
        let now = server.clock().now();
        info!(at = %duration_text::Text(phase.at), name = %phase.name, "phase");
        server.with_policy(|policy, now| {
            for l in &phase.limits {
                policy.set_limit(l.quota, l.window, l.limit);
            }
            for listing in &phase.blacklist {
                let until = listing.lasting.map(|d| now + d);
                if let Some(net) = listing
                    .ip
                    .as_deref()
                    .and_then(|ip| ip.parse::<IpNet>().ok())
                {
                    policy.blacklist_ip(net, until);
                }
                if let Some(sender) = &listing.sender {
                    policy.blacklist_sender(sender, until);
                }
            }
            for listing in &phase.unblacklist {
                if let Some(net) = listing
                    .ip
                    .as_deref()
                    .and_then(|ip| ip.parse::<IpNet>().ok())
                {
                    policy.unblacklist_ip(net);
                }
                if let Some(sender) = &listing.sender {
                    policy.unblacklist_sender(sender);
                }
            }
            for w in &phase.whitelist {
                policy.whitelist(&w.recipient, &w.sender);
            }
            for c in &phase.complain {
                for _ in 0..c.count {
                    policy.complain(c.ip, c.sender.as_deref(), now);
                }
            }
        });
        if phase.clear_faults {
            server.set_faults(Vec::new());
        }
        if let Some(faults) = &phase.faults {
            server.set_faults(faults.clone());
        }
        for mx in &phase.mx_down {
            server.set_mx_up(mx, false);
            if !self.down.iter().any(|(m, _)| m == mx) {
                self.down.push((mx.clone(), now));
            }
        }
        for mx in &phase.mx_up {
            server.set_mx_up(mx, true);
            if let Some(i) = self.down.iter().position(|(m, _)| m == mx) {
                let (mx, from) = self.down.remove(i);
                self.outages.push(Outage::new(mx, from, Some(now)));
            }
        }
        if phase.mx_down.iter().chain(&phase.mx_up).next().is_some() {
            warn!(down = ?self.down.iter().map(|(m, _)| m).collect::<Vec<_>>(), "MX hosts down");
        }
    }

    /// Every outage, those still going ending at `end`.
    pub(crate) fn outages(&self, end: SystemTime) -> Vec<Outage> {
        let mut outages = self.outages.clone();
        outages.extend(
            self.down
                .iter()
                .map(|(mx, from)| Outage::new(mx.clone(), *from, Some(end))),
        );
        outages
    }
}

/// Plays `scenario`'s phases on `server`, each when the server's clock has moved `at`
/// past `start`: at the clock's speed, or when a manual clock is advanced.
pub(crate) async fn play(server: Server, scenario: Scenario, start: SystemTime) {
    let mut timeline = Timeline::new(&scenario, &server);
    while let Some(at) = timeline.next_at() {
        until(server.clock(), start + at).await;
        timeline.play_next(&server);
    }
    info!(scenario = %scenario.name, "timeline played");
}

/// Waits until `clock` shows `at` or later: the one way a timeline waits, so phases and
/// the end of a run follow the clock (its speed, and any advance) rather than real time.
/// A manual clock is looked at every 20 ms; a running one is slept on in steps of at most
/// a second, so an advance is seen within one.
pub(crate) async fn until(clock: &Clock, at: SystemTime) {
    loop {
        let left = match at.duration_since(clock.now()) {
            Ok(left) if !left.is_zero() => left,
            _ => return,
        };
        let speed = clock.speed();
        let wait = if speed > 0.0 {
            left.div_f64(speed)
        } else {
            Duration::from_millis(20)
        };
        tokio::time::sleep(wait.clamp(Duration::from_millis(1), Duration::from_secs(1))).await;
    }
}
