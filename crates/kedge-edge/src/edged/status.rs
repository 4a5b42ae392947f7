//! The pod status Edged reports: phase, conditions, container statuses, IPs, as kubelet
//! writes them. Pure: built from what the runtime shows and what Edged decided.

use serde_json::{Value, json};

use super::lifecycle::{ForPhase, phase};

/// A container state as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started: String,
    },
    Terminated {
        code: i32,
        reason: String,
        started: String,
        finished: String,
        id: String,
    },
}

impl Shown {
    pub fn waiting(reason: &str, message: impl Into<String>) -> Shown {
        Shown::Waiting {
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Shown::Waiting { reason, message } if message.is_empty() => {
                json!({"waiting": {"reason": reason}})
            }
            Shown::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            Shown::Running { started } => json!({"running": {"startedAt": started}}),
            Shown::Terminated {
                code,
                reason,
                started,
                finished,
                id,
            } => json!({"terminated": {
                "exitCode": code, "reason": reason, "startedAt": started,
                "finishedAt": finished, "containerID": id,
            }}),
        }
    }
}

/// One container of the pod.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// `containerd://<id>` of the latest container, if there is one.
    pub id: Option<String>,
    pub state: Shown,
    pub last: Option<Shown>,
    pub restart_count: u32,
    pub ready: bool,
    pub for_phase: ForPhase,
}

impl ContainerView {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "started": matches!(self.state, Shown::Running { .. }),
            "restartCount": self.restart_count,
            "state": self.state.to_json(),
            "lastState": self.last.as_ref().map_or(json!({}), Shown::to_json),
        });
        if let Some(id) = &self.id {
            v["containerID"] = json!(id);
        }
        v
    }
}

/// Where the pod runs.
pub struct Placement<'a> {
    pub host_ip: &'a str,
    /// Empty until the sandbox has an address.
    pub pod_ip: &'a str,
    pub start_time: &'a str,
    /// Why the pod has no sandbox, if it has none.
    pub sandbox_error: Option<&'a str>,
}

fn condition(kind: &str, ok: bool, reason: Option<&str>) -> Value {
    let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" }});
    if let (false, Some(r)) = (ok, reason) {
        c["reason"] = json!(r);
    }
    c
}

/// The pod's `status`.
pub fn pod_status(containers: &[ContainerView], at: &Placement) -> Value {
    let phases: Vec<ForPhase> = containers.iter().map(|c| c.for_phase).collect();
    let phase = phase(&phases);
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let not_ready = (!all_ready).then_some("ContainersNotReady");
    let mut status = json!({
        "phase": phase,
        "conditions": [
            condition("PodReadyToStartContainers", at.sandbox_error.is_none(), Some("SandboxNotReady")),
            condition("Initialized", true, None),
            condition("Ready", all_ready, not_ready),
            condition("ContainersReady", all_ready, not_ready),
            condition("PodScheduled", true, None),
        ],
        "hostIP": at.host_ip,
        "hostIPs": [{"ip": at.host_ip}],
        "startTime": at.start_time,
        "containerStatuses": containers.iter().map(ContainerView::to_json).collect::<Vec<_>>(),
    });
    if !at.pod_ip.is_empty() {
        status["podIP"] = json!(at.pod_ip);
        status["podIPs"] = json!([{"ip": at.pod_ip}]);
    }
    if let Some(e) = at.sandbox_error {
        status["message"] = json!(e);
    }
    status
}

/// A CRI timestamp (ns since the epoch) as Kubernetes writes it.
pub fn time_of(ns: i64) -> String {
    kedge_core::clock::rfc3339_of(
        jiff::Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: Shown, ready: bool, for_phase: ForPhase) -> ContainerView {
        ContainerView {
            name: "c".into(),
            image: "busybox".into(),
            image_id: "sha256:1".into(),
            id: Some("containerd://abc".into()),
            state,
            last: None,
            restart_count: 2,
            ready,
            for_phase,
        }
    }

    #[test]
    fn a_running_pod() {
        let at = Placement {
            host_ip: "10.0.0.1",
            pod_ip: "10.0.0.1",
            start_time: "t",
            sandbox_error: None,
        };
        let running = Shown::Running {
            started: time_of(1_000_000_000),
        };
        let s = pod_status(&[view(running, true, ForPhase::Running)], &at);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.0.0.1");
        assert_eq!(
            s["conditions"][2],
            json!({"type": "Ready", "status": "True"})
        );
        let c = &s["containerStatuses"][0];
        assert_eq!(c["state"]["running"]["startedAt"], "1970-01-01T00:00:01Z");
        assert_eq!(c["restartCount"], 2);
        assert_eq!(c["containerID"], "containerd://abc");
        assert_eq!(c["started"], true);
    }

    #[test]
    fn a_pod_waiting_for_its_image() {
        let at = Placement {
            host_ip: "h",
            pod_ip: "",
            start_time: "t",
            sandbox_error: None,
        };
        let waiting = Shown::waiting("ErrImageNeverPull", "not present");
        let s = pod_status(&[view(waiting, false, ForPhase::NotStarted)], &at);
        assert_eq!(s["phase"], "Pending");
        assert!(s.get("podIP").is_none());
        assert_eq!(s["conditions"][2]["reason"], "ContainersNotReady");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ErrImageNeverPull"
        );
    }
}
