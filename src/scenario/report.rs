//! The report of a scenario run: readable text ([`Display`](fmt::Display)), JSON and
//! JUnit XML.
//!
//! [`RunReport`] is plain data and `Serialize`: the JSON form is serde's.
//! [`RunReport::to_json`] needs serde_json, which the crate only brings with the
//! `control` (or `remote`) feature, so it exists only then (`qqmx run` has it); a caller
//! without either serializes the report with the serializer it has. The text and the XML
//! are written by hand and need nothing. The text is a line of totals, the lines of
//! the replies that occurred, then the expectations' [`Report`], as the embedded
//! server's `verify` gives it.

use std::fmt;
use std::process::ExitStatus;
use std::time::SystemTime;

use serde::Serialize;

use super::Scenario;
use super::timeline::Timeline;
use crate::clock::Rfc3339;
use crate::event::{Event, EventKind};
use crate::expect::{Outcome, ReplyCount, Report, reply_counts};
use crate::store::Message;

/// What a run of a scenario showed: the expectations' [`Report`] (its seed, whether it
/// passed, its outcomes) with the run's times (virtual and wall-clock), counts, every
/// reply sent (by kind, code, and the rule and key that refused) and the sender's exit
/// code.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RunReport {
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
    /// When it ended, by the server's (virtual) clock.
    #[serde(with = "crate::clock::rfc3339")]
    pub ended: SystemTime,
    /// When the run began by the wall clock, when the caller knows
    /// ([`wall_clock`](Self::wall_clock); `qqmx run` does).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::clock::rfc3339::option"
    )]
    pub wall_started: Option<SystemTime>,
    /// How long the run took by the wall clock, in seconds, when the caller knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
    /// Messages accepted.
    pub accepted: usize,
    /// Refusals sent (replies of 400 and more).
    pub rejected: usize,
    /// Every reply sent, by kind, code, and the rule and key of the decision that
    /// refused it ([`reply_counts`]): escalations (a block, then `connection_denied`)
    /// show as groups of their own.
    pub replies: Vec<ReplyCount>,
    /// The sender's exit code, when there was a sender and it exited with one (not when
    /// a signal ended it).
    pub exit_code: Option<i32>,
    /// Per minute, with blocks, outages and phases: what the HTML report draws
    /// ([`to_html`](Self::to_html)). Not in the JSON.
    #[serde(skip)]
    pub timeline: Timeline,
}

