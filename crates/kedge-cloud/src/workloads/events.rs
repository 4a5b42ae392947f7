//! Events the workload controllers record (core/v1, what `kubectl describe` lists). Recording is
//! best effort and never delays a reconcile.

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};

#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    component: &'static str,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &'static str) -> Recorder {
        Recorder { client, component }
    }

    /// Records a Normal event about the object (`kind`, `meta`).
    pub fn normal(
        &self,
        kind: &str,
        api_version: &str,
        meta: &ObjectMeta,
        reason: &str,
        message: String,
    ) {
        self.record(kind, api_version, meta, "Normal", reason, message);
    }

    pub fn warning(
        &self,
        kind: &str,
        api_version: &str,
        meta: &ObjectMeta,
        reason: &str,
        message: String,
    ) {
        self.record(kind, api_version, meta, "Warning", reason, message);
    }

    fn record(
        &self,
        kind: &str,
        api_version: &str,
        meta: &ObjectMeta,
        type_: &str,
        reason: &str,
        message: String,
    ) {
        let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let name = meta.name.clone().unwrap_or_default();
        let now = Time(jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", rand::random::<u64>())),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some(kind.into()),
                api_version: Some(api_version.into()),
                name: Some(name),
                namespace: meta.namespace.clone(),
                uid: meta.uid.clone(),
                resource_version: meta.resource_version.clone(),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some(self.component.into()),
                host: None,
            }),
            reporting_component: Some(self.component.into()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "event not recorded");
            }
        });
    }
}
