//! Writes the embedded API takes many at once, in one commit: node Lease renewals (1,000 a
//! second for 10,000 nodes) and sync records (one for every object every node acknowledges).
//! Against a real cluster there is none of this: each is an API call, through kube-rs.

use kedge_core::delivery::RecordWrite;
use serde_json::Value;

pub trait Bulk: Send + Sync + std::fmt::Debug {
    /// Merges `spec_of(node)` into each node's Lease; returns the nodes that have none yet.
    /// Blocking.
    fn renew_leases(
        &self,
        nodes: &[String],
        spec_of: &dyn Fn(&str) -> Value,
    ) -> Result<Vec<String>, String>;

    /// Writes sync records; one result each, in order. Blocking.
    fn write_records(&self, records: &[RecordWrite]) -> Result<Vec<Result<(), String>>, String>;
}
