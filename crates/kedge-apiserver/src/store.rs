//! The object store: SQLite (WAL) for durability, an in-memory index for reads, and a bounded
//! revision log that feeds watches.
//!
//! Every write gets the next revision, which becomes the object's `resourceVersion`; the object
//! and its watch event are committed in one SQLite transaction before the write is acknowledged,
//! so nothing acknowledged is lost on kill -9. Objects are kept serialized (`json`) with only the
//! fields reads need parsed out (labels), which keeps memory small and lists cheap: a list is a
//! concatenation of stored bytes.
//!
//! Writes run on the blocking pool (`spawn_blocking`) and hold one lock for the read-modify-write,
//! which serialises them in revision order; reads take the same lock only to clone `Arc`s.
//! `write_many` commits a batch of writes at once (node Lease renewals); the in-memory index and
//! the watch log change only after the commit, so a failed commit leaves no trace.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::watch;

/// Default revisions of history kept for watch resumption; a watch from an older revision gets
/// 410 Gone and relists.
pub const DEFAULT_HISTORY: u64 = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("stored object {0} is not valid JSON: {1}")]
    Corrupt(String, serde_json::Error),
}

/// One stored object version.
#[derive(Debug)]
pub struct Stored {
    pub namespace: String,
    pub name: String,
    pub rv: u64,
    pub labels: BTreeMap<String, String>,
    pub json: Bytes,
}

impl Stored {
    fn new(namespace: &str, name: &str, rv: u64, value: &Value) -> Stored {
        Stored {
            namespace: namespace.to_string(),
            name: name.to_string(),
            rv,
            labels: labels_of(value),
            json: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        }
    }

    pub fn value(&self) -> Value {
        // The bytes were produced by serde_json from a Value, so they always parse.
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }

    fn code(self) -> i64 {
        self as i64
    }

    fn from_code(c: i64) -> EventType {
        match c {
            0 => EventType::Added,
            1 => EventType::Modified,
            _ => EventType::Deleted,
        }
    }
}

/// A change to one object, as watches see it.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub resource: Arc<str>,
    pub kind: EventType,
    pub obj: Arc<Stored>,
    /// The version before this change, when known (selectors need it to tell "left the
    /// selection" from "changed within it"). Usually shared with an earlier event.
    pub prev: Option<Arc<Stored>>,
}

/// What a write decided to do with the object.
#[derive(Debug)]
pub enum Change {
    /// Store this object (its `metadata.resourceVersion` is set by the store).
    Put(Value),
    Delete,
    /// Leave the object as it is.
    None,
}

/// The result of a committed write.
#[derive(Debug)]
pub enum Written {
    Put(Arc<Stored>),
    Deleted(Arc<Stored>),
    Unchanged(Option<Arc<Stored>>),
}

type Objects = BTreeMap<(String, String), Arc<Stored>>;

struct Inner {
    db: Connection,
    objects: HashMap<Arc<str>, Objects>,
    log: VecDeque<Arc<Event>>,
    rev: u64,
    /// Events up to and including this revision are no longer in `log`.
    compacted: u64,
    /// How many events `log` keeps.
    history: u64,
}

pub struct Store {
    inner: Mutex<Inner>,
    rev_tx: watch::Sender<u64>,
}

/// A watch asked for history that has been compacted away.
#[derive(Debug)]
pub struct Expired {
    pub requested: u64,
    pub oldest: u64,
}

