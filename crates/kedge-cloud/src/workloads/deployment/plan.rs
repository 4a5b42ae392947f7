//! A Deployment's next step (pure), as Kubernetes' deployment controller takes it: the
//! ReplicaSet of the current template (`<name>-<hash>`, created at the next revision, or an old
//! one brought back as the newest revision by `rollout undo`), then RollingUpdate (within
//! maxSurge and maxUnavailable) or Recreate (old pods gone first), old ReplicaSets beyond
//! `revisionHistoryLimit` removed, and the status `kubectl rollout status` reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::workloads::pods::owner_ref;
use crate::workloads::template::{template_hash, unhashed};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const HASH_LABEL: &str = "pod-template-hash";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX: &str = "deployment.kubernetes.io/max-replicas";
/// Deployment annotations that are not copied to its ReplicaSets.
const NOT_COPIED: [&str; 5] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED,
    MAX,
];

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create(Box<ReplicaSet>),
    Scale {
        name: String,
        from: i32,
        to: i32,
    },
    /// Makes an old ReplicaSet the newest revision again.
    Revise {
        name: String,
        revision: i64,
    },
    Delete(String),
    /// The Deployment's own revision annotation.
    Annotate(i64),
}

pub struct Plan {
    pub actions: Vec<Action>,
    pub status: DeploymentStatus,
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet, f: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32) -> i32 {
    rs.status.as_ref().map_or(0, f)
}

fn available(rs: &ReplicaSet) -> i32 {
    status_of(rs, |s| s.available_replicas.unwrap_or(0))
}

/// An int-or-percent of `total`, rounded up (surge) or down (unavailable).
fn scaled(v: Option<&IntOrString>, total: i32, up: bool, default: &str) -> i32 {
    let v = v.cloned().unwrap_or(IntOrString::String(default.into()));
    match v {
        IntOrString::Int(n) => n.max(0),
        IntOrString::String(s) => {
            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let x = pct * f64::from(total) / 100.0;
            (if up { x.ceil() } else { x.floor() }) as i32
        }
    }
}

/// maxSurge and maxUnavailable for `replicas` (both 0 would never progress: unavailable 1).
pub fn surge_and_unavailable(d: &Deployment, replicas: i32) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), replicas, true, "25%");
    let unavailable = scaled(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        false,
        "25%",
    );
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable.min(replicas))
}

/// What to do next for `d`, given the ReplicaSets it controls.
pub fn plan(d: &Deployment, owned: &[Arc<ReplicaSet>], now: jiff::Timestamp) -> Plan {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let template = spec.template.clone();
    let want = unhashed(&template);
    let new = owned
        .iter()
        .find(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .map(unhashed)
                == Some(want.clone())
        })
        .cloned();
    let mut olds: Vec<Arc<ReplicaSet>> = owned
        .iter()
        .filter(|rs| {
            new.as_ref()
                .is_none_or(|n| n.metadata.name != rs.metadata.name)
        })
        .cloned()
        .collect();
    olds.sort_by_key(|rs| revision(rs));
    let max_old = olds.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    let paused = spec.paused == Some(true);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let mut actions = Vec::new();
    match &new {
        None if !paused => {
            let initial = initial_replicas(d, &olds, replicas, recreate);
            actions.push(Action::Create(Box::new(new_replica_set(
                d,
                &template,
                max_old + 1,
                initial,
            ))));
        }
        Some(n) if !paused && revision(n) <= max_old => actions.push(Action::Revise {
            name: n.metadata.name.clone().unwrap_or_default(),
            revision: max_old + 1,
        }),
        Some(n) if !paused => {
            actions.extend(if recreate {
                recreate_step(n, &olds, replicas)
            } else {
                rolling_step(d, n, &olds, replicas)
            });
        }
        _ => {}
    }
    if let Some(n) = &new
        && revision(n) > max_old
        && current_annotation(d) != Some(revision(n))
    {
        actions.push(Action::Annotate(revision(n)));
    }
    actions.extend(cleanup(&spec, &olds));
    Plan {
        status: status(d, new.as_deref(), &olds, replicas, now),
        actions,
    }
}

