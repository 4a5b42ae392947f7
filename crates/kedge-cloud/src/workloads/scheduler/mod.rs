//! The scheduler: pods without `spec.nodeName` (and for the default scheduler) are placed by
//! `fit` and bound through `pods/binding`, as kube-scheduler does; a pod that fits nowhere gets
//! `PodScheduled=False` (reason `Unschedulable`) and a `FailedScheduling` event saying why, and
//! is tried again whenever a node changes, and every 10 s.

pub mod fit;
pub mod usage;

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::json;

use super::events::Recorder;
use super::pods::is_active;
use super::runtime::{Key, lookup};

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
    usage: Mutex<usage::Usage>,
}

impl Scheduler {
    pub fn new(client: kube::Client, pods: Store<Pod>, nodes: Store<Node>) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            events: Recorder::new(client.clone(), SCHEDULER),
            client,
            pods,
            nodes,
            usage: Mutex::default(),
        })
    }

    pub async fn schedule(&self, key: Key) -> Result<Option<std::time::Duration>, kube::Error> {
        let Some(pod) = lookup(&self.pods, &key) else {
            return Ok(None);
        };
        let nodes = self.nodes.state();
        let placed = {
            let mut usage = self.usage();
            if !pending(&pod) || usage.is_assumed(&key) {
                return Ok(None);
            }
            usage.refresh(&self.pods.state(), std::time::Instant::now());
            fit::place(&pod, &usage.views(&pod, &nodes))
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
        match placed {
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
                self.usage().bound(key.clone(), &node, &pod);
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

    fn usage(&self) -> std::sync::MutexGuard<'_, usage::Usage> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }
}
