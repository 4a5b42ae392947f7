//! EdgeController: what edges report about themselves reaches Kubernetes (through kube-rs).
//! - `insert null/node/<node>`: the Node is created (or its labels and status updated);
//! - `update null/nodestatus/<node>`: the Node's status is updated and its Lease renewed;
//! - `update <ns>/podstatus/<pod>`: the pod's status is updated (`podstatus`);
//! - `update device/<ns>/<name>/twin/edge_updated|state/update`: the Device's status
//!   (`devicecontroller::report`), if the Device is bound to the node;
//! - the session ending marks the Node's Ready condition Unknown (NotReady in kubectl);
//! - a deleted Node loses its session and its ObjectSyncs: as with kubelet, a running edge
//!   registers again and is sent everything afresh.
//!
//! What a node may write is decided by `authz`; refusals are answered, logged and counted.
//!
//! Each node's hub events go to its own worker (`workers`), so nodes are handled at once and a
//! slow one delays no other; `upstream` handles them. A (re)connecting node is resynced by the
//! one resync (`resync`) over the controllers that place objects on nodes. This loop keeps the
//! rest: the Node watch (deletions, Ready claims), the stale-node sweep and the Lease flush.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::cloudhub::downstream::Downstream;

pub mod answer;
pub mod authz;
pub mod bound;
pub mod leases;
pub mod podstatus;
pub mod refs;
pub mod resync;
mod upstream;
pub mod workers;

pub use upstream::UpstreamError;
pub use workers::Workers;

use authz::NODE_LEASE_NAMESPACE;
use leases::Gathered;

/// Node lifecycle: how long an edge node may go without a heartbeat and without a session
/// before it is marked NotReady (covers edges that died while the cloud was down).
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub grace: std::time::Duration,
    pub every: std::time::Duration,
    /// No node is marked NotReady this soon after the cloud starts: while it was down no edge
    /// could renew anything, and after a restart a fleet takes a while to reconnect (as
    /// kube-controller-manager gives every node its grace period from its own start).
    pub after_start: std::time::Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        // kube-controller-manager's node-monitor-grace-period is 40 s.
        Lifecycle {
            grace: std::time::Duration::from_secs(40),
            every: std::time::Duration::from_secs(10),
            after_start: std::time::Duration::from_secs(40),
        }
    }
}

/// True when `node` claims Ready but has no session here and has shown no sign of life within
/// `grace`: neither a heartbeat in its Ready condition nor a renewal of its Lease (`renewed`,
/// RFC 3339). Edges renew their Lease every 10 s but send their full status only when it changes
/// (or every 5 min), as kubelet does.
pub fn is_stale(
    node: &Value,
    renewed: Option<&str>,
    connected: bool,
    now: jiff::Timestamp,
    grace: std::time::Duration,
) -> bool {
    if connected {
        return false;
    }
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    let Some(ready) = ready.filter(|c| c["status"] == "True") else {
        return false;
    };
    let time = |t: Option<&str>| t.and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let beat = time(ready["lastHeartbeatTime"].as_str());
    let last = beat.max(time(renewed));
    last.is_none_or(|b| now.as_second() - b.as_second() > grace.as_secs() as i64)
}

/// What the node workers and the main loop share.
pub(crate) struct Ctl {
    nodes: Api<Node>,
    leases: Api<Lease>,
    hub: Arc<crate::cloudhub::hub::Hub>,
    downstream: Arc<Downstream>,
    bound: bound::Bound,
    devices: crate::devicecontroller::DeviceController,
    rules: Arc<crate::router::Rules>,
    client: kube::Client,
    stats: Arc<Stats>,
    /// With the embedded API: renewals are gathered and written together (`leases`).
    lease_writer: Option<Arc<dyn crate::bulk::Bulk>>,
    gathered: Gathered,
    /// Where edge Nodes' kubelet API is served (CloudStream), written into their status.
    kubelet: Option<crate::cloudstream::Endpoint>,
    /// The other replicas (a real cluster): this one claims the nodes whose sessions it holds.
    replicas: Option<Arc<crate::replicas::Replicas>>,
}

pub struct EdgeController {
    ctl: Arc<Ctl>,
    lifecycle: Lifecycle,
    /// Edge nodes whose Ready condition is True, with that condition: kept from the Node watch
    /// so the sweep reads no Nodes while every node is connected.
    claims_ready: HashMap<String, Value>,
    /// When this controller started leading cluster-wide work (its start, for the only cloud;
    /// see `Lifecycle::after_start`); `None` while another replica leads.
    leading_since: Option<std::time::Instant>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Edge writes refused by node authorization.
    pub refused: AtomicU64,
    /// Edge messages applied (and acknowledged).
    pub applied: AtomicU64,
}

