//! Who belongs to a NodeGroup (pure): the nodes it lists and the nodes with all its
//! `matchLabels`. A member is labelled `apps.kubeedge.io/belonging-to=<group>`; a node already
//! labelled for another group stays there, and the status says so. Nodes labelled for the group
//! that are no longer members lose the label.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};

use super::BELONGING_TO;

#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    pub label: Vec<String>,
    pub unlabel: Vec<String>,
    pub status: Value,
}

fn ready(n: &Node) -> &'static str {
    let cond = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    match cond.map(|c| c.status.as_str()) {
        Some("True") => "Ready",
        Some("False") => "NotReady",
        _ => "Unknown",
    }
}

/// `group`: the NodeGroup object (`None`: it was deleted).
pub fn decide(name: &str, group: Option<&Value>, nodes: &[Arc<Node>]) -> Decision {
    let listed: BTreeSet<String> = group
        .and_then(|g| g.pointer("/spec/nodes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(String::from))
        .collect();
    let selector = group
        .and_then(|g| g.pointer("/spec/matchLabels"))
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty());
    let mut d = Decision::default();
    let mut statuses = Vec::new();
    let mut seen = BTreeSet::new();
    for n in nodes {
        let node_name = n.metadata.name.clone().unwrap_or_default();
        let labels = n.metadata.labels.clone().unwrap_or_default();
        let selected = selector.is_some_and(|m| {
            m.iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        });
        let member = group.is_some() && (listed.contains(&node_name) || selected);
        let current = labels.get(BELONGING_TO).map(String::as_str);
        if !member {
            if current == Some(name) {
                d.unlabel.push(node_name);
            }
            continue;
        }
        seen.insert(node_name.clone());
        let mut status = json!({"nodeName": node_name, "readyStatus": ready(n)});
        match current {
            Some(other) if other != name => {
                status["selectionStatus"] = json!("Failed");
                status["selectionStatusReason"] =
                    json!(format!("the node belongs to NodeGroup {other:?}"));
            }
            Some(_) => status["selectionStatus"] = json!("Succeeded"),
            None => {
                status["selectionStatus"] = json!("Succeeded");
                d.label.push(node_name);
            }
        }
        statuses.push(status);
    }
    for missing in listed.difference(&seen) {
        statuses.push(json!({"nodeName": missing, "readyStatus": "Unknown",
            "selectionStatus": "Failed", "selectionStatusReason": "no such node"}));
    }
    d.status = json!({"nodeStatuses": statuses});
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: &[(&str, &str)]) -> Arc<Node> {
        let mut n = crate::workloads::pods::tests::node(name, labels, true);
        n.status = None; // no Ready condition: Unknown
        Arc::new(n)
    }

    #[test]
    fn listed_and_selected_nodes_join_and_others_leave() {
        let g = json!({"spec": {"nodes": ["a", "ghost"], "matchLabels": {"site": "x"}}});
        let nodes = [
            node("a", &[]),
            node("b", &[("site", "x")]),
            node("c", &[(BELONGING_TO, "g1")]),
            node("d", &[("site", "x"), (BELONGING_TO, "other")]),
        ];
        let d = decide("g1", Some(&g), &nodes);
        assert_eq!(d.label, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(d.unlabel, vec!["c".to_string()]);
        let st = d.status["nodeStatuses"].as_array().expect("statuses");
        let of = |n: &str| {
            st.iter()
                .find(|s| s["nodeName"] == n)
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(of("d")["selectionStatus"], "Failed");
        assert_eq!(of("ghost")["selectionStatusReason"], "no such node");
        assert_eq!(of("a")["readyStatus"], "Unknown");
    }

    #[test]
    fn a_deleted_group_frees_its_nodes() {
        let d = decide("g1", None, &[node("a", &[(BELONGING_TO, "g1")])]);
        assert_eq!(d.unlabel, vec!["a".to_string()]);
    }
}
