//! The config: the serde model of a qqmx TOML file, with a default for every key.
//!
//! This is the `scenario` layer of the design for now: a scenario file (a later issue)
//! will embed a [`Config`] as the starting state of its timeline. Nothing here behaves;
//! other layers read the values. Errors name the file, the line and the key.
//!
//! The annotated `qqmx.example.toml` at the root of the repository spells out every key
//! with its default; a test checks that it parses to [`Config::default`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

mod auth;
mod env;
mod locate;
mod policy;
mod state;
#[cfg(test)]
mod tests;
mod validate;

pub use auth::{AuthConfig, DnsConfig, MxRecord, MxRecordError, Records, Resolver, SpfStage};
pub use policy::{
    Blacklist, Block, Concurrency, Content, ListEntry, Memory, Phrase, Quota, Quotas, Reputation,
    Tier, WarmupStep,
};

pub use state::{StateBackend, StateConfig};

pub(crate) use locate::parse_toml;
pub(crate) use validate::Problem;

use crate::clock::{Clock, parse_rfc3339};
use crate::reply::{Catalogue, Generation, ReplyKind};
use crate::units::{Stage, duration_text};
use locate::location;

/// Where a manual clock starts when the config does not say:
/// Monday 2025-06-02 09:00:00 in China Standard Time.
pub(crate) const DEFAULT_START: &str = "2025-06-02T01:00:00Z";

/// Everything a qqmx server can be told. Every field has a default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Seed of the random generator (tracking tokens, queue ids, later random blacklisting).
    pub seed: u64,
    /// Which QQ generation to imitate: `"2017"`, `"2019"` or `"2025"`.
    pub generation: Generation,
    /// The banner host name; by default the generation's (`newxmmxszc23-0.qq.com` in 2025).
    pub host: Option<String>,
    /// The clock.
    pub clock: ClockConfig,
    /// Protocol limits and timeouts.
    pub limits: Limits,
    /// STARTTLS.
    pub tls: TlsConfig,
    /// Domains served and mailboxes that exist.
    pub mailboxes: Mailboxes,
    /// Memory bounds of the message store and event log.
    pub store: StoreConfig,
    /// Listener behaviour.
    pub server: ServerConfig,
    /// The simulated MX hosts `qqmx serve` listens as, by name.
    pub listeners: Listeners,
    /// Quotas per IP, sender, domain and recipient.
    pub quotas: Quotas,
    /// Static and random blacklists.
    pub blacklist: Blacklist,
    /// IP reputation, complaints and warm-up.
    pub reputation: Reputation,
    /// Content rules.
    pub content: Content,
    /// Expiry of idle policy state, and the cap on what the policy remembers.
    pub memory: Memory,
    /// SPF, DKIM and DMARC checks.
    pub auth: AuthConfig,
    /// The DNS zone the checks read.
    pub dns: DnsConfig,
    /// Reply templates that replace the built-in ones, by kind (`mailbox_not_found = "..."`).
    pub replies: BTreeMap<ReplyKind, String>,
    /// Where refusals whose stage at QQ is unknown are answered.
    pub stages: Stages,
    /// Where the policy keeps its state: in this process, or in a Redis shared by replicas.
    pub state: StateConfig,
}

/// Where refusals are answered whose stage at QQ is unknown (every default is an
/// assumption; quotas and blacklists have their own `stage` keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Stages {
    /// `Connection denied` for an IP far over its limits (`quotas.deny_after`): `connect`
    /// (a 550 greeting, which some MTAs such as Postfix take as temporary) or any later
    /// stage of that connection.
    pub connection_denied: Stage,
    /// `Message too large` for a declared `SIZE=` over the limit: `mail`, or `end_of_data`
    /// (the message is then read and refused by its real size).
    pub message_too_large: Stage,
    /// `Mail is rejected by recipients` (a personal blacklist): `rcpt` or `end_of_data`.
    pub rejected_by_recipients: Stage,
    /// `Suspected bounce attacks` (`content.backscatter`): `rcpt` or `end_of_data`.
    pub bounce_attack: Stage,
}

