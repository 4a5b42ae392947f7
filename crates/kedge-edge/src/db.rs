//! The edge's database, `<data-dir>/edge.db`: one SQLite connection shared by MetaManager, the
//! outbox and DeviceTwin. One connection, because SQLite serialises writers anyway, and with
//! several each commit invalidates the others' page caches, so every write re-read its pages
//! from the file (measured: most of a twin report's cost). WAL with `synchronous=NORMAL`
//! survives the process dying; pages are read through mmap.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

pub type Db = Arc<Mutex<Connection>>;

/// Opens (creating) the database at `path`.
pub fn open(path: &Path) -> Result<Db, rusqlite::Error> {
    let db = Connection::open(path)?;
    db.busy_timeout(std::time::Duration::from_secs(5))?;
    db.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         PRAGMA mmap_size=67108864; PRAGMA cache_size=-16384;",
    )?;
    Ok(Arc::new(Mutex::new(db)))
}

pub fn lock(db: &Db) -> MutexGuard<'_, Connection> {
    db.lock().unwrap_or_else(|p| p.into_inner())
}
