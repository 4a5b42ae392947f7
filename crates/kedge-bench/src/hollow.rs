//! `kedge-bench hollow-edges`: N simulated edge nodes against a real `kedge cloud`. Each is a
//! real wss + mTLS session (kedge's own EdgeHub client) with its own joined certificate; it
//! registers its Node (with its status), renews its Lease every 10 s, sends keepalives, and
//! stores and acknowledges what the cloud sends, reporting its pods Running as a hollow kubelet
//! would. With `--pods-per-node`, `--configmaps-per-node` and `--devices-per-node` each node
//! has that much state (created before the nodes connect; the pods use the node's ConfigMaps,
//! the devices share one DeviceModel). Reported: join and connect rates, the time until every
//! object is delivered, acknowledged and recorded, the cloud's RSS and idle CPU, and (with
//! `--restart`) how long all nodes take to reconnect and be resynced after the cloud is killed
//! with SIGKILL and restarted, what the resync sent that the nodes already had, what they
//! lacked after it, and whether any node turned NotReady meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Node;
use kedge_core::envelope::{Message, group, op};
use kedge_edge::edged::{Runtime, nodestatus};
use kedge_edge::edgehub::{certificate, client};
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::api::{Server, print_summary, progress, rss_kib, start_kedge};

#[derive(clap::Args)]
pub struct Args {
    /// Hollow edge nodes.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Joins and connection attempts in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds the nodes stay connected while the cloud's idle CPU is measured.
    #[arg(long, default_value_t = 20)]
    idle_secs: u64,
    /// Also kill -9 the cloud, restart it, and measure the reconnection.
    #[arg(long)]
    restart: bool,
    /// The kedge binary (default: next to this one).
    #[arg(long)]
    kedge: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Pods bound to each node (reported Running by it).
    #[arg(long, default_value_t = 0)]
    pods_per_node: usize,
    /// ConfigMaps per node (each used by the node's pods, so they go with them).
    #[arg(long, default_value_t = 0)]
    configmaps_per_node: usize,
    /// Devices bound to each node (all of one DeviceModel; each node also gets its device
    /// profile ConfigMap).
    #[arg(long, default_value_t = 0)]
    devices_per_node: usize,
    /// Then one Deployment of this many replicas (no nodeName: kedge's scheduler places them):
    /// the time until all are Running and available, and the cloud's CPU meanwhile.
    #[arg(long, default_value_t = 0)]
    deployment: usize,
    /// Run the cloud as this many `kedge cloud --kubeconfig` replicas on one cluster (a `kedge
    /// cloud`'s embedded API), the nodes spread over them; `--restart` then kills one replica
    /// with SIGKILL and times its nodes' move to the others.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Also time the dashboard's fleet page over the nodes, in a real headless Chromium
    /// (`/usr/bin/chromium`): first rows, every node listed, one page's fetch.
    #[arg(long)]
    dashboard: bool,
}

mod replicas;

impl Args {
    /// Objects each node is to hold.
    fn per_node(&self) -> usize {
        let devices = if self.devices_per_node > 0 {
            // The devices, their model and the node's device profile ConfigMap.
            self.devices_per_node + 2
        } else {
            0
        };
        self.pods_per_node + self.configmaps_per_node + devices
    }
}

/// How often a hollow node reports its status (kedge's edge default).
const STATUS_EVERY: Duration = Duration::from_secs(10);

fn cloud_args(api: u16, hub: u16, join: u16) -> Vec<String> {
    let mut a: Vec<String> = vec!["cloud".into(), "--bind".into(), "127.0.0.1".into()];
    for (flag, port) in [
        ("--api-port", api),
        ("--hub-port", hub),
        ("--https-port", join),
    ] {
        a.extend([flag.to_string(), port.to_string()]);
    }
    a.extend(
        [
            "--metrics-port",
            "0",
            "--router-port",
            "0",
            "--dashboard-port",
            "0",
        ]
        .map(String::from),
    );
    a
}

