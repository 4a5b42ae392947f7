//! Which implementation is at the other end of a hub session. kedge's cloud and edge speak
//! KubeEdge's protocol to each other too, with a few differences that make delivery exact (the
//! edge confirms rest→eventbus publishes, rules travel as objects, keepalives only when the
//! link is quiet). Each side names itself in one header of the WebSocket upgrade — the edge in
//! its request, the cloud in its answer; a peer that does not is a stock KubeEdge one and gets
//! KubeEdge's behaviour.

/// The header each kedge side sets on the upgrade, with its version.
pub const HEADER: &str = "kedge-version";

/// The peer's implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Kedge,
    KubeEdge,
}

impl Dialect {
    /// The peer's dialect from the value of [`HEADER`] it sent, if any.
    pub fn of(header: Option<&str>) -> Dialect {
        match header {
            Some(v) if !v.trim().is_empty() => Dialect::Kedge,
            _ => Dialect::KubeEdge,
        }
    }

    pub fn is_kubeedge(self) -> bool {
        self == Dialect::KubeEdge
    }
}

/// This build's value for [`HEADER`].
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_without_the_header_is_stock_kubeedge() {
        assert_eq!(Dialect::of(None), Dialect::KubeEdge);
        assert_eq!(Dialect::of(Some("")), Dialect::KubeEdge);
        assert_eq!(Dialect::of(Some(VERSION)), Dialect::Kedge);
    }
}
