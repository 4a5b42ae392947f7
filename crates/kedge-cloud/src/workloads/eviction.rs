//! Eviction, by choice only. kedge never evicts the pods of a NotReady edge on its own (edge
//! autonomy: the edge keeps running them offline). A workload that would rather run elsewhere
//! says so in its pod template: `kedge.io/evict-after-seconds: "<n>"`; once the pod's node has
//! been not Ready for that long, the pod is deleted (at once: the node cannot confirm) and its
//! controller makes a new one, which the scheduler places on a Ready node.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};
use kube::runtime::reflector::Store;

use super::events::Recorder;
use super::pods::is_active;
use super::runtime::{Key, key_of, lookup};

pub const ANNOTATION: &str = "kedge.io/evict-after-seconds";

/// `Some(0)`: evict now; `Some(s)`: look again in `s` seconds; `None`: never (not opted in, or
/// the node is Ready).
pub fn due(pod: &Pod, node: Option<&Node>, now: i64) -> Option<i64> {
    let after: i64 = pod
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION)?
        .parse()
        .ok()?;
    if !is_active(pod) {
        return None;
    }
    let cond = node?
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if cond.status == "True" {
        return None;
    }
    let since = cond
        .last_transition_time
        .as_ref()
        .map_or(now, |t| t.0.as_second());
    Some((since + after.max(0) - now).max(0))
}

pub struct Evictor {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    events: Recorder,
}

impl Evictor {
    pub fn new(client: kube::Client, pods: Store<Pod>, nodes: Store<Node>) -> Arc<Evictor> {
        Arc::new(Evictor {
            events: Recorder::new(client.clone(), "kedge-eviction"),
            client,
            pods,
            nodes,
        })
    }

    /// `key`: a pod.
    pub async fn reconcile(&self, key: Key) -> Result<Option<Duration>, kube::Error> {
        let Some(pod) = lookup(&self.pods, &key) else {
            return Ok(None);
        };
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let node = node_name.as_deref().and_then(|n| {
            self.nodes
                .state()
                .into_iter()
                .find(|x| x.metadata.name.as_deref() == Some(n))
        });
        match due(&pod, node.as_deref(), jiff::Timestamp::now().as_second()) {
            None => Ok(None),
            Some(0) => {
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
                match api
                    .delete(&key.1, &DeleteParams::default().grace_period(0))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
                    Err(e) => return Err(e),
                }
                let node = node_name.unwrap_or_default();
                self.events.warning(
                    "Pod",
                    "v1",
                    &pod.metadata,
                    "Evicted",
                    format!("node {node} not Ready for longer than the pod's {ANNOTATION}"),
                );
                Ok(None)
            }
            Some(s) => Ok(Some(Duration::from_secs(s as u64))),
        }
    }
}

/// The pods to look at when `node` changes: those bound to it that opted in.
pub fn on_node(pods: &Store<Pod>, node: &Node) -> Vec<Key> {
    let name = node.metadata.name.as_deref();
    pods.state()
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == name)
        .filter(|p| {
            p.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANNOTATION))
        })
        .map(|p| key_of(&p.metadata))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::pods::tests::pod;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn node(ready: &str, since: i64) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    last_transition_time: Some(Time(
                        jiff::Timestamp::from_second(since).expect("t"),
                    )),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_opted_in_pods_of_long_unready_nodes_go() {
        let mut p = pod("p", Some("n"), "Running", true);
        assert_eq!(
            due(&p, Some(&node("Unknown", 0)), 10_000),
            None,
            "not opted in"
        );
        p.metadata.annotations = Some(BTreeMap::from([(ANNOTATION.to_string(), "60".to_string())]));
        assert_eq!(due(&p, Some(&node("True", 0)), 10_000), None, "node Ready");
        assert_eq!(due(&p, Some(&node("Unknown", 1000)), 1030), Some(30));
        assert_eq!(due(&p, Some(&node("Unknown", 1000)), 1060), Some(0));
    }
}
