//! The Node object the edge registers and the status it reports: labels, addresses, capacity
//! and nodeInfo read from the host, and a Ready condition.

use serde_json::{Value, json};

use super::Runtime;

/// What the host looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub cpus: usize,
    pub memory_kib: u64,
    pub os_image: String,
    pub kernel: String,
    pub arch: String,
    pub machine_id: String,
}

impl Host {
    /// Reads the host (Linux `/proc`, `/etc/os-release`); missing facts stay empty.
    pub fn read() -> Host {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default();
        Host {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_kib,
            os_image,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            arch: std::env::consts::ARCH.to_string(),
            machine_id: read("/etc/machine-id").trim().to_string(),
        }
    }
}

fn goarch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The Node as the edge registers it.
pub fn node(name: &str, ip: &str, host: &Host, runtime: &Runtime, now: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "node-role.kubernetes.io/edge": "",
                "node-role.kubernetes.io/agent": "",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": std::env::consts::OS,
                "kubernetes.io/arch": goarch(&host.arch),
            },
        },
        "spec": {},
        "status": status(ip, host, runtime, now),
    })
}

/// The Ready condition: the edge reports, and its container runtime answers (a node without
/// one, `--cri-endpoint none`, is ready for devices and messages).
fn ready(runtime: &Runtime, now: &str) -> Value {
    let (ok, reason, message) = match runtime {
        Runtime::Up { .. } => (
            true,
            "EdgeReady",
            "kedge edge is posting ready status".into(),
        ),
        Runtime::Disabled => (
            true,
            "EdgeReady",
            "kedge edge is posting ready status; it runs no pods (no container runtime)".into(),
        ),
        Runtime::Unknown => (
            false,
            "ContainerRuntimeNotChecked",
            "the container runtime has not answered yet".into(),
        ),
        Runtime::Down { error } => (
            false,
            "ContainerRuntimeDown",
            format!("container runtime is down: {error}"),
        ),
    };
    json!({
        "type": "Ready", "status": if ok { "True" } else { "False" }, "reason": reason,
        "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now,
    })
}

/// The Node status.
/// A status update as KubeEdge's `NodeStatusRequest` (`{"UID","Status","ExtendResources"}`):
/// cloudcore decodes it into that and writes its `Status` whole — the bare status decoded to an
/// empty one and wiped the node's. kedge's cloud reads both shapes.
pub fn request(status: Value) -> Value {
    json!({"UID": "", "Status": status})
}

pub fn status(ip: &str, host: &Host, runtime: &Runtime, now: &str) -> Value {
    let pods = if *runtime == Runtime::Disabled {
        "0"
    } else {
        "110"
    };
    let capacity = json!({
        "cpu": host.cpus.to_string(),
        "memory": format!("{}Ki", host.memory_kib),
        "pods": pods,
    });
    let runtime_version = match runtime {
        Runtime::Up { version } => version.as_str(),
        _ => "",
    };
    json!({
        "conditions": [ready(runtime, now)],
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": ip}],
        "capacity": capacity,
        "allocatable": capacity,
        "nodeInfo": {
            "machineID": host.machine_id, "systemUUID": "", "bootID": "",
            "kernelVersion": host.kernel, "osImage": host.os_image,
            "containerRuntimeVersion": runtime_version, "kubeletVersion": concat!("v1.36.0-kedge-", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "", "operatingSystem": std::env::consts::OS, "architecture": goarch(&host.arch),
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
    })
}

/// Where node Leases live.
pub use kedge_core::resource::NODE_LEASE_NAMESPACE as LEASE_NAMESPACE;

/// The node's Lease as a renewal carries it. kedge's cloud renews the Lease itself from the
/// message alone; a stock cloudcore creates or updates the object sent, so it is a whole Lease
/// (an empty one was refused: "resource name may not be empty").
pub fn lease(node: &str, now_micro: &str) -> Value {
    serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "namespace": LEASE_NAMESPACE},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now_micro},
    })
}

/// kubelet's `nodeStatusReportFrequency`: an unchanged status is still sent this often.
pub const REPORT_EVERY_MS: u64 = 5 * 60 * 1000;

