//! Defaulting of new built-in objects, as kube-apiserver does it (its `SetDefaults_*` functions
//! and the admission plugins that fill fields in): any kubelet-like agent — a stock edgecore's
//! edged among them — relies on these fields being set (`nil pod.spec.enableServiceLinks` makes
//! edged refuse to start a container).

use serde_json::{Value, json};

/// Fills in what kube-apiserver would on a new pod.
pub fn pod(obj: &mut Value) {
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    pod_spec(&mut obj["spec"]);
    let qos = qos_class(&obj["spec"]);
    obj["status"] = json!({"phase": "Pending", "qosClass": qos});
}

/// A pod spec's defaults (a pod's, and a workload's pod template's).
pub fn pod_spec(spec: &mut Value) {
    let service_account = spec
        .get("serviceAccount")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    fill(
        spec,
        [
            ("restartPolicy", json!("Always")),
            ("terminationGracePeriodSeconds", json!(30)),
            ("dnsPolicy", json!("ClusterFirst")),
            ("schedulerName", json!("default-scheduler")),
            ("securityContext", json!({})),
            ("enableServiceLinks", json!(true)),
            ("serviceAccountName", json!(service_account)),
            ("priority", json!(0)),
            ("preemptionPolicy", json!("PreemptLowerPriority")),
        ],
    );
    let account = spec["serviceAccountName"].clone();
    fill(spec, [("serviceAccount", account)]);
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(container);
        }
    }
    if let Some(vs) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        vs.iter_mut().for_each(volume);
    }
}

/// A Secret without a type is `Opaque`.
pub fn secret(obj: &mut Value) {
    fill(obj, [("type", json!("Opaque"))]);
}

fn container(c: &mut Value) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let tag = image.rsplit('/').next().unwrap_or("");
    let latest = image.ends_with(":latest") || !(tag.contains(':') || image.contains('@'));
    let pull = if latest { "Always" } else { "IfNotPresent" };
    fill(
        c,
        [
            ("imagePullPolicy", json!(pull)),
            ("terminationMessagePath", json!("/dev/termination-log")),
            ("terminationMessagePolicy", json!("File")),
            ("resources", json!({})),
        ],
    );
    // Limits without requests request what they limit.
    if let Some(limits) = c["resources"]
        .get("limits")
        .and_then(Value::as_object)
        .cloned()
    {
        if !c["resources"]["requests"].is_object() {
            c["resources"]["requests"] = json!({});
        }
        for (k, v) in limits {
            fill(&mut c["resources"]["requests"], [(k.as_str(), v)]);
        }
    }
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            fill(p, [("protocol", json!("TCP"))]);
        }
    }
    if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
        for e in env {
            if let Some(f) = e.pointer_mut("/valueFrom/fieldRef") {
                fill(f, [("apiVersion", json!("v1"))]);
            }
        }
    }
}

fn volume(v: &mut Value) {
    for source in ["configMap", "secret", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(source).filter(|s| s.is_object()) {
            fill(s, [("defaultMode", json!(420))]);
        }
    }
    if let Some(h) = v.get_mut("hostPath").filter(|s| s.is_object()) {
        fill(h, [("type", json!(""))]);
    }
}

/// The pod's QoS class from its containers' requests and limits (Kubernetes' `GetPodQOS`, for
/// CPU and memory).
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| spec.get(*l).and_then(Value::as_array))
        .flatten()
        .collect();
    let of =
        |c: &Value, kind: &str, res: &str| c.pointer(&format!("/resources/{kind}/{res}")).cloned();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        for res in ["cpu", "memory"] {
            let (req, lim) = (of(c, "requests", res), of(c, "limits", res));
            any |= req.is_some() || lim.is_some();
            guaranteed &= lim.is_some() && (req.is_none() || req == lim);
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Sets each field `obj` does not have.
fn fill<'a>(obj: &mut Value, fields: impl IntoIterator<Item = (&'a str, Value)>) {
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    for (k, v) in fields {
        m.entry(k).or_insert(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_pod_gets_what_kube_apiserver_sets() {
        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "busybox",
            "ports": [{"containerPort": 80}],
            "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}],
            "volumes": [{"name": "v", "configMap": {"name": "cm"}}, {"name": "h", "hostPath": {"path": "/x"}}]}});
        pod(&mut p);
        let s = &p["spec"];
        assert_eq!(s["enableServiceLinks"], true);
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["schedulerName"], "default-scheduler");
        assert_eq!(s["securityContext"], json!({}));
        assert_eq!(s["serviceAccountName"], "default");
        assert_eq!(s["serviceAccount"], "default");
        assert_eq!(s["priority"], 0);
        let c = &s["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(s["volumes"][0]["configMap"]["defaultMode"], 420);
        assert_eq!(s["volumes"][1]["hostPath"]["type"], "");
        assert_eq!(
            p["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
    }

    #[test]
    fn what_the_user_set_is_kept() {
        let mut p = json!({"spec": {"enableServiceLinks": false, "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "nginx:1.25", "imagePullPolicy": "Never"},
                           {"name": "d", "image": "nginx:1.25"},
                           {"name": "e", "image": "reg:5000/app"}]}});
        pod(&mut p);
        assert_eq!(p["spec"]["enableServiceLinks"], false);
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        let cs = &p["spec"]["containers"];
        assert_eq!(cs[0]["imagePullPolicy"], "Never");
        assert_eq!(cs[1]["imagePullPolicy"], "IfNotPresent");
        // A registry port is not a tag.
        assert_eq!(cs[2]["imagePullPolicy"], "Always");
    }

    #[test]
    fn qos_follows_requests_and_limits() {
        let with = |resources: Value| {
            let mut p = json!({"spec": {"containers": [{"name": "c", "image": "x:1", "resources": resources}]}});
            pod(&mut p);
            p
        };
        let g = with(json!({"limits": {"cpu": "1", "memory": "1Gi"}}));
        assert_eq!(g["status"]["qosClass"], "Guaranteed");
        assert_eq!(
            g["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
        let b = with(json!({"requests": {"cpu": "100m"}}));
        assert_eq!(b["status"]["qosClass"], "Burstable");
    }

    #[test]
    fn a_secret_without_type_is_opaque() {
        let mut s = json!({"data": {}});
        secret(&mut s);
        assert_eq!(s["type"], "Opaque");
        let mut t = json!({"type": "kubernetes.io/tls"});
        secret(&mut t);
        assert_eq!(t["type"], "kubernetes.io/tls");
    }
}
