//! What is bound to an edge node goes to it: pods with `spec.nodeName` = node, the ConfigMaps
//! and Secrets those pods reference (see `refs`), and its device profile ConfigMaps. Every
//! change is offered to the node's delivery queue as it happens. Indexes (pods by node, pods by
//! the ConfigMaps and Secrets they use, profiles by node) keep each change, and each node's
//! resync, proportional to what concerns that node, not to the size of the cluster.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kedge_core::delivery::Outgoing;
use kedge_core::resource::Kind;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};

use super::resync::Placer;
use crate::cloudhub::downstream::Downstream;
use crate::objects::{outgoing, watch, watch_with_done};
use crate::placement::{self, Refs, pod_node, profile_node, refs_of};

/// `namespace/name`.
type Key = (String, String);

fn key_of<K: kube::Resource>(o: &K) -> Key {
    let m = o.meta();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

/// Who uses what, kept from the watches.
#[derive(Default)]
struct Index {
    /// Pods by node.
    on_node: HashMap<String, BTreeSet<Key>>,
    /// Each indexed pod: its node and what it references.
    pods: HashMap<Key, (String, Refs)>,
    /// Pods by the ConfigMap (false) or Secret (true) they use: (secret, namespace, name).
    users: HashMap<(bool, String, String), BTreeSet<Key>>,
    /// Namespaces with a device profile ConfigMap, by node.
    profiles: HashMap<String, BTreeSet<String>>,
}

impl Index {
    /// Takes the pods' part of `fresh` (pods, their nodes and references), keeping the profiles.
    fn take_pods(&mut self, fresh: Index) {
        self.on_node = fresh.on_node;
        self.pods = fresh.pods;
        self.users = fresh.users;
    }

    fn remove_pod(&mut self, k: &Key) {
        let Some((node, refs)) = self.pods.remove(k) else {
            return;
        };
        if let Some(set) = self.on_node.get_mut(&node) {
            set.remove(k);
            if set.is_empty() {
                self.on_node.remove(&node);
            }
        }
        for u in uses(&k.0, &refs) {
            if let Some(set) = self.users.get_mut(&u) {
                set.remove(k);
                if set.is_empty() {
                    self.users.remove(&u);
                }
            }
        }
    }

    fn add_pod(&mut self, k: Key, node: &str, refs: Refs) {
        self.remove_pod(&k);
        self.on_node
            .entry(node.into())
            .or_default()
            .insert(k.clone());
        for u in uses(&k.0, &refs) {
            self.users.entry(u).or_default().insert(k.clone());
        }
        self.pods.insert(k, (node.into(), refs));
    }

    fn profile(&mut self, ns: &str, name: &str, deleted: bool) {
        let Some(node) = profile_node(name) else {
            return;
        };
        let set = self.profiles.entry(node.into()).or_default();
        if deleted {
            set.remove(ns);
        } else {
            set.insert(ns.into());
        }
    }

    /// Nodes with a pod that uses the ConfigMap (or Secret) `ns/name`.
    fn nodes_using(&self, secret: bool, ns: &str, name: &str) -> BTreeSet<String> {
        let users = self.users.get(&(secret, ns.into(), name.into()));
        users
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k).map(|(n, _)| n.clone()))
            .collect()
    }
}

/// The (secret?, namespace, name) of everything `refs` names.
fn uses(ns: &str, refs: &Refs) -> Vec<(bool, String, String)> {
    let cms = refs
        .configmaps
        .iter()
        .map(|n| (false, ns.into(), n.clone()));
    let secrets = refs.secrets.iter().map(|n| (true, ns.into(), n.clone()));
    cms.chain(secrets).collect()
}

struct Inner {
    pods: Store<Pod>,
    configmaps: Store<ConfigMap>,
    secrets: Store<Secret>,
    downstream: Arc<Downstream>,
    index: Mutex<Index>,
}

pub struct Bound(Arc<Inner>);

impl Inner {
    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pod(&self, (ns, name): &Key) -> Option<Arc<Pod>> {
        self.pods.get(&reflector::ObjectRef::new(name).within(ns))
    }

    /// The ConfigMaps and Secrets of `ns` named in `refs` that exist, as deliveries.
    fn referenced(&self, ns: &str, refs: &Refs, delete: bool) -> Vec<Outgoing> {
        let cms = refs.configmaps.iter().filter_map(|n| {
            let cm = self
                .configmaps
                .get(&reflector::ObjectRef::new(n).within(ns))?;
            outgoing(cm.as_ref(), "configmap", delete)
        });
        let secrets = refs.secrets.iter().filter_map(|n| {
            let s = self.secrets.get(&reflector::ObjectRef::new(n).within(ns))?;
            outgoing(s.as_ref(), "secret", delete)
        });
        cms.chain(secrets).collect()
    }

