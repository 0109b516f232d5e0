use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_system_time(time: SystemTime) -> Self {
        let micros = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_micros() as i64,
            Err(before) => -(before.duration().as_micros() as i64),
        };
        Timestamp(micros)
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }

    pub fn saturating_add(self, duration: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(duration.as_micros().min(i64::MAX as u128) as i64),
        )
    }

    /// Time from `earlier` to `self`, zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// `HH:MM:SS.mmm` in UTC, as the terminal log lines show it.
    pub fn time_of_day(self) -> String {
        let (_, _, _, hour, minute, second, millis) = self.civil();
        format!("{hour:02}:{minute:02}:{second:02}.{millis:03}")
    }

    /// Civil date and time in UTC (days-from-civil inverse, Howard Hinnant's algorithm).
    fn civil(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let millis_total = self.0.div_euclid(1000);
        let days = millis_total.div_euclid(86_400_000);
        let millis_of_day = millis_total.rem_euclid(86_400_000);
        let shifted = days + 719_468;
        let era = shifted.div_euclid(146_097);
        let day_of_era = shifted.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_index = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
        let month = if month_index < 10 {
            month_index + 3
        } else {
            month_index - 9
        } as u32;
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        let hour = (millis_of_day / 3_600_000) as u32;
        let minute = (millis_of_day / 60_000 % 60) as u32;
        let second = (millis_of_day / 1000 % 60) as u32;
        let millis = (millis_of_day % 1000) as u32;
        (year, month, day, hour, minute, second, millis)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-25T11:22:01.123Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day, hour, minute, second, millis) = self.civil();
        f.pad(&format!(
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z"
        ))
    }
}

/// Where time comes from. Injected so that expiration and retry logic can be tested
/// without sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start.0)))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(
            by.as_micros().min(i64::MAX as u128) as i64,
            Ordering::SeqCst,
        );
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        // 2025-11-25T11:22:01.123Z
        let stamp = Timestamp(1_764_069_721_123_000);
        assert_eq!(stamp.to_string(), "2025-11-25T11:22:01.123Z");
        assert_eq!(stamp.time_of_day(), "11:22:01.123");
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn manual_clock_advances() {
        let clock = ManualClock::new(Timestamp(10));
        let shared = clock.clone();
        clock.advance(Duration::from_millis(2));
        assert_eq!(shared.now(), Timestamp(2010));
    }
}
