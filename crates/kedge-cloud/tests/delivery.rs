//! Cloud→edge delivery: what changes while an edge is away reaches it when it connects, and
//! what it acknowledged is recorded (ObjectSync), over real TLS and real SQLite.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use serde_json::json;

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": format!("p-{i:04}")},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "c", "image": "busybox:1"}]}}))
    .expect("pod")
}

struct Env {
    api: common::Api,
    edge_dir: tempfile::TempDir,
    client: kube::Client,
    cloud: kedge_cloud::Cloud,
}

async fn cloud() -> Env {
    let api = common::api().await;
    let client = api.client.clone();
    let cloud = kedge_cloud::start(common::cloud_config(api.dir.path()), client.clone())
        .await
        .expect("cloud");
    let edge_dir = tempfile::tempdir().expect("edge dir");
    Env {
        api,
        edge_dir,
        client,
        cloud,
    }
}

impl Env {
    async fn edge(&self) -> kedge_edge::Edge {
        let token = self.cloud.ca.token(Duration::from_secs(60)).expect("token");
        let mut ecfg =
            kedge_edge::EdgeConfig::new(self.edge_dir.path(), "edge-1", "127.0.0.1", &token);
        ecfg.hub_port = self.cloud.hub_addr.port();
        ecfg.https_port = self.cloud.join_addr.port();
        kedge_edge::start(ecfg).await.expect("edge")
    }

    async fn stop(self) {
        self.cloud.shutdown().await;
        self.api.server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_the_edge_is_away_all_arrive() {
    let env = cloud().await;
    let client = env.client.clone();
    // While no edge is connected: 1,000 pods for edge-1, then 100 of them deleted.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    stream::iter(0..1000)
        .map(|i| {
            let pods = pods.clone();
            async move { pods.create(&PostParams::default(), &pod(i)).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("creates");
    for i in 0..100 {
        pods.delete(&format!("p-{i:04}"), &DeleteParams::default())
            .await
            .expect("delete");
    }

    let edge = env.edge().await;
    let meta = edge.meta.clone();
    let want: Vec<String> = (100..1000)
        .map(|i| format!("default/pod/p-{i:04}"))
        .collect();
    common::wait_for("900 pods in the edge store", 120, async || {
        meta.keys("pod").expect("keys") == want
    })
    .await;

    // Acknowledgements are recorded as ObjectSync <node>.<uid>.
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("reliablesyncs.kubeedge.io", "v1alpha1", "ObjectSync"),
        "objectsyncs",
    );
    let syncs: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    common::wait_for("900 ObjectSyncs", 60, async || {
        syncs
            .list(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(0)
            == 900
    })
    .await;

    // Live deletions reach the connected edge too.
    for i in 100..110 {
        pods.delete(&format!("p-{i:04}"), &DeleteParams::default())
            .await
            .expect("delete");
    }
    common::wait_for("890 pods in the edge store", 60, async || {
        meta.keys("pod").expect("keys").len() == 890
    })
    .await;
    let first = meta
        .get("default/pod/p-0110")
        .expect("get")
        .expect("stored");
    assert_eq!(first["spec"]["nodeName"], "edge-1");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmaps_and_secrets_follow_the_pods_that_use_them() {
    let env = cloud().await;
    let pp = PostParams::default();
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    for name in ["used", "unused"] {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": "1"}}))
                .expect("cm");
        cms.create(&pp, &cm).await.expect("cm");
    }
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "creds"}, "stringData": {"pw": "x"}}))
            .expect("secret");
    secrets.create(&pp, &s).await.expect("secret");
    let app: Pod = serde_json::from_value(json!({"metadata": {"name": "app"}, "spec": {"nodeName": "edge-1",
        "containers": [{"name": "c", "image": "busybox:1", "envFrom": [{"secretRef": {"name": "creds"}}]}],
        "volumes": [{"name": "v", "configMap": {"name": "used"}}]}})).expect("pod");
    pods.create(&pp, &app).await.expect("pod");

    let edge = env.edge().await;
    let meta = edge.meta.clone();
    common::wait_for("the pod, its ConfigMap and its Secret", 30, async || {
        meta.keys("configmap").expect("keys") == ["default/configmap/used"]
            && meta.keys("secret").expect("keys") == ["default/secret/creds"]
            && meta.keys("pod").expect("keys") == ["default/pod/app"]
    })
    .await;
    // An update follows the ConfigMap to the node.
    let p = json!({"data": {"v": "2"}});
    cms.patch(
        "used",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&p),
    )
    .await
    .expect("patch");
    common::wait_for("the updated ConfigMap", 30, async || {
        meta.get("default/configmap/used")
            .expect("get")
            .is_some_and(|c| c["data"]["v"] == "2")
    })
    .await;
    // Without the pod, the node has no business with its ConfigMap and Secret.
    pods.delete("app", &DeleteParams::default())
        .await
        .expect("delete");
    common::wait_for("everything removed from the edge", 30, async || {
        meta.keys("pod").expect("keys").is_empty()
            && meta.keys("configmap").expect("keys").is_empty()
            && meta.keys("secret").expect("keys").is_empty()
    })
    .await;
    env.stop().await;
}
