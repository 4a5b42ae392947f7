//! The processes under test: a `kedge cloud` on this host and a `kedge edge` (with its embedded
//! broker) in the edge's namespace, each killable with SIGKILL and restartable on its ports and
//! data, each logging to a file the suite reads for panics at the end.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::common::{Kedge, append_to};
use crate::net::Net;

pub const NODE: &str = "kube-edge-1";
/// Inside the edge's namespace nothing else listens: fixed ports survive restarts.
pub const MQTT_PORT: &str = "1883";

pub struct Rig {
    pub net: Net,
    pub cloud_dir: tempfile::TempDir,
    pub edge_dir: tempfile::TempDir,
    logs: tempfile::TempDir,
    cloud: Kedge,
    edge: Child,
    token: String,
    /// API, CloudHub, join ports: a restarted cloud keeps them.
    ports: [String; 3],
}

impl Rig {
    pub fn start(net: Net) -> Rig {
        let cloud_dir = tempfile::tempdir().expect("cloud dir");
        let edge_dir = tempfile::tempdir().expect("edge dir");
        let logs = tempfile::tempdir().expect("logs");
        let zero = || "0".to_string();
        let cloud = start_cloud(
            &net,
            cloud_dir.path(),
            &[zero(), zero(), zero()],
            logs.path(),
        );
        let ports = [cloud.port, cloud.hub_port, cloud.join_port].map(|p| p.to_string());
        let token = cloud.token();
        let edge = start_edge(&net, edge_dir.path(), &ports, &token, logs.path());
        Rig {
            net,
            cloud_dir,
            edge_dir,
            logs,
            cloud,
            edge,
            token,
            ports,
        }
    }

    pub fn cloud(&self) -> &Kedge {
        &self.cloud
    }

    pub fn kill_cloud(&mut self) {
        self.assert_cloud_alive();
        self.cloud.kill9();
    }

    pub fn restart_cloud(&mut self) {
        self.cloud = start_cloud(
            &self.net,
            self.cloud_dir.path(),
            &self.ports,
            self.logs.path(),
        );
    }

    pub fn kill_edge(&mut self) {
        self.assert_edge_alive();
        let _ = self.edge.kill();
        let _ = self.edge.wait();
    }

    pub fn restart_edge(&mut self) {
        self.edge = start_edge(
            &self.net,
            self.edge_dir.path(),
            &self.ports,
            &self.token,
            self.logs.path(),
        );
    }

    /// Fails the run if either process ended without being killed.
    pub fn assert_alive(&mut self) {
        self.assert_cloud_alive();
        self.assert_edge_alive();
    }

    fn assert_cloud_alive(&mut self) {
        if let Some(status) = self.cloud.exit_status() {
            panic!(
                "kedge cloud exited on its own ({status}):\n{}",
                self.log_tail("cloud.log")
            );
        }
    }

    fn assert_edge_alive(&mut self) {
        if let Ok(Some(status)) = self.edge.try_wait() {
            panic!(
                "kedge edge exited on its own ({status}):\n{}",
                self.log_tail("edge.log")
            );
        }
    }

    /// Lines of either log that tell of a panic.
    pub fn panics(&self) -> Vec<String> {
        ["cloud.log", "edge.log"]
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(self.logs.path().join(f))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("panicked"))
                    .map(|l| format!("{f}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The log's panics and errors, then its last lines.
    pub fn log_tail(&self, file: &str) -> String {
        let text = std::fs::read_to_string(self.logs.path().join(file)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let grave: Vec<&str> = lines
            .iter()
            .filter(|l| l.contains("panicked") || l.contains("ERROR"))
            .take(20)
            .copied()
            .collect();
        format!(
            "{}\n…\n{}",
            grave.join("\n"),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    pub fn edge_db(&self) -> PathBuf {
        self.edge_dir.path().join("edge.db")
    }

    pub fn cloud_db(&self) -> PathBuf {
        self.cloud_dir.path().join("apiserver.db")
    }
}

/// The edge goes with the rig, also when a check fails (the cloud is a `Kedge`, which does the
/// same).
impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.edge.kill();
        let _ = self.edge.wait();
    }
}

fn start_cloud(net: &Net, dir: &Path, ports: &[String; 3], logs: &Path) -> Kedge {
    let [api, hub, join] = ports;
    let args = [
        "cloud",
        "--api-port",
        api,
        "--hub-port",
        hub,
        "--https-port",
        join,
        "--bind",
        &net.cloud_ip,
        "--advertise-address",
        &net.cloud_ip,
        "--metrics-port",
        "0",
        "--router-port",
        "0",
        "--dashboard-port",
        "0",
    ];
    Kedge::start_logged(&args, dir, &logs.join("cloud.log"))
}

fn start_edge(net: &Net, dir: &Path, ports: &[String; 3], token: &str, logs: &Path) -> Child {
    let data_dir = dir.display().to_string();
    let mut child = net
        .exec_cmd(env!("CARGO_BIN_EXE_kedge"), &["edge"])
        .args(["--node-name", NODE, "--cloud", &net.cloud_ip])
        .args(["--hub-port", &ports[1], "--https-port", &ports[2]])
        .args(["--mqtt-port", MQTT_PORT, "--metrics-port", "10351"])
        .args(["--cri-endpoint", "none", "--data-dir", &data_dir])
        .env("KEDGE_TOKEN", token)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(append_to(&logs.join("edge.log")))
        .spawn()
        .expect("kedge edge starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let printed = std::iter::from_fn(|| {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        rx.recv_timeout(left).ok()
    })
    .any(|line| line.trim().starts_with("metrics:"));
    if !printed {
        let _ = child.kill();
        let _ = child.wait();
        panic!("kedge edge printed no endpoints within 60 s (see edge.log)");
    }
    child
}
