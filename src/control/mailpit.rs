//! Mailpit's shapes, where qqmx's messages and Mailpit's are the same thing: the
//! capitalised fields of a message summary and of a message, the header map, the search
//! language (`to:`, `from:`, `subject:`, `before:`, `after:` and plain words) and the
//! body of `DELETE /api/v1/messages`. They let a test or client library written for
//! Mailpit read and delete qqmx's messages.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::ApiError;
use super::wire::Answer;
use crate::clock::parse_rfc3339;
use crate::store::Message;

/// A name and address from a header such as `From` or `To`.
#[derive(Serialize)]
pub(super) struct Address {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Address")]
    address: String,
}

/// The addresses of a header field's value: `Name <a@b>` or `a@b`, comma-separated;
/// names are given as written (an encoded word stays encoded).
fn addresses(value: &str) -> Vec<Address> {
    let mut parts = Vec::new();
    let (mut quoted, mut angled, mut part) = (false, false, String::new());
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angled = true,
            '>' if !quoted => angled = false,
            ',' if !quoted && !angled => {
                parts.push(std::mem::take(&mut part));
                continue;
            }
            _ => {}
        }
        part.push(c);
    }
    parts.push(part);
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| match (p.rfind('<'), p.rfind('>')) {
            (Some(open), Some(close)) if open < close => Address {
                name: p[..open].trim().trim_matches('"').trim().to_owned(),
                address: p[open + 1..close].trim().to_owned(),
            },
            _ => Address {
                name: String::new(),
                address: p.to_owned(),
            },
        })
        .collect()
}

fn header_addresses(message: &Message, name: &str) -> Vec<Address> {
    message
        .headers()
        .iter()
        .filter(|(field, _)| field.eq_ignore_ascii_case(name))
        .flat_map(|(_, value)| addresses(value))
        .collect()
}

/// The `Message-ID` header without its angle brackets, or empty.
fn message_id(message: &Message) -> String {
    message
        .header("message-id")
        .map(|id| id.trim_start_matches('<').trim_end_matches('>').to_owned())
        .unwrap_or_default()
}

/// The body as text, for `Text` and `Snippet`: transfer encodings and MIME parts are
/// not decoded.
fn text(message: &Message) -> String {
    String::from_utf8_lossy(message.body()).into_owned()
}

/// The longest snippet, in characters, as Mailpit's.
const SNIPPET: usize = 250;

/// The fields Mailpit's list entry (`MessageSummary`) and one message (`Message`) share.
#[derive(Serialize)]
struct Common {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "MessageID")]
    message_id: String,
    /// qqmx keeps no read state: every message reads as read.
    #[serde(rename = "Read")]
    read: bool,
    #[serde(rename = "From")]
    from: Option<Address>,
    #[serde(rename = "To")]
    to: Vec<Address>,
    #[serde(rename = "Cc")]
    cc: Vec<Address>,
    #[serde(rename = "Bcc")]
    bcc: Vec<Address>,
    #[serde(rename = "ReplyTo")]
    reply_to: Vec<Address>,
    #[serde(rename = "Subject")]
    subject: String,
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Tags")]
    tags: Vec<String>,
    #[serde(rename = "Size")]
    size: usize,
}

impl Common {
    /// The fields of `message`; with the Redis state, its `ID` names its `replica`
    /// (`b:7`), which the id routes of any replica take.
    fn new(message: &Message, replica: Option<&str>) -> Self {
        Self {
            id: match replica {
                Some(replica) => format!("{replica}:{}", message.id),
                None => message.id.to_string(),
            },
            message_id: message_id(message),
            read: true,
            from: header_addresses(message, "from").into_iter().next(),
            to: header_addresses(message, "to"),
            cc: header_addresses(message, "cc"),
            bcc: header_addresses(message, "bcc"),
            reply_to: header_addresses(message, "reply-to"),
            subject: message.header("subject").unwrap_or_default(),
            username: String::new(),
            tags: Vec::new(),
            size: message.raw.len(),
        }
    }
}

/// Mailpit's fields of a message in a list (`MessageSummary`).
#[derive(Serialize)]
pub(super) struct Summary {
    #[serde(flatten)]
    common: Common,
    #[serde(rename = "Created", with = "crate::clock::rfc3339")]
    created: SystemTime,
    /// qqmx does not take MIME parts apart: always 0.
    #[serde(rename = "Attachments")]
    attachments: usize,
    #[serde(rename = "Snippet")]
    snippet: String,
}

impl Summary {
    pub(super) fn new(message: &Message, replica: Option<&str>) -> Self {
        let snippet = text(message)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(SNIPPET)
            .collect();
        Self {
            common: Common::new(message, replica),
            created: message.received_at,
            attachments: 0,
            snippet,
        }
    }
}

/// An attachment as Mailpit lists one; qqmx lists none.
#[derive(Serialize)]
pub(super) struct Attachment {}

/// Mailpit's fields of one message (`Message`).
#[derive(Serialize)]
pub(super) struct Detail {
    #[serde(flatten)]
    common: Common,
    /// The envelope sender.
    #[serde(rename = "ReturnPath")]
    return_path: String,
    /// When qqmx accepted it (the `Date` header is not parsed).
    #[serde(rename = "Date", with = "crate::clock::rfc3339")]
    date: SystemTime,
    /// The body after the header, undecoded.
    #[serde(rename = "Text")]
    text: String,
    #[serde(rename = "HTML")]
    html: String,
    #[serde(rename = "Inline")]
    inline: Vec<Attachment>,
    #[serde(rename = "Attachments")]
    attachments: Vec<Attachment>,
}

