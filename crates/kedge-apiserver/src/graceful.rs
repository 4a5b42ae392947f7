//! Graceful pod deletion, as Kubernetes does it: a pod running on a node is not removed at once
//! but marked (`deletionTimestamp`, `deletionGracePeriodSeconds`); the node stops its
//! containers within the grace period and then deletes the pod with a grace period of 0.
//! Pods that no node runs (unscheduled, finished, or bound to a node that does not exist) go
//! at once, as do deletions asking for a grace period of 0.

use kedge_core::resource::DEFAULT_GRACE_SECONDS;
use serde_json::{Value, json};

/// What deleting a pod does.
#[derive(Debug, PartialEq)]
pub enum PodDeletion {
    Now,
    /// The pod as marked for deletion.
    Mark(Value),
    /// Already marked with an equal or shorter grace period.
    AlreadyMarked,
}

/// Decides how `pod` is deleted with `options` (a DeleteOptions) at `now_s` (Unix seconds).
pub fn decide(pod: &Value, options: &Value, node_exists: bool, now_s: i64) -> PodDeletion {
    let grace = options
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds")?.as_i64())
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0);
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if grace == 0 || node.is_empty() || !node_exists || matches!(phase, "Succeeded" | "Failed") {
        return PodDeletion::Now;
    }
    let marked = pod
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    if marked.is_some_and(|m| m <= grace) {
        return PodDeletion::AlreadyMarked;
    }
    let at = kedge_core::clock::rfc3339_of(
        jiff::Timestamp::from_second(now_s + grace).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    );
    let mut next = pod.clone();
    next["metadata"]["deletionTimestamp"] = json!(at);
    next["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    PodDeletion::Mark(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: &str, phase: &str) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"nodeName": node, "terminationGracePeriodSeconds": 5},
            "status": {"phase": phase}})
    }

    #[test]
    fn a_running_pod_is_marked_with_its_grace_period() {
        let PodDeletion::Mark(m) = decide(&pod("n", "Running"), &json!({}), true, 0) else {
            panic!("not marked");
        };
        assert_eq!(m["metadata"]["deletionGracePeriodSeconds"], 5);
        assert_eq!(m["metadata"]["deletionTimestamp"], "1970-01-01T00:00:05Z");
        let opts = json!({"gracePeriodSeconds": 2});
        let PodDeletion::Mark(m) = decide(&pod("n", "Running"), &opts, true, 0) else {
            panic!("not marked");
        };
        assert_eq!(m["metadata"]["deletionGracePeriodSeconds"], 2);
        // A second delete may shorten the grace period, never lengthen it.
        assert_eq!(decide(&m, &json!({}), true, 0), PodDeletion::AlreadyMarked);
        assert!(matches!(
            decide(&m, &json!({"gracePeriodSeconds": 1}), true, 0),
            PodDeletion::Mark(_)
        ));
    }

    #[test]
    fn pods_no_node_runs_go_at_once() {
        assert_eq!(
            decide(&pod("", "Pending"), &json!({}), true, 0),
            PodDeletion::Now
        );
        assert_eq!(
            decide(&pod("n", "Running"), &json!({}), false, 0),
            PodDeletion::Now
        );
        assert_eq!(
            decide(&pod("n", "Succeeded"), &json!({}), true, 0),
            PodDeletion::Now
        );
        let force = json!({"gracePeriodSeconds": 0});
        assert_eq!(
            decide(&pod("n", "Running"), &force, true, 0),
            PodDeletion::Now
        );
    }
}
