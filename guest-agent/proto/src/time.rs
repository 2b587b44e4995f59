//! Timestamps as Docker prints and parses them, shared by the host's API and
//! the engine.

/// An RFC 3339 timestamp with nanoseconds, as Docker prints them; Go's zero
/// time for 0.
pub fn rfc3339(ns: i64) -> String {
    if ns <= 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The wall clock in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    since_epoch.as_nanos().min(i64::MAX as u128) as i64
}

/// Go's `time.ParseDuration` in nanoseconds: `[-+]` then one or more
/// `<decimal><unit>` (`ns us µs ms s m h`), e.g. `5m`, `1h30m`, `1.5h`.
/// Hand-written: no maintained crate parses Go's grammar (humantime's
/// differs: no fractions, other units).
pub fn parse_go_duration(text: &str) -> Option<i128> {
    let (negative, mut rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || number.matches('.').count() > 1 {
            return None;
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        let mut part = whole.checked_mul(scale)?;
        // Go keeps the fraction's leading digits that matter at this scale.
        let mut digit_scale = scale;
        for digit in fraction.bytes().take(30) {
            digit_scale /= 10;
            part += (digit - b'0') as i128 * digit_scale;
        }
        total = total.checked_add(part)?;
        if total > i64::MAX as i128 {
            return None;
        }
        rest = next;
    }
    Some(if negative { -total } else { total })
}

/// dockerd's reading of a filter's `until`/`since` (timetypes.GetTimestamp):
/// a Go duration before `now_ns`, an RFC 3339 time or a date (UTC when it
/// names no zone; the VM's zone is UTC), or Unix seconds with an optional
/// fraction. The error is dockerd's.
pub fn filter_time_ns(value: &str, now_ns: i64) -> Result<i64, String> {
    if value != "0" {
        if let Some(ago) = parse_go_duration(value) {
            return Ok((now_ns as i128 - ago).clamp(i64::MIN as i128, i64::MAX as i128) as i64);
        }
    }
    if let Some(ns) = parse_rfc3339ish(value) {
        return Ok(ns);
    }
    if value.contains('-') {
        return Err(format!("parsing time {value:?}: not an RFC 3339 time, a date or a duration"));
    }
    unix_seconds_ns(value).ok_or_else(|| format!("failed to parse value as time or duration: {value:?}"))
}

/// `SECONDS[.FRACTION]`, as dockerd's parseTimestamp reads it.
fn unix_seconds_ns(value: &str) -> Option<i64> {
    let (secs, fraction) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().ok()?;
    if value.contains('.') && (fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let nanos: i64 = format!("{fraction:0<9}").get(..9)?.parse().ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(if secs < 0 { -nanos } else { nanos })
}

/// `YYYY-MM-DD[THH[:MM[:SS[.frac]]]][Z|±HH:MM]`: the layouts GetTimestamp tries.
fn parse_rfc3339ish(value: &str) -> Option<i64> {
    let (date, rest) = value.split_at(value.find(['T', 'Z', 'z', '+']).unwrap_or(value.len()));
    let mut fields = date.splitn(3, '-');
    let (year, month, day) = (fields.next()?, fields.next()?, fields.next()?);
    let digits =
        |s: &str, n: usize| (s.len() == n && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<i64>().ok())?;
    let (year, month, day) = (digits(year, 4)?, digits(month, 2)?, digits(day, 2)?);
    let (time, zone) = match rest.strip_prefix('T') {
        Some(t) => t.split_at(t.find(['Z', 'z', '+', '-']).unwrap_or(t.len())),
        None => ("", rest),
    };
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut hms = [0i64; 3];
    if !time.is_empty() {
        let parts: Vec<&str> = clock.split(':').collect();
        if parts.len() > 3 || !fraction.is_empty() && parts.len() != 3 {
            return None;
        }
        for (slot, part) in hms.iter_mut().zip(&parts) {
            *slot = digits(part, 2)?;
        }
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let offset_secs = match zone {
        "" | "Z" | "z" => 0,
        z => {
            let sign = if z.starts_with('-') {
                -1
            } else if z.starts_with('+') {
                1
            } else {
                return None;
            };
            let (h, m) = z[1..].split_once(':')?;
            sign * (digits(h, 2)? * 3600 + digits(m, 2)? * 60)
        }
    };
    let [hour, minute, second] = hms;
    let days_in_month = match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let nanos: i64 = format!("{fraction:0<9}").get(..9)?.parse().ok()?;
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1_000_000_000 + nanos)
}

/// Howard Hinnant's civil-to-days algorithm (days since 1970-01-01).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_go() {
        assert_eq!(super::rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456789Z");
    }

    #[test]
    fn go_durations() {
        use super::parse_go_duration as d;
        assert_eq!(d("5m"), Some(300_000_000_000));
        assert_eq!(d("1h30m"), Some(5_400_000_000_000));
        assert_eq!(d("1.5h"), Some(5_400_000_000_000));
        assert_eq!(d("-5m"), Some(-300_000_000_000));
        assert_eq!(d("300ms"), Some(300_000_000));
        assert_eq!(d("2h45m10.5s"), Some(9_910_500_000_000));
        assert_eq!(d(".5s"), Some(500_000_000));
        assert_eq!(d("1µs"), Some(1_000));
        assert_eq!(d("0"), Some(0));
        for bad in ["", "5", "m", "5x", "1.2.3s", "-", "10", "3000000h", "1h-5m", "."] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    /// What dockerd's prune filters take for `until`.
    #[test]
    fn filter_times_like_dockerd() {
        use super::filter_time_ns as t;
        let now = 1_700_000_000_000_000_000;
        assert_eq!(t("5m", now), Ok(now - 300_000_000_000));
        assert_eq!(t("1h30m", now), Ok(now - 5_400_000_000_000));
        assert_eq!(t("1700000000", now), Ok(1_700_000_000_000_000_000));
        assert_eq!(t("1700000000.5", now), Ok(1_700_000_000_500_000_000));
        assert_eq!(t("0", now), Ok(0));
        assert_eq!(t("2023-11-14", now), Ok(1_699_920_000_000_000_000));
        assert_eq!(t("2023-11-14T22:13:20Z", now), Ok(1_700_000_000_000_000_000));
        assert_eq!(t("2023-11-14T22:13:20.25Z", now), Ok(1_700_000_000_250_000_000));
        assert_eq!(t("2023-11-14T23:13:20+01:00", now), Ok(1_700_000_000_000_000_000));
        assert_eq!(t("2023-11-14T22:13", now), Ok(1_699_999_980_000_000_000));
        assert_eq!(t("xyz", now), Err("failed to parse value as time or duration: \"xyz\"".into()));
        assert_eq!(t("5", now), Ok(5_000_000_000), "a number alone is Unix seconds");
        assert!(t("2023-13-01", now).unwrap_err().starts_with("parsing time"));
        assert!(t("2023-02-30", now).is_err());
        assert!(t("1.x", now).is_err());
    }
}
