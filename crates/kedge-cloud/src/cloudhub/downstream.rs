//! Cloud→edge delivery: one [`NodeQueue`] per node (the pure state machine in
//! `kedge_core::delivery`), a writer that sends what the queues release, and the record of what
//! each node acknowledged — ObjectSync (`<node>.<uid>` in the object's namespace) or
//! ClusterObjectSync, with `status.objectResourceVersion`, as KubeEdge keeps it. On connect the
//! queue is rebuilt from those records, so a resync sends exactly what the node lacks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kedge_core::delivery::{Acked, Limits, NodeQueue, Offered, Outgoing};
use kedge_core::resource::ObjectRef;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use serde_json::json;
use tokio::sync::Notify;

use super::hub::Hub;

/// What a node acknowledged of one object (one ObjectSync).
#[derive(Debug, Clone)]
pub struct SyncRecord {
    pub uid: String,
    pub rv: u64,
    pub namespace: Option<String>,
    /// Resource-string type token (`pod`, `configmap`, …).
    pub kind: String,
    pub name: String,
}

/// Type token → (apiVersion, kind) of the object, for ObjectSync specs.
fn type_of(token: &str) -> (&'static str, &str) {
    match token {
        "pod" => ("v1", "Pod"),
        "configmap" => ("v1", "ConfigMap"),
        "secret" => ("v1", "Secret"),
        "node" => ("v1", "Node"),
        "device" => ("devices.kubeedge.io/v1alpha2", "Device"),
        "devicemodel" => ("devices.kubeedge.io/v1alpha2", "DeviceModel"),
        "rule" => ("rules.kubeedge.io/v1", "Rule"),
        other => ("v1", other),
    }
}

/// The ObjectSync name recording what `node` acknowledged of the object `uid`.
pub fn sync_name(node: &str, uid: &str) -> String {
    format!("{node}.{uid}")
}

/// The node and object UID of an ObjectSync name. Node names may contain dots, UIDs do not,
/// so the split is at the last dot (a prefix match would give node `a` the records of `a.b`).
pub fn sync_owner(name: &str) -> Option<(&str, &str)> {
    name.rsplit_once('.')
        .filter(|(node, uid)| !node.is_empty() && !uid.is_empty())
}

fn token_of(kind: &str) -> String {
    kind.to_lowercase()
}

fn sync_resource(cluster: bool) -> ApiResource {
    let (kind, plural) = if cluster {
        ("ClusterObjectSync", "clusterobjectsyncs")
    } else {
        ("ObjectSync", "objectsyncs")
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("reliablesyncs.kubeedge.io", "v1alpha1", kind),
        plural,
    )
}

