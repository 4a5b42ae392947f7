//! Router: the seed's custom-message paths, and servicebus→rest (`servicebus`), from
//! `rules.kubeedge.io/v1` RuleEndpoints and Rules.
//! Every create, update and delete takes effect (the table is rebuilt from the watched objects;
//! KubeEdge ignores updates). The REST listener (`rest`) answers honestly: 404 no rule, 503 node
//! not connected, 502 the edge could not deliver, 504 no answer in time, 413 body too large.

pub mod eventbus;
pub mod rest;
pub mod servicebus;
pub mod status;

use std::sync::{Arc, RwLock};

use kedge_core::rule::{Endpoint, Rule, RuleTable};
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::runtime::reflector::{self, Store};
use serde_json::Value;

use crate::objects::watch_with_done;

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("rules.kubeedge.io", "v1", kind),
        plural,
    )
}

/// The rules in effect, rebuilt on every change.
pub struct Rules {
    endpoints: Store<DynamicObject>,
    rules: Store<DynamicObject>,
    table: RwLock<Arc<RuleTable>>,
    /// Where eventbus-source rules go to their nodes.
    downstream: Arc<crate::cloudhub::downstream::Downstream>,
    /// Per node, the rules it was given: uid → (namespace, name, resourceVersion).
    placed: std::sync::Mutex<std::collections::HashMap<String, Placed>>,
    http: reqwest::Client,
    /// Success and failure counts, written to each rule's status.
    pub stats: Arc<status::RuleStats>,
    /// Complete lists seen (endpoints and rules): the table is whole once both have arrived.
    lists: std::sync::atomic::AtomicU8,
    loaded: tokio::sync::Notify,
    /// What each rule's `Ready` condition was last set to (logged once per change).
    effects: std::sync::Mutex<std::collections::HashMap<String, status::Effect>>,
}

/// The rules a node was given: uid → (namespace, name, resourceVersion).
type Placed = std::collections::HashMap<String, (String, String, u64)>;

/// `namespace/name` of an object.
fn key(o: &DynamicObject) -> String {
    format!(
        "{}/{}",
        o.metadata.namespace.as_deref().unwrap_or_default(),
        o.metadata.name.as_deref().unwrap_or_default()
    )
}

/// An object as JSON with its metadata (a DynamicObject's `data` leaves it out).
fn whole(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or_default()
}

fn endpoint(o: &DynamicObject) -> Option<Endpoint> {
    Endpoint::from_object(&whole(o))
}

fn rule(o: &DynamicObject) -> Option<Rule> {
    Rule::from_object(&whole(o))
}

impl Rules {
    pub fn start(
        client: kube::Client,
        downstream: Arc<crate::cloudhub::downstream::Downstream>,
        replicas: Option<Arc<crate::replicas::Replicas>>,
    ) -> Arc<Rules> {
        let (er, rr) = (
            resource("RuleEndpoint", "ruleendpoints"),
            resource("Rule", "rules"),
        );
        let ew = reflector::store::Writer::new(er.clone());
        let rw = reflector::store::Writer::new(rr.clone());
        let rules = Arc::new(Rules {
            endpoints: ew.as_reader(),
            rules: rw.as_reader(),
            table: RwLock::default(),
            downstream,
            placed: Default::default(),
            http: eventbus::http_client(),
            stats: Arc::default(),
            lists: std::sync::atomic::AtomicU8::new(0),
            loaded: tokio::sync::Notify::new(),
            effects: Default::default(),
        });
        tokio::spawn(rules.stats.clone().flush_loop(client.clone(), replicas));
        let changed = |r: &Rules, _: &DynamicObject, _| r.rebuild();
        let er_api = Api::all_with(client.clone(), &er);
        watch_with_done(er_api, ew, rules.clone(), changed, Rules::listed);
        let rr_api = Api::all_with(client, &rr);
        watch_with_done(rr_api, rw, rules.clone(), changed, Rules::listed);
        rules
    }

    /// A complete list arrived: rebuild from the whole store; once both kinds are in, the
    /// table is whole.
    fn listed(&self) {
        self.rebuild();
        if self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 >= 2 {
            self.loaded.notify_waiters();
        }
    }

    /// Whether both lists have arrived (before that, "no rule" may only mean "not loaded yet").
    pub fn is_loaded(&self) -> bool {
        self.lists.load(std::sync::atomic::Ordering::SeqCst) >= 2
    }

    /// Waits (up to `within`) until the table is whole.
    pub async fn loaded(&self, within: std::time::Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.loaded.notified();
                if self.is_loaded() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    fn rebuild(&self) {
        let endpoints: Vec<Endpoint> = self
            .endpoints
            .state()
            .iter()
            .filter_map(|o| endpoint(o))
            .collect();
        let rules: Vec<Rule> = self.rules.state().iter().filter_map(|o| rule(o)).collect();
        let (table, refused) = RuleTable::build(&endpoints, &rules);
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        self.place(&self.downstream);
        // Before both lists are in, "not in effect" may only mean "not loaded yet".
        if self.is_loaded() {
            self.show_effect(&refused);
        }
    }

    /// Brings each rule's `Ready` condition up to date (written only where it changes).
    fn show_effect(&self, refused: &[(String, kedge_core::rule::RuleError)]) {
        let refused: std::collections::HashMap<&str, &kedge_core::rule::RuleError> =
            refused.iter().map(|(r, e)| (r.as_str(), e)).collect();
        for o in self.rules.state() {
            let id = key(&o);
            let effect = status::Effect::of(refused.get(id.as_str()).map_or(Ok(()), |e| Err(*e)));
            let current = o.data.get("status").cloned().unwrap_or_default();
            if effect.shown_in(&current) {
                continue;
            }
            let mut effects = self.effects.lock().unwrap_or_else(|p| p.into_inner());
            if effects.get(&id) != Some(&effect) {
                log_effect(&id, &effect);
                effects.insert(id.clone(), effect.clone());
            }
            drop(effects);
            self.stats.effect(&id, effect);
        }
    }

    /// The table as it is now.
    pub fn table(&self) -> Arc<RuleTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn log_effect(id: &str, effect: &status::Effect) {
    match effect {
        status::Effect::InEffect => tracing::info!(rule = %id, "rule in effect"),
        status::Effect::Waiting(why) => {
            tracing::info!(rule = %id, reason = %why, "rule not in effect yet")
        }
        status::Effect::Refused(why) => {
            tracing::warn!(rule = %id, reason = %why, "rule not in effect")
        }
    }
}
