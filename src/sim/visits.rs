//! The demo app's shared store: each visit a task serves is saved in an embedded SQLite
//! database (one file, WAL journal) before the task answers, keyed by the id the load balancer
//! gave the request. A task that dies mid-request has saved nothing and answered nothing; a
//! task that cannot save answers 500, so the client never sees a success that was not kept.
//! At the end, [`VisitStore::audit`] holds the answered ids against the rows: every answered
//! visit must be there exactly once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rusqlite::{params, Connection, ErrorCode};

/// What saving a visit came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    Ok,
    /// The id was saved before: a second save is refused, never counted twice.
    Duplicate,
    Failed(String),
}

pub struct VisitStore {
    conn: Mutex<Connection>,
    pub path: PathBuf,
    duplicates: AtomicU64,
    failures: AtomicU64,
}

/// The store held against what the load balancer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Requests answered 200 by a task, and the rows saved.
    pub answered: u64,
    pub rows: u64,
    /// Answered ids with no row (lost), and answered ids the client got more than once.
    pub missing: u64,
    pub answered_twice: u64,
    /// Rows whose answer never reached the client (its task died between the save and the
    /// answer): saved, and seen by the client as a failure.
    pub unanswered_rows: u64,
    /// Second saves refused, and saves that failed (answered 500).
    pub duplicates: u64,
    pub failures: u64,
    /// Distinct containers that saved visits.
    pub containers: u64,
}

impl Audit {
    /// Every answered visit saved exactly once.
    pub fn exactly_once(&self) -> bool {
        self.missing == 0 && self.answered_twice == 0 && self.duplicates == 0 && self.answered > 0
    }
}

fn sql(e: rusqlite::Error, path: &Path) -> String {
    format!("visit store {}: {e}", path.display())
}

impl VisitStore {
    /// A fresh store at `path` (an earlier run's file is replaced).
    pub fn create(path: &Path) -> Result<VisitStore, String> {
        for suffix in ["", "-wal", "-shm"] {
            let f = PathBuf::from(format!("{}{suffix}", path.display()));
            match std::fs::remove_file(&f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("visit store {}: {e}", f.display()))
                }
                _ => {}
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("visit store {}: {e}", dir.display()))?;
        }
        let conn = Connection::open(path).map_err(|e| sql(e, path))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE visits (
                 id INTEGER PRIMARY KEY,
                 container TEXT NOT NULL,
                 task TEXT NOT NULL,
                 saved_at_ms INTEGER NOT NULL
             );",
        )
        .map_err(|e| sql(e, path))?;
        Ok(VisitStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            duplicates: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// Saves visit `id`, served by `container` of `task` (its own transaction, committed).
    pub fn save(&self, id: u64, container: &str, task: &str) -> Saved {
        let now = chrono::Utc::now().timestamp_millis();
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let r = conn.execute(
            "INSERT INTO visits (id, container, task, saved_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![id as i64, container, task, now],
        );
        match r {
            Ok(_) => Saved::Ok,
            Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == ErrorCode::ConstraintViolation => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                Saved::Duplicate
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                Saved::Failed(sql(e, &self.path))
            }
        }
    }

    /// The rows held against the ids the load balancer got a 200 for.
    pub fn audit(&self, answered: &[u64]) -> Result<Audit, String> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn
            .prepare("SELECT id FROM visits")
            .map_err(|e| sql(e, &self.path))?;
        let ids = stmt
            .query_map([], |r| r.get::<_, i64>(0))
            .map_err(|e| sql(e, &self.path))?
            .collect::<Result<HashSet<i64>, _>>()
            .map_err(|e| sql(e, &self.path))?;
        let containers: i64 = conn
            .query_row("SELECT COUNT(DISTINCT container) FROM visits", [], |r| r.get(0))
            .map_err(|e| sql(e, &self.path))?;
        let mut seen = HashSet::with_capacity(answered.len());
        let (mut missing, mut twice) = (0, 0);
        for id in answered {
            if !seen.insert(*id) {
                twice += 1;
            } else if !ids.contains(&(*id as i64)) {
                missing += 1;
            }
        }
        let unanswered = ids.iter().filter(|id| !seen.contains(&(**id as u64))).count();
        Ok(Audit {
            answered: answered.len() as u64,
            rows: ids.len() as u64,
            missing,
            answered_twice: twice,
            unanswered_rows: unanswered as u64,
            duplicates: self.duplicates.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            containers: containers as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_visit_is_saved_once_and_the_audit_finds_what_was_lost_or_unanswered() {
        let dir = tempfile::tempdir().unwrap();
        let store = VisitStore::create(&dir.path().join("visits.sqlite")).unwrap();
        for id in 1..=5 {
            assert_eq!(store.save(id, "c1", "t1"), Saved::Ok);
        }
        assert_eq!(store.save(3, "c2", "t2"), Saved::Duplicate);
        // 1..4 answered; 5 saved but its answer was lost; 6 answered but never saved.
        let a = store.audit(&[1, 2, 3, 4]).unwrap();
        assert_eq!((a.rows, a.missing, a.unanswered_rows, a.duplicates), (5, 0, 1, 1));
        assert!(!a.exactly_once(), "a refused second save is reported");
        let a = store.audit(&[1, 2, 6]).unwrap();
        assert_eq!(a.missing, 1);
        // A fresh store replaces the file: a second run starts empty.
        drop(store);
        let store = VisitStore::create(&dir.path().join("visits.sqlite")).unwrap();
        assert_eq!(store.save(1, "c1", "t1"), Saved::Ok);
        let a = store.audit(&[1]).unwrap();
        assert!(a.exactly_once() && a.rows == 1 && a.containers == 1, "{a:?}");
    }

    #[test]
    fn a_save_that_fails_is_a_failure_not_a_success() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("visits.sqlite");
        let store = VisitStore::create(&path).unwrap();
        store
            .conn
            .lock()
            .unwrap()
            .execute_batch("DROP TABLE visits")
            .unwrap();
        match store.save(1, "c", "t") {
            Saved::Failed(e) => assert!(e.contains("visits.sqlite") && e.contains("no such table"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.failures.load(Ordering::Relaxed), 1);
    }
}
