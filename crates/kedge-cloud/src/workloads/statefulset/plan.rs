//! A StatefulSet's next step (pure): pods with stable names `<name>-0`, `<name>-1`, … created in
//! order, each once the ones before it run and are ready (`OrderedReady`, the default), or all
//! at once (`Parallel`); surplus ones deleted from the highest ordinal down; on a RollingUpdate
//! old-template pods replaced one at a time from the highest ordinal down to `partition`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;

use crate::workloads::pods::{is_active, is_available, is_ready, phase};

use crate::workloads::template::revision_of;

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Ordinals that get a pod.
    pub create: Vec<i32>,
    pub delete: Vec<String>,
    pub status: StatefulSetStatus,
}

/// The ordinal of a pod named `<set>-<n>`.
pub fn ordinal(set: &str, pod: &Pod) -> Option<i32> {
    pod.metadata
        .name
        .as_deref()?
        .strip_prefix(set)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn running_and_ready(p: &Pod) -> bool {
    phase(p) == "Running" && is_ready(p)
}

pub fn plan(sts: &StatefulSet, pods: &[Arc<Pod>], hash: &str, now: i64) -> Plan {
    let name = sts.metadata.name.as_deref().unwrap_or("");
    let spec = sts.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let by_ordinal: BTreeMap<i32, &Arc<Pod>> = pods
        .iter()
        .filter_map(|p| ordinal(name, p).map(|o| (o, p)))
        .collect();
    let mut plan = Plan::default();
    let mut all_ready = true;
    for i in 0..replicas {
        match by_ordinal.get(&i) {
            // Its name is still taken by the pod going away: wait.
            Some(p) if p.metadata.deletion_timestamp.is_some() => all_ready = false,
            Some(p) if phase(p) == "Failed" => {
                plan.delete.extend(p.metadata.name.clone());
                all_ready = false;
            }
            Some(p) => all_ready &= running_and_ready(p),
            None => {
                plan.create.push(i);
                all_ready = false;
            }
        }
        if !parallel && !all_ready {
            break;
        }
    }
    let condemned: Vec<&Arc<Pod>> = by_ordinal
        .range(replicas..)
        .rev()
        .map(|(_, p)| *p)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    // In order, one at a time: the next goes once the last is gone.
    let going = by_ordinal
        .range(replicas..)
        .any(|(_, p)| p.metadata.deletion_timestamp.is_some());
    if parallel {
        plan.delete
            .extend(condemned.iter().filter_map(|p| p.metadata.name.clone()));
    } else if all_ready
        && !going
        && let Some(p) = condemned.first()
    {
        plan.delete.extend(p.metadata.name.clone());
    }
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        != Some("OnDelete");
    let nothing_going = by_ordinal
        .values()
        .all(|p| p.metadata.deletion_timestamp.is_none());
    if rolling && all_ready && condemned.is_empty() && nothing_going && plan.delete.is_empty() {
        let partition = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        if let Some(old) = (partition..replicas)
            .rev()
            .filter_map(|i| by_ordinal.get(&i))
            .find(|p| revision_of(p) != hash)
        {
            plan.delete.extend(old.metadata.name.clone());
        }
    }
    plan.status = status(sts, pods, hash, replicas, now);
    plan
}

fn status(
    sts: &StatefulSet,
    pods: &[Arc<Pod>],
    hash: &str,
    replicas: i32,
    now: i64,
) -> StatefulSetStatus {
    let min_ready = i64::from(
        sts.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0),
    );
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_active(p)).collect();
    let count = |f: &dyn Fn(&Pod) -> bool| active.iter().filter(|p| f(p)).count() as i32;
    let updated = count(&|p| revision_of(p) == hash);
    let ready = count(&|p| is_ready(p));
    let name = sts.metadata.name.clone().unwrap_or_default();
    let update_revision = format!("{name}-{hash}");
    let old = sts.status.clone().unwrap_or_default();
    // Current once every replica runs the update and is ready (what `rollout status` waits on).
    let current_revision =
        if updated == replicas && ready == replicas && active.len() as i32 == replicas {
            update_revision.clone()
        } else {
            // The revision the pods not yet updated run.
            active
                .iter()
                .map(|p| revision_of(p))
                .find(|h| *h != hash)
                .map(|h| format!("{name}-{h}"))
                .or(old.current_revision.clone())
                .unwrap_or_else(|| update_revision.clone())
        };
    let opt = |n: i32| (n > 0).then_some(n);
    StatefulSetStatus {
        observed_generation: sts.metadata.generation,
        replicas: active.len() as i32,
        ready_replicas: opt(ready),
        current_replicas: opt(if current_revision == update_revision {
            updated
        } else {
            active.len() as i32 - updated
        }),
        updated_replicas: opt(updated),
        available_replicas: opt(count(&|p| is_available(p, min_ready, now))),
        current_revision: Some(current_revision),
        update_revision: Some(update_revision),
        collision_count: old.collision_count,
        conditions: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::pods::tests::pod;
    use crate::workloads::template::REVISION_LABEL;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn sts(replicas: i32, policy: &str) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                pod_management_policy: Some(policy.into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn member(i: i32, hash: &str, ready: bool) -> Arc<Pod> {
        let mut p = pod(
            &format!("web-{i}"),
            Some("n"),
            if ready { "Running" } else { "Pending" },
            ready,
        );
        p.metadata.labels = Some(BTreeMap::from([(
            REVISION_LABEL.to_string(),
            hash.to_string(),
        )]));
        Arc::new(p)
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time_in_order() {
        let s = sts(3, "OrderedReady");
        assert_eq!(plan(&s, &[], "h", 0).create, vec![0]);
        assert!(
            plan(&s, &[member(0, "h", false)], "h", 0).create.is_empty(),
            "web-0 not ready yet"
        );
        assert_eq!(plan(&s, &[member(0, "h", true)], "h", 0).create, vec![1]);
        assert_eq!(plan(&sts(3, "Parallel"), &[], "h", 0).create, vec![0, 1, 2]);
    }

    #[test]
    fn scale_down_goes_from_the_highest_ordinal_one_at_a_time() {
        let pods: Vec<_> = (0..4).map(|i| member(i, "h", true)).collect();
        let p = plan(&sts(1, "OrderedReady"), &pods, "h", 0);
        assert_eq!(p.delete, vec!["web-3".to_string()]);
        // web-3 going: web-2 waits until it is gone.
        let mut going = pods.clone();
        let mut last = Pod::clone(&going[3]);
        last.metadata.deletion_timestamp = last.metadata.creation_timestamp.clone();
        going[3] = Arc::new(last);
        assert!(
            plan(&sts(1, "OrderedReady"), &going, "h", 0)
                .delete
                .is_empty()
        );
        let p = plan(&sts(1, "Parallel"), &pods, "h", 0);
        assert_eq!(
            p.delete,
            vec![
                "web-3".to_string(),
                "web-2".to_string(),
                "web-1".to_string()
            ]
        );
    }

    #[test]
    fn a_rolling_update_replaces_the_highest_old_pod_first() {
        let pods = [
            member(0, "old", true),
            member(1, "old", true),
            member(2, "new", true),
        ];
        let p = plan(&sts(3, "OrderedReady"), &pods, "new", 0);
        assert_eq!(p.delete, vec!["web-1".to_string()]);
        assert_eq!(p.status.updated_replicas, Some(1));
        assert_ne!(p.status.current_revision, p.status.update_revision);
        let done = [
            member(0, "new", true),
            member(1, "new", true),
            member(2, "new", true),
        ];
        let p = plan(&sts(3, "OrderedReady"), &done, "new", 0);
        assert!(p.delete.is_empty() && p.create.is_empty());
        assert_eq!(p.status.current_revision, p.status.update_revision);
    }
}