pub(crate) fn start_cloud(
    kedge: &Option<PathBuf>,
    dir: &Path,
    ports: (u16, u16, u16),
) -> anyhow::Result<Server> {
    let args = cloud_args(ports.0, ports.1, ports.2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_kedge(kedge.clone(), &args, dir)
}

/// CPU seconds (user + system) a process has used.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    // `rest` starts at field 3 (the state).
    let field = |n: usize| -> u64 {
        rest.split_whitespace()
            .nth(n - 3)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let ticks = field(14) + field(15);
    ticks as f64 / 100.0
}

/// What the hollow nodes hold, counted across all of them.
#[derive(Default)]
struct Held {
    /// Objects held (stored and acknowledged).
    objects: AtomicUsize,
    /// Messages for a version (or content) a node already held: sent again needlessly.
    resent: AtomicUsize,
    /// Messages received.
    received: AtomicUsize,
    /// Messages by kind and whether the node had it already: what a resync sent, and why.
    by_kind: std::sync::Mutex<std::collections::BTreeMap<String, (usize, usize)>>,
}

impl Held {
    fn count(&self, res: &str, had: bool) {
        let kind = kedge_core::resource::ObjectRef::parse(res)
            .map(|r| r.kind.to_string())
            .unwrap_or_default();
        let mut k = self.by_kind.lock().unwrap_or_else(|p| p.into_inner());
        let e = k.entry(kind).or_default();
        if had {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }

    /// `{kind: [new, already held]}` since the last call.
    fn take_kinds(&self) -> serde_json::Value {
        let k = std::mem::take(&mut *self.by_kind.lock().unwrap_or_else(|p| p.into_inner()));
        k.into_iter()
            .map(|(kind, (new, had))| (kind, json!([new, had])))
            .collect()
    }
}

/// One hollow node: registers on every (re)connection, reports status, stores and acks what the
/// cloud sends, and reports each new pod Running.
async fn hollow(
    node: String,
    hub: client::EdgeHub,
    mut down: tokio::sync::mpsc::Receiver<Message>,
    up: Arc<AtomicUsize>,
    held: Arc<Held>,
) {
    let host = nodestatus::Host::read();
    let mut connected = hub.connected();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + STATUS_EVERY.mul_f64(rand_fraction(&node)),
        STATUS_EVERY,
    );
    let mut was = false;
    // resource → (resourceVersion, content), as MetaManager keeps them.
    let mut store: std::collections::HashMap<String, (u64, serde_json::Value)> = Default::default();
    loop {
        tokio::select! {
            changed = connected.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *connected.borrow_and_update();
                if now && !was {
                    up.fetch_add(1, Ordering::Relaxed);
                    // A runtime "up": the node takes pods (110, as kubelet's default), as a hollow
                    // kubelet would.
                    let runtime = Runtime::Up { version: "hollow://1".into() };
                    let n = nodestatus::node(&node, "127.0.0.1", &host, &runtime, &kedge_core::clock::rfc3339());
                    let res = kedge_core::resource::object("", "node", &node);
                    hub.send(Message::new("edged", group::RESOURCE, op::INSERT, &res, n)).await;
                } else if !now && was {
                    up.fetch_sub(1, Ordering::Relaxed);
                }
                was = now;
            }
            m = down.recv() => match m {
                Some(m) if matches!(m.route.operation.as_str(), op::INSERT | op::UPDATE | op::PATCH | op::DELETE) => {
                    held.received.fetch_add(1, Ordering::Relaxed);
                    if let Some(report) = keep(&mut store, &m, &held) {
                        hub.send(report).await;
                    }
                    hub.send(m.ack()).await;
                }
                Some(_) => {}
                None => return,
            },
            // As a real edge whose status does not change: a Lease renewal each period.
            _ = tick.tick() => if was {
                let res = kedge_core::resource::object(nodestatus::LEASE_NAMESPACE, "lease", &node);
                hub.send(Message::new("edged", group::RESOURCE, op::UPDATE, &res, json!({}))).await;
            }
        }
    }
}

