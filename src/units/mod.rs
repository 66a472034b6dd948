//! The vocabulary every layer shares: where in the conversation something happens
//! ([`Stage`]), IP networks ([`IpNet`]), calendar windows ([`Window`]), quota names
//! ([`QuotaName`]) and durations written as text ([`parse_duration`]).
//!
//! These are plain values with no behaviour beyond parsing and printing; the config, the
//! policy, scenarios and the API all speak of them, so they live below all of those.

mod duration;
mod net;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::CST_OFFSET_SECS;

pub(crate) use duration::duration_text;
pub use duration::parse_duration;
pub use net::{IpNet, IpNetError};

/// Where in the conversation a decision is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Stage {
    /// A client has connected.
    Connect,
    /// HELO or EHLO.
    Helo,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// The DATA command.
    Data,
    /// The final dot of DATA.
    EndOfData,
}

impl Stage {
    /// Every stage, in the order of a conversation.
    pub const ALL: [Stage; 6] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::EndOfData,
    ];
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Helo => "helo",
            Self::Mail => "mail",
            Self::Rcpt => "rcpt",
            Self::Data => "data",
            Self::EndOfData => "end_of_data",
        })
    }
}

/// A calendar window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// A calendar minute.
    Minute,
    /// A clock hour.
    Hour,
    /// Midnight to midnight in China Standard Time (UTC+8).
    Day,
}

impl Window {
    /// The three windows, shortest first.
    pub const ALL: [Window; 3] = [Window::Minute, Window::Hour, Window::Day];

    /// The number of the window that holds `secs` (Unix seconds).
    pub(crate) fn index(self, secs: u64) -> u64 {
        match self {
            Self::Minute => secs / 60,
            Self::Hour => secs / 3600,
            Self::Day => (secs + CST_OFFSET_SECS as u64) / 86_400,
        }
    }

    /// Unix seconds at which the window holding `secs` ends.
    pub(crate) fn end(self, secs: u64) -> u64 {
        match self {
            Self::Minute => (self.index(secs) + 1) * 60,
            Self::Hour => (self.index(secs) + 1) * 3600,
            Self::Day => (self.index(secs) + 1) * 86_400 - CST_OFFSET_SECS as u64,
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day (UTC+8)",
        })
    }
}

/// Which quota a counter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum QuotaName {
    /// Messages accepted per IP.
    IpMessages,
    /// Connections per IP.
    IpConnections,
    /// Messages accepted per sender address.
    Sender,
    /// Messages accepted per sender domain.
    Domain,
    /// Messages accepted per recipient.
    Recipient,
}

impl QuotaName {
    /// Every quota with tiers.
    pub const ALL: [QuotaName; 5] = [
        QuotaName::IpMessages,
        QuotaName::IpConnections,
        QuotaName::Sender,
        QuotaName::Domain,
        QuotaName::Recipient,
    ];

    /// The prefix of its keys in decisions (`ip:`, `sender:`, ...).
    pub(crate) fn key_prefix(self) -> &'static str {
        match self {
            Self::IpMessages | Self::IpConnections => "ip",
            Self::Sender => "sender",
            Self::Domain => "domain",
            Self::Recipient => "recipient",
        }
    }

    /// The config key (`ip_messages`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::IpMessages => "ip_messages",
            Self::IpConnections => "ip_connections",
            Self::Sender => "sender",
            Self::Domain => "domain",
            Self::Recipient => "recipient",
        }
    }
}

impl fmt::Display for QuotaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cst_days_start_at_16_00_utc() {
        // 2025-06-02T15:59:59Z is 23:59:59 in China; one second later is a new day.
        let before = 1_748_879_999;
        assert_ne!(Window::Day.index(before), Window::Day.index(before + 1));
        assert_eq!(Window::Day.end(before), before + 1);
    }
}