impl Default for Stages {
    fn default() -> Self {
        Self {
            connection_denied: Stage::Connect,
            message_too_large: Stage::Mail,
            rejected_by_recipients: Stage::Rcpt,
            bounce_attack: Stage::Rcpt,
        }
    }
}

/// Listener behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Read a PROXY protocol header (v1 or v2) before the greeting and take the client's
    /// address from it. Connections without one are closed.
    pub proxy_protocol: bool,
}

/// The simulated MX hosts, by name: one SMTP listener each, all sharing one state (quotas,
/// blacklists, store). A config that names any replaces the default four.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Listeners(pub BTreeMap<String, ListenerConfig>);

impl Default for Listeners {
    /// `mx1`, `mx2`, `mx3` and `mxbiz1` on 127.0.0.1 ports 2525 to 2528.
    fn default() -> Self {
        let listener = |port: u16| ListenerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            host: None,
        };
        Self(BTreeMap::from([
            ("mx1".to_owned(), listener(2525)),
            ("mx2".to_owned(), listener(2526)),
            ("mx3".to_owned(), listener(2527)),
            ("mxbiz1".to_owned(), listener(2528)),
        ]))
    }
}

/// One simulated MX host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// Address to accept SMTP on (port 0: any free port).
    pub addr: SocketAddr,
    /// Banner host name. Unset: the top-level `host` if set, else the name the generation's
    /// fleet used for this MX ([`Generation::mx_host`]), else the generation's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl ListenerConfig {
    /// A listener on `addr` with the default banner.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, host: None }
    }
}

/// How time passes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ClockConfig {
    /// `"system"` or `"manual"`. Unset: system time for `qqmx serve`, a manual clock for
    /// the embedded server.
    pub mode: Option<ClockMode>,
    /// Start of a manual clock, RFC 3339 (`2025-06-02T09:00:00+08:00`).
    pub start: Option<String>,
}

/// The two kinds of clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    /// Real time.
    System,
    /// Frozen until advanced.
    Manual,
}

/// Limits on what one client may send. All are assumptions: QQ publishes none but SIZE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Limits {
    /// Longest command line in bytes, CRLF included.
    pub max_line_length: usize,
    /// The SIZE announced in EHLO and enforced at MAIL and during DATA.
    pub max_message_size: u64,
    /// Recipients accepted in one transaction.
    pub max_recipients: usize,
    /// Commands accepted in one session before it is closed.
    pub max_commands: usize,
    /// Connections served at once; one more is answered `421` and closed.
    pub max_connections: usize,
    /// Real time a client may stay silent.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Real time a whole session may last.
    #[serde(with = "duration_text")]
    pub session_timeout: Duration,
    /// Real time a command line may take to arrive, counted from the reply to the one
    /// before, however many bytes trickle in meanwhile (an assumption).
    #[serde(with = "duration_text")]
    pub command_timeout: Duration,
    /// Bytes per second message data must arrive at, on average over
    /// `min_data_rate_window`; 0 switches the check off (an assumption).
    pub min_data_rate: u64,
    /// The window `min_data_rate` is averaged over, which is also the grace period at the
    /// start of the data.
    #[serde(with = "duration_text")]
    pub min_data_rate_window: Duration,
    /// Bytes of message data all sessions together may hold while messages stream in;
    /// DATA past it is answered `451` (an assumption).
    pub max_inflight_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line_length: 4096,
            max_message_size: 73_400_320,
            max_recipients: 100,
            max_commands: 10_000,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(1800),
            command_timeout: Duration::from_secs(300),
            min_data_rate: 1024,
            min_data_rate_window: Duration::from_secs(60),
            max_inflight_bytes: 256 * 1024 * 1024,
        }
    }
}

/// STARTTLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// Offer STARTTLS (QQ always does).
    pub enabled: bool,
    /// PEM certificate chain; unset means a self-signed certificate for the host name,
    /// generated at start.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Issue each listener a certificate from a test CA made in memory for this run
    /// (its certificate: `GET /api/v1/tls/ca.pem`). Off: one self-signed certificate.
    pub ca: bool,
    /// PEM certificate of a test CA that issues each listener's certificate: read if the
    /// file exists, else a new CA is made and written here (and to `ca_key`), so that
    /// `qqmx ca` and `qqmx serve` given the same config use the same CA.
    pub ca_cert: Option<PathBuf>,
    /// PEM private key of the test CA, written with mode 0600 when made. Unset: beside
    /// `ca_cert`, with the extension `.key` (`ca.pem`: `ca.key`).
    pub ca_key: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether a test CA issues the listeners' certificates (`ca`, `ca_cert` or `ca_key`).
    pub fn uses_ca(&self) -> bool {
        self.ca || self.ca_cert.is_some() || self.ca_key.is_some()
    }

    /// The files of the test CA, certificate and key: `ca_cert` and `ca_key` (or its
    /// default beside `ca_cert`); `None` without `ca_cert`.
    pub fn ca_files(&self) -> Option<(PathBuf, PathBuf)> {
        let cert = self.ca_cert.clone()?;
        let key = self.ca_key.clone().unwrap_or_else(|| {
            let key = cert.with_extension("key");
            if key == cert {
                PathBuf::from(format!("{}.key", cert.display()))
            } else {
                key
            }
        });
        Some((cert, key))
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cert: None,
            key: None,
            ca: false,
            ca_cert: None,
            ca_key: None,
        }
    }
}

/// Domains and mailboxes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Mailboxes {
    /// Which addresses exist on the served domains.
    pub existing: Existing,
    /// Addresses that exist whatever `existing` says (and the only ones under `listed`).
    pub listed: Vec<String>,
    /// Customer domains hosted on QQ besides qq.com, foxmail.com and vip.qq.com.
    pub hosted_domains: Vec<String>,
}

impl Default for Mailboxes {
    fn default() -> Self {
        Self {
            existing: Existing::QqNumbers,
            listed: Vec::new(),
            hosted_domains: Vec::new(),
        }
    }
}

/// Which mailboxes exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Existing {
    /// QQ numbers (5 to 11 digits, no leading zero) and listed addresses.
    QqNumbers,
    /// Every address on a served domain.
    All,
    /// Only the listed addresses.
    Listed,
}

/// Bounds of the in-memory store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Messages kept; the oldest are evicted (and counted) beyond this.
    pub max_messages: usize,
    /// Bytes of raw message data kept, across all messages.
    pub max_bytes: usize,
    /// Events kept in the log.
    pub max_events: usize,
    /// Bytes the event log may hold, counted as each event's compact record (about 15
    /// bytes: its fields as bytes and varints, short repeated texts as ids into a table
    /// bounded apart) plus its index entry; the oldest events are evicted (and counted)
    /// beyond this. The newest event is always kept.
    pub max_event_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_messages: 100_000,
            max_bytes: 512 * 1024 * 1024,
            max_events: 1_000_000,
            max_event_bytes: 256 * 1024 * 1024,
        }
    }
}

