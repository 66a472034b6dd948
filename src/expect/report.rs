//! The result of checking expectations: one [`Outcome`] each, gathered in a [`Report`]
//! whose text is the same wherever the expectations were checked (`qqmx run`, the
//! embedded server's `verify` and drop, a `Remote`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::reply::ReplyKind;
use crate::units::Window;

/// The result of one expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Outcome {
    /// The expectation's name.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was seen, in words (`"12 accepted, expected between 10 and 20"`); when it
    /// failed, the worst offender first.
    pub seen: String,
}

impl Outcome {
    /// An outcome, for callers that check something of their own.
    pub fn new(name: impl Into<String>, passed: bool, seen: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed,
            seen: seen.into(),
        }
    }
}

/// Replies of one kind and code sent in a run, and, for refusals, the rule and key of
/// the policy decision behind them: what [`reply_counts`](super::reply_counts) gives.
///
/// Its text names the count, the kind in backquotes, the code, and the rule and key
/// when there are some:
///
/// ```text
/// 50 `ip_frequency` 550 by quota.ip_messages (minute) on ip:127.0.0.1
/// 100 `greeting` 220
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplyCount {
    /// The reply kind (`ip_frequency`).
    pub kind: ReplyKind,
    /// Its code.
    pub code: u16,
    /// The rule that refused (`quota.ip_messages`); absent for replies no policy rule
    /// decided (a greeting, a `250`, a fault's reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The window whose limit was crossed, for a quota's refusals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// The key the rule matched (`ip:127.0.0.1`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// How many.
    pub count: u64,
}

impl fmt::Display for ReplyCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}` {}", self.count, self.kind, self.code)?;
        if let Some(rule) = &self.rule {
            write!(f, " by {rule}")?;
        }
        if let Some(window) = self.window {
            // The JSON's names: the day's zone is UTC+8 as always.
            let window = match window {
                Window::Minute => "minute",
                Window::Hour => "hour",
                Window::Day => "day",
            };
            write!(f, " ({window})")?;
        }
        if let Some(key) = &self.key {
            write!(f, " on {key}")?;
        }
        Ok(())
    }
}

/// What checking a list of expectations found: one [`Outcome`] each, in order, and the
/// seed of the run they were checked against.
///
/// Its text is one line of totals, one line per expectation (`✓ ok` or `✗ FAIL`, its
/// name, what was seen) and, when one failed, the seed that replays the run:
///
/// ```text
/// qqmx: 1 of 2 expectations held
///   ✓ ok   accepted at least 1: 3 accepted, expected at least 1
///   ✗ FAIL respects blocks (at most 0 attempts while blocked): 2 attempts from ...
///   replay with seed 7
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// The seed of the run: the same seed replays the same random draws.
    pub seed: u64,
    /// Whether every expectation held.
    pub passed: bool,
    /// One per expectation, in order.
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// The report of `outcomes`, from a run with `seed`.
    pub fn new(seed: u64, outcomes: Vec<Outcome>) -> Self {
        Self {
            seed,
            passed: outcomes.iter().all(|o| o.passed),
            outcomes,
        }
    }

    /// How many expectations failed.
    pub fn failures(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.passed).count()
    }

    /// `Ok` when every expectation held, else the report as the error.
    ///
    /// # Errors
    ///
    /// The report itself, when an expectation failed.
    pub fn into_result(self) -> Result<(), Self> {
        if self.passed { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.outcomes.len();
        writeln!(
            f,
            "qqmx: {} of {} held",
            total - self.failures(),
            super::words::plural(total, "expectation")
        )?;
        for o in &self.outcomes {
            let mark = if o.passed { "✓ ok  " } else { "✗ FAIL" };
            writeln!(f, "  {mark} {}: {}", o.name, o.seen)?;
        }
        if !self.passed {
            writeln!(f, "  replay with seed {}", self.seed)?;
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_marks_each_expectation_and_names_the_seed_on_failure() {
        let report = Report::new(
            99,
            vec![
                Outcome::new("accepted at least 1", true, "3 accepted"),
                Outcome::new("every message passes DMARC", false, "1 of 3 do not"),
            ],
        );
        assert_eq!(
            report.to_string(),
            "qqmx: 1 of 2 expectations held\n  \
             ✓ ok   accepted at least 1: 3 accepted\n  \
             ✗ FAIL every message passes DMARC: 1 of 3 do not\n  \
             replay with seed 99\n"
        );
        assert_eq!(report.failures(), 1);
        assert!(report.clone().into_result().is_err());

        let held = Report::new(99, vec![Outcome::new("a", true, "b")]);
        assert_eq!(
            held.to_string(),
            "qqmx: 1 of 1 expectation held\n  ✓ ok   a: b\n"
        );
        assert_eq!(held.into_result(), Ok(()));
        assert_eq!(
            Report::new(3, Vec::new()).to_string(),
            "qqmx: 0 of 0 expectations held\n"
        );
    }
}
