//! eventbus → rest. The edge learns which topics to subscribe from the Rules themselves: each
//! eventbus-source Rule (and each servicebus-source one, whose `target_url` the edge then allows)
//! is delivered (acknowledged, resynced, deleted) to the node its `node_name` names, as pods are. What the edge then uploads (`<namespace>/<topic>`, op
//! `upload`, group `user`) is POSTed to the rule's target URL with header `NodeName`; the upload
//! is acknowledged only after a 2xx, so the edge's outbox re-sends it until the target takes it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use kedge_core::delivery::Outgoing;
use kedge_core::envelope::Message;
use kedge_core::resource::Kind;
use kedge_core::rule::content_to_body;
use kube::api::DynamicObject;

use super::Rules;
use crate::cloudhub::downstream::Downstream;
use crate::cloudhub::hub::Hub;
use crate::cloudhub::records::SyncRecord;
use crate::edgecontroller::resync::Placer;
use crate::objects::{deletion, outgoing};

impl Rules {
    /// The Rule objects that should be on `node`.
    fn rules_for(&self, node: &str) -> Vec<Arc<DynamicObject>> {
        let wanted: HashSet<String> = self.table().bus_rules(node).into_iter().collect();
        self.rules
            .state()
            .into_iter()
            .filter(|o| wanted.contains(&super::key(o)))
            .collect()
    }

    /// Offers every node what it should now have, and deletions for what it no longer should.
    pub(super) fn place(&self, downstream: &Downstream) {
        let mut placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
        let nodes: BTreeSet<String> = self
            .table()
            .bus_nodes()
            .into_iter()
            .chain(placed.keys().cloned())
            .collect();
        for node in nodes {
            let now: HashMap<String, Arc<DynamicObject>> = self
                .rules_for(&node)
                .into_iter()
                .filter_map(|o| Some((o.metadata.uid.clone()?, o)))
                .collect();
            let before = placed.remove(&node).unwrap_or_default();
            for (uid, (ns, name, rv)) in &before {
                if !now.contains_key(uid) {
                    let r = SyncRecord {
                        uid: uid.clone(),
                        rv: *rv,
                        hash: 0,
                        namespace: Some(ns.clone()),
                        kind: Kind::Rule,
                        name: name.clone(),
                    };
                    downstream.offer(&node, deletion(&r));
                }
            }
            let mut after = HashMap::new();
            for (uid, o) in now {
                if let Some(out) = outgoing(o.as_ref(), "rule", false) {
                    after.insert(
                        uid,
                        (
                            o.metadata.namespace.clone().unwrap_or_default(),
                            o.metadata.name.clone().unwrap_or_default(),
                            out.rv,
                        ),
                    );
                    downstream.offer(&node, out);
                }
            }
            if !after.is_empty() {
                placed.insert(node, after);
            }
        }
    }

    /// An upload from `node`: POSTed to its rule's target, acknowledged once the target took it.
    /// Until the rules are loaded (the cloud just started) nothing is answered: the edge re-sends,
    /// rather than dropping what a missing rule would make it drop.
    pub fn upload(self: &Arc<Self>, hub: &Arc<Hub>, node: &str, m: Message) {
        if !self.is_loaded() {
            tracing::debug!(
                node,
                "upload before the rules are loaded; the edge will re-send it"
            );
            return;
        }
        let topic = m.route.resource.clone();
        let Some(route) = self.table().bus(node, &topic).cloned() else {
            let why = format!("no eventbus rule for topic {topic} on node {node}");
            tracing::info!(node, topic, "{why}");
            let (hub, node) = (hub.clone(), node.to_string());
            tokio::spawn(async move {
                let _ = hub.send(&node, m.error_reply(&why)).await;
            });
            return;
        };
        let (hub, node, http) = (hub.clone(), node.to_string(), self.http.clone());
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let body = content_to_body(&m.content);
            let sent = http
                .post(&route.url)
                .header("NodeName", &node)
                .body(body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    stats.success(&route.rule);
                    let _ = hub.send(&node, m.ack()).await;
                }
                Ok(r) => {
                    let why = format!(
                        "{} answered {}; the edge re-sends the message",
                        route.url,
                        r.status()
                    );
                    tracing::warn!(rule = %route.rule, "{why}");
                    stats.failure(&route.rule, &why);
                }
                Err(e) => {
                    let why = format!(
                        "{} unreachable ({e}); the edge re-sends the message",
                        route.url
                    );
                    tracing::warn!(rule = %route.rule, "{why}");
                    stats.failure(&route.rule, &why);
                }
            }
        });
    }
}

/// eventbus- and servicebus-source Rules go to the node their `node_name` names.
impl Placer for Rules {
    fn name(&self) -> &'static str {
        "Rules and RuleEndpoints"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Rule]
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        async move {
            self.rules.wait_until_ready().await.is_ok()
                && self.endpoints.wait_until_ready().await.is_ok()
        }
        .boxed()
    }

    fn desired(&self, node: &str) -> Vec<Outgoing> {
        self.rules_for(node)
            .iter()
            .filter_map(|o| outgoing(o.as_ref(), "rule", false))
            .collect()
    }
}

/// The HTTP client for rest targets: system roots for https, ring as everywhere.
pub(super) fn http_client() -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}
