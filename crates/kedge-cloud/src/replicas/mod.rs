//! The cloud as several replicas on one cluster (`--kubeconfig`). Every replica watches
//! everything; a node belongs to the replica holding its session, which records itself on the
//! Node (`kedge.io/cloud-replica` and its peer address, as KubeEdge records its cloudcore in an
//! annotation) when the session starts and when the Node is registered. Only that replica can
//! deliver to the node, hear its acknowledgements or write its status — they all travel over the
//! session — and a replica whose session ended marks the node NotReady only while the record
//! still names it. Router calls reaching another replica are forwarded to the holder over the
//! replicas' own mutual-TLS listener (`peer`), and so are rule counters, to the leader.

pub mod peer;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use std::sync::Arc;

use crate::leader::{Gate, Leadership};

/// The Node annotation naming the replica that holds the node's session.
pub const OWNER: &str = "kedge.io/cloud-replica";
/// The Node annotation with that replica's peer address (HOST:PORT).
pub const OWNER_PEER: &str = "kedge.io/cloud-replica-peer";
/// The common name of the client certificate replicas present to each other.
pub const PEER_CN: &str = "kedge-cloud-replica";

/// A replica: its identity and where the others reach it (none: it cannot be forwarded to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub id: String,
    pub peer: Option<String>,
}

impl Owner {
    /// The owner a Node's annotations record, if any.
    pub fn of(annotations: &BTreeMap<String, String>) -> Option<Owner> {
        let id = annotations.get(OWNER).filter(|i| !i.is_empty())?;
        Some(Owner {
            id: id.clone(),
            peer: annotations
                .get(OWNER_PEER)
                .filter(|p| !p.is_empty())
                .cloned(),
        })
    }

    /// The annotations that record this replica as the owner.
    pub fn annotations(&self) -> Value {
        json!({ OWNER: self.id, OWNER_PEER: self.peer })
    }
}

/// Where a router call for a node is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// By this replica (it holds the node, or nobody else does: then it says "not connected").
    Here,
    /// By the holder, at this peer address.
    Forward { replica: String, peer: String },
    /// Nowhere: the holder cannot be reached from here.
    Unreachable(String),
}

/// Decides where a call for `node` goes. A forwarded call is never forwarded again: the two
/// replicas' records may disagree for a moment, and a call must not travel in circles.
pub fn route(
    node: &str,
    held_here: bool,
    forwarded: bool,
    owner: Option<&Owner>,
    me: &str,
) -> Route {
    if held_here || forwarded {
        return Route::Here;
    }
    match owner {
        Some(o) if o.id != me => match &o.peer {
            Some(p) => Route::Forward {
                replica: o.id.clone(),
                peer: p.clone(),
            },
            None => Route::Unreachable(format!(
                "node {node} is connected to replica {}, which gives no peer address \
                 (--peer-address) to forward to",
                o.id
            )),
        },
        _ => Route::Here,
    }
}

/// Whether a replica whose session with a node ended may mark it NotReady: only while the Node
/// names it (or nobody); once another replica has claimed the node, the edge lives on there.
pub fn may_mark_gone(owner: Option<&Owner>, me: &str) -> bool {
    owner.is_none_or(|o| o.id == me)
}

/// This replica among the others: who it is, who holds which node (from the Node watch), who
/// leads, and how it calls the others.
pub struct Replicas {
    pub me: Owner,
    owners: Mutex<HashMap<String, Owner>>,
    leader: watch::Receiver<Leadership>,
    pub(crate) peers: reqwest::Client,
}

impl Replicas {
    pub fn new(me: Owner, leader: watch::Receiver<Leadership>, peers: reqwest::Client) -> Replicas {
        Replicas {
            me,
            owners: Mutex::default(),
            leader,
            peers,
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, Owner>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who holds `node`, as its Node last said.
    pub fn owner(&self, node: &str) -> Option<Owner> {
        self.owners().get(node).cloned()
    }

    /// Notes the owner a Node records (from the Node watch).
    pub fn observe(&self, node: &Node) {
        let name = node.name_any();
        match Owner::of(node.annotations()) {
            Some(o) => self.owners().insert(name, o),
            None => self.owners().remove(&name),
        };
    }

    pub fn forget(&self, node: &str) {
        self.owners().remove(node);
    }

    /// Whether this replica leads cluster-wide work.
    pub fn leads(&self) -> bool {
        self.leader.borrow().leads
    }

    /// The leader's peer address, when another replica leads.
    pub fn leader_peer(&self) -> Option<String> {
        let l = self.leader.borrow();
        (!l.leads).then(|| l.peer.clone()).flatten()
    }

    /// A receiver of leadership changes.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leader.clone()
    }
}

/// The gate cluster-wide work waits on: open while this replica leads, always without replicas.
pub fn gate(replicas: Option<&Arc<Replicas>>) -> Gate {
    replicas.map_or_else(Gate::default, |r| Gate::of(r.leadership()))
}

impl Replicas {
    /// Records this replica as `node`'s owner (its session just started). A Node not registered
    /// yet is claimed when it is (`EdgeController`'s registration writes the same annotations).
    pub async fn claim(&self, nodes: &Api<Node>, node: &str) -> Result<(), kube::Error> {
        let p = json!({"metadata": {"annotations": self.me.annotations()}});
        match nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&p))
            .await
        {
            Ok(n) => {
                self.observe(&n);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: &str, peer: Option<&str>) -> Owner {
        Owner {
            id: id.into(),
            peer: peer.map(String::from),
        }
    }

    #[test]
    fn calls_go_to_the_holder_once() {
        let b = owner("b", Some("10.0.0.2:10005"));
        assert_eq!(route("n", true, false, Some(&b), "a"), Route::Here);
        assert_eq!(
            route("n", false, false, Some(&b), "a"),
            Route::Forward {
                replica: "b".into(),
                peer: "10.0.0.2:10005".into()
            }
        );
        assert_eq!(
            route("n", false, true, Some(&b), "a"),
            Route::Here,
            "a forwarded call is answered where it lands"
        );
        assert_eq!(route("n", false, false, None, "a"), Route::Here);
        assert_eq!(
            route("n", false, false, Some(&owner("a", None)), "a"),
            Route::Here,
            "a stale record of this replica itself"
        );
        assert!(matches!(
            route("n", false, false, Some(&owner("b", None)), "a"),
            Route::Unreachable(why) if why.contains("replica b")
        ));
    }

    #[test]
    fn only_the_recorded_holder_marks_a_node_gone() {
        assert!(may_mark_gone(None, "a"));
        assert!(may_mark_gone(Some(&owner("a", None)), "a"));
        assert!(!may_mark_gone(Some(&owner("b", None)), "a"));
    }

    #[test]
    fn the_record_reads_back_from_annotations() {
        let me = owner("a", Some("h:1"));
        let ann: BTreeMap<String, String> = serde_json::from_value(me.annotations()).expect("map");
        assert_eq!(Owner::of(&ann), Some(me));
        let mut bare = BTreeMap::new();
        bare.insert(OWNER.to_string(), "b".to_string());
        assert_eq!(Owner::of(&bare), Some(owner("b", None)));
        assert_eq!(Owner::of(&BTreeMap::new()), None);
    }
}
