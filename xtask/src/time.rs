//! The clock and UTC calendar arithmetic: Unix time ↔ proleptic Gregorian dates (Howard Hinnant's
//! `days_from_civil` / `civil_from_days`), RFC 3339 timestamps, ages for people. Pure but for `now_*`.

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Milliseconds from `start_ms` to `end_ms`, 0 when the wall clock stepped back in between (an NTP
/// correction must not crash a deploy after its steps ran).
pub fn elapsed_ms(start_ms: u128, end_ms: u128) -> u64 {
    u64::try_from(end_ms.saturating_sub(start_ms)).unwrap_or(u64::MAX)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of a day counted from 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2026-11-25` of a day counted from 1970-01-01.
pub fn date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// RFC 3339 UTC timestamp of a Unix time in milliseconds (`2026-11-25T18:07:24.123Z`).
pub fn rfc3339_ms(ms: u128) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        date(days),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// `3d 4h`, `2h 5m`, `42s`: an age for people; a negative one is `2h 5m in the future`.
pub fn human_age(secs: i64) -> String {
    if secs < 0 {
        return format!("{} in the future", human_span(secs.unsigned_abs()));
    }
    human_span(secs.unsigned_abs())
}

/// `3d 4h`, `2h 5m`, `1m 2s`, `42s`: a length of time for people.
pub fn human_span(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {}s", secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_the_edge_cases() {
        for (days, ymd, text) in [
            (0, (1970, 1, 1), "1970-01-01"),
            (-1, (1969, 12, 31), "1969-12-31"),
            (11_016, (2000, 2, 29), "2000-02-29"),
            (19_782, (2024, 2, 29), "2024-02-29"),
            (19_783, (2024, 3, 1), "2024-03-01"),
            // 2100 is not a leap year: 28 February is followed by 1 March.
            (47_540, (2100, 2, 28), "2100-02-28"),
            (47_541, (2100, 3, 1), "2100-03-01"),
        ] {
            assert_eq!(civil_from_days(days), ymd, "{days}");
            assert_eq!(days_from_civil(ymd.0, ymd.1, ymd.2), days, "{text}");
            assert_eq!(date(days), text);
        }
        // Every day of four centuries comes back as itself.
        for days in -146_097..146_097 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_626_444_123), "2026-11-25T17:07:24.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn elapsed_survives_a_clock_step_back() {
        assert_eq!(elapsed_ms(1_000, 3_500), 2_500);
        assert_eq!(elapsed_ms(5_000, 4_000), 0);
    }

    #[test]
    fn ages() {
        assert_eq!(human_age(0), "0s");
        assert_eq!(human_age(45), "45s");
        assert_eq!(human_age(61), "1m 1s");
        assert_eq!(human_age(3 * 3600 + 12 * 60 + 5), "3h 12m");
        assert_eq!(human_age(2 * 86_400 + 4 * 3600), "2d 4h");
        assert_eq!(human_age(-1), "1s in the future");
        // In the future: the same units as an age (a clock hours off reads as hours, not seconds).
        assert_eq!(human_age(-90_000), "1d 1h in the future");
        assert_eq!(human_age(-(2 * 3600 + 5 * 60)), "2h 5m in the future");
        assert_eq!(human_age(i64::MIN), "106751991167300d 15h in the future");
    }
}
