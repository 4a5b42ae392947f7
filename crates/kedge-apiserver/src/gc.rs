//! Garbage collection by `ownerReferences`, as kube-controller-manager's garbage collector does
//! it for a cluster (on a real cluster, that one runs and this does not exist):
//! - an object whose owners are all gone is deleted (background propagation, the default);
//! - an owner deleted with `propagationPolicy: Foreground` carries the `foregroundDeletion`
//!   finalizer: its dependents are deleted first (foreground too), and the owner goes once no
//!   dependent with `blockOwnerDeletion` is left;
//! - an owner deleted with `Orphan` carries the `orphan` finalizer: its dependents lose their
//!   reference to it, then it goes.
//!
//! The decisions are pure (`Index`); `run` follows the store's event log and acts on them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::Api;
use crate::error::ApiError;
use crate::store::{Change, Event, EventType, Stored};

pub const ORPHAN: &str = "orphan";
pub const FOREGROUND: &str = "foregroundDeletion";

/// Where an object is stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub res: Arc<str>,
    pub ns: String,
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OwnerRef {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    block_owner_deletion: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    owner_references: Vec<OwnerRef>,
    #[serde(default)]
    finalizers: Vec<String>,
    #[serde(default)]
    deletion_timestamp: Option<String>,
}

#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    metadata: Meta,
}

impl Meta {
    fn of(o: &Stored) -> Meta {
        serde_json::from_slice::<Head>(&o.json)
            .map(|h| h.metadata)
            .unwrap_or_default()
    }

    fn deleting_with(&self, finalizer: &str) -> bool {
        self.deletion_timestamp.is_some() && self.finalizers.iter().any(|f| f == finalizer)
    }
}

/// What the collector does to one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Delete it; `true`: with foreground propagation.
    Delete(Key, bool),
    /// Remove its references to the owner with this uid.
    DropOwner(Key, String),
    /// Remove this finalizer (the object goes if it was the last).
    Finish(Key, &'static str),
}

/// Every object's owners and dependents, kept from the store's events.
#[derive(Default)]
pub struct Index {
    objects: HashMap<String, (Key, Meta)>,
    uid_of: HashMap<Key, String>,
    dependents: HashMap<String, HashSet<Key>>,
}

impl Index {
    /// Takes one change in; returns the objects whose collection it may decide.
    pub fn apply(&mut self, res: &Arc<str>, kind: EventType, obj: &Stored) -> Vec<Key> {
        let key = Key {
            res: res.clone(),
            ns: obj.namespace.clone(),
            name: obj.name.clone(),
        };
        let old = self.remove(&key);
        let mut touched: Vec<Key> = old
            .iter()
            .flat_map(|m| m.owner_references.iter())
            .filter_map(|o| self.objects.get(&o.uid).map(|(k, _)| k.clone()))
            .collect();
        if kind != EventType::Deleted {
            let meta = Meta::of(obj);
            self.insert(key.clone(), meta);
            touched.push(key.clone());
        }
        if let Some(uid) = old
            .as_ref()
            .map(|m| m.uid.clone())
            .or_else(|| self.uid(&key))
        {
            touched.extend(self.dependents.get(&uid).into_iter().flatten().cloned());
        }
        touched
    }

    fn uid(&self, key: &Key) -> Option<String> {
        self.uid_of.get(key).cloned()
    }

    fn insert(&mut self, key: Key, meta: Meta) {
        for o in &meta.owner_references {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(key.clone());
        }
        self.uid_of.insert(key.clone(), meta.uid.clone());
        self.objects.insert(meta.uid.clone(), (key, meta));
    }

