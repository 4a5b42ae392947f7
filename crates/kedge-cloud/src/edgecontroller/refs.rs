//! Which ConfigMaps and Secrets a pod uses: volumes (including projected), `env[].valueFrom`,
//! `envFrom`, and image pull secrets. Those, and only those, go to the pod's node.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod};

/// Names (in the pod's namespace) of the ConfigMaps and Secrets a pod references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refs {
    pub configmaps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

fn from_container(c: &Container, r: &mut Refs) {
    for e in c.env.iter().flatten() {
        if let Some(v) = &e.value_from {
            if let Some(k) = &v.config_map_key_ref {
                r.configmaps.insert(k.name.clone());
            }
            if let Some(k) = &v.secret_key_ref {
                r.secrets.insert(k.name.clone());
            }
        }
    }
    for f in c.env_from.iter().flatten() {
        if let Some(cm) = &f.config_map_ref {
            r.configmaps.insert(cm.name.clone());
        }
        if let Some(s) = &f.secret_ref {
            r.secrets.insert(s.name.clone());
        }
    }
}

pub fn of(pod: &Pod) -> Refs {
    let mut r = Refs::default();
    let Some(spec) = &pod.spec else { return r };
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        from_container(c, &mut r);
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            r.configmaps.insert(cm.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            r.secrets.insert(s);
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &p.config_map {
                r.configmaps.insert(cm.name.clone());
            }
            if let Some(s) = &p.secret {
                r.secrets.insert(s.name.clone());
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        r.secrets.insert(s.name.clone());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_every_kind_of_reference() {
        let pod: Pod = serde_json::from_value(json!({"spec": {
            "containers": [{"name": "c", "env": [
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}},
                {"name": "C", "value": "plain"}],
                "envFrom": [{"configMapRef": {"name": "cm-from"}}, {"secretRef": {"name": "s-from"}}]}],
            "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "cm-init"}}]}],
            "volumes": [{"name": "v1", "configMap": {"name": "cm-vol"}}, {"name": "v2", "secret": {"secretName": "s-vol"}},
                        {"name": "v3", "projected": {"sources": [{"configMap": {"name": "cm-proj"}}, {"secret": {"name": "s-proj"}}]}},
                        {"name": "v4", "emptyDir": {}}],
            "imagePullSecrets": [{"name": "s-pull"}]}})).expect("pod");
        let r = of(&pod);
        let cms: Vec<&str> = r.configmaps.iter().map(String::as_str).collect();
        let secrets: Vec<&str> = r.secrets.iter().map(String::as_str).collect();
        assert_eq!(cms, ["cm-env", "cm-from", "cm-init", "cm-proj", "cm-vol"]);
        assert_eq!(secrets, ["s-env", "s-from", "s-proj", "s-pull", "s-vol"]);
        assert_eq!(of(&Pod::default()), Refs::default());
    }
}
