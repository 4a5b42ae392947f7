//! Edged's reconcile loop (the I/O half; decisions are in `lifecycle`, `spec`, `env`,
//! `volumes`, `probe` and `status`): the pass over all pods and stopping pods here, one pod's
//! sandbox in `pod`, one container in `container`.

mod container;
mod pod;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use kedge_core::envelope::{Message, group, op};
use kedge_proto::cri;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use super::cri::{Cri, CriError};
use super::env::ConfigError;
use super::lifecycle::{Backoff, Observed, RestartPolicy};
use super::spec::{self, PodId};
use super::status::{self, Shown};
use super::{EdgedConfig, Runtime, probe};
use crate::edgehub::outbox::Outbox;
use crate::metamanager::MetaStore;

/// Where Edged reads pods and their objects, and sends what it reports.
#[derive(Clone)]
pub struct Pods {
    pub meta: Arc<MetaStore>,
    pub outbox: Arc<Outbox>,
    /// ConfigMaps and Secrets pods needed and the edge lacked (`edged::fetch`).
    pub missing: Arc<super::fetch::Missing>,
}

impl Pods {
    fn list(&self) -> Vec<Pod> {
        let keys = self.meta.keys("pod").unwrap_or_default();
        keys.iter()
            .filter_map(|k| self.meta.get(k).ok().flatten())
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect()
    }

    fn object(&self, namespace: &str, kind: &str, name: &str) -> Option<Value> {
        let key = kedge_core::resource::object(namespace, kind, name);
        let found = self.meta.get(&key).ok().flatten();
        if found.is_none() && matches!(kind, "configmap" | "secret") {
            self.missing.note(&key);
        }
        found
    }

    fn push(&self, m: Message, key: &str) {
        if let Err(e) = self.outbox.push(m, Some(key)) {
            tracing::warn!(error = %e, key, "pod report not queued");
        }
    }

    fn report_status(&self, id: &PodId, status: Value) {
        let content = json!({"UID": id.uid, "Name": id.name, "Status": status});
        let res = kedge_core::resource::object(&id.namespace, "podstatus", &id.name);
        let m = Message::new("edged", group::RESOURCE, op::UPDATE, &res, content);
        self.push(m, &format!("podstatus/{}/{}", id.namespace, id.name));
    }

    /// Asks the cloud to remove a pod whose containers are gone (graceful deletion's end).
    fn confirm_deletion(&self, id: &PodId) {
        let content = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
            "preconditions": {"uid": id.uid}});
        let res = kedge_core::resource::object(&id.namespace, "pod", &id.name);
        let m = Message::new("edged", group::RESOURCE, op::DELETE, &res, content);
        self.push(m, &format!("poddelete/{}", id.uid));
    }
}

/// Without a runtime: every pod marked for deletion is confirmed (once per UID).
pub(super) async fn confirm_deletions(pods: Pods, wake: Arc<Notify>) {
    let mut confirmed = HashSet::new();
    loop {
        let list = pods.list();
        for pod in list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
        {
            let id = PodId::of(pod);
            if confirmed.insert(id.uid.clone()) {
                pods.confirm_deletion(&id);
            }
        }
        let live: HashSet<String> = list.iter().map(|p| PodId::of(p).uid).collect();
        confirmed.retain(|u| live.contains(u));
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
        }
    }
}

/// Edged's timers (back-offs, probe periods) run on the monotonic clock.
fn now_ms() -> u64 {
    kedge_core::clock::monotonic_ms()
}

/// A runtime timestamp (wall-clock nanoseconds) on the monotonic clock of [`now_ms`]: its age
/// now, taken from the monotonic present.
fn monotonic_of(wall_nanos: i64) -> u64 {
    let wall_ms = (wall_nanos / 1_000_000).max(0) as u64;
    let age = kedge_core::clock::now_ms().saturating_sub(wall_ms);
    now_ms().saturating_sub(age)
}

/// The runtime's objects of one pod.
#[derive(Default)]
struct InRuntime {
    sandboxes: Vec<cri::PodSandbox>,
    containers: Vec<cri::Container>,
}

fn uid_label(labels: &HashMap<String, String>) -> String {
    labels.get(spec::LABEL_POD_UID).cloned().unwrap_or_default()
}

