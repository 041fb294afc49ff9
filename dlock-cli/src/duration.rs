//! Humane durations: `30s`, `500ms`, `2m`, `1h`, `1.5s`; a bare number is seconds,
//! as in flock.

use std::time::Duration;

/// Parses a duration as the flags take it.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a duration (for example 30s, 500ms, 2m)"
        ));
    }
    let seconds_per_unit = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use ms, s, m or h (a bare number is seconds)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (for example 30s, 500ms, 2m)"))?;
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humane_forms_and_bare_seconds() {
        let ms = Duration::from_millis;
        assert_eq!(parse("30s"), Ok(ms(30_000)));
        assert_eq!(parse("500ms"), Ok(ms(500)));
        assert_eq!(parse("2m"), Ok(ms(120_000)));
        assert_eq!(parse("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse("10"), Ok(ms(10_000)));
        assert_eq!(parse("0.25"), Ok(ms(250)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        for bad in ["", "s", "ten", "10x", "1e400", "-5s", "1.2.3s"] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse("10x").expect_err("10x").contains("unit"));
    }
}
