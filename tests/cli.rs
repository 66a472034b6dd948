//! The `qqmx` binary: `serve` starts, answers, and drains on SIGTERM; bad configs are
//! named precisely; `config` prints the defaults.
#![cfg(feature = "cli")]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::Smtp;

const QQMX: &str = env!("CARGO_BIN_EXE_qqmx");

/// Starts `qqmx serve` on a free port and returns it with the address it printed.
fn serve(args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(QQMX)
        .args(["serve", "--smtp", "127.0.0.1:0", "--api", "off"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qqmx starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .strip_prefix("qqmx listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    (child, addr)
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn serve_answers_and_drains_on_sigterm() {
    let (mut child, addr) = serve(&["--generation", "2019", "--seed", "5"]);
    let mut smtp = Smtp::connect(addr).await;
    let ehlo = smtp.send("EHLO client.example.org").await;

    terminate(&child);
    let last = smtp.read_reply().await;
    let status = child.wait().expect("exit");

    assert!(ehlo.starts_with("250-newxmmxsza22.qq.com\r\n"), "{ehlo}");
    assert_eq!(
        last,
        "421 newxmmxsza22.qq.com Service not available, closing transmission channel"
    );
    assert!(status.success(), "{status}");
}

#[test]
fn a_bad_config_is_named_by_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("qqmx-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("qqmx.toml");
    std::fs::write(&path, "seed = 1\n\n[limits]\nmax_line = 10\n").expect("write");

    let output = Command::new(QQMX)
        .args(["serve", "--smtp", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .expect("qqmx runs");

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "qqmx: {}:4:1: key `limits.max_line`: unknown field `max_line`",
        path.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}

/// `qqmx check` on one file: its exit status and what it printed (stdout, then stderr).
fn check(name: &str, text: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("qqmx-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    let output = Command::new(QQMX)
        .arg("check")
        .arg(&path)
        .output()
        .expect("qqmx runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
    .replace(&format!("{}", dir.display()), "DIR");
    (output.status.success(), printed)
}

#[test]
fn check_points_at_the_bad_expectation_and_says_what_a_duration_looks_like() {
    let expectations = "name = \"x\"\nduration = \"10m\"\n\n\
        [[expect]]\nkind = \"accepted\"\n\n\
        [[expect]]\nkind = \"accepted\"\nmin = 2\n\n\
        [[expect]]\nkind = \"retries\"\nafter = \"temporary\"\nmax_delay = \"1h\"\n\n\
        [[expect]]\nkind = \"accepted\"\nmin = 5\nmax = 2\n";
    let (ok, printed) = check("fourth.toml", expectations);
    assert!(!ok, "{printed}");
    // The fourth [[expect]]'s `min`, line 18; not the first's.
    assert_eq!(
        printed,
        "qqmx: DIR/fourth.toml:18:1: key `expect.min`: min 5 is above max 2\n"
    );
    // The second `kind`, not the first.
    let (ok, printed) = check(
        "failover.toml",
        "name = \"x\"\nduration = \"10m\"\n[[expect]]\nkind = \"accepted\"\n\
         [[expect]]\nkind = \"failover\"\n",
    );
    assert!(!ok, "{printed}");
    assert!(
        printed.starts_with("qqmx: DIR/failover.toml:6:1: key `expect.kind`: failover:"),
        "{printed}"
    );

    // A key not written points at the header of its own table.
    let (ok, printed) = check(
        "after.toml",
        "name = \"x\"\nduration = \"10m\"\n[[expect]]\nkind = \"accepted\"\n\
         [[expect]]\nkind = \"retries\"\nmin_delay = \"5m\"\n",
    );
    assert!(!ok, "{printed}");
    assert!(
        printed.starts_with("qqmx: DIR/after.toml:5:1: key `expect.after`: retries:"),
        "{printed}"
    );

    // The same for the Nth [[phase]].
    let (ok, printed) = check(
        "phase.toml",
        "name = \"x\"\nduration = \"10m\"\n[[phase]]\nat = \"1m\"\nmx_down = [\"mx1\"]\n\
         [[phase]]\nat = \"2m\"\nmx_down = [\"mx9\"]\n",
    );
    assert!(!ok, "{printed}");
    assert!(
        printed
            .starts_with("qqmx: DIR/phase.toml:8:1: key `phase.mx_down`: no listener called `mx9`"),
        "{printed}"
    );

    let (ok, printed) = check(
        "block.toml",
        "name = \"x\"\nduration = \"10m\"\n[config.quotas.ip_messages]\n\
         minute = { limit = 5, block = \"10 minutes\" }\n",
    );
    assert!(!ok, "{printed}");
    assert!(
        printed.starts_with(
            "qqmx: DIR/block.toml:4:31: key `config.quotas.ip_messages.minute`: \
             `10 minutes` is not a duration such as \"30s\", \"5m\", \"1h30m\""
        ),
        "{printed}"
    );
    assert!(!printed.contains("untagged"), "{printed}");
    let (ok, printed) = check(
        "delay.toml",
        "name = \"x\"\nduration = \"10m\"\n[[expect]]\nkind = \"retries\"\n\
         min_delay = \"5 minutes\"\n",
    );
    assert!(!ok, "{printed}");
    assert!(
        printed.contains("`5 minutes` is not a duration such as \"30s\", \"5m\", \"1h30m\""),
        "{printed}"
    );

    let (ok, printed) = check(
        "good.toml",
        "name = \"x\"\nduration = \"10m\"\n[[phase]]\nat = \"1m\"\n\
         [[expect]]\nkind = \"accepted\"\n",
    );
    assert!(ok, "{printed}");
    assert_eq!(printed, "DIR/good.toml: ok (x, 1 phase, 1 expectation)\n");
}

#[test]
fn config_prints_the_annotated_defaults() {
    let output = Command::new(QQMX)
        .arg("config")
        .output()
        .expect("qqmx runs");

    let text = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(
        qqmx::Config::from_toml(&text).ok(),
        Some(qqmx::Config::default())
    );
    assert!(text.contains("# Seed of the random generator"));
}

/// Runs `qqmx serve` with `args` for one SMTP session (a QUIT) and returns what it
/// logged on standard error, a pipe.
async fn logs_of_one_session(args: &[&str]) -> String {
    let mut child = Command::new(QQMX)
        .args(["serve", "--smtp", "127.0.0.1:0", "--api", "off"])
        .args(args)
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qqmx starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let addr: SocketAddr = line
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .expect("address");
    let mut smtp = Smtp::connect(addr).await;
    smtp.send("QUIT").await;
    terminate(&child);
    let output = child.wait_with_output().expect("exit");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn logs_can_be_json_lines() {
    let stderr = logs_of_one_session(&["--log-format", "json"]).await;
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "connected" && l["level"] == "INFO"),
        "{stderr}"
    );
}

#[tokio::test]
async fn text_logs_to_a_pipe_have_no_colour_codes() {
    let stderr = logs_of_one_session(&[]).await;
    assert!(stderr.contains("connected"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}
