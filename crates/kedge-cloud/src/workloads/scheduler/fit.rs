//! Where a pod fits (pure): kube-scheduler's filters that matter at the edge — unschedulable
//! nodes, `nodeSelector`, required node affinity, taints and tolerations, the pod count and the
//! CPU and memory requests against what the node can allocate — then the node with the fewest
//! pods of the same owner, then the fewest pods. A pod that fits nowhere gets the reasons, worded
//! as kube-scheduler words them (`0/3 nodes are available: 2 Insufficient cpu, …`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};

use crate::workloads::quantity::milli;

/// A node as the scheduler sees it: the node and what its pods already take.
pub struct NodeView<'a> {
    pub node: &'a Node,
    pub pods: usize,
    /// Pods there with the same controller as the pod being placed.
    pub siblings: usize,
    /// Requested CPU and memory (thousandths), by resource name.
    pub requested: BTreeMap<String, i128>,
}

/// The pod's CPU and memory requests (thousandths), summed over its containers.
pub fn requests(pod: &Pod) -> BTreeMap<String, i128> {
    let mut out = BTreeMap::new();
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        let reqs = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        for (k, q) in reqs.into_iter().flatten() {
            if let Some(n) = milli(&q.0) {
                *out.entry(k.clone()).or_insert(0) += n;
            }
        }
    }
    out
}

/// The node's name for `pod`, or kube-scheduler's message for why none fits.
pub fn place(pod: &Pod, nodes: &[NodeView]) -> Result<String, String> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let want = requests(pod);
    let mut fits: Vec<&NodeView> = Vec::new();
    for v in nodes {
        match unfit(pod, v, &want) {
            Some(r) => *reasons.entry(r).or_insert(0) += 1,
            None => fits.push(v),
        }
    }
    fn name<'n>(v: &NodeView<'n>) -> &'n str {
        v.node.metadata.name.as_deref().unwrap_or("")
    }
    if let Some(best) = fits
        .into_iter()
        .min_by(|a, b| (a.siblings, a.pods, name(a)).cmp(&(b.siblings, b.pods, name(b))))
    {
        return Ok(name(best).to_string());
    }
    let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    let mut msg = format!("0/{} nodes are available", nodes.len());
    if !parts.is_empty() {
        msg.push_str(": ");
        msg.push_str(&parts.join(", "));
    }
    msg.push('.');
    Err(msg)
}

/// Why `v` cannot take `pod` (`None`: it can).
fn unfit(pod: &Pod, v: &NodeView, want: &BTreeMap<String, i128>) -> Option<String> {
    if let Err(why) = placeable(pod, v.node) {
        return Some(why);
    }
    let alloc = v.node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let of = |k: &str| alloc.and_then(|a| a.get(k)).and_then(|q| milli(&q.0));
    if let Some(max) = of("pods")
        && (v.pods as i128 + 1) * 1000 > max
    {
        return Some("Too many pods".into());
    }
    for (res, n) in want {
        if let Some(cap) = of(res)
            && v.requested.get(res).copied().unwrap_or(0) + n > cap
        {
            return Some(format!("Insufficient {res}"));
        }
    }
    None
}

/// Whether `pod` may run on `node` at all, capacity aside: the node is schedulable (or
/// tolerated so), its taints are tolerated, it matches `nodeSelector` and the required node
/// affinity. `Err`: kube-scheduler's reason. DaemonSets place their pods with this.
pub fn placeable(pod: &Pod, node: &Node) -> Result<(), String> {
    let spec = pod.spec.as_ref();
    let tolerations = spec.and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
        && !tolerated(
            tolerations,
            &taint("node.kubernetes.io/unschedulable", "NoSchedule"),
        )
    {
        return Err("node(s) were unschedulable".into());
    }
    for t in taints(node) {
        if matches!(t.effect.as_str(), "NoSchedule" | "NoExecute") && !tolerated(tolerations, &t) {
            let value = t.value.clone().unwrap_or_default();
            return Err(format!(
                "node(s) had untolerated taint {{{}: {value}}}",
                t.key
            ));
        }
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.clone().unwrap_or_default();
    let selector = spec.and_then(|s| s.node_selector.as_ref());
    let selected = selector.is_none_or(|s| s.iter().all(|(k, val)| labels.get(k) == Some(val)));
    let terms = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.as_slice());
    let affine = terms.is_none_or(|ts| ts.iter().any(|t| term_matches(t, &labels, &name)));
    if !selected || !affine {
        return Err("node(s) didn't match Pod's node affinity/selector".into());
    }
    Ok(())
}

