//! The clock: the only way qqmx reads the time.
//!
//! A [`Clock`] is the system clock, a manual clock that a test moves with
//! [`Clock::advance`], or a virtual clock that runs at a multiple of real time (a chaos
//! scenario plays three weeks in minutes). All carry an offset, so a running sidecar on system time can be
//! moved forward too. Quotas, blocks, timestamps in headers and the event log all read
//! [`Clock::now`]; nothing else in the crate calls `SystemTime::now`.
//!
//! Socket timeouts (idle and session timeouts) are about real clients on real sockets and
//! are measured in real time by the `session` layer; they never read this clock.
//!
//! The module also holds the small calendar arithmetic qqmx needs (RFC 5322 dates in China
//! Standard Time, RFC 3339 parsing for the config), so no date crate is pulled in.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// China Standard Time, UTC+8, the zone QQ's headers and day quotas use.
pub const CST_OFFSET_SECS: i64 = 8 * 3600;

/// A source of time shared by every part of one server.
///
/// Cloning gives another handle on the same clock: advancing one advances all.
///
/// ```
/// use std::time::Duration;
/// use qqmx::Clock;
///
/// let clock = Clock::manual_at_unix(1_700_000_000);
/// let before = clock.now();
/// clock.advance(Duration::from_secs(86_400));
/// assert_eq!(clock.now().duration_since(before).unwrap(), Duration::from_secs(86_400));
/// ```
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    offset: Mutex<Duration>,
    /// When a scaled clock began to run; unset while it is held at its start.
    origin: OnceLock<std::time::Instant>,
}

#[derive(Clone, Copy)]
enum Source {
    System,
    Manual(SystemTime),
    /// `start` at `origin`, then `speed` virtual seconds per real second.
    Scaled {
        start: SystemTime,
        speed: f64,
    },
}

impl Clock {
    /// The system clock (plus whatever [`advance`](Self::advance) has added).
    pub fn system() -> Self {
        Self::with_source(Source::System)
    }

    /// A clock frozen at `start` until it is advanced.
    pub fn manual(start: SystemTime) -> Self {
        Self::with_source(Source::Manual(start))
    }

    /// A virtual clock that starts at `start` now and runs `speed` times as fast as real
    /// time (3600.0: an hour per second). A speed that is not a positive finite number
    /// counts as 1.
    ///
    /// ```
    /// let clock = qqmx::Clock::scaled(std::time::SystemTime::UNIX_EPOCH, 3600.0);
    /// assert_eq!(clock.speed(), 3600.0);
    /// ```
    pub fn scaled(start: SystemTime, speed: f64) -> Self {
        let clock = Self::scaled_held(start, speed);
        clock.release();
        clock
    }

