//! `kedge-bench edge`: one real `kedge edge` process against a real `kedge cloud`:
//! - connect time: from launching the process to its "connected to CloudHub" log line, the first
//!   launch (which joins: token → certificate) and restarts (certificate on disk);
//! - idle memory with the embedded MQTT broker, with no devices and with `--devices` Devices
//!   bound to it (created in the cloud, synced down, stored in the edge's SQLite).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::api::{kedge_binary, print_summary, progress, rss_kib, token};
use crate::hollow::start_cloud;
use crate::stats::Latencies;

#[derive(clap::Args)]
pub struct Args {
    /// Devices bound to the edge for the second memory figure.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Launches of the edge timed until connected (the first one joins).
    #[arg(long, default_value_t = 10)]
    launches: usize,
    /// Seconds the edge idles before its memory is read: long enough for its steady work
    /// (Lease renewals every 10 s, a keepalive after 15 s of silence) to have run a few times.
    #[arg(long, default_value_t = 45)]
    idle_secs: u64,
    /// The kedge binary (default: next to this one).
    #[arg(long)]
    kedge: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

const NODE: &str = "bench-edge";

/// A running `kedge edge` and the lines it prints (stdout and stderr), stamped on arrival.
struct EdgeProcess {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    /// Lines read so far (a line may be looked for after others).
    seen: std::cell::RefCell<Vec<(Instant, String)>>,
    launched: Instant,
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EdgeProcess {
    fn launch(kedge: &Path, dir: &Path, ports: (u16, u16), token: &str) -> anyhow::Result<Self> {
        let launched = Instant::now();
        let mut child = Command::new(kedge)
            .args(["edge", "--node-name", NODE, "--cloud", "127.0.0.1"])
            .args(["--hub-port", &ports.0.to_string()])
            .args(["--https-port", &ports.1.to_string()])
            .args([
                "--mqtt-port",
                "0",
                "--servicebus-port",
                "0",
                "--metrics-port",
                "0",
                "--cri-endpoint",
                "none",
            ])
            .arg("--data-dir")
            .arg(dir)
            .env("KEDGE_TOKEN", token)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", kedge.display()))?;
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send((Instant::now(), l));
                }
            });
        }
        Ok(EdgeProcess {
            child,
            lines,
            seen: Default::default(),
            launched,
        })
    }

    /// Waits for a line containing `what`; returns the time since launch and the line.
    fn wait_line(&self, what: &str, limit: Duration) -> anyhow::Result<(Duration, String)> {
        let found = |(at, l): &(Instant, String)| {
            l.contains(what).then(|| (*at - self.launched, l.clone()))
        };
        if let Some(hit) = self.seen.borrow().iter().find_map(found) {
            return Ok(hit);
        }
        let deadline = self.launched + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                bail!("the edge printed no {what:?} within {limit:?}");
            };
            let hit = found(&line);
            self.seen.borrow_mut().push(line);
            if let Some(hit) = hit {
                return Ok(hit);
            }
        }
    }

    /// The metrics port from the `metrics: http://127.0.0.1:<port>/metrics` line.
    fn metrics_url(&self) -> anyhow::Result<String> {
        let (_, l) = self.wait_line("metrics:", Duration::from_secs(30))?;
        let url = l.split_whitespace().last().context("metrics line")?;
        Ok(url.to_string())
    }
}

/// A gauge's value from a Prometheus text page.
fn gauge(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Waits until the edge's `kedge_devicetwin_devices` reaches `n`.
async fn wait_devices(metrics: &str, n: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let http = reqwest::Client::new();
    loop {
        let page = http.get(metrics).send().await?.text().await?;
        let have = gauge(&page, "kedge_devicetwin_devices").unwrap_or(0.0) as usize;
        progress("devices on the edge", have, n);
        if have >= n {
            eprintln!();
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the edge has {have} of {n} devices after 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cloud_dir = dir.path().join("cloud");
    // The cloud runs from a copy of the binary: on an edge machine nothing else maps kedge's
    // pages, and pages shared with another process are not the edge's to give back (it gives
    // back the code only its start-up used, see `kedge/src/trim.rs`).
    let cloud_binary = dir.path().join("kedge-cloud-copy");
    std::fs::copy(kedge_binary(a.kedge.clone())?, &cloud_binary)?;
    let cloud = start_cloud(&Some(cloud_binary), &cloud_dir, (0, 0, 0))?;
    let ports = (cloud.port("CloudHub")?, cloud.port("join server")?);
    let token = token(&a.kedge, &cloud_dir)?;
    let kedge = kedge_binary(a.kedge.clone())?;
    let edge_dir = dir.path().join("edge");
    const CONNECTED: &str = "connected to CloudHub";
    const LIMIT: Duration = Duration::from_secs(30);

    // Launches: the first joins; the others find their certificate on disk.
    let mut join = Duration::ZERO;
    let mut restarts = Latencies::default();
    for i in 0..a.launches.max(1) {
        let edge = EdgeProcess::launch(&kedge, &edge_dir, ports, &token)?;
        let (took, _) = edge.wait_line(CONNECTED, LIMIT)?;
        if i == 0 {
            join = took;
        } else {
            restarts.push(took);
        }
        progress("launches", i + 1, a.launches.max(1));
    }
    eprintln!();

    // Memory: idle without devices, then with them.
    let edge = EdgeProcess::launch(&kedge, &edge_dir, ports, &token)?;
    edge.wait_line(CONNECTED, LIMIT)?;
    let metrics = edge.metrics_url()?;
    let pid = edge.child.id();
    tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
    let (rss_idle, _) = rss_kib(pid);
    let client = cloud.client().await?;
    crate::twins::create_devices(&client, a.devices, NODE).await?;
    let synced = wait_devices(&metrics, a.devices).await?;
    tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
    let (rss_devices, peak) = rss_kib(pid);

    let per_device = (rss_devices.saturating_sub(rss_idle)) as f64 / a.devices.max(1) as f64;
    let summary = json!({
        "first_launch_connected_ms": join.as_secs_f64() * 1e3,
        "restart_connected_p50_ms": restarts.quantile_ms(0.5),
        "restart_connected_max_ms": restarts.quantile_ms(1.0),
        "edge_rss_idle_mib": rss_idle as f64 / 1024.0,
        "devices": a.devices,
        "devices_synced_s": synced.as_secs_f64(),
        "edge_rss_with_devices_mib": rss_devices as f64 / 1024.0,
        "edge_peak_rss_mib": peak as f64 / 1024.0,
        "edge_rss_per_device_kib": per_device,
    });
    print_summary(&summary, a.json)
}
