//! The `qqmx` command: argument parsing, logging set-up and signals; the library does
//! the rest.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use qqmx::config::{ClockMode, ListenerConfig, Listeners, StateBackend};
use qqmx::runner::{self, RunOptions};
use qqmx::scenario::Scenario;
use qqmx::sidecar::{Sidecar, SidecarOptions};
use qqmx::{Config, Generation};
use tracing_subscriber::EnvFilter;

/// A fake mx1.qq.com: an SMTP server that behaves like Tencent QQ Mail's inbound MX.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the SMTP listeners and the control API until Ctrl-C or SIGTERM.
    Serve(Box<Serve>),
    /// Print the annotated default configuration.
    Config,
    /// Play a chaos scenario against a sender: `qqmx run SCENARIO -- COMMAND...`. The
    /// sender finds qqmx through QQMX_SMTP_ADDR, QQMX_SMTP_ADDRS and QQMX_API_URL. Without
    /// a command, qqmx runs the timeline alone, to be driven through its API.
    Run(RunArgs),
    /// Validate scenario files; errors name the file, line and key.
    Check {
        /// Scenario files.
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
    /// Print the reply catalogue: every kind's text, the stage it is sent at, and whether
    /// each was seen from QQ or is assumed.
    Replies {
        /// One generation (2017, 2019 or 2025) instead of all.
        #[arg(long)]
        generation: Option<Generation>,
        /// `text` or `json`.
        #[arg(long, default_value = "text")]
        format: LogFormat,
    },
    /// Ask a running qqmx whether it is healthy (exit 0) or not (exit 1), for container
    /// health checks in images without a shell.
    Health(Health),
    /// Ask a running qqmx why an IP was last refused: the rule, the key, the reply, the
    /// count against the limit and when the block ends.
    Explain(Explain),
    /// Print the certificate (PEM) of the test CA named by the config's `[tls] ca_cert`
    /// (and `ca_key`), making the CA and writing both files first when they do not exist:
    /// `qqmx serve` with the same config issues its listeners' certificates from it.
    Ca(CaArgs),
}