fn attempt_of(c: &cri::Container) -> u32 {
    c.metadata.as_ref().map_or(0, |m| m.attempt)
}

fn observed(s: &cri::ContainerStatus) -> Observed {
    match cri::ContainerState::try_from(s.state) {
        Ok(cri::ContainerState::ContainerRunning) => Observed::Running,
        Ok(cri::ContainerState::ContainerExited) => Observed::Exited {
            code: s.exit_code,
            finished_ms: monotonic_of(s.finished_at),
        },
        _ => Observed::Created,
    }
}

fn terminated(s: &cri::ContainerStatus) -> Shown {
    let reason = match (s.reason.as_str(), s.exit_code) {
        ("", 0) => "Completed",
        ("", _) => "Error",
        (r, _) => r,
    };
    Shown::Terminated {
        code: s.exit_code,
        reason: reason.into(),
        started: status::time_of(s.started_at),
        finished: status::time_of(s.finished_at),
        id: format!("containerd://{}", s.id),
    }
}

pub(super) struct Sync {
    cfg: EdgedConfig,
    cri: Cri,
    pods: Pods,
    wake: Arc<Notify>,
    backoff: Backoff,
    /// Next attempt number per container, so restart counts survive a lost container.
    attempts: HashMap<String, u32>,
    /// Probe streaks by `<container id>/<ready|live>`.
    probes: HashMap<String, probe::State>,
    http: reqwest::Client,
    /// The shortest back-off still running (when to look again).
    due: Option<std::time::Duration>,
    /// When each failing image pull last failed (`<uid>/<container>/pull`).
    pull_failures: HashMap<String, u64>,
    start_times: HashMap<String, String>,
    reported: HashMap<String, Value>,
    /// Pods being stopped (UID → done), by tasks of their own: a grace period must not hold up
    /// the other pods.
    stopping: Arc<Mutex<HashMap<String, bool>>>,
}

