//! Edge nodes over the real channel: separate `kedge cloud` and `kedge edge` processes.

mod common;

use std::time::Duration;

use common::{EdgeProc, Kedge, wait_until};

#[test]
fn kedge_up_brings_a_ready_edge_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = Kedge::up(dir.path(), 0);
    wait_until(Duration::from_secs(20), "kube-edge-1 Ready", || {
        (k.node_ready("kube-edge-1") == "True").then_some(())
    });
    let roles = k.ok(&[
        "get",
        "node",
        "kube-edge-1",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(roles.contains("node-role.kubernetes.io/edge"), "{roles}");
    // The node's Lease: created by the cloud, then renewed (the edge renews every 10 s; the
    // cloud writes gathered renewals once a second).
    let lease = |field: &str| {
        let out = k.kubectl(&[
            "get",
            "lease",
            "kube-edge-1",
            "-n",
            "kube-node-lease",
            "-o",
            &format!("jsonpath={{.spec.{field}}}"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = wait_until(Duration::from_secs(20), "the node's Lease", || {
        let t = lease("renewTime");
        (!t.is_empty()).then_some(t)
    });
    assert_eq!(lease("holderIdentity"), "kube-edge-1");
    assert_eq!(lease("leaseDurationSeconds"), "40");
    wait_until(Duration::from_secs(30), "the Lease renewed", || {
        let t = lease("renewTime");
        (!t.is_empty() && t != first).then_some(())
    });
    // The cloud's and the edge's metrics, and health.
    wait_until(
        Duration::from_secs(20),
        "metrics of a connected node",
        || {
            let m = common::http_get(&k.metrics);
            (m.contains("kedge_cloudhub_connected_nodes 1")
                && m.contains("kedge_edge_connected 1")
                && m.contains("kedge_downstream_acks_total")
                && m.contains("kedge_edge_outbox_messages"))
            .then_some(())
        },
    );
    assert_eq!(
        common::http_get(&k.metrics.replace("/metrics", "/healthz")),
        "ok"
    );
}

#[test]
fn an_edge_joins_goes_not_ready_when_killed_and_comes_back_without_a_token() {
    let cloud_dir = tempfile::tempdir().expect("tempdir");
    let edge_dir = tempfile::tempdir().expect("tempdir");
    let k = Kedge::cloud(cloud_dir.path());
    let mut edge = EdgeProc::start(&k, edge_dir.path(), "edge-a", &k.token());
    wait_until(Duration::from_secs(20), "edge-a Ready", || {
        (k.node_ready("edge-a") == "True").then_some(())
    });
    edge.kill9();
    wait_until(Duration::from_secs(60), "edge-a NotReady", || {
        (k.node_ready("edge-a") == "Unknown").then_some(())
    });
    assert!(k.ok(&["get", "nodes"]).contains("NotReady"));
    // Its certificate is kept: no token needed to come back.
    let _edge = EdgeProc::start(&k, edge_dir.path(), "edge-a", "");
    wait_until(Duration::from_secs(20), "edge-a Ready again", || {
        (k.node_ready("edge-a") == "True").then_some(())
    });
}

#[test]
fn a_bad_token_is_refused_with_a_clear_error() {
    let cloud_dir = tempfile::tempdir().expect("tempdir");
    let edge_dir = tempfile::tempdir().expect("tempdir");
    let k = Kedge::cloud(cloud_dir.path());
    let good = k.token();
    let (hash, jwt) = good.split_once('.').expect("hash.jwt");
    let wrong_hash = format!("{}.{jwt}", "0".repeat(hash.len()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kedge"))
        .args(["edge", "--node-name", "edge-b", "--cloud", "127.0.0.1"])
        .args([
            "--hub-port",
            &k.hub_port.to_string(),
            "--https-port",
            &k.join_port.to_string(),
        ])
        .arg("--data-dir")
        .arg(edge_dir.path())
        .env("KEDGE_TOKEN", &wrong_hash)
        .output()
        .expect("kedge edge runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the cloud's CA"), "{err}");
}

/// `kedge token --rotate` revokes every earlier token at once, in the running cloud; an edge
/// that joined before keeps its certificate and reconnects without a token.
#[test]
fn rotating_the_token_key_revokes_earlier_tokens() {
    let cloud_dir = tempfile::tempdir().expect("tempdir");
    let k = Kedge::cloud(cloud_dir.path());
    let old = k.token();
    let joined_dir = tempfile::tempdir().expect("tempdir");
    let mut joined = EdgeProc::start(&k, joined_dir.path(), "edge-a", &old);
    joined.kill9();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kedge"))
        .args(["token", "--rotate", "--data-dir"])
        .arg(cloud_dir.path())
        .output()
        .expect("kedge token runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rotated"));
    let new = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_ne!(new, old);

    let refused_dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kedge"))
        .args(["edge", "--node-name", "edge-b", "--cloud", "127.0.0.1"])
        .args(["--hub-port", &k.hub_port.to_string()])
        .args(["--https-port", &k.join_port.to_string()])
        .args([
            "--cri-endpoint",
            "none",
            "--mqtt-port",
            "0",
            "--servicebus-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .arg("--data-dir")
        .arg(refused_dir.path())
        .env("KEDGE_TOKEN", &old)
        .output()
        .expect("kedge edge runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rotated"), "{err}");

    let _b = EdgeProc::start(&k, refused_dir.path(), "edge-b", &new);
    let _a = EdgeProc::start(&k, joined_dir.path(), "edge-a", "");
    for node in ["edge-a", "edge-b"] {
        wait_until(Duration::from_secs(60), &format!("{node} Ready"), || {
            (k.node_ready(node) == "True").then_some(())
        });
    }
}
