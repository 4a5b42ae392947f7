//! Edge→cloud at-least-once with a real `kedge cloud` process: what the edge reports while the
//! cloud is dead (kill -9) waits in its SQLite outbox and is applied once the cloud is back.
//! The edge runs in this process so the test can produce 1,100 status reports.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Kedge;
use k8s_openapi::api::core::v1::Pod;
use kedge_core::envelope::Message;
use kube::api::{Api, PostParams};
use serde_json::json;

async fn wait_for(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status(name: &str, uid: &str, message: &str) -> Message {
    let content =
        json!({"UID": uid, "Name": name, "Status": {"phase": "Running", "message": message}});
    Message::new(
        "edged",
        "resource",
        "update",
        &format!("default/podstatus/{name}"),
        content,
    )
}

fn message_of(p: Pod) -> String {
    p.status.and_then(|s| s.message).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reported_while_the_cloud_is_dead_arrives_after() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("cloud dir");
    let mut cloud = Kedge::cloud(dir.path());
    let pods: Api<Pod> = Api::namespaced(cloud.client().await, "default");
    let mut uids: HashMap<String, String> = HashMap::new();
    for name in std::iter::once("web".to_string()).chain((0..100).map(|i| format!("job-{i}"))) {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"nodeName": "edge-1", "containers": [{"name": "c", "image": "busybox"}]}}))
        .expect("pod");
        let p = pods
            .create(&PostParams::default(), &p)
            .await
            .expect("create");
        uids.insert(name, p.metadata.uid.expect("uid"));
    }
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let mut ecfg =
        kedge_edge::EdgeConfig::new(edge_dir.path(), "edge-1", "127.0.0.1", &cloud.token());
    ecfg.hub_port = cloud.hub_port;
    ecfg.https_port = cloud.join_port;
    ecfg.status_every = Duration::from_secs(3600);
    let edge = kedge_edge::start(ecfg).await.expect("edge");
    let outbox = edge.outbox.clone();
    let mut connected = edge.hub.connected();
    wait_for("the node's registration to be acked", 60, async || {
        *connected.borrow_and_update() && outbox.is_empty()
    })
    .await;

    cloud.kill9();
    wait_for("the edge to notice", 60, async || {
        !*connected.borrow_and_update()
    })
    .await;
    // While the cloud is dead: 1,000 reports on one pod (they coalesce to the latest) and one
    // report on each of 100 others.
    for i in 0..1000 {
        let m = status("web", &uids["web"], &format!("update {i}"));
        outbox.push(m, Some("podstatus/default/web")).expect("push");
    }
    for i in 0..100 {
        let name = format!("job-{i}");
        outbox
            .push(status(&name, &uids[&name], &format!("job {i}")), None)
            .expect("push");
    }
    assert_eq!(outbox.len(), 101, "the latest of web, and every job's");

    // The cloud restarts on the same ports; the outbox drains only as the cloud acks.
    let cloud = Kedge::cloud_on(dir.path(), cloud.port, cloud.hub_port, cloud.join_port);
    wait_for("every report acked by the cloud", 60, async || {
        outbox.is_empty()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(cloud.client().await, "default");
    assert_eq!(
        message_of(pods.get("web").await.expect("web")),
        "update 999"
    );
    for i in 0..100 {
        let p = pods.get(&format!("job-{i}")).await.expect("job");
        assert_eq!(message_of(p), format!("job {i}"));
    }
    let metrics = common::http_get(&cloud.metrics);
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kedge_edgecontroller_refused_writes_total "));
    assert_eq!(refused, Some("0"), "no report was refused");
}
