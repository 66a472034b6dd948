//! An accepted message and where it was delivered.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::policy::AuthReport;

/// Where an accepted message was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Folder {
    /// The inbox.
    Inbox,
    /// The junk folder.
    Junk,
}

/// A message answered `250` at end of data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Message {
    /// Store-wide number, from 1.
    pub id: u64,
    /// The session it arrived in.
    pub session: u64,
    /// The simulated MX host it arrived at (`mx1`).
    pub mx: String,
    /// When it was accepted, by the server's clock.
    #[serde(with = "crate::clock::rfc3339")]
    pub received_at: SystemTime,
    /// The client's IP address, as events and filters name it.
    pub client: IpAddr,
    /// The client's TCP port.
    pub client_port: u16,
    /// The HELO/EHLO argument.
    pub helo: String,
    /// The reverse path, empty for the null sender.
    pub mail_from: String,
    /// The accepted recipients.
    pub rcpt_to: Vec<String>,
    /// Whether it arrived over TLS.
    pub tls: bool,
    /// Where it was delivered.
    pub folder: Folder,
    /// SPF, DKIM and DMARC results, when authentication is on.
    pub auth: Option<AuthReport>,
    /// The message as stored, with the headers qqmx added (`Received`, `X-QQ-mid`).
    #[serde(skip)]
    pub raw: Arc<[u8]>,
}

impl Message {
    /// The stored bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.raw)
    }

    /// The header fields, in order, unfolded (a continuation line joins its field with
    /// one space), names as written and values trimmed.
    pub fn headers(&self) -> Vec<(String, String)> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = fields.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                fields.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        fields
    }

    /// The first header called `name` (case-insensitive), unfolded, without its name.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// The body after the first blank line.
    pub fn body(&self) -> &[u8] {
        self.raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(&[][..], |i| &self.raw[i + 4..])
    }
}
