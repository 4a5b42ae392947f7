//! Secrets never reach the logs: a cloud and an edge at debug level, joined with a token, with a
//! router token and router calls made, print none of the secrets they hold.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A kedge process whose stdout and stderr lines are all kept.
struct Logged {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Logged {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kedge"));
        cmd.args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("kedge starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout"));
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr"));
        for stream in [out, err] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().expect("lines").push(l);
                }
            });
        }
        Logged { child, lines }
    }

    fn text(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Waits for a line containing `what`; returns it.
    fn wait_for(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find(|l| l.contains(what))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} in:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port(line: &str) -> String {
    line.rsplit(':')
        .next()
        .expect("port")
        .trim_end_matches("/metrics")
        .to_string()
}

#[test]
fn no_secret_is_logged_at_debug_level() {
    let cloud_dir = tempfile::tempdir().expect("tempdir");
    let edge_dir = tempfile::tempdir().expect("tempdir");
    let cloud_data = cloud_dir.path().to_str().expect("utf-8");
    let router_token = "router-s3cret-0123456789abcdef";
    let cloud = Logged::start(
        &["cloud", "--data-dir", cloud_data, "--bind", "127.0.0.1"]
            .into_iter()
            .chain(common::CLOUD_FREE_PORTS)
            .collect::<Vec<_>>(),
        &[("KEDGE_ROUTER_TOKEN", router_token)],
    );
    let hub = port(&cloud.wait_for("CloudHub:"));
    let join = port(&cloud.wait_for("join server:"));
    let router = port(&cloud.wait_for("router:"));
    let out = Command::new(env!("CARGO_BIN_EXE_kedge"))
        .args(["token", "--data-dir", cloud_data])
        .output()
        .expect("kedge token");
    let join_token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(join_token.len() > 20, "a join token: {join_token:?}");
    let edge = Logged::start(
        &[
            "edge",
            "--data-dir",
            edge_dir.path().to_str().expect("utf-8"),
            "--node-name",
            "secret-edge",
            "--cloud",
            "127.0.0.1",
            "--hub-port",
            &hub,
            "--https-port",
            &join,
            "--mqtt-port",
            "0",
            "--servicebus-port",
            "0",
            "--metrics-port",
            "0",
            "--cri-endpoint",
            "none",
        ],
        &[("KEDGE_TOKEN", &join_token)],
    );
    edge.wait_for("connected to CloudHub");
    // Router calls with the right token and a wrong one.
    let url = format!("http://127.0.0.1:{router}/secret-edge/default/a");
    for auth in [format!("Bearer {router_token}"), "Bearer wrong".to_string()] {
        let auth = format!("Authorization: {auth}");
        let status = common::http_status(&["-X", "POST", "-d", "x", "-H", &auth, &url]);
        assert!(!status.is_empty());
    }
    cloud.wait_for("registered node");

    let admin = std::fs::read_to_string(cloud_dir.path().join("admin.token")).expect("admin");
    let logs = format!("{}\n{}", cloud.text(), edge.text());
    assert!(
        logs.lines().count() > 20,
        "debug logs were written:\n{logs}"
    );
    // The scan sees what the processes log (the node's name is logged, harmlessly).
    assert!(logs.contains("secret-edge"), "{logs}");
    for (what, secret) in [
        ("the admin token", admin.trim()),
        ("the join token", join_token.as_str()),
        ("the router token", router_token),
        ("a private key", "PRIVATE KEY"),
    ] {
        assert!(!logs.contains(secret), "{what} is in the logs");
    }
    // The join token's secret half alone must not show either.
    if let Some((_, secret_half)) = join_token.split_once('.') {
        assert!(
            !logs.contains(secret_half),
            "the join token's secret is in the logs"
        );
    }
}