#[derive(Debug, clap::Args)]
struct CaArgs {
    /// TOML config file, as for `serve`; `QQMX__TLS__CA_CERT` (and `QQMX__TLS__CA_KEY`)
    /// work too.
    #[arg(long, short, env = "QQMX_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct Serve {
    /// TOML config file; without one every key has its default.
    #[arg(long, short, env = "QQMX_CONFIG")]
    config: Option<PathBuf>,
    /// SMTP listeners, `NAME=ADDR` (`mx2=0.0.0.0:2526`) or `ADDR` for mx1; repeat or
    /// separate with commas. Replaces the config's `[listeners]` (default: mx1, mx2, mx3
    /// and mxbiz1 on 127.0.0.1:2525 to 2528).
    #[arg(long, env = "QQMX_SMTP", value_delimiter = ',')]
    smtp: Vec<String>,
    /// Address of the HTTP control API, or `off`.
    #[arg(long, default_value = "127.0.0.1:8025", env = "QQMX_API")]
    api: String,
    /// Bearer token the control API asks for; required when it listens beyond loopback.
    #[arg(long, env = "QQMX_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Answer DNS for the fleet on this address, UDP and TCP (`127.0.0.1:5353`): MX, A,
    /// TXT and PTR records, the MX hosts pointing at the listeners (overrides the config's
    /// `[dns] listen`; off by default).
    #[arg(long, env = "QQMX_DNS")]
    dns: Option<SocketAddr>,
    /// Seed of the random generator (overrides the config).
    #[arg(long, env = "QQMX_SEED")]
    seed: Option<u64>,
    /// QQ generation to imitate: 2017, 2019 or 2025 (overrides the config).
    #[arg(long, env = "QQMX_GENERATION")]
    generation: Option<Generation>,
    /// The clock: `system`, or `manual` to move it only through the API (overrides the
    /// config).
    #[arg(long, env = "QQMX_CLOCK")]
    clock: Option<ClockArg>,
    /// Switch off every quota, the warm-up and bulk detection.
    #[arg(long, env = "QQMX_NO_LIMITS")]
    no_limits: bool,
    /// Issue each listener's certificate from a test CA made in memory for this run
    /// (`[tls] ca = true`); its certificate is served at GET /api/v1/tls/ca.pem.
    #[arg(long, env = "QQMX_TLS_CA")]
    tls_ca: bool,
    /// On SIGTERM, answer `/readyz` with 503 and keep serving this long before answering
    /// open sessions with 421 and stopping (`"5s"`), so that traffic can move elsewhere.
    #[arg(long, default_value = "0s", env = "QQMX_SHUTDOWN_DELAY", value_parser = parse_duration)]
    shutdown_delay: Duration,
    /// Log lines as human-readable text or as JSON objects, one per line.
    #[arg(long, default_value = "text", env = "QQMX_LOG_FORMAT")]
    log_format: LogFormat,
    /// Where the policy's state lives: `memory`, or a Redis URL (`redis://host:6379/0`)
    /// that several replicas share, so that they enforce one policy (overrides the
    /// config's `[state]`).
    #[arg(long, env = "QQMX_STATE")]
    state: Option<String>,
    /// This replica's name, shown in `/api/v1/info` and the metrics (overrides
    /// `state.replica`).
    #[arg(long, env = "QQMX_REPLICA")]
    replica: Option<String>,
    /// With a Redis state: the URL at which the other replicas reach this one's control
    /// API (`http://10.0.0.5:8025`), so that any replica's API lists the messages and
    /// events of all (overrides `state.advertise`; default: the API's address unless it
    /// is 0.0.0.0 or [::]).
    #[arg(long, env = "QQMX_ADVERTISE")]
    advertise: Option<String>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// Address of the control API.
    #[arg(long, default_value = "127.0.0.1:0")]
    api: SocketAddr,
    /// Where the JSON, JUnit XML and HTML reports go (`<scenario name>.json`, `.xml`,
    /// `.html`, and the chart alone as `.svg`).
    #[arg(long, default_value = "qqmx-reports")]
    report_dir: PathBuf,
    /// No progress lines while it runs.
    #[arg(long, short)]
    quiet: bool,
    /// The sender under test and its arguments, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ClockArg {
    System,
    Manual,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct Health {
    /// Address of the control API (an unspecified address such as 0.0.0.0 means
    /// loopback).
    #[arg(long, default_value = "127.0.0.1:8025", env = "QQMX_API")]
    api: SocketAddr,
    /// Ask `/readyz` (false while draining) instead of `/healthz`.
    #[arg(long)]
    ready: bool,
}

#[derive(Debug, clap::Args)]
struct Explain {
    /// The client's IP address.
    ip: std::net::IpAddr,
    /// The last refusal at or before this time (RFC 3339); the server's now without it.
    #[arg(long)]
    at: Option<String>,
    /// Address of the control API (an unspecified address such as 0.0.0.0 means
    /// loopback).
    #[arg(long, default_value = "127.0.0.1:8025", env = "QQMX_API")]
    api: SocketAddr,
    /// The API's bearer token, if it has one.
    #[arg(long, env = "QQMX_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config => {
            print!("{}", include_str!("../../qqmx.example.toml"));
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            init_logs(LogFormat::Text, "warn");
            match run(&args) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("qqmx: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Check { scenarios } => {
            let mut failed = false;
            for path in &scenarios {
                match Scenario::from_file(path) {
                    Ok(s) => say(format_args!("{}: ok ({})", path.display(), s.summary())),
                    Err(e) => {
                        eprintln!("qqmx: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Replies { generation, format } => {
            let generations = generation.map_or(Generation::ALL.to_vec(), |g| vec![g]);
            let entries: Vec<_> = generations
                .into_iter()
                .flat_map(qqmx::provenance::entries)
                .collect();
            match format {
                LogFormat::Text => print!("{}", qqmx::provenance::render_text(&entries)),
                LogFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&entries).expect("entries serialise")
                ),
            }
            ExitCode::SUCCESS
        }
        Command::Explain(args) => explain(&args),
        Command::Health(args) => match qqmx::sidecar::check_health(args.api, args.ready) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("qqmx: unhealthy: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Ca(args) => match print_ca(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("qqmx: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            init_logs(args.log_format, "info");
            match serve(*args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("qqmx: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

type Error = Box<dyn std::error::Error>;

/// Logs on standard error, filtered by QQMX_LOG (default `level`, with the DNS library's
/// line per query left out); in colour only when standard error is a terminal and
/// `NO_COLOR` is not set, so a log file or a pipe gets plain text.
fn init_logs(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_env("QQMX_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},hickory_server=warn")));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Plays a scenario; true when every expectation held.
fn run(args: &RunArgs) -> Result<bool, Error> {
    let scenario = Scenario::from_file(&args.scenario)?;
    let mut options = RunOptions::default();
    options.command = args.command.clone();
    options.api = args.api;
    options.progress = !args.quiet;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(runner::run(&scenario, &args.scenario, &options))?;
    print!("{report}");
    let (json, xml) = runner::write_reports(&args.report_dir, &scenario, &report)?;
    say(format_args!(
        "reports: {} and {}",
        json.display(),
        xml.display()
    ));
    let (html, svg) = runner::write_html_report(&args.report_dir, &scenario, &report)?;
    say(format_args!(
        "report: {} (chart: {})",
        html.display(),
        svg.display()
    ));
    Ok(report.passed)
}

/// The config from the file, the `QQMX__...` variables and the flags, in that order.
fn load_config(args: &Serve) -> Result<Config, Error> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config = config.with_env(std::env::vars())?;
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if args.tls_ca {
        config.tls.ca = true;
    }
    if let Some(generation) = args.generation {
        config.generation = generation;
    }
    if let Some(clock) = args.clock {
        config.clock.mode = Some(match clock {
            ClockArg::System => ClockMode::System,
            ClockArg::Manual => ClockMode::Manual,
        });
    }
    match args.state.as_deref() {
        None => {}
        Some("memory") => config.state.backend = StateBackend::Memory,
        Some(url) => {
            config.state.backend = StateBackend::Redis;
            config.state.url = url.to_owned();
        }
    }
    if let Some(replica) = &args.replica {
        config.state.replica.clone_from(replica);
    }
    if let Some(advertise) = &args.advertise {
        config.state.advertise.clone_from(advertise);
    }
    if let Some(dns) = args.dns {
        config.dns.listen = Some(dns);
    }
    if !args.smtp.is_empty() {
        let mut listeners = Listeners(Default::default());
        for spec in &args.smtp {
            let (mx, addr) = spec.split_once('=').unwrap_or(("mx1", spec));
            let addr: SocketAddr = addr.trim().parse().map_err(|_| {
                format!("--smtp {spec}: `{addr}` is not an address such as 127.0.0.1:2525")
            })?;
            listeners
                .0
                .insert(mx.trim().to_owned(), ListenerConfig::new(addr));
        }
        config.listeners = listeners;
    }
    config.check()?;
    Ok(config)
}

/// Prints the certificate of the config's test CA, made and written first if need be.
fn print_ca(args: &CaArgs) -> Result<(), Error> {
    let config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let config = config.with_env(std::env::vars())?;
    config.check()?;
    let Some((cert, key)) = config.tls.ca_files() else {
        return Err(
            "no test CA file in the config: set `[tls] ca_cert` (and `ca_key`), or \
                    QQMX__TLS__CA_CERT, for `qqmx ca` and `qqmx serve` to share one CA; a CA \
                    made with `ca = true` lives in the server's memory: GET \
                    /api/v1/tls/ca.pem from it"
                .into(),
        );
    };
    let ca = qqmx::TestCa::load_or_create(&cert, &key)?;
    print!("{}", ca.cert_pem());
    Ok(())
}

fn serve(args: Serve) -> Result<(), Error> {
    let config = load_config(&args)?;
    let mut options = SidecarOptions::default()
        .token(args.api_token)
        .no_limits(args.no_limits);
    match args.api.as_str() {
        "off" | "none" => {}
        addr => {
            options = options.api(addr.parse().map_err(|_| {
                format!("--api: `{addr}` is not an address such as 127.0.0.1:8025, nor `off`")
            })?);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Before anything says it is listening.
        let signal = shutdown_signal();
        let sidecar = Sidecar::start(config, options).await?;
        let server = sidecar.server();
        let config = server.config();
        let mode = if server.clock().is_manual() {
            "manual"
        } else {
            "system"
        };
        for (mx, addr) in sidecar.listeners() {
            say(format_args!(
                "qqmx listening on {addr} as {mx} (QQ {}, banner {}, {mode} clock)",
                config.generation,
                config.listener_host(mx),
            ));
        }
        if let Some(addr) = sidecar.dns_addr() {
            say(format_args!("qqmx DNS on {addr} (UDP and TCP)"));
        }
        if let Some(addr) = sidecar.api_addr() {
            say(format_args!("qqmx control API on http://{addr}"));
        }
        if config.state.backend == StateBackend::Redis {
            say(format_args!(
                "qqmx replica {} shares its policy state in Redis (prefix {})",
                config.state.replica_name(),
                config.state.prefix,
            ));
        }
        if let Some(ca) = server.tls_ca() {
            match ca.path() {
                Some(path) => say(format_args!("qqmx test CA: {}", path.display())),
                None => say(format_args!(
                    "qqmx test CA in memory: GET /api/v1/tls/ca.pem for its certificate"
                )),
            }
        }
        signal.await;
        sidecar.drain(args.shutdown_delay).await;
        Ok::<_, Error>(())
    })
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    qqmx::units::parse_duration(text)
        .ok_or_else(|| format!("`{text}` is not a duration such as \"5s\" or \"1m\""))
}

/// Prints a line on standard output; a reader that has gone away (a closed pipe) is no
/// reason to stop serving.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Completes on Ctrl-C or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled, so that a signal that comes right after start-up
/// drains the server instead of killing the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = signal(SignalKind::terminate())
            .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
        async move {
            match streams {
                Ok((mut term, mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `qqmx explain`: the last refusal of an IP, in words or as JSON.
fn explain(args: &Explain) -> ExitCode {
    let answer = qqmx::sidecar::explain(
        args.api,
        args.api_token.as_deref(),
        args.ip,
        args.at.as_deref(),
    );
    let json = match answer {
        Ok(Some(json)) => json,
        Ok(None) => {
            eprintln!("qqmx: no refusal of {} in the event log", args.ip);
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("qqmx: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", json.trim());
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<serde_json::Value>(&json) {
        Ok(why) => {
            print!("{}", explanation_text(&why));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qqmx: the API's explanation is not JSON: {e}");
            ExitCode::from(2)
        }
    }
}

/// An explanation's fields, one a line, in the API's words.
fn explanation_text(why: &serde_json::Value) -> String {
    let field = |name: &str| match &why[name] {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    let mut lines = vec![format!(
        "{} refused at {} (session {})",
        field("client").unwrap_or_default(),
        field("at").unwrap_or_default(),
        field("session").unwrap_or_default(),
    )];
    let reply = match field("kind") {
        Some(kind) => format!(
            "{kind} ({} at {})",
            field("verdict").unwrap_or_default(),
            field("stage").unwrap_or_default()
        ),
        None => format!(
            "{} at {}",
            field("verdict").unwrap_or_default(),
            field("stage").unwrap_or_default()
        ),
    };
    let count = match (field("counter"), field("limit"), field("window")) {
        (Some(counter), Some(limit), Some(window)) => {
            Some(format!("{counter} of {limit} in this {window}"))
        }
        (Some(counter), Some(limit), None) => Some(format!("{counter} of {limit}")),
        _ => None,
    };
    for (name, value) in [
        ("rule", field("rule")),
        ("key", field("key")),
        ("reply", Some(reply)),
        ("count", count),
        ("until", field("until")),
        ("detail", field("detail")),
    ] {
        if let Some(value) = value {
            lines.push(format!("  {name:<7} {value}"));
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}