/// The record an ObjectSync holds about the object `uid`.
fn record_of(o: &DynamicObject, uid: &str) -> SyncRecord {
    let text = |path: &str| o.data.pointer(path).and_then(|v| v.as_str());
    SyncRecord {
        uid: uid.to_string(),
        rv: text("/status/objectResourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        namespace: o.metadata.namespace.clone(),
        kind: token_of(text("/spec/objectKind").unwrap_or("")),
        name: text("/spec/objectName").unwrap_or("").to_string(),
    }
}

pub struct Downstream {
    hub: Arc<Hub>,
    client: kube::Client,
    limits: Limits,
    queues: Mutex<HashMap<String, NodeQueue>>,
    wake: Notify,
    acks: std::sync::atomic::AtomicU64,
}

impl Downstream {
    pub fn new(hub: Arc<Hub>, client: kube::Client) -> Arc<Downstream> {
        let d = Arc::new(Downstream {
            hub,
            client,
            limits: Limits::default(),
            queues: Mutex::default(),
            wake: Notify::new(),
            acks: Default::default(),
        });
        tokio::spawn(d.clone().write_loop());
        d
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeQueue>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an object version for `node`.
    pub fn offer(&self, node: &str, out: Outgoing) -> Offered {
        let limits = self.limits;
        let offered = self
            .queues()
            .entry(node.to_string())
            .or_insert_with(|| NodeQueue::new(limits, HashMap::new()))
            .offer(out);
        if offered == Offered::Full {
            tracing::warn!(
                node,
                "delivery queue full; the object will be resynced on the next connection"
            );
        }
        self.wake.notify_one();
        offered
    }

    /// A node connected: rebuild its queue from what it acknowledged, keeping what was waiting.
    /// Returns the acknowledgement records, for the controllers' resync.
    pub async fn connected(&self, node: &str) -> Result<Vec<SyncRecord>, kube::Error> {
        let records = self.records(node).await?;
        let acked = records.iter().map(|r| (r.uid.clone(), r.rv)).collect();
        let mut queues = self.queues();
        let waiting = queues
            .get_mut(node)
            .map(NodeQueue::drain)
            .unwrap_or_default();
        let mut q = NodeQueue::new(self.limits, acked);
        for o in waiting {
            q.offer(o);
        }
        queues.insert(node.to_string(), q);
        drop(queues);
        self.wake.notify_one();
        Ok(records)
    }

    pub fn disconnected(&self, node: &str) {
        if let Some(q) = self.queues().get_mut(node) {
            q.disconnected();
        }
    }

    /// The node acknowledged `parent_msg_id`: record it.
    pub async fn ack(&self, node: &str, parent_msg_id: &str) -> Result<(), kube::Error> {
        let acked = self
            .queues()
            .get_mut(node)
            .and_then(|q| q.ack(parent_msg_id));
        self.wake.notify_one();
        match acked {
            Some(a) => self.record(node, &a).await,
            None => Ok(()),
        }
    }

    /// `/metrics` readings: queue depths across nodes, acks and re-sends since start.
    pub fn readings(&self) -> Vec<kedge_http::metrics::Reading> {
        use kedge_http::metrics::Reading;
        let queues = self.queues();
        let sum = |f: fn(&NodeQueue) -> u64| queues.values().map(f).sum::<u64>();
        vec![
            Reading::gauge(
                "kedge_downstream_pending",
                "Object versions waiting to be sent to edges.",
                sum(|q| q.pending() as u64),
            ),
            Reading::gauge(
                "kedge_downstream_inflight",
                "Messages sent to edges and not yet acked.",
                sum(|q| q.inflight() as u64),
            ),
            Reading::counter(
                "kedge_downstream_resends",
                "Messages re-sent to edges for want of an ack.",
                sum(NodeQueue::resends),
            ),
            Reading::counter(
                "kedge_downstream_acks",
                "Acknowledgements received from edges.",
                self.acks.load(std::sync::atomic::Ordering::Relaxed),
            ),
        ]
    }

    async fn write_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            // Only queues with something to send or to re-send: with thousands of idle
            // nodes, this pass must not allocate per node.
            let busy: Vec<String> = self
                .queues()
                .iter()
                .filter(|(_, q)| q.pending() > 0 || q.inflight() > 0)
                .map(|(n, _)| n.clone())
                .collect();
            for node in busy.into_iter().filter(|n| self.hub.is_connected(n)) {
                let msgs = self
                    .queues()
                    .get_mut(&node)
                    .map(|q| q.poll(kedge_core::clock::now_ms()))
                    .unwrap_or_default();
                for m in msgs {
                    if self.hub.send(&node, m).await.is_err() {
                        break;
                    }
                }
            }
        }
    }

    fn syncs(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &sync_resource(false)),
            None => Api::all_with(self.client.clone(), &sync_resource(true)),
        }
    }

    /// Every ObjectSync and ClusterObjectSync there is.
    async fn all_syncs(&self) -> Result<Vec<DynamicObject>, kube::Error> {
        let namespaced: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &sync_resource(false));
        let mut all = namespaced.list(&ListParams::default()).await?.items;
        all.extend(self.syncs(None).list(&ListParams::default()).await?.items);
        Ok(all)
    }

    /// A node was deleted: drop its queue and what it acknowledged, so a node registering
    /// again under that name starts from nothing. Returns how many records were removed.
    pub async fn forget_node(&self, node: &str) -> Result<usize, kube::Error> {
        self.queues().remove(node);
        self.delete_syncs(|owner| owner == node).await
    }

    /// Removes the records of nodes that no longer exist (deleted while the cloud was down).
    pub async fn forget_orphans(
        &self,
        live: &std::collections::HashSet<String>,
    ) -> Result<usize, kube::Error> {
        self.delete_syncs(|owner| !live.contains(owner)).await
    }

    async fn delete_syncs(&self, doomed: impl Fn(&str) -> bool) -> Result<usize, kube::Error> {
        let mut n = 0;
        for o in self.all_syncs().await? {
            let name = o.metadata.name.clone().unwrap_or_default();
            if !sync_owner(&name).is_some_and(|(owner, _)| doomed(owner)) {
                continue;
            }
            match self
                .syncs(o.metadata.namespace.as_deref())
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => n += 1,
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Every ObjectSync and ClusterObjectSync of `node`.
    async fn records(&self, node: &str) -> Result<Vec<SyncRecord>, kube::Error> {
        let mine = |o: &DynamicObject| {
            let name = o.metadata.name.as_deref()?;
            let (owner, uid) = sync_owner(name)?;
            (owner == node).then(|| record_of(o, uid))
        };
        Ok(self.all_syncs().await?.iter().filter_map(mine).collect())
    }

    /// Writes what `node` acknowledged.
    async fn record(&self, node: &str, a: &Acked) -> Result<(), kube::Error> {
        let Ok(r) = ObjectRef::parse(&a.resource) else {
            return Ok(());
        };
        let api = self.syncs(r.namespace());
        let name = sync_name(node, &a.uid);
        if a.delete {
            return match api.delete(&name, &DeleteParams::default()).await {
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                other => other.map(|_| ()),
            };
        }
        if api.get_opt(&name).await?.is_none() {
            let cluster = r.namespace().is_none();
            let ar = sync_resource(cluster);
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": ar.api_version, "kind": ar.kind,
                "metadata": {"name": name, "namespace": r.namespace()},
                "spec": {"objectAPIVersion": type_of(r.kind).0, "objectKind": type_of(r.kind).1, "objectName": r.name.unwrap_or("")},
            }))
            .map_err(kube::Error::SerdeError)?;
            api.create(&PostParams::default(), &obj).await?;
        }
        let status = json!({"status": {"objectResourceVersion": a.rv.to_string()}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_names_split_at_the_last_dot() {
        let uid = "4f1c2a3e-0000-4000-8000-000000000001";
        assert_eq!(sync_owner(&sync_name("edge-1", uid)), Some(("edge-1", uid)));
        assert_eq!(
            sync_owner(&sync_name("edge.example.com", uid)),
            Some(("edge.example.com", uid))
        );
        assert_eq!(sync_owner("no-dot"), None);
        assert_eq!(sync_owner(".uid"), None);
        assert_eq!(sync_owner("node."), None);
    }
}
