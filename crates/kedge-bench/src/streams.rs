//! `kedge-bench streams`: `kubectl exec/port-forward/logs -f` to an edge pod through a real
//! `kedge up` (the streams inside the hub session), each beside the same operation done
//! directly against the runtime's streaming server (CRI Exec/PortForward over SPDY) or log file
//! on the edge; then device-twin report latency idle and while 50 `kubectl logs -f` and a
//! 100 MiB `kubectl cp` loop run.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kedge_edge::edged::cri::Cri;
use kedge_stream::request::Io;
use kedge_stream::spdy::conn::dial;
use serde_json::json;

use crate::api::{Server, print_summary, start_server_with};
use crate::stats::Latencies;
use crate::twins;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    runtime: crate::api::Runtime,
    /// `exec -i … cat` round trips timed.
    #[arg(long, default_value_t = 200)]
    round_trips: usize,
    /// MiB downloaded through port-forward.
    #[arg(long, default_value_t = 128)]
    forward_mib: usize,
    /// `logs -f` lines timed.
    #[arg(long, default_value_t = 200)]
    lines: usize,
    /// Concurrent `kubectl logs -f` during the twin run under load.
    #[arg(long, default_value_t = 50)]
    followers: usize,
    /// MiB per `kubectl cp` during the twin run under load.
    #[arg(long, default_value_t = 100)]
    cp_mib: usize,
    /// Twin reports timed idle, and again under load.
    #[arg(long, default_value_t = 300)]
    twin_samples: usize,
    /// Only the twin runs (idle and under load).
    #[arg(long)]
    only_load: bool,
    /// The kedge binary (default: next to this one).
    #[arg(long)]
    kedge: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

const POD: &str = "bench-streams";

