//! Node authorization of edge→cloud writes, as Kubernetes' node authorizer: a node may write its
//! own Node and Lease (and read its Lease), the status of pods bound to it, and delete such a pod once it stopped its
//! containers (the end of a graceful deletion). This module decides from the message
//! alone; whether a pod is bound to the node is checked against the pod when it is written.
//! Everything else is refused (and counted), so a compromised edge cannot touch other nodes'
//! objects or anything cluster-wide.

use kedge_core::envelope::op;
use kedge_core::resource::ObjectRef;

/// Lease namespace, as kubelet uses.
pub use kedge_core::resource::NODE_LEASE_NAMESPACE;

/// An edge write the EdgeController may apply.
#[derive(Debug, PartialEq, Eq)]
pub enum Write<'a> {
    /// Register or update the node itself (`null/node/<node>`).
    Node,
    /// The node's status (`null/nodestatus/<node>`), which also renews its Lease.
    NodeStatus,
    /// A strategic merge patch of the node's status (`patch null/nodepatch/<node>`, as a stock
    /// edgecore's kubelet sends it).
    NodePatch,
    /// The node's Lease (`kube-node-lease/lease/<node>`, insert or update).
    Lease,
    /// Reading the node's Lease (`query`: kubelet reads it before creating it).
    LeaseGet,
    /// Status of a pod; applied only if the pod is bound to the node.
    PodStatus { namespace: &'a str, name: &'a str },
    /// A strategic merge patch of a pod's status (`patch <ns>/podpatch/<pod>`, a stock
    /// edgecore's status manager); applied only if the pod is bound to the node.
    PodPatch { namespace: &'a str, name: &'a str },
    /// Removal of a pod whose containers the node has stopped (the end of a graceful
    /// deletion); applied only if the pod is bound to the node.
    PodDelete { namespace: &'a str, name: &'a str },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("node {node} may not {operation} {resource}: {why}")]
pub struct Forbidden {
    pub node: String,
    pub operation: String,
    pub resource: String,
    pub why: &'static str,
}

