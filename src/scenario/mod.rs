//! Chaos scenarios: the serde model of a scenario file and its validation.
//!
//! A scenario is a TOML file (the library is in `scenarios/`) that describes a timeline
//! of conditions QQ's MX may impose on a sender (limits that tighten, a blacklisting, an
//! MX host that goes away, a slow link) and what a well-behaved sender does about them.
//! `qqmx run SCENARIO -- COMMAND...` plays one against a real sender and checks the
//! expectations against the event log; `qqmx check` validates files. Nothing here
//! behaves: [`expect`](crate::expect) evaluates expectations over events, the runner
//! plays timelines, and [`report`] writes what a run showed.
//!
//! ```
//! let scenario = qqmx::scenario::Scenario::from_toml(r#"
//!     name = "minute-limit"
//!     duration = "10m"
//!     [clock]
//!     speed = 600.0
//!     [config.quotas.ip_messages]
//!     minute = { limit = 5, block = "10m" }
//!     [[phase]]
//!     at = "5m"
//!     mx_down = ["mx1"]
//!     [[expect]]
//!     kind = "accepted"
//!     min = 1
//! "#).unwrap();
//! assert_eq!(scenario.phases[0].mx_down, ["mx1"]);
//! ```

pub mod html;
pub mod report;
pub mod timeline;

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::chaos::Fault;
use crate::clock::{Clock, parse_rfc3339};
use crate::config::{Config, ConfigError, DEFAULT_START, Problem, parse_toml};
use crate::expect::{ExpectError, Expectation};
use crate::units::{IpNet, QuotaName, Window, duration_text};

pub use report::RunReport;

/// One scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Scenario {
    /// A short name, used in reports (`ip-frequency-minute`).
    pub name: String,
    /// What it reproduces, in a sentence or two.
    #[serde(default)]
    pub description: String,
    /// Seed of every random decision; printed when an expectation fails.
    #[serde(default)]
    pub seed: u64,
    /// How long the timeline lasts, in virtual time (`"30m"`, `"21d"`).
    #[serde(with = "duration_text")]
    pub duration: Duration,
    /// How time passes.
    #[serde(default)]
    pub clock: ScenarioClock,
    /// The qqmx config it starts from, with the keys of a `qqmx.toml`.
    #[serde(default)]
    pub config: Config,
    /// Hints for the reference senders in `examples/senders/`: what to send. A real
    /// sender under test ignores them.
    #[serde(default)]
    pub workload: Workload,
    /// Faults in force from the start.
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
    /// The timeline, in order of `at`.
    #[serde(default, rename = "phase")]
    pub phases: Vec<Phase>,
    /// What a well-behaved sender does.
    #[serde(default, rename = "expect")]
    pub expectations: Vec<Expectation>,
}

/// How time passes in a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ScenarioClock {
    /// Virtual seconds per real second: 1 is real time, 3600 an hour a second.
    pub speed: f64,
    /// Where virtual time starts, RFC 3339.
    pub start: Option<String>,
}

impl Default for ScenarioClock {
    fn default() -> Self {
        Self {
            speed: 1.0,
            start: None,
        }
    }
}

/// What the reference senders send; see `examples/senders/README.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Workload {
    /// Messages to send in all.
    pub messages: u64,
    /// Messages per virtual minute the sender aims at (it may go slower, never faster).
    pub per_minute: u64,
    /// The envelope sender and `From:`.
    pub from: String,
    /// Recipients, used in turn; empty means `10001@qq.com`, `10002@qq.com`, ...
    pub recipients: Vec<String>,
    /// How many numbered recipients when `recipients` is empty.
    pub recipient_count: u64,
    /// DKIM-sign with this key (a path relative to the scenario file) and selector.
    pub dkim_key: Option<String>,
    /// The DKIM selector.
    pub dkim_selector: Option<String>,
    /// The body of every message.
    pub body: String,
    /// The envelope sender and `From:` the naive reference sender uses instead of
    /// `from` (to forge a qq.com sender, say).
    pub naive_from: Option<String>,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            messages: 10,
            per_minute: 10,
            from: "news@example.org".into(),
            recipients: Vec::new(),
            recipient_count: 10,
            dkim_key: None,
            dkim_selector: None,
            body: "Hello from a qqmx scenario.".into(),
            naive_from: None,
        }
    }
}

/// One step of the timeline: the changes made at `at`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Phase {
    /// Virtual time since the start (`"10m"`).
    #[serde(with = "duration_text")]
    pub at: Duration,
    /// A label for reports.
    pub name: String,
    /// Quota tiers to set.
    pub limits: Vec<SetLimit>,
    /// IPs or senders to blacklist.
    pub blacklist: Vec<Listing>,
    /// IPs or senders to lift from the blacklist.
    pub unblacklist: Vec<Listing>,
    /// Recipients that whitelist a sender.
    pub whitelist: Vec<WhitelistEntry>,
    /// Complaints about an IP.
    pub complain: Vec<Complaint>,
    /// MX hosts that stop accepting connections (their port refuses).
    pub mx_down: Vec<String>,
    /// MX hosts that come back.
    pub mx_up: Vec<String>,
    /// Replace the faults in force with these (an empty list with `clear_faults`).
    pub faults: Option<Vec<Fault>>,
    /// Remove every fault.
    pub clear_faults: bool,
}

/// A quota tier to set; `limit` absent removes the tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SetLimit {
    /// The quota.
    pub quota: QuotaName,
    /// The window.
    pub window: Window,
    /// The new limit.
    pub limit: Option<u64>,
}

