//! `HOST:PORT` as every dialer takes it: an IPv6 address goes in brackets.

/// `host:port`, bracketing an IPv6 address.
pub fn join(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The host of `HOST:PORT` (brackets removed).
pub fn host(hostport: &str) -> &str {
    let h = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    h.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_goes_in_brackets_and_comes_out() {
        assert_eq!(join("10.0.0.1", 1), "10.0.0.1:1");
        assert_eq!(join("fd00::1", 2), "[fd00::1]:2");
        assert_eq!(host("[fd00::1]:2"), "fd00::1");
        assert_eq!(host("a.example:3"), "a.example");
    }
}
