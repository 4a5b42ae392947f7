//! Liveness and readiness probes: when a probe is due and how its results settle (kubelet's
//! thresholds) are pure; running one (exec in the container, HTTP GET, TCP connect) is below.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A probe's settings with kubelet's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay_ms: u64,
    pub period_ms: u64,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(p: &Probe) -> Timing {
        let secs =
            |v: Option<i32>, default: i32| u64::try_from(v.unwrap_or(default).max(0)).unwrap_or(0);
        Timing {
            initial_delay_ms: secs(p.initial_delay_seconds, 0) * 1000,
            period_ms: secs(p.period_seconds, 10).max(1) * 1000,
            timeout: Duration::from_secs(secs(p.timeout_seconds, 1).max(1)),
            success_threshold: secs(p.success_threshold, 1).max(1) as u32,
            failure_threshold: secs(p.failure_threshold, 3).max(1) as u32,
        }
    }
}

/// One probe of one container: its streak and settled result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    successes: u32,
    failures: u32,
    last_ms: Option<u64>,
    /// None until the thresholds settle it.
    pub result: Option<bool>,
}

impl State {
    /// Whether the probe should run now, for a container started at `started_ms`.
    pub fn due(&self, t: &Timing, started_ms: u64, now_ms: u64) -> bool {
        if now_ms < started_ms + t.initial_delay_ms {
            return false;
        }
        self.last_ms.is_none_or(|last| now_ms >= last + t.period_ms)
    }

    /// Records one run; the settled result.
    pub fn record(&mut self, ok: bool, t: &Timing, now_ms: u64) -> Option<bool> {
        self.last_ms = Some(now_ms);
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= t.success_threshold {
                self.result = Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= t.failure_threshold {
                self.result = Some(false);
            }
        }
        self.result
    }

    /// Milliseconds until the probe is due again.
    pub fn next_in(&self, t: &Timing, started_ms: u64, now_ms: u64) -> u64 {
        let at = self
            .last_ms
            .map_or(started_ms + t.initial_delay_ms, |l| l + t.period_ms);
        at.saturating_sub(now_ms)
    }
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Exec(Vec<String>),
    Http { url: String },
    Tcp { host: String, port: u16 },
}

fn port_of(p: &IntOrString, c: &Container) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    }
}

/// The check `p` describes for container `c` of a pod at `pod_ip`; None if it names nothing
/// kedge can run (gRPC probes, an unknown named port).
pub fn check(p: &Probe, c: &Container, pod_ip: &str) -> Option<Check> {
    if let Some(e) = &p.exec {
        return Some(Check::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(h) = &p.http_get {
        let host = h
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.into());
        let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
        let path = h.path.as_deref().unwrap_or("/");
        let sep = if path.starts_with('/') { "" } else { "/" };
        return Some(Check::Http {
            url: format!("{scheme}://{host}:{}{sep}{path}", port_of(&h.port, c)?),
        });
    }
    if let Some(t) = &p.tcp_socket {
        let host = t
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.into());
        return Some(Check::Tcp {
            host,
            port: port_of(&t.port, c)?,
        });
    }
    None
}

/// Runs an HTTP or TCP check (exec checks go through the runtime): success, or why not.
pub async fn run_network(check: &Check, http: &reqwest::Client, timeout: Duration) -> bool {
    match check {
        Check::Http { url } => {
            let r = tokio::time::timeout(timeout, http.get(url).send()).await;
            // kubelet: any status from 200 to 399 is a success.
            matches!(r, Ok(Ok(resp)) if (200..400).contains(&resp.status().as_u16()))
        }
        Check::Tcp { host, port } => {
            let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
            matches!(tokio::time::timeout(timeout, connect).await, Ok(Ok(_)))
        }
        Check::Exec(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).expect("probe")
    }

    #[test]
    fn results_settle_at_their_thresholds() {
        let t = Timing::of(&probe(
            json!({"periodSeconds": 2, "failureThreshold": 2, "initialDelaySeconds": 1}),
        ));
        let mut s = State::default();
        assert!(!s.due(&t, 0, 500), "initial delay");
        assert!(s.due(&t, 0, 1000));
        assert_eq!(s.record(true, &t, 1000), Some(true));
        assert!(!s.due(&t, 0, 2500), "period");
        assert_eq!(s.next_in(&t, 0, 2500), 500);
        assert_eq!(
            s.record(false, &t, 3000),
            Some(true),
            "one failure is not enough"
        );
        assert_eq!(s.record(false, &t, 5000), Some(false));
        assert_eq!(s.record(true, &t, 7000), Some(true));
    }

    #[test]
    fn checks_from_the_spec() {
        let c: Container = serde_json::from_value(
            json!({"name": "c", "ports": [{"name": "web", "containerPort": 8080}]}),
        )
        .expect("container");
        let http = probe(json!({"httpGet": {"port": "web", "path": "healthz"}}));
        assert_eq!(
            check(&http, &c, "10.0.0.2"),
            Some(Check::Http {
                url: "http://10.0.0.2:8080/healthz".into()
            })
        );
        let tcp = probe(json!({"tcpSocket": {"port": 22}}));
        assert_eq!(
            check(&tcp, &c, "h"),
            Some(Check::Tcp {
                host: "h".into(),
                port: 22
            })
        );
        let exec = probe(json!({"exec": {"command": ["cat", "/ready"]}}));
        assert_eq!(
            check(&exec, &c, "h"),
            Some(Check::Exec(vec!["cat".into(), "/ready".into()]))
        );
        assert_eq!(
            check(&probe(json!({"httpGet": {"port": "nope"}})), &c, "h"),
            None
        );
    }
}
