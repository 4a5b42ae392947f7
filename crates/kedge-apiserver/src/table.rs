//! `meta.k8s.io/v1` Table responses, so `kubectl get` prints the columns users know (STATUS of a
//! node, READY of a pod, a CRD's printer columns).

use serde_json::{Value, json};

use crate::meta::str_at;
use crate::registry::{Column, Resource};

/// `Accept` asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

pub const CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

fn col(name: &str, type_: &str, priority: i64) -> Column {
    Column {
        name: name.into(),
        type_: type_.into(),
        json_path: String::new(),
        priority,
        description: String::new(),
    }
}

fn columns(res: &Resource, version: &str) -> Vec<Column> {
    let name = col("Name", "string", 0);
    let age = col("Age", "date", 0);
    let custom = |cols: &[(&str, &str, i64)]| {
        let mut v = vec![name.clone()];
        v.extend(cols.iter().map(|(n, t, p)| col(n, t, *p)));
        v
    };
    if let Some(cols) = crate::workload_table::columns(&res.key()) {
        return custom(&cols);
    }
    match res.key().as_str() {
        "namespaces" => custom(&[("Status", "string", 0), ("Age", "date", 0)]),
        "nodes" => custom(&[
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "date", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ]),
        "pods" => custom(&[
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "date", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
        ]),
        "configmaps" => custom(&[("Data", "integer", 0), ("Age", "date", 0)]),
        "secrets" => custom(&[
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "date", 0),
        ]),
        "events" => vec![
            col("Last Seen", "string", 0),
            col("Type", "string", 0),
            col("Reason", "string", 0),
            col("Object", "string", 0),
            col("Message", "string", 0),
        ],
        "leases.coordination.k8s.io" => custom(&[("Holder", "string", 0), ("Age", "date", 0)]),
        "customresourcedefinitions.apiextensions.k8s.io" => custom(&[("Created At", "date", 0)]),
        _ => {
            let mut v = vec![name];
            if let Some(ver) = res.version(version) {
                v.extend(ver.columns.iter().cloned());
            }
            if !v.iter().any(|c| c.name == "Age") {
                v.push(age);
            }
            v
        }
    }
}

/// Kubernetes' short human duration (`5s`, `3m20s`, `2d4h`, `3y`).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 && s % 60 == 0 => format!("{m}m"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 && m % 60 == 0 => format!("{h}h"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 && h % 24 == 0 => format!("{d}d"),
        _ if h < 192 => format!("{d}d{}h", h % 24),
        _ if d < 730 => format!("{d}d"),
        _ if d < 2920 && d % 365 == 0 => format!("{}y", d / 365),
        _ if d < 2920 => format!("{}y{}d", d / 365, d % 365),
        _ => format!("{}y", d / 365),
    }
}

fn age(ts: &str) -> String {
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

/// A small JSONPath subset for printer columns: `.a.b`, `.a[0].b`, `.a[*].b`.
pub fn json_path(v: &Value, path: &str) -> Value {
    let mut cur = vec![v];
    let trimmed = path.trim().trim_start_matches('{').trim_end_matches('}');
    for seg in trimmed.split('.').filter(|s| !s.is_empty()) {
        let (field, index) = match seg.split_once('[') {
            Some((f, rest)) => (f, Some(rest.trim_end_matches(']'))),
            None => (seg, None),
        };
        let mut next = Vec::new();
        for c in cur {
            let Some(x) = (if field.is_empty() {
                Some(c)
            } else {
                c.get(field)
            }) else {
                continue;
            };
            match (index, x.as_array()) {
                (None, _) => next.push(x),
                (Some("*"), Some(a)) => next.extend(a.iter()),
                (Some(i), Some(a)) => next.extend(i.parse::<usize>().ok().and_then(|i| a.get(i))),
                _ => {}
            }
        }
        cur = next;
    }
    match cur.as_slice() {
        [] => Value::Null,
        [one] => (*one).clone(),
        many => Value::Array(many.iter().map(|x| (*x).clone()).collect()),
    }
}

fn cell(v: Value) -> Value {
    match v {
        Value::Null => json!("<none>"),
        Value::Array(a) => json!(
            a.iter()
                .map(|x| x
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| x.to_string()))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other,
    }
}

fn node_status(o: &Value) -> String {
    let ready = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| str_at(c, "/status"));
    // As kube-apiserver prints it: any Ready status but True (False or Unknown) is NotReady.
    let mut s = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
        s.push_str(",SchedulingDisabled");
    }
    s
}

fn node_roles(o: &Value) -> String {
    let roles: Vec<&str> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .collect()
        })
        .unwrap_or_default();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses
        .iter()
        .filter(|c| c["ready"] == json!(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|c| c["restartCount"].as_i64())
        .sum();
    let waiting = statuses
        .iter()
        .find_map(|c| c.pointer("/state/waiting/reason").and_then(Value::as_str))
        .or_else(|| {
            statuses.iter().find_map(|c| {
                c.pointer("/state/terminated/reason")
                    .and_then(Value::as_str)
            })
        });
    let mut status = waiting
        .unwrap_or_else(|| str_at(o, "/status/phase"))
        .to_string();
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        status = "Terminating".into();
    }
    let or_none = |s: &str| json!(if s.is_empty() { "<none>" } else { s });
    vec![
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        json!(age(str_at(o, "/metadata/creationTimestamp"))),
        or_none(str_at(o, "/status/podIP")),
        or_none(str_at(o, "/spec/nodeName")),
    ]
}

