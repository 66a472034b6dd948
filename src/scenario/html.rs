//! The report of a scenario run as a page for people: one self-contained HTML file (its
//! style inline, its chart an inline SVG, no script, nothing fetched), and the chart
//! alone as an SVG file for a CI job's summary.
//!
//! The chart has one column per calendar minute of the server's (virtual) clock: the
//! messages accepted and the refusals by reply kind stacked, the attempts (MAIL commands
//! and connections refused before one) as a line; quota blocks shaded red from the
//! refusal that began them to their end, MX outages grey, phases as dashed lines. Below
//! it come the seed, each expectation with its verdict and what decided it, and the
//! refusals by rule and key.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::RunReport;
use super::report::escape;
use super::timeline::Span;
use crate::clock::Rfc3339;
use crate::expect::Outage;

impl RunReport {
    /// The same report, with the MX outages of the run shaded in its chart.
    #[must_use]
    pub fn with_outages(mut self, outages: &[Outage]) -> Self {
        self.timeline.outages = outages
            .iter()
            .map(|o| Span {
                label: o.mx.clone(),
                rule: String::new(),
                from: o.from,
                until: o.until.unwrap_or(self.ended),
            })
            .collect();
        self
    }

    /// The report as one self-contained HTML page: no script, nothing fetched.
    pub fn to_html(&self) -> String {
        page(self)
    }

    /// The timeline chart alone, as an SVG file (for a CI job's summary).
    pub fn to_svg(&self) -> String {
        let mut svg = chart(self, true);
        svg.push('\n');
        svg
    }
}

const ACCEPTED: &str = "#2e7d32";
const PALETTE: [&str; 8] = [
    "#e53935", "#fb8c00", "#8e24aa", "#3949ab", "#00897b", "#6d4c41", "#d81b60", "#546e7a",
];

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 44.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 40.0;
/// The strip under the plot where blocks and outages are drawn solid.
const BAND: f64 = 6.0;

/// `HH:MM` of a time, UTC.
fn hhmm(t: SystemTime) -> String {
    let text = Rfc3339(t).to_string();
    text.get(11..16).unwrap_or("").to_owned()
}

