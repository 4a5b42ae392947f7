//! One pod: its volumes, its sandbox, and its status from its containers.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kedge_proto::cri;
use serde_json::Value;

use super::{InRuntime, PodSync, Sync};
use crate::edged::cri::CriError;
use crate::edged::env::ConfigError;
use crate::edged::lifecycle::RestartPolicy;
use crate::edged::spec::{self, PodId};
use crate::edged::status::{self, Placement};
use crate::edged::volumes;

impl Sync {
    /// Brings one pod's sandbox and containers to what its spec says; its status.
    pub(super) async fn sync_pod(
        &mut self,
        pod: &Pod,
        id: &PodId,
        rt: InRuntime,
    ) -> Result<Option<Value>, CriError> {
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(None);
        };
        if self.stopping().contains_key(&id.uid) {
            return Ok(None);
        }
        let mut ps = PodSync {
            pod,
            id,
            policy: RestartPolicy::parse(spec.restart_policy.as_deref()),
            sandbox: None,
            sandbox_config: cri::PodSandboxConfig::default(),
            sandbox_error: None,
            pod_ip: String::new(),
            volumes: Ok(HashMap::new()),
        };
        self.ensure_sandbox(&mut ps, &rt).await?;
        let mut views = Vec::new();
        for c in &spec.containers {
            views.push(self.sync_container(&ps, c, &rt).await?);
        }
        // Containers of the pod that its spec no longer names (or of old sandboxes).
        for c in &rt.containers {
            let named = c.labels.get(spec::LABEL_CONTAINER);
            let wanted = spec.containers.iter().any(|s| Some(&s.name) == named);
            if !wanted || Some(&c.pod_sandbox_id) != ps.sandbox.as_ref() {
                self.cri
                    .remove_container(&c.id, spec::grace_seconds(pod))
                    .await?;
            }
        }
        let start = self.start_time(pod, &rt);
        let place = Placement {
            host_ip: &self.cfg.host_ip,
            pod_ip: &ps.pod_ip,
            start_time: &start,
            sandbox_error: ps.sandbox_error.as_deref(),
        };
        Ok(Some(status::pod_status(&views, &place)))
    }

    fn start_time(&mut self, pod: &Pod, rt: &InRuntime) -> String {
        let uid = PodId::of(pod).uid;
        self.start_times
            .entry(uid)
            .or_insert_with(|| {
                let first = rt.sandboxes.iter().map(|s| s.created_at).min();
                first.map_or_else(kedge_core::clock::rfc3339, status::time_of)
            })
            .clone()
    }

    /// The pod's volumes on disk, then a ready sandbox (the newest; older or dead ones go).
    async fn ensure_sandbox(
        &mut self,
        ps: &mut PodSync<'_>,
        rt: &InRuntime,
    ) -> Result<(), CriError> {
        ps.volumes = self.volumes(ps.pod, ps.id);
        let ready = cri::PodSandboxState::SandboxReady as i32;
        let mut sandboxes: Vec<&cri::PodSandbox> = rt.sandboxes.iter().collect();
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.metadata.as_ref().map_or(0, |m| m.attempt)));
        let attempt = sandboxes
            .first()
            .and_then(|s| s.metadata.as_ref())
            .map_or(0, |m| m.attempt + 1);
        let current = sandboxes
            .iter()
            .find(|s| s.state == ready)
            .map(|s| s.id.clone());
        for s in sandboxes.iter().filter(|s| Some(&s.id) != current.as_ref()) {
            self.cri.remove_sandbox(&s.id).await?;
        }
        let attempt = if current.is_some() {
            attempt.saturating_sub(1)
        } else {
            attempt
        };
        ps.sandbox_config =
            spec::sandbox_config(ps.pod, &self.cfg.node, attempt, &self.cfg.data_dir);
        let id = match current {
            Some(id) => id,
            None if self.finished(ps, rt) => return Ok(()),
            None => {
                let logs = spec::pod_dir(&self.cfg.data_dir, &ps.id.uid).join("logs");
                let _ = std::fs::create_dir_all(logs);
                match self.cri.run_sandbox(ps.sandbox_config.clone()).await {
                    Ok(id) => id,
                    Err(e) => {
                        tracing::warn!(pod = %ps.id.name, error = %e, "pod sandbox not created");
                        ps.sandbox_error =
                            Some(format!("creating the pod sandbox: {}", e.message()));
                        return Ok(());
                    }
                }
            }
        };
        ps.pod_ip = if spec::host_network(ps.pod) {
            self.cfg.host_ip.clone()
        } else {
            let st = self.cri.sandbox_status(&id).await?;
            st.network.map(|n| n.ip).unwrap_or_default()
        };
        ps.sandbox = Some(id);
        Ok(())
    }

    /// A pod whose sandbox is gone and whose containers all finished for good stays finished.
    fn finished(&self, ps: &PodSync, rt: &InRuntime) -> bool {
        ps.policy != RestartPolicy::Always
            && !rt.containers.is_empty()
            && self
                .reported
                .get(&ps.id.uid)
                .and_then(|s| s["phase"].as_str())
                .is_some_and(|p| p == "Succeeded" || p == "Failed")
    }

    fn volumes(&self, pod: &Pod, id: &PodId) -> Result<HashMap<String, PathBuf>, ConfigError> {
        let lookup = |kind: &str, name: &str| self.pods.object(&id.namespace, kind, name);
        // Volumes may name the pod's metadata only (downwardAPI), never its addresses.
        let fields = super::super::env::PodFields {
            pod,
            node: &self.cfg.node,
            pod_ip: "",
            host_ip: "",
        };
        let base = spec::pod_dir(&self.cfg.data_dir, &id.uid).join("volumes");
        let mut out = HashMap::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let plan = volumes::plan(v, &fields, &lookup)?;
            let path = volumes::materialise(&base.join(&v.name), &plan)
                .map_err(|e| ConfigError::Unsupported(format!("volume {}: {e}", v.name)))?;
            out.insert(v.name.clone(), path);
        }
        Ok(out)
    }
}
