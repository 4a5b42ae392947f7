//! DeviceTwin's SQLite tables, named as KubeEdge's (`device`, `device_attr`, `device_twin`), in
//! the edge database. A device and its twins are written in one transaction.

use std::path::Path;

use kedge_core::twin::merge::Types;
use kedge_core::twin::{Twin, TwinValue, TwinVersion, Twins, ValueMetadata};
use rusqlite::{Connection, params};

#[derive(Debug, thiserror::Error)]
#[error("device store: {0}")]
pub struct StoreError(#[from] rusqlite::Error);

/// One device as the edge keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceRecord {
    /// `<namespace>/<name>`.
    pub id: String,
    pub name: String,
    pub description: String,
    pub model: String,
    /// Property types from the DeviceModel (empty until the model arrives).
    pub types: Types,
    pub state: String,
    pub last_online: String,
    /// The Device's resourceVersion last applied.
    pub rv: i64,
    pub twins: Twins,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS device (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL DEFAULT '', last_online TEXT NOT NULL DEFAULT '',
  model TEXT NOT NULL DEFAULT '', model_types TEXT NOT NULL DEFAULT '{}', rv INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS device_attr (
  id INTEGER PRIMARY KEY AUTOINCREMENT, deviceid TEXT NOT NULL, name TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '', value TEXT NOT NULL DEFAULT '', optional INTEGER NOT NULL DEFAULT 1,
  attr_type TEXT NOT NULL DEFAULT 'string', metadata TEXT NOT NULL DEFAULT '{}',
  UNIQUE (deviceid, name));
CREATE TABLE IF NOT EXISTS device_twin (
  id INTEGER PRIMARY KEY AUTOINCREMENT, deviceid TEXT NOT NULL, twin_name TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '', expected TEXT, actual TEXT,
  expected_meta TEXT NOT NULL DEFAULT '{}', actual_meta TEXT NOT NULL DEFAULT '{}',
  expected_version TEXT NOT NULL DEFAULT '{}', actual_version TEXT NOT NULL DEFAULT '{}',
  optional INTEGER NOT NULL DEFAULT 1, attr_type TEXT NOT NULL DEFAULT 'string', metadata TEXT NOT NULL DEFAULT '{}',
  UNIQUE (deviceid, twin_name));
";

pub struct TwinStore {
    db: crate::db::Db,
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

fn parse<T: serde::de::DeserializeOwned + Default>(s: &str) -> T {
    serde_json::from_str(s).unwrap_or_default()
}

fn side(value: Option<String>, meta: &str) -> Option<TwinValue> {
    value.map(|v| TwinValue {
        value: Some(v),
        metadata: Some(parse::<ValueMetadata>(meta)),
    })
}

impl TwinStore {
    pub fn open(path: &Path) -> Result<TwinStore, StoreError> {
        Self::open_in(crate::db::open(path)?)
    }

    /// The tables in the edge's shared database.
    pub fn open_in(db: crate::db::Db) -> Result<TwinStore, StoreError> {
        crate::db::lock(&db).execute_batch(SCHEMA)?;
        Ok(TwinStore { db })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        crate::db::lock(&self.db)
    }

    /// Writes a device and replaces its twins, atomically.
    pub fn save(&self, d: &DeviceRecord) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        save_in(&tx, d, None)?;
        tx.commit()?;
        Ok(())
    }

    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        for table in [
            "DELETE FROM device WHERE id = ?1",
            "DELETE FROM device_twin WHERE deviceid = ?1",
            "DELETE FROM device_attr WHERE deviceid = ?1",
        ] {
            tx.execute(table, [id])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every device with its twins.
    pub fn load(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT id, name, description, state, last_online, model, model_types, rv FROM device ORDER BY id",
        )?;
        let mut devices: Vec<DeviceRecord> = stmt
            .query_map([], |r| {
                Ok(DeviceRecord {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    description: r.get(2)?,
                    state: r.get(3)?,
                    last_online: r.get(4)?,
                    model: r.get(5)?,
                    types: parse(&r.get::<_, String>(6)?),
                    rv: r.get(7)?,
                    twins: Twins::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt = db.prepare(
            "SELECT deviceid, twin_name, expected, actual, expected_meta, actual_meta, expected_version,
               actual_version, optional, attr_type FROM device_twin",
        )?;
        let rows = stmt.query_map([], |r| {
            let twin = Twin {
                expected: side(r.get(2)?, &r.get::<_, String>(4)?),
                actual: side(r.get(3)?, &r.get::<_, String>(5)?),
                expected_version: parse::<TwinVersion>(&r.get::<_, String>(6)?),
                actual_version: parse::<TwinVersion>(&r.get::<_, String>(7)?),
                optional: r.get(8)?,
                kind: r.get(9)?,
            };
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, twin))
        })?;
        for row in rows {
            let (id, name, twin) = row?;
            if let Some(d) = devices.iter_mut().find(|d| d.id == id) {
                d.twins.insert(name, twin);
            }
        }
        Ok(devices)
    }
}

/// Writes a device and its twins inside the caller's transaction on `db` (the edge's shared
/// connection: DeviceTwin commits a burst of reports with their outbox messages). Given the
/// device as stored (`before`), only what differs is written: a report changes one twin row in
/// place, where rewriting every row moved them all and their index (measured: most of a
/// report's pages).
pub fn save_in(
    db: &Connection,
    d: &DeviceRecord,
    before: Option<&DeviceRecord>,
) -> Result<(), rusqlite::Error> {
    let same_device = before.is_some_and(|b| {
        (
            &b.name,
            &b.description,
            &b.state,
            &b.last_online,
            &b.model,
            &b.types,
            b.rv,
        ) == (
            &d.name,
            &d.description,
            &d.state,
            &d.last_online,
            &d.model,
            &d.types,
            d.rv,
        )
    });
    if !same_device {
        // Cached statements: this runs for every report, and parsing SQL each time costs
        // more than the write.
        db.prepare_cached(
            "INSERT OR REPLACE INTO device (id, name, description, state, last_online, model, model_types, rv)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![d.id, d.name, d.description, d.state, d.last_online, d.model, json(&d.types), d.rv])?;
    }
    match before {
        None => {
            db.prepare_cached("DELETE FROM device_twin WHERE deviceid = ?1")?
                .execute([&d.id])?;
        }
        Some(b) => {
            let mut delete = db
                .prepare_cached("DELETE FROM device_twin WHERE deviceid = ?1 AND twin_name = ?2")?;
            for name in b.twins.keys().filter(|n| !d.twins.contains_key(*n)) {
                delete.execute(params![d.id, name])?;
            }
        }
    }
    let mut upsert = db.prepare_cached(
        "INSERT INTO device_twin (deviceid, twin_name, expected, actual, expected_meta, actual_meta,
           expected_version, actual_version, optional, attr_type)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (deviceid, twin_name) DO UPDATE SET expected = excluded.expected,
           actual = excluded.actual, expected_meta = excluded.expected_meta,
           actual_meta = excluded.actual_meta, expected_version = excluded.expected_version,
           actual_version = excluded.actual_version, optional = excluded.optional,
           attr_type = excluded.attr_type",
    )?;
    let meta = |v: &Option<TwinValue>| {
        json(
            &v.as_ref()
                .and_then(|v| v.metadata.clone())
                .unwrap_or_default(),
        )
    };
    let before_twins = before.map(|b| &b.twins);
    for (name, t) in &d.twins {
        if before_twins.and_then(|b| b.get(name)) == Some(t) {
            continue;
        }
        upsert.execute(params![
            d.id,
            name,
            t.expected_value(),
            t.actual_value(),
            meta(&t.expected),
            meta(&t.actual),
            json(&t.expected_version),
            json(&t.actual_version),
            t.optional,
            t.kind
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_twins_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge.db");
        let mut d = DeviceRecord {
            id: "default/counter".into(),
            name: "counter".into(),
            model: "counter-model".into(),
            rv: 7,
            ..DeviceRecord::default()
        };
        d.types.insert("status".into(), "string".into());
        d.twins.insert(
            "status".into(),
            Twin {
                expected: Some(TwinValue {
                    value: Some("ON".into()),
                    metadata: Some(ValueMetadata { timestamp: 5 }),
                }),
                actual: None,
                optional: false,
                kind: "string".into(),
                expected_version: TwinVersion { cloud: 7, edge: 0 },
                actual_version: TwinVersion::default(),
            },
        );
        {
            let s = TwinStore::open(&path).expect("open");
            s.save(&d).expect("save");
            let mut other = d.clone();
            other.id = "default/gone".into();
            s.save(&other).expect("save");
            s.delete("default/gone").expect("delete");
        }
        let s = TwinStore::open(&path).expect("reopen");
        assert_eq!(s.load().expect("load"), [d.clone()]);

        // Against the stored device: a changed twin, a new one and one gone, the state changed.
        let mut next = d.clone();
        next.state = "online".into();
        next.twins.get_mut("status").expect("status").actual = Some(TwinValue {
            value: Some("OFF".into()),
            metadata: Some(ValueMetadata { timestamp: 9 }),
        });
        next.twins.insert("other".into(), Twin::default());
        {
            let mut db = s.db();
            let tx = db.transaction().expect("tx");
            save_in(&tx, &next, Some(&d)).expect("save");
            tx.commit().expect("commit");
        }
        assert_eq!(s.load().expect("load"), [next.clone()]);
        let mut last = next.clone();
        last.twins.remove("status");
        {
            let db = s.db();
            save_in(&db, &last, Some(&next)).expect("save");
        }
        assert_eq!(s.load().expect("load"), [last]);
    }
}
