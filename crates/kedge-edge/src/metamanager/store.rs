//! MetaManager's store of what the cloud sent (SQLite, WAL, KubeEdge's `meta` table). Versions
//! older than the stored one are ignored (the cloud may re-send after a reconnect).

use std::path::Path;

use kedge_core::envelope::{Message, op};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("edge store: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("message {0} has no usable resource")]
    Resource(String),
    #[error("edge store task: {0}")]
    Task(String),
}

/// What applying a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Stored,
    Deleted,
    /// The store already holds this version or a newer one.
    Stale,
    /// Not an object change (nothing stored).
    Ignored,
}

pub struct MetaStore {
    db: crate::db::Db,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY, type TEXT NOT NULL, value TEXT NOT NULL, rv INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS meta_type ON meta(type);
";

impl MetaStore {
    pub fn open(path: &Path) -> Result<MetaStore, MetaError> {
        Self::open_in(crate::db::open(path)?)
    }

    /// The store in the edge's shared database.
    pub fn open_in(db: crate::db::Db) -> Result<MetaStore, MetaError> {
        crate::db::lock(&db).execute_batch(SCHEMA)?;
        Ok(MetaStore { db })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        crate::db::lock(&self.db)
    }

    /// Applies an `insert`/`update`/`delete` of a `<ns>/<type>/<name>` resource.
    pub fn apply(&self, m: &Message) -> Result<Applied, MetaError> {
        let r = kedge_core::resource::ObjectRef::parse(&m.route.resource)
            .map_err(|_| MetaError::Resource(m.route.resource.clone()))?;
        if r.name.is_none() {
            return Err(MetaError::Resource(m.route.resource.clone()));
        }
        let key = m.route.resource.as_str();
        let rv: i64 = m.header.resource_version.parse().unwrap_or(0);
        let db = self.db();
        let stored: Option<i64> = db
            .query_row("SELECT rv FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()?;
        match m.route.operation.as_str() {
            op::DELETE => {
                db.execute("DELETE FROM meta WHERE key = ?1", [key])?;
                Ok(Applied::Deleted)
            }
            op::INSERT | op::UPDATE | op::PATCH => {
                if stored.is_some_and(|s| s > rv) {
                    return Ok(Applied::Stale);
                }
                let value = serde_json::to_string(&m.content).unwrap_or_default();
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, type, value, rv) VALUES (?1, ?2, ?3, ?4)",
                    params![key, r.kind, value, rv],
                )?;
                Ok(Applied::Stored)
            }
            _ => Ok(Applied::Ignored),
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<Value>, MetaError> {
        let text: Option<String> = self
            .db()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Keys of every stored object of `kind`, sorted.
    pub fn keys(&self, kind: &str) -> Result<Vec<String>, MetaError> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT key FROM meta WHERE type = ?1 ORDER BY key")?;
        let keys = stmt
            .query_map([kind], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(op: &str, res: &str, rv: u64) -> Message {
        Message::new("edgecontroller", "resource", op, res, json!({"rv": rv}))
            .with_resource_version(rv.to_string())
    }

    #[test]
    fn stores_ignores_stale_versions_deletes_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge.db");
        {
            let s = MetaStore::open(&path).expect("open");
            assert_eq!(
                s.apply(&msg("insert", "default/pod/a", 5)).expect("ok"),
                Applied::Stored
            );
            assert_eq!(
                s.apply(&msg("update", "default/pod/a", 4)).expect("ok"),
                Applied::Stale
            );
            assert_eq!(
                s.apply(&msg("update", "default/pod/a", 7)).expect("ok"),
                Applied::Stored
            );
            s.apply(&msg("insert", "default/pod/b", 1)).expect("ok");
            assert_eq!(
                s.apply(&msg("delete", "default/pod/b", 2)).expect("ok"),
                Applied::Deleted
            );
        }
        let s = MetaStore::open(&path).expect("reopen");
        assert_eq!(s.keys("pod").expect("keys"), ["default/pod/a"]);
        assert_eq!(s.get("default/pod/a").expect("get"), Some(json!({"rv": 7})));
        assert!(s.apply(&msg("insert", "nonsense", 1)).is_err());
    }
}
