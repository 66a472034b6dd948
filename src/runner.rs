//! The scenario runner behind `qqmx run`: starts qqmx under a scenario, runs the sender
//! under test, plays the timeline, and checks the expectations.
//!
//! The sender gets the addresses in its environment:
//!
//! | variable | value |
//! |---|---|
//! | `QQMX_SMTP_ADDR` | `host:port` of the first MX host (`mx1`) |
//! | `QQMX_SMTP_ADDRS` | every MX host, `mx1=host:port,mx2=host:port,...` in preference order |
//! | `QQMX_<MX>_ADDR` | one MX host (`QQMX_MX2_ADDR`) |
//! | `QQMX_API_URL` | the control API (`http://127.0.0.1:PORT`) |
//! | `QQMX_CLOCK_SPEED` | virtual seconds per real second |
//! | `QQMX_SCENARIO` | the scenario file's absolute path |
//! | `QQMX_SEED` | the scenario's seed |
//! | `QQMX_DNS_ADDR` | `host:port` of the DNS server, when the scenario's config turns it on (`[dns] listen`) |
//!
//! The run ends when the sender exits or the timeline ends, whichever is first; a sender
//! still running then is killed. Without a sender, qqmx runs the timeline alone, for an
//! external tool that drives it through the control API.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, SystemTime};

use tokio::process::Command;
use tracing::info;

use crate::clock::Clock;
use crate::config::ListenerConfig;
use crate::expect::{Run, evaluate};
use crate::scenario::{RunReport, Scenario};
use crate::server::Server;
use crate::sidecar::{Sidecar, SidecarError, SidecarOptions};
use crate::timeline::Timeline;
use crate::units::duration_text;

/// How to run a scenario.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// The sender under test and its arguments; empty runs qqmx alone.
    pub command: Vec<String>,
    /// Address the control API listens on (loopback: the runner sets no token).
    pub api: SocketAddr,
    /// Address the SMTP listeners listen on (each on a free port).
    pub smtp_ip: IpAddr,
    /// Print progress on standard error while it runs.
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            command: Vec::new(),
            api: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            smtp_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            progress: false,
        }
    }
}

