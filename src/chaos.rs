//! Faults: what qqmx does to a connection besides answering it, for chaos scenarios.
//!
//! A [`Fault`] fires at a stage (before the reply to that stage's command) on chosen MX
//! hosts, with a probability drawn from the seeded generator. [`Faults`] holds the faults
//! in force and decides; the session carries the decision out. Nothing here touches a
//! socket.
//!
//! Fault delays and link speeds are real time, not the scenario's virtual time: they are
//! about the client's socket timeouts, which are real.
//!
//! Greylisting (`451` for the first attempts of each sender, recipient and IP) is not
//! something QQ has been seen to do; it is here because senders must survive it elsewhere.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::units::{Stage, duration_text};

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FaultKind {
    /// Wait `delay` before the reply.
    Tarpit,
    /// Carry the session at `bytes_per_second`, both ways.
    SlowLink,
    /// Close the connection without a reply.
    Close,
    /// Answer `421 ... Service not available, closing transmission channel` and close.
    Unavailable,
    /// Reset the connection (TCP RST).
    Reset,
    /// Answer nothing and keep the connection open until the client gives up (or the
    /// idle timeout closes it).
    Stall,
    /// Fail the TLS handshake after `220 Ready to start TLS`.
    TlsFailure,
    /// Answer RCPT with a `451` for the first `attempts` tries of each (IP, sender,
    /// recipient). Not seen from QQ.
    Greylist,
}

impl FaultKind {
    /// The snake_case name used in scenarios and events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tarpit => "tarpit",
            Self::SlowLink => "slow_link",
            Self::Close => "close",
            Self::Unavailable => "unavailable",
            Self::Reset => "reset",
            Self::Stall => "stall",
            Self::TlsFailure => "tls_failure",
            Self::Greylist => "greylist",
        }
    }
}

/// One fault and where it applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Fault {
    /// What it does.
    pub kind: FaultKind,
    /// Before the reply to this stage's command; unset means at connect. (`slow_link`
    /// applies to whole sessions, `tls_failure` to STARTTLS and `greylist` to RCPT.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// The chance that it fires at each opportunity (1: always).
    #[serde(default = "always")]
    pub probability: f64,
    /// The MX hosts it applies to; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mx: Vec<String>,
    /// `tarpit`: how long to wait (real time).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_text::option"
    )]
    pub delay: Option<Duration>,
    /// `slow_link`: bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<u64>,
    /// `greylist`: attempts refused before one passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

fn always() -> f64 {
    1.0
}

impl Fault {
    /// A fault of `kind` at connect, always, on every MX host.
    pub fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            stage: None,
            probability: 1.0,
            mx: Vec::new(),
            delay: None,
            bytes_per_second: None,
            attempts: None,
        }
    }

    /// The same fault at `stage`.
    #[must_use]
    pub fn at(mut self, stage: Stage) -> Self {
        self.stage = Some(stage);
        self
    }

    /// Checks that the fields fit the kind.
    ///
    /// # Errors
    ///
    /// A [`FaultError`] saying what is wrong.
    pub fn check(&self) -> Result<(), FaultError> {
        if !(0.0..=1.0).contains(&self.probability) {
            return Err(FaultError::Probability {
                kind: self.kind,
                probability: self.probability,
            });
        }
        match self.kind {
            FaultKind::Tarpit if self.delay.is_none() => Err(FaultError::NeedsDelay),
            FaultKind::SlowLink if self.bytes_per_second.is_none_or(|b| b == 0) => {
                Err(FaultError::NeedsSpeed)
            }
            FaultKind::Greylist if self.attempts.is_none_or(|a| a == 0) => {
                Err(FaultError::NeedsAttempts)
            }
            FaultKind::Greylist if self.stage.is_some_and(|s| s != Stage::Rcpt) => {
                Err(FaultError::GreylistStage)
            }
            _ => Ok(()),
        }
    }

    fn applies(&self, mx: &str) -> bool {
        self.mx.is_empty() || self.mx.iter().any(|m| m == mx)
    }
}

/// Why a [`Fault`]'s fields do not fit its kind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FaultError {
    /// The probability is outside 0..=1.
    #[error("{}: probability {probability} is not from 0 to 1", kind.name())]
    Probability {
        /// The fault's kind.
        kind: FaultKind,
        /// The probability given.
        probability: f64,
    },
    /// A tarpit without a delay.
    #[error("tarpit: needs a `delay` such as \"30s\"")]
    NeedsDelay,
    /// A slow link without a speed.
    #[error("slow_link: needs `bytes_per_second` above 0")]
    NeedsSpeed,
    /// Greylisting without a number of attempts.
    #[error("greylist: needs `attempts` of 1 or more")]
    NeedsAttempts,
    /// Greylisting at another stage than RCPT.
    #[error("greylist: applies at `rcpt` only")]
    GreylistStage,
}

/// What the session does before a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Wait, then answer.
    Delay(Duration),
    /// Close without a reply.
    Close,
    /// Answer 421 and close.
    Unavailable,
    /// Reset the connection.
    Reset,
    /// Answer nothing until the client gives up.
    Stall,
}

/// The greylist remembers at most this many triplets; the oldest half goes beyond.
const GREYLIST_CAP: usize = 100_000;

/// The faults in force and the generator their draws come from.
#[derive(Debug)]
pub struct Faults {
    list: Vec<Fault>,
    rng: StdRng,
    /// Attempts seen per (IP, sender, recipient), with the order they were first seen.
    greylist: HashMap<(IpAddr, String, String), (u32, u64)>,
    seen: u64,
}

