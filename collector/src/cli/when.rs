//! Times on the command line: what `--since`, `--until` and `--at` take
//! (RFC 3339, a local date and time, `10m ago`, a bare duration meaning
//! that long ago, `now`), and how times are shown (the local zone on a
//! terminal; JSON stays UTC).

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A moment, as unix nanoseconds.
pub fn parse(text: &str, now: SystemTime) -> Result<i64, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(nanos(now));
    }
    let ago = t
        .strip_suffix("ago")
        .map(str::trim)
        .or_else(|| t.strip_prefix('-'))
        .unwrap_or(t);
    if let Ok(d) = humantime::parse_duration(ago) {
        let at = now.checked_sub(d).unwrap_or(UNIX_EPOCH);
        return Ok(nanos(at));
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return dt
            .timestamp_nanos_opt()
            .ok_or_else(|| format!("{text:?} is out of range"));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, fmt) {
            let local = Local
                .from_local_datetime(&naive)
                .earliest()
                .ok_or_else(|| format!("{text:?} does not exist in the local time zone"))?;
            return local
                .timestamp_nanos_opt()
                .ok_or_else(|| format!("{text:?} is out of range"));
        }
    }
    Err(format!(
        "{text:?} is not a time: use RFC 3339 (2026-12-01T02:14:00Z), a local \"2026-12-01 02:14\", or \"10m ago\""
    ))
}

/// An optional moment (`--at`, `--until`, `?at=`): 0 when not given, which
/// the queries read as "now".
pub fn parse_or_now(text: Option<&str>, now: SystemTime) -> Result<i64, String> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(0),
        Some(t) => parse(t, now),
    }
}

/// A moment for a person: the local zone when `local`, else UTC.
pub fn show(unix_nanos: i64, local: bool) -> String {
    if unix_nanos <= 0 {
        return "-".into();
    }
    let utc: DateTime<Utc> = DateTime::from_timestamp_nanos(unix_nanos);
    if local {
        utc.with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string()
    } else {
        utc.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

/// A length of time, rounded to seconds: `2m10s`.
pub fn length(nanos: i64) -> String {
    let secs = u64::try_from(nanos.max(0) / 1_000_000_000).unwrap_or(0);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let n = nanos(now());
        assert_eq!(parse("10m ago", now()), Ok(n - 600_000_000_000));
        assert_eq!(parse("1h", now()), Ok(n - 3_600_000_000_000));
        assert_eq!(parse("-30s", now()), Ok(n - 30_000_000_000));
        assert_eq!(parse("now", now()), Ok(n));
    }

    #[test]
    fn rfc3339_with_any_offset() {
        assert_eq!(
            parse("2027-01-15T08:00:00Z", now()),
            Ok(1_800_000_000 * 1_000_000_000)
        );
        assert_eq!(
            parse("2027-01-15T09:00:00+01:00", now()),
            Ok(1_800_000_000 * 1_000_000_000)
        );
    }

    #[test]
    fn garbage_is_a_one_line_error() {
        let e = parse("yesterday-ish", now()).expect_err("bad");
        assert!(e.contains("is not a time"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn shown_in_utc_for_scripts() {
        assert_eq!(
            show(1_800_000_000 * 1_000_000_000, false),
            "2027-01-15T08:00:00Z"
        );
        assert_eq!(length(130 * 1_000_000_000), "2m 10s");
    }
}