/// Why a run could not take place or its reports not be written (a failed expectation is
/// not an error: see [`RunReport::passed`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// qqmx could not start.
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    /// The sender could not be started.
    #[error("cannot start `{command}`: {source}")]
    Command {
        /// The program.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A report could not be written.
    #[error("{}: {source}", path.display())]
    Report {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Plays `scenario` (read from `path`) and checks its expectations.
///
/// # Errors
///
/// [`RunError`] when qqmx or the sender cannot start.
pub async fn run(
    scenario: &Scenario,
    path: &Path,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    let mut config = scenario.config.clone();
    config.seed = scenario.seed;
    for listener in config.listeners.0.values_mut() {
        *listener = ListenerConfig {
            addr: SocketAddr::new(options.smtp_ip, 0),
            ..listener.clone()
        };
    }
    let clock = scenario.make_clock();
    let sidecar = Sidecar::start(
        config,
        SidecarOptions::default()
            .api(options.api)
            .clock(clock.clone())
            .faults(scenario.faults.clone()),
    )
    .await?;
    let server = sidecar.server().clone();
    let api_addr = sidecar
        .api_addr()
        .expect("the sidecar was started with an API");
    let addrs = preference_order(sidecar.listeners());
    // Phases at zero apply before the sender can connect.
    let mut timeline = Timeline::new(scenario, &server);
    // The run begins here: the listeners and the API are ready and the sender is about to
    // be started. The scenario's clock was held at its start until now, so the timeline's
    // zero is the configured start however long the set-up took.
    let started = clock.release();
    let wall = Clock::system();
    let wall_started = wall.now();
    info!(scenario = %scenario.name, api = %api_addr, "running");
    if options.progress {
        eprintln!(
            "qqmx run: {} ({} virtual, {}x): {}",
            scenario.name,
            duration_text::Text(scenario.duration),
            scenario.clock.speed,
            addrs
                .iter()
                .map(|(mx, a)| format!("{mx}={a}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        eprintln!("qqmx run: control API on http://{api_addr}");
    }

    let mut child = match options.command.split_first() {
        Some((program, args)) => {
            let scenario_path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
            let mut command = Command::new(program);
            command
                .args(args)
                .envs(environment(&addrs, api_addr, scenario, &scenario_path))
                .envs(sidecar.dns_addr().map(|a| ("QQMX_DNS_ADDR", a.to_string())))
                .kill_on_drop(true);
            Some(command.spawn().map_err(|source| RunError::Command {
                command: program.clone(),
                source,
            })?)
        }
        None => None,
    };

    let end = Some(started + scenario.duration);
    let mut status: Option<ExitStatus> = None;
    // Progress lines only: the timeline follows the clock, not this ticker.
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            more = timeline.step(&server, started, end) => {
                if !more {
                    break;
                }
            }
            exited = wait(&mut child), if child.is_some() && status.is_none() => {
                status = exited;
                break;
            }
            _ = ticker.tick(), if options.progress => {
                progress(&server, scenario, started, &timeline);
            }
        }
    }
    if let Some(child) = child.as_mut()
        && status.is_none()
    {
        if options.progress {
            eprintln!("qqmx run: the timeline ended; stopping the sender");
        }
        let _ = child.start_kill();
        status = child.wait().await.ok();
    }
    let ended = clock.now();
    let wall_ended = wall.now();
    sidecar.shutdown().await;

    let events = server.store().events();
    let messages = server.store().messages();
    let outages = timeline.outages(ended);
    let stats = server.store().since_reset();
    let report = evaluate(
        &scenario.expectations,
        &Run::new(&events, &messages, &outages, scenario.seed)
            .ending_at(ended)
            .evicted(stats.messages_evicted, stats.events_evicted),
    );
    Ok(
        RunReport::new(scenario, report, started, ended, &messages, &events, status)
            .wall_clock(wall_started, wall_ended)
            .with_outages(&outages),
    )
}

/// The order a sender tries the MX hosts in, as qq.com publishes them: `mx3` (10),
/// `mx2` (20), `mx1` (30); then `mxbiz1`, `mxbiz2`, ... (exmail's hosts), then the others by
/// name.
fn preference_order(listeners: &[(String, SocketAddr)]) -> Vec<(String, SocketAddr)> {
    let mut listeners = listeners.to_vec();
    listeners.sort_by_key(|(n, _)| {
        let digits: String = n.chars().filter(char::is_ascii_digit).collect();
        let number = digits.parse::<u32>().unwrap_or(u32::MAX);
        let rank = match n.as_str() {
            "mx3" => (0, 0),
            "mx2" => (0, 1),
            "mx1" => (0, 2),
            _ if n.starts_with("mxbiz") => (1, number),
            _ => (2, number),
        };
        (rank, n.clone())
    });
    listeners
}

/// The variables the sender gets.
fn environment(
    addrs: &[(String, SocketAddr)],
    api: SocketAddr,
    scenario: &Scenario,
    path: &Path,
) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "QQMX_SMTP_ADDRS".to_owned(),
            addrs
                .iter()
                .map(|(mx, a)| format!("{mx}={a}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("QQMX_API_URL".to_owned(), format!("http://{api}")),
        (
            "QQMX_CLOCK_SPEED".to_owned(),
            scenario.clock.speed.to_string(),
        ),
        ("QQMX_SCENARIO".to_owned(), path.display().to_string()),
        ("QQMX_SEED".to_owned(), scenario.seed.to_string()),
    ];
    // `mx1` when there is one (where a sender with a single address has always been
    // pointed), else the first in preference order.
    if let Some((_, addr)) = addrs
        .iter()
        .find(|(mx, _)| mx == "mx1")
        .or_else(|| addrs.first())
    {
        env.push(("QQMX_SMTP_ADDR".to_owned(), addr.to_string()));
    }
    for (mx, addr) in addrs {
        env.push((
            format!("QQMX_{}_ADDR", mx.to_ascii_uppercase()),
            addr.to_string(),
        ));
    }
    env
}

async fn wait(child: &mut Option<tokio::process::Child>) -> Option<ExitStatus> {
    match child {
        Some(child) => child.wait().await.ok(),
        None => std::future::pending().await,
    }
}

fn progress(server: &Server, scenario: &Scenario, started: SystemTime, timeline: &Timeline) {
    let now = server.clock().now();
    let elapsed = now.duration_since(started).unwrap_or_default();
    let refused: u64 = server.store().refusals_total().values().sum();
    eprintln!(
        "qqmx run: [{} / {}] phase {}: {} accepted, {} refused",
        duration_text::Text(Duration::from_secs(elapsed.as_secs().max(1))),
        duration_text::Text(scenario.duration),
        timeline.current(),
        server.store().since_reset().messages_accepted,
        refused,
    );
}

/// Writes `report` as `DIR/<scenario name>.json` and JUnit XML `.xml`, creating `dir`;
/// returns the two paths.
///
/// # Errors
///
/// [`RunError::Report`] naming the folder or file that could not be written.
pub fn write_reports(
    dir: &Path,
    scenario: &Scenario,
    report: &RunReport,
) -> Result<(PathBuf, PathBuf), RunError> {
    write_two(
        dir,
        scenario,
        ("json", report.to_json()),
        ("xml", report.to_junit_xml()),
    )
}

/// Writes `report` as a self-contained page `DIR/<scenario name>.html` and its chart as
/// `.svg`, creating `dir`; returns the two paths.
///
/// # Errors
///
/// [`RunError::Report`] naming the folder or file that could not be written.
pub fn write_html_report(
    dir: &Path,
    scenario: &Scenario,
    report: &RunReport,
) -> Result<(PathBuf, PathBuf), RunError> {
    write_two(
        dir,
        scenario,
        ("html", report.to_html()),
        ("svg", report.to_svg()),
    )
}

/// Writes `DIR/<scenario name>.<extension>` for each of two files, creating `dir`.
fn write_two(
    dir: &Path,
    scenario: &Scenario,
    first: (&str, String),
    second: (&str, String),
) -> Result<(PathBuf, PathBuf), RunError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| RunError::Report { path, source }
    };
    std::fs::create_dir_all(dir).map_err(failed(dir))?;
    let write = |(extension, text): (&str, String)| {
        let path = dir.join(format!("{}.{extension}", scenario.name));
        std::fs::write(&path, text).map_err(failed(&path))?;
        Ok::<_, RunError>(path)
    };
    Ok((write(first)?, write(second)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mx_hosts_come_in_qqs_published_preference_order() {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let listeners = ["mx1", "mxbiz1", "mx2", "other", "mx3"].map(|n| (n.to_owned(), addr));
        let names: Vec<String> = preference_order(&listeners)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["mx3", "mx2", "mx1", "mxbiz1", "other"]);
    }
}
