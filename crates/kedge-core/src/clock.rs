//! The current time in the forms the wire and the API use.

/// Milliseconds since the Unix epoch: for what is shown or sent (envelope timestamps, twin
/// metadata), never for timers — see [`monotonic_ms`].
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds on a monotonic clock, counted from the first call in this process: for resend,
/// retry and back-off timers. A wall clock stepped back by NTP would stop them for the size of
/// the step (and one stepped forward would fire them all at once).
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// RFC 3339 to the second, as Kubernetes writes `Time` (`2026-11-27T12:00:00Z`).
pub fn rfc3339() -> String {
    rfc3339_of(jiff::Timestamp::now())
}

/// `t` as Kubernetes writes `Time`.
pub fn rfc3339_of(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// RFC 3339 to the microsecond, as Kubernetes writes `MicroTime` (Lease `renewTime`).
pub fn rfc3339_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

/// Parses `90s`, `30m`, `24h`, `7d` (a bare number is seconds), as kedge's flags and config
/// files write durations.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 24h or 7d"))?;
    let unit_secs = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(unit_secs)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// `d` as [`parse_duration`] reads it, in the largest unit that divides it (whole seconds).
pub fn format_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match [(86_400, "d"), (3600, "h"), (60, "m")]
        .iter()
        .find(|(u, _)| s > 0 && s.is_multiple_of(*u))
    {
        Some((u, name)) => format!("{}{name}", s / u),
        None => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_parse_and_print_back() {
        assert_eq!(
            super::parse_duration("24h"),
            Ok(Duration::from_secs(86_400))
        );
        assert_eq!(super::parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(
            super::parse_duration("2d"),
            Ok(Duration::from_secs(172_800))
        );
        assert!(super::parse_duration("1w").is_err());
        assert!(super::parse_duration("h").is_err());
        assert!(super::parse_duration("99999999999999999d").is_err());
        for d in [0, 1, 59, 60, 90, 3600, 86_400, 365 * 86_400] {
            let d = Duration::from_secs(d);
            assert_eq!(super::parse_duration(&super::format_duration(d)), Ok(d));
        }
        assert_eq!(
            super::format_duration(Duration::from_secs(365 * 86_400)),
            "365d"
        );
        assert_eq!(super::format_duration(Duration::from_secs(30)), "30s");
    }

    #[test]
    fn formats() {
        assert!(super::now_ms() > 1_600_000_000_000);
        let (a, b) = (super::monotonic_ms(), super::monotonic_ms());
        assert!(b >= a, "monotonic");
        let t = super::rfc3339();
        assert!(t.len() == 20 && t.ends_with('Z'), "{t}");
        let m = super::rfc3339_micro();
        assert!(m.len() == 27 && m.ends_with('Z'), "{m}");
    }
}