impl Detail {
    pub(super) fn new(message: &Message, replica: Option<&str>) -> Self {
        Self {
            common: Common::new(message, replica),
            return_path: message.mail_from.clone(),
            date: message.received_at,
            text: text(message),
            html: String::new(),
            inline: Vec::new(),
            attachments: Vec::new(),
        }
    }
}

/// A header name as Mailpit gives it (Go's canonical form): `Message-Id`, `X-Qq-Mid`.
fn canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let c = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            c
        })
        .collect()
}

/// The header fields as Mailpit's `GET /api/v1/message/{id}/headers` gives them: each
/// name (in canonical form, sorted) with its values in order.
pub(super) fn headers(message: &Message) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in message.headers() {
        map.entry(canonical(&name)).or_default().push(value);
    }
    map
}

/// The body of `DELETE /api/v1/messages`: Mailpit's `{"IDs": [...]}`; none, or no IDs,
/// deletes every message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteRequest {
    #[serde(rename = "IDs", alias = "ids", default)]
    pub(super) ids: Vec<String>,
}

/// The search terms qqmx understands.
pub(super) const TERMS: [&str; 5] = ["to:", "from:", "subject:", "before:", "after:"];

enum Term {
    To(String),
    From(String),
    Subject(String),
    Before(SystemTime),
    After(SystemTime),
    Word(String),
}

/// A parsed `query` of `/api/v1/search`: every term must match (a term starting with
/// `-` or `!` must not); values are matched without regard to case, as substrings.
pub(super) struct Search {
    terms: Vec<(bool, Term)>,
}

/// The words of a query; a double-quoted stretch (`subject:"two words"`) is one word.
fn words(query: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut quoted) = (String::new(), false);
    for c in query.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// A `before:`/`after:` value: a day (`2025-06-02`, midnight UTC) or an RFC 3339 time.
fn search_time(text: &str, term: &str) -> Answer<SystemTime> {
    let day = format!("{text}T00:00:00Z");
    parse_rfc3339(text)
        .or_else(|| (text.len() == 10).then(|| parse_rfc3339(&day)).flatten())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{term}{text}` is not a day such as 2025-06-02 or an RFC 3339 time such as 2025-06-02T09:00:00+08:00"
            ))
        })
}

impl Search {
    /// The query's terms, or a 400 naming a term qqmx does not know and those it does.
    pub(super) fn parse(query: &str) -> Answer<Self> {
        let mut terms = Vec::new();
        for word in words(query) {
            let (negated, word) = match word.strip_prefix(['-', '!']) {
                Some(rest) if !rest.is_empty() => (true, rest.to_owned()),
                _ => (false, word),
            };
            let lower = word.to_lowercase();
            let term = match word.split_once(':') {
                Some((key, value)) if !key.is_empty() && !key.contains('@') => {
                    let lower = value.to_lowercase();
                    match key.to_ascii_lowercase().as_str() {
                        "to" => Term::To(lower),
                        "from" => Term::From(lower),
                        "subject" => Term::Subject(lower),
                        "before" => Term::Before(search_time(value, "before:")?),
                        "after" => Term::After(search_time(value, "after:")?),
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "unknown search term `{key}:`; one of: {}, or plain words",
                                TERMS.join(", ")
                            )));
                        }
                    }
                }
                _ => Term::Word(lower),
            };
            terms.push((negated, term));
        }
        Ok(Self { terms })
    }

    pub(super) fn matches(&self, message: &Message) -> bool {
        self.terms
            .iter()
            .all(|(negated, term)| term_matches(term, message) != *negated)
    }
}

fn contains(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(needle)
}

fn header_contains(message: &Message, names: &[&str], needle: &str) -> bool {
    message.headers().iter().any(|(name, value)| {
        names.iter().any(|n| name.eq_ignore_ascii_case(n)) && contains(value, needle)
    })
}

fn term_matches(term: &Term, message: &Message) -> bool {
    match term {
        Term::To(v) => {
            message.rcpt_to.iter().any(|r| contains(r, v))
                || header_contains(message, &["to", "cc"], v)
        }
        Term::From(v) => contains(&message.mail_from, v) || header_contains(message, &["from"], v),
        Term::Subject(v) => header_contains(message, &["subject"], v),
        Term::Before(t) => message.received_at < *t,
        Term::After(t) => message.received_at >= *t,
        Term::Word(v) => contains(&message.text(), v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_and_without_names() {
        let list = addresses(r#""Doe, Jane" <jane@example.org>, bob@example.org"#);
        let pairs: Vec<(&str, &str)> = list
            .iter()
            .map(|a| (a.name.as_str(), a.address.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("Doe, Jane", "jane@example.org"), ("", "bob@example.org")]
        );
    }

    #[test]
    fn canonical_header_names() {
        assert_eq!(canonical("MESSAGE-ID"), "Message-Id");
        assert_eq!(canonical("x-qq-mid"), "X-Qq-Mid");
    }

    #[test]
    fn unknown_terms_are_refused_and_quotes_group() {
        let e = Search::parse("is:unread").err().map(|e| e.message);
        assert!(e.is_some_and(|m| m.contains("`is:`") && m.contains("subject:")));
        assert!(Search::parse("before:yesterday").is_err());
        assert_eq!(
            words(r#"subject:"two words" x"#),
            ["subject:two words", "x"]
        );
    }
}
