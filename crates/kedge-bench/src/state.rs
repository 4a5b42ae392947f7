//! Per-node state for `hollow-edges`: for each node, ConfigMaps, pods bound to it that use them
//! (`envFrom`, so the ConfigMaps go with the pods), and Devices bound to it, all of one
//! DeviceModel. Created through the API before the nodes connect.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use crate::api::progress;

pub struct PerNode {
    pub pods: usize,
    pub configmaps: usize,
    pub devices: usize,
}

const MODEL: &str = "hollow-model";

fn devices(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("devices.kubeedge.io", "v1alpha2", kind),
        plural,
    )
}

/// What one node gets: (kind, object).
fn objects(node: &str, n: &PerNode) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    let cms: Vec<String> = (0..n.configmaps)
        .map(|j| format!("{node}-cm-{j}"))
        .collect();
    for cm in &cms {
        out.push((
            "configmap",
            json!({"metadata": {"name": cm}, "data": {"key": "value", "node": node}}),
        ));
    }
    let env_from: Vec<Value> = cms
        .iter()
        .map(|c| json!({"configMapRef": {"name": c}}))
        .collect();
    for k in 0..n.pods {
        out.push((
            "pod",
            json!({"metadata": {"name": format!("{node}-pod-{k}"), "labels": {"app": "hollow"}},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox",
                "command": ["sleep", "3600"], "envFrom": env_from}]}}),
        ));
    }
    for d in 0..n.devices {
        out.push(("device", json!({"apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "Device",
            "metadata": {"name": format!("{node}-dev-{d}")},
            "spec": {"deviceModelRef": {"name": MODEL}, "nodeSelector": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            "status": {"twins": [{"propertyName": "status",
                "desired": {"metadata": {"type": "string"}, "value": "OFF"}}]}})));
    }
    out
}

async fn create(client: &kube::Client, kind: &str, obj: Value) -> anyhow::Result<()> {
    let pp = PostParams::default();
    match kind {
        "configmap" => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
            api.create(&pp, &serde_json::from_value(obj)?).await?;
        }
        "pod" => {
            let api: Api<Pod> = Api::namespaced(client.clone(), "default");
            api.create(&pp, &serde_json::from_value(obj)?).await?;
        }
        _ => {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), "default", &devices("Device", "devices"));
            api.create(&pp, &serde_json::from_value(obj)?).await?;
        }
    }
    Ok(())
}

impl PerNode {
    /// Creates every node's objects; returns how long it took, in seconds.
    pub async fn create(
        &self,
        client: &kube::Client,
        nodes: &[String],
        concurrency: usize,
    ) -> anyhow::Result<f64> {
        let started = Instant::now();
        if self.devices > 0 {
            let model: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "DeviceModel",
                "metadata": {"name": MODEL},
                "spec": {"properties": [{"name": "status", "type": {"string": {"accessMode": "ReadWrite", "defaultValue": "OFF"}}}]}}))?;
            let api: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                "default",
                &devices("DeviceModel", "devicemodels"),
            );
            api.create(&PostParams::default(), &model).await?;
        }
        let all: Vec<(&'static str, Value)> = nodes.iter().flat_map(|n| objects(n, self)).collect();
        let total = all.len();
        let done = std::sync::atomic::AtomicUsize::new(0);
        stream::iter(all)
            .map(|(kind, obj)| {
                let done = &done;
                async move {
                    create(client, kind, obj).await?;
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n.is_multiple_of(1000) {
                        progress("objects created", n, total);
                    }
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        if total > 0 {
            eprintln!();
        }
        Ok(started.elapsed().as_secs_f64())
    }
}
