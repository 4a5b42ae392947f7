//! The one resync: when a node (re)connects, every controller says what the node should have
//! (`Placer::desired`), `kedge_core::delivery::resync` compares that with what the node
//! acknowledged, and what it lacks is offered — newer versions, and deletions of what it should
//! no longer have. A controller whose watches have not listed everything yet is left out
//! (resyncing against a partial list would delete what the node needs), and so are the records
//! of its kinds.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use kedge_core::delivery::{Outgoing, Version};
use kedge_core::resource::Kind;

use crate::cloudhub::downstream::Downstream;
use crate::cloudhub::records::SyncRecord;
use crate::objects::deletion;

/// A controller that places objects on nodes.
pub trait Placer: Send + Sync {
    /// What it is called in logs.
    fn name(&self) -> &'static str;
    /// The kinds it places (the records of those are its to judge).
    fn kinds(&self) -> &'static [Kind];
    /// Resolves once its watches have listed everything (false if they never will).
    fn ready(&self) -> BoxFuture<'_, bool>;
    /// What `node` should have now.
    fn desired(&self, node: &str) -> Vec<Outgoing>;
}

/// How long a resync waits, in all, for the controllers' first lists.
pub const READY_WAIT: Duration = Duration::from_secs(30);

/// What to offer a node: the `desired` objects it has not acknowledged at their version, and
/// deletions of the records (of `kinds`) it should no longer have.
pub fn plan(
    desired: Vec<Outgoing>,
    records: &[SyncRecord],
    kinds: &[Kind],
) -> (Vec<Outgoing>, Vec<Outgoing>) {
    let mine: Vec<&SyncRecord> = records.iter().filter(|r| kinds.contains(&r.kind)).collect();
    let acked: HashMap<String, Version> =
        mine.iter().map(|r| (r.uid.clone(), r.version())).collect();
    let want: HashMap<String, Version> = desired
        .iter()
        .map(|o| {
            (
                o.uid.clone(),
                Version {
                    rv: o.rv,
                    hash: o.hash,
                },
            )
        })
        .collect();
    let r = kedge_core::delivery::resync(&want, &acked);
    let send: std::collections::HashSet<&String> = r.send.iter().collect();
    let gone: std::collections::HashSet<&String> = r.delete.iter().collect();
    let offers = desired
        .into_iter()
        .filter(|o| send.contains(&o.uid))
        .collect();
    let deletions = mine
        .into_iter()
        .filter(|r| gone.contains(&r.uid))
        .map(deletion)
        .collect();
    (offers, deletions)
}

/// Resyncs `node` against `records` (what it acknowledged) with every ready placer.
pub async fn resync(
    node: &str,
    placers: &[&dyn Placer],
    records: &[SyncRecord],
    downstream: &Downstream,
) {
    let deadline = tokio::time::Instant::now() + READY_WAIT;
    let mut desired = Vec::new();
    let mut kinds = Vec::new();
    for p in placers {
        let ready = tokio::time::timeout_at(deadline, p.ready()).await;
        if !ready.unwrap_or(false) {
            tracing::warn!(
                node,
                controller = p.name(),
                "resync skipped: its objects could not be listed"
            );
            continue;
        }
        desired.extend(p.desired(node));
        kinds.extend_from_slice(p.kinds());
    }
    let (offers, deletions) = plan(desired, records, &kinds);
    for o in offers.into_iter().chain(deletions) {
        downstream.offer(node, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kedge_core::envelope::Message;
    use serde_json::json;

    fn out(uid: &str, rv: u64) -> Outgoing {
        Outgoing {
            uid: uid.into(),
            rv,
            hash: 0,
            delete: false,
            msg: Message::new(
                "t",
                "resource",
                "update",
                &format!("default/pod/{uid}"),
                json!({}),
            ),
        }
    }

    fn rec(uid: &str, rv: u64, kind: Kind) -> SyncRecord {
        SyncRecord {
            uid: uid.into(),
            rv,
            hash: 0,
            namespace: Some("default".into()),
            kind,
            name: uid.into(),
        }
    }

    #[test]
    fn only_what_the_node_lacks_is_offered() {
        let desired = vec![out("same", 5), out("newer", 7), out("new", 1)];
        let records = [
            rec("same", 5, Kind::Pod),
            rec("newer", 6, Kind::Pod),
            rec("gone", 3, Kind::Pod),
            rec("model", 2, Kind::DeviceModel),
        ];
        let (offers, deletions) = plan(desired, &records, &[Kind::Pod]);
        let mut sent: Vec<&str> = offers.iter().map(|o| o.uid.as_str()).collect();
        sent.sort();
        assert_eq!(sent, ["new", "newer"], "nothing resent that the node has");
        let deleted: Vec<(&str, bool)> = deletions
            .iter()
            .map(|o| (o.uid.as_str(), o.delete))
            .collect();
        assert_eq!(
            deleted,
            [("gone", true)],
            "records of kinds not resynced (a placer not ready) are left alone"
        );
        assert_eq!(deletions[0].msg.route.resource, "default/pod/gone");
    }
}
