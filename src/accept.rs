//! Accept loops' shared care: which accept errors concern one connection only, pauses
//! that grow while the listener keeps failing (out of file descriptors), and warnings
//! logged at most once a period. Used by the SMTP listeners and the control API.

use std::io;
use std::time::Duration;

use tokio::time::Instant;

/// How often a warning about a recurring condition is logged at most.
pub(crate) const LOG_PERIOD: Duration = Duration::from_secs(10);
/// The first and the longest pause after the listener fails (out of file descriptors).
pub(crate) const FIRST_PAUSE: Duration = Duration::from_millis(10);
pub(crate) const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// Whether an accept error concerns only the connection being accepted (the listener is
/// fine: go on at once).
pub(crate) fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Says at most once per [`LOG_PERIOD`] that something keeps happening.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    logged: Option<Instant>,
    /// Times since the last log line.
    count: u64,
}

impl Throttle {
    /// One more time; `Some(times since the last line)` when a line is due.
    pub(crate) fn hit(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        if self
            .logged
            .is_some_and(|at| now.saturating_duration_since(at) < LOG_PERIOD)
        {
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// Pauses after failed accepts: doubling from [`FIRST_PAUSE`] to [`LONGEST_PAUSE`] while
/// they keep failing, with a log line at most once per [`LOG_PERIOD`].
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    pause: Option<Duration>,
    log: Throttle,
}

impl Backoff {
    /// The pause after one more failure, and whether to log it (with the failures since
    /// the last line).
    pub(crate) fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        let pause = self
            .pause
            .map_or(FIRST_PAUSE, |p| (p * 2).min(LONGEST_PAUSE));
        self.pause = Some(pause);
        (pause, self.log.hit(now))
    }

    pub(crate) fn succeeded(&mut self) {
        self.pause = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_accepts_back_off_and_log_once_a_period() {
        let start = Instant::now();
        let mut backoff = Backoff::default();
        let mut now = start;
        let mut lines = Vec::new();
        let mut pauses = Vec::new();
        // A minute of failures, each after the pause the last one asked for.
        while now < start + Duration::from_secs(60) {
            let (pause, log) = backoff.failed(now);
            if let Some(n) = log {
                lines.push(n);
            }
            pauses.push(pause);
            now += pause;
        }
        assert_eq!(&pauses[..4], [10, 20, 40, 80].map(Duration::from_millis));
        assert!(pauses.iter().all(|p| *p <= LONGEST_PAUSE));
        assert!(pauses.len() < 80, "{} attempts in a minute", pauses.len());
        assert_eq!(lines.len(), 6, "one line per 10 s: {lines:?}");
        assert_eq!(lines[0], 1);
        assert!(lines.iter().sum::<u64>() <= pauses.len() as u64);
        backoff.succeeded();
        assert_eq!(backoff.failed(now).0, FIRST_PAUSE);
    }
}
