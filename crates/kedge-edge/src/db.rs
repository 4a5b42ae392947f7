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
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA journal_size_limit=1048576;
         PRAGMA mmap_size=67108864; PRAGMA cache_size=-16384;",
    )?;
    check(&db)?;
    Ok(Arc::new(Mutex::new(db)))
}

/// Whether `e` says the disk (or the database's size limit) is full.
pub fn is_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// Checkpoints the write-ahead log into the database and truncates it, giving its space back to
/// the file system; true when that worked.
pub fn reclaim(db: &Connection) -> bool {
    let done = db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    tracing::info!(
        ok = matches!(done, Ok(0)),
        "disk full: write-ahead log checkpointed and truncated"
    );
    matches!(done, Ok(0))
}

/// SQLite's quick check (milliseconds for an edge's store): a damaged file stops the edge at
/// start with one clear error, rather than failing later one query at a time.
fn check(db: &Connection) -> Result<(), rusqlite::Error> {
    let verdict: String = db.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
    if verdict == "ok" {
        return Ok(());
    }
    Err(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(format!("damaged: {verdict}")),
    ))
}

/// What to do about `e` when it says the file is damaged ("" otherwise), for the error message.
pub fn damaged_hint(e: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, NotADatabase | DatabaseCorrupt) =>
        {
            " — the file is damaged. Stop the edge, restore the file from a backup, or move it \
             (with its -wal and -shm files) aside: the edge then gets its pods, devices and rules \
             from the cloud again when it connects; what it had not yet sent to the cloud is lost"
        }
        _ => "",
    }
}

pub fn lock(db: &Db) -> MutexGuard<'_, Connection> {
    db.lock().unwrap_or_else(|p| p.into_inner())
}
