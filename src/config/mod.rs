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
mod policy;

pub use auth::{AuthConfig, DnsConfig, Mx, Records, Resolver, SpfStage};
pub use policy::{
    Blacklist, Block, Concurrency, Content, ListEntry, Memory, Phrase, Quota, Quotas, Reputation,
    Tier, WarmupStep,
};

use crate::clock::{Clock, parse_rfc3339};
use crate::reply::{Catalogue, Generation, ReplyKind};
use crate::units::{IpNet, Stage, duration_text};

/// Where a manual clock starts when the config does not say:
/// Monday 2025-06-02 09:00:00 in China Standard Time.
pub const DEFAULT_START: &str = "2025-06-02T01:00:00Z";

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
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cert: None,
            key: None,
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
    /// Bytes the event log may hold, counted roughly (each event's fixed size plus its
    /// text); the oldest events are evicted (and counted) beyond this. The newest event
    /// is always kept.
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

    /// Applies settings from environment variables named `QQMX__<TABLE>__<KEY>`: the path
    /// of a key in the TOML file, upper-cased, with `__` between its parts
    /// (`QQMX__LIMITS__MAX_RECIPIENTS=20`, `QQMX__CLOCK__MODE=manual`,
    /// `QQMX__LISTENERS__MX2__ADDR=0.0.0.0:25`). A value is read as TOML when it parses
    /// as one (`20`, `true`, `["a", "b"]`, `"text"`) and as a string otherwise. Other
    /// variables are ignored.
    ///
    /// ```
    /// let vars = [("QQMX__LIMITS__MAX_RECIPIENTS", "20"), ("QQMX__GENERATION", "2019")];
    /// let config = qqmx::Config::default().with_env(vars).unwrap();
    /// assert_eq!(config.limits.max_recipients, 20);
    ///
    /// let err = qqmx::Config::default()
    ///     .with_env([("QQMX__LIMITS__MAX_RECIPIENTS", "many")])
    ///     .unwrap_err();
    /// assert!(err.to_string().starts_with("$QQMX__LIMITS__MAX_RECIPIENTS: key `limits.max_recipients`"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] whose path is the variable (`$QQMX__...`) and whose key is
    /// the dotted key it sets.
    pub fn with_env<K, V>(self, vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut config = self;
        for (name, value) in vars {
            let name = name.as_ref();
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            let invalid = |message: String| ConfigError::Invalid {
                path: PathBuf::from(format!("${name}")),
                line: 0,
                column: 0,
                key: keys.join("."),
                message,
            };
            if keys.iter().any(String::is_empty) {
                return Err(invalid("empty key in the variable's name".into()));
            }
            let mut tree = toml::Table::try_from(&config)
                .map_err(|e| invalid(format!("cannot represent the config: {e}")))?;
            set_path(&mut tree, &keys, env_value(value.as_ref())).map_err(invalid)?;
            config =
                Config::deserialize(tree).map_err(|e| invalid(e.message().trim().to_owned()))?;
            config
                .validate()
                .map_err(|(_, _, message)| invalid(message))?;
        }
        Ok(config)
    }

    /// Checks a config built in code, as parsing checks a file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the key (the path is `<config>`, the line 0).
    pub fn check(&self) -> Result<(), ConfigError> {
        self.validate()
            .map_err(|(table, key, message)| ConfigError::Invalid {
                path: PathBuf::from("<config>"),
                line: 0,
                column: 0,
                key: if table.is_empty() {
                    key
                } else {
                    format!("{table}.{key}")
                },
                message,
            })
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

    /// Checks what serde cannot: returns (table, key, message) of the first problem.
    fn validate(&self) -> Result<(), (String, String, String)> {
        self.validate_core()
            .map_err(|(t, k, m)| (t.to_owned(), k.to_owned(), m))?;
        if let Some((name, why)) = self.dns.bad_name() {
            return Err(("dns.records".into(), name.to_owned(), why));
        }
        self.validate_policy()
    }

    fn validate_policy(&self) -> Result<(), (String, String, String)> {
        let err = |t: &str, k: &str, m: String| Err((t.to_owned(), k.to_owned(), m));
        let q = &self.quotas;
        // Message quotas are checked by `Policy::check` and at the end of data; only the
        // connection quota has a check at connect.
        for (name, quota, earliest) in [
            ("ip_messages", &q.ip_messages, Stage::Helo),
            ("ip_connections", &q.ip_connections, Stage::Connect),
            ("sender", &q.sender, Stage::Mail),
            ("domain", &q.domain, Stage::Mail),
            ("recipient", &q.recipient, Stage::Rcpt),
        ] {
            if quota.stage < earliest {
                return err(
                    &format!("quotas.{name}"),
                    "stage",
                    format!("the {name} quota cannot be answered before `{earliest}`"),
                );
            }
        }
        let b = &self.blacklist;
        if b.sender_stage < Stage::Mail {
            return err(
                "blacklist",
                "sender_stage",
                "senders are known from `mail` on".into(),
            );
        }
        for (key, p) in [
            ("random_ip_probability", b.random_ip_probability),
            ("random_domain_probability", b.random_domain_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return err(
                    "blacklist",
                    key,
                    format!("{p} is not a probability from 0 to 1"),
                );
            }
        }
        for entry in &b.ips {
            if let Err(e) = entry.value().parse::<IpNet>() {
                return err("blacklist", "ips", e.to_string());
            }
        }
        for (key, entries) in [
            ("ips", &b.ips),
            ("senders", &b.senders),
            ("domains", &b.domains),
        ] {
            if let Some(until) = entries
                .iter()
                .filter_map(ListEntry::until)
                .find(|u| parse_rfc3339(u).is_none())
            {
                return err(
                    "blacklist",
                    key,
                    format!("`{until}` is not an RFC 3339 time"),
                );
            }
        }
        let mut last = 0;
        for step in &self.reputation.warmup_schedule {
            if step.until_day <= last {
                return err(
                    "reputation",
                    "warmup_schedule",
                    "`until_day` must start at 1 or more and grow from step to step".into(),
                );
            }
            last = step.until_day;
        }
        if self.content.phrases.iter().any(|p| p.phrase.is_empty()) {
            return err("content", "phrases", "a phrase cannot be empty".into());
        }
        if !(1..=1_000_000_000).contains(&self.memory.max_tracked_keys) {
            return err(
                "memory",
                "max_tracked_keys",
                "must be from 1 to 1000000000".into(),
            );
        }
        let s = &self.stages;
        for (key, stage, allowed) in [
            (
                "message_too_large",
                s.message_too_large,
                [Stage::Mail, Stage::EndOfData],
            ),
            (
                "rejected_by_recipients",
                s.rejected_by_recipients,
                [Stage::Rcpt, Stage::EndOfData],
            ),
            (
                "bounce_attack",
                s.bounce_attack,
                [Stage::Rcpt, Stage::EndOfData],
            ),
        ] {
            if !allowed.contains(&stage) {
                return err(
                    "stages",
                    key,
                    format!("expected `{}` or `{}`", allowed[0], allowed[1]),
                );
            }
        }
        Ok(())
    }

    fn validate_core(&self) -> Result<(), (&'static str, &str, String)> {
        if let Some(start) = &self.clock.start
            && parse_rfc3339(start).is_none()
        {
            return Err((
                "clock",
                "start",
                format!("`{start}` is not an RFC 3339 time such as 2025-06-02T09:00:00+08:00"),
            ));
        }
        // Zero would refuse everything (a zero idle timeout closes every session after
        // the banner), and the upper bounds catch a unit mistaken (bytes for megabytes).
        let l = &self.limits;
        for (key, value, min, max) in [
            ("max_line_length", l.max_line_length as u64, 64, 1 << 20),
            ("max_message_size", l.max_message_size, 100, 1 << 32),
            ("max_recipients", l.max_recipients as u64, 1, 100_000),
            ("max_commands", l.max_commands as u64, 1, 100_000_000),
            ("max_connections", l.max_connections as u64, 1, 1_000_000),
        ] {
            if !(min..=max).contains(&value) {
                return Err(("limits", key, format!("{value} is not from {min} to {max}")));
            }
        }
        for (key, value, max) in [
            (
                "idle_timeout",
                l.idle_timeout,
                Duration::from_secs(24 * 3600),
            ),
            (
                "session_timeout",
                l.session_timeout,
                Duration::from_secs(7 * 24 * 3600),
            ),
        ] {
            let min = Duration::from_millis(100);
            if !(min..=max).contains(&value) {
                return Err((
                    "limits",
                    key,
                    format!(
                        "`{}` is not from `{}` to `{}`",
                        duration_text::Text(value),
                        duration_text::Text(min),
                        duration_text::Text(max)
                    ),
                ));
            }
        }
        for (key, value) in [
            ("command_timeout", self.limits.command_timeout),
            ("min_data_rate_window", self.limits.min_data_rate_window),
        ] {
            if value.is_zero() {
                return Err(("limits", key, "must be longer than zero".into()));
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            let key = if self.tls.cert.is_some() {
                "key"
            } else {
                "cert"
            };
            return Err(("tls", key, "`cert` and `key` must be given together".into()));
        }
        for (key, value, min) in [
            ("max_messages", self.store.max_messages, 1),
            ("max_events", self.store.max_events, 1),
            ("max_bytes", self.store.max_bytes, 1024),
            ("max_event_bytes", self.store.max_event_bytes, 1024),
        ] {
            if value < min {
                return Err(("store", key, format!("must be at least {min}")));
            }
        }
        let mut catalogue = Catalogue::new(self.generation, "", 0);
        for (kind, template) in &self.replies {
            catalogue
                .set_override(*kind, template)
                .map_err(|e| ("replies", kind.name(), e.problem))?;
        }
        Ok(())
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
    pub fn catalogue(&self) -> Catalogue {
        self.catalogue_for(self.host())
    }

    /// The reply catalogue of the listener called `mx`: its banner host name, and
    /// exmail's profile ([`Profile::Exmail`](crate::reply::Profile)) for exmail's hosts
    /// (`mxbiz1`, `mxbiz2`, ...).
    pub fn listener_catalogue(&self, mx: &str) -> Catalogue {
        let profile = if mx.starts_with("mxbiz") {
            crate::reply::Profile::Exmail
        } else {
            crate::reply::Profile::Qq
        };
        self.catalogue_for(self.listener_host(mx))
            .with_profile(profile)
    }

    /// The reply catalogue this config describes, answering as `host`.
    pub fn catalogue_for(&self, host: &str) -> Catalogue {
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
    pub fn clock_start(&self) -> SystemTime {
        let start = self.clock.start.as_deref().unwrap_or(DEFAULT_START);
        parse_rfc3339(start).expect("the start is checked when the config is parsed")
    }

    /// The clock this config asks for; `fallback` decides when the mode is unset.
    ///
    /// # Panics
    ///
    /// As [`clock_start`](Self::clock_start), for a manual clock.
    pub fn make_clock(&self, fallback: ClockMode) -> Clock {
        match self.clock.mode.unwrap_or(fallback) {
            ClockMode::System => Clock::system(),
            ClockMode::Manual => Clock::manual(self.clock_start()),
        }
    }
}

/// `:line:column`, or nothing when the line is unknown (0).
fn location(line: usize, column: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}:{column}")
    }
}

/// Environment variables that set config keys start with this.
pub const ENV_PREFIX: &str = "QQMX__";

/// A value from the environment: TOML when it parses as a TOML value, else a string.
fn env_value(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

/// Sets `keys` (a path of tables) in `tree` to `value`, making tables on the way.
fn set_path(tree: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, tables)) = keys.split_last() else {
        return Err("no key".into());
    };
    let mut table = tree;
    for (i, key) in tables.iter().enumerate() {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{}` is a value, not a table", keys[..=i].join(".")))?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

/// Parses TOML `text` into a `T` and checks it with `validate`, which returns the
/// (table, key, message) of the first problem; errors name `path`, the line and the key.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
    validate: impl FnOnce(&T) -> Result<(), (String, String, String)>,
) -> Result<T, ConfigError> {
    let value: T = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let (line, column) = line_col(text, offset);
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            key: key_at(text, line).unwrap_or_else(|| "(document)".into()),
            message: e.message().trim().to_owned(),
        }
    })?;
    validate(&value).map_err(|(table, key, message)| {
        let (line, column) = locate(text, &table, &key).unwrap_or((0, 0));
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            key: if table.is_empty() {
                key
            } else {
                format!("{table}.{key}")
            },
            message,
        }
    })?;
    Ok(value)
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The table header in force at `line` (1-based), without brackets.
fn table_at(text: &str, line: usize) -> String {
    text.lines()
        .take(line)
        .filter_map(|l| {
            let l = l.trim();
            let inner = l.strip_prefix('[')?.split(']').next()?;
            Some(inner.trim_matches('[').trim().to_owned())
        })
        .last()
        .unwrap_or_default()
}

/// The dotted key defined on `line` (1-based), if the line is `key = value`.
fn key_at(text: &str, line: usize) -> Option<String> {
    let source = text.lines().nth(line.checked_sub(1)?)?;
    let trimmed = source.trim();
    if trimmed.starts_with('[') {
        return Some(trimmed.trim_matches(|c| c == '[' || c == ']').to_owned());
    }
    let key = source.split('=').next()?.trim().trim_matches('"');
    if key.is_empty() || !source.contains('=') {
        return None;
    }
    let table = table_at(text, line);
    Some(if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    })
}

/// Line and column of `key` inside `[table]` (top level when `table` is empty).
fn locate(text: &str, table: &str, key: &str) -> Option<(usize, usize)> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            current = table_at(line, 1);
            continue;
        }
        let candidate = trimmed
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if current == table && candidate == key && trimmed.contains('=') {
            return Some((i + 1, line.len() - trimmed.len() + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_the_default() {
        let text = include_str!("../../qqmx.example.toml");
        let config = Config::from_toml(text).expect("example parses");
        assert_eq!(config, Config::default());
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = Config::from_toml("seed = 1\n\n[limits]\nmax_line = 10\n").expect_err("typo");
        let text = err.to_string();
        assert!(
            text.starts_with("<inline>:4:1: key `limits.max_line`: unknown field `max_line`"),
            "{text}"
        );
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        let err = Config::from_toml("[limits]\nidle_timeout = \"soon\"\n").expect_err("bad");
        assert!(
            err.to_string()
                .starts_with("<inline>:2:16: key `limits.idle_timeout`: `soon` is not a duration"),
            "{err}"
        );
        let err = Config::from_toml("generation = \"2020\"\n").expect_err("bad");
        assert!(
            err.to_string()
                .starts_with("<inline>:1:14: key `generation`: unknown generation `2020`"),
            "{err}"
        );
    }

    #[test]
    fn zero_and_absurd_limits_are_refused_by_name() {
        for (toml, key) in [
            ("[limits]\nidle_timeout = \"0s\"\n", "limits.idle_timeout"),
            ("[limits]\nidle_timeout = \"30d\"\n", "limits.idle_timeout"),
            (
                "[limits]\nsession_timeout = \"0ms\"\n",
                "limits.session_timeout",
            ),
            (
                "[limits]\nmax_message_size = 0\n",
                "limits.max_message_size",
            ),
            (
                "[limits]\nmax_line_length = 100000000\n",
                "limits.max_line_length",
            ),
            ("[limits]\nmax_connections = 0\n", "limits.max_connections"),
            ("[store]\nmax_events = 0\n", "store.max_events"),
            ("[store]\nmax_bytes = 10\n", "store.max_bytes"),
        ] {
            let err = Config::from_toml(toml).expect_err(toml);
            assert!(err.to_string().contains(&format!("key `{key}`")), "{err}");
        }
        let err = Config::from_toml("[limits]\nidle_timeout = \"0s\"\n").expect_err("zero");
        assert!(
            err.to_string()
                .ends_with("key `limits.idle_timeout`: `0ms` is not from `100ms` to `1d`"),
            "{err}"
        );
        let mut config = Config::default();
        config.limits.idle_timeout = Duration::ZERO;
        assert!(config.check().is_err());
        Config::from_toml("[limits]\nidle_timeout = \"200ms\"\nmax_message_size = 1000\n")
            .expect("small but sensible limits");
    }

    #[test]
    fn semantic_errors_point_at_the_key() {
        let text = "[clock]\nmode = \"manual\"\nstart = \"tomorrow\"\n";
        let err = Config::from_toml(text).expect_err("bad start");
        assert!(
            err.to_string()
                .starts_with("<inline>:3:1: key `clock.start`"),
            "{err}"
        );
        let text = "[replies]\nbye = \"goodbye\"\n";
        let err = Config::from_toml(text).expect_err("bad template");
        assert!(
            err.to_string()
                .starts_with("<inline>:2:1: key `replies.bye`: line 1 must start"),
            "{err}"
        );
        let err = Config::from_toml("[replies]\nhello = \"250 hi\"\n").expect_err("kind");
        assert!(
            err.to_string()
                .starts_with("<inline>:2:1: key `replies.hello`: unknown variant `hello`"),
            "{err}"
        );
    }

    #[test]
    fn files_are_named_in_errors() {
        let dir = std::env::temp_dir().join(format!("qqmx-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("broken.toml");
        std::fs::write(&path, "[tls]\nenabled = 3\n").expect("write");
        let err = Config::from_file(&path).expect_err("bad type");
        assert!(
            err.to_string()
                .starts_with(&format!("{}:2:11: key `tls.enabled`", path.display())),
            "{err}"
        );
        let err = Config::from_file(dir.join("missing.toml")).expect_err("missing");
        assert!(matches!(err, ConfigError::Read { .. }));
    }

    #[test]
    fn a_quota_table_changes_only_what_it_names() {
        let text = "[quotas.ip_messages]\nminute = { limit = 5 }\nhour = \"off\"\n";
        let config = Config::from_toml(text).expect("partial quota");
        let q = &config.quotas.ip_messages;
        let default = Config::default().quotas.ip_messages;
        assert_eq!(
            q.minute.map(|t| (t.limit, t.block)),
            Some((5, default.minute.expect("tier").block))
        );
        assert_eq!(q.hour, None);
        assert_eq!(
            (q.day, q.stage, q.reply, q.enabled),
            (default.day, default.stage, default.reply, true)
        );
        let err =
            Config::from_toml("[quotas.sender]\nminute = { limit = \"x\" }\n").expect_err("bad");
        assert!(err.to_string().contains("key `quotas.sender"), "{err}");
    }

    #[test]
    fn message_quotas_cannot_be_answered_at_connect() {
        let text = "seed = 1\n[quotas.ip_messages]\nstage = \"connect\"\n";
        let err = Config::from_toml(text).expect_err("ip_messages at connect");
        assert_eq!(
            err.to_string(),
            "<inline>:3:1: key `quotas.ip_messages.stage`: the ip_messages quota cannot be \
             answered before `helo`"
        );
        let text = "[quotas.ip_messages]\nstage = \"helo\"\n";
        assert!(Config::from_toml(text).is_ok(), "helo is the earliest");
        let text = "[quotas.ip_connections]\nstage = \"connect\"\n";
        assert!(
            Config::from_toml(text).is_ok(),
            "connections are counted at connect"
        );
    }
}