/// The timeline chart as an SVG element (`standalone`: with its namespace and a white
/// background, as a file of its own).
fn chart(report: &RunReport, standalone: bool) -> String {
    let timeline = &report.timeline;
    let kinds: Vec<&String> = {
        let mut kinds: Vec<&String> = timeline
            .minutes
            .iter()
            .flat_map(|m| m.refusals.keys())
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    };
    let colour = |kind: &str| {
        let i = kinds.iter().position(|k| *k == kind).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    };
    let max = timeline
        .minutes
        .iter()
        .map(|m| (m.accepted + m.refusals.values().sum::<u64>()).max(m.attempts))
        .max()
        .unwrap_or(0)
        .max(1);
    let n = timeline.minutes.len().max(1);
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / n as f64;
    let start = timeline.minutes.first().map_or(report.started, |m| m.start);
    let span_secs = (n * 60) as f64;
    let x_of = |t: SystemTime| {
        let secs = t
            .duration_since(start)
            .unwrap_or_default()
            .as_secs_f64()
            .min(span_secs);
        LEFT + plot_w * secs / span_secs
    };
    let y_of = |v: u64| TOP + plot_h * (1.0 - v as f64 / max as f64);

    let mut svg = String::new();
    let ns = if standalone {
        " xmlns=\"http://www.w3.org/2000/svg\""
    } else {
        ""
    };
    let _ = write!(
        svg,
        "<svg class=\"timeline\"{ns} viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" font-family=\"sans-serif\" font-size=\"11\">\
         <title>{} (seed {}): attempts, accepted and refusals per minute</title>",
        escape(&report.scenario),
        report.seed
    );
    if standalone {
        let _ = write!(
            svg,
            "<rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#fff\"/>"
        );
    }
    // Shading first, so the bars draw over it; and a solid strip under the plot, seen
    // where bars cover the shading.
    for o in &timeline.outages {
        let (x1, x2) = (x_of(o.from), x_of(o.until));
        let _ = write!(
            svg,
            "<rect class=\"outage\" x=\"{x1:.1}\" y=\"{TOP}\" width=\"{w:.1}\" height=\"{plot_h:.1}\" fill=\"#9e9e9e\" fill-opacity=\"0.25\">\
             <title>{title}</title></rect>\
             <rect class=\"band outage-band\" x=\"{x1:.1}\" y=\"{band:.1}\" width=\"{w:.1}\" height=\"{BAND}\" fill=\"#9e9e9e\"><title>{title}</title></rect>",
            w = (x2 - x1).max(1.0),
            band = TOP + plot_h + 2.0,
            title = format_args!(
                "{} down from {} to {}",
                escape(&o.label),
                Rfc3339(o.from),
                Rfc3339(o.until)
            ),
        );
    }
    for b in &timeline.blocks {
        let (x1, x2) = (x_of(b.from), x_of(b.until));
        let _ = write!(
            svg,
            "<rect class=\"block\" x=\"{x1:.1}\" y=\"{TOP}\" width=\"{w:.1}\" height=\"{plot_h:.1}\" fill=\"#e53935\" fill-opacity=\"0.12\">\
             <title>{title}</title></rect>\
             <rect class=\"band block-band\" x=\"{x1:.1}\" y=\"{band:.1}\" width=\"{w:.1}\" height=\"{BAND}\" fill=\"#e57373\"><title>{title}</title></rect>",
            w = (x2 - x1).max(1.0),
            band = TOP
                + plot_h
                + 2.0
                + if timeline.outages.is_empty() {
                    0.0
                } else {
                    BAND + 1.0
                },
            title = format_args!(
                "{} blocked by {} from {} until {}",
                escape(&b.label),
                escape(&b.rule),
                Rfc3339(b.from),
                Rfc3339(b.until)
            ),
        );
    }
    // Grid and axis.
    for frac in [0.0, 0.5, 1.0] {
        let value = (max as f64 * frac).round() as u64;
        let y = y_of(value);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e0e0e0\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{value}</text>",
            LEFT + plot_w,
            LEFT - 4.0,
            y + 4.0
        );
    }
    let every = (n / 12).max(1);
    for (i, m) in timeline.minutes.iter().enumerate() {
        let x = LEFT + slot * i as f64;
        let mut y = TOP + plot_h;
        let mut bar = |svg: &mut String, count: u64, fill: &str, class: &str, what: &str| {
            if count == 0 {
                return;
            }
            let h = plot_h * count as f64 / max as f64;
            y -= h;
            let _ = write!(
                svg,
                "<rect class=\"{class}\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{fill}\">\
                 <title>{}: {count} {}</title></rect>",
                x + 1.0,
                (slot - 2.0).max(1.0),
                hhmm(m.start),
                escape(what)
            );
        };
        bar(&mut svg, m.accepted, ACCEPTED, "accepted", "accepted");
        for (kind, count) in &m.refusals {
            bar(&mut svg, *count, colour(kind), "refusal", kind);
        }
        if i % every == 0 {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
                x + slot / 2.0,
                TOP + plot_h + 2.0 * BAND + 16.0,
                hhmm(m.start)
            );
        }
    }
    // Attempts as a line through the middle of each minute.
    let points: Vec<String> = timeline
        .minutes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            format!(
                "{:.1},{:.1}",
                LEFT + slot * (i as f64 + 0.5),
                y_of(m.attempts)
            )
        })
        .collect();
    let _ = write!(
        svg,
        "<polyline class=\"attempts\" points=\"{}\" fill=\"none\" stroke=\"#1a6fd0\" stroke-width=\"1.5\"><title>attempts</title></polyline>",
        points.join(" ")
    );
    for (i, m) in timeline.minutes.iter().enumerate() {
        let _ = write!(
            svg,
            "<circle class=\"attempt\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#1a6fd0\"><title>{}: {} attempts</title></circle>",
            LEFT + slot * (i as f64 + 0.5),
            y_of(m.attempts),
            hhmm(m.start),
            m.attempts
        );
    }
    let end_x = x_of(report.ended);
    if end_x < LEFT + plot_w - 1.0 {
        let _ = write!(
            svg,
            "<line class=\"run-end\" x1=\"{end_x:.1}\" x2=\"{end_x:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#c62828\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c62828\">run ended</text>",
            TOP + plot_h,
            end_x + 3.0,
            TOP + 26.0
        );
    }
    for (at, name) in &timeline.phases {
        let x = x_of(report.started + *at);
        let label = if name.is_empty() {
            crate::units::duration_text::Text(*at).to_string()
        } else {
            name.clone()
        };
        let _ = write!(
            svg,
            "<line class=\"phase\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#333\" stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\">{}</text>",
            TOP,
            TOP + plot_h,
            x + 3.0,
            TOP + 12.0,
            escape(&label)
        );
    }
    // The legend.
    let mut lx = LEFT;
    let legend: Vec<(&str, &str)> = [("accepted", ACCEPTED), ("attempts", "#1a6fd0")]
        .into_iter()
        .chain(kinds.iter().map(|k| (k.as_str(), colour(k))))
        .chain([("block", "#f4c7c6"), ("MX down", "#d9d9d9")])
        .collect();
    for (name, fill) in legend {
        let _ = write!(
            svg,
            "<rect x=\"{lx:.1}\" y=\"4\" width=\"10\" height=\"10\" fill=\"{fill}\"/><text x=\"{:.1}\" y=\"13\" fill=\"#333\">{}</text>",
            lx + 13.0,
            escape(name)
        );
        lx += 22.0 + 6.5 * name.len() as f64;
    }
    svg.push_str("</svg>");
    svg
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;color:#1d232a;margin:1.5rem auto;max-width:960px;padding:0 1rem}\
h1{font-size:1.3rem;margin:0 0 .3rem}h2{font-size:1.05rem;margin:1.4rem 0 .4rem}\
.pass{color:#2e7d32}.fail{color:#c62828}.meta{color:#5d6875}\
svg.timeline{max-width:100%;height:auto;border:1px solid #dde1e6;border-radius:6px}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eef0f3;vertical-align:top}\
.outcome.failed td:first-child{border-left:4px solid #c62828}.outcome.passed td:first-child{border-left:4px solid #2e7d32}\
code{background:#f3f5f7;padding:0 .2rem;border-radius:3px}";

/// The whole report as one self-contained HTML page.
fn page(report: &RunReport) -> String {
    let mut html = String::new();
    let verdict = if report.passed {
        "<span class=\"pass\">passed</span>"
    } else {
        "<span class=\"fail\">failed</span>"
    };
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
         <title>{name}: {plain}</title><style>{STYLE}</style></head><body>\
         <h1>Scenario <code>{name}</code>: {verdict}</h1>\
         <p class=\"meta\">seed {seed} · virtual time {started} to {ended} · {accepted} accepted, {rejected} refused{exit}</p>",
        name = escape(&report.scenario),
        plain = if report.passed { "passed" } else { "failed" },
        seed = report.seed,
        started = Rfc3339(report.started),
        ended = Rfc3339(report.ended),
        accepted = report.accepted,
        rejected = report.rejected,
        exit = report
            .exit_code
            .map_or(String::new(), |c| format!(" · sender exited {c}")),
    );
    html.push_str("<h2>Timeline, per minute of the server's clock</h2>");
    html.push_str(&chart(report, false));
    html.push_str("<h2>Expectations</h2><table><thead><tr><th>expectation</th><th>verdict</th><th>what decided it</th></tr></thead><tbody>");
    for o in &report.outcomes {
        let _ = write!(
            html,
            "<tr class=\"outcome {}\"><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            if o.passed { "passed" } else { "failed" },
            escape(&o.name),
            if o.passed { "pass" } else { "fail" },
            if o.passed { "held" } else { "failed" },
            escape(&o.seen)
        );
    }
    html.push_str("</tbody></table>");
    let refusals = report.refusals();
    if !refusals.is_empty() {
        html.push_str("<h2>Refusals by rule and key</h2><table><thead><tr><th>count</th><th>reply</th><th>rule</th><th>key</th></tr></thead><tbody>");
        for r in refusals {
            let rule = match (&r.rule, r.window) {
                (Some(rule), Some(w)) => format!("{rule} ({w})"),
                (Some(rule), None) => rule.clone(),
                _ => String::new(),
            };
            let _ = write!(
                html,
                "<tr><td>{}</td><td><code>{}</code> {}</td><td>{}</td><td>{}</td></tr>",
                r.count,
                escape(&r.kind.to_string()),
                r.code,
                escape(&rule),
                escape(r.key.as_deref().unwrap_or(""))
            );
        }
        html.push_str("</tbody></table>");
    }
    let t = &report.timeline;
    if !t.blocks.is_empty() || !t.outages.is_empty() {
        html.push_str("<h2>Blocks and outages</h2><table><thead><tr><th>what</th><th>from</th><th>until</th></tr></thead><tbody>");
        for b in &t.blocks {
            let _ = write!(
                html,
                "<tr><td>{} blocked by {}</td><td>{}</td><td>{}</td></tr>",
                escape(&b.label),
                escape(&b.rule),
                Rfc3339(b.from),
                Rfc3339(b.until)
            );
        }
        for o in &t.outages {
            let _ = write!(
                html,
                "<tr><td>{} down</td><td>{}</td><td>{}</td></tr>",
                escape(&o.label),
                Rfc3339(o.from),
                Rfc3339(o.until)
            );
        }
        html.push_str("</tbody></table>");
    }
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::expect::Outcome;
    use crate::scenario::timeline::{Minute, Timeline};

    fn report() -> RunReport {
        let started = UNIX_EPOCH + Duration::from_secs(1_748_826_000);
        let at = |secs| started + Duration::from_secs(secs);
        let mut refusals = BTreeMap::new();
        refusals.insert("ip_frequency".to_owned(), 3);
        RunReport {
            scenario: "<script>alert(1)</script>".into(),
            seed: 7,
            passed: false,
            outcomes: vec![Outcome::new(
                "no refusal <b>",
                false,
                "3 `ip_frequency` & more",
            )],
            started,
            ended: at(180),
            wall_started: None,
            wall_seconds: None,
            accepted: 2,
            rejected: 3,
            replies: Vec::new(),
            exit_code: Some(0),
            timeline: Timeline {
                minutes: (0..3)
                    .map(|m| Minute {
                        start: at(m * 60),
                        attempts: 5,
                        accepted: 2,
                        refusals: refusals.clone(),
                    })
                    .collect(),
                blocks: vec![Span {
                    label: "ip:127.0.0.1".into(),
                    rule: "quota.ip_messages".into(),
                    from: at(30),
                    until: at(600),
                }],
                outages: vec![Span {
                    label: "mx2".into(),
                    rule: String::new(),
                    from: at(60),
                    until: at(120),
                }],
                phases: vec![(Duration::from_secs(60), "burst".into())],
            },
        }
    }

    #[test]
    fn the_page_draws_blocks_outages_phases_and_escapes_names() {
        let page = report().to_html();
        assert!(page.contains("<title>ip:127.0.0.1 blocked by quota.ip_messages from"));
        assert!(page.contains("class=\"outage\""));
        assert!(page.contains(">burst</text>"));
        assert_eq!(page.matches("class=\"refusal\"").count(), 3);
        assert!(page.contains("seed 7"));
        assert!(page.contains("<tr class=\"outcome failed\"><td>no refusal &lt;b&gt;</td>"));
        assert!(!page.contains("<script"), "nothing from the run is markup");
        assert!(!page.contains("src="), "nothing is fetched");
        let svg = report().to_svg();
        assert!(svg.starts_with("<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\""));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &apos;b&apos;&lt;/script&gt;"
        );
    }
}
