//! A pod as the container runtime is asked for it: the CRI sandbox and container configs,
//! with kubelet's labels so `crictl` shows kedge's pods as it shows kubelet's, and kedge's node
//! label so several edges can share one runtime. Pure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use kedge_core::resource::DEFAULT_GRACE_SECONDS;
use kedge_proto::cri;
use sha2::Digest;

use super::env::ConfigError;

pub const LABEL_NODE: &str = "kedge.io/node";
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER: &str = "io.kubernetes.container.name";
/// The grace period a pod's containers get when it goes (read back when the pod has already
/// left the store).
pub const ANNOTATION_GRACE: &str = "io.kubernetes.pod.terminationGracePeriod";
/// The container's spec hash: a changed spec replaces the container.
pub const ANNOTATION_HASH: &str = "kedge.io/container-hash";

/// Who a pod is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodId {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodId {
    pub fn of(pod: &Pod) -> PodId {
        let m = &pod.metadata;
        PodId {
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
        }
    }

    /// The runtime labels of the pod's sandbox (and, with the container name, its containers).
    pub fn labels(&self, node: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_NODE.into(), node.into()),
            (LABEL_POD_NAME.into(), self.name.clone()),
            (LABEL_POD_NAMESPACE.into(), self.namespace.clone()),
            (LABEL_POD_UID.into(), self.uid.clone()),
        ])
    }
}

pub fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
}

/// Seconds the pod's containers get between SIGTERM and SIGKILL.
pub fn grace_seconds(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0)
}

/// Where a pod's files live under the edge's data directory.
pub fn pod_dir(data_dir: &Path, uid: &str) -> PathBuf {
    data_dir.join("pods").join(uid)
}

pub fn sandbox_config(
    pod: &Pod,
    node: &str,
    attempt: u32,
    data_dir: &Path,
) -> cri::PodSandboxConfig {
    let id = PodId::of(pod);
    let network = if host_network(pod) {
        cri::NamespaceMode::Node
    } else {
        cri::NamespaceMode::Pod
    };
    let security = cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            network: network as i32,
            pid: cri::NamespaceMode::Container as i32,
            ipc: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut annotations = HashMap::new();
    annotations.insert(ANNOTATION_GRACE.into(), grace_seconds(pod).to_string());
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: id.name.clone(),
            uid: id.uid.clone(),
            namespace: id.namespace.clone(),
            attempt,
        }),
        hostname: if host_network(pod) {
            String::new()
        } else {
            id.name.clone()
        },
        log_directory: pod_dir(data_dir, &id.uid)
            .join("logs")
            .display()
            .to_string(),
        labels: id.labels(node),
        annotations,
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(security),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The image pull policy, defaulted as the API server does (`Always` for `:latest` or no tag).
pub fn pull_policy(c: &Container) -> &str {
    if let Some(p) = c.image_pull_policy.as_deref() {
        return p;
    }
    let image = c.image.as_deref().unwrap_or("");
    let last = image.rsplit('/').next().unwrap_or(image);
    let tagged = last.contains(':') && !last.ends_with(":latest");
    if tagged || image.contains('@') {
        "IfNotPresent"
    } else {
        "Always"
    }
}

/// A stable hash of the container's spec.
pub fn container_hash(c: &Container) -> String {
    let text = serde_json::to_vec(c).unwrap_or_default();
    hex::encode(&sha2::Sha256::digest(&text)[..8])
}

/// The container's mounts: each volume mount at its host path (`volumes`: name → host path).
pub fn mounts(
    c: &Container,
    volumes: &HashMap<String, PathBuf>,
) -> Result<Vec<cri::Mount>, ConfigError> {
    c.volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let host = volumes.get(&m.name).ok_or_else(|| {
                ConfigError::Unsupported(format!(
                    "volume mount {}: no volume named {}",
                    m.mount_path, m.name
                ))
            })?;
            let sub = m.sub_path.as_deref().unwrap_or("");
            if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
                return Err(ConfigError::Unsupported(format!(
                    "subPath {sub:?} must stay inside its volume"
                )));
            }
            Ok(cri::Mount {
                container_path: m.mount_path.clone(),
                host_path: host.join(sub).display().to_string(),
                readonly: m.read_only == Some(true),
                ..Default::default()
            })
        })
        .collect()
}