/// A config that cannot be used. The message names the file, line and key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a qqmx config, or a value is out of range.
    #[error("{}{}: key `{key}`: {message}", path.display(), location(*line, *column))]
    Invalid {
        /// The file (`<inline>` for a string).
        path: PathBuf,
        /// 1-based line of the offending key, 0 when unknown.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The dotted key (`limits.idle_timeout`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and validates a TOML config file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] when the file cannot be read, [`ConfigError::Invalid`] with
    /// the line and key when it cannot be used.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates a TOML config held in a string.
    ///
    /// ```
    /// let config = qqmx::Config::from_toml(r#"
    ///     generation = "2019"
    ///     [limits]
    ///     max_recipients = 20
    /// "#).unwrap();
    /// assert_eq!(config.limits.max_recipients, 20);
    ///
    /// let err = qqmx::Config::from_toml("[limits]\nmax_recipients = \"many\"\n").unwrap_err();
    /// assert!(err.to_string().starts_with("<inline>:2:18: key `limits.max_recipients`"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] with the line and key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, Path::new("<inline>"))
    }

    /// Parses and validates a TOML config held in a string; errors name `path`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] with the line and key.
    pub fn parse_named(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::parse(text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        parse_toml(text, path, Config::validate)
    }

    /// This config with every quota, the warm-up, `Connection denied` and bulk detection
    /// switched off, for tests that are not about limits. Explicit blacklists, phrases and
    /// personal blacklists stay.
    ///
    /// ```
    /// let config = qqmx::Config::default().no_limits();
    /// assert!(!config.quotas.ip_messages.enabled);
    /// ```
    #[must_use]
    pub fn no_limits(mut self) -> Self {
        let q = &mut self.quotas;
        for quota in [
            &mut q.ip_messages,
            &mut q.ip_connections,
            &mut q.sender,
            &mut q.domain,
            &mut q.recipient,
        ] {
            quota.enabled = false;
        }
        q.ip_concurrent.enabled = false;
        q.deny_after = 0;
        self.reputation.warmup = false;
        self.content.bulk_recipients = 0;
        self
    }

    /// The banner host name in force.
    pub fn host(&self) -> &str {
        self.host
            .as_deref()
            .unwrap_or_else(|| self.generation.default_host())
    }

    /// The banner host name of the listener called `mx` (see [`ListenerConfig::host`]).
    pub fn listener_host(&self, mx: &str) -> &str {
        self.listeners
            .0
            .get(mx)
            .and_then(|l| l.host.as_deref())
            .or(self.host.as_deref())
            .or_else(|| self.generation.mx_host(mx))
            .unwrap_or_else(|| self.generation.default_host())
    }

    /// The reply catalogue this config describes, for the banner host name in force.
    pub(crate) fn catalogue(&self) -> Catalogue {
        self.catalogue_for(self.host())
    }

    /// The reply catalogue of the listener called `mx`: its banner host name, and
    /// exmail's profile ([`Profile::Exmail`](crate::reply::Profile)) for exmail's hosts
    /// (`mxbiz1`, `mxbiz2`, ...).
    pub(crate) fn listener_catalogue(&self, mx: &str) -> Catalogue {
        let profile = if mx.starts_with("mxbiz") {
            crate::reply::Profile::Exmail
        } else {
            crate::reply::Profile::Qq
        };
        self.catalogue_for(self.listener_host(mx))
            .with_profile(profile)
    }

    /// The reply catalogue this config describes, answering as `host`.
    pub(crate) fn catalogue_for(&self, host: &str) -> Catalogue {
        let mut catalogue = Catalogue::new(self.generation, host, self.limits.max_message_size);
        for (kind, template) in &self.replies {
            catalogue
                .set_override(*kind, template)
                .expect("overrides are checked when the config is parsed");
        }
        catalogue
    }

    /// The start of a manual clock.
    ///
    /// # Panics
    ///
    /// When `clock.start` is not an RFC 3339 time, which [`check`](Self::check) and
    /// parsing report as an error: check a config built in code first.
    pub(crate) fn clock_start(&self) -> SystemTime {
        let start = self.clock.start.as_deref().unwrap_or(DEFAULT_START);
        parse_rfc3339(start).expect("the start is checked when the config is parsed")
    }

    /// The clock this config asks for; `fallback` decides when the mode is unset.
    ///
    /// # Panics
    ///
    /// For a manual clock, when `clock.start` is not an RFC 3339 time, which
    /// [`check`](Self::check) and parsing report as an error.
    pub fn make_clock(&self, fallback: ClockMode) -> Clock {
        match self.clock.mode.unwrap_or(fallback) {
            ClockMode::System => Clock::system(),
            ClockMode::Manual => Clock::manual(self.clock_start()),
        }
    }
}