fn taint(key: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        effect: effect.into(),
        ..Default::default()
    }
}

/// The node's taints, with `node.kubernetes.io/not-ready` while it is not Ready (the taint
/// Kubernetes' node lifecycle controller puts on).
fn taints(node: &Node) -> Vec<Taint> {
    let mut out = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    if !ready {
        out.push(taint("node.kubernetes.io/not-ready", "NoSchedule"));
    }
    out
}

fn tolerated(tolerations: &[Toleration], t: &Taint) -> bool {
    tolerations.iter().any(|tol| {
        let key_ok = tol
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == t.key);
        let effect_ok = tol
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == t.effect);
        let value_ok = match tol.operator.as_deref() {
            Some("Exists") => true,
            _ => tol.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or(""),
        };
        // An empty key with Exists tolerates everything.
        key_ok && effect_ok && value_ok
    })
}

fn term_matches(t: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
    let fields = t.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false; // an empty term matches nothing, as in Kubernetes
    }
    let name_labels = BTreeMap::from([("metadata.name".to_string(), name.to_string())]);
    exprs.iter().all(|r| requirement(r, labels))
        && fields.iter().all(|r| requirement(r, &name_labels))
}

fn requirement(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    let got = labels.get(&r.key);
    let num = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => got.is_some_and(|g| values.contains(g)),
        "NotIn" => got.is_none_or(|g| !values.contains(g)),
        "Exists" => got.is_some(),
        "DoesNotExist" => got.is_none(),
        "Gt" | "Lt" => {
            let (Some(g), Some(v)) = (
                got.and_then(|g| num(g)),
                values.first().and_then(|v| num(v)),
            ) else {
                return false;
            };
            if r.operator == "Gt" { g > v } else { g < v }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::pods::tests::node;
    use k8s_openapi::api::core::v1::{
        Affinity, Container, NodeAffinity, NodeSelector, NodeSpec, PodSpec, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn view(node: &Node, pods: usize) -> NodeView<'_> {
        NodeView {
            node,
            pods,
            siblings: 0,
            requested: BTreeMap::new(),
        }
    }

    fn pod(mut spec: PodSpec) -> Pod {
        if spec.containers.is_empty() {
            spec.containers = vec![Container {
                name: "c".into(),
                ..Default::default()
            }];
        }
        Pod {
            spec: Some(spec),
            ..Default::default()
        }
    }

    #[test]
    fn the_least_loaded_matching_node_wins() {
        let (a, b) = (
            node("a", &[("zone", "x")], true),
            node("b", &[("zone", "x")], true),
        );
        let c = node("c", &[("zone", "y")], true);
        let p = pod(PodSpec {
            node_selector: Some(BTreeMap::from([("zone".into(), "x".into())])),
            ..Default::default()
        });
        assert_eq!(
            place(&p, &[view(&a, 2), view(&b, 1), view(&c, 0)]),
            Ok("b".into())
        );
    }

    #[test]
    fn taints_need_tolerations_and_not_ready_nodes_are_avoided() {
        let mut tainted = node("t", &[], true);
        tainted.spec = Some(NodeSpec {
            taints: Some(vec![Taint {
                key: "dedicated".into(),
                value: Some("gpu".into()),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let down = node("d", &[], false);
        let plain = pod(PodSpec::default());
        let err = place(&plain, &[view(&tainted, 0), view(&down, 0)]).expect_err("no fit");
        assert_eq!(
            err,
            "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
        );
        let tolerant = pod(PodSpec {
            tolerations: Some(vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("gpu".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(
            place(&tolerant, &[view(&tainted, 0), view(&down, 0)]),
            Ok("t".into())
        );
    }

    #[test]
    fn affinity_unschedulable_pods_and_resources_are_checked() {
        let mut cordoned = node("cordoned", &[("edge", "true")], true);
        cordoned.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        let full = node("full", &[("edge", "true")], true);
        let small = node("small", &[("edge", "true")], true);
        let other = node("other", &[], true);
        let p = pod(PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "edge".into(),
                                operator: "Exists".into(),
                                values: None,
                            }]),
                            match_fields: None,
                        }],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "cpu".to_string(),
                        Quantity("500m".into()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut busy = view(&small, 0);
        busy.requested.insert("cpu".into(), 1800);
        let err = place(
            &p,
            &[view(&cordoned, 0), view(&full, 3), busy, view(&other, 0)],
        )
        .expect_err("no fit");
        assert_eq!(
            err,
            "0/4 nodes are available: 1 Insufficient cpu, 1 Too many pods, 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) were unschedulable."
        );
    }
}
