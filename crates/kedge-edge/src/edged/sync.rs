//! Edged's reconcile loop (the I/O half; decisions are in `lifecycle`, `spec`, `env`,
//! `volumes` and `status`).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use kedge_core::envelope::{Message, group, op};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use super::cri::{Cri, CriError};
use super::env::{self, ConfigError, PodFields};
use super::lifecycle::{Action, Backoff, ForPhase, Observed, RestartPolicy};
use super::spec::{self, PodId};
use super::status::{self, ContainerView, Placement, Shown};
use super::{EdgedConfig, Runtime, probe, volumes};
use crate::edgehub::outbox::Outbox;
use crate::metamanager::MetaStore;

/// Where Edged reads pods and their objects, and sends what it reports.
#[derive(Clone)]
pub struct Pods {
    pub meta: Arc<MetaStore>,
    pub outbox: Arc<Outbox>,
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
        self.meta.get(&key).ok().flatten()
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

fn now_ms() -> u64 {
    kedge_core::clock::now_ms()
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
            finished_ms: (s.finished_at / 1_000_000).max(0) as u64,
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
            if let Some(status) = self.sync_pod(pod, &id, rt).await?
                && self.reported.get(&id.uid) != Some(&status)
            {
                self.pods.report_status(&id, status.clone());
                self.reported.insert(id.uid.clone(), status);
            }
        }
        // What runs here but is no longer stored (deleted, also while the edge was offline).
        for (uid, rt) in by_uid {
            let grace = rt
                .sandboxes
                .iter()
                .find_map(|s| s.annotations.get(spec::ANNOTATION_GRACE)?.parse().ok())
                .unwrap_or(30);
            let id = PodId {
                namespace: String::new(),
                name: String::new(),
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

impl Sync {
    /// Brings one pod's sandbox and containers to what its spec says; its status.
    async fn sync_pod(
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
        let base = spec::pod_dir(&self.cfg.data_dir, &id.uid).join("volumes");
        let mut out = HashMap::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let plan = volumes::plan(v, &lookup)?;
            let path = volumes::materialise(&base.join(&v.name), &plan)
                .map_err(|e| ConfigError::Unsupported(format!("volume {}: {e}", v.name)))?;
            out.insert(v.name.clone(), path);
        }
        Ok(out)
    }
}

/// The runtime's latest two containers of one spec container (current, and the one before).
struct History {
    latest: Option<(cri::Container, cri::ContainerStatus)>,
    previous: Option<cri::ContainerStatus>,
}

impl Sync {
    async fn history(
        &self,
        sandbox: &str,
        name: &str,
        rt: &InRuntime,
    ) -> Result<History, CriError> {
        let mut mine: Vec<&cri::Container> = rt
            .containers
            .iter()
            .filter(|c| {
                c.pod_sandbox_id == sandbox
                    && c.labels.get(spec::LABEL_CONTAINER).map(String::as_str) == Some(name)
            })
            .collect();
        mine.sort_by_key(|c| std::cmp::Reverse(attempt_of(c)));
        // Only the latest two are kept (the previous one for `lastState`).
        for old in mine.iter().skip(2) {
            self.cri.remove_container(&old.id, 0).await?;
        }
        let latest = match mine.first() {
            Some(c) => Some(((*c).clone(), self.cri.container_status(&c.id).await?)),
            None => None,
        };
        let previous = match mine.get(1) {
            Some(c) => Some(self.cri.container_status(&c.id).await?),
            None => None,
        };
        Ok(History { latest, previous })
    }

    async fn sync_container(
        &mut self,
        ps: &PodSync<'_>,
        c: &Container,
        rt: &InRuntime,
    ) -> Result<ContainerView, CriError> {
        let key = format!("{}/{}", ps.id.uid, c.name);
        let mut view = ContainerView {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            id: None,
            state: Shown::waiting("ContainerCreating", ""),
            last: None,
            restart_count: 0,
            ready: false,
            for_phase: ForPhase::NotStarted,
        };
        let Some(sandbox) = ps.sandbox.clone() else {
            return Ok(view);
        };
        let h = self.history(&sandbox, &c.name, rt).await?;
        let mut obs = None;
        if let Some((ctr, st)) = &h.latest {
            let o = observed(st);
            let changed =
                ctr.annotations.get(spec::ANNOTATION_HASH) != Some(&spec::container_hash(c));
            view.id = Some(format!("containerd://{}", ctr.id));
            view.image_id = st.image_ref.clone();
            view.restart_count = attempt_of(ctr);
            view.last = h.previous.as_ref().map(terminated);
            view.for_phase = ForPhase::Running;
            match &o {
                Observed::Running => {
                    view.state = Shown::Running {
                        started: status::time_of(st.started_at),
                    };
                    let started_ms = (st.started_at / 1_000_000).max(0) as u64;
                    let (ready, live) = self.probe(ps, c, &ctr.id, started_ms).await;
                    view.ready = ready;
                    if !live {
                        tracing::info!(pod = %ps.id.name, container = %c.name, "liveness probe failed; stopping the container");
                        self.cri
                            .stop_container(&ctr.id, spec::grace_seconds(ps.pod))
                            .await?;
                        self.wake.notify_one();
                    }
                }
                Observed::Exited { code, .. } => {
                    view.state = terminated(st);
                    view.for_phase = match (ps.policy.restarts(*code), *code) {
                        (true, _) => ForPhase::Restarting,
                        (false, 0) => ForPhase::Succeeded,
                        (false, _) => ForPhase::Failed,
                    };
                }
                Observed::Created => {}
            }
            if changed && o == Observed::Running {
                // The spec changed: replace the container, now (not a crash, so no back-off).
                self.cri
                    .remove_container(&ctr.id, spec::grace_seconds(ps.pod))
                    .await?;
                self.wake.notify_one();
                return Ok(view);
            }
            obs = Some(o);
        }
        match self.backoff.decide(&key, obs.as_ref(), ps.policy, now_ms()) {
            Action::Keep => Ok(view),
            Action::BackOff { delay, remaining } => {
                self.note_due(remaining);
                if let Some((_, st)) = &h.latest {
                    view.last = Some(terminated(st));
                }
                let msg = format!(
                    "back-off {}s restarting failed container={} pod={}_{}({})",
                    delay.as_secs(),
                    c.name,
                    ps.id.name,
                    ps.id.namespace,
                    ps.id.uid
                );
                view.state = Shown::waiting("CrashLoopBackOff", msg);
                view.for_phase = ForPhase::Restarting;
                Ok(view)
            }
            Action::Start => {
                let crashed = matches!(obs, Some(Observed::Exited { .. }));
                if let Some((_, st)) = &h.latest {
                    view.last = Some(terminated(st));
                }
                let attempt = h
                    .latest
                    .as_ref()
                    .map_or(0, |(c, _)| attempt_of(c) + 1)
                    .max(self.attempts.get(&key).copied().unwrap_or(0));
                match self.start_container(ps, &sandbox, c, attempt).await {
                    Ok(id) => {
                        self.attempts.insert(key.clone(), attempt + 1);
                        if crashed {
                            self.backoff.restarted(&key, now_ms());
                        }
                        view.id = Some(format!("containerd://{id}"));
                        view.restart_count = attempt;
                        view.state = Shown::Running {
                            started: kedge_core::clock::rfc3339(),
                        };
                        view.ready = true;
                        view.for_phase = ForPhase::Running;
                        // Look again soon: the new container's real state, and old ones to remove.
                        self.wake.notify_one();
                    }
                    Err(waiting) => {
                        view.state = waiting;
                        if !crashed && h.latest.is_none() {
                            view.for_phase = ForPhase::NotStarted;
                        }
                    }
                }
                Ok(view)
            }
        }
    }

    /// Look again in `d` at the latest (a back-off ends, a probe is due).
    fn note_due(&mut self, d: std::time::Duration) {
        self.due = Some(self.due.map_or(d, |x| x.min(d)));
    }

    /// Runs the container's due probes; whether it is ready, and whether it is alive.
    async fn probe(
        &mut self,
        ps: &PodSync<'_>,
        c: &Container,
        id: &str,
        started_ms: u64,
    ) -> (bool, bool) {
        let (mut ready, mut live) = (true, true);
        for (kind, p) in [("ready", &c.readiness_probe), ("live", &c.liveness_probe)] {
            let Some(p) = p else { continue };
            let t = probe::Timing::of(p);
            let key = format!("{id}/{kind}");
            let mut st = self.probes.remove(&key).unwrap_or_default();
            if st.due(&t, started_ms, now_ms()) {
                let ok = self.run_check(p, c, id, &ps.pod_ip, t.timeout).await;
                st.record(ok, &t, now_ms());
            }
            self.note_due(std::time::Duration::from_millis(st.next_in(
                &t,
                started_ms,
                now_ms(),
            )));
            if kind == "ready" {
                ready = st.result == Some(true);
            } else {
                live = st.result != Some(false);
            }
            self.probes.insert(key, st);
        }
        (ready, live)
    }

    async fn run_check(
        &self,
        p: &k8s_openapi::api::core::v1::Probe,
        c: &Container,
        id: &str,
        pod_ip: &str,
        timeout: std::time::Duration,
    ) -> bool {
        match probe::check(p, c, pod_ip) {
            Some(probe::Check::Exec(cmd)) => {
                let r = self.cri.exec(id, cmd, timeout.as_secs() as i64).await;
                r.is_ok_and(|r| r.exit_code == 0)
            }
            Some(check) => probe::run_network(&check, &self.http, timeout).await,
            // gRPC probes are not run: they neither fail nor hold up the container.
            None => true,
        }
    }

    /// Image, environment and mounts, then create and start; what to show while it cannot.
    async fn start_container(
        &mut self,
        ps: &PodSync<'_>,
        sandbox: &str,
        c: &Container,
        attempt: u32,
    ) -> Result<String, Shown> {
        self.ensure_image(ps.id, c).await?;
        let config_error =
            |e: ConfigError| Shown::waiting("CreateContainerConfigError", e.to_string());
        let volumes = ps.volumes.as_ref().map_err(|e| config_error(e.clone()))?;
        let lookup = |kind: &str, name: &str| self.pods.object(&ps.id.namespace, kind, name);
        let fields = PodFields {
            pod: ps.pod,
            node: &self.cfg.node,
            pod_ip: &ps.pod_ip,
            host_ip: &self.cfg.host_ip,
        };
        let env = env::resolve(c, &fields, &lookup).map_err(config_error)?;
        let mounts = spec::mounts(c, volumes).map_err(config_error)?;
        let start = spec::Start {
            pod: ps.pod,
            container: c,
            node: &self.cfg.node,
            attempt,
            env,
            mounts,
        };
        let config = spec::container_config(&start);
        match self
            .cri
            .start_container(sandbox, config, ps.sandbox_config.clone())
            .await
        {
            Ok(id) => {
                tracing::info!(pod = %ps.id.name, container = %c.name, attempt, "container started");
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(pod = %ps.id.name, container = %c.name, error = %e, "container not started");
                Err(Shown::waiting("RunContainerError", e.message()))
            }
        }
    }

    /// The container's image, as its pull policy says; pulls that fail back off.
    async fn ensure_image(&mut self, id: &PodId, c: &Container) -> Result<(), Shown> {
        let image = c.image.as_deref().unwrap_or("");
        let present = self
            .cri
            .has_image(image)
            .await
            .map_err(|e| Shown::waiting("ErrImageInspect", e.message()))?;
        let policy = spec::pull_policy(c);
        if policy == "Never" {
            return if present {
                Ok(())
            } else {
                Err(Shown::waiting(
                    "ErrImageNeverPull",
                    format!("Container image \"{image}\" is not present with pull policy of Never"),
                ))
            };
        }
        if present && policy == "IfNotPresent" {
            return Ok(());
        }
        let key = format!("{}/{}/pull", id.uid, c.name);
        let last_failure = self.pull_failures.get(&key).map(|&at| Observed::Exited {
            code: 1,
            finished_ms: at,
        });
        if let Action::BackOff { .. } =
            self.backoff
                .decide(&key, last_failure.as_ref(), RestartPolicy::Always, now_ms())
        {
            return Err(Shown::waiting(
                "ImagePullBackOff",
                format!("Back-off pulling image \"{image}\""),
            ));
        }
        match self.cri.pull_image(image).await {
            Ok(_) => {
                self.pull_failures.remove(&key);
                Ok(())
            }
            // An edge is often offline: an image it has runs even when `Always` cannot pull.
            Err(e) if present => {
                tracing::warn!(image, error = %e, "image not pulled; running the local copy");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(image, error = %e, "image not pulled");
                self.pull_failures.insert(key.clone(), now_ms());
                self.backoff.restarted(&key, now_ms());
                Err(Shown::waiting("ErrImagePull", e.message()))
            }
        }
    }
}
