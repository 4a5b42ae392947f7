//! The node's own reports: it registers on every (re)connection; then, as kubelet does, renews
//! its Lease every status period and sends its full status only when it changed (the runtime
//! came or went) or every 5 minutes. Everything goes through the outbox (keyed, so only the
//! latest of each waits while the cloud is away).

use std::sync::Arc;
use std::time::Duration;

use kedge_core::envelope::{Message, group, op};
use kedge_core::resource;
use tokio::sync::watch;

use super::Runtime;
use super::nodestatus::{self, Host};
use crate::edgehub::client::EdgeHub;
use crate::edgehub::dispatch::LeaseSeen;
use crate::edgehub::outbox::Outbox;
use kedge_core::dialect::Dialect;

/// Who the node is and how often it reports.
#[derive(Debug, Clone)]
pub struct Reporting {
    pub node: String,
    /// The node's address (InternalIP).
    pub ip: String,
    /// Lease renewal period.
    pub every: Duration,
}

pub async fn report(
    r: Reporting,
    hub: EdgeHub,
    outbox: Arc<Outbox>,
    mut runtime: watch::Receiver<Runtime>,
    lease: watch::Receiver<LeaseSeen>,
) {
    let cloud = hub.cloud();
    let host = Host::read();
    let mut connected = hub.connected();
    let mut tick = tokio::time::interval(r.every);
    let mut last: Option<(serde_json::Value, u64)> = None;
    // Registered on the current connection: the first report of each connection registers,
    // whichever wakes the loop first (a tick racing the connection would otherwise send a
    // status for a node the cloud does not know yet).
    let mut registered = false;
    loop {
        tokio::select! {
            changed = connected.changed() => {
                if changed.is_err() {
                    return;
                }
                // Every connection registers anew (the cloud marked the node NotReady).
                connected.borrow_and_update();
                registered = false;
            }
            _ = tick.tick() => {}
            changed = runtime.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        };
        if !*connected.borrow() {
            registered = false;
            continue;
        }
        let rt = runtime.borrow_and_update().clone();
        let now = kedge_core::clock::rfc3339();
        let status = nodestatus::status(&r.ip, &host, &rt, &now);
        let at = kedge_core::clock::monotonic_ms();
        // A Lease renewal says only "alive": it lives in the namespace of Leases and is kept in
        // memory only (the next one replaces a lost one).
        let (kind, operation, content, renewal) = if !registered {
            registered = true;
            let node = nodestatus::node(&r.node, &r.ip, &host, &rt, &now);
            last = Some((status, at));
            ("node", op::INSERT, node, false)
        } else if nodestatus::needs_report(last.as_ref(), &status, at) {
            last = Some((status.clone(), at));
            ("nodestatus", op::UPDATE, nodestatus::request(status), false)
        } else {
            let now = kedge_core::clock::rfc3339_micro();
            let (operation, content) = renewal(&r.node, &now, *cloud.borrow(), &lease.borrow());
            ("lease", operation, content, true)
        };
        let ns = if renewal {
            nodestatus::LEASE_NAMESPACE
        } else {
            ""
        };
        let res = resource::object(ns, kind, &r.node);
        let m = Message::new("edged", group::RESOURCE, operation, &res, content);
        if renewal {
            outbox.push_volatile(m, kind);
        } else if let Err(e) = outbox.push(m, Some(kind)) {
            tracing::warn!(error = %e, "node status not queued");
        }
    }
}

/// A Lease renewal: to kedge's cloud an update it answers by renewing the Lease itself; to a
/// stock cloudcore, which hands the Lease to kube-apiserver as it is, an update at the version
/// it last answered with, a create when it has none, and a read first when that is not known.
fn renewal(
    node: &str,
    now: &str,
    cloud: Dialect,
    seen: &LeaseSeen,
) -> (&'static str, serde_json::Value) {
    let mut lease = nodestatus::lease(node, now);
    if !cloud.is_kubeedge() {
        return (op::UPDATE, lease);
    }
    match seen {
        LeaseSeen::Version(rv) => {
            lease["metadata"]["resourceVersion"] = serde_json::json!(rv);
            (op::UPDATE, lease)
        }
        LeaseSeen::Absent => (op::INSERT, lease),
        LeaseSeen::Unknown => (op::QUERY, serde_json::Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stock_cloudcore_renews_at_the_version_it_holds() {
        let now = "2026-12-02T10:00:00.000000Z";
        let (o, _) = renewal("n1", now, Dialect::KubeEdge, &LeaseSeen::Unknown);
        assert_eq!(o, "query");
        let (o, l) = renewal("n1", now, Dialect::KubeEdge, &LeaseSeen::Absent);
        assert_eq!((o, l["metadata"]["name"].as_str()), ("insert", Some("n1")));
        let (o, l) = renewal(
            "n1",
            now,
            Dialect::KubeEdge,
            &LeaseSeen::Version("7".into()),
        );
        assert_eq!(
            (o, l["metadata"]["resourceVersion"].as_str()),
            ("update", Some("7"))
        );
        let (o, l) = renewal("n1", now, Dialect::Kedge, &LeaseSeen::Unknown);
        assert_eq!((o, l["spec"]["renewTime"].as_str()), ("update", Some(now)));
    }
}
