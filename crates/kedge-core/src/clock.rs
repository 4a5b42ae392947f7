//! The current time in the forms the wire and the API use.

/// Milliseconds since the Unix epoch (envelope timestamps, delivery deadlines).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert!(super::now_ms() > 1_600_000_000_000);
        let t = super::rfc3339();
        assert!(t.len() == 20 && t.ends_with('Z'), "{t}");
        let m = super::rfc3339_micro();
        assert!(m.len() == 27 && m.ends_with('Z'), "{m}");
    }
}
