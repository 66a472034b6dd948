//! The result of checking expectations: one [`Outcome`] each, gathered in a [`Report`]
//! whose text is the same wherever the expectations were checked (`qqmx run`, the
//! embedded server's `verify` and drop, a `Remote`).

use std::fmt;

use serde::{Deserialize, Serialize};

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
            "qqmx: {} of {total} expectations held",
            total - self.failures()
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
            "qqmx: 1 of 1 expectations held\n  ✓ ok   a: b\n"
        );
        assert_eq!(held.into_result(), Ok(()));
        assert_eq!(
            Report::new(3, Vec::new()).to_string(),
            "qqmx: 0 of 0 expectations held\n"
        );
    }
}
