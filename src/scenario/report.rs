//! The report of a scenario run: readable text, JSON and JUnit XML.

use std::fmt;
use std::process::ExitStatus;
use std::time::SystemTime;

use serde::Serialize;

use super::{Outcome, Scenario};
use crate::clock::Rfc3339;
use crate::store::{Event, EventKind, Message};

/// What a run of a scenario showed.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// Its seed: the same seed replays the same random draws.
    pub seed: u64,
    /// Whether every expectation held.
    pub passed: bool,
    /// One per expectation, in order.
    pub outcomes: Vec<Outcome>,
    /// When the run began, by the server's (virtual) clock.
    #[serde(with = "crate::clock::rfc3339")]
    pub started: SystemTime,
    /// When it ended.
    #[serde(with = "crate::clock::rfc3339")]
    pub ended: SystemTime,
    /// Messages accepted.
    pub accepted: usize,
    /// Refusals sent (4xx and 5xx replies).
    pub refused: usize,
    /// The sender's exit code, when there was a sender and it exited with one.
    pub exit_code: Option<i32>,
}

impl Report {
    /// The report of a run of `scenario` that ended with `outcomes`.
    pub fn new(
        scenario: &Scenario,
        outcomes: Vec<Outcome>,
        started: SystemTime,
        ended: SystemTime,
        messages: &[Message],
        events: &[Event],
        status: Option<ExitStatus>,
    ) -> Self {
        let refused = events
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::Reply(r) if !r.is_positive()))
            .count();
        Self {
            scenario: scenario.name.clone(),
            seed: scenario.seed,
            passed: outcomes.iter().all(|o| o.passed),
            outcomes,
            started,
            ended,
            accepted: messages.len(),
            refused,
            exit_code: status.and_then(|s| s.code()),
        }
    }

    /// The report as JSON (feature `control`, which brings serde_json).
    #[cfg(feature = "control")]
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serializing it cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as a JUnit XML test suite: one test case per expectation.
    pub fn to_junit_xml(&self) -> String {
        let failures = self.outcomes.iter().filter(|o| !o.passed).count();
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        xml.push_str(&format!(
            "<testsuites>\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" timestamp=\"{}\">\n",
            escape(&self.scenario),
            self.outcomes.len(),
            Rfc3339(self.started),
        ));
        xml.push_str(&format!(
            "    <properties>\n      <property name=\"seed\" value=\"{}\"/>\n    </properties>\n",
            self.seed
        ));
        for outcome in &self.outcomes {
            let name = escape(&outcome.name);
            let class = escape(&self.scenario);
            if outcome.passed {
                xml.push_str(&format!(
                    "    <testcase classname=\"{class}\" name=\"{name}\">\n      <system-out>{}</system-out>\n    </testcase>\n",
                    escape(&outcome.seen)
                ));
            } else {
                xml.push_str(&format!(
                    "    <testcase classname=\"{class}\" name=\"{name}\">\n      <failure message=\"{}\">{} (replay with seed {})</failure>\n    </testcase>\n",
                    escape(&outcome.seen),
                    escape(&outcome.seen),
                    self.seed
                ));
            }
        }
        xml.push_str("  </testsuite>\n</testsuites>\n");
        xml
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario {}: {} ({} accepted, {} refused, {} to {})",
            self.scenario,
            if self.passed { "passed" } else { "FAILED" },
            self.accepted,
            self.refused,
            Rfc3339(self.started),
            Rfc3339(self.ended),
        )?;
        for o in &self.outcomes {
            let mark = if o.passed { "ok  " } else { "FAIL" };
            writeln!(f, "  {mark} {}: {}", o.name, o.seen)?;
        }
        if let Some(code) = self.exit_code {
            writeln!(f, "  the sender exited with {code}")?;
        }
        if !self.passed {
            writeln!(f, "  replay with seed {}", self.seed)?;
        }
        Ok(())
    }
}

/// Escapes text for XML attributes and content.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'\u{1}</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"
        );
    }
}
