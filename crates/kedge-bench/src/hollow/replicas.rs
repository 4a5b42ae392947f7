//! `hollow-edges --replicas N`: the cloud as N `kedge cloud --kubeconfig` replicas against one
//! cluster (a `kedge cloud`'s embedded API stands in for it, as in the tests), the hollow nodes
//! spread over them by the edges' own rule (`servers::ordered_for`). Reported: the spread, each
//! replica's RSS and idle CPU, the cluster's, and with `--restart` how long the nodes of a
//! replica killed with SIGKILL take to be held by the others, whether any turned NotReady, and
//! what the nodes lacked afterwards.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kedge_edge::edgehub::servers;
use kube::api::Api;
use serde_json::json;

use super::{
    Args, Held, cloud_args, connect_all, cpu_secs, join_all, raise_fd_limit, readiness,
    start_cloud, wait_connected, wait_connected_below, wait_held, wait_ready,
};
use crate::api::{Server, print_summary, rss_kib, start_kedge};

fn start_replica(a: &Args, kubeconfig: &str, dir: &Path) -> anyhow::Result<Server> {
    let mut args = cloud_args(0, 0, 0);
    let replica = [
        "--kubeconfig",
        kubeconfig,
        "--peer-port",
        "0",
        "--peer-address",
        "127.0.0.1",
    ];
    args.extend(replica.map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_kedge(a.kedge.clone(), &args, dir)
}

/// `kedge token --kubeconfig`: a token every replica accepts.
fn cluster_token(a: &Args, kubeconfig: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new(crate::api::kedge_binary(a.kedge.clone())?)
        .args(["token", "--kubeconfig", kubeconfig])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kedge token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Sessions a replica holds (its `/metrics`).
async fn held_by(r: &Server) -> u64 {
    let url = r.endpoints.get("metrics").cloned().unwrap_or_default();
    let text = crate::api::http_get(&url).await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("kedge_cloudhub_connected_nodes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub(super) async fn run(a: Args, dir: tempfile::TempDir) -> anyhow::Result<()> {
    raise_fd_limit(a.count)?;
    let cluster = start_cloud(&a.kedge, &dir.path().join("cluster"), (0, 0, 0))?;
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let mut replicas = Vec::new();
    for i in 0..a.replicas {
        replicas.push(start_replica(
            &a,
            &kubeconfig,
            &dir.path().join(format!("replica{i}")),
        )?);
    }
    let token = cluster_token(&a, &kubeconfig)?;
    let join_url = format!("https://127.0.0.1:{}", replicas[0].port("join server")?);
    let started = Instant::now();
    let ids = join_all(&a, dir.path(), &token, &join_url).await?;
    let join_secs = started.elapsed().as_secs_f64();
    let names: Vec<String> = ids.iter().map(|(n, _)| n.clone()).collect();
    let client = cluster.client().await?;
    let state = crate::state::PerNode {
        pods: a.pods_per_node,
        configmaps: a.configmaps_per_node,
        devices: a.devices_per_node,
    };
    state.create(&client, &names, a.concurrency).await?;

    let hubs = replicas
        .iter()
        .map(|r| {
            Ok(servers::Cloud {
                host: "127.0.0.1".into(),
                hub_port: r.port("CloudHub")?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let up = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(Held::default());
    let started = Instant::now();
    let order = |node: &str| {
        let list = servers::ordered_for(node, hubs.clone());
        list.iter().map(servers::Cloud::hub).collect()
    };
    connect_all(ids, order, &up, &held)?;
    let connect = wait_connected(&up, a.count, Duration::from_secs(900), "connected").await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let all_ready = wait_ready(&nodes, a.count, started).await?;
    let want = a.count * a.per_node();
    wait_held(&held, want, started).await?;
    let mut spread = Vec::new();
    for r in &replicas {
        spread.push(held_by(r).await);
    }

    let pids: Vec<u32> = replicas.iter().map(|r| r.child.id()).collect();
    let cpu0: Vec<f64> = pids.iter().map(|p| cpu_secs(*p)).collect();
    let cluster_cpu0 = cpu_secs(cluster.child.id());
    tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
    let percent = |now: f64, then: f64| ((now - then) / a.idle_secs as f64 * 1000.0).round() / 10.0;
    let idle: Vec<f64> = pids
        .iter()
        .zip(&cpu0)
        .map(|(p, c)| percent(cpu_secs(*p), *c))
        .collect();
    let rss: Vec<u64> = pids.iter().map(|p| rss_kib(*p).0 / 1024).collect();
    let mut summary = json!({
        "nodes": a.count,
        "replicas": a.replicas,
        "joins_per_s": (a.count as f64 / join_secs).round(),
        "connect_s": connect.as_secs_f64(),
        "all_ready_s": all_ready.as_secs_f64(),
        "nodes_per_replica": spread,
        "replica_rss_mib": rss,
        "replica_idle_cpu_percent": idle,
        "cluster_rss_mib": rss_kib(cluster.child.id()).0 / 1024,
        "cluster_idle_cpu_percent": percent(cpu_secs(cluster.child.id()), cluster_cpu0),
    });
    if a.restart {
        let victim = replicas.remove(0);
        let moving = spread[0];
        drop(victim);
        let killed = Instant::now();
        wait_connected_below(&up, a.count).await;
        wait_connected(&up, a.count, Duration::from_secs(900), "held again").await?;
        let back = killed.elapsed();
        let mut worst = 0;
        for _ in 0..10 {
            worst = worst.max(readiness(&nodes).await?.1);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut after = Vec::new();
        for r in &replicas {
            after.push(held_by(r).await);
        }
        summary["kill_moved_nodes"] = json!(moving);
        summary["kill_all_held_again_s"] = json!(back.as_secs_f64());
        summary["kill_nodes_per_survivor"] = json!(after);
        summary["kill_not_ready_max"] = json!(worst);
        summary["kill_missing_objects"] =
            json!(want.saturating_sub(held.objects.load(Ordering::Relaxed)));
    }
    drop(replicas);
    print_summary(&summary, a.json)
}
