//! The normal path logs no warnings: a first start and a graceful stop (SIGTERM) of `kedge up
//! --demo`, and of `kedge cloud` with a `kedge edge` joined to it, log no WARN or ERROR. (A real
//! problem still does: the other tests see those.)

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{CLOUD_FREE_PORTS, wait_until};

/// `kedge <args>` at the default log level, its log (stderr) into `log`.
fn spawn(args: &[&str], log: &Path) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kedge"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(common::append_to(log))
        .spawn()
        .expect("kedge starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// The value printed after `key:` (`CloudHub: wss://127.0.0.1:1234`).
fn printed(lines: &std::sync::mpsc::Receiver<String>, key: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("kedge prints {key}"));
        if let Some(v) = line.trim().strip_prefix(key) {
            return v.trim_start_matches(':').trim().to_string();
        }
    }
}

fn port(addr: &str) -> String {
    addr.rsplit(':').next().expect("port").to_string()
}

/// SIGTERM, then the process must end by itself, successfully, within 20 s.
fn stop(mut child: Child, what: &str) {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "SIGTERM to {what}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "{what} ended with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The log's WARN and ERROR lines; the log must show the process ran (INFO lines).
fn complaints(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).expect("log");
    assert!(
        text.contains("INFO"),
        "an empty log proves nothing:\n{text}"
    );
    text.lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(String::from)
        .collect()
}

fn kubectl(kubeconfig: &str, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn node_ready(kubeconfig: &str, node: &str) -> bool {
    let jsonpath = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
    kubectl(kubeconfig, &["get", "node", node, "-o", jsonpath]) == "True"
}

#[test]
fn kedge_up_starts_and_stops_without_a_warning() {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("up.log");
    let data = dir.path().join("data").display().to_string();
    let mut args = vec![
        "up",
        "--demo",
        "--data-dir",
        &data,
        "--cri-endpoint",
        "none",
    ];
    args.extend(["--mqtt-port", "0", "--servicebus-port", "0"]);
    args.extend(CLOUD_FREE_PORTS);
    let (child, lines) = spawn(&args, &log);
    let kubeconfig = printed(&lines, "kubeconfig");
    wait_until(Duration::from_secs(30), "the node Ready", || {
        node_ready(&kubeconfig, "kube-edge-1").then_some(())
    });
    // The demo device reached the edge and its counter runs.
    let jsonpath = "jsonpath={.status.twins[0].desired.value}";
    wait_until(Duration::from_secs(30), "the demo device", || {
        (kubectl(&kubeconfig, &["get", "device", "counter", "-o", jsonpath]) == "OFF").then_some(())
    });
    stop(child, "kedge up");
    let bad = complaints(&log);
    assert!(
        bad.is_empty(),
        "warnings on the normal path:\n{}",
        bad.join("\n")
    );
}

#[test]
fn kedge_cloud_and_edge_start_and_stop_without_a_warning() {
    let dir = tempfile::tempdir().expect("dir");
    let (cloud_log, edge_log) = (dir.path().join("cloud.log"), dir.path().join("edge.log"));
    let data = dir.path().join("cloud").display().to_string();
    let mut args = vec!["cloud", "--data-dir", &data, "--bind", "127.0.0.1"];
    args.extend(CLOUD_FREE_PORTS);
    let (cloud, lines) = spawn(&args, &cloud_log);
    let kubeconfig = printed(&lines, "kubeconfig");
    let hub = port(&printed(&lines, "CloudHub"));
    let join = port(&printed(&lines, "join server"));
    let token = Command::new(env!("CARGO_BIN_EXE_kedge"))
        .args(["token", "--data-dir", &data])
        .output()
        .expect("kedge token");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let edge_data = dir.path().join("edge").display().to_string();
    let (edge, _) = spawn(
        &[
            "edge",
            "--node-name",
            "quiet-1",
            "--cloud",
            "127.0.0.1",
            "--hub-port",
            &hub,
            "--https-port",
            &join,
            "--token",
            &token,
            "--data-dir",
            &edge_data,
            "--metrics-port",
            "0",
            "--mqtt-port",
            "0",
            "--servicebus-port",
            "0",
            "--cri-endpoint",
            "none",
        ],
        &edge_log,
    );
    wait_until(Duration::from_secs(30), "the node Ready", || {
        node_ready(&kubeconfig, "quiet-1").then_some(())
    });
    stop(edge, "kedge edge");
    // The edge left: the cloud marks the node NotReady at once, as a normal event.
    wait_until(Duration::from_secs(10), "the node NotReady", || {
        (!node_ready(&kubeconfig, "quiet-1")).then_some(())
    });
    stop(cloud, "kedge cloud");
    for log in [&cloud_log, &edge_log] {
        let bad = complaints(log);
        assert!(
            bad.is_empty(),
            "warnings on the normal path in {}:\n{}",
            log.display(),
            bad.join("\n")
        );
    }
}
