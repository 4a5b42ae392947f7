//! One container of a pod: start, restart with back-off, replace, probe, and what it shows.

use k8s_openapi::api::core::v1::Container;
use kedge_proto::cri;

use super::{InRuntime, PodSync, Sync, attempt_of, now_ms, observed, terminated};
use crate::edged::cri::CriError;
use crate::edged::env::{self, ConfigError, PodFields};
use crate::edged::lifecycle::{Action, ForPhase, Observed, RestartPolicy};
use crate::edged::probe;
use crate::edged::spec::{self, PodId};
use crate::edged::status::{self, ContainerView, Shown};

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

    pub(super) async fn sync_container(
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
                    let started_ms = super::monotonic_of(st.started_at);
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