    fn remove(&mut self, key: &Key) -> Option<Meta> {
        let uid = self.uid_of.remove(key)?;
        let (_, meta) = self.objects.remove(&uid)?;
        for o in &meta.owner_references {
            if let Some(d) = self.dependents.get_mut(&o.uid) {
                d.remove(key);
                if d.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
        Some(meta)
    }

    /// What collecting `key` takes now (nothing when it is fine as it is).
    pub fn decide(&self, key: &Key) -> Vec<Action> {
        let Some(uid) = self.uid_of.get(key) else {
            return Vec::new();
        };
        let Some((_, meta)) = self.objects.get(uid) else {
            return Vec::new();
        };
        let mut out = self.as_dependent(key, meta);
        out.extend(self.as_owner(key, meta));
        out
    }

    fn as_dependent(&self, key: &Key, meta: &Meta) -> Vec<Action> {
        if meta.owner_references.is_empty() {
            return Vec::new();
        }
        let owners: Vec<Option<&Meta>> = meta
            .owner_references
            .iter()
            .map(|o| self.objects.get(&o.uid).map(|(_, m)| m))
            .collect();
        if owners.iter().all(Option::is_none) {
            return vec![Action::Delete(key.clone(), false)];
        }
        let mut out = Vec::new();
        for (owner, r) in owners.iter().zip(&meta.owner_references) {
            match owner {
                Some(m) if m.deleting_with(ORPHAN) => {
                    out.push(Action::DropOwner(key.clone(), r.uid.clone()))
                }
                Some(m) if m.deleting_with(FOREGROUND) && meta.deletion_timestamp.is_none() => {
                    out.push(Action::Delete(key.clone(), true))
                }
                _ => {}
            }
        }
        out
    }

    fn as_owner(&self, key: &Key, meta: &Meta) -> Vec<Action> {
        let deps: Vec<&Meta> = self
            .dependents
            .get(&meta.uid)
            .into_iter()
            .flatten()
            .filter_map(|k| self.uid_of.get(k).and_then(|u| self.objects.get(u)))
            .map(|(_, m)| m)
            .collect();
        let mut out = Vec::new();
        if meta.deleting_with(ORPHAN) && deps.is_empty() {
            out.push(Action::Finish(key.clone(), ORPHAN));
        }
        let blocking = deps.iter().any(|d| {
            d.owner_references
                .iter()
                .any(|o| o.uid == meta.uid && o.block_owner_deletion == Some(true))
        });
        if meta.deleting_with(FOREGROUND) && !blocking {
            out.push(Action::Finish(key.clone(), FOREGROUND));
        }
        out
    }
}

/// Follows the store's events and collects, until the task is aborted.
pub async fn run(api: Arc<Api>) {
    let mut changed = api.store.subscribe();
    let mut state = (Index::default(), None::<u64>);
    loop {
        let a = api.clone();
        state = match tokio::task::spawn_blocking(move || step(&a, state)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "garbage collector stopped");
                return;
            }
        };
        if changed.changed().await.is_err() {
            return;
        }
    }
}

/// Reads the events since `seen` (the whole store the first time, or when the log has moved
/// past it) and carries out what they decide.
fn step(api: &Api, (mut index, seen): (Index, Option<u64>)) -> (Index, Option<u64>) {
    let mut touched = Vec::new();
    let events = seen.and_then(|s| api.store.events_after(s).ok());
    let seen = match events {
        Some(events) => {
            for e in &events {
                touched.extend(apply_event(&mut index, e));
            }
            events.last().map(|e| e.rv).or(seen)
        }
        None => {
            index = Index::default();
            let rev = api.store.revision();
            for r in api.registry.all() {
                let res: Arc<str> = r.key().into();
                for o in api.store.list(&res, None).0 {
                    touched.extend(index.apply(&res, EventType::Added, &o));
                }
            }
            Some(rev)
        }
    };
    touched.sort();
    touched.dedup();
    let mut actions: Vec<Action> = touched.iter().flat_map(|k| index.decide(k)).collect();
    actions.sort();
    actions.dedup();
    for a in actions {
        if let Err(e) = act(api, &a) {
            tracing::warn!(action = ?a, error = %e, "garbage collection");
        }
    }
    (index, seen)
}

fn apply_event(index: &mut Index, e: &Event) -> Vec<Key> {
    index.apply(&e.resource, e.kind, &e.obj)
}

