//! `kedge-bench api`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use serde_json::json;

use crate::stats::Latencies;

#[derive(clap::Args)]
pub struct Args {
    /// Devices to create.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Concurrent create requests.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Full lists of all devices to time.
    #[arg(long, default_value_t = 20)]
    lists: usize,
    /// Concurrent watchers for the fan-out test.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Changes made while the watchers watch.
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// The kedge binary (default: next to this one).
    #[arg(long)]
    kedge: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub struct Server {
    pub child: Child,
    _dir: Option<tempfile::TempDir>,
    pub kubeconfig: PathBuf,
    /// What `kedge up` printed: `Kubernetes API`, `MQTT broker`, `metrics`, …
    pub endpoints: HashMap<String, String>,
}

impl Server {
    /// The data directory of the `kedge up` the bench started (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self._dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }

    /// The port of an endpoint `kedge up` printed.
    pub fn port(&self, name: &str) -> anyhow::Result<u16> {
        self.endpoints
            .get(name)
            .and_then(|v| v.rsplit(':').next())
            .and_then(|p| p.trim_end_matches("/metrics").parse().ok())
            .with_context(|| format!("kedge up printed no {name} port"))
    }

    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(kube::Client::try_from(cfg)?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn kedge_binary(kedge: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match kedge {
        Some(k) => Ok(k),
        None => Ok(std::env::current_exe()?.with_file_name("kedge")),
    }
}

/// Starts `kedge up` on free ports in a scratch directory and waits for its endpoints.
pub fn start_server(kedge: Option<PathBuf>) -> anyhow::Result<Server> {
    start_server_with(kedge, &[])
}

/// [`start_server`] with more flags (`--cri-endpoint …`).
pub fn start_server_with(kedge: Option<PathBuf>, extra: &[&str]) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let mut args = vec![
        "up",
        "--api-port",
        "0",
        "--hub-port",
        "0",
        "--https-port",
        "0",
        "--mqtt-port",
        "0",
        "--servicebus-port",
        "0",
        "--metrics-port",
        "0",
        "--router-port",
        "0",
        "--dashboard-port",
        "0",
    ];
    args.extend(extra);
    let mut server = start_kedge(kedge, &args, dir.path())?;
    server._dir = Some(dir);
    Ok(server)
}

/// Starts `kedge <args> --data-dir <dir>` and waits for the endpoints it prints.
pub fn start_kedge(kedge: Option<PathBuf>, args: &[&str], dir: &Path) -> anyhow::Result<Server> {
    let kedge = kedge_binary(kedge)?;
    let mut child = Command::new(&kedge)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", kedge.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut endpoints = HashMap::new();
    loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some((k, v)) = l.trim().split_once(':') {
                    endpoints.insert(k.trim().to_string(), v.trim().to_string());
                }
                if l.trim().starts_with("metrics:") {
                    break;
                }
            }
            _ => bail!("kedge exited before printing its endpoints"),
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Ok(Server {
        child,
        _dir: None,
        kubeconfig: dir.join("kubeconfig"),
        endpoints,
    })
}

/// A join token from `kedge token` for the cloud in `dir`.
pub fn token(kedge: &Option<PathBuf>, dir: &Path) -> anyhow::Result<String> {
    let out = Command::new(kedge_binary(kedge.clone())?)
        .args(["token", "--data-dir"])
        .arg(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kedge token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// (current, peak) resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn progress(what: &str, done: usize, total: usize) {
    eprint!("\r{what}: {done}/{total}   ");
    let _ = std::io::stderr().flush();
}

fn device(i: usize) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "Device",
        "metadata": {"name": format!("device-{i}"), "labels": {"description": "counter"}},
        "spec": {"deviceModelRef": {"name": "counter-model"},
            "nodeSelector": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [format!("edge-{}", i % 100)]}]}]}},
        "status": {"twins": [{"propertyName": "status",
            "desired": {"metadata": {"type": "string"}, "value": "OFF"},
            "reported": {"metadata": {"type": "string"}, "value": "0"}}]},
    }))?)
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let server = start_server(a.kedge.clone())?;
    let pid = server.child.id();
    let client = server.client().await?;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("devices.kubeedge.io", "v1alpha2", "Device"),
        "devices",
    );
    let devices: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let (rss_idle, _) = rss_kib(pid);

    // Creates.
    let started = Instant::now();
    let done = Arc::new(Mutex::new(Latencies::default()));
    stream::iter(0..a.devices)
        .map(|i| {
            let (devices, done) = (devices.clone(), done.clone());
            async move {
                let obj = device(i)?;
                let t = Instant::now();
                devices.create(&PostParams::default(), &obj).await?;
                let mut d = done.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                d.push(t.elapsed());
                if d.len() % 500 == 0 {
                    progress("creates", d.len(), a.devices);
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(a.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let create_secs = started.elapsed().as_secs_f64();
    let mut create_lat = done
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    eprintln!();

    // Lists.
    let mut list_lat = Latencies::default();
    for i in 0..a.lists {
        let t = Instant::now();
        let l = devices.list(&ListParams::default()).await?;
        list_lat.push(t.elapsed());
        if l.items.len() != a.devices {
            bail!(
                "list returned {} devices, expected {}",
                l.items.len(),
                a.devices
            );
        }
        progress("lists", i + 1, a.lists);
    }
    eprintln!();
    let (rss_loaded, _) = rss_kib(pid);

    // Watch fan-out: every watcher must see every change.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let rv = devices
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut handles = Vec::new();
    for _ in 0..a.watchers {
        let (devices, sent, rv) = (devices.clone(), sent.clone(), rv.clone());
        let want = a.changes;
        let mut stream = devices
            .watch(&WatchParams::default().timeout(290), &rv)
            .await?
            .boxed();
        handles.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            while lat.len() < want {
                match stream.try_next().await {
                    Ok(Some(WatchEvent::Modified(o))) => {
                        let seq = o
                            .metadata
                            .labels
                            .and_then(|l| l.get("seq").cloned())
                            .unwrap_or_default();
                        if let Some(t) = sent.lock().ok().and_then(|m| m.get(&seq).copied()) {
                            lat.push(t.elapsed());
                        }
                    }
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            lat
        }));
    }
    for i in 0..a.changes {
        let seq = i.to_string();
        if let Ok(mut m) = sent.lock() {
            m.insert(seq.clone(), Instant::now());
        }
        let p = json!({"metadata": {"labels": {"seq": seq}}});
        devices
            .patch(
                &format!("device-{}", i % a.devices.max(1)),
                &PatchParams::default(),
                &Patch::Merge(&p),
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        progress("changes", i + 1, a.changes);
    }
    eprintln!();
    let mut watch_lat = Latencies::default();
    let mut complete = 0;
    for h in handles {
        let l = tokio::time::timeout(Duration::from_secs(60), h).await??;
        if l.len() == a.changes {
            complete += 1;
        }
        watch_lat.extend(l);
    }
    let (rss_end, hwm) = rss_kib(pid);

    let summary = json!({
        "devices": a.devices,
        "creates_per_sec": (a.devices as f64 / create_secs).round(),
        "create_p50_ms": create_lat.quantile_ms(0.5),
        "create_p99_ms": create_lat.quantile_ms(0.99),
        "list_all_p50_ms": list_lat.quantile_ms(0.5),
        "list_all_p99_ms": list_lat.quantile_ms(0.99),
        "watchers": a.watchers,
        "watchers_complete": complete,
        "watch_events_delivered": watch_lat.len(),
        "watch_delivery_p50_ms": watch_lat.quantile_ms(0.5),
        "watch_delivery_p99_ms": watch_lat.quantile_ms(0.99),
        "rss_idle_mib": rss_idle as f64 / 1024.0,
        "rss_after_devices_mib": rss_loaded as f64 / 1024.0,
        "rss_end_mib": rss_end as f64 / 1024.0,
        "rss_peak_mib": hwm as f64 / 1024.0,
    });
    print_summary(&summary, a.json)?;
    if complete != a.watchers {
        bail!(
            "only {complete} of {} watchers saw every change",
            a.watchers
        );
    }
    Ok(())
}

/// The summary as a table, or as JSON.
pub fn print_summary(summary: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
        return Ok(());
    }
    println!("{:<32} {:>12}", "metric", "value");
    if let Some(m) = summary.as_object() {
        for (k, v) in m {
            // Counts as they are; measured values with two decimals.
            let v = match (v.as_i64(), v.as_f64()) {
                (Some(i), _) => i.to_string(),
                (None, Some(f)) => format!("{f:.2}"),
                _ => v.to_string(),
            };
            println!("{k:<32} {v:>12}");
        }
    }
    Ok(())
}

/// A plain-HTTP GET of a loopback URL (`/metrics`); the body.
pub async fn http_get(url: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{url}: not http://"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = tokio::net::TcpStream::connect(host).await?;
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// The container runtime a benchmark runs pods on.
#[derive(clap::Args)]
pub struct Runtime {
    /// The container runtime's CRI socket (`unix:///…`), holding `--image`.
    #[arg(long)]
    pub cri_endpoint: String,
    /// An image the runtime holds.
    #[arg(long, default_value = "kedge.local/busybox:1")]
    pub image: String,
}
