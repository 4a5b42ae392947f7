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

use crate::devicecontroller::report::{self, ReportError};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kedge_core::envelope::{Message, op};
use kedge_core::resource::ObjectRef;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use podstatus::PodStatusError;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

use crate::cloudhub::downstream::Downstream;
use crate::cloudhub::hub::HubEvent;

pub mod authz;
pub mod bound;
pub mod leases;
pub mod podstatus;
pub mod refs;

use authz::{NODE_LEASE_NAMESPACE, Write};
use leases::{Gathered, LeaseWriter};

/// Node lifecycle: how long an edge node may go without a heartbeat and without a session
/// before it is marked NotReady (covers edges that died while the cloud was down).
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub grace: std::time::Duration,
    pub every: std::time::Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        // kube-controller-manager's node-monitor-grace-period is 40 s.
        Lifecycle {
            grace: std::time::Duration::from_secs(40),
            every: std::time::Duration::from_secs(10),
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

pub struct EdgeController {
    nodes: Api<Node>,
    leases: Api<Lease>,
    hub: Arc<crate::cloudhub::hub::Hub>,
    lifecycle: Lifecycle,
    downstream: Arc<Downstream>,
    bound: bound::Bound,
    devices: crate::devicecontroller::DeviceController,
    rules: Arc<crate::router::Rules>,
    client: kube::Client,
    stats: Arc<Stats>,
    /// With the embedded API: renewals are gathered and written together (`leases`).
    lease_writer: Option<Arc<dyn LeaseWriter>>,
    gathered: Gathered,
    /// Edge nodes whose Ready condition is True, with that condition: kept from the Node watch
    /// so the sweep reads no Nodes while every node is connected.
    claims_ready: std::sync::Mutex<std::collections::HashMap<String, Value>>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Edge writes refused by node authorization.
    pub refused: AtomicU64,
    /// Edge messages applied (and acknowledged).
    pub applied: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Forbidden(#[from] authz::Forbidden),
    #[error("{0}")]
    PodStatus(#[from] podstatus::PodStatusError),
    #[error("{0}")]
    Device(#[from] ReportError),
    #[error("{0}")]
    Resource(#[from] kedge_core::resource::ResourceError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("watching nodes: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
    #[error("{0}")]
    Content(#[from] serde_json::Error),
}

impl UpstreamError {
    /// True when the node asked for something it may not do (logged and counted).
    fn is_refusal(&self) -> bool {
        matches!(
            self,
            UpstreamError::Forbidden(_)
                | UpstreamError::PodStatus(PodStatusError::NotBound { .. })
                | UpstreamError::Device(ReportError::NotBound { .. })
        )
    }
}

impl EdgeController {
    pub fn new(
        client: kube::Client,
        hub: Arc<crate::cloudhub::hub::Hub>,
        lifecycle: Lifecycle,
        downstream: Arc<Downstream>,
        rules: Arc<crate::router::Rules>,
        lease_writer: Option<Arc<dyn LeaseWriter>>,
    ) -> EdgeController {
        EdgeController {
            nodes: Api::all(client.clone()),
            leases: Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            bound: bound::Bound::start(client.clone(), downstream.clone()),
            devices: crate::devicecontroller::DeviceController::start(
                client.clone(),
                downstream.clone(),
            ),
            client,
            rules,
            stats: Arc::default(),
            downstream,
            hub,
            lifecycle,
            lease_writer,
            gathered: Gathered::default(),
            claims_ready: Default::default(),
        }
    }

    /// The controller's counters (for `/metrics`).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Handles hub events, and sweeps for stale nodes, until the hub goes away.
    pub async fn run(self, mut events: mpsc::Receiver<HubEvent>) {
        let mut sweep = tokio::time::interval(self.lifecycle.every);
        let mut flush = tokio::time::interval(leases::FLUSH_EVERY);
        let nodes = watcher(self.nodes.clone(), watcher::Config::default()).default_backoff();
        let mut nodes = std::pin::pin!(nodes);
        loop {
            let result = tokio::select! {
                Some(ev) = nodes.next() => match ev {
                    Ok(watcher::Event::Delete(n)) => {
                        self.ready_claims().remove(&n.name_any());
                        self.node_deleted(&n.name_any()).await
                    }
                    Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                        self.track(&n);
                        Ok(())
                    }
                    Ok(watcher::Event::Init) => {
                        self.ready_claims().clear();
                        Ok(())
                    }
                    Ok(watcher::Event::InitDone) => self.forget_orphans().await,
                    Err(e) => Err(e.into()),
                },
                ev = events.recv() => match ev {
                    None => return,
                    Some(HubEvent::Connected(node)) => self.connected(&node).await,
                    Some(HubEvent::Disconnected(node)) => {
                        self.downstream.disconnected(&node);
                        self.not_ready(&node).await
                    }
                    Some(HubEvent::Message(node, m)) if m.route.operation == op::RESPONSE => {
                        self.downstream.ack(&node, &m.header.parent_id).await.map_err(Into::into)
                    }
                    Some(HubEvent::Message(node, m)) if m.route.operation == op::ERROR => {
                        tracing::warn!(node, resource = %m.route.resource, error = %m.content, "the edge could not apply a message; it will be re-sent");
                        Ok(())
                    }
                    Some(HubEvent::Message(node, m))
                        if m.route.group == kedge_core::envelope::group::USER
                            && m.route.operation == op::UPLOAD =>
                    {
                        self.rules.upload(&self.hub, &node, *m);
                        Ok(())
                    }
                    Some(HubEvent::Message(node, m)) => self.apply_and_answer(&node, &m).await,
                },
                _ = sweep.tick() => self.sweep().await,
                _ = flush.tick() => self.flush_leases().await,
            };
            match result {
                Err(e) if e.is_refusal() => tracing::warn!(error = %e, "edge write refused"),
                Err(e) => tracing::warn!(error = %e, "edgecontroller"),
                Ok(()) => {}
            }
        }
    }

    /// A node (re)connected: rebuild its queue from what it acknowledged and resync it.
    async fn connected(&self, node: &str) -> Result<(), UpstreamError> {
        let records = self.downstream.connected(node).await?;
        self.bound.resync(node, &records).await;
        self.devices.resync(node, &records).await;
        self.rules.resync(node, &records).await;
        Ok(())
    }

    /// A Node was deleted: end its session and drop what it acknowledged.
    async fn node_deleted(&self, node: &str) -> Result<(), UpstreamError> {
        let closed = self.hub.close(node);
        let records = self.downstream.forget_node(node).await?;
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
            .nodes
            .list_metadata(&kube::api::ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|n| n.name_any())
            .collect();
        let n = self.downstream.forget_orphans(&live).await?;
        if n > 0 {
            tracing::info!(records = n, "removed the sync records of deleted nodes");
        }
        Ok(())
    }

    fn ready_claims(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Value>> {
        self.claims_ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes whether an edge node claims Ready (and its Ready condition) from a watch event.
    fn track(&self, node: &Node) {
        let edge = node.labels().contains_key("node-role.kubernetes.io/edge");
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
            .and_then(|c| serde_json::to_value(c).ok());
        let mut claims = self.ready_claims();
        match ready.filter(|_| edge) {
            Some(c) => claims.insert(node.name_any(), json!({"status": {"conditions": [c]}})),
            None => claims.remove(&node.name_any()),
        };
    }

    /// Marks NotReady the edge nodes that went silent without a session ending here.
    async fn sweep(&self) -> Result<(), UpstreamError> {
        let now = jiff::Timestamp::now();
        // Connected nodes are alive: only the others claiming Ready are looked at (and Leases
        // listed only when there are any).
        let silent: Vec<(String, Value)> = self
            .ready_claims()
            .iter()
            .filter(|(name, _)| !self.hub.is_connected(name))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        if silent.is_empty() {
            return Ok(());
        }
        let renewed: std::collections::HashMap<String, String> = self
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
            let lease = renewed.get(&name).map(String::as_str);
            if is_stale(&value, lease, false, now, self.lifecycle.grace) {
                self.not_ready(&name).await?;
            }
        }
        Ok(())
    }

    /// Applies an edge message and answers it: an ack once applied, an `error` for what can
    /// never be applied (the edge drops it), nothing on a transient failure (the edge re-sends).
    async fn apply_and_answer(&self, node: &str, m: &Message) -> Result<(), UpstreamError> {
        let result = self.upstream(node, m).await;
        let reply = match &result {
            Ok(()) => {
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
                Some(m.ack())
            }
            Err(
                UpstreamError::Kube(_)
                | UpstreamError::PodStatus(PodStatusError::Kube(_))
                | UpstreamError::Device(ReportError::Kube(_) | ReportError::Conflict(_)),
            ) => None,
            Err(e) => {
                if e.is_refusal() {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                }
                Some(m.error_reply(&e.to_string()))
            }
        };
        if let Some(r) = reply {
            let _ = self.hub.send(node, r).await;
        }
        result
    }

    async fn upstream(&self, node: &str, m: &Message) -> Result<(), UpstreamError> {
        if let Some(r) = report::parse(&m.route.resource) {
            if m.route.operation != op::UPDATE {
                return Err(authz::Forbidden {
                    node: node.into(),
                    operation: m.route.operation.clone(),
                    resource: m.route.resource.clone(),
                    why: "device reports are updates",
                }
                .into());
            }
            let cached = self.devices.cached(r.namespace, r.name);
            return Ok(report::apply(&self.client, cached, node, r, &m.content).await?);
        }
        let r = ObjectRef::parse(&m.route.resource)?;
        match authz::authorize(node, &m.route.operation, &m.route.resource, &r)? {
            Write::Node => self.upsert_node(node, &m.content).await,
            Write::NodeStatus => self.status(node, &m.content).await,
            Write::Lease => self.renew_lease(node).await,
            Write::PodStatus { namespace, name } => {
                let req = podstatus::parse(name, &m.content)?;
                Ok(podstatus::apply(&self.client, node, namespace, &req).await?)
            }
            Write::PodDelete { namespace, name } => {
                let uid = podstatus::uid_to_delete(&m.content)?;
                Ok(podstatus::delete(&self.client, node, namespace, name, &uid).await?)
            }
        }
    }

    async fn upsert_node(&self, node: &str, content: &Value) -> Result<(), UpstreamError> {
        if self.nodes.get_opt(node).await?.is_none() {
            let mut obj: Node = serde_json::from_value(content.clone())?;
            obj.metadata.name = Some(node.into());
            obj.metadata.resource_version = None;
            self.nodes.create(&PostParams::default(), &obj).await?;
            tracing::info!(node, "registered node");
        } else {
            let labels = content
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            let p = json!({"metadata": {"labels": labels}});
            self.nodes
                .patch(node, &PatchParams::default(), &Patch::Merge(&p))
                .await?;
        }
        let status = content.get("status").cloned().unwrap_or(json!({}));
        self.status(node, &status).await
    }

    async fn status(&self, node: &str, status: &Value) -> Result<(), UpstreamError> {
        let p = json!({"status": status});
        self.nodes
            .patch_status(node, &PatchParams::default(), &Patch::Merge(&p))
            .await?;
        self.renew_lease(node).await
    }

    /// Renews `node`'s Lease: gathered for the next flush with the embedded API, else at once.
    async fn renew_lease(&self, node: &str) -> Result<(), UpstreamError> {
        if self.lease_writer.is_some() {
            self.gathered.add(node);
            return Ok(());
        }
        self.write_lease(node).await
    }

    /// Writes the gathered renewals in one go; Leases that do not exist yet are created.
    async fn flush_leases(&self) -> Result<(), UpstreamError> {
        let Some(writer) = &self.lease_writer else {
            return Ok(());
        };
        let nodes = self.gathered.take();
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
            self.write_lease(&node).await?;
        }
        Ok(())
    }

    /// One renewal through the API: a PATCH, and a create the first time.
    async fn write_lease(&self, node: &str) -> Result<(), UpstreamError> {
        let spec = leases::spec(node, &kedge_core::clock::rfc3339_micro());
        let p = json!({"spec": spec});
        match self
            .leases
            .patch(node, &PatchParams::default(), &Patch::Merge(&p))
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let lease: Lease =
                    serde_json::from_value(json!({"metadata": {"name": node}, "spec": spec}))?;
                self.leases.create(&PostParams::default(), &lease).await?;
            }
            other => {
                other?;
            }
        }
        Ok(())
    }

    /// The edge is gone: Ready becomes Unknown, as the node lifecycle controller does.
    async fn not_ready(&self, node: &str) -> Result<(), UpstreamError> {
        if self.nodes.get_opt(node).await?.is_none() {
            return Ok(());
        }
        let p = json!({"status": {"conditions": [{
            "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
            "message": "kedge: the edge's connection to CloudHub ended",
            "lastHeartbeatTime": kedge_core::clock::rfc3339(), "lastTransitionTime": kedge_core::clock::rfc3339(),
        }]}});
        self.nodes
            .patch_status(node, &PatchParams::default(), &Patch::Merge(&p))
            .await?;
        tracing::info!(node, "node is NotReady: its edge disconnected");
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