    /// A virtual clock like [`scaled`](Self::scaled) that shows `start` until
    /// [`release`](Self::release) sets it running. A scenario run holds its clock while
    /// qqmx gets ready, so its timeline starts at `start` exactly however long that takes.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// let clock = qqmx::Clock::scaled_held(UNIX_EPOCH, 3600.0);
    /// std::thread::sleep(Duration::from_millis(2));
    /// assert_eq!(clock.now(), UNIX_EPOCH); // held: no time has passed
    /// assert_eq!(clock.release(), UNIX_EPOCH);
    /// ```
    pub fn scaled_held(start: SystemTime, speed: f64) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        Self::with_source(Source::Scaled { start, speed })
    }

    /// Sets a held scaled clock running from the time it shows, and returns that time.
    /// Any other clock is unchanged and the call returns [`now`](Self::now); a second call
    /// changes nothing.
    pub fn release(&self) -> SystemTime {
        match self.inner.source {
            Source::Scaled { start, .. } if self.inner.origin.get().is_none() => {
                let shown = start + *lock(&self.inner.offset);
                let _ = self.inner.origin.set(std::time::Instant::now());
                shown
            }
            _ => self.now(),
        }
    }

    /// Virtual seconds per real second: 1 for the system clock, 0 for a manual clock.
    pub fn speed(&self) -> f64 {
        match self.inner.source {
            Source::System => 1.0,
            Source::Manual(_) => 0.0,
            Source::Scaled { speed, .. } => speed,
        }
    }

    /// A manual clock starting `secs` seconds after the Unix epoch.
    pub fn manual_at_unix(secs: u64) -> Self {
        Self::manual(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn with_source(source: Source) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                offset: Mutex::new(Duration::ZERO),
                origin: OnceLock::new(),
            }),
        }
    }

    /// Whether this is a manual clock that only moves when advanced.
    pub fn is_manual(&self) -> bool {
        matches!(self.inner.source, Source::Manual(_))
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        let base = match self.inner.source {
            Source::System => SystemTime::now(),
            Source::Manual(start) => start,
            Source::Scaled { start, speed } => match self.inner.origin.get() {
                Some(origin) => start + origin.elapsed().mul_f64(speed),
                None => start,
            },
        };
        base + *lock(&self.inner.offset)
    }

    /// Seconds since the Unix epoch, saturating at zero for times before it.
    pub fn unix_secs(&self) -> u64 {
        unix_secs(self.now())
    }

    /// Moves the clock forward by `by`. Every handle on this clock sees the change.
    pub fn advance(&self, by: Duration) {
        let mut offset = lock(&self.inner.offset);
        *offset = offset.saturating_add(by);
    }

    /// How far [`advance`](Self::advance) has moved the clock in all.
    #[cfg(feature = "redis")]
    pub(crate) fn offset(&self) -> Duration {
        *lock(&self.inner.offset)
    }

    /// Moves the clock forward to an offset of `to` in all, when that is ahead of it:
    /// how replicas that share their state follow the furthest advance made on any.
    #[cfg(feature = "redis")]
    pub(crate) fn advance_to(&self, to: Duration) {
        let mut offset = lock(&self.inner.offset);
        *offset = (*offset).max(to);
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner.source {
            Source::System => "system",
            Source::Manual(_) => "manual",
            Source::Scaled { .. } => "scaled",
        };
        f.debug_struct("Clock")
            .field("kind", &kind)
            .field("now", &Rfc3339(self.now()))
            .finish()
    }
}

/// The offset is a plain value: a poisoned lock still holds a valid one.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Seconds since the Unix epoch, zero for earlier times.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A broken-down civil time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil time of `t` in a zone `offset_secs` east of UTC.
pub(crate) fn civil(t: SystemTime, offset_secs: i64) -> Civil {
    let secs = unix_secs(t) as i64 + offset_secs;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

/// An RFC 5322 date in China Standard Time, as QQ writes in its `Received` header:
/// `Tue, 29 Aug 2023 07:07:17 +0800`. Written where it is formatted, without a string of
/// its own.
#[derive(Clone, Copy)]
pub(crate) struct Rfc5322Cst(pub SystemTime);

impl fmt::Display for Rfc5322Cst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let c = civil(self.0, CST_OFFSET_SECS);
        write!(
            f,
            "{}, {} {} {} {:02}:{:02}:{:02} +0800",
            DAYS[c.weekday as usize],
            c.day,
            MONTHS[c.month as usize - 1],
            c.year,
            c.hour,
            c.minute,
            c.second
        )
    }
}

/// Formats a time as RFC 3339 in UTC, always to the microsecond
/// (`2025-06-02T01:00:00.250000Z`): the one time format of the API and reports' JSON.
#[derive(Clone, Copy)]
pub struct Rfc3339(pub SystemTime);

impl fmt::Display for Rfc3339 {
    /// Always to the microsecond (`2026-01-05T09:30:00.000000Z`), the API's one time
    /// format.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_seconds(f)?;
        let micros = self
            .0
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_micros());
        write!(f, ".{micros:06}Z")
    }
}

impl Rfc3339 {
    /// The time cut to the second, for people to read (`2026-01-05T09:30:00Z`).
    pub(crate) fn to_the_second(self) -> String {
        struct Seconds(Rfc3339);
        impl fmt::Display for Seconds {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write_seconds(f)?;
                f.write_str("Z")
            }
        }
        Seconds(self).to_string()
    }

    fn write_seconds(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = civil(self.0, 0);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )
    }
}

