//! Test harness: the real `kedge` binary, real `kubectl`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Polls `f` until it returns `Some`, failing after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kedge cloud`'s listeners each on a free port.
pub const CLOUD_FREE_PORTS: [&str; 12] = [
    "--api-port",
    "0",
    "--dashboard-port",
    "0",
    "--hub-port",
    "0",
    "--https-port",
    "0",
    "--metrics-port",
    "0",
    "--router-port",
    "0",
];

/// A running `kedge up`.
pub struct Kedge {
    child: Child,
    pub data_dir: PathBuf,
    pub url: String,
    pub port: u16,
    pub hub_port: u16,
    pub join_port: u16,
    /// `http://127.0.0.1:<port>/metrics`.
    pub metrics: String,
    /// `kedge up`'s edge broker (0 for `kedge cloud`).
    pub mqtt_port: u16,
    /// The router's REST listener.
    pub router_port: u16,
    /// What kedge printed: `Kubernetes API`, `CloudHub`, `router`, … → address.
    pub endpoints: std::collections::HashMap<String, String>,
}

/// Spawns `kedge <args> --data-dir <dir>` and streams its stdout lines.
fn spawn_kedge(args: &[&str], data_dir: &Path, stderr: Stdio) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kedge"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("kedge starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining so the child never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Edges run no pods unless a test gives them a runtime (`--cri-endpoint`, see `cri.rs`):
/// the machine's own containerd is never used.
fn no_runtime_unless_given(extra: &[&str]) -> Vec<&'static str> {
    if extra.contains(&"--cri-endpoint") {
        vec![]
    } else {
        vec!["--cri-endpoint", "none"]
    }
}

/// A running `kedge edge`.
pub struct EdgeProc {
    child: Child,
    /// The MQTT broker devices use: the embedded one (on a free port) unless `--mqtt-url` was given.
    pub mqtt_port: u16,
    /// Where edge apps call cloud apps (servicebus → rest).
    pub servicebus_port: u16,
}

impl EdgeProc {
    pub fn start(cloud: &Kedge, data_dir: &Path, node: &str, token: &str) -> EdgeProc {
        Self::spawn(cloud, data_dir, node, token, &[], Stdio::inherit())
    }

    /// Like [`EdgeProc::start_with`], reaching CloudHub at `hub_port` (a proxy in front of it).
    pub fn start_through(
        cloud: &Kedge,
        data_dir: &Path,
        node: &str,
        token: &str,
        extra: &[&str],
        hub_port: u16,
    ) -> EdgeProc {
        let ports = (hub_port, cloud.join_port);
        Self::spawn_at(ports, data_dir, node, token, extra, Stdio::inherit())
    }

    /// Like [`EdgeProc::start`], with more flags (`--mqtt-url ...`, say).
    pub fn start_with(
        cloud: &Kedge,
        data_dir: &Path,
        node: &str,
        token: &str,
        extra: &[&str],
    ) -> EdgeProc {
        Self::spawn(cloud, data_dir, node, token, extra, Stdio::inherit())
    }

