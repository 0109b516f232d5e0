//! Property tests: whatever text a user or a plugin hands these parsers and checks,
//! they answer (a value or an error), never panic, and valid input round-trips.

use proptest::prelude::*;
use std::time::Duration;

use crate::{RetryDelays, RetryPolicy, TaskInfo, format_duration, parse_duration, parse_size};

proptest! {
    #[test]
    fn any_text_parses_to_a_duration_or_an_error(text in "\\PC{0,40}") {
        let _ = parse_duration(&text);
    }

    #[test]
    fn number_like_text_never_panics_as_a_duration(
        digits in "[0-9.]{0,400}",
        unit in prop::sample::select(vec!["", "ms", "s", "m", "h", "d", "us", "x", " s"]),
    ) {
        let _ = parse_duration(&format!("{digits}{unit}"));
    }

    #[test]
    fn a_formatted_duration_parses_back(millis in 0u64..10_000_000_000) {
        let duration = Duration::from_millis(millis);
        prop_assert_eq!(parse_duration(&format_duration(duration)).unwrap(), duration);
    }

    #[test]
    fn any_text_parses_to_a_size_or_an_error(text in "\\PC{0,40}") {
        let _ = parse_size(&text);
    }

    #[test]
    fn sizes_past_u64_are_an_error(
        value in any::<u64>(),
        unit in prop::sample::select(vec!["", "KiB", "MiB", "GiB", "k", "gb"]),
    ) {
        let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
            "" => 1,
            "kib" | "k" => 1 << 10,
            "mib" => 1 << 20,
            _ => 1 << 30,
        };
        let parsed = parse_size(&format!("{value}{unit}"));
        match value.checked_mul(multiplier) {
            Some(bytes) => prop_assert_eq!(parsed.unwrap(), bytes),
            None => prop_assert!(parsed.unwrap_err().contains("too large")),
        }
    }

    #[test]
    fn any_declared_retry_policy_is_checked_and_its_delays_stay_within_a_day(
        retries in any::<u32>(),
        delays in prop::collection::vec(any::<u64>(), 0..8),
        exponential in any::<Option<(u64, Option<u64>)>>(),
        jitter in prop::option::of(prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(1e300),
        ]),
        retry in any::<u32>(),
        random in any::<f64>(),
    ) {
        let policy = RetryPolicy {
            retries,
            delays: match exponential {
                Some((base, max)) => RetryDelays::Exponential {
                    base: Duration::from_millis(base),
                    max: max.map(Duration::from_millis),
                },
                None => RetryDelays::PerRetry(delays.into_iter().map(Duration::from_millis).collect()),
            },
            jitter_factor: jitter,
        };
        let checked = policy.check();
        let delay = policy.delay_before_retry(retry, random);
        prop_assert!(delay <= crate::declared::MAX_RETRY_DELAY);
        if checked.is_ok() {
            prop_assert!(policy.retries <= crate::declared::MAX_RETRIES);
        }
    }

    #[test]
    fn any_task_metadata_is_accepted_within_bounds_or_refused(
        name in prop_oneof!["\\PC{0,20}", Just(String::new()), "n{300}"],
        tags in prop::collection::vec("\\PC{0,5}", 0..70),
        version in prop::option::of("\\PC{0,300}"),
        timeout in prop::option::of(any::<u64>()),
        expiration in prop::option::of(any::<u64>()),
    ) {
        let mut info = TaskInfo::named(name);
        info.tags = tags;
        info.version = version;
        info.timeout = timeout.map(Duration::from_millis);
        info.cache_expiration = expiration.map(Duration::from_millis);
        if info.check().is_ok() {
            prop_assert!(!info.name.trim().is_empty());
            prop_assert!(info.tags.len() <= crate::declared::MAX_TAGS);
            prop_assert!(info.timeout.is_none_or(|timeout| timeout <= crate::declared::MAX_TIMEOUT));
        }
    }
}
