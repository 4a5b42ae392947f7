//! The scheduler: pods without `spec.nodeName` (and for the default scheduler) are placed by
//! `fit` and bound through `pods/binding`, as kube-scheduler does; a pod that fits nowhere gets
//! `PodScheduled=False` (reason `Unschedulable`) and a `FailedScheduling` event saying why, and
//! is tried again whenever a node changes, and every 10 s.

pub mod fit;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::json;

use super::events::Recorder;
use super::pods::{controller_of, is_active};
use super::runtime::{Key, key_of};

const SCHEDULER: &str = "default-scheduler";
/// How long an unschedulable pod waits before it is tried again without a node change.
const RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether the pod waits for this scheduler.
pub fn pending(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.is_some_and(|s| s.node_name.is_none())
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n == SCHEDULER)
        && is_active(p)
}

pub struct Scheduler {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    events: Recorder,
    /// Pods bound but not yet seen bound in the cache (counted on their node meanwhile).
    assumed: Mutex<HashMap<Key, String>>,
}

impl Scheduler {
    pub fn new(client: kube::Client, pods: Store<Pod>, nodes: Store<Node>) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            events: Recorder::new(client.clone(), SCHEDULER),
            client,
            pods,
            nodes,
            assumed: Mutex::default(),
        })
    }

    pub async fn schedule(&self, key: Key) -> Result<Option<std::time::Duration>, kube::Error> {
        let Some(pod) = self
            .pods
            .state()
            .into_iter()
            .find(|p| key_of(&p.metadata) == key)
        else {
            return Ok(None);
        };
        if !pending(&pod) || self.assumed().contains_key(&key) {
            return Ok(None);
        }
        let nodes = self.nodes.state();
        let views = self.views(&pod, &nodes);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
        match fit::place(&pod, &views) {
            Ok(node) => {
                let binding = json!({"apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": key.1, "namespace": key.0},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                api.create_subresource::<_, serde_json::Value>(
                    "binding",
                    &key.1,
                    &PostParams::default(),
                    &binding,
                )
                .await?;
                self.assumed().insert(key.clone(), node.clone());
                self.events.normal(
                    "Pod",
                    "v1",
                    &pod.metadata,
                    "Scheduled",
                    format!("Successfully assigned {}/{} to {node}", key.0, key.1),
                );
            }
            Err(why) => {
                let status = json!({"status": {"conditions": [{"type": "PodScheduled",
                    "status": "False", "reason": "Unschedulable", "message": why,
                    "lastTransitionTime": kedge_core::clock::rfc3339()}]}});
                let already = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.type_ == "PodScheduled" && c.message.as_deref() == Some(why.as_str())
                        })
                    });
                if !already {
                    api.patch_status(&key.1, &PatchParams::default(), &Patch::Strategic(status))
                        .await?;
                    self.events
                        .warning("Pod", "v1", &pod.metadata, "FailedScheduling", why);
                }
                // Node changes bring it back at once; this catches what no event announces.
                return Ok(Some(RETRY));
            }
        }
        Ok(None)
    }

    fn assumed(&self) -> std::sync::MutexGuard<'_, HashMap<Key, String>> {
        self.assumed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Each node with what its pods take (pods the cache has not yet seen bound included).
    fn views<'a>(&self, pod: &Pod, nodes: &'a [Arc<Node>]) -> Vec<fit::NodeView<'a>> {
        let owner = controller_of(&pod.metadata).map(|o| o.uid.clone());
        let mut per_node: HashMap<String, (usize, usize, BTreeMap<String, i128>)> = HashMap::new();
        let all = self.pods.state();
        let mut assumed = self.assumed();
        assumed.retain(|k, _| all.iter().any(|p| key_of(&p.metadata) == *k && pending(p)));
        for p in all.iter().filter(|p| is_active(p)) {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .or_else(|| assumed.get(&key_of(&p.metadata)).cloned());
            let Some(node) = node else { continue };
            let e = per_node.entry(node).or_default();
            e.0 += 1;
            if owner.is_some() && controller_of(&p.metadata).map(|o| &o.uid) == owner.as_ref() {
                e.1 += 1;
            }
            for (r, n) in fit::requests(p) {
                *e.2.entry(r).or_insert(0) += n;
            }
        }
        nodes
            .iter()
            .map(|n| {
                let name = n.metadata.name.clone().unwrap_or_default();
                let (pods, siblings, requested) = per_node.remove(&name).unwrap_or_default();
                fit::NodeView {
                    node: n,
                    pods,
                    siblings,
                    requested,
                }
            })
            .collect()
    }
}