    fn on_pod(&self, pod: &Pod, deleted: bool) {
        let k = key_of(pod);
        let refs = refs_of(pod);
        let node = pod_node(pod).map(String::from);
        {
            let mut index = self.index();
            match (&node, deleted) {
                (Some(n), false) => index.add_pod(k.clone(), n, refs.clone()),
                _ => index.remove_pod(&k),
            }
        }
        let Some(node) = node else { return };
        // A change of its status alone (which the edge itself reported) is not sent back, as
        // in KubeEdge: the delivery queue sees the same content (`placement::content_hash`).
        if let Some(out) = outgoing(pod, "pod", deleted) {
            self.downstream.offer(&node, out);
        }
        let offer = |outs: Vec<Outgoing>| {
            for out in outs {
                self.downstream.offer(&node, out);
            }
        };
        if !deleted {
            offer(self.referenced(&k.0, &refs, false));
            return;
        }
        // The pod is gone: its ConfigMaps and Secrets leave the node unless another pod there
        // still uses them.
        let still: Vec<Refs> = {
            let index = self.index();
            let on = index.on_node.get(&node).into_iter().flatten();
            on.filter(|p| p.0 == k.0)
                .filter_map(|p| index.pods.get(p).map(|(_, r)| r.clone()))
                .collect()
        };
        offer(self.referenced(&k.0, &placement::leaving(&refs, still.iter()), true));
    }

    fn on_configmap(&self, cm: &ConfigMap, deleted: bool) {
        let (ns, name) = key_of(cm);
        let mut nodes = {
            let mut index = self.index();
            index.profile(&ns, &name, deleted);
            index.nodes_using(false, &ns, &name)
        };
        nodes.extend(profile_node(&name).map(String::from));
        for node in nodes {
            if let Some(out) = outgoing(cm, "configmap", deleted) {
                self.downstream.offer(&node, out);
            }
        }
    }

    fn on_secret(&self, s: &Secret, deleted: bool) {
        let (ns, name) = key_of(s);
        let nodes = self.index().nodes_using(true, &ns, &name);
        for node in nodes {
            if let Some(out) = outgoing(s, "secret", deleted) {
                self.downstream.offer(&node, out);
            }
        }
    }

    /// A (re)list of pods is complete: the pods' part of the index is rebuilt from it (a relist
    /// after a broken watch reports no deletions). The profiles are the ConfigMap watch's, which
    /// runs meanwhile: they stay as they are, or a profile it adds during the rebuild is lost.
    fn pods_listed(&self) {
        let mut fresh = Index::default();
        for p in self.pods.state() {
            if let Some(n) = pod_node(&p) {
                fresh.add_pod(key_of(p.as_ref()), n, refs_of(&p));
            }
        }
        self.index().take_pods(fresh);
    }

    /// A (re)list of ConfigMaps is complete: the profiles are re-read from it.
    fn configmaps_listed(&self) {
        let mut profiles = Index::default();
        for cm in self.configmaps.state() {
            let (ns, name) = key_of(cm.as_ref());
            profiles.profile(&ns, &name, false);
        }
        self.index().profiles = profiles.profiles;
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
            index: Mutex::default(),
        });
        watch_with_done(
            Api::<Pod>::all(client.clone()),
            pw,
            inner.clone(),
            Inner::on_pod,
            Inner::pods_listed,
        );
        watch_with_done(
            Api::<ConfigMap>::all(client.clone()),
            cw,
            inner.clone(),
            Inner::on_configmap,
            Inner::configmaps_listed,
        );
        watch(
            Api::<Secret>::all(client),
            sw,
            inner.clone(),
            Inner::on_secret,
        );
        Bound(inner)
    }
}

impl Placer for Bound {
    fn name(&self) -> &'static str {
        "pods, ConfigMaps and Secrets"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Pod, Kind::ConfigMap, Kind::Secret]
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        let i = &self.0;
        async move {
            i.pods.wait_until_ready().await.is_ok()
                && i.configmaps.wait_until_ready().await.is_ok()
                && i.secrets.wait_until_ready().await.is_ok()
        }
        .boxed()
    }

    fn desired(&self, node: &str) -> Vec<Outgoing> {
        let i = &self.0;
        let (pods, profiles) = {
            let index = i.index();
            let pods: Vec<Key> = index
                .on_node
                .get(node)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            let profiles: Vec<String> = index
                .profiles
                .get(node)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            (pods, profiles)
        };
        let mut out = Vec::new();
        for k in pods {
            let Some(pod) = i.pod(&k) else { continue };
            out.extend(outgoing(pod.as_ref(), "pod", false));
            out.extend(i.referenced(&k.0, &refs_of(&pod), false));
        }
        let name = crate::devicecontroller::profile::name(node);
        for ns in profiles {
            let cm = i
                .configmaps
                .get(&reflector::ObjectRef::new(&name).within(&ns));
            out.extend(cm.and_then(|c| outgoing(c.as_ref(), "configmap", false)));
        }
        // Two pods may share a ConfigMap: offer it once.
        let mut seen = std::collections::HashSet::new();
        out.retain(|o| seen.insert(o.uid.clone()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_relist_keeps_the_profiles_the_configmap_watch_added() {
        let mut index = Index::default();
        index.add_pod(("default".into(), "old".into()), "n1", Refs::default());
        let mut fresh = Index::default();
        fresh.add_pod(("default".into(), "new".into()), "n2", Refs::default());
        // Added by the ConfigMap watch while the pods were re-read.
        index.profile(
            "default",
            &crate::devicecontroller::profile::name("n3"),
            false,
        );
        index.take_pods(fresh);
        assert!(
            !index.on_node.contains_key("n1"),
            "the relist's pods replace the old"
        );
        assert_eq!(index.on_node["n2"].len(), 1);
        assert!(index.profiles["n3"].contains("default"), "profiles kept");
    }
}
