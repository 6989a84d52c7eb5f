//! The host's durable store: SQLite in WAL mode with `synchronous=FULL`, one writer, versioned
//! schema migrations. It holds the enclave's chained records as opaque rows; nothing in it is
//! secret and everything in it is authenticated by the enclave.
//!
//! Invariant: [`HostStore::append`] returns only after the transaction is durable, and writes all
//! of a batch or none of it.

use frostgate_common::bounded::RecordBody;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::StoreRecord;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &["CREATE TABLE records (
        version  INTEGER PRIMARY KEY,
        prev_mac BLOB NOT NULL,
        body     BLOB NOT NULL,
        mac      BLOB NOT NULL
    );"];

fn db_err(what: &str, e: rusqlite::Error) -> Error {
    // A file SQLite cannot read as a database is damaged, not busy: retrying cannot help.
    let code = match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => ErrorCode::StoreDamaged,
        _ => ErrorCode::StoreCommitFailed,
    };
    Error::new(code, format!("{what}: {e}"))
}

fn damaged(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::StoreDamaged,
        format!("{}: {why}; left as found (restore a copy; see OPERATIONS.md)", path.display()),
    )
}

/// The SQLite header every database file starts with.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Judges an existing file before SQLite opens it: SQLite given a file that is not a database
/// (or one cut short) may still replay and checkpoint its write-ahead log into it when the
/// connection closes, destroying frames nobody has judged yet. A missing or empty file passes
/// (a new store).
fn check_file(path: &Path) -> Result<(), Error> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(damaged(path, format!("cannot be read: {e}"))),
    };
    let len = file.metadata().map_err(|e| damaged(path, e))?.len();
    if len == 0 {
        return Ok(());
    }
    let mut header = [0u8; 100];
    file.read_exact(&mut header).map_err(|_| damaged(path, format!("{len} bytes: shorter than a database header")))?;
    if &header[..16] != SQLITE_MAGIC {
        return Err(damaged(path, "not an SQLite database (bad header)"));
    }
    // Page size: big-endian at 16; the value 1 means 65536.
    let page = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        p if p >= 512 && p.is_power_of_two() => u64::from(p),
        p => return Err(damaged(path, format!("invalid page size {p}"))),
    };
    if len % page != 0 {
        return Err(damaged(path, format!("{len} bytes is not a whole number of {page}-byte pages (cut short)")));
    }
    Ok(())
}

/// A connection that never checkpoints on close: the write-ahead log stays as it is until a
/// commit of this process checkpoints it, so a store that fails to open is left as found.
fn connect(path: &Path, flags: rusqlite::OpenFlags) -> Result<Connection, Error> {
    check_file(path)?;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| db_err("opening the store", e))?;
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(|e| db_err("no checkpoint on close", e))?;
    // Reads every page through the write-ahead log (nothing is written yet): a damaged file
    // stops here.
    let verdict: String =
        conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0)).map_err(|e| db_err("checking the store", e))?;
    if verdict != "ok" {
        return Err(damaged(path, format!("SQLite quick_check: {verdict}")));
    }
    Ok(conn)
}

/// Row counts and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Rows.
    pub records: u64,
    /// Lowest version present (0 if empty).
    pub first_version: u64,
    /// Highest version present (0 if empty).
    pub head_version: u64,
    /// Database file size in bytes.
    pub file_bytes: u64,
}

/// The host's store.
#[derive(Debug)]
pub struct HostStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Held exclusively while the store is streamed to the enclave: no commit lands between the
    /// read and the enclave's verdict, so a stream is never older than the anchor it is judged
    /// against (a stale stream would look exactly like a rollback).
    streaming: tokio::sync::RwLock<()>,
}

