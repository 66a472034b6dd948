//! Words for reports: counts with their nouns, durations and times.

use std::time::{Duration, SystemTime};

use crate::clock::Rfc3339;

/// `1 attempt`, `2 attempts`.
pub(super) fn plural(n: impl TryInto<u64>, word: &str) -> String {
    count(n, word, &format!("{word}s"))
}

/// `1 reply`, `2 replies`.
pub(super) fn count(n: impl TryInto<u64>, one: &str, many: &str) -> String {
    let n = n.try_into().unwrap_or(u64::MAX);
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A duration in words: `0s`, `250ms`, `12s`, `1h5m`, `2d3h`.
pub(super) fn span(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return match d.as_millis() {
            0 => "0s".to_owned(),
            ms => format!("{ms}ms"),
        };
    }
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

/// A time in RFC 3339, to the second.
pub(super) fn stamp(t: SystemTime) -> String {
    Rfc3339(t).to_the_second()
}
