//! Validation: what serde cannot check (ranges, times, names, stages), as a [`Problem`]
//! that names the table and key, turned into a [`ConfigError`] with the file and line.

use std::path::Path;
use std::time::Duration;

use super::{Config, ConfigError, ListEntry};
use crate::clock::parse_rfc3339;
use crate::reply::Catalogue;
use crate::units::{IpNet, Stage, duration_text};

/// What is wrong with a value, and which key holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The table holding the key (`limits`, `quotas.sender`); empty at the top level.
    pub table: String,
    /// The key inside the table.
    pub key: String,
    /// Which of the tables of an array of tables (`[[expect]]`), from 0; `None` for a
    /// plain table.
    pub index: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// `key` of `table` is wrong: `message`.
    pub fn new(table: &str, key: &str, message: impl Into<String>) -> Self {
        Self {
            table: table.to_owned(),
            key: key.to_owned(),
            index: None,
            message: message.into(),
        }
    }

    /// `key` of the `index`th (from 0) table of the array of tables `table`
    /// (`[[expect]]`) is wrong: `message`. The error points at the key in that table,
    /// or at its header when the key is not written there.
    pub fn nth(table: &str, index: usize, key: &str, message: impl Into<String>) -> Self {
        Self {
            index: Some(index),
            ..Self::new(table, key, message)
        }
    }

    /// The error naming `path` and the position of the key.
    pub fn at(self, path: &Path, line: usize, column: usize) -> ConfigError {
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            key: if self.table.is_empty() {
                self.key
            } else {
                format!("{}.{}", self.table, self.key)
            },
            message: self.message,
        }
    }
}

impl Config {
    /// Checks a config built in code, as parsing checks a file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the key (the path is `<config>`, the line 0).
    pub fn check(&self) -> Result<(), ConfigError> {
        self.validate()
            .map_err(|problem| problem.at(Path::new("<config>"), 0, 0))
    }

    /// Checks what serde cannot: the first problem found.
    pub(super) fn validate(&self) -> Result<(), Problem> {
        self.validate_core()?;
        if let Some((name, why)) = self.dns.bad_name() {
            return Err(Problem::new("dns.records", name, why));
        }
        self.validate_policy()
    }

    fn validate_policy(&self) -> Result<(), Problem> {
        let err = |t: &str, k: &str, m: String| Err(Problem::new(t, k, m));
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

    fn validate_core(&self) -> Result<(), Problem> {
        self.state.validate()?;
        if let Some(start) = &self.clock.start
            && parse_rfc3339(start).is_none()
        {
            return Err(Problem::new(
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
                return Err(Problem::new(
                    "limits",
                    key,
                    format!("{value} is not from {min} to {max}"),
                ));
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
                return Err(Problem::new(
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
                return Err(Problem::new("limits", key, "must be longer than zero"));
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            let key = if self.tls.cert.is_some() {
                "key"
            } else {
                "cert"
            };
            return Err(Problem::new(
                "tls",
                key,
                "`cert` and `key` must be given together",
            ));
        }
        if self.tls.cert.is_some() && self.tls.uses_ca() {
            let key = if self.tls.ca { "ca" } else { "ca_cert" };
            return Err(Problem::new(
                "tls",
                key,
                "a test CA issues the listeners' certificates, so `cert` and `key` cannot be given too",
            ));
        }
        for (key, value, min) in [
            ("max_messages", self.store.max_messages, 1),
            ("max_events", self.store.max_events, 1),
            ("max_bytes", self.store.max_bytes, 1024),
            ("max_event_bytes", self.store.max_event_bytes, 1024),
        ] {
            if value < min {
                return Err(Problem::new(
                    "store",
                    key,
                    format!("must be at least {min}"),
                ));
            }
        }
        let mut catalogue = Catalogue::new(self.generation, "", 0);
        for (kind, template) in &self.replies {
            catalogue
                .set_override(*kind, template)
                .map_err(|e| Problem::new("replies", kind.name(), e.problem))?;
        }
        Ok(())
    }
}
