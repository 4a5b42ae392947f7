//! `kubectl get` columns of the workload kinds, as kube-apiserver prints them.

use kedge_core::labels::Selector;
use serde_json::{Value, json};

use crate::meta::str_at;
use crate::workloads::{DAEMONSETS, DEPLOYMENTS, JOBS, REPLICASETS, STATEFULSETS};

const WIDE: [(&str, &str, i64); 3] = [
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];

/// Columns after Name (`None`: not a workload).
pub fn columns(key: &str) -> Option<Vec<(&'static str, &'static str, i64)>> {
    let mut cols = match key {
        DEPLOYMENTS => vec![
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
        ],
        REPLICASETS => vec![
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
        ],
        DAEMONSETS => vec![
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
        ],
        STATEFULSETS => vec![("Ready", "string", 0)],
        JOBS => vec![
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
        ],
        _ => return None,
    };
    cols.push(("Age", "date", 0));
    cols.extend(WIDE);
    Some(cols)
}

/// Cells after Name, in `columns`' order; `age` is the object's age already formatted.
pub fn cells(key: &str, o: &Value, age: String) -> Option<Vec<Value>> {
    let n = |p: &str| json!(o.pointer(p).and_then(Value::as_i64).unwrap_or(0));
    let ratio = |a: &str, b: &str| json!(format!("{}/{}", n(a), n(b)));
    let mut row = match key {
        DEPLOYMENTS => vec![
            ratio("/status/readyReplicas", "/spec/replicas"),
            n("/status/updatedReplicas"),
            n("/status/availableReplicas"),
        ],
        REPLICASETS => vec![
            n("/spec/replicas"),
            n("/status/replicas"),
            n("/status/readyReplicas"),
        ],
        DAEMONSETS => vec![
            n("/status/desiredNumberScheduled"),
            n("/status/currentNumberScheduled"),
            n("/status/numberReady"),
            n("/status/updatedNumberScheduled"),
            n("/status/numberAvailable"),
            json!(node_selector(o)),
        ],
        STATEFULSETS => vec![ratio("/status/readyReplicas", "/spec/replicas")],
        JOBS => vec![
            json!(job_status(o)),
            ratio("/status/succeeded", "/spec/completions"),
            json!(job_duration(o)),
        ],
        _ => return None,
    };
    row.push(json!(age));
    let containers = o
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let join = |f: &str| {
        let v: Vec<&str> = containers.iter().map(|c| str_at(c, f)).collect();
        json!(v.join(","))
    };
    let selector = Selector::from_json(&o["spec"]["selector"])
        .map(|s| s.to_string())
        .unwrap_or_default();
    row.extend([join("/name"), join("/image"), json!(selector)]);
    Some(row)
}

fn node_selector(o: &Value) -> String {
    let sel = o
        .pointer("/spec/template/spec/nodeSelector")
        .and_then(Value::as_object);
    match sel {
        Some(m) if !m.is_empty() => {
            let v: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            v.join(",")
        }
        _ => "<none>".into(),
    }
}

fn has_condition(o: &Value, kind: &str) -> bool {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
}

fn job_status(o: &Value) -> &'static str {
    if has_condition(o, "Complete") {
        "Complete"
    } else if has_condition(o, "Failed") {
        "Failed"
    } else if o["spec"]["suspend"] == json!(true) {
        "Suspended"
    } else {
        "Running"
    }
}

fn job_duration(o: &Value) -> String {
    let at = |p: &str| str_at(o, p).parse::<jiff::Timestamp>().ok();
    let Some(start) = at("/status/startTime") else {
        return String::new();
    };
    let end = at("/status/completionTime").unwrap_or_else(jiff::Timestamp::now);
    crate::table::human_duration(end.as_second() - start.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_row_reads_like_kubectl() {
        let d = json!({"spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let row = cells(DEPLOYMENTS, &d, "5m".into()).expect("a workload");
        assert_eq!(
            row,
            vec![
                json!("2/3"),
                json!(3),
                json!(2),
                json!("5m"),
                json!("web"),
                json!("nginx:1"),
                json!("app=web")
            ]
        );
        assert_eq!(columns(DEPLOYMENTS).expect("cols").len(), row.len());
    }

    #[test]
    fn a_job_row_shows_completions_and_status() {
        let j = json!({"spec": {"completions": 2}, "status": {"succeeded": 2,
            "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:07Z",
            "conditions": [{"type": "Complete", "status": "True"}]}});
        let row = cells(JOBS, &j, "1m".into()).expect("a workload");
        assert_eq!(&row[..3], &[json!("Complete"), json!("2/2"), json!("7s")]);
    }
}