const SCHEMA: &str = "
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS objects (
  res TEXT NOT NULL, ns TEXT NOT NULL, name TEXT NOT NULL, rv INTEGER NOT NULL, body BLOB NOT NULL,
  PRIMARY KEY (res, ns, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
  rv INTEGER PRIMARY KEY, res TEXT NOT NULL, ns TEXT NOT NULL, name TEXT NOT NULL,
  type INTEGER NOT NULL, body BLOB NOT NULL);
";

impl Store {
    /// Opens (or creates) the store at `path`, loading every object and the recent history.
    pub fn open(path: &Path, history: u64) -> Result<Store, StoreError> {
        let db = Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(SCHEMA)?;
        let mut inner = Inner {
            objects: HashMap::new(),
            log: VecDeque::new(),
            rev: 0,
            compacted: 0,
            history: history.max(1),
            db,
        };
        inner.load()?;
        let (rev_tx, _) = watch::channel(inner.rev);
        Ok(Store {
            inner: Mutex::new(inner),
            rev_tx,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back) and the in-memory index is updated only after commit, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn revision(&self) -> u64 {
        self.lock().rev
    }

    pub fn get(&self, res: &str, ns: &str, name: &str) -> Option<Arc<Stored>> {
        let inner = self.lock();
        inner
            .objects
            .get(res)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Every object of `res` (in `ns`, when given), sorted by namespace and name, and the
    /// revision the list is consistent with.
    pub fn list(&self, res: &str, ns: Option<&str>) -> (Vec<Arc<Stored>>, u64) {
        let inner = self.lock();
        let items = match inner.objects.get(res) {
            None => Vec::new(),
            Some(objs) => match ns {
                None => objs.values().cloned().collect(),
                Some(ns) => objs
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, o)| o.clone())
                    .collect(),
            },
        };
        (items, inner.rev)
    }

    /// One page of a list: the objects of `res` (in `ns`, when given) that `keep` accepts,
    /// sorted by namespace and name, from just after `after`, at most `limit`; whether more
    /// follow; and the revision. Walks only the page's part of the index (a list of 200,000
    /// objects in pages of 500 reads each object once, not once a page).
    pub fn page(
        &self,
        res: &str,
        ns: Option<&str>,
        after: Option<&(String, String)>,
        limit: Option<usize>,
        keep: &dyn Fn(&Stored) -> bool,
    ) -> (Vec<Arc<Stored>>, bool, u64) {
        use std::ops::Bound;
        let inner = self.lock();
        let Some(objs) = inner.objects.get(res) else {
            return (Vec::new(), false, inner.rev);
        };
        let start = match (after, ns) {
            (Some(a), Some(n)) if a.0.as_str() >= n => Bound::Excluded(a.clone()),
            (_, Some(n)) => Bound::Included((n.to_string(), String::new())),
            (Some(a), None) => Bound::Excluded(a.clone()),
            (None, None) => Bound::Unbounded,
        };
        let limit = limit.unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut more = false;
        let in_ns = |k: &(String, String)| ns.is_none_or(|n| k.0 == n);
        for (_, o) in objs
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| in_ns(k))
        {
            if !keep(o) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(o.clone());
        }
        (items, more, inner.rev)
    }

    /// Counts objects of `res` in namespace `ns`.
    pub fn count_in(&self, res: &str, ns: &str) -> usize {
        let inner = self.lock();
        inner.objects.get(res).map_or(0, |objs| {
            objs.range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .count()
        })
    }

    /// Reads the current object, lets `decide` choose the change, and commits it under the next
    /// revision. `decide` runs under the store lock, so the read-modify-write is atomic.
    pub fn write<E: From<StoreError>>(
        &self,
        res: &str,
        ns: &str,
        name: &str,
        decide: impl FnOnce(Option<&Arc<Stored>>) -> Result<Change, E>,
    ) -> Result<Written, E> {
        let mut inner = self.lock();
        let current = inner.current(res, ns, name);
        let written = match inner.stage_in_tx(res, ns, name, decide(current.as_ref())?, current)? {
            Staged::Pending(p) => inner.apply(p),
            Staged::Unchanged(cur) => return Ok(Written::Unchanged(cur)),
        };
        let rev = inner.rev;
        drop(inner);
        self.rev_tx.send_replace(rev);
        Ok(written)
    }

    /// Writes several objects of `res` in one SQLite transaction — one commit instead of one
    /// per object (node Lease renewals come in thousands per second). Each `decide` sees its
    /// object as committed; a `decide` error skips that object only. A storage error rolls the
    /// whole batch back. Names must not repeat.
    pub fn write_many<E: From<StoreError>>(
        &self,
        res: &str,
        keys: &[(String, String)],
        mut decide: impl FnMut(&str, &str, Option<&Arc<Stored>>) -> Result<Change, E>,
    ) -> Result<Vec<Result<Written, E>>, StoreError> {
        let mut inner = self.lock();
        let staged = inner.transaction(|inner| {
            let mut staged = Vec::with_capacity(keys.len());
            for (ns, name) in keys {
                let current = inner.current(res, ns, name);
                staged.push(match decide(ns, name, current.as_ref()) {
                    Err(e) => Err(e),
                    Ok(change) => Ok(inner.stage(res, ns, name, change, current)?),
                });
            }
            Ok::<_, StoreError>(staged)
        })?;
        let written = staged
            .into_iter()
            .map(|r| {
                r.map(|s| match s {
                    Staged::Pending(p) => inner.apply(p),
                    Staged::Unchanged(cur) => Written::Unchanged(cur),
                })
            })
            .collect();
        let rev = inner.rev;
        drop(inner);
        self.rev_tx.send_replace(rev);
        Ok(written)
    }

    /// Events after revision `after` (for `res`), or [`Expired`] if some were compacted away.
    pub fn events_since(&self, res: &str, after: u64) -> Result<Vec<Arc<Event>>, Expired> {
        let inner = self.lock();
        if after < inner.compacted {
            return Err(Expired {
                requested: after,
                oldest: inner.compacted + 1,
            });
        }
        let start = inner.log.partition_point(|e| e.rv <= after);
        Ok(inner
            .log
            .range(start..)
            .filter(|e| &*e.resource == res)
            .cloned()
            .collect())
    }

    /// Events of every resource after revision `after`, or [`Expired`].
    pub fn events_after(&self, after: u64) -> Result<Vec<Arc<Event>>, Expired> {
        let inner = self.lock();
        if after < inner.compacted {
            return Err(Expired {
                requested: after,
                oldest: inner.compacted + 1,
            });
        }
        let start = inner.log.partition_point(|e| e.rv <= after);
        Ok(inner.log.range(start..).cloned().collect())
    }

    /// A receiver that changes whenever the revision advances.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.rev_tx.subscribe()
    }
}