fn act(api: &Api, action: &Action) -> Result<(), ApiError> {
    let key = match action {
        Action::Delete(k, _) | Action::DropOwner(k, _) | Action::Finish(k, _) => k,
    };
    let Some(res) = api.registry.by_key(&key.res) else {
        return Ok(());
    };
    let node_exists = |v: &Value| crate::handlers::pod_node_exists(api, v);
    let pod_node = api
        .store
        .get(&key.res, &key.ns, &key.name)
        .is_some_and(|o| node_exists(&o.value()));
    api.store
        .write::<ApiError>(&key.res, &key.ns, &key.name, |cur| {
            let Some(cur) = cur else {
                return Ok(Change::None);
            };
            let mut v = cur.value();
            match action {
                Action::Delete(_, foreground) => {
                    let policy = if *foreground {
                        "Foreground"
                    } else {
                        "Background"
                    };
                    let options = json!({"propagationPolicy": policy});
                    crate::handlers::delete_decision(&res, &v, &options, pod_node)
                }
                Action::DropOwner(_, uid) => {
                    if let Some(refs) = v
                        .pointer_mut("/metadata/ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r["uid"].as_str() != Some(uid));
                    }
                    Ok(Change::Put(v))
                }
                Action::Finish(_, finalizer) => {
                    let Some(fs) = v
                        .pointer_mut("/metadata/finalizers")
                        .and_then(Value::as_array_mut)
                    else {
                        return Ok(Change::None);
                    };
                    fs.retain(|f| f.as_str() != Some(finalizer));
                    Ok(if fs.is_empty() {
                        Change::Delete
                    } else {
                        Change::Put(v)
                    })
                }
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(name: &str, meta: Value) -> Stored {
        let mut m = meta;
        m["name"] = json!(name);
        Stored {
            namespace: "default".into(),
            name: name.into(),
            rv: 1,
            labels: Default::default(),
            json: serde_json::to_vec(&json!({"metadata": m}))
                .expect("json")
                .into(),
        }
    }

    fn key(res: &str, name: &str) -> Key {
        Key {
            res: res.into(),
            ns: "default".into(),
            name: name.into(),
        }
    }

    fn owned(uid: &str, owner: &str) -> Value {
        json!({"uid": uid, "ownerReferences": [{"uid": owner, "blockOwnerDeletion": true}]})
    }

    fn index(objs: &[(&str, &str, Value)]) -> Index {
        let mut ix = Index::default();
        for (res, name, meta) in objs {
            ix.apply(
                &Arc::from(*res),
                EventType::Added,
                &stored(name, meta.clone()),
            );
        }
        ix
    }

    #[test]
    fn a_dependent_whose_owner_is_gone_is_deleted() {
        let mut ix = index(&[
            ("replicasets", "rs", json!({"uid": "r1"})),
            ("pods", "p", owned("p1", "r1")),
        ]);
        assert!(ix.decide(&key("pods", "p")).is_empty(), "owner present");
        let rs = stored("rs", json!({"uid": "r1"}));
        let touched = ix.apply(&Arc::from("replicasets"), EventType::Deleted, &rs);
        assert!(touched.contains(&key("pods", "p")), "{touched:?}");
        assert_eq!(
            ix.decide(&key("pods", "p")),
            vec![Action::Delete(key("pods", "p"), false)]
        );
        // Created after its owner went (a controller's late write): collected too.
        let late = stored("q", owned("q1", "r1"));
        ix.apply(&Arc::from("pods"), EventType::Added, &late);
        assert_eq!(
            ix.decide(&key("pods", "q")),
            vec![Action::Delete(key("pods", "q"), false)]
        );
    }

    #[test]
    fn foreground_deletes_dependents_first_and_the_owner_after() {
        let marked = json!({"uid": "r1", "deletionTimestamp": "t", "finalizers": [FOREGROUND]});
        let mut ix = index(&[
            ("replicasets", "rs", marked.clone()),
            ("pods", "p", owned("p1", "r1")),
        ]);
        assert_eq!(
            ix.decide(&key("pods", "p")),
            vec![Action::Delete(key("pods", "p"), true)]
        );
        assert!(
            ix.decide(&key("replicasets", "rs")).is_empty(),
            "a blocking dependent is left"
        );
        let touched = ix.apply(
            &Arc::from("pods"),
            EventType::Deleted,
            &stored("p", owned("p1", "r1")),
        );
        assert!(touched.contains(&key("replicasets", "rs")));
        assert_eq!(
            ix.decide(&key("replicasets", "rs")),
            vec![Action::Finish(key("replicasets", "rs"), FOREGROUND)]
        );
    }

    #[test]
    fn orphaning_drops_the_references_then_the_owner() {
        let marked = json!({"uid": "d1", "deletionTimestamp": "t", "finalizers": [ORPHAN]});
        let mut ix = index(&[
            ("deployments", "d", marked),
            ("replicasets", "rs", owned("r1", "d1")),
        ]);
        assert_eq!(
            ix.decide(&key("replicasets", "rs")),
            vec![Action::DropOwner(key("replicasets", "rs"), "d1".into())]
        );
        assert!(ix.decide(&key("deployments", "d")).is_empty());
        let touched = ix.apply(
            &Arc::from("replicasets"),
            EventType::Modified,
            &stored("rs", json!({"uid": "r1"})),
        );
        assert!(touched.contains(&key("deployments", "d")), "{touched:?}");
        assert_eq!(
            ix.decide(&key("deployments", "d")),
            vec![Action::Finish(key("deployments", "d"), ORPHAN)]
        );
        assert!(ix.decide(&key("replicasets", "rs")).is_empty());
    }

    #[test]
    fn one_owner_left_keeps_a_dependent() {
        let ix = index(&[
            ("configmaps", "a", json!({"uid": "a1"})),
            (
                "configmaps",
                "x",
                json!({"uid": "x1", "ownerReferences": [{"uid": "a1"}, {"uid": "gone"}]}),
            ),
        ]);
        assert!(ix.decide(&key("configmaps", "x")).is_empty());
    }
}