/// What a container is started with.
pub struct Start<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub node: &'a str,
    pub attempt: u32,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<cri::Mount>,
}

pub fn container_config(s: &Start) -> cri::ContainerConfig {
    let c = s.container;
    let vars: std::collections::BTreeMap<String, String> = s.env.iter().cloned().collect();
    let expand = |v: &Option<Vec<String>>| {
        v.iter()
            .flatten()
            .map(|a| super::env::expand(a, &vars))
            .collect::<Vec<_>>()
    };
    let mut labels = PodId::of(s.pod).labels(s.node);
    labels.insert(LABEL_CONTAINER.into(), c.name.clone());
    let annotations = HashMap::from([
        (ANNOTATION_HASH.into(), container_hash(c)),
        (ANNOTATION_GRACE.into(), grace_seconds(s.pod).to_string()),
    ]);
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: s.attempt,
        }),
        image: Some(super::cri::image_spec(c.image.as_deref().unwrap_or(""))),
        command: expand(&c.command),
        args: expand(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: s
            .env
            .iter()
            .map(|(key, value)| cri::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts: s.mounts.clone(),
        labels,
        annotations,
        log_path: format!("{}_{}.log", c.name, s.attempt),
        stdin: c.stdin == Some(true),
        tty: c.tty == Some(true),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
            "spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 3, "containers": [{
                "name": "c", "image": "kedge.local/busybox:1", "command": ["sh", "-c"],
                "args": ["echo $(GREETING) > /out/x"],
                "volumeMounts": [{"name": "out", "mountPath": "/out", "subPath": "d"}]}]}}))
        .expect("pod")
    }

    #[test]
    fn sandbox_and_container_configs_carry_the_pod() {
        let p = pod();
        let sb = sandbox_config(&p, "n1", 0, Path::new("/data"));
        let md = sb.metadata.as_ref().expect("metadata");
        assert_eq!(
            (md.name.as_str(), md.namespace.as_str(), md.uid.as_str()),
            ("web", "shop", "u1")
        );
        assert_eq!(sb.labels[LABEL_NODE], "n1");
        assert_eq!(sb.annotations[ANNOTATION_GRACE], "3");
        assert_eq!(sb.log_directory, "/data/pods/u1/logs");
        let ns = sb
            .linux
            .and_then(|l| l.security_context?.namespace_options)
            .expect("ns");
        assert_eq!(ns.network, cri::NamespaceMode::Node as i32);

        let c = &p.spec.as_ref().expect("spec").containers[0];
        let vols = HashMap::from([("out".to_string(), PathBuf::from("/data/v"))]);
        let m = mounts(c, &vols).expect("mounts");
        assert_eq!(m[0].host_path, "/data/v/d");
        let start = Start {
            pod: &p,
            container: c,
            node: "n1",
            attempt: 2,
            env: vec![("GREETING".into(), "hi".into())],
            mounts: m,
        };
        let cc = container_config(&start);
        assert_eq!(cc.args, ["echo hi > /out/x"]);
        assert_eq!(cc.labels[LABEL_CONTAINER], "c");
        assert_eq!(cc.metadata.expect("md").attempt, 2);
        assert_eq!(cc.annotations[ANNOTATION_HASH], container_hash(c));
    }

    #[test]
    fn pull_policy_defaults_as_the_api_server() {
        let c = |image: &str| Container {
            image: Some(image.into()),
            ..Default::default()
        };
        assert_eq!(pull_policy(&c("busybox")), "Always");
        assert_eq!(pull_policy(&c("busybox:latest")), "Always");
        assert_eq!(pull_policy(&c("localhost:5000/busybox")), "Always");
        assert_eq!(pull_policy(&c("busybox:1.36")), "IfNotPresent");
        let never = Container {
            image_pull_policy: Some("Never".into()),
            ..c("busybox")
        };
        assert_eq!(pull_policy(&never), "Never");
    }

    #[test]
    fn mounts_need_their_volume_and_stay_inside_it() {
        let c: Container = serde_json::from_value(json!({"name": "c",
            "volumeMounts": [{"name": "v", "mountPath": "/m", "subPath": "../../etc"}]}))
        .expect("c");
        let vols = HashMap::from([("v".to_string(), PathBuf::from("/data/v"))]);
        assert!(mounts(&c, &vols).is_err());
        assert!(mounts(&c, &HashMap::new()).is_err());
    }
}
