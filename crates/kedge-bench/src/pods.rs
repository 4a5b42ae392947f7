//! `kedge-bench pods`: pod start latency on a real container runtime. `kedge up` runs its edge on
//! the runtime given; pods (without `nodeName`: the scheduler places them) are created one at a
//! time, each timed from the create call to Running and Ready in the API — what `kubectl apply`
//! then `kubectl wait` sees — and deleted before the next, so the edge is idle for each.
//! The image must be on the runtime already (`scripts/containerd-sandbox` makes such a runtime).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

use crate::api::{print_summary, start_server_with};
use crate::stats::Latencies;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    runtime: crate::api::Runtime,
    /// Pods timed (after one untimed warm-up pod).
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// The kedge binary (default: next to this one).
    #[arg(long)]
    kedge: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

const WAIT: Duration = Duration::from_secs(120);

pub async fn run(a: Args) -> anyhow::Result<()> {
    let server = start_server_with(
        a.kedge.clone(),
        &["--cri-endpoint", &a.runtime.cri_endpoint],
    )?;
    let client = server.client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    tokio::time::timeout(WAIT, async {
        loop {
            let ready = nodes.list(&Default::default()).await.ok().is_some_and(|l| {
                l.items.iter().any(|n| {
                    n.status
                        .iter()
                        .flat_map(|s| s.conditions.iter().flatten())
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            });
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .context("the edge never became Ready")?;
    let pods: Api<Pod> = Api::default_namespaced(client);
    start_one(&pods, "warm-up", &a.runtime.image).await?;
    let mut lat = Latencies::default();
    for i in 0..a.pods {
        lat.push(start_one(&pods, &format!("start-{i}"), &a.runtime.image).await?);
        eprint!("\rpods started: {}/{}", i + 1, a.pods);
    }
    eprintln!();
    let summary = json!({
        "pods": a.pods,
        "image": a.runtime.image,
        "start_p50_ms": lat.quantile_ms(0.5),
        "start_p90_ms": lat.quantile_ms(0.9),
        "start_p99_ms": lat.quantile_ms(0.99),
        "start_max_ms": lat.quantile_ms(1.0),
    });
    print_summary(&summary, a.json)
}

/// Creates a pod, waits until it runs and is ready, deletes it and waits until it is gone;
/// the time from create to Running and Ready.
async fn start_one(pods: &Api<Pod>, name: &str, image: &str) -> anyhow::Result<Duration> {
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": {
        "hostNetwork": true, "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                        "command": ["sleep", "3600"]}]}}))?;
    let started = Instant::now();
    pods.create(&PostParams::default(), &pod).await?;
    tokio::time::timeout(
        WAIT,
        await_condition(pods.clone(), name, conditions::is_pod_running()),
    )
    .await
    .with_context(|| format!("{name} never ran"))??;
    tokio::time::timeout(WAIT, await_condition(pods.clone(), name, ready))
        .await
        .with_context(|| format!("{name} never became ready"))??;
    let took = started.elapsed();
    pods.delete(name, &DeleteParams::default()).await?;
    tokio::time::timeout(
        WAIT,
        await_condition(pods.clone(), name, conditions::is_deleted("")),
    )
    .await
    .with_context(|| format!("{name} never went"))??;
    Ok(took)
}

fn ready(p: Option<&Pod>) -> bool {
    p.and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
