//! A DaemonSet's next step (pure): one pod on every node its template may run on (selector,
//! affinity, tolerations — with the tolerations Kubernetes gives every DaemonSet pod, so a
//! NotReady or cordoned edge keeps its daemon), none elsewhere, and old-template pods replaced
//! within `maxUnavailable` on a RollingUpdate.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::workloads::pods::{deletion_rank, is_active, is_available, is_ready};
use crate::workloads::scheduler::fit::placeable;

use crate::workloads::template::revision_of;

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes that get a pod.
    pub create_on: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<String>,
    pub status: DaemonSetStatus,
}

/// The tolerations every DaemonSet pod gets (Kubernetes' `AddOrUpdateDaemonPodTolerations`).
pub fn daemon_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: Option<&str>| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: effect.map(String::from),
        ..Default::default()
    };
    vec![
        t("node.kubernetes.io/not-ready", None),
        t("node.kubernetes.io/unreachable", Some("NoExecute")),
        t("node.kubernetes.io/disk-pressure", Some("NoSchedule")),
        t("node.kubernetes.io/memory-pressure", Some("NoSchedule")),
        t("node.kubernetes.io/pid-pressure", Some("NoSchedule")),
        t("node.kubernetes.io/unschedulable", Some("NoSchedule")),
    ]
}

/// The pod the template makes, with the daemon tolerations (what placement is judged on).
pub fn template_pod(ds: &DaemonSet) -> Pod {
    let t = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut spec = t.spec.unwrap_or_default();
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .extend(daemon_tolerations());
    Pod {
        metadata: t.metadata.unwrap_or_default(),
        spec: Some(spec),
        status: None,
    }
}

fn node_of(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// `pods`: the DaemonSet's pods; `hash`: its current template's.
pub fn plan(ds: &DaemonSet, nodes: &[Arc<Node>], pods: &[Arc<Pod>], hash: &str, now: i64) -> Plan {
    let template = template_pod(ds);
    let min_ready = i64::from(
        ds.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0),
    );
    let mut by_node: BTreeMap<&str, Vec<&Arc<Pod>>> = BTreeMap::new();
    for p in pods.iter().filter(|p| is_active(p)) {
        by_node.entry(node_of(p)).or_default().push(p);
    }
    let mut plan = Plan::default();
    let mut eligible: Vec<(&str, Option<&Arc<Pod>>)> = Vec::new();
    for n in nodes {
        let name = n.metadata.name.as_deref().unwrap_or("");
        let mut on = by_node.remove(name).unwrap_or_default();
        if placeable(&template, n).is_err() {
            plan.delete
                .extend(on.iter().filter_map(|p| p.metadata.name.clone()));
            continue;
        }
        // Keep the best one (current template, most settled); the rest go.
        on.sort_by_key(|p| (revision_of(p) == hash, deletion_rank(p)));
        let keep = on.pop();
        plan.delete
            .extend(on.iter().filter_map(|p| p.metadata.name.clone()));
        if keep.is_none() {
            plan.create_on.push(name.to_string());
        }
        eligible.push((name, keep));
    }
    // Pods on nodes that are gone, or never bound.
    for rest in by_node.into_values() {
        plan.delete
            .extend(rest.iter().filter_map(|p| p.metadata.name.clone()));
    }
    plan.delete
        .extend(rolling(ds, &eligible, hash, min_ready, now));
    plan.status = status(ds, &eligible, hash, min_ready, now, pods);
    plan
}

/// Old-template pods to replace now: unavailable ones at once, available ones while fewer than
/// `maxUnavailable` daemons are down.
fn rolling(
    ds: &DaemonSet,
    eligible: &[(&str, Option<&Arc<Pod>>)],
    hash: &str,
    min_ready: i64,
    now: i64,
) -> Vec<String> {
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        return Vec::new();
    }
    let desired = eligible.len() as i32;
    let max = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    let max = match max {
        IntOrString::Int(n) => n,
        IntOrString::String(p) => {
            let pct: f64 = p.trim_end_matches('%').parse().unwrap_or(0.0);
            (pct * f64::from(desired) / 100.0).floor() as i32
        }
    }
    .max(1);
    let down = eligible
        .iter()
        .filter(|(_, p)| p.is_none_or(|p| !is_available(p, min_ready, now)))
        .count() as i32;
    let mut budget = max - down;
    let mut out = Vec::new();
    for (_, p) in eligible {
        let Some(p) = p else { continue };
        if revision_of(p) == hash {
            continue;
        }
        let name = p.metadata.name.clone().unwrap_or_default();
        if !is_available(p, min_ready, now) {
            out.push(name);
        } else if budget > 0 {
            out.push(name);
            budget -= 1;
        }
    }
    out
}

fn status(
    ds: &DaemonSet,
    eligible: &[(&str, Option<&Arc<Pod>>)],
    hash: &str,
    min_ready: i64,
    now: i64,
    pods: &[Arc<Pod>],
) -> DaemonSetStatus {
    let placed: Vec<&Arc<Pod>> = eligible.iter().filter_map(|(_, p)| *p).collect();
    let count = |f: &dyn Fn(&Pod) -> bool| placed.iter().filter(|p| f(p)).count() as i32;
    let desired = eligible.len() as i32;
    let on_eligible: Vec<&str> = eligible.iter().map(|(n, _)| *n).collect();
    let misscheduled = pods
        .iter()
        .filter(|p| is_active(p) && !on_eligible.contains(&node_of(p)))
        .count() as i32;
    let available = count(&|p| is_available(p, min_ready, now));
    let opt = |n: i32| (n > 0).then_some(n);
    DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: placed.len() as i32,
        number_misscheduled: misscheduled,
        number_ready: count(&|p| is_ready(p)),
        updated_number_scheduled: opt(count(&|p| revision_of(p) == hash)),
        number_available: opt(available),
        number_unavailable: opt(desired - available),
        observed_generation: ds.metadata.generation,
        collision_count: None,
        conditions: None,
    }
}

#[cfg(test)]
mod tests;
