//! Events the workload controllers record (core/v1, what `kubectl describe` lists). Recording is
//! best effort and never delays a reconcile. As Kubernetes' recorder does, each object gets at
//! most 25 events at once and then one every 5 minutes (a ReplicaSet of 10,000 pods does not
//! write 10,000 `SuccessfulCreate` events).

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BURST: f64 = 25.0;
const REFILL: Duration = Duration::from_secs(300);

/// Events each object may still have: a token bucket per object (pure; time as an argument).
#[derive(Default)]
pub struct SpamFilter(HashMap<String, (f64, Instant)>);

impl SpamFilter {
    /// Whether an event about object `uid` may be written at `now` (and takes its token).
    pub fn allow(&mut self, uid: &str, now: Instant) -> bool {
        if self.0.len() > 10_000 {
            // Objects whose buckets are full again need no entry.
            self.0.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() / REFILL.as_secs_f64() < BURST
            });
        }
        let (tokens, at) = self.0.entry(uid.to_string()).or_insert((BURST, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() / REFILL.as_secs_f64()).min(BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    component: &'static str,
    spam: Arc<Mutex<SpamFilter>>,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &'static str) -> Recorder {
        Recorder {
            client,
            component,
            spam: Arc::default(),
        }
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
        let uid = meta.uid.as_deref().unwrap_or_default();
        let allowed = self
            .spam
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow(uid, Instant::now());
        if !allowed {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_gets_25_events_at_once_then_one_each_5_minutes() {
        let mut f = SpamFilter::default();
        let t = Instant::now();
        assert_eq!((0..30).filter(|_| f.allow("rs", t)).count(), 25);
        assert!(f.allow("other", t), "per object");
        assert!(!f.allow("rs", t + Duration::from_secs(60)));
        assert!(f.allow("rs", t + REFILL + Duration::from_secs(1)));
    }
}
