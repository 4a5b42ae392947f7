//! What `kubectl top` shows of this node: the node's CPU (from `/proc/stat`) and memory working
//! set (`/proc/meminfo`), and each running container's from the runtime (CRI
//! `ListContainerStats`). CPU is a rate, so it is measured over a short window between two
//! samples; the arithmetic is pure.

use std::collections::BTreeMap;
use std::time::Duration;

use kedge_proto::cri;
use kedge_stream::request::{ContainerStats, NodeStats, PodStats, Usage};

use super::cri::{Cri, CriError};
use super::spec;

/// The window CPU rates are measured over.
pub const WINDOW: Duration = Duration::from_millis(250);

/// Linux's USER_HZ: `/proc/stat` counts in hundredths of a second.
const USER_HZ: u64 = 100;

/// CPU time spent busy (all but idle and iowait) in nanoseconds, from `/proc/stat`'s first line.
pub fn busy_ns(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle) * (1_000_000_000 / USER_HZ))
}

/// Memory in use (`MemTotal - MemAvailable`) in bytes, from `/proc/meminfo`.
pub fn working_set(meminfo: &str) -> Option<u64> {
    let kb = |key: &str| -> Option<u64> {
        meminfo
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(kb("MemTotal:")?.saturating_sub(kb("MemAvailable:")?) * 1024)
}

/// Nanocores used between two cumulative CPU times `elapsed` apart.
pub fn nano_cores(before_ns: u64, after_ns: u64, elapsed: Duration) -> u64 {
    let ns = elapsed.as_nanos().max(1);
    (u128::from(after_ns.saturating_sub(before_ns)) * 1_000_000_000 / ns) as u64
}

struct Sample {
    at: tokio::time::Instant,
    node_cpu: u64,
    containers: Vec<cri::ContainerStats>,
}

async fn sample(cri: &Cri) -> Result<Sample, CriError> {
    let stat = tokio::fs::read_to_string("/proc/stat")
        .await
        .unwrap_or_default();
    Ok(Sample {
        at: tokio::time::Instant::now(),
        node_cpu: busy_ns(&stat).unwrap_or(0),
        containers: cri.container_stats().await?,
    })
}

/// Measures the node and its containers over [`WINDOW`].
pub async fn collect(cri: &Cri) -> Result<NodeStats, CriError> {
    let first = sample(cri).await?;
    tokio::time::sleep(WINDOW).await;
    let second = sample(cri).await?;
    let elapsed = second.at - first.at;
    let meminfo = tokio::fs::read_to_string("/proc/meminfo")
        .await
        .unwrap_or_default();
    Ok(NodeStats {
        time: jiff::Timestamp::now().to_string(),
        window_ms: elapsed.as_millis() as u64,
        usage: Usage {
            cpu_nano_cores: nano_cores(first.node_cpu, second.node_cpu, elapsed),
            memory_bytes: working_set(&meminfo).unwrap_or(0),
        },
        pods: pods(&first.containers, &second.containers, elapsed),
    })
}

fn cpu_ns(c: &cri::ContainerStats) -> Option<u64> {
    c.cpu
        .as_ref()?
        .usage_core_nano_seconds
        .as_ref()
        .map(|v| v.value)
}

/// Each pod's containers with their usage: the CPU between the two samples, the memory of the
/// second. Containers without CPU figures (not running) are left out.
fn pods(
    before: &[cri::ContainerStats],
    after: &[cri::ContainerStats],
    elapsed: Duration,
) -> Vec<PodStats> {
    let mut by_pod: BTreeMap<(String, String), Vec<ContainerStats>> = BTreeMap::new();
    for c in after {
        let (Some(attrs), Some(now)) = (&c.attributes, cpu_ns(c)) else {
            continue;
        };
        let label = |k: &str| attrs.labels.get(k).cloned().unwrap_or_default();
        let then = before
            .iter()
            .find(|b| b.attributes.as_ref().is_some_and(|a| a.id == attrs.id))
            .and_then(cpu_ns)
            .unwrap_or(now);
        let name = attrs
            .metadata
            .as_ref()
            .map_or_else(|| label(spec::LABEL_CONTAINER), |m| m.name.clone());
        let memory = c
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref())
            .map_or(0, |v| v.value);
        let key = (
            label(spec::LABEL_POD_NAMESPACE),
            label(spec::LABEL_POD_NAME),
        );
        if key.1.is_empty() {
            continue;
        }
        by_pod.entry(key).or_default().push(ContainerStats {
            name,
            usage: Usage {
                cpu_nano_cores: nano_cores(then, now, elapsed),
                memory_bytes: memory,
            },
        });
    }
    by_pod
        .into_iter()
        .map(|((namespace, name), containers)| PodStats {
            namespace,
            name,
            containers,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_figures_from_proc() {
        let stat = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n";
        assert_eq!(busy_ns(stat), Some(160 * 10_000_000));
        assert_eq!(busy_ns("nothing"), None);
        let mem = "MemTotal:       16000 kB\nMemFree: 1 kB\nMemAvailable:    4000 kB\n";
        assert_eq!(working_set(mem), Some(12000 * 1024));
        assert_eq!(
            nano_cores(0, 500_000_000, Duration::from_secs(1)),
            500_000_000,
            "half a core"
        );
        assert_eq!(
            nano_cores(10, 5, Duration::from_secs(1)),
            0,
            "never negative"
        );
    }

    fn stats(id: &str, pod: &str, cpu: Option<u64>, mem: u64) -> cri::ContainerStats {
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: id.into(),
                metadata: Some(cri::ContainerMetadata {
                    name: format!("c-{id}"),
                    attempt: 0,
                }),
                labels: [
                    (spec::LABEL_POD_NAMESPACE.to_string(), "default".to_string()),
                    (spec::LABEL_POD_NAME.to_string(), pod.to_string()),
                ]
                .into(),
                annotations: Default::default(),
            }),
            cpu: cpu.map(|v| cri::CpuUsage {
                usage_core_nano_seconds: Some(cri::UInt64Value { value: v }),
                ..Default::default()
            }),
            memory: Some(cri::MemoryUsage {
                working_set_bytes: Some(cri::UInt64Value { value: mem }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn containers_group_by_pod_with_their_rates() {
        let before = [stats("a", "web", Some(1_000), 0)];
        let after = [
            stats("a", "web", Some(251_000_000), 2048),
            stats("b", "web", Some(7), 1024),
            stats("x", "gone", None, 0),
        ];
        let pods = pods(&before, &after, Duration::from_millis(250));
        assert_eq!(
            pods.len(),
            1,
            "a container without CPU figures is not running"
        );
        let web = &pods[0];
        assert_eq!(
            (web.namespace.as_str(), web.name.as_str()),
            ("default", "web")
        );
        assert_eq!(web.containers[0].usage.cpu_nano_cores, 1_003_996_000);
        assert_eq!(web.containers[0].usage.memory_bytes, 2048);
        assert_eq!(
            web.containers[1].usage.cpu_nano_cores, 0,
            "first seen in the second sample: no rate yet"
        );
    }
}