fn set_rv(value: &mut Value, rv: u64) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

/// A numbered change written to SQLite inside an open transaction, not yet visible.
struct Pending {
    res: Arc<str>,
    kind: EventType,
    stored: Arc<Stored>,
    prev: Option<Arc<Stored>>,
}

enum Staged {
    Pending(Pending),
    Unchanged(Option<Arc<Stored>>),
}

impl Inner {
    fn current(&self, res: &str, ns: &str, name: &str) -> Option<Arc<Stored>> {
        self.objects
            .get(res)
            .and_then(|o| o.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// Runs `f` in one SQLite transaction. On any error it is rolled back and the revision
    /// counter restored, so nothing `f` staged is kept. Statements (BEGIN and COMMIT too) are
    /// prepared once and cached: parsing SQL was a large part of a small write's cost.
    fn transaction<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Inner) -> Result<T, E>,
    ) -> Result<T, E> {
        let rev = self.rev;
        self.exec("BEGIN").map_err(StoreError::from)?;
        let done = f(self).and_then(|t| {
            self.exec("COMMIT").map_err(StoreError::from)?;
            Ok(t)
        });
        if done.is_err() {
            let _ = self.db.execute_batch("ROLLBACK");
            self.rev = rev;
        }
        done
    }

    fn exec(&self, sql: &str) -> rusqlite::Result<usize> {
        self.db.prepare_cached(sql)?.execute([])
    }

    /// `stage` in a transaction of its own.
    fn stage_in_tx(
        &mut self,
        res: &str,
        ns: &str,
        name: &str,
        change: Change,
        current: Option<Arc<Stored>>,
    ) -> Result<Staged, StoreError> {
        if matches!(change, Change::None) {
            return Ok(Staged::Unchanged(current));
        }
        self.transaction(|inner| inner.stage(res, ns, name, change, current))
    }