impl RunReport {
    /// The report of a run of `scenario` whose expectations gave `report`.
    pub fn new(
        scenario: &Scenario,
        report: Report,
        started: SystemTime,
        ended: SystemTime,
        messages: &[Message],
        events: &[Event],
        status: Option<ExitStatus>,
    ) -> Self {
        let rejected = events
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::Reply(r) if r.code >= 400))
            .count();
        Self {
            scenario: scenario.name.clone(),
            seed: report.seed,
            passed: report.passed,
            outcomes: report.outcomes,
            started,
            ended,
            wall_started: None,
            wall_seconds: None,
            accepted: messages.len(),
            rejected,
            replies: reply_counts(events),
            exit_code: status.and_then(|s| s.code()),
            timeline: Timeline::new(scenario, events, started, ended),
        }
    }

    /// The same report, with the run's start and end by the wall clock (JUnit's
    /// `timestamp` and `time`).
    #[must_use]
    pub fn wall_clock(self, started: SystemTime, ended: SystemTime) -> Self {
        Self {
            wall_started: Some(started),
            wall_seconds: Some(
                ended
                    .duration_since(started)
                    .unwrap_or_default()
                    .as_secs_f64(),
            ),
            ..self
        }
    }

    /// The refusals among [`replies`](Self::replies), largest group first.
    pub fn refusals(&self) -> Vec<&ReplyCount> {
        let mut refusals: Vec<&ReplyCount> =
            self.replies.iter().filter(|r| r.code >= 400).collect();
        refusals.sort_by_key(|r| std::cmp::Reverse(r.count));
        refusals
    }

    /// The replies below 400 on one line, each kind and code once with its total.
    fn other_replies(&self) -> String {
        let mut totals: Vec<(String, u64)> = Vec::new();
        for r in self.replies.iter().filter(|r| r.code < 400) {
            let name = format!("`{}` {}", r.kind, r.code);
            match totals.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => *count += r.count,
                None => totals.push((name, r.count)),
            }
        }
        totals
            .iter()
            .map(|(name, count)| format!("{count} {name}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The replies in lines: the others on one, each group of refusals on its own.
    fn reply_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let others = self.other_replies();
        if !others.is_empty() {
            lines.push(format!("replies: {others}"));
        }
        lines.extend(self.refusals().iter().map(|r| format!("refused: {r}")));
        lines
    }

    /// How many expectations failed.
    pub fn failures(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.passed).count()
    }

    /// The expectations' report: the same text `verify` of the embedded server gives for
    /// the same events.
    pub fn expectations(&self) -> Report {
        Report::new(self.seed, self.outcomes.clone())
    }

    /// The report as pretty-printed JSON: the fields of [`RunReport`], times in RFC 3339.
    #[cfg(any(feature = "control", feature = "remote"))]
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serializing it cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as a JUnit XML document: a `<testsuite>` named after the scenario, one
    /// `<testcase>` per expectation, a `<failure>` (message: what was seen) for each that
    /// failed, the seed, counts, virtual times, exit code and the count of each reply
    /// kind (`replies.ip_frequency`) as `<property>`s, and the replies by rule and key in
    /// the suite's `<system-out>`. With the wall-clock times
    /// ([`wall_clock`](Self::wall_clock)), the suites' `time` is the seconds the run
    /// took and the suite's `timestamp` its wall-clock start in UTC, without a zone as
    /// the JUnit schema wants; the virtual start and end are the properties
    /// `virtual_started` and `virtual_ended`.
    pub fn to_junit_xml(&self) -> String {
        let suite = escape(&self.scenario);
        let time = self
            .wall_seconds
            .map_or(String::new(), |t| format!(" time=\"{t:.3}\""));
        let timestamp = self.wall_started.map_or(String::new(), |t| {
            format!(" timestamp=\"{}\"", junit_timestamp(t))
        });
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        xml.push_str(&format!(
            "<testsuites name=\"qqmx run\" tests=\"{}\" failures=\"{}\" errors=\"0\"{time}>\n",
            self.outcomes.len(),
            self.failures(),
        ));
        xml.push_str(&format!(
            "  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{}\" errors=\"0\" \
             skipped=\"0\"{time}{timestamp}>\n",
            self.outcomes.len(),
            self.failures(),
        ));
        xml.push_str("    <properties>\n");
        let mut properties = vec![
            ("seed".to_owned(), self.seed.to_string()),
            (
                "virtual_started".to_owned(),
                Rfc3339(self.started).to_string(),
            ),
            ("virtual_ended".to_owned(), Rfc3339(self.ended).to_string()),
            ("accepted".to_owned(), self.accepted.to_string()),
            ("rejected".to_owned(), self.rejected.to_string()),
        ];
        if let Some(code) = self.exit_code {
            properties.push(("exit_code".to_owned(), code.to_string()));
        }
        let mut kinds: Vec<(String, u64)> = Vec::new();
        for r in &self.replies {
            let name = format!("replies.{}", r.kind);
            match kinds.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => *count += r.count,
                None => kinds.push((name, r.count)),
            }
        }
        properties.extend(kinds.into_iter().map(|(n, c)| (n, c.to_string())));
        for (name, value) in properties {
            xml.push_str(&format!(
                "      <property name=\"{name}\" value=\"{}\"/>\n",
                escape(&value)
            ));
        }
        xml.push_str("    </properties>\n");
        let lines = self.reply_lines();
        if !lines.is_empty() {
            xml.push_str(&format!(
                "    <system-out>{}</system-out>\n",
                escape(&lines.join("\n"))
            ));
        }
        for outcome in &self.outcomes {
            let name = escape(&outcome.name);
            let seen = escape(&outcome.seen);
            xml.push_str(&format!(
                "    <testcase classname=\"{suite}\" name=\"{name}\">\n"
            ));
            if outcome.passed {
                xml.push_str(&format!("      <system-out>{seen}</system-out>\n"));
            } else {
                xml.push_str(&format!(
                    "      <failure message=\"{seen}\" type=\"expectation\">{seen}&#10;\
                     replay with seed {}</failure>\n",
                    self.seed
                ));
            }
            xml.push_str("    </testcase>\n");
        }
        xml.push_str("  </testsuite>\n</testsuites>\n");
        xml
    }
}

