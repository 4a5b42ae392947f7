//! Node lifecycle: an edge node that went silent while no session was open turns NotReady.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn ready(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn silent_nodes_without_a_session_turn_not_ready() {
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
    };
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
    cloud.shutdown().await;
    api.server.shutdown().await;
}
