//! The `qqmx` command: argument parsing, logging set-up and signals; the library does
//! the rest.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use qqmx::{Config, Generation, Server};
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
    /// Run the SMTP server until Ctrl-C or SIGTERM.
    Serve(Serve),
    /// Print the annotated default configuration.
    Config,
}

#[derive(Debug, clap::Args)]
struct Serve {
    /// TOML config file; without one every key has its default.
    #[arg(long, short, env = "QQMX_CONFIG")]
    config: Option<PathBuf>,
    /// Address to accept SMTP on.
    #[arg(long, default_value = "127.0.0.1:2525", env = "QQMX_SMTP")]
    smtp: SocketAddr,
    /// Seed of the random generator (overrides the config).
    #[arg(long)]
    seed: Option<u64>,
    /// QQ generation to imitate: 2017, 2019 or 2025 (overrides the config).
    #[arg(long)]
    generation: Option<Generation>,
    /// Switch off every quota, the warm-up and bulk detection.
    #[arg(long)]
    no_limits: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config => {
            print!("{}", include_str!("../../qqmx.example.toml"));
            ExitCode::SUCCESS
        }
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    EnvFilter::try_from_env("QQMX_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .init();
            match serve(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("qqmx: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve(args: Serve) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(generation) = args.generation {
        config.generation = generation;
    }
    if args.no_limits {
        config = config.no_limits();
    }
    let clock = config.make_clock(qqmx::config::ClockMode::System);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = Server::new(config, clock.clone())?;
        let listener = tokio::net::TcpListener::bind(args.smtp)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.smtp))?;
        let addr = listener.local_addr()?;
        println!(
            "qqmx listening on {addr} (QQ {}, banner {}, {} clock)",
            server.config().generation,
            server.config().host(),
            if clock.is_manual() {
                "manual"
            } else {
                "system"
            },
        );
        server.run(listener, shutdown_signal()).await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
