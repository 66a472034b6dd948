//! qqmx is a fake `mx1.qq.com`: an SMTP server that behaves like Tencent QQ Mail's
//! inbound MX fleet, so that software which sends mail to QQ users can be tested against
//! QQ's replies, limits and checks without getting a real IP blocked by Tencent.
//!
//! ```
//! use std::time::Duration;
//! use qqmx::{Expectation, QqMx};
//!
//! let server = QqMx::start();                 // 127.0.0.1:<random port>, manual clock
//! server.expect(Expectation::accepted(0));    // checked when `server` is dropped
//! println!("point the sender at {}", server.addr());
//! server.clock().advance(Duration::from_secs(86_400));
//! assert!(server.messages().is_empty());
//! ```
//!
//! # The parts
//!
//! Data flows one way through these layers, bottom first; each uses only those before it
//! (`tests/layers.rs` checks the module graph).
//!
//! - [`clock`]: [`Clock`], system time or a manual clock a test advances; the only
//!   source of time. [`units`]: the vocabulary the layers share (stages, IP networks,
//!   calendar windows, quota names, durations as text). [`reply`]: the catalogue of every
//!   line qqmx sends, per QQ [`Generation`], and [`provenance`]: where each comes from.
//! - [`config`]: [`Config`], the serde model of a TOML config, with clear errors.
//! - [`policy`]: pure decisions (address syntax, mailboxes, limits); no I/O. Its
//!   remembered state sits in owners behind small traits. [`auth`]: SPF, DKIM and DMARC.
//!   [`chaos`]: faults.
//! - [`event`]: what happened, in typed fields ([`Event`], [`EventKind`]).
//! - [`store`]: accepted [`Message`]s and the event log, bounded in memory.
//! - [`expect`]: [`Expectation`]s over the events and messages of a run, with one
//!   [`Report`] format for the embedded server, a sidecar's client and scenario runs.
//! - `session` (private): the SMTP state machine over any async stream, STARTTLS.
//! - [`scenario`]: the chaos scenario model (phases, `[[expect]]`).
//! - [`Server`]: the listeners, accept loops and graceful shutdown; `dns` (feature `dns`):
//!   the DNS server for the fleet, MX hosts pointing at the listeners.
//! - [`Handle`]: inspection and control (messages, events, the clock, the policy),
//!   written once over an in-process server or a sidecar.
//! - [`QqMx`]: the embedded server for tests, with [`Expectation`]s checked on drop;
//!   `control` (feature `control`): the sidecar's HTTP JSON API and Prometheus metrics.
//! - `sidecar` and `runner` (feature `control`): the one assembly of `qqmx serve` and
//!   `qqmx run`; `remote` (feature `remote`): a client for a sidecar. [`QqMx`] and the
//!   remote client both give a [`Handle`], and [`Mx`] is what the two share.
//!
//! The `qqmx` command-line tool (`serve`) is behind the `cli` feature, so a
//! dev-dependency compiles only the library.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accept;
pub mod auth;
pub mod chaos;
pub mod clock;
pub mod config;
#[cfg(feature = "control")]
pub mod control;
#[cfg(feature = "dns")]
pub mod dns;
mod embedded;
pub mod event;
pub mod expect;
pub mod fuzzing;
mod inspect;
pub mod policy;
pub mod provenance;
mod proxy;
#[cfg(feature = "remote")]
pub mod remote;
pub mod reply;
#[cfg(feature = "control")]
pub mod runner;
pub mod scenario;
mod server;
mod session;
#[cfg(feature = "control")]
pub mod sidecar;
pub mod store;
#[cfg(feature = "control")]
mod timeline;
mod tls;
pub mod units;

pub use clock::Clock;
pub use config::{Config, ConfigError};
pub use embedded::{Builder, Mx, QqMx};
pub use event::{CloseReason, Event, EventKind};
pub use expect::{Expectation, Report, Times};
pub use inspect::{Handle, Stats, WaitError};
pub use proxy::ProxyError;
pub use reply::{Generation, Reply, ReplyKind};
pub use server::{Server, StartError};
pub use store::{Folder, Message};
pub use tls::{TestCa, TlsError};
pub use units::{IpNet, QuotaName, Stage, Window};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
