//! Node authorization of edge writes, over a real hub session: a node writes its own Node, and
//! the status of pods bound to it; anything else gets an `error` reply and is counted.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kedge_core::envelope::{Message, op};
use kedge_edge::edgehub::certificate::{Join, join};
use kedge_edge::edgehub::client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}))
    .expect("pod")
}

/// Sends `m` and returns the cloud's answer to it (`response` or `error`).
async fn ask(eh: &client::EdgeHub, down: &mut mpsc::Receiver<Message>, m: Message) -> Message {
    let id = m.header.id.clone();
    assert!(eh.send(m).await, "sent");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = tokio::time::timeout_at(deadline, down.recv())
            .await
            .expect("an answer in time")
            .expect("open");
        if got.header.parent_id == id {
            return got;
        }
    }
}

fn status_request(uid: &str, name: &str, phase: &str) -> Value {
    json!({"UID": uid, "Name": name, "Status": {"phase": phase}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_writes_only_what_is_bound_to_it() {
    let api = common::api().await;
    let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
    let mine = pods
        .create(&PostParams::default(), &pod("mine", "edge-1"))
        .await
        .expect("pod");
    let theirs = pods
        .create(&PostParams::default(), &pod("theirs", "edge-2"))
        .await
        .expect("pod");
    let cloud = kedge_cloud::start(common::cloud_config(api.dir.path()), api.client.clone())
        .await
        .expect("cloud");
    let token = cloud.ca.token(Duration::from_secs(60)).expect("token");
    let dir = tempfile::tempdir().expect("edge dir");
    let server = format!("https://127.0.0.1:{}", cloud.join_addr.port());
    let id = join(&Join {
        server: &server,
        node: "edge-1",
        token: &token,
        dir: dir.path(),
    })
    .await
    .expect("join");
    let (tx, mut down) = mpsc::channel(256);
    let eh = client::spawn(
        client::HubConfig::new(cloud.hub_addr.to_string(), "edge-1"),
        id,
        tx,
    )
    .expect("edgehub");
    let uid = |p: &Pod| p.metadata.uid.clone().expect("uid");
    let update =
        |res: &str, content: Value| Message::new("edged", "resource", op::UPDATE, res, content);

    // Its own pod's status is applied and acknowledged.
    let ok = update(
        "default/podstatus/mine",
        status_request(&uid(&mine), "mine", "Running"),
    );
    let answer = ask(&eh, &mut down, ok).await;
    assert_eq!(
        (answer.route.operation.as_str(), &answer.content),
        (op::RESPONSE, &json!("OK"))
    );
    let phase = pods
        .get("mine")
        .await
        .expect("pod")
        .status
        .and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Running"));

    // Refused: another node's pod, another node's status, objects no node writes.
    let refusals = [
        update(
            "default/podstatus/theirs",
            status_request(&uid(&theirs), "theirs", "Failed"),
        ),
        update("null/nodestatus/edge-2", json!({"conditions": []})),
        update("default/configmap/cfg", json!({"data": {"x": "y"}})),
        Message::new(
            "edged",
            "resource",
            op::DELETE,
            "default/pod/theirs",
            json!({"preconditions": {"uid": uid(&theirs)}}),
        ),
    ];
    for m in refusals {
        let what = format!("{} {}", m.route.operation, m.route.resource);
        let answer = ask(&eh, &mut down, m).await;
        assert_eq!(answer.route.operation, op::ERROR, "{what} is refused");
        let text = answer.content.as_str().unwrap_or_default().to_string();
        assert!(
            text.contains("edge-1") && text.contains("may not") || text.contains("not bound"),
            "{what}: {text}"
        );
    }
    let phase = pods
        .get("theirs")
        .await
        .expect("pod")
        .status
        .and_then(|s| s.phase);
    assert_ne!(
        phase.as_deref(),
        Some("Failed"),
        "another node's pod is untouched"
    );

    // A stale report (pod recreated, so another UID) is answered with an error, not applied.
    let stale = update(
        "default/podstatus/mine",
        status_request("old-uid", "mine", "Failed"),
    );
    let answer = ask(&eh, &mut down, stale).await;
    assert_eq!(answer.route.operation, op::ERROR);
    assert!(
        answer
            .content
            .as_str()
            .unwrap_or_default()
            .contains("no longer exists")
    );

    let refused = cloud_refused(&cloud);
    assert_eq!(
        refused, 4,
        "each refusal is counted; a stale report is not a refusal"
    );
    cloud.shutdown().await;
    api.server.shutdown().await;
}

fn cloud_refused(cloud: &kedge_cloud::Cloud) -> u64 {
    (cloud.metrics())()
        .iter()
        .find(|r| r.name == "kedge_edgecontroller_refused_writes")
        .map(|r| r.value)
        .expect("the refusal counter is exported")
}
