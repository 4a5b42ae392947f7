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
use crate::edgehub::outbox::Outbox;

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
) {
    let host = Host::read();
    let mut connected = hub.connected();
    let mut tick = tokio::time::interval(r.every);
    let mut last: Option<(serde_json::Value, u64)> = None;
    // Registered on the current connection: the first report of each connection registers,
    // whichever wakes the loop first (a tick racing the connection would otherwise send a
    // status for a node the cloud does not know yet).
    let mut registered = false;
    let mut leased = false;
    loop {
        tokio::select! {
            changed = connected.changed() => {
                if changed.is_err() {
                    return;
                }
                // Every connection registers anew (the cloud marked the node NotReady).
                connected.borrow_and_update();
                registered = false;
                leased = false;
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
            leased = false;
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
            ("nodestatus", op::UPDATE, status, false)
        } else {
            // The first renewal of a connection creates the Lease (a stock cloudcore cannot
            // update one that does not exist; an existing one is only refused, and updated
            // at the next renewal).
            let operation = if leased { op::UPDATE } else { op::INSERT };
            leased = true;
            let lease = nodestatus::lease(&r.node, &kedge_core::clock::rfc3339_micro());
            ("lease", operation, lease, true)
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