    /// Numbers the change and writes its event and object rows (in the caller's transaction).
    fn stage(
        &mut self,
        res: &str,
        ns: &str,
        name: &str,
        change: Change,
        current: Option<Arc<Stored>>,
    ) -> Result<Staged, StoreError> {
        let (kind, mut value) = match (change, &current) {
            (Change::None, _) | (Change::Delete, None) => return Ok(Staged::Unchanged(current)),
            (Change::Put(v), Some(_)) => (EventType::Modified, v),
            (Change::Put(v), None) => (EventType::Added, v),
            (Change::Delete, Some(cur)) => (EventType::Deleted, cur.value()),
        };
        let rv = self.rev + 1;
        set_rv(&mut value, rv);
        let stored = Arc::new(Stored::new(ns, name, rv, &value));
        self.write_rows(res, ns, name, kind, rv, &stored.json)?;
        self.rev = rv;
        Ok(Staged::Pending(Pending {
            res: self.resource_key(res),
            kind,
            stored,
            prev: current,
        }))
    }

    fn write_rows(
        &self,
        res: &str,
        ns: &str,
        name: &str,
        kind: EventType,
        rv: u64,
        body: &[u8],
    ) -> rusqlite::Result<()> {
        let db = &self.db;
        db.prepare_cached(
            "INSERT INTO events (rv, res, ns, name, type, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![rv as i64, res, ns, name, kind.code(), body])?;
        if kind == EventType::Deleted {
            db.prepare_cached("DELETE FROM objects WHERE res = ?1 AND ns = ?2 AND name = ?3")?
                .execute(params![res, ns, name])?;
        } else {
            db.prepare_cached(
                "INSERT OR REPLACE INTO objects (res, ns, name, rv, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![res, ns, name, rv as i64, body])?;
        }
        if rv.is_multiple_of(1000) && rv > self.history {
            db.prepare_cached("DELETE FROM events WHERE rv <= ?1")?
                .execute([(rv - self.history) as i64])?;
        }
        Ok(())
    }

    /// Makes a committed change visible: the index and the watch log.
    fn apply(&mut self, p: Pending) -> Written {
        let stored = p.stored;
        let key = (stored.namespace.clone(), stored.name.clone());
        let objs = self.objects.entry(p.res.clone()).or_default();
        if p.kind == EventType::Deleted {
            objs.remove(&key);
        } else {
            objs.insert(key, stored.clone());
        }
        self.push_event(Arc::new(Event {
            rv: stored.rv,
            resource: p.res,
            kind: p.kind,
            obj: stored.clone(),
            prev: p.prev,
        }));
        match p.kind {
            EventType::Deleted => Written::Deleted(stored),
            _ => Written::Put(stored),
        }
    }

    /// Interns resource names so events share one allocation per resource.
    fn resource_key(&mut self, res: &str) -> Arc<str> {
        match self.objects.get_key_value(res) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(res);
                self.objects.insert(k.clone(), BTreeMap::new());
                k
            }
        }
    }

    fn push_event(&mut self, ev: Arc<Event>) {
        self.log.push_back(ev);
        while self.log.len() as u64 > self.history {
            if let Some(old) = self.log.pop_front() {
                self.compacted = old.rv;
            }
        }
    }

    fn load(&mut self) -> Result<(), StoreError> {
        let max_obj: Option<i64> = self
            .db
            .query_row("SELECT MAX(rv) FROM objects", [], |r| r.get(0))
            .optional()?
            .flatten();
        let max_ev: Option<i64> = self
            .db
            .query_row("SELECT MAX(rv) FROM events", [], |r| r.get(0))
            .optional()?
            .flatten();
        self.rev = max_obj.unwrap_or(0).max(max_ev.unwrap_or(0)) as u64;
        let rows = read_rows(
            &self.db,
            "SELECT res, ns, name, rv, 0, body FROM objects",
            [],
        )?;
        for (res, ns, name, rv, _, body) in rows {
            let stored = Arc::new(parse_row(&res, &ns, &name, rv, &body)?);
            let res = self.resource_key(&res);
            if let Some(objs) = self.objects.get_mut(&res) {
                objs.insert((ns, name), stored);
            }
        }
        let from = self.rev.saturating_sub(self.history) as i64;
        let rows = read_rows(
            &self.db,
            "SELECT res, ns, name, rv, type, body FROM events WHERE rv > ?1 ORDER BY rv",
            [from],
        )?;
        self.compacted = rows.first().map_or(self.rev, |r| r.3.saturating_sub(1));
        let mut latest: HashMap<(String, String, String), Arc<Stored>> = HashMap::new();
        for (res, ns, name, rv, kind, body) in rows {
            let obj = Arc::new(parse_row(&res, &ns, &name, rv, &body)?);
            let resource = self.resource_key(&res);
            let prev = latest.insert((res, ns, name), obj.clone());
            self.push_event(Arc::new(Event {
                rv,
                resource,
                kind: EventType::from_code(kind),
                obj,
                prev,
            }));
        }
        Ok(())
    }
}