impl Sync {
    pub(super) fn new(cfg: EdgedConfig, cri: Cri, pods: Pods, wake: Arc<Notify>) -> Sync {
        let backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
        Sync {
            cfg,
            cri,
            pods,
            wake,
            backoff,
            attempts: HashMap::new(),
            pull_failures: HashMap::new(),
            due: None,
            probes: HashMap::new(),
            http: crate::servicebus::client(),
            start_times: HashMap::new(),
            reported: HashMap::new(),
            stopping: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub(super) async fn run(mut self, runtime: watch::Sender<Runtime>) {
        loop {
            // The runtime is up while it answers; a failure while syncing pods is logged (and
            // retried next pass) without making the node NotReady.
            let state = match self.cri.version().await {
                Ok(v) => {
                    if let Err(e) = self.once().await {
                        tracing::warn!(error = %e, "pods not synced; retrying");
                    }
                    Runtime::Up {
                        version: format!("{}://{}", v.runtime_name, v.runtime_version),
                    }
                }
                Err(e) => Runtime::Down {
                    error: e.to_string(),
                },
            };
            if *runtime.borrow() != state {
                match &state {
                    Runtime::Down { error } => {
                        tracing::warn!(%error, "container runtime unavailable")
                    }
                    Runtime::Up { version } => {
                        tracing::info!(%version, "container runtime available")
                    }
                    _ => {}
                }
                runtime.send_replace(state);
            }
            // Back to work at the next resync, or when the first back-off ends if sooner.
            let pause = self
                .due
                .take()
                .map_or(self.cfg.resync, |d| d.min(self.cfg.resync));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    fn stopping(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.stopping.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pass over every pod.
    async fn once(&mut self) -> Result<(), CriError> {
        let mine = HashMap::from([(spec::LABEL_NODE.to_string(), self.cfg.node.clone())]);
        let mut by_uid: HashMap<String, InRuntime> = HashMap::new();
        for s in self.cri.sandboxes(mine.clone()).await? {
            by_uid
                .entry(uid_label(&s.labels))
                .or_default()
                .sandboxes
                .push(s);
        }
        let containers = self.cri.containers(mine).await?;
        self.probes
            .retain(|k, _| containers.iter().any(|c| k.starts_with(&c.id)));
        for c in containers {
            by_uid
                .entry(uid_label(&c.labels))
                .or_default()
                .containers
                .push(c);
        }
        let pods = self.pods.list();
        let live: HashSet<String> = pods.iter().map(|p| PodId::of(p).uid).collect();
        for pod in &pods {
            let id = PodId::of(pod);
            let rt = by_uid.remove(&id.uid).unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() {
                self.stop(id, rt, spec::grace_seconds(pod), true);
                continue;
            }
            // One pod's trouble with the runtime does not hold up the others.
            match self.sync_pod(pod, &id, rt).await {
                Ok(Some(status)) if self.reported.get(&id.uid) != Some(&status) => {
                    self.pods.report_status(&id, status.clone());
                    self.reported.insert(id.uid.clone(), status);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(pod = %id.name, namespace = %id.namespace, error = %e, "pod not synced; retrying")
                }
            }
        }
        // What runs here but is no longer stored (deleted, also while the edge was offline).
        for (uid, rt) in by_uid {
            let grace = rt
                .sandboxes
                .iter()
                .find_map(|s| s.annotations.get(spec::ANNOTATION_GRACE)?.parse().ok())
                .unwrap_or(kedge_core::resource::DEFAULT_GRACE_SECONDS);
            let label = |k: &str| {
                let labels = rt.sandboxes.first().map(|s| &s.labels);
                labels.and_then(|l| l.get(k)).cloned().unwrap_or_default()
            };
            let id = PodId {
                namespace: label(spec::LABEL_POD_NAMESPACE),
                name: label(spec::LABEL_POD_NAME),
                uid,
            };
            self.stop(id, rt, grace, false);
        }
        self.forget_except(&live);
        Ok(())
    }

    fn forget_except(&mut self, live: &HashSet<String>) {
        let gone: Vec<String> = self
            .reported
            .keys()
            .chain(self.start_times.keys())
            .filter(|u| !live.contains(*u))
            .cloned()
            .collect();
        for uid in gone {
            self.reported.remove(&uid);
            self.start_times.remove(&uid);
            self.backoff.forget_pod(&uid);
            self.attempts.retain(|k, _| !k.starts_with(&uid));
            self.pull_failures.retain(|k, _| !k.starts_with(&uid));
        }
        let stopping = self.stopping.clone();
        let mut s = stopping.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|uid, done| !*done || live.contains(uid));
    }

    /// Stops a pod's containers within `grace` seconds and removes its sandboxes, in a task
    /// of its own; `confirm`: then ask the cloud to remove the pod.
    fn stop(&mut self, id: PodId, rt: InRuntime, grace: i64, confirm: bool) {
        {
            let mut s = self.stopping();
            if s.contains_key(&id.uid) {
                return;
            }
            s.insert(id.uid.clone(), false);
        }
        let (cri, pods, wake) = (self.cri.clone(), self.pods.clone(), self.wake.clone());
        let stopping = self.stopping.clone();
        let dir = spec::pod_dir(&self.cfg.data_dir, &id.uid);
        tokio::spawn(async move {
            let stops = rt
                .containers
                .iter()
                .map(|c| cri.stop_container(&c.id, grace));
            let mut result: Result<(), CriError> =
                futures::future::join_all(stops).await.into_iter().collect();
            for s in &rt.sandboxes {
                result = result.and(cri.remove_sandbox(&s.id).await);
            }
            let done = match result {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    if confirm {
                        pods.confirm_deletion(&id);
                    }
                    tracing::info!(pod = %format!("{}/{}", id.namespace, id.name), uid = %id.uid, "pod stopped");
                    true
                }
                Err(e) => {
                    tracing::warn!(uid = %id.uid, error = %e, "pod not stopped; will retry");
                    false
                }
            };
            let mut s = stopping.lock().unwrap_or_else(|p| p.into_inner());
            if done {
                s.insert(id.uid.clone(), true);
            } else {
                s.remove(&id.uid);
            }
            wake.notify_one();
        });
    }
}

/// What one sync of one pod found out.
struct PodSync<'a> {
    pod: &'a Pod,
    id: &'a PodId,
    policy: RestartPolicy,
    sandbox: Option<String>,
    sandbox_config: cri::PodSandboxConfig,
    sandbox_error: Option<String>,
    pod_ip: String,
    volumes: Result<HashMap<String, PathBuf>, ConfigError>,
}