/// Stores `m` as MetaManager would; a pod new to the node is reported Running (the report).
fn keep(
    store: &mut std::collections::HashMap<String, (u64, serde_json::Value)>,
    m: &Message,
    held: &Held,
) -> Option<Message> {
    let rv: u64 = m.header.resource_version.parse().unwrap_or(0);
    let res = m.route.resource.clone();
    if m.route.operation == op::DELETE {
        if store.remove(&res).is_some() {
            held.objects.fetch_sub(1, Ordering::Relaxed);
        }
        return None;
    }
    match store.get(&res) {
        Some((had, content)) if *had >= rv || *content == m.content => {
            held.resent.fetch_add(1, Ordering::Relaxed);
            held.count(&res, true);
            return None;
        }
        Some(_) => held.count(&res, false),
        None => {
            held.objects.fetch_add(1, Ordering::Relaxed);
        }
    }
    let new = store.insert(res.clone(), (rv, m.content.clone())).is_none();
    let r = kedge_core::resource::ObjectRef::parse(&res).ok()?;
    if !new || r.kind() != kedge_core::resource::Kind::Pod {
        return None;
    }
    let status = json!({"phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
        "containerStatuses": [{"name": "main", "ready": true, "restartCount": 0, "image": "busybox",
            "imageID": "", "state": {"running": {"startedAt": kedge_core::clock::rfc3339()}}}]});
    let content =
        json!({"UID": m.content.pointer("/metadata/uid"), "Name": r.name, "Status": status});
    let at = kedge_core::resource::object(r.namespace, "podstatus", r.name.unwrap_or_default());
    Some(Message::new(
        "edged",
        group::RESOURCE,
        op::UPDATE,
        &at,
        content,
    ))
}

/// A stable fraction in [0, 1) per node, so status reports are spread over the period.
fn rand_fraction(node: &str) -> f64 {
    let h = node
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    (h % 1000) as f64 / 1000.0
}

