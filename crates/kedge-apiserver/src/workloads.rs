//! The workload kinds (apps/v1 Deployment, ReplicaSet, DaemonSet, StatefulSet; batch/v1 Job):
//! kube-apiserver's defaulting (`SetDefaults_*`) and the validation errors kubectl users know.
//! Controllers act on them elsewhere (the cloud's `workloads`); this is what the API itself does.

use kedge_core::labels::{Selector, label_map};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::meta::str_at;
use crate::registry::Resource;
use crate::schema::Cause;

pub const DEPLOYMENTS: &str = "deployments.apps";
pub const REPLICASETS: &str = "replicasets.apps";
pub const DAEMONSETS: &str = "daemonsets.apps";
pub const STATEFULSETS: &str = "statefulsets.apps";
pub const JOBS: &str = "jobs.batch";

pub fn is_workload(key: &str) -> bool {
    matches!(
        key,
        DEPLOYMENTS | REPLICASETS | DAEMONSETS | STATEFULSETS | JOBS
    )
}

/// Fills in what kube-apiserver would (on create and on update: defaulting is idempotent).
pub fn default(key: &str, obj: &mut Value) {
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    if key == JOBS {
        job_selector(obj);
    }
    let spec = &mut obj["spec"];
    match key {
        DEPLOYMENTS => {
            fill(spec, "replicas", json!(1));
            fill(spec, "revisionHistoryLimit", json!(10));
            fill(spec, "progressDeadlineSeconds", json!(600));
            fill(spec, "strategy", json!({}));
            fill(&mut spec["strategy"], "type", json!("RollingUpdate"));
            if spec["strategy"]["type"] == "RollingUpdate" {
                fill(&mut spec["strategy"], "rollingUpdate", json!({}));
                let ru = &mut spec["strategy"]["rollingUpdate"];
                fill(ru, "maxUnavailable", json!("25%"));
                fill(ru, "maxSurge", json!("25%"));
            }
        }
        REPLICASETS => fill(spec, "replicas", json!(1)),
        DAEMONSETS => {
            fill(spec, "revisionHistoryLimit", json!(10));
            fill(spec, "updateStrategy", json!({}));
            fill(&mut spec["updateStrategy"], "type", json!("RollingUpdate"));
            if spec["updateStrategy"]["type"] == "RollingUpdate" {
                fill(&mut spec["updateStrategy"], "rollingUpdate", json!({}));
                let ru = &mut spec["updateStrategy"]["rollingUpdate"];
                fill(ru, "maxUnavailable", json!(1));
                fill(ru, "maxSurge", json!(0));
            }
        }
        STATEFULSETS => {
            fill(spec, "replicas", json!(1));
            fill(spec, "revisionHistoryLimit", json!(10));
            fill(spec, "podManagementPolicy", json!("OrderedReady"));
            fill(spec, "updateStrategy", json!({}));
            fill(&mut spec["updateStrategy"], "type", json!("RollingUpdate"));
            if spec["updateStrategy"]["type"] == "RollingUpdate" {
                fill(
                    &mut spec["updateStrategy"],
                    "rollingUpdate",
                    json!({"partition": 0}),
                );
            }
            fill(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
        }
        JOBS => {
            if spec.get("completions").is_none() && spec.get("parallelism").is_none() {
                spec["completions"] = json!(1);
            }
            fill(spec, "parallelism", json!(1));
            fill(spec, "backoffLimit", json!(6));
            fill(spec, "completionMode", json!("NonIndexed"));
            fill(spec, "suspend", json!(false));
            fill(spec, "manualSelector", json!(false));
            fill(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
        }
        _ => return,
    }
    if !spec["template"].is_object() {
        spec["template"] = json!({});
    }
    if !spec["template"]["spec"].is_object() {
        spec["template"]["spec"] = json!({});
    }
    crate::defaults::pod_spec(&mut spec["template"]["spec"]);
}

/// A Job without `manualSelector` selects its pods by its own uid, as kube-apiserver sets it up.
fn job_selector(obj: &mut Value) {
    if obj["spec"]["manualSelector"] == json!(true) || obj["spec"]["selector"].is_object() {
        return;
    }
    let uid = str_at(obj, "/metadata/uid").to_string();
    let name = str_at(obj, "/metadata/name").to_string();
    if uid.is_empty() {
        return;
    }
    obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    let t = &mut obj["spec"]["template"];
    if !t.is_object() {
        *t = json!({});
    }
    if !t["metadata"].is_object() {
        t["metadata"] = json!({});
    }
    if !t["metadata"]["labels"].is_object() {
        t["metadata"]["labels"] = json!({});
    }
    let labels = &mut t["metadata"]["labels"];
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        labels[k] = json!(v);
    }
}

fn fill(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.entry(key).or_insert(v);
    }
}

fn cause(reason: &'static str, field: &str, message: String) -> Cause {
    Cause {
        reason,
        field: field.into(),
        message,
    }
}

