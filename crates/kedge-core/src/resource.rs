//! Resource strings in message routes.
//!
//! - In the cloud a resource names its node: `node/<node>/<namespace>/<type>[/<name>]`
//!   (cluster-scoped objects use the namespace `null`), or `node/<node>/membership` and the like
//!   for devices.
//! - On the wire CloudHub strips `node/<node>/`, so the edge sees `<namespace>/<type>/<name>`;
//!   edge→cloud resources come without the prefix and CloudHub adds it from the connection's
//!   authenticated node.

/// The namespace of cluster-scoped objects in resource strings.
pub const NULL_NAMESPACE: &str = "null";

/// Kubernetes' default `terminationGracePeriodSeconds` (the API server's and the edge's).
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Where node Leases live, as kubelet keeps them.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ResourceError {
    #[error("resource {0:?} is not <namespace>/<type>[/<name>]")]
    Shape(String),
    #[error("resource {0:?} does not name a node (node/<node>/...)")]
    NoNode(String),
}

/// A parsed `<namespace>/<type>[/<name>]`. Names may contain `/` (device topics do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef<'a> {
    pub namespace: &'a str,
    pub kind: &'a str,
    pub name: Option<&'a str>,
}

impl<'a> ObjectRef<'a> {
    /// The parsed type token.
    pub fn kind(&self) -> Kind {
        Kind::of(self.kind)
    }

    /// Parses an edge-form resource (KubeEdge `ParseResourceEdge`): three segments are
    /// namespace/type/name, two are namespace/type.
    pub fn parse(s: &'a str) -> Result<ObjectRef<'a>, ResourceError> {
        let mut parts = s.splitn(3, '/');
        let (ns, kind, name) = (parts.next(), parts.next(), parts.next());
        match (ns, kind, name) {
            (Some(ns), Some(kind), name) if !ns.is_empty() && !kind.is_empty() => Ok(ObjectRef {
                namespace: ns,
                kind,
                name: name.filter(|n| !n.is_empty()),
            }),
            _ => Err(ResourceError::Shape(s.to_string())),
        }
    }

    /// The object's namespace, `None` for cluster-scoped objects.
    pub fn namespace(&self) -> Option<&'a str> {
        (self.namespace != NULL_NAMESPACE).then_some(self.namespace)
    }
}

/// The object kinds kedge moves between cloud and edge, by their resource-string type token
/// (`pod`, `configmap`, …). Components dispatch on this, not on substrings of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    ConfigMap,
    Secret,
    Node,
    Device,
    DeviceModel,
    Rule,
    /// Any other type token (the edge stores it; nothing acts on it).
    Other,
}

impl Kind {
    const ALL: [(Kind, &'static str, &'static str, &'static str); 7] = [
        (Kind::Pod, "pod", "v1", "Pod"),
        (Kind::ConfigMap, "configmap", "v1", "ConfigMap"),
        (Kind::Secret, "secret", "v1", "Secret"),
        (Kind::Node, "node", "v1", "Node"),
        (
            Kind::Device,
            "device",
            "devices.kubeedge.io/v1alpha2",
            "Device",
        ),
        (
            Kind::DeviceModel,
            "devicemodel",
            "devices.kubeedge.io/v1alpha2",
            "DeviceModel",
        ),
        (Kind::Rule, "rule", "rules.kubeedge.io/v1", "Rule"),
    ];

    /// The kind a type token names (KubeEdge's tokens are the lower-cased Kubernetes kinds).
    pub fn of(token: &str) -> Kind {
        Self::ALL
            .iter()
            .find(|(_, t, _, _)| t.eq_ignore_ascii_case(token))
            .map_or(Kind::Other, |(k, ..)| *k)
    }

    /// The type token in resource strings (`None` for [`Kind::Other`]).
    pub fn token(self) -> Option<&'static str> {
        self.row().map(|(_, t, _, _)| *t)
    }

    /// `(apiVersion, kind)` of the Kubernetes object, as ObjectSync records name it.
    pub fn api_version_kind(self) -> Option<(&'static str, &'static str)> {
        self.row().map(|(_, _, v, k)| (*v, *k))
    }

    fn row(self) -> Option<&'static (Kind, &'static str, &'static str, &'static str)> {
        Self::ALL.iter().find(|(k, ..)| *k == self)
    }
}