async fn wait_connected(
    up: &AtomicUsize,
    want: usize,
    limit: Duration,
    what: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let n = up.load(Ordering::Relaxed);
        progress(what, n, want);
        if n >= want {
            eprintln!();
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "only {n} of {want} nodes connected after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (Ready, NotReady) edge nodes as the API shows them.
async fn readiness(nodes: &Api<Node>) -> anyhow::Result<(usize, usize)> {
    let list = nodes
        .list(&ListParams::default().labels("node-role.kubernetes.io/edge"))
        .await?;
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let r = list.items.iter().filter(|n| ready(n)).count();
    Ok((r, list.items.len() - r))
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    raise_fd_limit(a.count)?;
    let dir = tempfile::tempdir()?;
    let cloud_dir = dir.path().join("cloud");
    let launched = Instant::now();
    if a.replicas > 1 {
        return replicas::run(a, dir).await;
    }
    let mut cloud = start_cloud(&a.kedge, &cloud_dir, (0, 0, 0))?;
    let ready_after = launched.elapsed();
    let ports = (
        cloud.port("Kubernetes API")?,
        cloud.port("CloudHub")?,
        cloud.port("join server")?,
    );
    let token = crate::api::token(&a.kedge, &cloud_dir)?;
    let join_url = format!("https://127.0.0.1:{}", ports.2);

    let started = Instant::now();
    let ids = join_all(&a, dir.path(), &token, &join_url).await?;
    let join_secs = started.elapsed().as_secs_f64();

    // Their state, before they connect: the first connection delivers all of it.
    let names: Vec<String> = ids.iter().map(|(n, _)| n.clone()).collect();
    let client = cloud.client().await?;
    let state = crate::state::PerNode {
        pods: a.pods_per_node,
        configmaps: a.configmaps_per_node,
        devices: a.devices_per_node,
    };
    let state_secs = state.create(&client, &names, a.concurrency).await?;

    // Connect them all.
    let up = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(Held::default());
    let hub_addr = format!("127.0.0.1:{}", ports.1);
    let started = Instant::now();
    connect_all(ids, |_| vec![hub_addr.clone()], &up, &held)?;
    let connect = wait_connected(&up, a.count, Duration::from_secs(600), "connected").await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let all_ready = wait_ready(&nodes, a.count, started).await?;
    let want = a.count * a.per_node();
    let delivered = wait_held(&held, want, started).await?;
    let metrics = cloud.endpoints.get("metrics").cloned().unwrap_or_default();
    let recorded = wait_settled(&metrics, want, started).await?;

    // Idle: keepalives, status reports, lease renewals.
    let pid = cloud.child.id();
    let cpu0 = cpu_secs(pid);
    tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
    let idle_cpu = (cpu_secs(pid) - cpu0) / a.idle_secs as f64 * 100.0;
    let (rss, peak) = rss_kib(pid);

    let mut summary = json!({
        "nodes": a.count,
        "cloud_ready_ms": ready_after.as_millis(),
        "joins_per_s": (a.count as f64 / join_secs).round(),
        "connect_s": connect.as_secs_f64(),
        "connects_per_s": (a.count as f64 / connect.as_secs_f64()).round(),
        "all_ready_s": all_ready.as_secs_f64(),
        "objects_per_node": a.per_node(),
        "objects_created_s": state_secs,
        "all_delivered_s": delivered.as_secs_f64(),
        "all_recorded_s": recorded.as_secs_f64(),
        "resent_at_first_connect": held.resent.load(Ordering::Relaxed),
        "first_connect_kinds_new_held": held.take_kinds(),
        "cloud_rss_mib": rss / 1024,
        "cloud_peak_rss_mib": peak / 1024,
        "cloud_rss_per_node_kib": rss / a.count.max(1) as u64,
        "cloud_idle_cpu_percent": (idle_cpu * 10.0).round() / 10.0,
    });
    if a.dashboard {
        let url = cloud
            .endpoints
            .get("dashboard")
            .cloned()
            .unwrap_or_default();
        let token = crate::dashboard::kubeconfig_token(&cloud.kubeconfig)?;
        let count = a.count;
        let timings =
            tokio::task::spawn_blocking(move || crate::dashboard::measure(&url, &token, count));
        summary["dashboard"] = timings.await??;
    }
    if a.deployment > 0 {
        let (secs, cpu, spread) = deployment(&client, a.deployment, pid).await?;
        summary["deployment_replicas"] = json!(a.deployment);
        summary["deployment_all_available_s"] = json!(secs);
        summary["deployment_cloud_cpu_s"] = json!(cpu);
        summary["deployment_pods_per_node_min_max"] = json!(spread);
    }
    if a.restart {
        drop(cloud);
        let down_at = Instant::now();
        let (resent, received) = (
            held.resent.load(Ordering::Relaxed),
            held.received.load(Ordering::Relaxed),
        );
        wait_connected_below(&up, a.count).await;
        cloud = start_cloud(&a.kedge, &cloud_dir, ports)?;
        let back = wait_connected(&up, a.count, Duration::from_secs(600), "reconnected").await?;
        let total = down_at.elapsed();
        let metrics = cloud.endpoints.get("metrics").cloned().unwrap_or_default();
        let resynced = wait_settled(&metrics, want, down_at).await?;
        summary["restart_resynced_s"] = json!(resynced.as_secs_f64());
        summary["restart_resent"] = json!(held.resent.load(Ordering::Relaxed) - resent);
        summary["restart_kinds_changed_held"] = held.take_kinds();
        summary["restart_messages"] = json!(held.received.load(Ordering::Relaxed) - received);
        summary["restart_missing"] =
            json!(want.saturating_sub(held.objects.load(Ordering::Relaxed)));
        let client = cloud.client().await?;
        let nodes: Api<Node> = Api::all(client);
        // Watch for NotReady for a while after everyone is back.
        let mut worst = 0;
        for _ in 0..10 {
            worst = worst.max(readiness(&nodes).await?.1);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        summary["restart_reconnect_s"] = json!(back.as_secs_f64());
        summary["restart_total_s"] = json!(total.as_secs_f64());
        summary["restart_not_ready_max"] = json!(worst);
        let (rss, _) = rss_kib(cloud.child.id());
        summary["restarted_cloud_rss_mib"] = json!(rss / 1024);
    }
    print_summary(&summary, a.json)
}

/// Starts every node's session with the CloudHub replicas `servers` lists for it, each from an
/// address of its own (127.0.x.y), as a real fleet connects.
fn connect_all(
    ids: Vec<(String, kedge_pki::node::Identity)>,
    servers: impl Fn(&str) -> Vec<String>,
    up: &Arc<AtomicUsize>,
    held: &Arc<Held>,
) -> anyhow::Result<()> {
    for (i, (node, id)) in ids.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut hcfg = client::HubConfig::new("", &node);
        hcfg.servers = servers(&node);
        hcfg.source = Some(std::net::IpAddr::from([
            127,
            0,
            (i / 250) as u8,
            (i % 250 + 2) as u8,
        ]));
        let hub = client::spawn(hcfg, id, tx)?;
        tokio::spawn(hollow(node, hub, rx, up.clone(), held.clone()));
    }
    Ok(())
}

/// Joins `a.count` nodes (`hollow-<i>`) through `join_url`: one certificate each, kept under
/// `dir` for the run.
async fn join_all(
    a: &Args,
    dir: &Path,
    token: &str,
    join_url: &str,
) -> anyhow::Result<Vec<(String, kedge_pki::node::Identity)>> {
    let joined = AtomicUsize::new(0);
    let ids: Vec<_> = stream::iter(0..a.count)
        .map(|i| {
            let (node, pki) = (format!("hollow-{i}"), dir.join(format!("n{i}")));
            let joined = &joined;
            async move {
                let j = certificate::Join {
                    server: join_url,
                    node: &node,
                    token,
                    dir: &pki,
                };
                let id = certificate::join(&j)
                    .await
                    .with_context(|| format!("{node} joining"))?;
                let n = joined.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(100) {
                    progress("joined", n, a.count);
                }
                anyhow::Ok((node, id))
            }
        })
        .buffer_unordered(a.concurrency)
        .try_collect()
        .await?;
    eprintln!();
    Ok(ids)
}

/// Creates one Deployment of `replicas` and waits until all are available; the seconds that
/// took, the cloud's CPU seconds meanwhile, and the fewest and most pods a node got.
async fn deployment(
    client: &kube::Client,
    replicas: usize,
    cloud_pid: u32,
) -> anyhow::Result<(f64, f64, [usize; 2])> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "bench"}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": "bench"}},
        "template": {"metadata": {"labels": {"app": "bench"}}, "spec": {"hostNetwork": true,
            "containers": [{"name": "main", "image": "kedge.local/hollow:1"}]}}}}))?;
    let api: Api<Deployment> = Api::default_namespaced(client.clone());
    let cpu0 = cpu_secs(cloud_pid);
    let started = Instant::now();
    api.create(&Default::default(), &d).await?;
    loop {
        let d = api.get("bench").await?;
        let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0) as usize;
        progress("replicas available", available, replicas);
        if available >= replicas {
            eprintln!();
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "only {available} of {replicas} replicas available"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(cloud_pid) - cpu0;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut per_node = std::collections::HashMap::<String, usize>::new();
    for p in pods
        .list(&ListParams::default().labels("app=bench"))
        .await?
        .items
    {
        if let Some(n) = p.spec.and_then(|s| s.node_name) {
            *per_node.entry(n).or_insert(0) += 1;
        }
    }
    let min = per_node.values().min().copied().unwrap_or(0);
    let max = per_node.values().max().copied().unwrap_or(0);
    Ok((secs, cpu, [min, max]))
}