/// A line with the scenario, whether it passed, its counts, times and the sender's exit
/// code; a line of the replies below 400 and one per group of refusals (its kind, code,
/// rule and key); then the expectations' [`Report`], as `verify` prints it.
impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scenario {}: {} ({} accepted, {} rejected, {} to {}",
            self.scenario,
            if self.passed { "passed" } else { "FAILED" },
            self.accepted,
            self.rejected,
            to_the_second(self.started),
            to_the_second(self.ended),
        )?;
        if let Some(secs) = self.wall_seconds {
            write!(f, " in {secs:.1}s of real time")?;
        }
        write!(f, ")")?;
        match self.exit_code {
            Some(code) => writeln!(f, "; the sender exited with {code}")?,
            None => writeln!(f)?,
        }
        for line in self.reply_lines() {
            writeln!(f, "  {line}")?;
        }
        write!(f, "{}", self.expectations())
    }
}

/// RFC 3339 to the second.
fn to_the_second(t: SystemTime) -> String {
    Rfc3339(t).to_the_second()
}

/// `2025-06-02T01:00:00`: JUnit's `timestamp` (UTC, no zone, no fraction).
fn junit_timestamp(t: SystemTime) -> String {
    let text = to_the_second(t).to_string();
    text.trim_end_matches('Z').to_owned()
}

