//! Which objects go to which edge node, and which leave it: the decisions the controllers act
//! on, pure and tested without an API.
//!
//! - a pod goes to the node its `spec.nodeName` names; the ConfigMaps and Secrets it uses go
//!   with it, and leave the node with the last pod there that uses them;
//! - a Device goes to the node its `nodeSelector` names, with its DeviceModel; a Device that
//!   moves leaves its old node, and its model leaves too unless another device there (in the
//!   same namespace) still uses it;
//! - a node's device profile ConfigMap (`device-profile-config-<node>`) goes to that node.

use k8s_openapi::api::core::v1::Pod;

pub use crate::devicecontroller::profile::node_of as profile_node;
pub use crate::edgecontroller::refs::{Refs, of as refs_of};

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