/// Builds `<namespace>/<type>/<name>`; an empty namespace becomes `null`.
pub fn object(namespace: &str, kind: &str, name: &str) -> String {
    let ns = if namespace.is_empty() {
        NULL_NAMESPACE
    } else {
        namespace
    };
    format!("{ns}/{kind}/{name}")
}

/// Prefixes an edge-form resource with its node: `node/<node>/<resource>`.
pub fn with_node(node: &str, resource: &str) -> String {
    format!("node/{node}/{resource}")
}

/// The node a cloud-form resource is for: the segment after the first `node` segment.
pub fn node_of(resource: &str) -> Result<&str, ResourceError> {
    let mut segs = resource.split('/');
    segs.by_ref().find(|s| *s == "node");
    segs.next()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ResourceError::NoNode(resource.to_string()))
}

/// Strips `node/<node>/` as CloudHub does before sending to the edge.
pub fn trim_node(resource: &str) -> Result<&str, ResourceError> {
    let rest = resource
        .strip_prefix("node/")
        .ok_or_else(|| ResourceError::NoNode(resource.to_string()))?;
    match rest.split_once('/') {
        Some((node, tail)) if !node.is_empty() => Ok(tail),
        _ => Err(ResourceError::NoNode(resource.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edge_forms() {
        let r = ObjectRef::parse("default/pod/nginx").expect("ok");
        assert_eq!(
            (r.namespace(), r.kind, r.name),
            (Some("default"), "pod", Some("nginx"))
        );
        let n = ObjectRef::parse("null/nodepatch/n1").expect("ok");
        assert_eq!(n.namespace(), None);
        let list = ObjectRef::parse("default/podlist").expect("ok");
        assert_eq!(list.name, None);
        let twin = ObjectRef::parse("device/default/counter/twin/edge_updated").expect("ok");
        assert_eq!(twin.name, Some("counter/twin/edge_updated"));
        for bad in ["", "node", "/pod/x", "default//x"] {
            assert!(ObjectRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds_round_trip_their_tokens() {
        for k in [
            Kind::Pod,
            Kind::ConfigMap,
            Kind::Secret,
            Kind::Node,
            Kind::Device,
            Kind::DeviceModel,
            Kind::Rule,
        ] {
            let token = k.token().expect("a token");
            assert_eq!(Kind::of(token), k);
            assert!(k.api_version_kind().is_some());
        }
        assert_eq!(
            Kind::of("ConfigMap"),
            Kind::ConfigMap,
            "kinds as ObjectSyncs write them"
        );
        assert_eq!(Kind::of("podlist"), Kind::Other);
        assert_eq!(Kind::Other.token(), None);
        let r = ObjectRef::parse("default/devicemodel/m").expect("ok");
        assert_eq!(r.kind(), Kind::DeviceModel);
    }

    #[test]
    fn cloud_forms() {
        let full = with_node("n1", &object("", "node", "n1"));
        assert_eq!(full, "node/n1/null/node/n1");
        assert_eq!(node_of(&full), Ok("n1"));
        assert_eq!(trim_node(&full), Ok("null/node/n1"));
        assert_eq!(node_of("node/n2/membership"), Ok("n2"));
        assert!(node_of("rule/r1").is_err());
        assert!(trim_node("node//x").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn parsing_arbitrary_strings_never_panics(s in ".{0,64}") {
            let _ = ObjectRef::parse(&s);
            let _ = node_of(&s);
            let _ = trim_node(&s);
        }

        #[test]
        fn build_then_parse_round_trips(
            ns in "[a-z0-9-]{0,12}", kind in "[a-z]{1,12}", name in "[a-z0-9./-]{1,30}",
            node in "[a-z0-9.-]{1,20}",
        ) {
            let edge = object(&ns, &kind, &name);
            let cloud = with_node(&node, &edge);
            prop_assert_eq!(node_of(&cloud), Ok(node.as_str()));
            prop_assert_eq!(trim_node(&cloud), Ok(edge.as_str()));
            let r = ObjectRef::parse(&edge).expect("parses");
            prop_assert_eq!(r.kind, kind.as_str());
            prop_assert_eq!(r.name, Some(name.as_str()).filter(|n| !n.is_empty()));
            prop_assert_eq!(r.namespace(), Some(ns.as_str()).filter(|n| !n.is_empty()));
        }
    }
}
