//! Group commit for the request log: every writer's operations that arrive while a commit is in
//! progress (and, when many are writing, some that arrive just after: [`super::pacing`]) are
//! committed together by one thread on its own connection (one fsync for many).
//!
//! Invariants: each operation is atomic on its own (a savepoint: one refused rolls back alone);
//! each caller is answered only after the commit that holds its operation (or with
//! `store_unavailable` when that commit failed).

use super::log::{unavailable, Writes};
use super::pacing::{Pacing, Wait};
use frostgate_common::error::{Error, ErrorCode};
use rusqlite::Connection;
use std::path::Path;

/// One operation for the group writer: it runs on the open transaction and answers whether it
/// succeeded (else it is rolled back alone) and what to do once the commit's outcome is known.
type Job = Box<dyn FnOnce(&Writes<'_>) -> (bool, Box<dyn FnOnce(Result<(), Error>) + Send>) + Send>;

/// The group writer (cheap to clone).
#[derive(Debug, Clone)]
pub struct GroupWriter {
    jobs: std::sync::mpsc::Sender<Job>,
}

/// Most operations committed together.
const MAX_GROUP: usize = 256;

impl GroupWriter {
    /// The writer of the log at `path` (opened by [`SqliteLog::open`] first: migrated).
    pub fn start(path: &Path) -> Result<GroupWriter, Error> {
        let mut conn = Connection::open(path).map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(unavailable)?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("request-log-writer".into())
            .spawn(move || {
                let mut pacing = Pacing::default();
                while let Ok(first) = queue.recv() {
                    let batch = gather(&queue, first, pacing.wait());
                    pacing.committed(batch.len());
                    commit(&mut conn, batch);
                }
            })
            .map_err(|e| Error::new(ErrorCode::Internal, format!("request log writer: {e}")))?;
        Ok(GroupWriter { jobs })
    }

    /// Runs `f` in the next group commit; answers once it is durable (or failed).
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Writes<'_>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |w| {
            let result = f(w);
            let ok = result.is_ok();
            let done: Box<dyn FnOnce(Result<(), Error>) + Send> = Box::new(move |commit| {
                let _ = tx.send(commit.and(result));
            });
            (ok, done)
        });
        self.jobs.send(job).map_err(|_| unavailable("the writer stopped"))?;
        rx.await.map_err(|_| unavailable("the writer stopped"))?
    }
}

/// A group: `first`, what is queued, and what arrives while `wait` says to wait for more (at
/// most [`MAX_GROUP`]).
fn gather<J>(queue: &std::sync::mpsc::Receiver<J>, first: J, wait: Wait) -> Vec<J> {
    let began = std::time::Instant::now();
    let mut batch = vec![first];
    while batch.len() < MAX_GROUP {
        let elapsed = began.elapsed();
        let next = match wait.more(batch.len(), elapsed) {
            true => queue.recv_timeout(wait.window.saturating_sub(elapsed)).ok(),
            false => queue.try_recv().ok(),
        };
        match next {
            Some(j) => batch.push(j),
            None => break,
        }
    }
    batch
}

type Finish = Box<dyn FnOnce(Result<(), Error>) + Send>;

/// One group: each job in its savepoint; any failure of the transaction itself (a savepoint that
/// cannot be opened or closed, SQLite having rolled the transaction back, the commit) fails the
/// whole group, and every caller of it hears so. A job that panics is rolled back alone.
fn commit(conn: &mut Connection, batch: Vec<Job>) {
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            // Nothing ran: each job is dropped unrun, and its caller answered `store_unavailable`.
            tracing::warn!("request log: {e}");
            drop(batch);
            return;
        }
    };
    let mut done: Vec<Finish> = Vec::with_capacity(batch.len());
    let mut broken: Option<Error> = None;
    for job in batch {
        if broken.is_some() {
            drop(job);
            continue;
        }
        if let Err(e) = run(&tx, &["SAVEPOINT job"]) {
            broken = Some(unavailable(e));
            drop(job);
            continue;
        }
        // A panicking job drops its answer channel (its caller hears `store_unavailable`).
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&Writes(&tx))));
        let (ok, finish): (bool, Finish) = ran.unwrap_or_else(|_| (false, Box::new(|_| {})));
        done.push(finish);
        if tx.is_autocommit() {
            broken = Some(unavailable("SQLite rolled the transaction back"));
            continue;
        }
        let close: &[&str] = if ok { &["RELEASE job"] } else { &["ROLLBACK TO job", "RELEASE job"] };
        if let Err(e) = run(&tx, close) {
            broken = Some(unavailable(e));
        }
    }
    let outcome = match broken {
        // Dropping the transaction rolls back whatever the group wrote.
        Some(e) => Err(e),
        None => tx.commit().map_err(unavailable),
    };
    if let Err(e) = &outcome {
        tracing::warn!(code = %e.code(), "request log group not committed: {}", e.message());
    }
    for finish in done {
        finish(outcome.clone());
    }
}

/// Runs each statement of `sql` (each parsed once per connection: the statement cache).
fn run(conn: &Connection, sql: &[&str]) -> rusqlite::Result<()> {
    for statement in sql {
        conn.prepare_cached(statement)?.execute([])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn without_a_wait_a_group_is_what_is_queued() {
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 1..=3 {
            tx.send(i).expect("queued");
        }
        assert_eq!(gather(&rx, 0, Wait::NONE), vec![0, 1, 2, 3]);
        assert_eq!(gather(&rx, 9, Wait::NONE), vec![9], "nothing queued: the first alone");
    }

    #[test]
    fn a_wait_takes_the_writes_that_arrive_until_the_group_holds_its_count() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (go, gone) = std::sync::mpsc::channel::<()>();
        // 1-3 are sent after the group began: taken only because the group waits for them; 4-6
        // only once the group is answered, so they can only be the next group's.
        let sender = std::thread::spawn(move || {
            for i in 1..=3 {
                std::thread::sleep(Duration::from_millis(5));
                tx.send(i).expect("queued");
            }
            gone.recv().expect("go");
            for i in 4..=6 {
                tx.send(i).expect("queued");
            }
        });
        let wait = Wait { window: Duration::from_secs(2), writes: 4 };
        assert_eq!(gather(&rx, 0, wait), vec![0, 1, 2, 3], "in order, up to the count");
        go.send(()).expect("go");
        sender.join().expect("sender");
        assert_eq!(gather(&rx, 0, Wait::NONE), vec![0, 4, 5, 6], "the rest in the next group");
    }

    #[test]
    fn a_wait_ends_at_its_window() {
        let (tx, rx) = std::sync::mpsc::channel::<usize>();
        let began = Instant::now();
        assert_eq!(gather(&rx, 0, Wait { window: Duration::from_millis(20), writes: 10 }), vec![0]);
        assert!(began.elapsed() >= Duration::from_millis(20), "waited out its window");
        drop(tx);
    }

    #[test]
    fn a_wait_takes_at_most_a_group_and_ends_when_its_writers_are_gone() {
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 1..=MAX_GROUP + 1 {
            tx.send(i).expect("queued");
        }
        let wait = Wait { window: Duration::from_secs(600), writes: MAX_GROUP * 2 };
        assert_eq!(gather(&rx, 0, wait).len(), MAX_GROUP);
        drop(tx);
        let began = Instant::now();
        assert_eq!(gather(&rx, 0, wait), vec![0, MAX_GROUP, MAX_GROUP + 1]);
        // Not a timing bound: a wait that outlived its writers would take the 600 s window.
        assert!(began.elapsed() < Duration::from_secs(300), "no writer left: no wait");
    }
}