/// Serde for times as RFC 3339 text, as the JSON API writes them.
pub(crate) mod rfc3339 {
    use super::{Rfc3339, SystemTime, parse_rfc3339};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not an RFC 3339 time")))
    }

    /// The same for `Option<SystemTime>`.
    pub mod option {
        use super::{Rfc3339, SystemTime, parse_rfc3339};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.collect_str(&Rfc3339(*t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| {
                    parse_rfc3339(&text).ok_or_else(|| {
                        serde::de::Error::custom(format!("`{text}` is not an RFC 3339 time"))
                    })
                })
                .transpose()
        }
    }
}

impl fmt::Debug for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS` followed by `Z` or `+HH:MM` / `-HH:MM`.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut zone = &s[19..];
    let mut nanos = 0u32;
    if let Some(rest) = zone.strip_prefix('.') {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = rest[..digits].parse::<u32>().ok()? * 10u32.pow(9 - digits as u32);
        zone = &rest[digits..];
    }
    let offset: i64 = match zone {
        "Z" | "z" => 0,
        _ if zone.len() == 6 && zone.as_bytes()[3] == b':' => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let h: i64 = zone[1..3].parse().ok()?;
            let m: i64 = zone[4..6].parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::new(s, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaled_clock_runs_faster_than_real_time() {
        let clock = Clock::scaled(UNIX_EPOCH, 1_000_000.0);
        std::thread::sleep(Duration::from_millis(5));
        let elapsed = unix_secs(clock.now());
        assert!(elapsed >= 5_000, "{elapsed}");
        clock.advance(Duration::from_secs(1_000_000));
        assert!(unix_secs(clock.now()) >= 1_005_000);
        assert!(!clock.is_manual());
    }

    #[test]
    fn a_held_clock_shows_its_start_until_released() {
        let clock = Clock::scaled_held(UNIX_EPOCH, 1_000_000.0);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), UNIX_EPOCH);
        clock.advance(Duration::from_secs(60));
        assert_eq!(clock.release(), UNIX_EPOCH + Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
        assert!(unix_secs(clock.now()) >= 5_060);
        let later = clock.release();
        assert!(
            unix_secs(later) >= 5_060,
            "a second release leaves it running"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual_at_unix(1_000);
        let other = clock.clone();
        assert_eq!(clock.unix_secs(), 1_000);
        other.advance(Duration::from_secs(86_400));
        assert_eq!(clock.unix_secs(), 87_400);
    }

    #[test]
    fn formats_received_dates_in_china_standard_time() {
        // 2023-08-28T23:07:17Z is Tuesday 07:07:17 in UTC+8.
        let t = parse_rfc3339("2023-08-28T23:07:17Z").expect("valid date");
        assert_eq!(Rfc5322Cst(t).to_string(), "Tue, 29 Aug 2023 07:07:17 +0800");
    }

    #[test]
    fn fractions_of_a_second_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_748_826_000, 250_000_000);
        let text = Rfc3339(t).to_string();
        assert_eq!(text, "2025-06-02T01:00:00.250000Z");
        assert_eq!(parse_rfc3339(&text), Some(t));
        assert_eq!(
            parse_rfc3339("2025-06-02T09:00:00.5+08:00"),
            Some(UNIX_EPOCH + Duration::new(1_748_826_000, 500_000_000))
        );
        assert_eq!(parse_rfc3339("2025-06-02T01:00:00.Z"), None);
    }

    #[test]
    fn parses_offsets_and_round_trips() {
        let a = parse_rfc3339("2025-06-02T09:00:00+08:00").expect("valid");
        let b = parse_rfc3339("2025-06-02T01:00:00Z").expect("valid");
        assert_eq!(a, b);
        assert_eq!(Rfc3339(a).to_string(), "2025-06-02T01:00:00.000000Z");
        assert_eq!(parse_rfc3339("2025-13-02T01:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn civil_days_round_trip_across_leap_years() {
        for days in [-1, 0, 59, 365, 11_016, 19_000, 20_000, 50_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