    /// Like [`EdgeProc::start`], streaming the edge's log lines.
    pub fn start_logged(
        cloud: &Kedge,
        data_dir: &Path,
        node: &str,
        token: &str,
    ) -> (EdgeProc, mpsc::Receiver<String>) {
        let mut p = Self::spawn(cloud, data_dir, node, token, &[], Stdio::piped());
        let stderr = p.child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (p, rx)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn spawn(
        cloud: &Kedge,
        data_dir: &Path,
        node: &str,
        token: &str,
        extra: &[&str],
        stderr: Stdio,
    ) -> EdgeProc {
        let ports = (cloud.hub_port, cloud.join_port);
        Self::spawn_at(ports, data_dir, node, token, extra, stderr)
    }

    /// `(hub, join)`: the cloud's ports the edge dials.
    fn spawn_at(
        (hub_port, join_port): (u16, u16),
        data_dir: &Path,
        node: &str,
        token: &str,
        extra: &[&str],
        stderr: Stdio,
    ) -> EdgeProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kedge"))
            .args(["edge", "--node-name", node])
            // A list of replicas in `extra` replaces the one cloud.
            .args(if extra.contains(&"--cloud") {
                &[][..]
            } else {
                &["--cloud", "127.0.0.1"][..]
            })
            .args(["--metrics-port", "0", "--servicebus-port", "0"])
            // A port in `extra` replaces a free one (a restart on the same port).
            .args(if extra.contains(&"--mqtt-port") {
                &[][..]
            } else {
                &["--mqtt-port", "0"][..]
            })
            .args(no_runtime_unless_given(extra))
            .args(extra)
            .args([
                "--hub-port",
                &hub_port.to_string(),
                "--https-port",
                &join_port.to_string(),
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .env("KEDGE_TOKEN", token)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("kedge edge starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut mqtt_port, mut servicebus_port) = (0, 0);
        let port = |url: &str| url.trim().rsplit(':').next().and_then(|p| p.parse().ok());
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("kedge edge prints its endpoints");
            if let Some(url) = line.trim().strip_prefix("MQTT broker:") {
                mqtt_port = port(url).unwrap_or(0);
            }
            if let Some(url) = line.trim().strip_prefix("servicebus:") {
                servicebus_port = port(url).unwrap_or(0);
            }
            if line.trim().starts_with("metrics:") {
                break;
            }
        }
        EdgeProc {
            child,
            mqtt_port,
            servicebus_port,
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EdgeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Kedge {
    /// Starts `kedge up` with its API on `port` (0: any; every other port is picked free) and
    /// waits until it prints its endpoints.
    pub fn up(data_dir: &Path, port: u16) -> Kedge {
        Self::up_with(data_dir, port, &[])
    }

    /// `kedge up` with more flags (`--demo`, say).
    pub fn up_with(data_dir: &Path, port: u16, extra: &[&str]) -> Kedge {
        let port = port.to_string();
        let mut args = vec![
            "up",
            "--api-port",
            &port,
            "--hub-port",
            "0",
            "--https-port",
            "0",
            "--metrics-port",
            "0",
            "--mqtt-port",
            "0",
            "--servicebus-port",
            "0",
            "--router-port",
            "0",
            "--dashboard-port",
            "0",
        ];
        args.extend(no_runtime_unless_given(extra));
        args.extend(extra);
        let (child, lines) = spawn_kedge(&args, data_dir, Stdio::inherit());
        Self::from_lines(child, data_dir, &lines)
    }

    /// Starts `kedge cloud` on loopback with free ports.
    pub fn cloud(data_dir: &Path) -> Kedge {
        Self::cloud_on(data_dir, 0, 0, 0)
    }

    /// Starts `kedge cloud` on loopback on the given ports (a restart keeps the edges' address).
    pub fn cloud_on(data_dir: &Path, api: u16, hub: u16, join: u16) -> Kedge {
        Self::cloud_with(data_dir, api, hub, join, &[])
    }

    /// `kedge cloud` with its default listen addresses (free ports).
    pub fn cloud_default_binds(data_dir: &Path) -> Kedge {
        let args: Vec<&str> = std::iter::once("cloud").chain(CLOUD_FREE_PORTS).collect();
        let (child, lines) = spawn_kedge(&args, data_dir, Stdio::inherit());
        Self::from_lines(child, data_dir, &lines)
    }

    /// `kedge cloud` on the given ports with more flags.
    pub fn cloud_with(data_dir: &Path, api: u16, hub: u16, join: u16, extra: &[&str]) -> Kedge {
        let (api, hub, join) = (api.to_string(), hub.to_string(), join.to_string());
        let mut args = vec![
            "cloud",
            "--api-port",
            &api,
            "--hub-port",
            &hub,
            "--https-port",
            &join,
            "--bind",
            "127.0.0.1",
            "--metrics-port",
            "0",
            "--router-port",
            "0",
            "--router-bind",
            "127.0.0.1",
            "--dashboard-port",
            "0",
        ];
        args.extend(extra);
        // Replicas on one machine: each its own peer port, reached on loopback.
        if extra.contains(&"--kubeconfig") && !extra.contains(&"--peer-port") {
            args.extend(["--peer-port", "0", "--peer-address", "127.0.0.1"]);
        }
        let (child, lines) = spawn_kedge(&args, data_dir, Stdio::inherit());
        Self::from_lines(child, data_dir, &lines)
    }

    /// `kedge <args>` (a cloud or `up`) with its log appended to `log`.
    pub fn start_logged(args: &[&str], data_dir: &Path, log: &Path) -> Kedge {
        let (child, lines) = spawn_kedge(args, data_dir, append_to(log));
        Self::from_lines(child, data_dir, &lines)
    }

    /// The node's Ready condition status (`True`, `False`, `Unknown`; empty when none).
    pub fn node_ready(&self, node: &str) -> String {
        let out = self.kubectl(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How the process ended, if it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn from_lines(child: Child, data_dir: &Path, lines: &mpsc::Receiver<String>) -> Kedge {
        let mut endpoints = std::collections::HashMap::new();
        while !endpoints.contains_key("metrics") {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .expect("kedge prints its endpoints");
            if let Some((k, v)) = line.trim().split_once(':') {
                endpoints.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        let port_of = |k: &str| -> u16 {
            endpoints[k]
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port")
        };
        // `kedge cloud --kubeconfig` serves no API of its own: "(external)".
        let external = endpoints["Kubernetes API"] == "(external)";
        Kedge {
            url: endpoints["Kubernetes API"].clone(),
            port: if external {
                0
            } else {
                port_of("Kubernetes API")
            },
            hub_port: port_of("CloudHub"),
            join_port: port_of("join server"),
            metrics: endpoints["metrics"].clone(),
            router_port: port_of("router"),
            mqtt_port: if endpoints.contains_key("MQTT broker") {
                port_of("MQTT broker")
            } else {
                0
            },
            child,
            data_dir: data_dir.to_path_buf(),
            endpoints,
        }
    }

    /// A join token from `kedge token` for this cloud.
    pub fn token(&self) -> String {
        kedge_token(&["--data-dir", &self.data_dir.display().to_string()])
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.data_dir.join("kubectl-cache"))
            .args(args);
        c
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("kubectl runs")
    }

    /// Runs kubectl and returns stdout, failing the test if kubectl fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(!out.status.success(), "kubectl {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs kubectl with `input` on stdin.
    /// `kubectl apply -f -` of `yaml`, which must succeed.
    pub fn apply(&self, yaml: &str) {
        let out = self.with_stdin(&["apply", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn with_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl finishes")
    }

    pub async fn client(&self) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(cfg).expect("client")
    }
}

/// A plain-HTTP GET (loopback listeners such as /metrics); returns the body.
/// `kedge token` with `args`: the token printed.
pub fn kedge_token(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kedge"))
        .arg("token")
        .args(args)
        .output()
        .expect("kedge token runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The HTTP status of `curl ARGS` ("000": no answer), curl's complaints printed.
pub fn http_status(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    if !out.stderr.is_empty() {
        eprintln!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

impl Drop for Kedge {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A file opened for appending, as a child's stdout or stderr (restarts add to one log).
pub fn append_to(log: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file")
        .into()
}
