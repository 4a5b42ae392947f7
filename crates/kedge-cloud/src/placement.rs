//! Which objects go to which edge node, and which leave it: the decisions the controllers act
//! on, pure and tested without an API.
//!
//! - a pod goes to the node its `spec.nodeName` names; the ConfigMaps and Secrets it uses go
//!   with it, and leave the node with the last pod there that uses them;
//! - a Device goes to the node its `nodeSelector` names, with its DeviceModel; a Device that
//!   moves leaves its old node, and its model leaves too unless another device there (in the
//!   same namespace) still uses it;
//! - a node's device profile ConfigMap (`device-profile-config-<node>`) goes to that node;
//! - what the edge uses of an object ([`content_hash`]) decides whether a new version is worth
//!   sending: a pod whose status the edge reported, a device whose reported twins changed, a
//!   rule whose counters moved, are not sent back.

use k8s_openapi::api::core::v1::Pod;
use kedge_core::resource::Kind;

pub use crate::devicecontroller::profile::node_of as profile_node;
pub use crate::edgecontroller::refs::{Refs, of as refs_of};

/// A hash of what the edge uses of an object of `kind`: everything but its resourceVersion,
/// managed fields and status — except the desired twins a v1alpha2-era Device keeps in its
/// status (v1beta1 keeps them in `spec`; reported values, state and conditions are what the
/// edge itself reports, or the cloud's).
pub fn content_hash(kind: Kind, obj: &serde_json::Value) -> u64 {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    let status = v.as_object_mut().and_then(|o| o.remove("status"));
    if kind == Kind::Device {
        let desired: Vec<serde_json::Value> = status
            .as_ref()
            .and_then(|s| s.get("twins"))
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
            .filter(|t| t.get("desired").is_some())
            .map(|t| serde_json::json!([t.get("propertyName"), t.get("desired")]))
            .collect();
        v["desired"] = serde_json::Value::Array(desired);
    }
    kedge_core::delivery::hash_json(&v)
}

/// The node a pod is bound to.
pub fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// What leaves a node with a pod that goes: the ConfigMaps and Secrets `gone` used that none
/// of the pods `still` there (in the same namespace) uses.
pub fn leaving<'a>(gone: &Refs, still: impl IntoIterator<Item = &'a Refs>) -> Refs {
    let mut left = Refs {
        configmaps: gone.configmaps.clone(),
        secrets: gone.secrets.clone(),
    };
    for r in still {
        left.configmaps.retain(|c| !r.configmaps.contains(c));
        left.secrets.retain(|s| !r.secrets.contains(s));
    }
    left
}

/// Where a Device is to be, given where it was sent (`from`) and the node it names now (`to`;
/// `None` once deleted or unbound).
#[derive(Debug, PartialEq, Eq)]
pub struct Move<'a> {
    /// The node it leaves (deletions of it, and maybe of its model, go there).
    pub leave: Option<&'a str>,
    /// The node it goes to (or stays on, at its new version).
    pub to: Option<&'a str>,
}

pub fn device_move<'a>(from: Option<&'a str>, to: Option<&'a str>) -> Move<'a> {
    Move {
        leave: from.filter(|f| Some(*f) != to),
        to,
    }
}

/// Whether `model` leaves a node with a device that goes: unless one of the `others` there
/// (the models of the node's other devices in the same namespace) is the same.
pub fn model_leaves<'a>(
    model: Option<&str>,
    others: impl IntoIterator<Item = Option<&'a str>>,
) -> bool {
    let Some(model) = model else {
        return false;
    };
    !others.into_iter().any(|o| o == Some(model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refs(cms: &[&str], secrets: &[&str]) -> Refs {
        Refs {
            configmaps: cms.iter().map(|s| s.to_string()).collect(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_edge_is_not_sent_what_it_reported_itself() {
        let pod = json!({"metadata": {"name": "p", "resourceVersion": "5"}, "spec": {"nodeName": "n"}, "status": {"phase": "Pending"}});
        let mut later = pod.clone();
        later["metadata"]["resourceVersion"] = json!("9");
        later["status"]["phase"] = json!("Running");
        assert_eq!(
            content_hash(Kind::Pod, &pod),
            content_hash(Kind::Pod, &later)
        );
        later["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
        assert_ne!(
            content_hash(Kind::Pod, &pod),
            content_hash(Kind::Pod, &later),
            "metadata counts"
        );
        let device = json!({"metadata": {"name": "d"}, "spec": {}, "status": {"twins": [
            {"propertyName": "status", "desired": {"value": "ON"}, "reported": {"value": "1"}}]}});
        let mut reported = device.clone();
        reported["status"]["twins"][0]["reported"]["value"] = json!("2");
        reported["status"]["state"] = json!("online");
        assert_eq!(
            content_hash(Kind::Device, &device),
            content_hash(Kind::Device, &reported)
        );
        let mut desired = device.clone();
        desired["status"]["twins"][0]["desired"]["value"] = json!("OFF");
        assert_ne!(
            content_hash(Kind::Device, &device),
            content_hash(Kind::Device, &desired),
            "desired values are the edge's to know"
        );
    }

    #[test]
    fn pods_go_to_their_node() {
        let pod = |node: Option<&str>| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": "p"}, "spec": {"nodeName": node, "containers": []}}),
            )
            .expect("pod")
        };
        assert_eq!(pod_node(&pod(Some("n1"))), Some("n1"));
        assert_eq!(pod_node(&pod(None)), None, "unscheduled pods go nowhere");
    }

    #[test]
    fn what_a_pod_used_leaves_with_the_last_pod_that_uses_it() {
        let gone = refs(&["a", "b"], &["s"]);
        let left = leaving(&gone, [&refs(&["b"], &[]), &refs(&[], &["t"])]);
        assert_eq!(left, refs(&["a"], &["s"]));
        assert_eq!(leaving(&gone, []), gone, "the last pod: all of it leaves");
    }

    #[test]
    fn a_moved_device_leaves_its_old_node() {
        assert_eq!(
            device_move(Some("a"), Some("b")),
            Move {
                leave: Some("a"),
                to: Some("b")
            }
        );
        assert_eq!(
            device_move(Some("a"), Some("a")),
            Move {
                leave: None,
                to: Some("a")
            },
            "an update stays"
        );
        assert_eq!(
            device_move(Some("a"), None),
            Move {
                leave: Some("a"),
                to: None
            },
            "deleted or unbound"
        );
        assert_eq!(
            device_move(None, Some("b")),
            Move {
                leave: None,
                to: Some("b")
            }
        );
    }

    #[test]
    fn a_model_leaves_unless_still_used_there() {
        assert!(model_leaves(Some("m"), [Some("n"), None]));
        assert!(!model_leaves(Some("m"), [Some("n"), Some("m")]));
        assert!(!model_leaves(None, []), "no model, nothing leaves");
    }
}