fn current_annotation(d: &Deployment) -> Option<i64> {
    d.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
}

fn initial_replicas(
    d: &Deployment,
    olds: &[Arc<ReplicaSet>],
    replicas: i32,
    recreate: bool,
) -> i32 {
    let old_total: i32 = olds.iter().map(|r| spec_replicas(r)).sum();
    let old_running: i32 = olds.iter().map(|r| status_of(r, |s| s.replicas)).sum();
    if recreate {
        return if old_total == 0 && old_running == 0 {
            replicas
        } else {
            0
        };
    }
    if old_total == 0 {
        return replicas;
    }
    let (surge, _) = surge_and_unavailable(d, replicas);
    (replicas + surge - old_total).clamp(0, replicas)
}

fn new_replica_set(
    d: &Deployment,
    t: &PodTemplateSpec,
    revision: i64,
    replicas: i32,
) -> ReplicaSet {
    let hash = template_hash(
        t,
        d.status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0),
    );
    let mut template = t.clone();
    let tm = template.metadata.get_or_insert_with(Default::default);
    tm.labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.clone());
    let labels = tm.labels.clone();
    let mut selector: LabelSelector = d
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.clone());
    let mut annotations: BTreeMap<String, String> = d
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .collect();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let (surge, _) = surge_and_unavailable(d, want);
    annotations.insert(REVISION.into(), revision.to_string());
    annotations.insert(DESIRED.into(), want.to_string());
    annotations.insert(MAX.into(), (want + surge).to_string());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}-{hash}",
                d.metadata.name.clone().unwrap_or_default()
            )),
            namespace: d.metadata.namespace.clone(),
            labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owner_ref("apps/v1", "Deployment", &d.metadata)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: d.spec.as_ref().and_then(|s| s.min_ready_seconds),
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

fn scale(rs: &ReplicaSet, to: i32) -> Option<Action> {
    let from = spec_replicas(rs);
    (from != to).then(|| Action::Scale {
        name: rs.metadata.name.clone().unwrap_or_default(),
        from,
        to,
    })
}

fn recreate_step(new: &ReplicaSet, olds: &[Arc<ReplicaSet>], replicas: i32) -> Vec<Action> {
    let down: Vec<Action> = olds.iter().filter_map(|r| scale(r, 0)).collect();
    if !down.is_empty() {
        return down;
    }
    if olds.iter().any(|r| status_of(r, |s| s.replicas) > 0) {
        return Vec::new(); // old pods still stopping
    }
    scale(new, replicas).into_iter().collect()
}

fn rolling_step(
    d: &Deployment,
    new: &ReplicaSet,
    olds: &[Arc<ReplicaSet>],
    replicas: i32,
) -> Vec<Action> {
    let olds_total: i32 = olds.iter().map(|r| spec_replicas(r)).sum();
    if olds_total == 0 {
        return scale(new, replicas).into_iter().collect();
    }
    let (surge, unavailable) = surge_and_unavailable(d, replicas);
    let new_spec = spec_replicas(new);
    let total = new_spec + olds_total;
    let max_total = replicas + surge;
    if total < max_total && new_spec < replicas {
        let up = (max_total - total).min(replicas - new_spec);
        return scale(new, new_spec + up).into_iter().collect();
    }
    let min_available = replicas - unavailable;
    let new_unavailable = (new_spec - available(new)).max(0);
    let mut budget = total - min_available - new_unavailable;
    if budget <= 0 {
        return Vec::new();
    }
    let mut targets: BTreeMap<String, (i32, i32)> = BTreeMap::new();
    // Unhealthy old replicas go first: they cost no availability.
    for r in olds {
        let name = r.metadata.name.clone().unwrap_or_default();
        let cur = spec_replicas(r);
        let unhealthy = (cur - available(r)).max(0).min(budget);
        targets.insert(name, (cur, cur - unhealthy));
        budget -= unhealthy;
    }
    let all_available: i32 = available(new) + olds.iter().map(|r| available(r)).sum::<i32>();
    let mut healthy_budget = (all_available - min_available).min(budget).max(0);
    for r in olds {
        let name = r.metadata.name.clone().unwrap_or_default();
        if let Some((_, to)) = targets.get_mut(&name) {
            let d = (*to).min(healthy_budget);
            *to -= d;
            healthy_budget -= d;
        }
    }
    targets
        .into_iter()
        .filter(|(_, (from, to))| from != to)
        .map(|(name, (from, to))| Action::Scale { name, from, to })
        .collect()
}

