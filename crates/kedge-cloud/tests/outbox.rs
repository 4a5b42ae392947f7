//! Edge→cloud at-least-once: what the edge sends while the cloud is down waits in its outbox
//! and arrives once the cloud is back.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kedge_core::envelope::Message;
use kube::api::{Api, PostParams};
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_the_cloud_is_down_arrive_after() {
    let api = common::api().await;
    // The pods whose status the edge reports: `web` (1,000 updates) and 100 one-off jobs.
    let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
    let mut uids = std::collections::HashMap::new();
    for name in std::iter::once("web".to_string()).chain((0..100).map(|i| format!("job-{i}"))) {
        let p: Pod =
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": "edge-1", "containers": [{"name": "c", "image": "busybox"}]}}))
            .expect("pod");
        let p = pods
            .create(&PostParams::default(), &p)
            .await
            .expect("create");
        uids.insert(name, p.metadata.uid.expect("uid"));
    }
    let report = |name: &str, message: String| json!({"UID": uids[name], "Name": name, "Status": {"phase": "Running", "message": message}});
    let mut cfg = common::cloud_config(api.dir.path());
    cfg.hub_port = free_port();
    let cloud = kedge_cloud::start(cfg.clone(), api.client.clone())
        .await
        .expect("cloud");
    let token = cloud.ca.token(Duration::from_secs(60)).expect("token");
    let edge_dir = tempfile::tempdir().expect("edge dir");
    let mut ecfg = kedge_edge::EdgeConfig::new(edge_dir.path(), "edge-1", "127.0.0.1", &token);
    ecfg.hub_port = cfg.hub_port;
    ecfg.https_port = cloud.join_addr.port();
    ecfg.status_every = Duration::from_secs(3600);
    let edge = kedge_edge::start(ecfg).await.expect("edge");
    let outbox = edge.outbox.clone();
    let mut connected = edge.hub.connected();
    common::wait_for("the node's registration to be acked", 60, async || {
        *connected.borrow_and_update() && outbox.is_empty()
    })
    .await;

    cloud.shutdown().await;
    common::wait_for("the edge to notice", 60, async || {
        !*connected.borrow_and_update()
    })
    .await;
    // While the cloud is down: 1,000 status updates of one object (they coalesce to the latest)
    // and 100 one-off messages.
    for i in 0..1000 {
        let m = Message::new(
            "edged",
            "resource",
            "update",
            "default/podstatus/web",
            report("web", format!("update {i}")),
        );
        outbox.push(m, Some("podstatus/default/web")).expect("push");
    }
    for i in 0..100 {
        let m = Message::new(
            "edged",
            "resource",
            "update",
            &format!("default/podstatus/job-{i}"),
            report(&format!("job-{i}"), format!("job {i}")),
        );
        outbox.push(m, None).expect("push");
    }
    assert_eq!(
        outbox.len(),
        101,
        "the latest status, and every one-off message"
    );

    // The cloud comes back on the same hub port; the outbox drains only as the cloud acks.
    let cloud = kedge_cloud::start(cfg, api.client.clone())
        .await
        .expect("cloud again");
    common::wait_for("every message acked by the cloud", 60, async || {
        outbox.is_empty()
    })
    .await;
    assert_eq!(outbox.bytes(), 0);
    // Acked means applied: every pod carries the latest status the edge reported.
    let message = |p: Pod| p.status.and_then(|s| s.message).unwrap_or_default();
    assert_eq!(message(pods.get("web").await.expect("web")), "update 999");
    for i in 0..100 {
        let p = pods.get(&format!("job-{i}")).await.expect("job");
        assert_eq!(message(p), format!("job {i}"));
    }
    assert_eq!(
        (cloud.metrics())()
            .iter()
            .find(|r| r.name == "kedge_edgecontroller_refused_writes")
            .map(|r| r.value),
        Some(0)
    );
    cloud.shutdown().await;
    api.server.shutdown().await;
}
