//! DMI's tables in `edge.db`: the registered mappers (one per protocol, the last registration
//! wins) and what each has taken (`dmi_synced`), so nothing owed is forgotten across restarts.

use std::collections::BTreeMap;

use rusqlite::params;

use super::plan::{Kind, Slot};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dmi_mapper (
  protocol TEXT PRIMARY KEY, name TEXT NOT NULL, address TEXT NOT NULL, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dmi_synced (
  kind TEXT NOT NULL, key TEXT NOT NULL, protocol TEXT NOT NULL, hash INTEGER NOT NULL,
  PRIMARY KEY (kind, key, protocol));
";

/// A registered mapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapper {
    pub protocol: String,
    pub name: String,
    /// Its socket path.
    pub address: String,
    /// `MapperInfo` as JSON (name, version, api_version, protocol, address, state).
    pub info: String,
}

/// The tables, with `dmi_synced` also kept in memory (read on every reconciliation).
pub struct Records {
    db: crate::db::Db,
    synced: std::sync::Mutex<BTreeMap<Slot, u64>>,
}

impl Records {
    pub fn open_in(db: crate::db::Db) -> Result<Records, rusqlite::Error> {
        crate::db::lock(&db).execute_batch(SCHEMA)?;
        let synced = read_synced(&db)?;
        Ok(Records {
            db,
            synced: std::sync::Mutex::new(synced),
        })
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, BTreeMap<Slot, u64>> {
        self.synced.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn mappers(&self) -> Result<Vec<Mapper>, rusqlite::Error> {
        let db = crate::db::lock(&self.db);
        let mut stmt = db.prepare("SELECT protocol, name, address, info FROM dmi_mapper")?;
        let rows = stmt.query_map([], |r| {
            Ok(Mapper {
                protocol: r.get(0)?,
                name: r.get(1)?,
                address: r.get(2)?,
                info: r.get(3)?,
            })
        })?;
        rows.collect()
    }

    /// Records `m` and that it took exactly `took` (what its registration answer held).
    pub fn register(&self, m: &Mapper, took: &BTreeMap<Slot, u64>) -> Result<(), rusqlite::Error> {
        let mut db = crate::db::lock(&self.db);
        let tx = db.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO dmi_mapper (protocol, name, address, info) VALUES (?1, ?2, ?3, ?4)",
            params![m.protocol, m.name, m.address, m.info],
        )?;
        tx.execute("DELETE FROM dmi_synced WHERE protocol = ?1", [&m.protocol])?;
        for (s, hash) in took {
            insert(&tx, s, *hash)?;
        }
        tx.commit()?;
        let mut mem = self.memory();
        mem.retain(|s, _| s.protocol != m.protocol);
        mem.extend(took.iter().map(|(s, h)| (s.clone(), *h)));
        Ok(())
    }

    /// What each mapper took.
    pub fn synced(&self) -> BTreeMap<Slot, u64> {
        self.memory().clone()
    }

    /// What each mapper took, of the slots `keep` picks.
    pub fn synced_where(&self, keep: impl Fn(&Slot) -> bool) -> BTreeMap<Slot, u64> {
        let mem = self.memory();
        mem.iter()
            .filter(|(s, _)| keep(s))
            .map(|(s, h)| (s.clone(), *h))
            .collect()
    }

    /// The mapper took `s` at `hash` (`None`: removed it).
    pub fn took(&self, s: &Slot, hash: Option<u64>) -> Result<(), rusqlite::Error> {
        {
            let db = crate::db::lock(&self.db);
            match hash {
                Some(h) => insert(&db, s, h).map(|_| ())?,
                None => db
                    .execute(
                        "DELETE FROM dmi_synced WHERE kind = ?1 AND key = ?2 AND protocol = ?3",
                        params![s.kind.as_str(), s.key, s.protocol],
                    )
                    .map(|_| ())?,
            }
        }
        match hash {
            Some(h) => self.memory().insert(s.clone(), h),
            None => self.memory().remove(s),
        };
        Ok(())
    }
}

fn read_synced(db: &crate::db::Db) -> Result<BTreeMap<Slot, u64>, rusqlite::Error> {
    let db = crate::db::lock(db);
    let mut stmt = db.prepare("SELECT kind, key, protocol, hash FROM dmi_synced")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (kind, key, protocol, hash) = row?;
        if let Some(kind) = Kind::parse(&kind) {
            out.insert(
                Slot {
                    kind,
                    key,
                    protocol,
                },
                hash as u64,
            );
        }
    }
    Ok(out)
}

fn insert(db: &rusqlite::Connection, s: &Slot, hash: u64) -> Result<usize, rusqlite::Error> {
    db.execute(
        "INSERT OR REPLACE INTO dmi_synced (kind, key, protocol, hash) VALUES (?1, ?2, ?3, ?4)",
        params![s.kind.as_str(), s.key, s.protocol, hash as i64],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappers_and_what_they_took_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edge.db");
        let d = Slot {
            kind: Kind::Device,
            key: "default/d".into(),
            protocol: "virtual".into(),
        };
        let m = Mapper {
            protocol: "virtual".into(),
            name: "demo".into(),
            address: "/tmp/x.sock".into(),
            info: "{}".into(),
        };
        {
            let r = Records::open_in(crate::db::open(&path).expect("db")).expect("open");
            r.register(&m, &BTreeMap::from([(d.clone(), 5)]))
                .expect("register");
            r.took(&d, Some(6)).expect("took");
        }
        let r = Records::open_in(crate::db::open(&path).expect("db")).expect("reopen");
        assert_eq!(r.mappers().expect("mappers"), std::slice::from_ref(&m));
        assert_eq!(r.synced(), BTreeMap::from([(d.clone(), 6)]));
        r.register(&m, &BTreeMap::new()).expect("register again");
        assert!(r.synced().is_empty(), "a registration replaces the records");
    }
}