fn cleanup(
    spec: &k8s_openapi::api::apps::v1::DeploymentSpec,
    olds: &[Arc<ReplicaSet>],
) -> Vec<Action> {
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let idle: Vec<&Arc<ReplicaSet>> = olds
        .iter()
        .filter(|r| spec_replicas(r) == 0 && status_of(r, |s| s.replicas) == 0)
        .collect();
    let extra = idle.len().saturating_sub(limit);
    idle.iter()
        .take(extra)
        .map(|r| Action::Delete(r.metadata.name.clone().unwrap_or_default()))
        .collect()
}

fn status(
    d: &Deployment,
    new: Option<&ReplicaSet>,
    olds: &[Arc<ReplicaSet>],
    replicas: i32,
    now: jiff::Timestamp,
) -> DeploymentStatus {
    let all: Vec<&ReplicaSet> = new
        .into_iter()
        .chain(olds.iter().map(|r| r.as_ref()))
        .collect();
    let sum = |f: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32| -> i32 {
        all.iter().map(|r| status_of(r, f)).sum()
    };
    let total_spec: i32 = all.iter().map(|r| spec_replicas(r)).sum();
    let avail = sum(|s| s.available_replicas.unwrap_or(0));
    let updated = new.map_or(0, |n| status_of(n, |s| s.replicas));
    let current = sum(|s| s.replicas);
    let (_, unavailable) = surge_and_unavailable(d, replicas);
    let old = d.status.clone().unwrap_or_default();
    let mut conditions = Vec::new();
    let (a_status, a_reason, a_msg) = if avail >= replicas - unavailable {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    conditions.push(condition(
        &old,
        "Available",
        a_status,
        a_reason,
        a_msg.into(),
        now,
    ));
    let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
    let new_name = new
        .and_then(|n| n.metadata.name.clone())
        .unwrap_or_default();
    let done = updated == replicas && avail >= replicas && current == replicas;
    let (p_status, p_reason, p_msg) = if paused {
        (
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".to_string(),
        )
    } else if done {
        (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else {
        (
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
        )
    };
    conditions.push(condition(
        &old,
        "Progressing",
        p_status,
        p_reason,
        p_msg,
        now,
    ));
    let opt = |n: i32| (n > 0).then_some(n);
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: opt(current),
        updated_replicas: opt(updated),
        ready_replicas: opt(sum(|s| s.ready_replicas.unwrap_or(0))),
        available_replicas: opt(avail),
        unavailable_replicas: opt((total_spec.max(replicas) - avail).max(0)),
        conditions: Some(conditions),
        collision_count: old.collision_count,
        terminating_replicas: None,
    }
}

/// A condition, keeping its times from `old` while nothing about it changed.
fn condition(
    old: &DeploymentStatus,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    let prev = old.conditions.iter().flatten().find(|c| c.type_ == type_);
    let same = prev.is_some_and(|p| {
        p.status == status
            && p.reason.as_deref() == Some(reason)
            && p.message.as_deref() == Some(message.as_str())
    });
    let now = Time(now);
    let transitioned = prev
        .filter(|p| p.status == status)
        .and_then(|p| p.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    let updated = if same {
        prev.and_then(|p| p.last_update_time.clone())
            .unwrap_or_else(|| now.clone())
    } else {
        now
    };
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(transitioned),
        last_update_time: Some(updated),
    }
}

#[cfg(test)]
mod tests;
