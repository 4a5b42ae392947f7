//! Node Lease renewals. Every connected edge renews its Lease every 10 s: 1,000 writes a second
//! for 10,000 nodes. Against a real cluster each renewal is a PATCH, sent at once. With the
//! embedded API (`crate::bulk::Bulk`) renewals are gathered and written once a second in one
//! commit; the edge's message is acknowledged when it is gathered. A renewal lost to a crash in
//! that second is harmless: the next one comes 10 s later, well inside the 40 s grace.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// Lease duration the cloud sets (as kubelet).
pub const LEASE_SECONDS: i32 = 40;

/// How often gathered renewals are written.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What a renewal sets: the node holds its own Lease, renewed now.
pub fn spec(node: &str, now: &str) -> Value {
    json!({"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now})
}

/// Renewals gathered since the last flush (a node renewing twice is written once).
#[derive(Debug, Default)]
pub struct Gathered(Mutex<BTreeSet<String>>);

impl Gathered {
    pub fn add(&self, node: &str) {
        self.lock().insert(node.to_string());
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock()).into_iter().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes `nodes`' renewals through `writer` off the async threads; returns the nodes without
/// a Lease (to be created through the API).
pub async fn flush(
    writer: &Arc<dyn crate::bulk::Bulk>,
    nodes: Vec<String>,
) -> Result<Vec<String>, String> {
    let writer = writer.clone();
    tokio::task::spawn_blocking(move || {
        let now = kedge_core::clock::rfc3339_micro();
        writer.renew_leases(&nodes, &|n| spec(n, &now))
    })
    .await
    .map_err(|e| format!("lease writer task failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathered_renewals_are_written_once_per_node() {
        let g = Gathered::default();
        for n in ["b", "a", "b"] {
            g.add(n);
        }
        assert_eq!(g.take(), ["a", "b"]);
        assert!(g.take().is_empty());
    }

    #[test]
    fn a_renewal_holds_the_nodes_own_lease() {
        let s = spec("n1", "2026-11-27T10:00:00.000000Z");
        assert_eq!(s["holderIdentity"], "n1");
        assert_eq!(s["leaseDurationSeconds"], 40);
        assert_eq!(s["renewTime"], "2026-11-27T10:00:00.000000Z");
    }
}