/// An IP (or CIDR range) or a sender (address or domain) to (un)blacklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Listing {
    /// An IP or CIDR range.
    pub ip: Option<String>,
    /// A sender address or domain.
    pub sender: Option<String>,
    /// How long, in virtual time; for good when absent.
    #[serde(default, rename = "for", with = "duration_text::option")]
    pub lasting: Option<Duration>,
}

/// A recipient whitelisting a sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WhitelistEntry {
    /// The QQ user.
    pub recipient: String,
    /// The sender address or domain they trust.
    pub sender: String,
}

/// Complaints about mail from an IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Complaint {
    /// The IP.
    pub ip: std::net::IpAddr,
    /// The sender, if known.
    pub sender: Option<String>,
    /// How many.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

impl Scenario {
    /// Reads and validates a scenario file.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file, line and key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates a scenario held in a string.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the line and key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, Path::new("<inline>"))
    }

    /// Parses and validates a scenario held in a string; errors name `path`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the line and key.
    pub fn parse_named(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::parse(text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        parse_toml(text, path, Scenario::validate)
    }

    /// Checks what serde cannot: the first problem found.
    fn validate(&self) -> Result<(), Problem> {
        let err = |t: &str, k: &str, m: String| Err(Problem::new(t, k, m));
        if self.name.trim().is_empty() {
            return err("", "name", "a scenario needs a name".into());
        }
        if self.duration.is_zero() {
            return err("", "duration", "must be longer than zero".into());
        }
        if !(self.clock.speed.is_finite() && self.clock.speed > 0.0) {
            return err("clock", "speed", "must be a positive number".into());
        }
        if let Some(start) = &self.clock.start
            && parse_rfc3339(start).is_none()
        {
            return err(
                "clock",
                "start",
                format!("`{start}` is not an RFC 3339 time such as 2025-06-02T09:00:00+08:00"),
            );
        }
        if let Err(e) = self.config.check()
            && let ConfigError::Invalid { key, message, .. } = e
        {
            let (table, key) = key.rsplit_once('.').unwrap_or(("", &key));
            let table = if table.is_empty() {
                "config".to_owned()
            } else {
                format!("config.{table}")
            };
            return Err(Problem::new(&table, key, message));
        }
        let listeners = &self.config.listeners.0;
        let mut last = Duration::ZERO;
        for (n, phase) in self.phases.iter().enumerate() {
            let err = |t: &str, k: &str, m: String| Err(Problem::nth(t, n, k, m));
            if phase.at < last {
                return err("phase", "at", "phases must be in order of `at`".into());
            }
            if phase.at > self.duration {
                return err(
                    "phase",
                    "at",
                    format!(
                        "`{}` is after the end of the scenario (`duration`)",
                        duration_text::Text(phase.at)
                    ),
                );
            }
            last = phase.at;
            for mx in phase.mx_down.iter().chain(&phase.mx_up) {
                if !listeners.contains_key(mx) {
                    return err(
                        "phase",
                        if phase.mx_down.contains(mx) {
                            "mx_down"
                        } else {
                            "mx_up"
                        },
                        format!("no listener called `{mx}` in [config.listeners]"),
                    );
                }
            }
            for listing in phase.blacklist.iter().chain(&phase.unblacklist) {
                if listing.ip.is_some() == listing.sender.is_some() {
                    return err(
                        "phase",
                        "blacklist",
                        "each entry names exactly one of `ip` and `sender`".into(),
                    );
                }
                if let Some(ip) = &listing.ip
                    && let Err(e) = ip.parse::<IpNet>()
                {
                    return err("phase", "blacklist", e.to_string());
                }
            }
            for fault in phase.faults.iter().flatten() {
                fault
                    .check()
                    .or_else(|e| err("phase", "faults", e.to_string()))?;
            }
        }
        for (n, fault) in self.faults.iter().enumerate() {
            fault
                .check()
                .map_err(|e| Problem::nth("fault", n, "kind", e.to_string()))?;
        }
        for (n, e) in self.expectations.iter().enumerate() {
            e.check().map_err(|error| {
                let key = match error {
                    ExpectError::Bounds { .. } => "min",
                    ExpectError::Delays { .. } => "min_delay",
                    ExpectError::NoRetryAfter => "after",
                    _ => "kind",
                };
                Problem::nth("expect", n, key, error.to_string())
            })?;
        }
        Ok(())
    }

    /// `ip-frequency-minute, 1 phase, 3 expectations`: what `qqmx check` says of a
    /// valid file.
    pub fn summary(&self) -> String {
        let count = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        format!(
            "{}, {}, {}",
            self.name,
            count(self.phases.len(), "phase"),
            count(self.expectations.len(), "expectation")
        )
    }

    /// Where virtual time starts.
    pub fn start(&self) -> SystemTime {
        let start = self.clock.start.as_deref().unwrap_or(DEFAULT_START);
        parse_rfc3339(start).expect("the start is checked when the scenario is parsed")
    }

    /// A clock for a run of this scenario: held at the scenario's start until
    /// [`Clock::release`] sets it running (the system clock when the scenario sets neither
    /// a start nor a speed).
    pub fn make_clock(&self) -> Clock {
        if (self.clock.speed - 1.0).abs() < f64::EPSILON && self.clock.start.is_none() {
            Clock::system()
        } else {
            Clock::scaled_held(self.start(), self.clock.speed)
        }
    }
}
