//! What each node acknowledged, indexed by node. The record of one object is an ObjectSync
//! `<node>.<uid>` in the object's namespace (ClusterObjectSync for cluster-scoped objects) with
//! `status.objectResourceVersion`, as KubeEdge keeps it. The index is fed by a watch of both
//! kinds (so records written elsewhere are seen) and at once by this cloud's own writes, so a
//! (re)connecting node's resync reads only that node's records, never all of them. Pure: the
//! watch and the writes live in `downstream`.

use std::collections::HashMap;

use kedge_core::resource::Kind;

/// What a node acknowledged of one object (one ObjectSync).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRecord {
    pub uid: String,
    pub rv: u64,
    /// The hash of the content acknowledged (kedge's `status.objectHash`; 0 when not recorded).
    pub hash: u64,
    pub namespace: Option<String>,
    pub kind: Kind,
    pub name: String,
}

impl SyncRecord {
    /// What the node holds.
    pub fn version(&self) -> kedge_core::delivery::Version {
        kedge_core::delivery::Version {
            rv: self.rv,
            hash: self.hash,
        }
    }
}

/// The ObjectSync name recording what `node` acknowledged of the object `uid`.
pub fn sync_name(node: &str, uid: &str) -> String {
    format!("{node}.{uid}")
}

/// The node and object UID of an ObjectSync name. Node names may contain dots, UIDs do not,
/// so the split is at the last dot (a prefix match would give node `a` the records of `a.b`).
pub fn sync_owner(name: &str) -> Option<(&str, &str)> {
    name.rsplit_once('.')
        .filter(|(node, uid)| !node.is_empty() && !uid.is_empty())
}

/// The records, by node and object UID.
#[derive(Debug, Default)]
pub struct RecordIndex {
    live: HashMap<String, HashMap<String, SyncRecord>>,
    /// Relists under way, of namespaced records `[0]` and cluster-scoped ones `[1]`: the live
    /// index stays in use until each is complete.
    staging: [Option<HashMap<String, HashMap<String, SyncRecord>>>; 2],
    /// Complete lists seen (one per watched kind makes the index whole).
    lists: usize,
}

fn put(map: &mut HashMap<String, HashMap<String, SyncRecord>>, node: &str, r: SyncRecord) {
    let mine = map.entry(node.to_string()).or_default();
    match mine.get_mut(&r.uid) {
        // Versions only grow: a watch event older than this cloud's own write changes nothing.
        Some(had) if had.rv > r.rv => {}
        _ => {
            mine.insert(r.uid.clone(), r);
        }
    }
}

/// Which relist a record belongs to.
fn slot(r: &SyncRecord) -> usize {
    usize::from(r.namespace.is_none())
}

impl RecordIndex {
    /// A record was written (by this cloud, or seen by the watch).
    pub fn put(&mut self, node: &str, r: SyncRecord) {
        if let Some(s) = self.staging[slot(&r)].as_mut() {
            put(s, node, r.clone());
        }
        put(&mut self.live, node, r);
    }

    /// A record was deleted.
    pub fn remove(&mut self, node: &str, uid: &str) {
        let [a, b] = &mut self.staging;
        let maps = std::iter::once(&mut self.live)
            .chain(a.as_mut())
            .chain(b.as_mut());
        for map in maps {
            if let Some(mine) = map.get_mut(node) {
                mine.remove(uid);
                if mine.is_empty() {
                    map.remove(node);
                }
            }
        }
    }

    /// A (re)list of cluster-scoped (`cluster`) or namespaced records starts: what it lists
    /// replaces what was known of that kind once it is complete.
    pub fn list_started(&mut self, cluster: bool) {
        self.staging[usize::from(cluster)] = Some(HashMap::new());
    }

    /// A record listed.
    pub fn listed(&mut self, node: &str, r: SyncRecord) {
        let staged = self.staging[slot(&r)].get_or_insert_with(HashMap::new);
        put(staged, node, r);
    }

    /// The list of cluster-scoped (`cluster`) or namespaced records is complete.
    pub fn list_done(&mut self, cluster: bool) {
        let staged = self.staging[usize::from(cluster)]
            .take()
            .unwrap_or_default();
        for mine in self.live.values_mut() {
            mine.retain(|_, r| r.namespace.is_none() != cluster);
        }
        self.live.retain(|_, mine| !mine.is_empty());
        for (node, mine) in staged {
            for r in mine.into_values() {
                put(&mut self.live, &node, r);
            }
        }
        self.lists += 1;
    }

    /// Whether both kinds have been listed once.
    pub fn is_whole(&self) -> bool {
        self.lists >= 2
    }

    /// `node`'s records.
    pub fn of(&self, node: &str) -> Vec<SyncRecord> {
        self.live
            .get(node)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, node: &str, uid: &str) -> Option<&SyncRecord> {
        self.live.get(node)?.get(uid)
    }

    /// Nodes with records.
    pub fn nodes(&self) -> Vec<String> {
        self.live.keys().cloned().collect()
    }

    /// Records in all.
    pub fn len(&self) -> usize {
        self.live.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(uid: &str, rv: u64, ns: Option<&str>) -> SyncRecord {
        SyncRecord {
            uid: uid.into(),
            rv,
            hash: 0,
            namespace: ns.map(String::from),
            kind: Kind::Pod,
            name: uid.into(),
        }
    }

    #[test]
    fn sync_names_split_at_the_last_dot() {
        let uid = "4f1c2a3e-0000-4000-8000-000000000001";
        assert_eq!(sync_owner(&sync_name("edge-1", uid)), Some(("edge-1", uid)));
        assert_eq!(
            sync_owner(&sync_name("edge.example.com", uid)),
            Some(("edge.example.com", uid))
        );
        assert_eq!(sync_owner("no-dot"), None);
        assert_eq!(sync_owner(".uid"), None);
        assert_eq!(sync_owner("node."), None);
    }

    #[test]
    fn records_are_per_node_and_versions_only_grow() {
        let mut i = RecordIndex::default();
        i.put("a", rec("p1", 5, Some("default")));
        i.put("a", rec("p1", 3, Some("default")));
        i.put("b", rec("p2", 1, Some("default")));
        assert_eq!(i.of("a"), vec![rec("p1", 5, Some("default"))]);
        assert_eq!(i.get("b", "p2").map(|r| r.rv), Some(1));
        i.remove("a", "p1");
        assert!(i.of("a").is_empty());
        assert_eq!(i.nodes(), vec!["b".to_string()]);
        assert_eq!(i.len(), 1);
    }

    #[test]
    fn a_relist_replaces_its_kind_and_keeps_writes_made_meanwhile() {
        let mut i = RecordIndex::default();
        i.put("a", rec("gone", 1, Some("default")));
        i.put("a", rec("node-obj", 1, None));
        assert!(!i.is_whole());
        i.list_started(false);
        i.list_started(true);
        i.listed("a", rec("p1", 2, Some("default")));
        // Written while the list is under way: kept.
        i.put("a", rec("p2", 3, Some("default")));
        assert!(
            i.get("a", "gone").is_some(),
            "in use until the list is complete"
        );
        i.list_done(false);
        let mut uids: Vec<String> = i.of("a").into_iter().map(|r| r.uid).collect();
        uids.sort();
        assert_eq!(
            uids,
            ["node-obj", "p1", "p2"],
            "cluster-scoped records kept"
        );
        i.list_done(true);
        assert!(i.is_whole());
        assert!(i.get("a", "node-obj").is_none(), "not in the cluster list");
    }
}
