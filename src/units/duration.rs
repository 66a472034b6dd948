//! Durations written as text, as config and scenario files write them.

use std::time::Duration;

/// Parses a duration written as in config files: `"30s"`, `"5m"`, `"1h30m"`, `"250ms"`,
/// `"2d"`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(qqmx::units::parse_duration("1h30m"), Some(Duration::from_secs(5400)));
/// assert_eq!(qqmx::units::parse_duration("soon"), None);
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    duration_text::parse(text)
}

/// Durations written as text: `"30s"`, `"5m"`, `"1h30m"`, `"250ms"`, `"2d"`; the module
/// serde's `with` takes.
pub(crate) mod duration_text {
    use std::fmt;
    use std::time::Duration;

    use serde::Deserialize;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Text(*d))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| not_a_duration(&text))
    }

    fn not_a_duration<E: serde::de::Error>(text: &str) -> E {
        E::custom(format!(
            "`{text}` is not a duration such as \"30s\", \"5m\", \"1h30m\" or \"250ms\""
        ))
    }

    /// Parses a sequence of `<number><unit>` with units ms, s, m, h, d.
    pub fn parse(text: &str) -> Option<Duration> {
        let mut total = Duration::ZERO;
        let mut rest = text.trim();
        if rest.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit())?;
            let value: u64 = rest[..digits].parse().ok()?;
            let unit_end = rest[digits..]
                .find(|c: char| c.is_ascii_digit())
                .map_or(rest.len(), |i| digits + i);
            let unit = match &rest[digits..unit_end] {
                "ms" => Duration::from_millis(1),
                "s" => Duration::from_secs(1),
                "m" => Duration::from_secs(60),
                "h" => Duration::from_secs(3600),
                "d" => Duration::from_secs(86_400),
                _ => return None,
            };
            total = total.checked_add(unit.checked_mul(u32::try_from(value).ok()?)?)?;
            rest = &rest[unit_end..];
        }
        Some(total)
    }

    /// The same for `Option<Duration>`.
    pub mod option {
        use super::{Deserialize, Duration, Text, not_a_duration, parse};

        pub fn serialize<S: serde::Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.collect_str(&Text(*d)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| parse(&text).ok_or_else(|| not_a_duration(&text)))
                .transpose()
        }
    }

    /// Writes a duration in the largest unit that divides it.
    pub struct Text(pub Duration);

    impl fmt::Display for Text {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let ms = self.0.as_millis();
            for (unit, size) in [
                ("d", 86_400_000),
                ("h", 3_600_000),
                ("m", 60_000),
                ("s", 1000),
            ] {
                if ms > 0 && ms.is_multiple_of(size) {
                    return write!(f, "{}{unit}", ms / size);
                }
            }
            write!(f, "{ms}ms")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::duration_text::{Text, parse};
    use std::time::Duration;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse("5"), None);
        assert_eq!(parse("5x"), None);
        assert_eq!(Text(Duration::from_secs(300)).to_string(), "5m");
        assert_eq!(Text(Duration::from_millis(1500)).to_string(), "1500ms");
    }
}
