//! The channel under faults, with real processes: kill -9 of the cloud mid-stream, and an edge
//! restarted while the cloud is unreachable.

mod common;

use std::time::Duration;

use common::{EdgeProc, Kedge, wait_until};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kedge_edge::metamanager::MetaStore;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// Every pod of the API, by edge resource key, with its resourceVersion.
async fn cloud_state(pods: &Api<Pod>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pods
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|p| {
            let name = p.metadata.name.unwrap_or_default();
            (
                format!("default/pod/{name}"),
                p.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

fn edge_state(store: &MetaStore) -> Vec<(String, String)> {
    store
        .keys("pod")
        .expect("keys")
        .into_iter()
        .map(|k| {
            let rv = store
                .get(&k)
                .expect("get")
                .and_then(|p| p["metadata"]["resourceVersion"].as_str().map(String::from));
            (k, rv.unwrap_or_default())
        })
        .collect()
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(
        json!({"metadata": {"name": format!("p{i}"), "labels": {"seq": "0"}},
        "spec": {"nodeName": "edge-a", "containers": [{"name": "c", "image": "busybox:1"}]}}),
    )
    .expect("pod")
}

async fn update(pods: &Api<Pod>, range: std::ops::Range<usize>) -> usize {
    stream::iter(range)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let p = json!({"metadata": {"labels": {"seq": i.to_string()}}});
                pods.patch(
                    &format!("p{}", i % 10),
                    &PatchParams::default(),
                    &Patch::Merge(&p),
                )
                .await
            }
        })
        .buffer_unordered(4)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_converges_after_the_cloud_is_killed_mid_stream() {
    let cloud_dir = tempfile::tempdir().expect("tempdir");
    let edge_dir = tempfile::tempdir().expect("tempdir");
    let mut cloud = Kedge::cloud(cloud_dir.path());
    let (api_port, hub_port, join_port) = (cloud.port, cloud.hub_port, cloud.join_port);
    let _edge = EdgeProc::start(&cloud, edge_dir.path(), "edge-a", &cloud.token());
    let pods: Api<Pod> = Api::namespaced(cloud.client().await, "default");
    stream::iter(0..10)
        .map(|i| {
            let pods = pods.clone();
            async move { pods.create(&PostParams::default(), &pod(i)).await }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<_>>()
        .await
        .expect("create");
    // 1,000 updates; the cloud dies with kill -9 half-way through them.
    assert_eq!(update(&pods, 0..500).await, 500);
    cloud.kill9();
    let cloud = Kedge::cloud_on(cloud_dir.path(), api_port, hub_port, join_port);
    let pods: Api<Pod> = Api::namespaced(cloud.client().await, "default");
    assert_eq!(update(&pods, 500..1000).await, 500);

    let store = MetaStore::open(&edge_dir.path().join("edge.db")).expect("edge store");
    let want = cloud_state(&pods).await;
    assert_eq!(want.len(), 10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while edge_state(&store) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "edge {:?} != cloud {want:?}",
            edge_state(&store)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p9 = store.get("default/pod/p9").expect("get").expect("p9");
    assert_eq!(
        p9["metadata"]["labels"]["seq"], "999",
        "the last update won"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_restarted_without_its_cloud_keeps_its_store() {
    let cloud_dir = tempfile::tempdir().expect("tempdir");
    let edge_dir = tempfile::tempdir().expect("tempdir");
    let mut cloud = Kedge::cloud(cloud_dir.path());
    let mut edge = EdgeProc::start(&cloud, edge_dir.path(), "edge-a", &cloud.token());
    let pods: Api<Pod> = Api::namespaced(cloud.client().await, "default");
    pods.create(&PostParams::default(), &pod(1))
        .await
        .expect("create");
    let db = edge_dir.path().join("edge.db");
    wait_until(Duration::from_secs(30), "the pod at the edge", || {
        MetaStore::open(&db)
            .ok()?
            .get("default/pod/p1")
            .ok()?
            .map(|_| ())
    });
    cloud.kill9();
    edge.kill9();
    // The cloud is gone; the edge starts from what it holds (its certificate: no join) and keeps
    // trying the cloud.
    let (mut edge, log) = EdgeProc::start_logged(&cloud, edge_dir.path(), "edge-a", "");
    let retrying = std::iter::from_fn(|| log.recv_timeout(Duration::from_secs(30)).ok())
        .find(|l| l.contains("cannot connect to CloudHub"));
    assert!(
        retrying.is_some(),
        "the restarted edge runs and retries the cloud"
    );
    assert!(edge.alive());
    let store = MetaStore::open(&db).expect("store");
    let p1 = store
        .get("default/pod/p1")
        .expect("get")
        .expect("still there");
    assert_eq!(p1["spec"]["nodeName"], "edge-a");
}
