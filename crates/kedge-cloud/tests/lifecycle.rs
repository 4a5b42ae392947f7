//! Node lifecycle: an edge node that went silent while no session was open turns NotReady.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use serde_json::json;

fn ready(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

/// Starts a cloud over a silent node ("ghost") and a fresh one; returns how long after the
/// start the ghost turned NotReady.
async fn ghost_turns_not_ready(after_start: Duration) -> Duration {
    let api = common::api().await;
    let client = api.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let ten_min_ago = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(600))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    for (name, beat) in [("ghost", &ten_min_ago), ("fresh", &now)] {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": name,
            "labels": {"node-role.kubernetes.io/edge": ""}}}))
        .expect("node");
        nodes
            .create(&PostParams::default(), &n)
            .await
            .expect("create");
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "lastHeartbeatTime": beat, "lastTransitionTime": beat}]}});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("status");
    }
    let mut cfg = common::cloud_config(api.dir.path());
    cfg.lifecycle = kedge_cloud::edgecontroller::Lifecycle {
        grace: Duration::from_secs(60),
        every: Duration::from_millis(100),
        after_start,
    };
    // Taken before the cloud's own start, so `took` can only overstate the wait.
    let started = tokio::time::Instant::now();
    let cloud = kedge_cloud::start(cfg, client).await.expect("cloud");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ghost = nodes.get("ghost").await.expect("ghost");
        if ready(&ghost) == "Unknown" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ghost never turned NotReady"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        ready(&nodes.get("fresh").await.expect("fresh")),
        "True",
        "a fresh heartbeat is left alone"
    );
    let took = started.elapsed();
    cloud.shutdown().await;
    api.server.shutdown().await;
    took
}

#[tokio::test]
async fn silent_nodes_without_a_session_turn_not_ready() {
    ghost_turns_not_ready(Duration::ZERO).await;
}

#[tokio::test]
async fn no_node_turns_not_ready_right_after_the_cloud_starts() {
    let after_start = Duration::from_secs(2);
    let took = ghost_turns_not_ready(after_start).await;
    assert!(
        took >= after_start,
        "the ghost turned NotReady {took:?} after the start, within {after_start:?}"
    );
}

fn object_syncs(client: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("reliablesyncs.kubeedge.io", "v1alpha1", "ObjectSync"),
        "objectsyncs",
    );
    Api::namespaced_with(client.clone(), "default", &ar)
}

async fn sync_names(syncs: &Api<DynamicObject>) -> Vec<String> {
    let mut names: Vec<String> = syncs
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|o| o.name_any())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn deleted_nodes_lose_their_sync_records() {
    let api = common::api().await;
    let client = api.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    for name in ["edge", "edge.a"] {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": name}})).expect("node");
        nodes
            .create(&PostParams::default(), &n)
            .await
            .expect("node");
    }
    let syncs = object_syncs(&client);
    let uid = |i: u8| format!("0000000{i}-0000-4000-8000-000000000000");
    // Records of `edge`, of `edge.a` (a name that `edge.` prefixes), and of a node deleted
    // while the cloud was down.
    for name in [
        format!("edge.{}", uid(1)),
        format!("edge.a.{}", uid(2)),
        format!("gone.{}", uid(3)),
    ] {
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "reliablesyncs.kubeedge.io/v1alpha1", "kind": "ObjectSync",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"objectAPIVersion": "v1", "objectKind": "ConfigMap", "objectName": "c"}}))
        .expect("sync");
        syncs
            .create(&PostParams::default(), &o)
            .await
            .expect("sync");
    }
    let cloud = kedge_cloud::start(common::cloud_config(api.dir.path()), client.clone())
        .await
        .expect("cloud");
    common::wait_for("the orphaned record to go", 10, async || {
        sync_names(&syncs).await == [format!("edge.{}", uid(1)), format!("edge.a.{}", uid(2))]
    })
    .await;
    nodes
        .delete("edge", &Default::default())
        .await
        .expect("delete node");
    common::wait_for(
        "the deleted node's record to go, and only it",
        10,
        async || sync_names(&syncs).await == [format!("edge.a.{}", uid(2))],
    )
    .await;
    cloud.shutdown().await;
    api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_edge_whose_node_is_deleted_registers_again() {
    let api = common::api().await;
    let cloud = kedge_cloud::start(common::cloud_config(api.dir.path()), api.client.clone())
        .await
        .expect("cloud");
    let token = cloud.ca.token(Duration::from_secs(60)).expect("token");
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let mut ecfg = kedge_edge::EdgeConfig::new(edge_dir.path(), "edge-1", "127.0.0.1", &token);
    ecfg.hub_port = cloud.hub_addr.port();
    ecfg.https_port = cloud.join_addr.port();
    let _edge = kedge_edge::start(ecfg).await.expect("edge");
    let nodes: Api<Node> = Api::all(api.client.clone());
    common::wait_for("the node to register", 30, async || {
        nodes.get_opt("edge-1").await.ok().flatten().is_some()
    })
    .await;
    let sessions = cloud.hub.sessions_total();
    nodes
        .delete("edge-1", &Default::default())
        .await
        .expect("delete node");
    // The cloud ends the session; the edge reconnects and registers again, as kubelet does.
    common::wait_for("a new session and the node back", 30, async || {
        cloud.hub.sessions_total() > sessions
            && nodes
                .get_opt("edge-1")
                .await
                .ok()
                .flatten()
                .is_some_and(|n| ready(&n) == "True")
    })
    .await;
    cloud.shutdown().await;
    api.server.shutdown().await;
}
