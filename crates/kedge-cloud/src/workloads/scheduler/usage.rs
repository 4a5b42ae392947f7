//! What the pods on each node take, as the scheduler counts it: kept between pods (rebuilt from
//! the pod cache at most once a second, and each binding added at once), so placing a pod costs
//! a pass over the nodes, not over every pod. Pods bound but not yet seen bound in the cache
//! ("assumed") count on their node meanwhile.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};

use super::fit::{NodeView, requests};
use crate::workloads::pods::{controller_of, is_active};
use crate::workloads::runtime::{Key, key_of};

const FRESH: Duration = Duration::from_secs(1);

#[derive(Default, Clone, Debug, PartialEq)]
pub struct NodeUse {
    pub pods: usize,
    pub requested: BTreeMap<String, i128>,
    /// Pods by controller uid.
    pub by_owner: HashMap<String, usize>,
}

#[derive(Default)]
pub struct Usage {
    nodes: HashMap<String, NodeUse>,
    built: Option<Instant>,
    assumed: HashMap<Key, String>,
}

impl Usage {
    /// Rebuilds from `pods` unless built within the last second.
    pub fn refresh(&mut self, pods: &[Arc<Pod>], now: Instant) {
        if self.built.is_some_and(|b| now.duration_since(b) < FRESH) {
            return;
        }
        self.nodes.clear();
        let mut still: HashSet<Key> = HashSet::new();
        for p in pods.iter().filter(|p| is_active(p)) {
            let key = key_of(&p.metadata);
            let bound = p.spec.as_ref().and_then(|s| s.node_name.clone());
            let node = match bound {
                Some(n) => n,
                None => match self.assumed.get(&key) {
                    Some(n) => {
                        still.insert(key);
                        n.clone()
                    }
                    None => continue,
                },
            };
            self.count(&node, p);
        }
        self.assumed.retain(|k, _| still.contains(k));
        self.built = Some(now);
    }

    fn count(&mut self, node: &str, p: &Pod) {
        let e = self.nodes.entry(node.to_string()).or_default();
        e.pods += 1;
        for (r, n) in requests(p) {
            *e.requested.entry(r).or_insert(0) += n;
        }
        if let Some(o) = controller_of(&p.metadata) {
            *e.by_owner.entry(o.uid.clone()).or_insert(0) += 1;
        }
    }

    /// `p` was just bound to `node`.
    pub fn bound(&mut self, key: Key, node: &str, p: &Pod) {
        self.count(node, p);
        self.assumed.insert(key, node.to_string());
    }

    pub fn is_assumed(&self, key: &Key) -> bool {
        self.assumed.contains_key(key)
    }

    /// Each node as `fit` sees it for `pod`.
    pub fn views<'a>(&self, pod: &Pod, nodes: &'a [Arc<Node>]) -> Vec<NodeView<'a>> {
        let owner = controller_of(&pod.metadata).map(|o| o.uid.as_str());
        nodes
            .iter()
            .map(|n| {
                let used = n
                    .metadata
                    .name
                    .as_deref()
                    .and_then(|name| self.nodes.get(name));
                NodeView {
                    node: n,
                    pods: used.map_or(0, |u| u.pods),
                    siblings: used
                        .zip(owner)
                        .and_then(|(u, o)| u.by_owner.get(o).copied())
                        .unwrap_or(0),
                    requested: used.map(|u| u.requested.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::pods::tests::pod;

    #[test]
    fn bindings_count_at_once_and_survive_a_rebuild_until_the_cache_shows_them() {
        let t = Instant::now();
        let mut u = Usage::default();
        let bound = Arc::new(pod("a", Some("n1"), "Running", true));
        let waiting = Arc::new(pod("b", None, "Pending", false));
        u.refresh(&[bound.clone(), waiting.clone()], t);
        assert_eq!(u.nodes.get("n1").map(|x| x.pods), Some(1));
        u.bound(key_of(&waiting.metadata), "n2", &waiting);
        assert_eq!(u.nodes.get("n2").map(|x| x.pods), Some(1));
        // A rebuild from a cache that does not show the binding yet keeps counting it.
        u.refresh(&[bound.clone(), waiting.clone()], t + FRESH);
        assert_eq!(u.nodes.get("n2").map(|x| x.pods), Some(1));
        // Once the cache shows it bound, it is counted from the cache and no longer assumed.
        let shown = Arc::new(pod("b", Some("n2"), "Pending", false));
        u.refresh(&[bound, shown], t + FRESH * 2);
        assert_eq!(u.nodes.get("n2").map(|x| x.pods), Some(1));
        assert!(!u.is_assumed(&key_of(&waiting.metadata)));
    }
}
