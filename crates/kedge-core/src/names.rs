//! Kubernetes object names (RFC 1123), checked the same way by the API server and CloudHub.

/// An RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// An RFC 1123 subdomain (what most object names, node names included, must be): dot-separated
/// labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        for ok in ["kube-edge-1", "a", "0"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "Edge", "-a", "a-", "a.b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_subdomain("edge.factory-3"));
        for bad in ["", "a..b", "a/b", "a.", &format!("{}.a", "x".repeat(253))] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }
}
