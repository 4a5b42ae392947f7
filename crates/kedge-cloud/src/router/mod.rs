//! Router: the seed's custom-message paths, from `rules.kubeedge.io/v1` RuleEndpoints and Rules.
//! Every create, update and delete takes effect (the table is rebuilt from the watched objects;
//! KubeEdge ignores updates). The REST listener (`rest`) answers honestly: 404 no rule, 503 node
//! not connected, 502 the edge could not deliver, 504 no answer in time, 413 body too large.

pub mod eventbus;
pub mod rest;
pub mod status;

use std::sync::{Arc, RwLock};

use kedge_core::rule::{Endpoint, Rule, RuleTable};
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::runtime::reflector::{self, Store};
use serde_json::Value;

use crate::objects::watch;

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
        });
        tokio::spawn(rules.stats.clone().flush_loop(client.clone()));
        watch(
            Api::all_with(client.clone(), &er),
            ew,
            rules.clone(),
            |r, _, _| r.rebuild(),
        );
        watch(Api::all_with(client, &rr), rw, rules.clone(), |r, _, _| {
            r.rebuild()
        });
        rules
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
        for (rule, why) in refused {
            tracing::warn!(rule, reason = %why, "rule not in effect");
        }
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        self.place(&self.downstream);
    }

    /// The table as it is now.
    pub fn table(&self) -> Arc<RuleTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