/// The status without its times, to tell a change from a heartbeat.
fn without_times(status: &Value) -> Value {
    let mut s = status.clone();
    for c in s["conditions"].as_array_mut().into_iter().flatten() {
        if let Some(c) = c.as_object_mut() {
            c.remove("lastHeartbeatTime");
            c.remove("lastTransitionTime");
        }
    }
    s
}

/// Whether `status` goes to the cloud now, given the last one sent and when (ms); otherwise
/// only the Lease is renewed (which is what keeps the node Ready).
pub fn needs_report(last: Option<&(Value, u64)>, status: &Value, now_ms: u64) -> bool {
    match last {
        None => true,
        Some((sent, at)) => {
            without_times(sent) != without_times(status)
                || now_ms.saturating_sub(*at) >= REPORT_EVERY_MS
        }
    }
}

/// The local address the edge uses to reach `server` (`host:port`), without sending anything.
pub fn local_ip_towards(server: &str) -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect(server)?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}

#[cfg(test)]
mod tests {
    /// cloudcore decodes a status update into `NodeStatusRequest` and writes its `Status`.
    #[test]
    fn a_status_update_is_kubeedges_node_status_request() {
        let status = serde_json::json!({"conditions": [{"type": "Ready", "status": "True"}]});
        let r = request(status.clone());
        assert_eq!(r["Status"], status);
        assert_eq!(r["UID"], "");
    }

    use super::*;

    #[test]
    fn a_renewal_carries_the_whole_lease() {
        let l = lease("n1", "2026-12-02T10:00:00.000000Z");
        assert_eq!(l["metadata"]["name"], "n1");
        assert_eq!(l["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(l["spec"]["holderIdentity"], "n1");
        assert_eq!(l["spec"]["renewTime"], "2026-12-02T10:00:00.000000Z");
    }

    fn host() -> Host {
        Host {
            cpus: 2,
            memory_kib: 1024,
            os_image: "Debian".into(),
            kernel: "6.1".into(),
            arch: "x86_64".into(),
            machine_id: "m".into(),
        }
    }

    #[test]
    fn a_node_says_who_and_what_it_is() {
        let host = host();
        let up = Runtime::Up {
            version: "containerd://1.6.20".into(),
        };
        let n = node(
            "kube-edge-1",
            "10.0.0.5",
            &host,
            &up,
            "2026-11-27T00:00:00Z",
        );
        assert_eq!(
            n["status"]["nodeInfo"]["containerRuntimeVersion"],
            "containerd://1.6.20"
        );
        assert_eq!(n["metadata"]["labels"]["node-role.kubernetes.io/edge"], "");
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/arch"], "amd64");
        assert_eq!(n["status"]["conditions"][0]["status"], "True");
        assert_eq!(n["status"]["capacity"]["memory"], "1024Ki");
        assert_eq!(n["status"]["addresses"][0]["address"], "10.0.0.5");
        let down = Runtime::Down {
            error: "connection refused".into(),
        };
        let s = status("10.0.0.5", &host, &down, "t");
        assert_eq!(s["conditions"][0]["status"], "False");
        assert!(
            s["conditions"][0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("connection refused")
        );
        let off = status("10.0.0.5", &host, &Runtime::Disabled, "t");
        assert_eq!(off["conditions"][0]["status"], "True");
        assert_eq!(off["capacity"]["pods"], "0");
    }

    #[test]
    fn unchanged_statuses_are_sent_every_five_minutes_only() {
        let host = host();
        let up = Runtime::Up {
            version: "containerd://1".into(),
        };
        let first = status("10.0.0.5", &host, &up, "2026-11-27T00:00:00Z");
        let last = (first, 0);
        let later = status("10.0.0.5", &host, &up, "2026-11-27T00:00:10Z");
        assert!(
            !needs_report(Some(&last), &later, 10_000),
            "only the heartbeat moved"
        );
        assert!(needs_report(Some(&last), &later, REPORT_EVERY_MS));
        let down = status("10.0.0.5", &host, &Runtime::Down { error: "x".into() }, "t");
        assert!(needs_report(Some(&last), &down, 10_000), "Ready changed");
        assert!(needs_report(None, &later, 0));
    }

    #[test]
    fn the_host_is_readable_here() {
        let h = Host::read();
        assert!(h.cpus >= 1);
        assert!(h.memory_kib > 0, "{h:?}");
        assert_eq!(local_ip_towards("127.0.0.1:9"), "127.0.0.1");
    }
}
