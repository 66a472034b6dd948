//! Playing a scenario's timeline on a running server: the phases' changes at their
//! times, by the server's clock. [`Timeline::step`] is the one driver: the runner
//! (`qqmx run`) steps it beside the sender, and [`play`] steps it to the end for a
//! scenario loaded through the control API (`PUT /api/v1/scenario`).

use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::clock::Clock;
use crate::expect::Outage;
use crate::scenario::{Phase, Scenario};
use crate::server::Server;
use crate::units::{IpNet, duration_text};

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

    fn next_at(&self) -> Option<Duration> {
        self.phases.get(self.next).map(|p| p.at)
    }

    pub(crate) fn current(&self) -> String {
        match self.next.checked_sub(1).map(|i| &self.phases[i]) {
            None => "start".to_owned(),
            Some(p) if p.name.is_empty() => format!("at {}", duration_text::Text(p.at)),
            Some(p) => format!("`{}`", p.name),
        }
    }

    fn play_next(&mut self, server: &Server) {
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

    /// Waits by `server`'s clock until the next phase is due (`start` plus its `at`) and
    /// plays it; true then. Without a phase due by `end`, waits until `end` and returns
    /// false; without either, returns false at once. The one way a timeline is driven:
    /// phases follow the clock (its speed, and any advance), never real time. Dropped
    /// while it waits, it has changed nothing.
    pub(crate) async fn step(
        &mut self,
        server: &Server,
        start: SystemTime,
        end: Option<SystemTime>,
    ) -> bool {
        let due = self
            .next_at()
            .map(|at| start + at)
            .filter(|next| end.is_none_or(|end| *next <= end));
        match (due, end) {
            (Some(next), _) => {
                until(server.clock(), next).await;
                self.play_next(server);
                true
            }
            (None, Some(end)) => {
                until(server.clock(), end).await;
                false
            }
            (None, None) => false,
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
    while timeline.step(&server, start, None).await {}
    info!(scenario = %scenario.name, "timeline played");
}

/// Waits until `clock` shows `at` or later, so phases and the end of a run follow the
/// clock (its speed, and any advance) rather than real time. A manual clock is looked at
/// every 20 ms; a running one is slept on in steps of at most a second, so an advance is
/// seen within one.
async fn until(clock: &Clock, at: SystemTime) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = r#"
name = "two phases"
duration = "1h"
[[phase]]
at = "10m"
mx_down = ["mx2"]
[[phase]]
at = "30m"
mx_up = ["mx2"]
"#;

    const MINUTE: Duration = Duration::from_secs(60);

    /// Whether `step` has finished when first polled, and what it returned.
    async fn at_once(step: impl Future<Output = bool>) -> Option<bool> {
        tokio::select! {
            biased;
            more = step => Some(more),
            () = std::future::ready(()) => None,
        }
    }

    fn setup() -> (Scenario, Server, SystemTime) {
        let scenario = Scenario::from_toml(SCENARIO).expect("a valid scenario");
        let start = scenario.start();
        let server = Server::new(scenario.config.clone(), Clock::manual(start)).expect("server");
        (scenario, server, start)
    }

    #[tokio::test]
    async fn a_phase_is_played_when_the_clock_reaches_it_not_before() {
        let (scenario, server, start) = setup();
        let mut timeline = Timeline::new(&scenario, &server);
        let end = Some(start + scenario.duration);

        let early = at_once(timeline.step(&server, start, end)).await;
        server.clock().advance(11 * MINUTE);
        let due = at_once(timeline.step(&server, start, end)).await;

        assert_eq!(early, None, "nothing is due at the start");
        assert_eq!(due, Some(true));
        assert!(!server.is_mx_up("mx2"));
        assert_eq!(timeline.current(), "at 10m");
    }

    #[tokio::test]
    async fn the_end_stops_the_timeline_and_closes_the_outages() {
        let (scenario, server, start) = setup();
        let mut timeline = Timeline::new(&scenario, &server);
        let end = start + 20 * MINUTE;

        server.clock().advance(25 * MINUTE);
        let first = at_once(timeline.step(&server, start, Some(end))).await;
        let second = at_once(timeline.step(&server, start, Some(end))).await;

        assert_eq!(first, Some(true));
        assert_eq!(second, Some(false), "the 30m phase is after the end");
        assert!(!server.is_mx_up("mx2"), "the 30m phase was not played");
        // The outage begins when the phase was played: the clock had jumped to 25m.
        let played = start + 25 * MINUTE;
        assert_eq!(
            timeline.outages(end),
            [Outage::new("mx2", played, Some(end))]
        );
    }

    #[tokio::test]
    async fn without_an_end_the_steps_stop_after_the_last_phase() {
        let (scenario, server, start) = setup();
        let mut timeline = Timeline::new(&scenario, &server);

        server.clock().advance(2 * 60 * MINUTE);
        let mut steps = Vec::new();
        while let Some(true) = at_once(timeline.step(&server, start, None)).await {
            steps.push(timeline.current());
        }

        assert_eq!(steps, ["at 10m", "at 30m"]);
        assert!(server.is_mx_up("mx2"));
    }
}
