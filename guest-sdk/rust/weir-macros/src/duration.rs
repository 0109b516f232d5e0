//! Durations written in task options: `"200ms"`, `"30s"`, `"5m"`, `"1h"`, `"1d"`, `"1m30s"`,
//! `"1.5s"`.

/// Milliseconds in one of each unit.
const UNITS: &[(&str, u128)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

pub(crate) const EXPECTED: &str = "expected numbers each followed by a unit (ms, s, m, h or d), \
                                   e.g. \"500ms\", \"30s\", \"1h30m\"";

/// Parses a duration into milliseconds, rounded to the nearest one. The error says what is wrong
/// with the text (without repeating it).
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(format!("it is empty; {EXPECTED}"));
    }
    let mut total_ms: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        rest = after.trim_start();

        let (numerator, denominator) = parse_decimal(number).ok_or_else(|| {
            if number.is_empty() {
                format!(
                    "a number is missing before `{}`; {EXPECTED}",
                    first_char(unit, rest)
                )
            } else {
                format!("`{number}` is not a number; {EXPECTED}")
            }
        })?;
        if unit.is_empty() {
            return Err(format!("`{number}` has no unit; {EXPECTED}"));
        }
        let &(_, unit_ms) = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .ok_or_else(|| format!("unknown unit `{unit}`; {EXPECTED}"))?;
        // Round half up to whole milliseconds.
        let part_ms = numerator
            .checked_mul(unit_ms * 2)
            .map(|doubled| (doubled + denominator) / (denominator * 2));
        total_ms = part_ms
            .and_then(|part_ms| total_ms.checked_add(part_ms))
            .filter(|&total_ms| total_ms <= u128::from(u64::MAX))
            .ok_or("it is too long")?;
    }
    Ok(total_ms as u64)
}

fn first_char<'a>(unit: &'a str, rest: &'a str) -> &'a str {
    let text = if unit.is_empty() { rest } else { unit };
    text.char_indices()
        .nth(1)
        .map_or(text, |(end, _)| &text[..end])
}

/// `"1.25"` as `(125, 100)`; `None` unless digits with at most one `.` inside.
fn parse_decimal(number: &str) -> Option<(u128, u128)> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || number.ends_with('.') {
        return None;
    }
    // Further digits cannot change whole milliseconds, and would overflow.
    let fraction = &fraction[..fraction.len().min(18)];
    let digits = format!("{whole}{fraction}");
    let numerator: u128 = digits.parse().ok()?;
    Some((numerator, 10u128.pow(fraction.len() as u32)))
}

/// A number of seconds (an integer or float literal) in milliseconds.
pub(crate) fn seconds_to_ms(seconds: f64) -> Result<u64, String> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err("expected a non-negative number of seconds".into());
    }
    let ms = (seconds * 1000.0).round();
    if ms > u64::MAX as f64 {
        return Err("it is too long".into());
    }
    Ok(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("200ms"), Ok(200));
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("2d"), Ok(172_800_000));
        assert_eq!(parse_duration("0s"), Ok(0));
    }

    #[test]
    fn parses_fractions_and_compounds() {
        assert_eq!(parse_duration("1.5s"), Ok(1_500));
        assert_eq!(parse_duration("0.25m"), Ok(15_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000));
        assert_eq!(parse_duration("1h 30m"), Ok(5_400_000));
        assert_eq!(parse_duration(" 10ms "), Ok(10));
        // Rounded to the nearest millisecond.
        assert_eq!(parse_duration("0.4ms"), Ok(0));
        assert_eq!(parse_duration("0.5ms"), Ok(1));
        assert_eq!(parse_duration("1.0005s"), Ok(1_001));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        let error = |text| parse_duration(text).unwrap_err();
        assert!(error("3x").starts_with("unknown unit `x`; expected numbers"));
        assert!(error("30").starts_with("`30` has no unit"));
        assert!(error("").starts_with("it is empty"));
        assert!(error("s").starts_with("a number is missing before `s`"));
        assert!(error("1..5s").starts_with("`1..5` is not a number"));
        assert!(error("1.s").starts_with("`1.` is not a number"));
        assert!(error(".5s").starts_with("`.5` is not a number"));
        assert!(error("-1s").starts_with("a number is missing before `-`"));
        assert!(error("5 s").starts_with("`5` has no unit"));
        assert!(error("1sec").starts_with("unknown unit `sec`"));
        assert_eq!(error("999999999999999999999d"), "it is too long");
        assert_eq!(error("213503982335d"), "it is too long");
    }

    #[test]
    fn converts_seconds() {
        assert_eq!(seconds_to_ms(0.0), Ok(0));
        assert_eq!(seconds_to_ms(1.5), Ok(1_500));
        assert_eq!(seconds_to_ms(0.0004), Ok(0));
        assert!(seconds_to_ms(-1.0).is_err());
        assert!(seconds_to_ms(f64::INFINITY).is_err());
        assert_eq!(seconds_to_ms(1e30), Err("it is too long".into()));
    }
}