/// How the controller writes what it writes.
#[derive(Default)]
pub struct Options {
    pub lifecycle: Lifecycle,
    /// Bulk Lease renewals (the embedded API); `None`: one API call each.
    pub lease_writer: Option<Arc<dyn crate::bulk::Bulk>>,
    /// CloudStream's endpoint, which edge Nodes advertise as their kubelet.
    pub kubelet: Option<crate::cloudstream::Endpoint>,
    /// The other replicas, and whether this one leads cluster-wide work (the stale-node sweep,
    /// removing deleted nodes' records); `None`: it is the only cloud and always does it.
    pub replicas: Option<Arc<crate::replicas::Replicas>>,
}

impl EdgeController {
    /// The controller, fed by `workers` (the hub's per-node queues).
    pub fn new(
        client: kube::Client,
        hub: Arc<crate::cloudhub::hub::Hub>,
        downstream: Arc<Downstream>,
        rules: Arc<crate::router::Rules>,
        workers: &Workers,
        opts: Options,
    ) -> EdgeController {
        let Options {
            lifecycle,
            lease_writer,
            kubelet,
            replicas,
        } = opts;
        let leading_since = replicas.is_none().then(std::time::Instant::now);
        let ctl = Arc::new(Ctl {
            nodes: Api::all(client.clone()),
            leases: Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            bound: bound::Bound::start(client.clone(), downstream.clone()),
            devices: crate::devicecontroller::DeviceController::start(
                client.clone(),
                downstream.clone(),
                crate::replicas::gate(replicas.as_ref()),
            ),
            client,
            rules,
            stats: Arc::default(),
            downstream,
            hub,
            lease_writer,
            gathered: Gathered::default(),
            kubelet,
            replicas,
        });
        workers.bind(ctl.clone());
        EdgeController {
            ctl,
            lifecycle,
            claims_ready: HashMap::new(),
            leading_since,
        }
    }

    /// The controller's counters (for `/metrics`).
    pub fn stats(&self) -> Arc<Stats> {
        self.ctl.stats.clone()
    }

