//! Durations as config files spell them: the Gateway API format
//! (`500ms`, `2s`, `1m30s`, `1h`), one to four number-unit pairs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A config duration; converts to [`std::time::Duration`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {0:?}: expected one to four number-unit pairs \
     such as 500ms, 2s, 1m30s (units h, m, s, ms)"
)]
pub struct DurationError(pub String);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DurationError(s.to_string());
        let bytes = s.as_bytes();
        let (mut i, mut pairs, mut total_ms) = (0usize, 0, 0u64);
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i == start || i - start > 5 {
                return Err(bad());
            }
            let n: u64 = s[start..i].parse().map_err(|_| bad())?;
            let unit_ms = if s[i..].starts_with("ms") {
                i += 2;
                1
            } else {
                let unit = match bytes.get(i) {
                    Some(b'h') => 3_600_000,
                    Some(b'm') => 60_000,
                    Some(b's') => 1_000,
                    _ => return Err(bad()),
                };
                i += 1;
                unit
            };
            total_ms += n * unit_ms;
            pairs += 1;
        }
        if pairs == 0 || pairs > 4 {
            return Err(bad());
        }
        Ok(Self::from_millis(total_ms))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis() as u64;
        if ms == 0 {
            return write!(f, "0s");
        }
        let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
        let (m, rest) = (rest / 60_000, rest % 60_000);
        let (s, ms) = (rest / 1_000, rest % 1_000);
        for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gateway_api_durations() {
        let ms = |s: &str| s.parse::<Duration>().unwrap().0.as_millis();
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("2s"), 2_000);
        assert_eq!(ms("1m30s"), 90_000);
        assert_eq!(ms("1h2m3s4ms"), 3_723_004);
        assert_eq!(ms("0s"), 0);
    }

    #[test]
    fn refuses_malformed_durations() {
        for s in [
            "",
            "5",
            "s",
            "1.5s",
            "-1s",
            "1d",
            "123456s",
            "1h1h1h1h1h",
            "5 s",
        ] {
            assert!(s.parse::<Duration>().is_err(), "{s:?} was accepted");
        }
    }

    #[test]
    fn displays_what_it_parses() {
        for s in ["500ms", "2s", "1m30s", "1h2m3s4ms"] {
            assert_eq!(s.parse::<Duration>().unwrap().to_string(), s);
        }
    }
}