/// Decides what `node` may do with `operation` on the edge-form resource `r`.
pub fn authorize<'a>(
    node: &str,
    operation: &str,
    resource: &str,
    r: &ObjectRef<'a>,
) -> Result<Write<'a>, Forbidden> {
    let deny = |why| Forbidden {
        node: node.into(),
        operation: operation.into(),
        resource: resource.into(),
        why,
    };
    let own = r.name == Some(node);
    let write = matches!(operation, op::INSERT | op::UPDATE);
    let pod = |w: fn(&'a str, &'a str) -> Write<'a>, why| match (r.namespace(), r.name) {
        (Some(ns), Some(name)) => Ok(w(ns, name)),
        _ => Err(deny(why)),
    };
    match (r.kind, r.namespace) {
        ("node" | "nodestatus" | "nodepatch" | "lease", _) if !own => {
            Err(deny("a node may only write its own Node and Lease"))
        }
        ("node", _) if write => Ok(Write::Node),
        ("nodestatus", _) if write => Ok(Write::NodeStatus),
        ("node" | "nodestatus", _) => Err(deny("only insert and update are allowed")),
        ("nodepatch", _) if operation == op::PATCH => Ok(Write::NodePatch),
        ("nodepatch", _) => Err(deny("a node's status patch is sent with patch")),
        ("lease", NODE_LEASE_NAMESPACE) if write => Ok(Write::Lease),
        ("lease", NODE_LEASE_NAMESPACE) if operation == op::QUERY => Ok(Write::LeaseGet),
        ("lease", NODE_LEASE_NAMESPACE) => Err(deny(
            "a Lease is read with query and written with insert or update",
        )),
        ("lease", _) => Err(deny("node leases live in kube-node-lease")),
        ("podstatus", _) if operation == op::UPDATE => pod(
            |namespace, name| Write::PodStatus { namespace, name },
            "pod status names a namespaced pod",
        ),
        ("podstatus", _) => Err(deny("pod status is written with update")),
        ("podpatch", _) if operation == op::PATCH => pod(
            |namespace, name| Write::PodPatch { namespace, name },
            "a pod status patch names a namespaced pod",
        ),
        ("podpatch", _) => Err(deny("a pod status patch is sent with patch")),
        ("pod", _) if operation == op::DELETE => pod(
            |namespace, name| Write::PodDelete { namespace, name },
            "pod deletion names a namespaced pod",
        ),
        _ => Err(deny("not an object an edge node may write")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(node: &str, operation: &str, resource: &str) -> Result<String, String> {
        let r = ObjectRef::parse(resource).map_err(|e| e.to_string())?;
        authorize(node, operation, resource, &r)
            .map(|w| format!("{w:?}"))
            .map_err(|e| e.why.to_string())
    }

    #[test]
    fn a_node_writes_its_own_node_and_lease() {
        assert_eq!(check("n1", "insert", "null/node/n1").as_deref(), Ok("Node"));
        assert_eq!(
            check("n1", "update", "null/nodestatus/n1").as_deref(),
            Ok("NodeStatus")
        );
        assert_eq!(
            check("n1", "update", "kube-node-lease/lease/n1").as_deref(),
            Ok("Lease")
        );
    }

    #[test]
    fn a_stock_kubelet_reads_its_lease_and_patches_its_status() {
        assert_eq!(
            check("n1", "query", "kube-node-lease/lease/n1").as_deref(),
            Ok("LeaseGet")
        );
        assert_eq!(
            check("n1", "insert", "kube-node-lease/lease/n1").as_deref(),
            Ok("Lease")
        );
        assert_eq!(
            check("n1", "patch", "null/nodepatch/n1").as_deref(),
            Ok("NodePatch")
        );
        assert_eq!(
            check("n1", "patch", "default/podpatch/web").as_deref(),
            Ok("PodPatch { namespace: \"default\", name: \"web\" }")
        );
        assert!(check("n1", "patch", "null/nodepatch/n2").is_err());
        assert!(check("n1", "query", "kube-node-lease/lease/n2").is_err());
        assert!(check("n1", "delete", "kube-node-lease/lease/n1").is_err());
        assert!(check("n1", "update", "null/nodepatch/n1").is_err());
        assert!(check("n1", "update", "default/podpatch/web").is_err());
        assert!(check("n1", "patch", "null/podpatch/web").is_err());
    }

    #[test]
    fn another_nodes_objects_are_refused() {
        assert!(check("n1", "insert", "null/node/n2").is_err());
        assert!(check("n1", "update", "null/nodestatus/n2").is_err());
        assert!(check("n1", "update", "kube-node-lease/lease/n2").is_err());
        assert!(check("n1", "update", "default/lease/n1").is_err());
        assert!(check("n1", "delete", "null/node/n1").is_err());
    }

    #[test]
    fn pod_status_needs_a_namespaced_pod_name() {
        assert_eq!(
            check("n1", "update", "default/podstatus/web").as_deref(),
            Ok("PodStatus { namespace: \"default\", name: \"web\" }")
        );
        assert!(check("n1", "update", "null/podstatus/web").is_err());
        assert!(check("n1", "update", "default/podstatus").is_err());
        assert!(check("n1", "delete", "default/podstatus/web").is_err());
        assert_eq!(
            check("n1", "delete", "default/pod/web").as_deref(),
            Ok("PodDelete { namespace: \"default\", name: \"web\" }")
        );
        assert!(check("n1", "update", "default/pod/web").is_err());
    }

    #[test]
    fn everything_else_is_refused() {
        for (operation, resource) in [
            ("update", "default/configmap/cfg"),
            ("insert", "default/secret/s"),
            ("insert", "default/pod/web"),
            ("update", "null/namespace/default"),
            ("update", "kube-system/clusterrolebinding/admin"),
        ] {
            assert!(check("n1", operation, resource).is_err(), "{resource}");
        }
    }
}