    /// Watches Nodes, sweeps for stale nodes and flushes Lease renewals, for ever.
    pub async fn run(mut self) {
        let mut sweep = tokio::time::interval(self.lifecycle.every);
        let mut flush = tokio::time::interval(leases::FLUSH_EVERY);
        let nodes = watcher(self.ctl.nodes.clone(), watcher::Config::default()).default_backoff();
        let mut nodes = std::pin::pin!(nodes);
        loop {
            let result = tokio::select! {
                Some(ev) = nodes.next() => match ev {
                    Ok(watcher::Event::Delete(n)) => {
                        self.claims_ready.remove(&n.name_any());
                        if let Some(r) = &self.ctl.replicas {
                            r.forget(&n.name_any());
                        }
                        self.node_deleted(&n.name_any()).await
                    }
                    Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                        self.track(&n);
                        if let Some(r) = &self.ctl.replicas {
                            r.observe(&n);
                        }
                        Ok(())
                    }
                    Ok(watcher::Event::Init) => {
                        self.claims_ready.clear();
                        Ok(())
                    }
                    Ok(watcher::Event::InitDone) if self.leads() => self.forget_orphans().await,
                    Ok(watcher::Event::InitDone) => Ok(()),
                    Err(e) => {
                        crate::objects::log_watch_error(&e, "watching nodes");
                        Ok(())
                    }
                },
                // Cluster-wide: only the leader among replicas sweeps.
                _ = sweep.tick() => self.lead().await,
                _ = flush.tick() => self.flush_leases().await,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "edgecontroller");
            }
        }
    }

    /// Whether this cloud does cluster-wide work now.
    fn leads(&self) -> bool {
        self.ctl.replicas.as_ref().is_none_or(|r| r.leads())
    }

    /// The sweep's turn: sweeps while leading. A replica that just became the leader first
    /// removes the records of nodes deleted while nobody led, and gives every node the grace
    /// period from then: the fleet may be moving over from the replica that led.
    async fn lead(&mut self) -> Result<(), UpstreamError> {
        match (self.leads(), self.leading_since) {
            (false, _) => {
                self.leading_since = None;
                Ok(())
            }
            (true, None) => {
                self.leading_since = Some(std::time::Instant::now());
                self.forget_orphans().await
            }
            (true, Some(_)) => self.sweep().await,
        }
    }

    /// A Node was deleted: end its session and drop what it acknowledged (its records: the
    /// leader's to remove).
    async fn node_deleted(&self, node: &str) -> Result<(), UpstreamError> {
        let closed = self.ctl.hub.close(node);
        self.ctl.downstream.drop_node(node);
        let records = match self.leads() {
            true => self.ctl.downstream.forget_node(node).await?,
            false => 0,
        };
        if closed || records > 0 {
            tracing::info!(
                node,
                records,
                closed,
                "node deleted: its session and sync records are gone"
            );
        }
        Ok(())
    }

    /// Drops the sync records of nodes deleted while the cloud was down.
    async fn forget_orphans(&self) -> Result<(), UpstreamError> {
        let live = self
            .ctl
            .nodes
            .list_metadata(&kube::api::ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|n| n.name_any())
            .collect();
        let n = self.ctl.downstream.forget_orphans(&live).await?;
        if n > 0 {
            tracing::info!(records = n, "removed the sync records of deleted nodes");
        }
        Ok(())
    }

    /// Notes whether an edge node claims Ready (and its Ready condition) from a watch event.
    fn track(&mut self, node: &Node) {
        let edge = node.labels().contains_key("node-role.kubernetes.io/edge");
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
            .and_then(|c| serde_json::to_value(c).ok());
        match ready.filter(|_| edge) {
            Some(c) => self
                .claims_ready
                .insert(node.name_any(), json!({"status": {"conditions": [c]}})),
            None => self.claims_ready.remove(&node.name_any()),
        };
    }

    /// Marks NotReady the edge nodes that went silent without a session ending here.
    async fn sweep(&self) -> Result<(), UpstreamError> {
        let since = self
            .leading_since
            .map_or(std::time::Duration::ZERO, |t| t.elapsed());
        if since < self.lifecycle.after_start {
            return Ok(());
        }
        let now = jiff::Timestamp::now();
        let hub = &self.ctl.hub;
        // Connected nodes are alive: only the others claiming Ready are looked at (and Leases
        // listed only when there are any).
        let silent: Vec<(&String, &Value)> = self
            .claims_ready
            .iter()
            .filter(|(name, _)| !hub.is_connected(name))
            .collect();
        if silent.is_empty() {
            return Ok(());
        }
        let renewed: HashMap<String, String> = self
            .ctl
            .leases
            .list(&kube::api::ListParams::default())
            .await?
            .into_iter()
            .filter_map(|l| {
                let t = l.spec?.renew_time?;
                Some((
                    l.metadata.name?,
                    serde_json::to_value(t).ok()?.as_str()?.to_string(),
                ))
            })
            .collect();
        for (name, value) in silent {
            let lease = renewed.get(name).map(String::as_str);
            // Checked again: the node may have connected while the Leases were read.
            let connected = hub.is_connected(name);
            if is_stale(value, lease, connected, now, self.lifecycle.grace) {
                self.ctl.not_ready(name).await?;
            }
        }
        Ok(())
    }

    /// Writes the gathered renewals in one go; Leases that do not exist yet are created.
    async fn flush_leases(&self) -> Result<(), UpstreamError> {
        let Some(writer) = &self.ctl.lease_writer else {
            return Ok(());
        };
        let nodes = self.ctl.gathered.take();
        if nodes.is_empty() {
            return Ok(());
        }
        let missing = match leases::flush(writer, nodes.clone()).await {
            Ok(missing) => missing,
            Err(e) => {
                tracing::warn!(error = %e, nodes = nodes.len(), "renewing Leases in bulk failed; renewing one by one");
                nodes
            }
        };
        for node in missing {
            self.ctl.write_lease(&node).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn node(status: &str, beat: &str) -> Value {
        json!({"status": {"conditions": [{"type": "Ready", "status": status, "lastHeartbeatTime": beat}]}})
    }

    #[test]
    fn only_silent_disconnected_ready_nodes_are_stale() {
        let now: jiff::Timestamp = "2026-11-27T12:00:00Z".parse().expect("time");
        let grace = Duration::from_secs(40);
        let stale =
            |n: &Value, lease: Option<&str>, connected| is_stale(n, lease, connected, now, grace);
        assert!(stale(&node("True", "2026-11-27T11:59:00Z"), None, false));
        assert!(
            !stale(&node("True", "2026-11-27T11:59:30Z"), None, false),
            "within grace"
        );
        assert!(
            !stale(
                &node("True", "2026-11-27T11:55:00Z"),
                Some("2026-11-27T11:59:50.123456Z"),
                false
            ),
            "an old status but a fresh Lease"
        );
        assert!(stale(
            &node("True", "2026-11-27T11:55:00Z"),
            Some("2026-11-27T11:58:00Z"),
            false
        ));
        assert!(
            !stale(&node("True", "2026-11-27T11:00:00Z"), None, true),
            "connected"
        );
        assert!(
            !stale(&node("Unknown", "2026-11-27T11:00:00Z"), None, false),
            "already NotReady"
        );
        assert!(
            stale(&node("True", "garbage"), None, false),
            "no usable heartbeat"
        );
    }
}
