//! `qqmx run` end to end: small scenarios played against small Python senders, checking
//! the timeline, the environment, the expectations, the reports and the exit codes.
#![cfg(feature = "cli")]

use std::path::PathBuf;
use std::process::{Command, Output};

const QQMX: &str = env!("CARGO_BIN_EXE_qqmx");

/// A scratch folder with a scenario and a sender.
struct Case {
    dir: PathBuf,
}

impl Case {
    fn new(name: &str, scenario: &str, sender: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("qqmx-runner-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("scenario.toml"), scenario).expect("scenario");
        std::fs::write(dir.join("sender.py"), sender).expect("sender");
        Self { dir }
    }

    fn run(&self, with_sender: bool) -> Output {
        let mut command = Command::new(QQMX);
        command
            .arg("run")
            .arg(self.dir.join("scenario.toml"))
            .arg("--report-dir")
            .arg(self.dir.join("reports"));
        if with_sender {
            command
                .args(["--", "python3"])
                .arg(self.dir.join("sender.py"));
        }
        command.output().expect("qqmx run starts")
    }

    fn report(&self, name: &str, ext: &str) -> String {
        std::fs::read_to_string(self.dir.join("reports").join(format!("{name}.{ext}")))
            .expect("report written")
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Sends `n` messages to the first MX that answers, in QQMX_SMTP_ADDRS order. The sender
/// waits by qqmx's virtual clock (read from the control API), never by real time, so a
/// slow or loaded machine cannot move a message to another phase: `FROM = "start"` sends
/// message `i` at `(i + 1) * PAUSE` virtual seconds after the scenario's start (or at once
/// if that is past), `"previous"` waits `PAUSE` virtual seconds after the previous send.
const SENDER: &str = r#"
import datetime, json, os, smtplib, socket, sys, time, urllib.request
api = os.environ["QQMX_API_URL"]
hosts = [h.split("=", 1)[1] for h in os.environ["QQMX_SMTP_ADDRS"].split(",")]
# qq.com's published order: mx3 (10), mx2 (20), mx1 (30); QQMX_SMTP_ADDR is mx1.
assert os.environ["QQMX_MX3_ADDR"] == hosts[0]
assert os.environ["QQMX_MX2_ADDR"] == hosts[1]
assert os.environ["QQMX_SMTP_ADDR"] == os.environ["QQMX_MX1_ADDR"] == hosts[2]
assert api.startswith("http://127.0.0.1:")
assert os.path.isabs(os.environ["QQMX_SCENARIO"])
assert float(os.environ["QQMX_CLOCK_SPEED"]) > 0

def now():
    with urllib.request.urlopen(api + "/api/v1/clock", timeout=30) as r:
        return datetime.datetime.fromisoformat(json.load(r)["now"]).timestamp()

def wait_until(t):
    while now() < t:
        time.sleep(0.01)

START = datetime.datetime(2025, 6, 2, 1, 0, 0, tzinfo=datetime.timezone.utc).timestamp()
n, pause, since = N, PAUSE, FROM
last = now()
for i in range(n):
    wait_until(START + (i + 1) * pause if since == "start" else last + pause)
    last = now()
    for host in hosts:
        h, p = host.rsplit(":", 1)
        try:
            s = smtplib.SMTP(h, int(p), timeout=30)
        except OSError:
            continue
        try:
            s.sendmail("news@example.org", ["10001@qq.com"], "Subject: %d\r\n\r\nhi\r\n" % i)
        except smtplib.SMTPException as e:
            print("refused", e)
        s.quit()
        break
"#;

/// A sender of `n` messages, `pause` virtual seconds apart, counted from the previous send.
fn sender(n: u32, pause: u32) -> String {
    SENDER.replace("N, PAUSE, FROM", &format!("{n}, {pause}, \"previous\""))
}

/// A sender of `n` messages at `pause`, `2 * pause`, ... virtual seconds after the start.
fn scheduled_sender(n: u32, pause: u32) -> String {
    SENDER.replace("N, PAUSE, FROM", &format!("{n}, {pause}, \"start\""))
}

#[test]
fn the_timeline_takes_mx3_down_and_the_sender_fails_over() {
    let case = Case::new(
        "failover",
        r#"
name = "failover"
seed = 4
duration = "20m"
[clock]
speed = 120.0
[[phase]]
at = "5m"
mx_down = ["mx3"]
[[phase]]
at = "15m"
mx_up = ["mx3"]
[[expect]]
kind = "failover"
mx = "mx3"
min = 2
[[expect]]
kind = "accepted"
mx = "mx3"
min = 1
"#,
        &scheduled_sender(8, 60),
    );
    let output = case.run(true);
    assert!(output.status.success(), "{}", text(&output));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.starts_with("scenario failover: passed"), "{report}");
    assert!(
        report.contains("ok   fails over while mx3 is down"),
        "{report}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&case.report("failover", "json")).expect("JSON report");
    assert_eq!(json["passed"], true);
    assert_eq!(json["exit_code"], 0);
    assert_eq!(json["seed"], 4);
}

#[test]
fn a_failed_expectation_exits_1_names_the_seed_and_writes_junit() {
    let case = Case::new(
        "blocks",
        r#"
name = "blocks"
seed = 99
duration = "3h"
# Real-time speed from a fixed start: five messages sent at once all fall in the
# scenario's first minute unless the machine takes a minute to send them.
[clock]
start = "2025-06-02T01:00:00Z"
speed = 1.0
[config.quotas.ip_messages]
minute = { limit = 2, block = "5m" }
[[expect]]
kind = "respects_blocks"
[[expect]]
kind = "rejected"
reply = "ip_frequency"
max = 0
name = "never told <Ip frequency limited> & co"
"#,
        &sender(5, 0),
    );
    let output = case.run(true);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("FAIL respects blocks (at most 0 attempts while blocked): 2 attempts from 127.0.0.1 while ip:127.0.0.1 was blocked until"),
        "{report}"
    );
    assert!(report.contains("replay with seed 99"), "{report}");
    let xml = case.report("blocks", "xml");
    assert!(
        xml.contains(r#"<testsuite name="blocks" tests="2" failures="2""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"name="never told &lt;Ip frequency limited&gt; &amp; co""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<property name="seed" value="99"/>"#),
        "{xml}"
    );
    // The failing count names the rule and the key behind the refusals it counts, and
    // the report lists every reply kind that occurred.
    assert!(
        report.contains(
            "FAIL never told <Ip frequency limited> & co: 3 `ip_frequency` replies, \
             expected at most 0: 3 `ip_frequency` 550 by quota.ip_messages (minute) on ip:127.0.0.1"
        ),
        "{report}"
    );
    assert!(
        report.contains(
            "\n  refused: 3 `ip_frequency` 550 by quota.ip_messages (minute) on ip:127.0.0.1\n"
        ),
        "{report}"
    );
    assert!(
        report.contains("\n  replies: 5 `greeting` 220, "),
        "{report}"
    );
    assert!(
        xml.contains(r#"<property name="replies.ip_frequency" value="3"/>"#),
        "{xml}"
    );
    // JUnit's time is the run's wall-clock seconds and its timestamp the wall-clock
    // start; the virtual start is a property.
    let suite = xml
        .lines()
        .find(|l| l.contains("<testsuite name="))
        .expect("a testsuite");
    let attribute = |name: &str| {
        let from = suite.find(&format!(" {name}=\"")).expect(name) + name.len() + 3;
        suite[from..].split('"').next().expect("a value").to_owned()
    };
    let seconds: f64 = attribute("time").parse().expect("seconds");
    assert!(seconds > 0.0, "{suite}");
    let timestamp = attribute("timestamp");
    assert_eq!(timestamp.len(), "2025-06-02T01:00:00".len(), "{suite}");
    assert!(!timestamp.starts_with("2025-06-02"), "{suite}");
    assert!(
        xml.contains(r#"<property name="virtual_started" value="2025-06-02T01:00:00.000000Z"/>"#),
        "{xml}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&case.report("blocks", "json")).expect("JSON report");
    assert!(json["wall_seconds"].as_f64().expect("wall_seconds") > 0.0);
    let refused: Vec<&serde_json::Value> = json["replies"]
        .as_array()
        .expect("replies")
        .iter()
        .filter(|r| r["kind"] == "ip_frequency")
        .collect();
    assert_eq!(refused.len(), 1, "{json}");
    assert_eq!(refused[0]["rule"], "quota.ip_messages");
    assert_eq!(refused[0]["key"], "ip:127.0.0.1");
    assert_eq!(refused[0]["window"], "minute");
    assert_eq!(refused[0]["count"], 3);
}

#[test]
fn greylisting_and_retries_are_measured_in_virtual_time() {
    let scenario = r#"
name = "greylist"
seed = 1
duration = "2h"
[clock]
speed = 600.0
[[fault]]
kind = "greylist"
stage = "rcpt"
attempts = 1
[[expect]]
kind = "retries"
after = "temporary"
min_delay = "5m"
max_delay = "1h"
[[expect]]
kind = "accepted"
min = 1
"#;
    // Retries after ten virtual minutes: within the window.
    let patient = Case::new("patient", scenario, &sender(2, 600));
    let output = patient.run(true);
    assert!(output.status.success(), "{}", text(&output));
    // Retries at once: too soon. At 120x the 5 virtual minutes the expectation asks for
    // are 2.5 real seconds, far more than two sends take on a loaded machine.
    let hasty = Case::new(
        "hasty",
        &scenario.replace("speed = 600.0", "speed = 120.0"),
        &sender(2, 0),
    );
    let output = hasty.run(true);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("FAIL retries after a temporary failure no sooner than 5m no later than 1h: retry of 10001@qq.com"),
        "{report}"
    );
}

#[test]
fn without_a_sender_the_timeline_runs_to_its_end() {
    let case = Case::new(
        "alone",
        r#"
name = "alone"
duration = "30m"
[clock]
speed = 3600.0
[[expect]]
kind = "accepted"
max = 0
"#,
        "",
    );
    let output = case.run(false);
    assert!(output.status.success(), "{}", text(&output));
    let json: serde_json::Value =
        serde_json::from_str(&case.report("alone", "json")).expect("JSON report");
    assert_eq!(json["exit_code"], serde_json::Value::Null);
    let started = json["started"].as_str().expect("started");
    let ended = json["ended"].as_str().expect("ended");
    // The clock is held at the scenario's start until the run begins, however long qqmx
    // takes to get ready; the end comes when the clock has moved 30 virtual minutes on
    // (later on a loaded machine, never sooner).
    assert_eq!(started, "2025-06-02T01:00:00.000000Z");
    assert!(ended >= "2025-06-02T01:30:00Z", "{ended}");
    assert!(ended < "2025-06-03", "{ended}");
}

#[test]
fn a_bad_scenario_is_named_by_file_line_and_key() {
    let case = Case::new(
        "bad",
        "name = \"bad\"\nduration = \"1h\"\n\n[[phase]]\nat = \"2h\"\n",
        "",
    );
    let output = case.run(false);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let path = case.dir.join("scenario.toml");
    assert!(
        stderr.contains(&format!(
            "{}:5:1: key `phase.at`: `2h` is after the end of the scenario",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn an_mx_host_down_from_the_start_refuses_connections() {
    let case = Case::new(
        "down-at-zero",
        r#"
name = "down-at-zero"
duration = "10m"
[clock]
speed = 60.0
[[phase]]
at = "0s"
mx_down = ["mx1"]
"#,
        r#"
import os, socket
host, port = os.environ["QQMX_MX1_ADDR"].rsplit(":", 1)
s = socket.socket()
s.settimeout(30)
try:
    s.connect((host, int(port)))
    print("mx1: connected, then", repr(s.recv(100)))
except ConnectionRefusedError:
    print("mx1: refused")
except OSError as e:
    print("mx1:", type(e).__name__)
"#,
    );
    let output = case.run(true);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("mx1: refused"), "{}", text(&output));
}

#[test]
fn the_api_beyond_loopback_is_refused_as_by_serve() {
    let case = Case::new(
        "open-api",
        "name = \"open-api\"\nduration = \"1m\"\n[clock]\nspeed = 60.0\n",
        "",
    );

    let output = Command::new(QQMX)
        .arg("run")
        .arg(case.dir.join("scenario.toml"))
        .args(["--api", "0.0.0.0:0", "--report-dir"])
        .arg(case.dir.join("reports"))
        .output()
        .expect("qqmx run starts");

    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("reachable from other hosts: set a bearer token"),
        "{stderr}"
    );
}

#[test]
fn a_report_folder_that_cannot_be_made_is_named() {
    let case = Case::new(
        "no-reports",
        "name = \"no-reports\"\nduration = \"1m\"\n[clock]\nspeed = 600.0\n",
        "",
    );
    let blocked = case.dir.join("reports");
    std::fs::write(&blocked, "a file where the folder would go").expect("file");

    let output = case.run(false);

    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let named = format!("qqmx: {}: ", blocked.display());
    assert!(stderr.lines().any(|l| l.starts_with(&named)), "{stderr}");
}