/// kube-apiserver's checks of a workload, as `Kind.group "name" is invalid` errors.
/// `current`: the stored object on an update (the selector may not change).
pub fn validate(res: &Resource, obj: &Value, current: Option<&Value>) -> Result<(), ApiError> {
    let key = res.key();
    if !is_workload(&key) {
        return Ok(());
    }
    let mut causes = Vec::new();
    let spec = &obj["spec"];
    let selector = &spec["selector"];
    let labels = &spec["template"]["metadata"]["labels"];
    if !selector.is_object() {
        causes.push(cause(
            "FieldValueRequired",
            "spec.selector",
            "Required value".into(),
        ));
    } else {
        match Selector::from_json(selector) {
            Err(e) => causes.push(cause(
                "FieldValueInvalid",
                "spec.selector",
                format!("Invalid value: {e}"),
            )),
            Ok(s) if s.is_empty() => causes.push(cause(
                "FieldValueInvalid",
                "spec.selector",
                format!(
                    "Invalid value: {selector}: empty selector is invalid for {}",
                    res.singular
                ),
            )),
            Ok(s) if !s.matches_json(labels) => causes.push(cause(
                "FieldValueInvalid",
                "spec.template.metadata.labels",
                format!(
                    "Invalid value: {:?}: `selector` does not match template `labels`",
                    label_map(labels)
                ),
            )),
            Ok(_) => {}
        }
    }
    if let Some(cur) = current
        && cur["spec"]["selector"] != *selector
        && key != JOBS
    {
        causes.push(cause(
            "FieldValueInvalid",
            "spec.selector",
            format!("Invalid value: {selector}: field is immutable"),
        ));
    }
    for f in ["replicas", "parallelism", "completions", "backoffLimit"] {
        if spec[f].as_i64().is_some_and(|n| n < 0) {
            causes.push(cause(
                "FieldValueInvalid",
                &format!("spec.{f}"),
                format!(
                    "Invalid value: {}: must be greater than or equal to 0",
                    spec[f]
                ),
            ));
        }
    }
    causes.extend(template_causes(&key, &spec["template"]["spec"]));
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        &res.kind_group(),
        str_at(obj, "/metadata/name"),
        causes,
    ))
}

fn template_causes(key: &str, spec: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let base = "spec.template.spec";
    match spec["containers"].as_array() {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter().enumerate() {
                for f in ["name", "image"] {
                    if str_at(c, &format!("/{f}")).is_empty() {
                        causes.push(cause(
                            "FieldValueRequired",
                            &format!("{base}.containers[{i}].{f}"),
                            "Required value".into(),
                        ));
                    }
                }
            }
        }
        _ => causes.push(cause(
            "FieldValueRequired",
            &format!("{base}.containers"),
            "Required value".into(),
        )),
    }
    let restart = str_at(spec, "/restartPolicy");
    let allowed: &[&str] = if key == JOBS {
        &["OnFailure", "Never"]
    } else {
        &["Always"]
    };
    if !allowed.contains(&restart) {
        let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        causes.push(cause(
            "FieldValueNotSupported",
            &format!("{base}.restartPolicy"),
            format!(
                "Unsupported value: {restart:?}: supported values: {}",
                list.join(", ")
            ),
        ));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn deployment(labels: Value, selector: Value) -> Value {
        json!({"metadata": {"name": "web", "uid": "u1"}, "spec": {"selector": selector,
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}})
    }

    #[test]
    fn a_deployment_gets_kubernetes_defaults() {
        let mut d = deployment(
            json!({"app": "web"}),
            json!({"matchLabels": {"app": "web"}}),
        );
        default(DEPLOYMENTS, &mut d);
        let s = &d["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        assert_eq!(
            s["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(s["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            s["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        let reg = Registry::default();
        let res = reg.by_key(DEPLOYMENTS).expect("served");
        validate(&res, &d, None).expect("valid");
    }

    #[test]
    fn a_job_selects_its_pods_by_its_uid() {
        let mut j = json!({"metadata": {"name": "pi", "uid": "u9"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "x:1"}]}}}});
        default(JOBS, &mut j);
        assert_eq!(
            j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u9"
        );
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        assert_eq!(
            (
                j["spec"]["completions"].clone(),
                j["spec"]["parallelism"].clone()
            ),
            (json!(1), json!(1))
        );
        assert_eq!(j["spec"]["backoffLimit"], 6);
        let reg = Registry::default();
        validate(&reg.by_key(JOBS).expect("served"), &j, None).expect("valid");
    }

    #[test]
    fn kubernetes_errors_for_bad_workloads() {
        let reg = Registry::default();
        let res = reg.by_key(DEPLOYMENTS).expect("served");
        let msg =
            |d: &Value, cur: Option<&Value>| validate(&res, d, cur).expect_err("invalid").message;
        let mut missing = deployment(json!({"app": "web"}), Value::Null);
        default(DEPLOYMENTS, &mut missing);
        assert!(msg(&missing, None).contains("spec.selector: Required value"));
        let mut other = deployment(json!({"app": "web"}), json!({"matchLabels": {"app": "db"}}));
        default(DEPLOYMENTS, &mut other);
        assert!(
            msg(&other, None).contains("`selector` does not match template `labels`"),
            "{}",
            msg(&other, None)
        );
        let mut good = deployment(
            json!({"app": "web"}),
            json!({"matchLabels": {"app": "web"}}),
        );
        default(DEPLOYMENTS, &mut good);
        let mut moved = good.clone();
        moved["spec"]["selector"] = json!({"matchLabels": {"app": "web", "x": "y"}});
        moved["spec"]["template"]["metadata"]["labels"]["x"] = json!("y");
        assert!(msg(&moved, Some(&good)).contains("field is immutable"));
        let mut never = good.clone();
        never["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        assert!(msg(&never, None).contains("supported values: \"Always\""));
        let mut bare = good.clone();
        bare["spec"]["template"]["spec"]["containers"] = json!([]);
        assert!(msg(&bare, None).contains("spec.template.spec.containers: Required value"));
    }
}
