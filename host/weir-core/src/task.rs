use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

use crate::cache::CachePolicy;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
        }
    }

    pub fn parse(text: &str) -> Option<LogLevel> {
        [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warning,
            LogLevel::Error,
        ]
        .into_iter()
        .find(|level| level.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The waits between attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RetryDelays {
    /// One delay per retry, in milliseconds; the last one repeats; none means no wait.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<u64>))]
    PerRetry(#[serde(with = "millis_list")] Vec<Duration>),
    /// `base * 2^n` before retry n (from 0), capped at `max` (milliseconds).
    Exponential {
        #[serde(with = "millis")]
        #[cfg_attr(feature = "openapi", schema(value_type = u64))]
        base: Duration,
        #[serde(with = "optional_millis")]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
        max: Option<Duration>,
    },
}

impl Default for RetryDelays {
    fn default() -> Self {
        RetryDelays::PerRetry(Vec::new())
    }
}

/// How many times to retry and how long to wait in between.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryPolicy {
    pub retries: u32,
    pub delays: RetryDelays,
    /// Each delay is spread uniformly within ±factor of itself.
    pub jitter_factor: Option<f64>,
}

impl RetryPolicy {
    /// The wait before retry `retry` (0 for the first retry). `random` is a sample in [0, 1)
    /// used for jitter; passing it in keeps this function deterministic to test.
    pub fn delay_before_retry(&self, retry: u32, random: f64) -> Duration {
        let base = match &self.delays {
            RetryDelays::PerRetry(delays) => delays
                .get(retry as usize)
                .or(delays.last())
                .copied()
                .unwrap_or_default(),
            RetryDelays::Exponential { base, max } => {
                let factor = 2u32.saturating_pow(retry.min(31));
                let grown = base.saturating_mul(factor);
                max.map_or(grown, |cap| grown.min(cap))
            }
        };
        let delay = match self.jitter_factor {
            Some(factor) if factor > 0.0 && factor.is_finite() => {
                let spread = (random.clamp(0.0, 1.0) * 2.0 - 1.0) * factor;
                // `mul_f64` panics past Duration::MAX; a huge factor saturates instead.
                Duration::try_from_secs_f64(base.as_secs_f64() * (1.0 + spread).max(0.0))
                    .unwrap_or(Duration::MAX)
            }
            _ => base,
        };
        // Whatever a plugin or a flow file asked for, a run never waits past this.
        delay.min(crate::limits::declared::MAX_RETRY_DELAY)
    }

    /// Checks the policy against the maxima of [`declared`](crate::limits::declared);
    /// the error names the field.
    pub fn check(&self) -> Result<(), String> {
        use crate::limits::declared::*;
        if self.retries > MAX_RETRIES {
            return Err(format!(
                "retries is {}, above the maximum of {MAX_RETRIES}",
                self.retries
            ));
        }
        let too_long = |field: &str, delay: Duration| {
            (delay > MAX_RETRY_DELAY).then(|| {
                format!(
                    "{field} is {} ms, above the maximum of {} ms (a day)",
                    delay.as_millis(),
                    MAX_RETRY_DELAY.as_millis()
                )
            })
        };
        match &self.delays {
            RetryDelays::PerRetry(delays) => {
                if delays.len() > MAX_RETRY_DELAYS {
                    return Err(format!(
                        "retry-delays-ms has {} entries, above the maximum of {MAX_RETRY_DELAYS}",
                        delays.len()
                    ));
                }
                if let Some(error) = delays
                    .iter()
                    .find_map(|delay| too_long("a retry delay", *delay))
                {
                    return Err(error);
                }
            }
            RetryDelays::Exponential { base, max } => {
                if let Some(error) = too_long("retry-backoff.base-ms", *base)
                    .or_else(|| max.and_then(|max| too_long("retry-backoff.max-ms", max)))
                {
                    return Err(error);
                }
            }
        }
        if let Some(factor) = self.jitter_factor
            && !(0.0..=MAX_JITTER_FACTOR).contains(&factor)
        {
            return Err(format!(
                "retry-jitter-factor is {factor}, not a number from 0 to {MAX_JITTER_FACTOR}"
            ));
        }
        Ok(())
    }
}

/// A task's metadata and defaults, as its plugin declares them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskInfo {
    pub name: String,
    pub description: Option<String>,
    pub version: Option<String>,
    pub tags: Vec<String>,
    pub retry: RetryPolicy,
    /// Milliseconds.
    #[serde(with = "optional_millis")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub timeout: Option<Duration>,
    pub cache_policy: CachePolicy,
    /// Milliseconds.
    #[serde(with = "optional_millis")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub cache_expiration: Option<Duration>,
    pub log_prints: bool,
    pub run_name: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub input_schema: Option<serde_json::Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub output_schema: Option<serde_json::Value>,
    /// What the task cannot run without (`env:NAME`, `dir:/path[:rw]`, `http`,
    /// `http:HOST`); a run must be granted each.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub needs: Vec<crate::Need>,
}

impl TaskInfo {
    /// Checks every value against the maxima of
    /// [`declared`](crate::limits::declared); the error names the task and the field.
    pub fn check(&self) -> Result<(), String> {
        use crate::limits::declared::*;
        let name = &self.name;
        if name.trim().is_empty() {
            return Err("a task has an empty name".into());
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(format!(
                "a task name is {} bytes long (`{}…`), above the maximum of {MAX_NAME_BYTES}",
                name.len(),
                name.chars().take(40).collect::<String>()
            ));
        }
        let field = |message: String| format!("task `{name}`: {message}");
        let text = |what: &str, value: &Option<String>, maximum: usize| match value {
            Some(value) if value.len() > maximum => Err(field(format!(
                "its {what} is {} bytes long, above the maximum of {maximum}",
                value.len()
            ))),
            _ => Ok(()),
        };
        text("version", &self.version, MAX_NAME_BYTES)?;
        text("description", &self.description, MAX_TEXT_BYTES)?;
        text("run-name template", &self.run_name, MAX_TEXT_BYTES)?;
        if self.tags.len() > MAX_TAGS {
            return Err(field(format!(
                "it has {} tags, above the maximum of {MAX_TAGS}",
                self.tags.len()
            )));
        }
        if let Some(long) = self.tags.iter().find(|tag| tag.len() > MAX_NAME_BYTES) {
            return Err(field(format!(
                "a tag is {} bytes long, above the maximum of {MAX_NAME_BYTES}",
                long.len()
            )));
        }
        if self.tags.iter().any(|tag| tag.trim().is_empty()) {
            return Err(field("a tag is empty".into()));
        }
        if self.needs.len() > MAX_TAGS {
            return Err(field(format!(
                "it declares {} needs, above the maximum of {MAX_TAGS}",
                self.needs.len()
            )));
        }
        self.retry.check().map_err(field)?;
        let duration =
            |what: &str, value: Option<Duration>, maximum: Duration, words: &str| match value {
                Some(value) if value > maximum => Err(field(format!(
                    "{what} is {} ms, above the maximum of {} ms ({words})",
                    value.as_millis(),
                    maximum.as_millis()
                ))),
                _ => Ok(()),
            };
        duration("timeout-ms", self.timeout, MAX_TIMEOUT, "a week")?;
        duration(
            "cache-expiration-ms",
            self.cache_expiration,
            MAX_CACHE_EXPIRATION,
            "ten years",
        )?;
        Ok(())
    }

    /// A task with no metadata beyond its name (retries 0, no timeout, no cache).
    pub fn named(name: impl Into<String>) -> Self {
        TaskInfo {
            name: name.into(),
            description: None,
            version: None,
            tags: Vec::new(),
            retry: RetryPolicy::default(),
            timeout: None,
            cache_policy: CachePolicy::None,
            cache_expiration: None,
            log_prints: true,
            run_name: None,
            input_schema: None,
            output_schema: None,
            needs: Vec::new(),
        }
    }
}

/// What a caller (a flow node, the command line) changes of a task's defaults for one run.
/// Serializable, so that a run queued for a worker on another machine carries them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskOverrides {
    pub retries: Option<u32>,
    pub retry_delays: Option<RetryDelays>,
    pub retry_jitter_factor: Option<f64>,
    #[serde(with = "optional_millis")]
    pub timeout: Option<Duration>,
    pub memory_bytes: Option<u64>,
    pub fuel: Option<u64>,
    pub cache_policy: Option<CachePolicy>,
    #[serde(with = "optional_millis")]
    pub cache_expiration: Option<Duration>,
    /// Run even on a cache hit, and replace the cached result.
    pub refresh_cache: bool,
    /// Added to the task's own tags.
    pub extra_tags: Vec<String>,
    pub run_name: Option<String>,
    pub log_prints: Option<bool>,
    /// Directories and environment variables granted to this run.
    pub grants: crate::Grants,
}