impl Faults {
    /// No faults; draws seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            list: Vec::new(),
            rng: StdRng::seed_from_u64(seed ^ 0xC4A0_5EED),
            greylist: HashMap::new(),
            seen: 0,
        }
    }

    /// Replaces the faults in force.
    pub fn set(&mut self, faults: Vec<Fault>) {
        self.list = faults;
    }

    /// The faults in force.
    pub fn list(&self) -> &[Fault] {
        &self.list
    }

    fn fires(&mut self, i: usize) -> bool {
        let p = self.list[i].probability;
        p >= 1.0 || (p > 0.0 && self.rng.random_bool(p))
    }

    /// What to do before answering the command of `stage` (or greeting, at connect) on
    /// `mx`: the first fault that fires.
    pub fn before_reply(&mut self, stage: Stage, mx: &str) -> Option<(FaultKind, Action)> {
        for i in 0..self.list.len() {
            let fault = &self.list[i];
            if fault.stage.unwrap_or(Stage::Connect) != stage || !fault.applies(mx) {
                continue;
            }
            let action = match fault.kind {
                FaultKind::Tarpit => Action::Delay(fault.delay.unwrap_or_default()),
                FaultKind::Close => Action::Close,
                FaultKind::Unavailable => Action::Unavailable,
                FaultKind::Reset => Action::Reset,
                FaultKind::Stall => Action::Stall,
                FaultKind::SlowLink | FaultKind::TlsFailure | FaultKind::Greylist => continue,
            };
            let kind = fault.kind;
            if self.fires(i) {
                return Some((kind, action));
            }
        }
        None
    }

    /// The link speed of a new session on `mx`, if a slow link fires.
    pub fn link_speed(&mut self, mx: &str) -> Option<u64> {
        for i in 0..self.list.len() {
            let fault = &self.list[i];
            if fault.kind != FaultKind::SlowLink || !fault.applies(mx) {
                continue;
            }
            let speed = fault.bytes_per_second;
            if self.fires(i) {
                return speed;
            }
        }
        None
    }

    /// Whether the TLS handshake after STARTTLS on `mx` fails.
    pub fn tls_fails(&mut self, mx: &str) -> bool {
        (0..self.list.len()).any(|i| {
            self.list[i].kind == FaultKind::TlsFailure && self.list[i].applies(mx) && self.fires(i)
        })
    }

    /// Whether this RCPT is greylisted: counts the attempt of (`ip`, `from`, `rcpt`) and
    /// answers true while it is within a greylist fault's `attempts`.
    pub fn greylisted(&mut self, mx: &str, ip: IpAddr, from: &str, rcpt: &str) -> bool {
        let Some(i) = self
            .list
            .iter()
            .position(|f| f.kind == FaultKind::Greylist && f.applies(mx))
        else {
            return false;
        };
        let attempts = self.list[i].attempts.unwrap_or(1);
        if self.greylist.len() >= GREYLIST_CAP {
            let median = self.seen.saturating_sub(GREYLIST_CAP as u64 / 2);
            self.greylist.retain(|_, (_, first)| *first >= median);
        }
        self.seen += 1;
        let seen = self.seen;
        let key = (ip, from.to_ascii_lowercase(), rcpt.to_ascii_lowercase());
        let entry = self.greylist.entry(key).or_insert((0, seen));
        entry.0 += 1;
        entry.0 <= attempts && self.fires(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip() -> IpAddr {
        IpAddr::from([127, 0, 0, 2])
    }

    #[test]
    fn a_fault_fires_at_its_stage_on_its_hosts_only() {
        let mut faults = Faults::new(1);
        let mut close = Fault::new(FaultKind::Close).at(Stage::Rcpt);
        close.mx = vec!["mx1".into()];
        faults.set(vec![close]);
        assert_eq!(faults.before_reply(Stage::Mail, "mx1"), None);
        assert_eq!(faults.before_reply(Stage::Rcpt, "mx2"), None);
        assert_eq!(
            faults.before_reply(Stage::Rcpt, "mx1"),
            Some((FaultKind::Close, Action::Close))
        );
    }

    #[test]
    fn draws_are_seeded() {
        let run = |seed| {
            let mut faults = Faults::new(seed);
            let mut reset = Fault::new(FaultKind::Reset);
            reset.probability = 0.5;
            faults.set(vec![reset]);
            (0..64)
                .map(|_| faults.before_reply(Stage::Connect, "mx1").is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let fired = run(7).into_iter().filter(|f| *f).count();
        assert!((16..48).contains(&fired), "{fired}");
    }

    #[test]
    fn greylisting_passes_after_the_attempts() {
        let mut faults = Faults::new(1);
        let mut grey = Fault::new(FaultKind::Greylist).at(Stage::Rcpt);
        grey.attempts = Some(2);
        faults.set(vec![grey]);
        let tries: Vec<bool> = (0..3)
            .map(|_| faults.greylisted("mx1", ip(), "a@example.org", "10001@qq.com"))
            .collect();
        assert_eq!(tries, [true, true, false]);
        assert!(faults.greylisted("mx1", ip(), "a@example.org", "10002@qq.com"));
    }

    #[test]
    fn fields_must_fit_the_kind() {
        assert!(Fault::new(FaultKind::Tarpit).check().is_err());
        assert!(Fault::new(FaultKind::SlowLink).check().is_err());
        let mut grey = Fault::new(FaultKind::Greylist);
        grey.attempts = Some(1);
        assert!(grey.clone().at(Stage::Mail).check().is_err());
        assert!(grey.at(Stage::Rcpt).check().is_ok());
        let mut odd = Fault::new(FaultKind::Close);
        odd.probability = 1.5;
        assert!(odd.check().is_err());
    }
}
