//! ConfigMaps and Secrets a pod needs that the edge does not hold, asked of a stock cloudcore.
//! kedge's cloud sends a node every object its pods use; cloudcore sends only changes to those
//! it knows a node uses, and answers a `query` for the rest (KubeEdge's edge asks on a miss).
//! So a miss (`Pods::object`) is noted, and while connected to cloudcore each noted object is
//! asked for — at most once per `AGAIN` — stored as if the cloud had sent it, and Edged woken.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kedge_core::dialect::Dialect;
use kedge_core::envelope::{Message, group, op};

use crate::edgehub::client::EdgeHub;
use crate::metamanager::MetaStore;

/// How long after one query the same object may be asked for again.
const AGAIN: Duration = Duration::from_secs(10);
/// How long an answer is waited for.
const ANSWER: Duration = Duration::from_secs(10);

/// Objects pods needed and the edge lacked: resource → when last asked (monotonic ms).
#[derive(Default)]
pub struct Missing(Mutex<HashMap<String, Option<u64>>>);

impl Missing {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<u64>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `resource` (`<ns>/configmap/<name>`, `<ns>/secret/<name>`) was needed and not found.
    pub fn note(&self, resource: &str) {
        self.map().entry(resource.to_string()).or_insert(None);
    }

    /// The noted objects not asked for within `AGAIN`, marked as asked now.
    fn due(&self, now_ms: u64) -> Vec<String> {
        let mut map = self.map();
        let again = AGAIN.as_millis() as u64;
        let due: Vec<String> = map
            .iter()
            .filter(|(_, at)| at.is_none_or(|t| now_ms.saturating_sub(t) >= again))
            .map(|(r, _)| r.clone())
            .collect();
        for r in &due {
            map.insert(r.clone(), Some(now_ms));
        }
        due
    }

    fn found(&self, resource: &str) {
        self.map().remove(resource);
    }
}

/// The object in cloudcore's answer to a query of `resource`, if it is one.
pub fn object_in(answer: &Message, resource: &str) -> Option<serde_json::Value> {
    let name = resource.rsplit('/').next()?;
    let c = &answer.content;
    (answer.route.operation == op::RESPONSE
        && c.pointer("/metadata/name").and_then(|n| n.as_str()) == Some(name))
    .then(|| c.clone())
}

/// Asks cloudcore for what pods miss, while connected to one.
pub async fn run(
    missing: Arc<Missing>,
    hub: EdgeHub,
    meta: Arc<MetaStore>,
    wake: impl Fn() + Send + 'static,
) {
    let cloud = hub.cloud();
    let connected = hub.connected();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if !*connected.borrow() || *cloud.borrow() != Dialect::KubeEdge {
            continue;
        }
        for resource in missing.due(kedge_core::clock::monotonic_ms()) {
            let q = Message::new(
                "edged",
                group::RESOURCE,
                op::QUERY,
                &resource,
                serde_json::Value::Null,
            );
            let Some(obj) = hub
                .request(q, ANSWER)
                .await
                .and_then(|a| object_in(&a, &resource))
            else {
                tracing::debug!(resource, "the cloud has no such object (yet)");
                continue;
            };
            let stored = Message::new(
                "edgecontroller",
                group::RESOURCE,
                op::INSERT,
                &resource,
                obj,
            );
            let (meta, m) = (meta.clone(), stored);
            let stored = tokio::task::spawn_blocking(move || meta.apply(&m)).await;
            match stored
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
            {
                Ok(_) => {
                    tracing::info!(resource, "fetched from the cloud for a pod");
                    missing.found(&resource);
                    wake();
                }
                Err(e) => tracing::warn!(resource, error = %e, "could not store a fetched object"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_miss_is_asked_for_at_most_every_ten_seconds() {
        let m = Missing::default();
        m.note("default/configmap/kube-root-ca.crt");
        assert_eq!(m.due(1_000), ["default/configmap/kube-root-ca.crt"]);
        assert!(m.due(5_000).is_empty());
        m.note("default/configmap/kube-root-ca.crt");
        assert_eq!(m.due(11_000).len(), 1);
        m.found("default/configmap/kube-root-ca.crt");
        assert!(m.due(30_000).is_empty());
    }

    #[test]
    fn only_the_object_asked_for_is_taken_from_an_answer() {
        let q = Message::new(
            "edged",
            "resource",
            "query",
            "default/configmap/cm",
            json!(null),
        );
        let cm = json!({"metadata": {"name": "cm", "namespace": "default"}, "data": {"a": "1"}});
        assert_eq!(
            object_in(&q.response(cm.clone()), "default/configmap/cm"),
            Some(cm)
        );
        // cloudcore answers a miss with the API's error.
        let err = json!({"ErrStatus": {"code": 404, "reason": "NotFound"}});
        assert_eq!(object_in(&q.response(err), "default/configmap/cm"), None);
    }
}