pub async fn run(a: Args) -> anyhow::Result<()> {
    let server = start_server_with(
        a.kedge.clone(),
        &["--cri-endpoint", &a.runtime.cri_endpoint],
    )?;
    let port = free_port()?;
    let script = format!(
        "mkdir -p /www && dd if=/dev/zero of=/www/big bs=1048576 count={} 2>/dev/null && \
         httpd -p 127.0.0.1:{port} -h /www && \
         while true; do echo tick; sleep 0.05; done",
        a.forward_mib
    );
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD},
        "spec": {"nodeName": twins::NODE, "hostNetwork": true, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": a.runtime.image, "command": ["sh", "-c", script]}]}});
    kubectl_stdin(&server, &["apply", "-f", "-"], &pod.to_string())?;
    kubectl(
        &server,
        &[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{POD}"),
            "--timeout=120s",
        ],
    )?;
    let cri = Cri::new(&a.runtime.cri_endpoint)?;
    // httpd and the file are ready once a request answers.
    wait_http(port)?;

    let (mut via, mut direct) = (Latencies::default(), Latencies::default());
    let (mut logs_via, mut logs_direct) = (Latencies::default(), Latencies::default());
    let (mut fwd_kubectl, mut fwd_direct) = (0.0, 0.0);
    if !a.only_load {
        round_trips_kubectl(&server, a.round_trips, &mut via)?;
        round_trips_direct(&cri, a.round_trips, &mut direct).await?;
        eprintln!("exec round trips done");
        fwd_kubectl = forward_kubectl(&server, port)?;
        fwd_direct = forward_direct(&cri, port).await?;
        eprintln!("port-forward done");
        follow_kubectl(&server, a.lines, &mut logs_via)?;
        follow_file(&server, a.lines, &mut logs_direct)?;
        eprintln!("logs -f done");
    }

    let client = server.client().await?;
    let devices = twins::create_devices(&client, 1, twins::NODE).await?;
    let mqtt_port = server.port("MQTT broker")?;
    let subs = ["$hw/events/node/+/membership/get/result"];
    let (mq, mut rx) = twins::mqtt(mqtt_port, "bench-streams", &subs).await?;
    twins::wait_for_devices(&mq, &mut rx, 1).await?;
    // Spread over a while (20 a second), so that the loaded run spans several copies.
    let every = Some(Duration::from_millis(50));
    let mut idle = twins::reported(&devices, &mq, 1, a.twin_samples, "i", every).await?;
    let load = Load::start(&server, a.followers, a.cp_mib)?;
    let mut loaded = twins::reported(&devices, &mq, 1, a.twin_samples, "l", every).await?;
    let (copies, cp_mib_s) = load.stop();
    let summary = json!({
        "exec_round_trip_p50_ms": via.quantile_ms(0.5),
        "exec_round_trip_p99_ms": via.quantile_ms(0.99),
        "exec_round_trip_direct_p50_ms": direct.quantile_ms(0.5),
        "exec_round_trip_direct_p99_ms": direct.quantile_ms(0.99),
        "port_forward_mib_s": fwd_kubectl,
        "port_forward_direct_mib_s": fwd_direct,
        "logs_follow_line_p50_ms": logs_via.quantile_ms(0.5),
        "logs_follow_line_p99_ms": logs_via.quantile_ms(0.99),
        "logs_file_line_p50_ms": logs_direct.quantile_ms(0.5),
        "logs_file_line_p99_ms": logs_direct.quantile_ms(0.99),
        "twin_report_idle_p50_ms": idle.quantile_ms(0.5),
        "twin_report_idle_p99_ms": idle.quantile_ms(0.99),
        "twin_report_loaded_p50_ms": loaded.quantile_ms(0.5),
        "twin_report_loaded_p99_ms": loaded.quantile_ms(0.99),
        "load_followers": a.followers,
        "load_cp_mib": a.cp_mib,
        "load_cp_done": copies,
        "load_cp_mib_s": cp_mib_s,
    });
    print_summary(&summary, a.json)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn kubectl_cmd(server: &Server, args: &[&str]) -> Command {
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig").arg(&server.kubeconfig).args(args);
    c
}

fn kubectl(server: &Server, args: &[&str]) -> anyhow::Result<String> {
    let out = kubectl_cmd(server, args).output().context("kubectl runs")?;
    if !out.status.success() {
        bail!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kubectl_stdin(server: &Server, args: &[&str], input: &str) -> anyhow::Result<()> {
    let mut child = kubectl_cmd(server, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    if !child.wait()?.success() {
        bail!("kubectl {args:?} failed");
    }
    Ok(())
}

fn get(port: u16, path: &str) -> anyhow::Result<u64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    transfer(&mut s, path)
}

/// Sends a GET for `path` and reads the answer to its end; its size.
fn transfer(s: &mut (impl Read + Write), path: &str) -> anyhow::Result<u64> {
    write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        match s.read(&mut buf)? {
            0 => return Ok(n),
            k => n += k as u64,
        }
    }
}

fn wait_http(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/").is_err() {
        if Instant::now() > deadline {
            bail!("the pod's httpd never answered");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn round_trips_kubectl(server: &Server, n: usize, lat: &mut Latencies) -> anyhow::Result<()> {
    let mut child = kubectl_cmd(server, &["exec", "-i", POD, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut out = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    for i in 0..n + 1 {
        let t = Instant::now();
        writeln!(stdin, "x{i}")?;
        stdin.flush()?;
        line.clear();
        out.read_line(&mut line)?;
        // The first one opens the session: not timed.
        if i > 0 {
            lat.push(t.elapsed());
        }
    }
    drop(stdin);
    child.wait()?;
    Ok(())
}

async fn container(cri: &Cri) -> anyhow::Result<String> {
    let labels = [("io.kubernetes.pod.name".to_string(), POD.to_string())].into();
    let c = cri.containers(labels).await?;
    Ok(c.first().context("the pod's container")?.id.clone())
}

async fn round_trips_direct(cri: &Cri, n: usize, lat: &mut Latencies) -> anyhow::Result<()> {
    let id = container(cri).await?;
    let io = Io {
        stdin: true,
        stdout: true,
        ..Io::default()
    };
    let url = cri.exec_url(&id, vec!["cat".into()], io).await?;
    let (conn, _, _) = dial(&url, &["v4.channel.k8s.io"]).await?;
    let open = |t: &str| conn.open(vec![("streamtype".into(), t.into())]);
    let (_error, stdin, mut stdout) = (open("error"), open("stdin"), open("stdout"));
    for i in 0..n + 1 {
        let t = Instant::now();
        stdin.writer.send(format!("x{i}\n").as_bytes())?;
        let mut got = Vec::new();
        while !got.ends_with(b"\n") {
            let d = stdout.recv().await.map_err(anyhow::Error::msg)?;
            got.extend(d.context("stdout ended")?);
        }
        if i > 0 {
            lat.push(t.elapsed());
        }
    }
    stdin.writer.close();
    Ok(())
}

fn mib_s(bytes: u64, took: Duration) -> f64 {
    (bytes as f64 / (1 << 20) as f64 / took.as_secs_f64() * 10.0).round() / 10.0
}

fn forward_kubectl(server: &Server, port: u16) -> anyhow::Result<f64> {
    let mut pf = Killed(
        kubectl_cmd(
            server,
            &["port-forward", &format!("pod/{POD}"), &format!(":{port}")],
        )
        .stdout(Stdio::piped())
        .spawn()?,
    );
    let mut out = BufReader::new(pf.0.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    let local: u16 = line
        .trim()
        .trim_start_matches("Forwarding from 127.0.0.1:")
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("port-forward said {line:?}"))?;
    get(local, "/")?;
    let t = Instant::now();
    let n = get(local, "/big")?;
    Ok(mib_s(n, t.elapsed()))
}

async fn forward_direct(cri: &Cri, port: u16) -> anyhow::Result<f64> {
    let labels = [("io.kubernetes.pod.name".to_string(), POD.to_string())].into();
    let sandbox = cri.sandboxes(labels).await?;
    let id = &sandbox.first().context("the pod's sandbox")?.id;
    let url = cri.port_forward_url(id, port).await?;
    let (conn, _, _) = dial(&url, &["portforward.k8s.io"]).await?;
    let h = |t: &str| {
        vec![
            ("streamtype".to_string(), t.to_string()),
            ("port".to_string(), port.to_string()),
            ("requestid".to_string(), "0".to_string()),
        ]
    };
    let (_error, mut data) = (conn.open(h("error")), conn.open(h("data")));
    let t = Instant::now();
    data.writer.send(b"GET /big HTTP/1.0\r\n\r\n")?;
    let mut n = 0u64;
    while let Ok(Some(d)) = data.recv().await {
        n += d.len() as u64;
    }
    Ok(mib_s(n, t.elapsed()))
}

/// The time in a CRI log line (`2026-…Z stdout F tick`), as printed with `--timestamps` too.
fn stamped(line: &str) -> Option<jiff::Timestamp> {
    line.split(' ').next()?.parse().ok()
}

fn age(ts: jiff::Timestamp) -> Duration {
    Duration::try_from(jiff::Timestamp::now().duration_since(ts)).unwrap_or_default()
}

fn follow_kubectl(server: &Server, n: usize, lat: &mut Latencies) -> anyhow::Result<()> {
    let mut f = Killed(
        kubectl_cmd(server, &["logs", "-f", POD, "--timestamps", "--tail", "0"])
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let out = BufReader::new(f.0.stdout.take().context("stdout")?);
    for line in out.lines().take(n) {
        let ts = stamped(&line?).context("a stamped line")?;
        lat.push(age(ts));
    }
    Ok(())
}

/// The same lines read from the log file on the edge, looked at every millisecond.
fn follow_file(server: &Server, n: usize, lat: &mut Latencies) -> anyhow::Result<()> {
    let path = log_file(&server.data_dir().join("edge").join("pods"))?;
    let mut f = std::fs::File::open(&path)?;
    let mut pending = Vec::new();
    f.read_to_end(&mut pending)?;
    pending.clear();
    let mut seen = 0;
    while seen < n {
        let k = f.read_to_end(&mut pending)?;
        if k == 0 {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(ts) = stamped(&String::from_utf8_lossy(&line)) {
                lat.push(age(ts));
                seen += 1;
            }
        }
    }
    Ok(())
}

/// The pod's container log: `<edge>/pods/<uid>/logs/c_0.log`.
fn log_file(pods: &Path) -> anyhow::Result<PathBuf> {
    for e in std::fs::read_dir(pods)? {
        let p = e?.path().join("logs").join("c_0.log");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("no container log under {}", pods.display())
}

/// A child killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `followers` × `kubectl logs -f` and a `kubectl cp` loop, until stopped.
struct Load {
    followers: Vec<Killed>,
    stop: Arc<AtomicBool>,
    copies: Arc<AtomicU64>,
    copier: std::thread::JoinHandle<()>,
    started: Instant,
    mib: usize,
    _dir: tempfile::TempDir,
}

impl Load {
    fn start(server: &Server, followers: usize, mib: usize) -> anyhow::Result<Load> {
        let mut fs = Vec::new();
        for _ in 0..followers {
            let mut c = kubectl_cmd(server, &["logs", "-f", POD, "--tail", "1"])
                .stdout(Stdio::piped())
                .spawn()?;
            let out = c.stdout.take().context("stdout")?;
            fs.push(Killed(c));
            // Each one is streaming before the timing starts (kubectl's start-up is not load
            // kedge can do anything about).
            let mut out = BufReader::new(out);
            out.read_line(&mut String::new())?;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut out, &mut std::io::sink());
            });
        }
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("blob");
        let mut f = std::fs::File::create(&file)?;
        let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        for _ in 0..mib {
            f.write_all(&chunk)?;
        }
        let (stop, copies) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, c) = (stop.clone(), copies.clone());
        let kubeconfig = server.kubeconfig.clone();
        let copier = std::thread::spawn(move || {
            while mib > 0 && !s.load(Ordering::Relaxed) {
                let ok = Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .arg("cp")
                    .arg(&file)
                    .arg(format!("{POD}:/tmp/blob"))
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|st| st.success());
                if ok {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Load {
            followers: fs,
            stop,
            copies,
            copier,
            started: Instant::now(),
            mib,
            _dir: dir,
        })
    }

    /// Stops the load: copies completed, and their MiB/s.
    fn stop(self) -> (u64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.copier.join();
        let took = self.started.elapsed();
        drop(self.followers);
        let n = self.copies.load(Ordering::Relaxed);
        (n, mib_s((n * self.mib as u64) << 20, took))
    }
}