/// Escapes text for XML (JUnit), HTML and SVG attributes and content: the five markup
/// characters, line breaks and tabs as character references (so that attributes keep
/// them), and the control characters XML 1.0 cannot carry dropped.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            '\u{FFFE}' | '\u{FFFF}' => {}
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    use crate::reply::ReplyKind;

    fn report(outcomes: Vec<Outcome>) -> RunReport {
        let started = UNIX_EPOCH + Duration::from_secs(1_748_826_000);
        RunReport {
            scenario: "blocks <&> \"co\"".into(),
            seed: 99,
            passed: outcomes.iter().all(|o| o.passed),
            outcomes,
            started,
            ended: started + Duration::from_millis(600_250),
            wall_started: None,
            wall_seconds: None,
            timeline: Timeline::default(),
            accepted: 3,
            rejected: 5,
            replies: vec![
                ReplyCount {
                    kind: ReplyKind::Greeting,
                    code: 220,
                    rule: None,
                    window: None,
                    key: None,
                    count: 6,
                },
                ReplyCount {
                    kind: ReplyKind::IpFrequency,
                    code: 550,
                    rule: Some("quota.ip_messages".into()),
                    window: Some(crate::units::Window::Minute),
                    key: Some("ip:127.0.0.1".into()),
                    count: 2,
                },
                ReplyCount {
                    kind: ReplyKind::ConnectionDenied,
                    code: 554,
                    rule: Some("quota.deny_after".into()),
                    window: None,
                    key: Some("ip:127.0.0.1".into()),
                    count: 3,
                },
            ],
            exit_code: Some(0),
        }
        .wall_clock(
            UNIX_EPOCH + Duration::from_secs(1_764_460_800),
            UNIX_EPOCH + Duration::from_millis(1_764_460_812_345),
        )
    }

    fn mixed() -> RunReport {
        report(vec![
            Outcome::new(
                "accepted at least 1",
                true,
                "3 accepted, expected at least 1",
            ),
            Outcome::new(
                "never told <Ip frequency limited> & co",
                false,
                "2 attempts from 127.0.0.1 while ip:127.0.0.1 was blocked until \
                 2025-06-02T01:10:00Z, at most 0 allowed",
            ),
        ])
    }

    #[test]
    fn xml_text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'\u{1}\u{7f}</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;\u{7f}&lt;/a&gt;"
        );
        assert_eq!(escape("two\nlines\tand\r"), "two&#10;lines&#9;and&#13;");
        assert_eq!(escape("✓ 中文"), "✓ 中文");
    }

    #[test]
    fn junit_has_a_case_per_expectation_a_failure_per_failed_one_and_the_seed() {
        let xml = mixed().to_junit_xml();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites "));
        assert!(
            xml.contains(
                "<testsuite name=\"blocks &lt;&amp;&gt; &quot;co&quot;\" tests=\"2\" \
                 failures=\"1\" errors=\"0\" skipped=\"0\" time=\"12.345\" \
                 timestamp=\"2025-11-30T00:00:00\">"
            ),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<testsuites name=\"qqmx run\" tests=\"2\" failures=\"1\" errors=\"0\" \
                 time=\"12.345\">"
            ),
            "{xml}"
        );
        // Virtual time in properties; every reply kind counted, escalations included.
        for property in [
            "<property name=\"virtual_started\" value=\"2025-06-02T01:00:00.000000Z\"/>",
            "<property name=\"virtual_ended\" value=\"2025-06-02T01:10:00.250000Z\"/>",
            "<property name=\"replies.greeting\" value=\"6\"/>",
            "<property name=\"replies.ip_frequency\" value=\"2\"/>",
            "<property name=\"replies.connection_denied\" value=\"3\"/>",
        ] {
            assert!(xml.contains(property), "{property} in {xml}");
        }
        assert!(
            xml.contains(
                "<system-out>replies: 6 `greeting` 220&#10;\
                 refused: 3 `connection_denied` 554 by quota.deny_after on ip:127.0.0.1&#10;\
                 refused: 2 `ip_frequency` 550 by quota.ip_messages (minute) on ip:127.0.0.1\
                 </system-out>"
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<property name=\"seed\" value=\"99\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<property name=\"exit_code\" value=\"0\"/>"),
            "{xml}"
        );
        assert_eq!(xml.matches("<testcase ").count(), 2, "{xml}");
        assert_eq!(xml.matches("</testcase>").count(), 2, "{xml}");
        assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
        assert!(
            xml.contains("name=\"never told &lt;Ip frequency limited&gt; &amp; co\">"),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<failure message=\"2 attempts from 127.0.0.1 while ip:127.0.0.1 was blocked \
                 until 2025-06-02T01:10:00Z, at most 0 allowed\" type=\"expectation\">"
            ),
            "{xml}"
        );
        assert!(xml.contains("&#10;replay with seed 99</failure>"), "{xml}");
        assert!(
            xml.contains("<system-out>3 accepted, expected at least 1</system-out>"),
            "{xml}"
        );
        assert!(xml.ends_with("  </testsuite>\n</testsuites>\n"), "{xml}");
        // Nothing unescaped between the tags: every `<` opens a known element.
        for tag in xml.split('<').skip(1) {
            let name: String = tag
                .trim_start_matches(['/', '?'])
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            assert!(
                [
                    "xml",
                    "testsuites",
                    "testsuite",
                    "properties",
                    "property",
                    "testcase",
                    "failure",
                    "system-out"
                ]
                .contains(&name.as_str()),
                "unexpected `<{tag}` in {xml}"
            );
        }
    }

    #[test]
    fn the_text_marks_each_expectation_and_names_the_seed_on_failure() {
        let text = mixed().to_string();
        assert!(
            text.starts_with(
                "scenario blocks <&> \"co\": FAILED (3 accepted, 5 rejected, \
                 2025-06-02T01:00:00Z to 2025-06-02T01:10:00Z in 12.3s of real time); \
                 the sender exited with 0\n  \
                 replies: 6 `greeting` 220\n  \
                 refused: 3 `connection_denied` 554 by quota.deny_after on ip:127.0.0.1\n  \
                 refused: 2 `ip_frequency` 550 by quota.ip_messages (minute) on ip:127.0.0.1\n\
                 qqmx: 1 of 2 expectations held\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  ✓ ok   accepted at least 1: 3 accepted, expected at least 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  ✗ FAIL never told <Ip frequency limited> & co: 2 attempts from 127.0.0.1"
            ),
            "{text}"
        );
        assert!(text.ends_with("  replay with seed 99\n"), "{text}");
        // After the first line, the text `verify` gives for the same outcomes.
        let expectations = mixed().expectations().to_string();
        assert!(text.ends_with(&expectations), "{text}");

        let passed = report(vec![Outcome::new(
            "accepted at least 1",
            true,
            "3 accepted",
        )]);
        let text = passed.to_string();
        assert!(
            text.starts_with("scenario blocks <&> \"co\": passed"),
            "{text}"
        );
        assert!(!text.contains("replay"), "{text}");
        assert!(!text.contains('✗'), "{text}");
    }

    #[test]
    fn counts_come_from_the_log() {
        let scenario =
            Scenario::from_toml("name = \"x\"\nseed = 3\nduration = \"1m\"\n").expect("scenario");
        let at = UNIX_EPOCH;
        let event = |code: u16| Event {
            seq: 1,
            at,
            session: 1,
            transaction: None,
            client: std::net::IpAddr::from([127, 0, 0, 1]),
            kind: EventKind::Reply(crate::reply::Reply {
                kind: crate::reply::ReplyKind::Greeting,
                code,
                text: String::new(),
            }),
        };
        let events = [event(220), event(451), event(550), event(354)];
        let report = RunReport::new(
            &scenario,
            Report::new(scenario.seed, vec![Outcome::new("a", false, "b")]),
            at,
            at,
            &[],
            &events,
            None,
        );
        assert_eq!((report.accepted, report.rejected), (0, 2));
        assert_eq!(report.replies.len(), 4);
        assert_eq!((report.wall_started, report.wall_seconds), (None, None));
        let xml = report.to_junit_xml();
        assert!(!xml.contains("time="), "{xml}");
        assert!(!xml.contains("timestamp="), "{xml}");
        assert_eq!(
            (report.seed, report.passed, report.exit_code),
            (3, false, None)
        );
    }

    #[cfg(any(feature = "control", feature = "remote"))]
    #[test]
    fn the_json_has_every_field() {
        let json: serde_json::Value = serde_json::from_str(&mixed().to_json()).expect("valid JSON");
        assert_eq!(json["scenario"], "blocks <&> \"co\"");
        assert_eq!(json["seed"], 99);
        assert_eq!(json["passed"], false);
        assert_eq!(json["accepted"], 3);
        assert_eq!(json["rejected"], 5);
        assert_eq!(json["exit_code"], 0);
        assert_eq!(json["started"], "2025-06-02T01:00:00.000000Z");
        assert_eq!(json["wall_started"], "2025-11-30T00:00:00.000000Z");
        assert_eq!(json["wall_seconds"], 12.345);
        assert_eq!(json["replies"][0]["kind"], "greeting");
        assert_eq!(json["replies"][0]["count"], 6);
        assert!(json["replies"][0].get("rule").is_none());
        assert_eq!(json["replies"][2]["kind"], "connection_denied");
        assert_eq!(json["replies"][2]["code"], 554);
        assert_eq!(json["replies"][2]["rule"], "quota.deny_after");
        assert_eq!(json["replies"][2]["key"], "ip:127.0.0.1");
        assert_eq!(json["replies"][1]["window"], "minute");
        assert!(json["replies"][2].get("window").is_none());
        assert_eq!(json["ended"], "2025-06-02T01:10:00.250000Z");
        assert_eq!(json["outcomes"][1]["passed"], false);
        assert_eq!(
            json["outcomes"][1]["name"],
            "never told <Ip frequency limited> & co"
        );
    }
}