type Row = (String, String, String, u64, i64, Vec<u8>);

fn read_rows<P: rusqlite::Params>(
    db: &Connection,
    sql: &str,
    p: P,
) -> Result<Vec<Row>, StoreError> {
    let mut stmt = db.prepare(sql)?;
    let rows = stmt.query_map(p, |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get::<_, i64>(3)? as u64,
            r.get(4)?,
            r.get(5)?,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn parse_row(res: &str, ns: &str, name: &str, rv: u64, body: &[u8]) -> Result<Stored, StoreError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| StoreError::Corrupt(format!("{res} {ns}/{name}"), e))?;
    Ok(Stored {
        namespace: ns.to_string(),
        name: name.to_string(),
        rv,
        labels: labels_of(&v),
        json: Bytes::copy_from_slice(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(store: &Store, name: &str, v: Value) -> Arc<Stored> {
        match store.write::<StoreError>("cms", "default", name, |_| Ok(Change::Put(v))) {
            Ok(Written::Put(s)) => s,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn writes_get_increasing_revisions_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        {
            let store = Store::open(&path, DEFAULT_HISTORY).expect("open");
            let a = put(
                &store,
                "a",
                json!({"metadata": {"name": "a", "labels": {"x": "1"}}}),
            );
            let b = put(&store, "b", json!({"metadata": {"name": "b"}}));
            assert_eq!((a.rv, b.rv), (1, 2));
            assert_eq!(a.value()["metadata"]["resourceVersion"], "1");
            store
                .write::<StoreError>("cms", "default", "a", |_| Ok(Change::Delete))
                .expect("delete");
        }
        let store = Store::open(&path, DEFAULT_HISTORY).expect("reopen");
        assert_eq!(store.revision(), 3);
        assert!(store.get("cms", "default", "a").is_none());
        let b = store.get("cms", "default", "b").expect("b survives");
        assert_eq!(b.rv, 2);
        let events = store.events_since("cms", 0).expect("history");
        let kinds: Vec<_> = events.iter().map(|e| (e.rv, e.kind)).collect();
        assert_eq!(
            kinds,
            [
                (1, EventType::Added),
                (2, EventType::Added),
                (3, EventType::Deleted)
            ]
        );
        assert_eq!(events[0].obj.labels.get("x").map(String::as_str), Some("1"));
    }

    #[test]
    fn list_filters_by_namespace_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db"), DEFAULT_HISTORY).expect("open");
        for (ns, name) in [("b", "2"), ("a", "1"), ("b", "1"), ("c", "0")] {
            store
                .write::<StoreError>("cms", ns, name, |_| {
                    Ok(Change::Put(json!({"metadata": {"name": name}})))
                })
                .expect("write");
        }
        let names = |ns| {
            store
                .list("cms", ns)
                .0
                .iter()
                .map(|s| format!("{}/{}", s.namespace, s.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Some("b")), ["b/1", "b/2"]);
        assert_eq!(names(None), ["a/1", "b/1", "b/2", "c/0"]);
        assert_eq!(store.count_in("cms", "b"), 2);
        // Pages: from after a key, filtered, bounded, saying whether more follow.
        let page = |ns, after: Option<(&str, &str)>, limit, keep: &dyn Fn(&Stored) -> bool| {
            let after = after.map(|(a, b)| (a.to_string(), b.to_string()));
            let (items, more, _) = store.page("cms", ns, after.as_ref(), limit, keep);
            let names: Vec<String> = items
                .iter()
                .map(|s| format!("{}/{}", s.namespace, s.name))
                .collect();
            (names, more)
        };
        let all = |_: &Stored| true;
        assert_eq!(
            page(None, None, Some(2), &all),
            (vec!["a/1".into(), "b/1".into()], true)
        );
        assert_eq!(
            page(None, Some(("b", "1")), Some(2), &all),
            (vec!["b/2".into(), "c/0".into()], false)
        );
        assert_eq!(
            page(Some("b"), Some(("a", "1")), None, &all),
            (vec!["b/1".into(), "b/2".into()], false)
        );
        assert_eq!(
            page(Some("b"), Some(("b", "1")), Some(1), &all),
            (vec!["b/2".into()], false)
        );
        assert_eq!(
            page(Some("b"), Some(("c", "")), None, &all),
            (vec![], false)
        );
        let only_1 = |s: &Stored| s.name == "1";
        assert_eq!(
            page(None, None, Some(1), &only_1),
            (vec!["a/1".into()], true)
        );
        assert_eq!(
            page(None, Some(("a", "1")), Some(1), &only_1),
            (vec!["b/1".into()], false)
        );
    }

    #[test]
    fn a_rejected_write_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db"), DEFAULT_HISTORY).expect("open");
        let r = store.write::<StoreError>("cms", "d", "x", |_| {
            Err(StoreError::Corrupt(
                "x".into(),
                serde_json::from_str::<Value>("{").expect_err("invalid"),
            ))
        });
        assert!(r.is_err());
        assert_eq!(store.revision(), 0);
    }

    #[test]
    fn a_batch_commits_once_and_skips_only_refused_objects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let keys: Vec<(String, String)> = ["a", "b", "c"]
            .iter()
            .map(|n| ("d".to_string(), n.to_string()))
            .collect();
        {
            let store = Store::open(&path, DEFAULT_HISTORY).expect("open");
            put(&store, "seen", json!({"metadata": {"name": "seen"}}));
            let out = store
                .write_many::<StoreError>("cms", &keys, |_, name, cur| {
                    assert!(cur.is_none());
                    match name {
                        "b" => Err(StoreError::Corrupt(
                            "b".into(),
                            serde_json::from_str::<Value>("{").expect_err("invalid"),
                        )),
                        _ => Ok(Change::Put(json!({"metadata": {"name": name}}))),
                    }
                })
                .expect("batch");
            let rvs: Vec<_> = out
                .iter()
                .map(|r| match r {
                    Ok(Written::Put(s)) => Some(s.rv),
                    _ => None,
                })
                .collect();
            assert_eq!(rvs, [Some(2), None, Some(3)]);
            assert_eq!(store.revision(), 3);
            assert!(store.get("cms", "d", "b").is_none());
        }
        let store = Store::open(&path, DEFAULT_HISTORY).expect("reopen");
        assert_eq!(store.revision(), 3);
        assert_eq!(store.get("cms", "d", "c").expect("c kept").rv, 3);
        let events = store.events_since("cms", 1).expect("history");
        assert_eq!(events.iter().map(|e| e.rv).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn a_failed_commit_keeps_nothing_of_the_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db"), DEFAULT_HISTORY).expect("open");
        put(&store, "x", json!({"metadata": {"name": "x"}}));
        // A trigger makes the second row fail inside the transaction, as a full disk would.
        store
            .lock()
            .db
            .execute_batch(
                "CREATE TRIGGER no_b BEFORE INSERT ON objects WHEN NEW.name = 'b'
                 BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
            )
            .expect("trigger");
        let keys = [
            ("d".to_string(), "a".to_string()),
            ("d".to_string(), "b".to_string()),
        ];
        let err = store.write_many::<StoreError>("cms", &keys, |_, name, _| {
            Ok(Change::Put(json!({"metadata": {"name": name}})))
        });
        assert!(err.is_err());
        assert_eq!(store.revision(), 1);
        assert!(store.get("cms", "d", "a").is_none());
        assert_eq!(store.events_since("cms", 1).expect("history").len(), 0);
        // The store still works afterwards.
        assert_eq!(put(&store, "y", json!({"metadata": {"name": "y"}})).rv, 2);
    }

    #[test]
    fn compacted_history_is_expired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db"), 100).expect("open");
        for i in 0..105 {
            put(&store, &format!("o{}", i % 3), json!({"metadata": {}}));
        }
        let err = store.events_since("cms", 2).expect_err("expired");
        assert_eq!(err.oldest, 6);
        assert_eq!(store.events_since("cms", 5).expect("ok").len(), 100);
    }
}
