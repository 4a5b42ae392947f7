//! What the workload controllers read from pods and how they make them (pure).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// Still counted by its controller: not being deleted and not finished.
pub fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), "Succeeded" | "Failed")
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Its Ready condition is True.
pub fn is_ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

/// When its Ready condition turned True (seconds since the epoch; 0 when unknown).
fn ready_since(p: &Pod) -> Option<i64> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        c.last_transition_time
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
    )
}

/// Ready for at least `min_ready` seconds at `now`.
pub fn is_available(p: &Pod, min_ready: i64, now: i64) -> bool {
    ready_since(p).is_some_and(|t| min_ready <= 0 || t + min_ready <= now)
}

pub fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

/// The owner reference marked as controller.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|o| o.uid == uid)
}

/// The pods in `cache` that `owner` controls.
pub fn owned_by(
    cache: &kube::runtime::reflector::Store<Pod>,
    owner: &ObjectMeta,
) -> Vec<std::sync::Arc<Pod>> {
    let uid = owner.uid.clone().unwrap_or_default();
    cache
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace == owner.namespace && controlled_by(&p.metadata, &uid))
        .collect()
}

/// The controller reference a workload puts on what it creates.
pub fn owner_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod from a template: its labels and annotations, `owner` as controller, named `name` or
/// generated from `generate` (`<owner>-` and a random suffix, as the API server makes it).
pub fn from_template(
    t: &PodTemplateSpec,
    owner: OwnerReference,
    name: Option<String>,
    extra_labels: &BTreeMap<String, String>,
) -> Pod {
    let tm = t.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.extend(extra_labels.clone());
    let generate_name = name.is_none().then(|| format!("{}-", owner.name));
    Pod {
        metadata: ObjectMeta {
            name,
            generate_name,
            labels: Some(labels),
            annotations: tm.annotations,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: t.spec.clone(),
        status: None,
    }
}

/// The order in which surplus pods go, first to last (Kubernetes' `ActivePods` ranking):
/// unscheduled before scheduled, pending before running, not ready before ready, more restarts
/// first, newer first.
pub fn deletion_rank(p: &Pod) -> (bool, u8, bool, i32, std::cmp::Reverse<i64>) {
    let scheduled = p.spec.as_ref().is_some_and(|s| s.node_name.is_some());
    let phase = match phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    (
        scheduled,
        phase,
        is_ready(p),
        -restarts(p),
        std::cmp::Reverse(created),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// A node with `labels`, Ready or not, allocatable cpu 2, memory 1Gi, 3 pods.
    pub fn node(
        name: &str,
        labels: &[(&str, &str)],
        ready: bool,
    ) -> k8s_openapi::api::core::v1::Node {
        use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus};
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                allocatable: Some(BTreeMap::from([
                    ("cpu".to_string(), Quantity("2".into())),
                    ("memory".to_string(), Quantity("1Gi".into())),
                    ("pods".to_string(), Quantity("3".into())),
                ])),
                ..Default::default()
            }),
        }
    }

    pub fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(jiff::Timestamp::from_second(1000).expect("t"))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(
                        jiff::Timestamp::from_second(1000).expect("t"),
                    )),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn surplus_pods_go_unscheduled_then_pending_then_unready_first() {
        let mut ps = [
            pod("ready", Some("n"), "Running", true),
            pod("unready", Some("n"), "Running", false),
            pod("pending", Some("n"), "Pending", false),
            pod("unscheduled", None, "Pending", false),
        ];
        ps.sort_by_key(deletion_rank);
        let names: Vec<_> = ps
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["unscheduled", "pending", "unready", "ready"]);
    }

    #[test]
    fn availability_waits_min_ready_seconds() {
        let p = pod("p", Some("n"), "Running", true);
        assert!(is_available(&p, 0, 1000));
        assert!(!is_available(&p, 10, 1005));
        assert!(is_available(&p, 10, 1010));
        assert!(!is_available(
            &pod("q", Some("n"), "Running", false),
            0,
            2000
        ));
    }
}
