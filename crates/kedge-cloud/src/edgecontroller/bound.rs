//! What is bound to an edge node goes to it: pods with `spec.nodeName` = node, and the
//! ConfigMaps and Secrets those pods reference (see `refs`). Every change is offered to the
//! node's delivery queue as it happens; a (re)connecting node is resynced against what it
//! acknowledged, which also removes what it should no longer have.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kedge_core::delivery::Outgoing;
use kedge_core::envelope::{Message, group, op};
use kedge_core::resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::refs;
use crate::cloudhub::downstream::{Downstream, SyncRecord};

struct Inner {
    pods: Store<Pod>,
    configmaps: Store<ConfigMap>,
    secrets: Store<Secret>,
    downstream: Arc<Downstream>,
}

pub struct Bound(Arc<Inner>);

fn message(
    token: &str,
    namespace: &str,
    name: &str,
    rv: u64,
    delete: bool,
    content: serde_json::Value,
) -> Message {
    let operation = if delete { op::DELETE } else { op::UPDATE };
    let res = resource::object(namespace, token, name);
    Message::new("edgecontroller", group::RESOURCE, operation, &res, content)
        .with_resource_version(rv.to_string())
}

/// The delivery of this version of `obj` (`token` is its resource-string type).
fn outgoing<K: kube::Resource + Serialize>(obj: &K, token: &str, delete: bool) -> Option<Outgoing> {
    let meta = obj.meta();
    let uid = meta.uid.clone()?;
    let rv: u64 = meta.resource_version.as_deref()?.parse().ok()?;
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone()?;
    let msg = message(
        token,
        &ns,
        &name,
        rv,
        delete,
        serde_json::to_value(obj).ok()?,
    );
    Some(Outgoing {
        uid,
        rv,
        delete,
        msg,
    })
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

fn same_ns(pod: &Pod, ns: &str) -> bool {
    pod.metadata.namespace.as_deref() == Some(ns)
}

/// Watches `api` through a reflector, calling `on(inner, object, deleted)` for each change.
fn watch<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    inner: Arc<Inner>,
    on: fn(&Inner, &K, bool),
) where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    on(&inner, &o, false)
                }
                Ok(watcher::Event::Delete(o)) => on(&inner, &o, true),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "watch"),
            }
        }
    });
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

    fn on_pod(&self, pod: &Pod, deleted: bool) {
        let Some(node) = node_of(pod) else { return };
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
        for node in self.nodes_using(&ns, &name, false) {
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
        let ours = |k: &str| matches!(k, "pod" | "configmap" | "secret");
        for r in records
            .iter()
            .filter(|r| ours(&r.kind) && !desired.contains(&r.uid))
        {
            let ns = r.namespace.as_deref().unwrap_or("");
            let content =
                serde_json::json!({"metadata": {"name": r.name, "namespace": ns, "uid": r.uid}});
            let msg = message(&r.kind, ns, &r.name, r.rv, true, content);
            i.downstream.offer(
                node,
                Outgoing {
                    uid: r.uid.clone(),
                    rv: r.rv,
                    delete: true,
                    msg,
                },
            );
        }
    }
}