fn count(o: &Value, fields: &[&str]) -> Value {
    json!(
        fields
            .iter()
            .filter_map(|f| o.get(*f).and_then(Value::as_object))
            .map(|m| m.len())
            .sum::<usize>()
    )
}

fn address(o: &Value, kind: &str) -> String {
    o.pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x["type"] == kind))
        .map(|x| str_at(x, "/address").to_string())
        .unwrap_or_else(|| "<none>".into())
}

fn cells(res: &Resource, cols: &[Column], o: &Value) -> Vec<Value> {
    let name = json!(str_at(o, "/metadata/name"));
    let created = age(str_at(o, "/metadata/creationTimestamp"));
    let mut row = vec![name];
    if let Some(more) = crate::workload_table::cells(&res.key(), o, created.clone()) {
        row.extend(more);
        return row;
    }
    match res.key().as_str() {
        "namespaces" => row.extend([json!(str_at(o, "/status/phase")), json!(created)]),
        "nodes" => row.extend([
            json!(node_status(o)),
            json!(node_roles(o)),
            json!(created),
            json!(str_at(o, "/status/nodeInfo/kubeletVersion")),
            json!(address(o, "InternalIP")),
            json!(str_at(o, "/status/nodeInfo/osImage")),
            json!(str_at(o, "/status/nodeInfo/kernelVersion")),
            json!(str_at(o, "/status/nodeInfo/containerRuntimeVersion")),
        ]),
        "pods" => row.extend(pod_cells(o)),
        "configmaps" => row.extend([count(o, &["data", "binaryData"]), json!(created)]),
        "secrets" => row.extend([
            json!(str_at(o, "/type")),
            count(o, &["data"]),
            json!(created),
        ]),
        "events" => {
            let last = [
                "/lastTimestamp",
                "/eventTime",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .map(|p| str_at(o, p))
            .find(|s| !s.is_empty())
            .unwrap_or_default();
            let object = format!(
                "{}/{}",
                str_at(o, "/involvedObject/kind").to_lowercase(),
                str_at(o, "/involvedObject/name")
            );
            row = vec![
                json!(age(last)),
                json!(str_at(o, "/type")),
                json!(str_at(o, "/reason")),
                json!(object),
                json!(str_at(o, "/message")),
            ];
        }
        "leases.coordination.k8s.io" => {
            row.extend([json!(str_at(o, "/spec/holderIdentity")), json!(created)])
        }
        "customresourcedefinitions.apiextensions.k8s.io" => {
            row.push(json!(str_at(o, "/metadata/creationTimestamp")))
        }
        _ => {
            for c in &cols[1..] {
                row.push(match json_path(o, &c.json_path) {
                    _ if c.name == "Age" && c.json_path.is_empty() => json!(created),
                    // As kube-apiserver: a date column shows how long ago.
                    Value::String(t) if c.type_ == "date" => json!(age(&t)),
                    v => cell(v),
                });
            }
        }
    }
    row
}

/// `includeObject`: what each row carries besides its cells.
fn row_object(o: &Value, include: &str) -> Value {
    match include {
        "None" => Value::Null,
        "Object" => o.clone(),
        _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                     "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({}))}),
    }
}

/// Renders objects as a Table. `list_meta` is the list's `metadata` (resourceVersion, continue).
pub fn render(
    res: &Resource,
    version: &str,
    objects: &[Value],
    list_meta: Value,
    include: &str,
) -> Value {
    let cols = columns(res, version);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| {
            let format = if c.name == "Name" { "name" } else { "" };
            let type_ = if c.type_ == "date" {
                "string"
            } else {
                c.type_.as_str()
            };
            json!({"name": c.name, "type": type_, "format": format,
                   "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": cells(res, &cols, o), "object": row_object(o, include)}))
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
           "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn durations_read_like_kubectl() {
        let cases = [
            (5, "5s"),
            (150, "2m30s"),
            (600, "10m"),
            (7200, "120m"),
            (30000, "8h"),
            (90000, "25h"),
            (200000, "2d7h"),
            (864000, "10d"),
            (800 * 86400, "2y70d"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn json_path_subset() {
        let v = json!({"status": {"twins": [{"reported": {"value": "1"}}, {"reported": {"value": "2"}}]}});
        assert_eq!(json_path(&v, ".status.twins[0].reported.value"), json!("1"));
        assert_eq!(
            json_path(&v, ".status.twins[*].reported.value"),
            json!(["1", "2"])
        );
        assert_eq!(json_path(&v, ".missing"), Value::Null);
    }

    #[test]
    fn node_rows_show_readiness_and_roles() {
        let reg = Registry::default();
        let nodes = reg.by_key("nodes").expect("builtin");
        let node = json!({"metadata": {"name": "e1", "labels": {"node-role.kubernetes.io/edge": ""}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let t = render(&nodes, "v1", &[node], json!({}), "Metadata");
        assert_eq!(t["rows"][0]["cells"][1], "Ready");
        assert_eq!(t["rows"][0]["cells"][2], "edge");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        let gone = json!({"metadata": {"name": "e2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        let t = render(&nodes, "v1", &[gone], json!({}), "Metadata");
        assert_eq!(t["rows"][0]["cells"][1], "NotReady");
    }

    #[test]
    fn accept_header_detection() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
