//! What is bound to an edge node goes to it: pods with `spec.nodeName` = node, the ConfigMaps
//! and Secrets those pods reference (see `refs`), and its device profile ConfigMaps. Every change is offered to the
//! node's delivery queue as it happens; a (re)connecting node is resynced against what it
//! acknowledged, which also removes what it should no longer have.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kedge_core::delivery::Outgoing;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};

use super::refs;
use crate::cloudhub::downstream::{Downstream, SyncRecord};
use crate::objects::{deletion, outgoing, watch};

struct Inner {
    pods: Store<Pod>,
    configmaps: Store<ConfigMap>,
    secrets: Store<Secret>,
    downstream: Arc<Downstream>,
    /// Fingerprint of each pod's metadata and spec as last offered (by UID).
    sent: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

pub struct Bound(Arc<Inner>);

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

fn same_ns(pod: &Pod, ns: &str) -> bool {
    pod.metadata.namespace.as_deref() == Some(ns)
}

/// The node a device profile ConfigMap belongs to (it goes there like a pod's ConfigMap).
fn device_profile_node(name: &str) -> Option<&str> {
    crate::devicecontroller::profile::node_of(name)
}

impl Inner {
    fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| node_of(p) == Some(node))
            .collect()
    }

    /// Nodes with a pod in `ns` that references the ConfigMap (or Secret) `name`.
    fn nodes_using(&self, ns: &str, name: &str, secret: bool) -> BTreeSet<String> {
        self.pods
            .state()
            .iter()
            .filter(|p| same_ns(p, ns))
            .filter(|p| {
                let r = refs::of(p);
                if secret {
                    r.secrets.contains(name)
                } else {
                    r.configmaps.contains(name)
                }
            })
            .filter_map(|p| node_of(p).map(String::from))
            .collect()
    }

    /// The ConfigMaps and Secrets `pod` references that exist, as deliveries.
    fn referenced(&self, pod: &Pod, delete: bool) -> Vec<Outgoing> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let r = refs::of(pod);
        let cms = r.configmaps.iter().filter_map(|n| {
            let key = reflector::ObjectRef::new(n).within(&ns);
            self.configmaps
                .get(&key)
                .and_then(|c| outgoing(c.as_ref(), "configmap", delete))
        });
        let secrets = r.secrets.iter().filter_map(|n| {
            let key = reflector::ObjectRef::new(n).within(&ns);
            self.secrets
                .get(&key)
                .and_then(|s| outgoing(s.as_ref(), "secret", delete))
        });
        cms.chain(secrets).collect()
    }

    /// Whether the pod's metadata or spec changed since it was last offered: a change of its
    /// status alone (which the edge itself reported) is not sent back, as in KubeEdge.
    fn changed(&self, pod: &Pod, deleted: bool) -> bool {
        use std::hash::{Hash, Hasher};
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if deleted {
            sent.remove(&uid);
            return true;
        }
        let mut meta = pod.metadata.clone();
        meta.resource_version = None;
        meta.managed_fields = None;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(&(meta, &pod.spec))
            .unwrap_or_default()
            .hash(&mut h);
        sent.insert(uid, h.finish()) != Some(h.finish())
    }

    fn on_pod(&self, pod: &Pod, deleted: bool) {
        let Some(node) = node_of(pod) else { return };
        if !self.changed(pod, deleted) {
            return;
        }
        if let Some(out) = outgoing(pod, "pod", deleted) {
            self.downstream.offer(node, out);
        }
        if !deleted {
            for out in self.referenced(pod, false) {
                self.downstream.offer(node, out);
            }
            return;
        }
        // The pod is gone: its ConfigMaps and Secrets leave the node unless another pod there
        // still uses them.
        let still: HashSet<String> = self
            .pods_on(node)
            .iter()
            .flat_map(|p| self.referenced(p, false))
            .map(|o| o.uid)
            .collect();
        for out in self
            .referenced(pod, true)
            .into_iter()
            .filter(|o| !still.contains(&o.uid))
        {
            self.downstream.offer(node, out);
        }
    }

    fn on_configmap(&self, cm: &ConfigMap, deleted: bool) {
        let ns = cm.metadata.namespace.clone().unwrap_or_default();
        let name = cm.metadata.name.clone().unwrap_or_default();
        let mut nodes = self.nodes_using(&ns, &name, false);
        nodes.extend(device_profile_node(&name).map(String::from));
        for node in nodes {
            if let Some(out) = outgoing(cm, "configmap", deleted) {
                self.downstream.offer(&node, out);
            }
        }
    }

    fn on_secret(&self, s: &Secret, deleted: bool) {
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let name = s.metadata.name.clone().unwrap_or_default();
        for node in self.nodes_using(&ns, &name, true) {
            if let Some(out) = outgoing(s, "secret", deleted) {
                self.downstream.offer(&node, out);
            }
        }
    }
}

impl Bound {
    pub fn start(client: kube::Client, downstream: Arc<Downstream>) -> Bound {
        let (pods, pw) = reflector::store();
        let (configmaps, cw) = reflector::store();
        let (secrets, sw) = reflector::store();
        let inner = Arc::new(Inner {
            pods,
            configmaps,
            secrets,
            downstream,
            sent: Default::default(),
        });
        watch(
            Api::<Pod>::all(client.clone()),
            pw,
            inner.clone(),
            Inner::on_pod,
        );
        watch(
            Api::<ConfigMap>::all(client.clone()),
            cw,
            inner.clone(),
            Inner::on_configmap,
        );
        watch(
            Api::<Secret>::all(client),
            sw,
            inner.clone(),
            Inner::on_secret,
        );
        Bound(inner)
    }

    /// Offers `node` everything it should have, and a deletion for everything it acknowledged
    /// that it should no longer have. Waits for the first full lists: resyncing against a
    /// partial one would delete what the node needs.
    pub async fn resync(&self, node: &str, records: &[SyncRecord]) {
        let i = &self.0;
        let ready = async {
            i.pods.wait_until_ready().await.is_ok()
                && i.configmaps.wait_until_ready().await.is_ok()
                && i.secrets.wait_until_ready().await.is_ok()
        };
        // Bounded: a watch that cannot list (RBAC, API down) must not stall every other node.
        if !tokio::time::timeout(std::time::Duration::from_secs(30), ready)
            .await
            .unwrap_or(false)
        {
            tracing::warn!(
                node,
                "resync skipped: pods, ConfigMaps or Secrets could not be listed"
            );
            return;
        }
        let mut desired = HashSet::new();
        for pod in i.pods_on(node) {
            let own = outgoing(pod.as_ref(), "pod", false);
            for out in own.into_iter().chain(i.referenced(&pod, false)) {
                desired.insert(out.uid.clone());
                i.downstream.offer(node, out);
            }
        }
        let profiles = i.configmaps.state().into_iter().filter(|c| {
            device_profile_node(c.metadata.name.as_deref().unwrap_or_default()) == Some(node)
        });
        for cm in profiles {
            if let Some(out) = outgoing(cm.as_ref(), "configmap", false) {
                desired.insert(out.uid.clone());
                i.downstream.offer(node, out);
            }
        }
        let ours = |k: &str| matches!(k, "pod" | "configmap" | "secret");
        for r in records
            .iter()
            .filter(|r| ours(&r.kind) && !desired.contains(&r.uid))
        {
            i.downstream.offer(node, deletion(r));
        }
    }
}