/// Waits until the nodes hold `want` objects in all.
async fn wait_held(held: &Held, want: usize, since: Instant) -> anyhow::Result<Duration> {
    loop {
        let n = held.objects.load(Ordering::Relaxed);
        progress("objects held by the nodes", n, want);
        if n >= want {
            eprintln!();
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            since.elapsed() < Duration::from_secs(1800),
            "the nodes hold only {n} of {want} objects"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the cloud has `want` acknowledged objects, all written as ObjectSyncs, and has
/// nothing left to send (its `/metrics`: records, unrecorded acks, pending and in-flight
/// deliveries).
async fn wait_settled(metrics: &str, want: usize, since: Instant) -> anyhow::Result<Duration> {
    loop {
        let text = crate::api::http_get(metrics).await.unwrap_or_default();
        let read = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let records = read("kedge_downstream_records") as usize;
        let busy = read("kedge_downstream_pending")
            + read("kedge_downstream_inflight")
            + read("kedge_downstream_unrecorded");
        progress("objects recorded by the cloud", records, want);
        if records >= want && busy == 0 {
            eprintln!();
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            since.elapsed() < Duration::from_secs(1800),
            "the cloud recorded {records} of {want} objects ({busy} deliveries under way)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the cloud's death is noticed (sessions drop).
async fn wait_connected_below(up: &AtomicUsize, count: usize) {
    let started = Instant::now();
    while up.load(Ordering::Relaxed) >= count && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_ready(nodes: &Api<Node>, count: usize, since: Instant) -> anyhow::Result<Duration> {
    loop {
        let (ready, _) = readiness(nodes).await?;
        progress("Ready in the API", ready, count);
        if ready >= count {
            eprintln!();
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            since.elapsed() < Duration::from_secs(900),
            "only {ready} of {count} nodes Ready"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Each node holds a socket here and one at the cloud: the open-files limit must allow both.
fn raise_fd_limit(count: usize) -> anyhow::Result<()> {
    let want = (count as u64) * 2 + 1024;
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if soft < want {
        let new = want.min(hard);
        rlimit::setrlimit(rlimit::Resource::NOFILE, new, hard)?;
        if new < want {
            eprintln!(
                "note: the open-files limit is {hard}; {count} nodes need about {want} (raise it with ulimit -Hn)"
            );
        }
    }
    Ok(())
}
