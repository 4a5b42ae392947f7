use super::*;
use crate::workloads::pods::tests::pod;
use crate::workloads::template::REVISION_LABEL;
use k8s_openapi::api::apps::v1::DaemonSetSpec;
use k8s_openapi::api::core::v1::{NodeSpec, PodSpec, PodTemplateSpec, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn node(name: &str, labels: &[(&str, &str)], ready: bool) -> Arc<Node> {
    Arc::new(crate::workloads::pods::tests::node(name, labels, ready))
}

fn ds(selector: &[(&str, &str)]) -> DaemonSet {
    DaemonSet {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    node_selector: (!selector.is_empty()).then(|| {
                        selector
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

fn daemon(name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
    let mut p = pod(name, Some(node), "Running", ready);
    p.metadata.labels = Some(BTreeMap::from([(
        REVISION_LABEL.to_string(),
        hash.to_string(),
    )]));
    Arc::new(p)
}

#[test]
fn every_matching_node_gets_one_pod_and_others_none() {
    let nodes = [
        node("a", &[("role", "edge")], true),
        node("b", &[("role", "edge")], false),
        node("c", &[], true),
    ];
    let pods = [
        daemon("p-c", "c", "h1", true),
        daemon("p-a1", "a", "h1", true),
        daemon("p-a2", "a", "h1", false),
    ];
    let p = plan(&ds(&[("role", "edge")]), &nodes, &pods, "h1", 2000);
    assert_eq!(
        p.create_on,
        vec!["b".to_string()],
        "a NotReady edge keeps its daemon too"
    );
    let mut deleted = p.delete.clone();
    deleted.sort();
    assert_eq!(deleted, vec!["p-a2".to_string(), "p-c".to_string()]);
    assert_eq!(p.status.desired_number_scheduled, 2);
    assert_eq!(p.status.number_misscheduled, 1);
}

#[test]
fn a_tainted_node_needs_a_toleration() {
    let mut n = Node::clone(&node("t", &[], true));
    n.spec = Some(NodeSpec {
        taints: Some(vec![Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let p = plan(&ds(&[]), &[Arc::new(n)], &[], "h", 0);
    assert!(p.create_on.is_empty());
}

#[test]
fn a_rolling_update_replaces_one_available_pod_at_a_time() {
    let nodes = [
        node("a", &[], true),
        node("b", &[], true),
        node("c", &[], true),
    ];
    let pods = [
        daemon("pa", "a", "old", true),
        daemon("pb", "b", "old", true),
        daemon("pc", "c", "old", true),
    ];
    let p = plan(&ds(&[]), &nodes, &pods, "new", 2000);
    assert_eq!(p.delete.len(), 1, "{:?}", p.delete);
    // One node down already (its new pod not ready): nothing more goes.
    let pods = [
        daemon("pa", "a", "new", false),
        daemon("pb", "b", "old", true),
        daemon("pc", "c", "old", true),
    ];
    let p = plan(&ds(&[]), &nodes, &pods, "new", 2000);
    assert!(p.delete.is_empty(), "{:?}", p.delete);
    assert_eq!(p.status.updated_number_scheduled, Some(1));
}
