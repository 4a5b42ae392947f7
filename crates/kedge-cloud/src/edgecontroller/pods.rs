//! Pods bound to edge nodes (`spec.nodeName`) go to those nodes: every change is offered to the
//! node's delivery queue, and a (re)connecting node is resynced against what it acknowledged.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kedge_core::delivery::Outgoing;
use kedge_core::envelope::{Message, group, op};
use kedge_core::resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::cloudhub::downstream::{Downstream, SyncRecord};

pub struct Pods {
    store: Store<Pod>,
    downstream: Arc<Downstream>,
}

fn message(
    namespace: &str,
    name: &str,
    rv: u64,
    delete: bool,
    content: serde_json::Value,
) -> Message {
    let operation = if delete { op::DELETE } else { op::UPDATE };
    let res = resource::object(namespace, "pod", name);
    Message::new("edgecontroller", group::RESOURCE, operation, &res, content)
        .with_resource_version(rv.to_string())
}

/// The node a pod is bound to and the delivery of this version of it.
fn outgoing(pod: &Pod, delete: bool) -> Option<(String, Outgoing)> {
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let uid = pod.metadata.uid.clone()?;
    let rv: u64 = pod.metadata.resource_version.as_deref()?.parse().ok()?;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone()?;
    let content = serde_json::to_value(pod).ok()?;
    let msg = message(&ns, &name, rv, delete, content);
    Some((
        node,
        Outgoing {
            uid,
            rv,
            delete,
            msg,
        },
    ))
}

impl Pods {
    /// Starts watching pods.
    pub fn start(client: kube::Client, downstream: Arc<Downstream>) -> Pods {
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(
            writer,
            watcher(Api::<Pod>::all(client), watcher::Config::default()),
        )
        .default_backoff();
        let ds = downstream.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                let (pod, delete) = match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (p, false),
                    Ok(watcher::Event::Delete(p)) => (p, true),
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "pod watch");
                        continue;
                    }
                };
                if let Some((node, out)) = outgoing(&pod, delete) {
                    ds.offer(&node, out);
                }
            }
        });
        Pods { store, downstream }
    }

    /// Offers `node` every pod it should have and a deletion for every pod it acknowledged that
    /// is gone. Waits for the first full list: resyncing against a partial one would delete.
    pub async fn resync(&self, node: &str, records: &[SyncRecord]) {
        if self.store.wait_until_ready().await.is_err() {
            return;
        }
        let mut desired = HashSet::new();
        for pod in self.store.state() {
            if let Some((n, out)) = outgoing(&pod, false)
                && n == node
            {
                desired.insert(out.uid.clone());
                self.downstream.offer(node, out);
            }
        }
        for r in records
            .iter()
            .filter(|r| r.kind == "pod" && !desired.contains(&r.uid))
        {
            let ns = r.namespace.as_deref().unwrap_or("");
            let msg = message(
                ns,
                &r.name,
                r.rv,
                true,
                serde_json::json!({"metadata": {"name": r.name, "namespace": ns, "uid": r.uid}}),
            );
            self.downstream.offer(
                node,
                Outgoing {
                    uid: r.uid.clone(),
                    rv: r.rv,
                    delete: true,
                    msg,
                },
            );
        }
    }
}