impl HostStore {
    /// Opens (creating if needed) and migrates the database. A file that is not a database, or
    /// that SQLite finds corrupt, is `store_damaged` and left byte for byte as found.
    pub fn open(path: &Path) -> Result<HostStore, Error> {
        let mut conn = connect(path, rusqlite::OpenFlags::default())?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| db_err("WAL", e))?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| db_err("synchronous", e))?;
        // Deleted records (e.g. a share sealed under a previous key epoch, removed by the
        // compaction after a refresh) are overwritten, not left in free pages.
        conn.pragma_update(None, "secure_delete", "ON").map_err(|e| db_err("secure_delete", e))?;
        let applied: usize =
            conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| db_err("user_version", e))?;
        if applied > MIGRATIONS.len() {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                format!("store schema {applied} is newer than this build"),
            ));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(applied) {
            let tx = conn.transaction().map_err(|e| db_err("migration", e))?;
            tx.execute_batch(m).map_err(|e| db_err("migration", e))?;
            tx.pragma_update(None, "user_version", i + 1).map_err(|e| db_err("migration", e))?;
            tx.commit().map_err(|e| db_err("migration", e))?;
        }
        Ok(HostStore { path: path.to_path_buf(), conn: Mutex::new(conn), streaming: tokio::sync::RwLock::new(()) })
    }

    /// Opens an existing store read-only (inspection): a missing or empty file is refused, and
    /// nothing is created, migrated or written.
    pub fn open_existing(path: &Path) -> Result<HostStore, Error> {
        match std::fs::metadata(path) {
            Ok(m) if m.len() > 0 => {}
            Ok(_) => return Err(damaged(path, "empty file: not a store")),
            Err(e) => return Err(Error::new(ErrorCode::ConfigInvalid, format!("{}: {e}", path.display()))),
        }
        let conn =
            connect(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        let applied: usize =
            conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| db_err("user_version", e))?;
        if applied == 0 || applied > MIGRATIONS.len() {
            return Err(damaged(path, format!("schema {applied} is not a frostgate store this build reads")));
        }
        Ok(HostStore { path: path.to_path_buf(), conn: Mutex::new(conn), streaming: tokio::sync::RwLock::new(()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends consecutive records in one durable transaction; optionally deletes every record
    /// below `compact_before`. Returns the new head version.
    ///
    /// Blocks while a stream holds [`Self::hold_commits`]; call it off the async runtime.
    pub fn append(&self, records: &[StoreRecord], compact_before: Option<u64>) -> Result<u64, Error> {
        let _no_stream = self.streaming.blocking_read();
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| db_err("begin", e))?;
        let head: Option<(i64, Vec<u8>)> = tx
            .query_row("SELECT version, mac FROM records ORDER BY version DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| db_err("reading the head", e))?;
        // An empty store starts at record 1, or at a snapshot (compaction): anything else means
        // the store was lost under a running enclave; refuse rather than write an unloadable store.
        if let (None, Some(first)) = (&head, records.first()) {
            if first.version != 1 && compact_before != Some(first.version) {
                return Err(Error::new(
                    ErrorCode::StoreCommitFailed,
                    format!("the store is empty but record {} does not start a chain or a snapshot", first.version),
                ));
            }
        }
        if let (Some((version, mac)), Some(first)) = (&head, records.first()) {
            if first.version != *version as u64 + 1 || first.prev_mac.as_slice() != mac.as_slice() {
                return Err(Error::new(
                    ErrorCode::StoreCommitFailed,
                    format!("record {} does not continue the stored head {version}", first.version),
                ));
            }
        }
        for r in records {
            tx.execute(
                "INSERT INTO records (version, prev_mac, body, mac) VALUES (?1, ?2, ?3, ?4)",
                params![r.version as i64, r.prev_mac.as_slice(), r.body.as_inner(), r.mac.as_slice()],
            )
            .map_err(|e| db_err("insert", e))?;
        }
        if let Some(before) = compact_before {
            tx.execute("DELETE FROM records WHERE version < ?1", params![before as i64])
                .map_err(|e| db_err("compaction", e))?;
        }
        tx.commit().map_err(|e| db_err("commit", e))?;
        if compact_before.is_some() {
            // The write-ahead log still holds the deleted records' old pages until a checkpoint.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "checkpoint after compaction failed");
            }
        }
        Ok(records.last().map(|r| r.version).or(head.map(|(v, _)| v as u64)).unwrap_or(0))
    }

    /// Holds every commit off until the guard drops (while the store is streamed to the enclave).
    pub async fn hold_commits(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.streaming.write().await
    }

    /// Every record in version order.
    pub fn records(&self) -> Result<Vec<StoreRecord>, Error> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT version, prev_mac, body, mac FROM records ORDER BY version")
            .map_err(|e| db_err("read", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, Vec<u8>>(3)?))
            })
            .map_err(|e| db_err("read", e))?;
        let mut out = Vec::new();
        for row in rows {
            let (version, prev, body, mac) = row.map_err(|e| db_err("read", e))?;
            // A row that does not even have the record's shape is passed on as an empty,
            // failing record: the enclave's verdict (store_tampered) is the one that counts.
            out.push(StoreRecord {
                version: version as u64,
                prev_mac: prev.try_into().unwrap_or([0; 32]),
                body: RecordBody::new(body)
                    .unwrap_or_else(|_| RecordBody::new(Vec::new()).unwrap_or_else(|_| unreachable!())),
                mac: mac.try_into().unwrap_or([0; 32]),
            });
        }
        Ok(out)
    }

    /// Row counts and file size.
    pub fn stats(&self) -> Result<Stats, Error> {
        let conn = self.lock();
        let (records, first, head): (i64, Option<i64>, Option<i64>) = conn
            .query_row("SELECT COUNT(*), MIN(version), MAX(version) FROM records", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| db_err("stats", e))?;
        let file_bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        Ok(Stats {
            records: records as u64,
            first_version: first.unwrap_or(0) as u64,
            head_version: head.unwrap_or(0) as u64,
            file_bytes,
        })
    }
}
