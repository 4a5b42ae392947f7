//! One node's hub events, handled in order by its worker: a connection rebuilds the node's
//! delivery queue and resyncs it, a disconnection marks it NotReady, and each message from the
//! edge is applied and answered — an ack once applied, an `error` for what can never be applied
//! (the edge drops it), nothing on a transient failure (the edge re-sends).

use std::sync::atomic::Ordering;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kedge_core::envelope::{Message, group, op};
use kedge_core::resource::ObjectRef;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::answer::{self, Answer};
use super::authz::{self, Write};
use super::podstatus::{self, PodStatusError};
use super::{Ctl, leases, resync};
use crate::cloudhub::hub::HubEvent;
use crate::devicecontroller::report::{self, ReportError};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Forbidden(#[from] authz::Forbidden),
    #[error(transparent)]
    PodStatus(#[from] podstatus::PodStatusError),
    #[error(transparent)]
    Device(#[from] ReportError),
    #[error(transparent)]
    Resource(#[from] kedge_core::resource::ResourceError),
    #[error("Kubernetes API: {}", crate::objects::brief(.0))]
    Kube(#[from] kube::Error),
    #[error("the edge's object is not valid: {0}")]
    Content(#[from] serde_json::Error),
}

impl UpstreamError {
    /// True when the node asked for something it may not do (logged and counted).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            UpstreamError::Forbidden(_)
                | UpstreamError::PodStatus(PodStatusError::NotBound { .. })
                | UpstreamError::Device(ReportError::NotBound { .. })
        )
    }

    /// True when a retry may succeed (the edge re-sends; nothing is answered).
    fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Kube(_)
                | UpstreamError::PodStatus(PodStatusError::Kube(_))
                | UpstreamError::Device(ReportError::Kube(_) | ReportError::Conflict(_))
        )
    }
}

/// What a Lease write is answered with: the Lease the edge sent (kubelet keeps it as the base of
/// its next renewal), named as the node's. The cloud renews the Lease itself, so what kubelet
/// sent beyond that is not stored.
fn lease_answer(node: &str, content: &Value) -> Value {
    let mut l = match content {
        Value::Object(_) => content.clone(),
        _ => json!({}),
    };
    l["apiVersion"] = json!("coordination.k8s.io/v1");
    l["kind"] = json!("Lease");
    l["metadata"]["name"] = json!(node);
    l["metadata"]["namespace"] = json!(authz::NODE_LEASE_NAMESPACE);
    l
}

impl Ctl {
    /// Handles one of `node`'s hub events.
    pub(super) async fn handle(&self, node: &str, ev: HubEvent) {
        let result = match ev {
            HubEvent::Connected(_) => self.connected(node).await,
            HubEvent::Disconnected(_) => {
                self.downstream.disconnected(node);
                self.gone(node).await
            }
            HubEvent::Message(_, m) => self.message(node, *m).await,
        };
        match result {
            Err(e) if e.is_refusal() => tracing::warn!(node, error = %e, "edge write refused"),
            Err(e) => tracing::warn!(node, error = %e, "edge message not applied"),
            Ok(()) => {}
        }
    }

    async fn message(&self, node: &str, m: Message) -> Result<(), UpstreamError> {
        match m.route.operation.as_str() {
            op::RESPONSE => {
                self.ack(node, &m);
                Ok(())
            }
            op::ERROR => {
                tracing::warn!(node, resource = %m.route.resource, error = %m.content, "the edge could not apply a message; it will be re-sent");
                Ok(())
            }
            op::UPLOAD if m.route.group == group::USER && !m.header.parent_id.is_empty() => {
                // A servicebus answer whose caller stopped waiting (the hub hands on those
                // still awaited).
                tracing::debug!(node, parent = %m.header.parent_id, "late servicebus answer dropped");
                Ok(())
            }
            op::UPLOAD
                if m.route.group == group::USER
                    && m.route.source == crate::router::servicebus::SOURCE =>
            {
                self.rules.service_call(&self.hub, node, m);
                Ok(())
            }
            op::UPLOAD if m.route.group == group::USER => {
                self.rules.upload(&self.hub, node, m);
                Ok(())
            }
            _ => self.apply_and_answer(node, &m).await,
        }
    }

    /// The node acknowledged a message the cloud sent.
    pub(super) fn ack(&self, node: &str, m: &Message) {
        self.downstream.ack(node, &m.header.parent_id);
    }

    /// A node (re)connected: rebuild its queue from what it acknowledged and resync it.
    async fn connected(&self, node: &str) -> Result<(), UpstreamError> {
        if let Some(r) = &self.replicas {
            // A claim that fails is made again at the node's registration or next session;
            // the session is served meanwhile.
            if let Err(e) = r.claim(&self.nodes, node).await {
                tracing::warn!(node, error = %crate::objects::brief(&e), "could not record this replica as the node's");
            }
        }
        let Some(records) = self.downstream.connected(node).await else {
            return Ok(());
        };
        let placers: [&dyn resync::Placer; 3] = [&self.bound, &self.devices, &*self.rules];
        resync::resync(node, &placers, &records, &self.downstream).await;
        Ok(())
    }

    /// Applies an edge message and answers it.
    async fn apply_and_answer(&self, node: &str, m: &Message) -> Result<(), UpstreamError> {
        let result = self.upstream(node, m).await;
        let reply = match &result {
            Ok(a) => {
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
                Some(answer::reply(m, a))
            }
            Err(e) if e.is_transient() => None,
            Err(e) => {
                if e.is_refusal() {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                }
                Some(answer::refusal(m, &e.to_string()))
            }
        };
        if let Some(r) = reply {
            let _ = self.hub.send(node, r).await;
        }
        result.map(drop)
    }

    async fn upstream(&self, node: &str, m: &Message) -> Result<Answer, UpstreamError> {
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
            let status = self.devices.cached_status(r.namespace, r.name);
            report::apply(&self.client, (cached, status), node, r, &m.content).await?;
            return Ok(Answer::Ack);
        }
        if m.route.resource == answer::MEMBERSHIP_DETAIL {
            // DeviceTwin asks on every connection and re-sends until confirmed; the devices
            // themselves reach it through membership and device messages (resync).
            return Ok(Answer::Ack);
        }
        let r = ObjectRef::parse(&m.route.resource)?;
        match authz::authorize(node, &m.route.operation, &m.route.resource, &r)? {
            Write::Node => Ok(Answer::Object(self.upsert_node(node, &m.content).await?)),
            Write::NodeStatus => self.status(node, &m.content).await.map(|_| Answer::Ack),
            Write::NodePatch => {
                let p = podstatus::patch_of(&m.content)?;
                let patched = self
                    .nodes
                    .patch_status(node, &PatchParams::default(), &Patch::Strategic(&p))
                    .await?;
                Ok(Answer::Object(serde_json::to_value(patched)?))
            }
            Write::Lease => {
                self.renew_lease(node).await?;
                Ok(Answer::Object(lease_answer(node, &m.content)))
            }
            Write::LeaseGet => match self.leases.get(node).await {
                Ok(l) => Ok(Answer::Object(serde_json::to_value(l)?)),
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    Ok(Answer::Status(answer::status_of(&e)))
                }
                Err(e) => Err(e.into()),
            },
            Write::PodStatus { namespace, name } => {
                let req = podstatus::parse(name, &m.content)?;
                podstatus::apply(&self.client, node, namespace, &req).await?;
                Ok(Answer::Ack)
            }
            Write::PodPatch { namespace, name } => {
                let p = podstatus::patch_of(&m.content)?;
                let pod = podstatus::patch(&self.client, node, namespace, name, &p).await?;
                Ok(Answer::Object(serde_json::to_value(pod)?))
            }
            Write::PodDelete { namespace, name } => {
                let uid = podstatus::uid_to_delete(&m.content)?;
                podstatus::delete(&self.client, node, namespace, name, &uid).await?;
                Ok(Answer::Ack)
            }
        }
    }

    /// Registers the node (as kubelet does): creates its Node, or updates its labels, then its
    /// status. Returns the Node as stored.
    async fn upsert_node(&self, node: &str, content: &Value) -> Result<Value, UpstreamError> {
        let mut obj: Node = serde_json::from_value(content.clone())?;
        obj.metadata.name = Some(node.into());
        obj.metadata.resource_version = None;
        // Registered by the replica holding its session: the record of who holds it.
        let owner = self.replicas.as_ref().map(|r| r.me.annotations());
        if let Some(Value::Object(o)) = &owner {
            let annotations = obj.metadata.annotations.get_or_insert_default();
            for (k, v) in o {
                if let Some(v) = v.as_str() {
                    annotations.insert(k.clone(), v.into());
                }
            }
        }
        match self.nodes.create(&PostParams::default(), &obj).await {
            Ok(_) => tracing::info!(node, "registered node"),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let labels = content
                    .pointer("/metadata/labels")
                    .cloned()
                    .unwrap_or(json!({}));
                let mut p = json!({"metadata": {"labels": labels}});
                if let Some(a) = owner {
                    p["metadata"]["annotations"] = a;
                }
                self.nodes
                    .patch(node, &PatchParams::default(), &Patch::Merge(&p))
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
        let status = content.get("status").cloned().unwrap_or(json!({}));
        let stored = self.status(node, &status).await?;
        Ok(serde_json::to_value(stored)?)
    }

    async fn status(&self, node: &str, content: &Value) -> Result<Node, UpstreamError> {
        let mut status = status_of(content).clone();
        if let Some(ep) = &self.kubelet {
            crate::cloudstream::point_at(&mut status, ep);
        }
        let p = json!({"status": status});
        let stored = self
            .nodes
            .patch_status(node, &PatchParams::default(), &Patch::Merge(&p))
            .await?;
        self.renew_lease(node).await?;
        Ok(stored)
    }

    /// Renews `node`'s Lease: gathered for the next flush with the embedded API, else at once.
    async fn renew_lease(&self, node: &str) -> Result<(), UpstreamError> {
        if self.lease_writer.is_some() {
            self.gathered.add(node);
            return Ok(());
        }
        self.write_lease(node).await
    }

    /// One renewal through the API: a PATCH, and a create the first time.
    pub(super) async fn write_lease(&self, node: &str) -> Result<(), UpstreamError> {
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
                match self.leases.create(&PostParams::default(), &lease).await {
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    other => {
                        other?;
                    }
                }
            }
            other => {
                other?;
            }
        }
        Ok(())
    }

    /// The node's session here ended: NotReady — unless another replica holds the node now.
    /// The Node is read and written back only if it did not change in between (a 409 reads
    /// again), so a claim landing meanwhile is never overwritten by a stale NotReady.
    async fn gone(&self, node: &str) -> Result<(), UpstreamError> {
        let Some(r) = &self.replicas else {
            return self.not_ready(node).await;
        };
        for _ in 0..GONE_TRIES {
            let Some(n) = self.nodes.get_opt(node).await? else {
                return Ok(());
            };
            let owner = crate::replicas::Owner::of(kube::ResourceExt::annotations(&n));
            if !crate::replicas::may_mark_gone(owner.as_ref(), &r.me.id) {
                tracing::info!(node, holder = ?owner.map(|o| o.id), "session ended here; the node is held by another replica");
                return Ok(());
            }
            let mut p = not_ready_patch();
            p["metadata"] = json!({"resourceVersion": n.metadata.resource_version});
            match self
                .nodes
                .patch_status(node, &PatchParams::default(), &Patch::Merge(&p))
                .await
            {
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                other => {
                    other?;
                    tracing::info!(node, "node is NotReady: its edge disconnected");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The edge is gone: Ready becomes Unknown, as the node lifecycle controller does.
    pub(super) async fn not_ready(&self, node: &str) -> Result<(), UpstreamError> {
        let p = not_ready_patch();
        match self
            .nodes
            .patch_status(node, &PatchParams::default(), &Patch::Merge(&p))
            .await
        {
            // A node that never registered, or was deleted, has nothing to mark.
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            other => {
                other?;
            }
        }
        tracing::info!(node, "node is NotReady: its edge disconnected");
        Ok(())
    }
}
/// Reads and conditional writes a disconnection makes before leaving the node be.
const GONE_TRIES: usize = 5;

/// Ready Unknown, as the node lifecycle controller writes it.
fn not_ready_patch() -> Value {
    json!({"status": {"conditions": [{
        "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
        "message": "kedge: the edge's connection to CloudHub ended",
        "lastHeartbeatTime": kedge_core::clock::rfc3339(), "lastTransitionTime": kedge_core::clock::rfc3339(),
    }]}})
}

/// The status in a `nodestatus` update: KubeEdge's `NodeStatusRequest` (`{"UID","Status",…}`,
/// as kedge's edge and edgecore send it), or the bare status earlier kedge edges sent.
pub(super) fn status_of(content: &Value) -> &Value {
    content.get("Status").unwrap_or(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_status_reads_kubeedges_request_and_the_bare_status() {
        let status = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        let request = json!({"UID": "", "Status": status.clone(), "ExtendResources": null});
        assert_eq!(status_of(&request), &status);
        assert_eq!(status_of(&status), &status);
    }
}