/// Who is running and why, as handed to the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunContext {
    pub flow_run_id: Option<String>,
    pub flow_run_name: Option<String>,
    pub task_run_id: String,
    pub task_run_name: String,
    pub task_name: String,
    pub attempt: u32,
    pub tags: Vec<String>,
    /// The flow run's parameters, shared by its task runs' attempts (a large parameter
    /// must not be copied per attempt).
    pub parameters: std::sync::Arc<serde_json::Value>,
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

mod optional_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_some(&(duration.as_millis() as u64)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_millis))
    }
}

mod millis_list {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(
        durations: &[Duration],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(durations.iter().map(|duration| duration.as_millis() as u64))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Duration>, D::Error> {
        Ok(Vec::<u64>::deserialize(deserializer)?
            .into_iter()
            .map(Duration::from_millis)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_retry_delays_repeat_the_last() {
        let policy = RetryPolicy {
            retries: 5,
            delays: RetryDelays::PerRetry(vec![Duration::from_secs(1), Duration::from_secs(5)]),
            jitter_factor: None,
        };
        assert_eq!(policy.delay_before_retry(0, 0.0), Duration::from_secs(1));
        assert_eq!(policy.delay_before_retry(1, 0.0), Duration::from_secs(5));
        assert_eq!(policy.delay_before_retry(4, 0.0), Duration::from_secs(5));
        assert_eq!(
            RetryPolicy::default().delay_before_retry(3, 0.0),
            Duration::ZERO
        );
    }

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            retries: 5,
            delays: RetryDelays::Exponential {
                base: Duration::from_millis(100),
                max: Some(Duration::from_millis(500)),
            },
            jitter_factor: None,
        };
        let delays: Vec<_> = (0..4)
            .map(|retry| policy.delay_before_retry(retry, 0.0))
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 500].map(Duration::from_millis).to_vec()
        );
    }

    #[test]
    fn a_huge_or_strange_jitter_never_panics_and_never_waits_past_a_day() {
        let day = crate::limits::declared::MAX_RETRY_DELAY;
        for factor in [
            f64::INFINITY,
            1e300,
            f64::NAN,
            -1.0,
            f64::MIN_POSITIVE,
            1e-300,
        ] {
            let policy = RetryPolicy {
                retries: 1,
                delays: RetryDelays::PerRetry(vec![Duration::from_secs(10)]),
                jitter_factor: Some(factor),
            };
            for random in [0.0, 0.5, 0.999, 2.0, f64::NAN] {
                assert!(
                    policy.delay_before_retry(0, random) <= day,
                    "{factor} {random}"
                );
            }
        }
        let endless = RetryPolicy {
            retries: 3,
            delays: RetryDelays::Exponential {
                base: Duration::from_millis(u64::MAX),
                max: None,
            },
            jitter_factor: None,
        };
        assert_eq!(endless.delay_before_retry(2, 0.0), day);
        assert!(
            endless
                .check()
                .unwrap_err()
                .contains("retry-backoff.base-ms")
        );
        let nan = RetryPolicy {
            jitter_factor: Some(f64::NAN),
            ..RetryPolicy::default()
        };
        assert!(
            nan.check()
                .unwrap_err()
                .contains("retry-jitter-factor is NaN")
        );
    }

    #[test]
    fn jitter_spreads_within_the_factor() {
        let policy = RetryPolicy {
            retries: 1,
            delays: RetryDelays::PerRetry(vec![Duration::from_secs(10)]),
            jitter_factor: Some(0.5),
        };
        assert_eq!(policy.delay_before_retry(0, 0.0), Duration::from_secs(5));
        assert_eq!(policy.delay_before_retry(0, 0.5), Duration::from_secs(10));
        assert!(policy.delay_before_retry(0, 0.999) < Duration::from_secs(15));
    }
}
