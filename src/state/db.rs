//! The state database for async code: one thread owns the connection (rusqlite never runs
//! on a tokio worker), and writes queued together are committed together — many intents,
//! one fsync (group commit) — each in its own savepoint so one failure spoils no other.

use super::work::{self, Outcome};
use super::{Conn, SqlResult, State, StateError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A write, run in a round's transaction (`Some`), or told that the round's transaction
/// could not begin (`None`: it runs nothing, and its caller learns why).
type WriteJob = Box<dyn FnOnce(Option<&Conn>) -> Completion + Send>;
type ReadJob = Box<dyn FnOnce(&Conn) + Send>;

enum Job {
    Read(ReadJob),
    /// `durable`: must survive power loss before the caller goes on (an intent).
    Write(WriteJob, bool),
    /// An item's outcome: a round's outcomes are written a statement for many.
    Outcome(i64, Outcome, Completion),
}

/// A write of a round, in the order it was queued.
enum Write {
    Job(WriteJob),
    Outcome(i64, Outcome, Completion),
}

/// A handle to the database thread; cheap to clone.
#[derive(Clone)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
    path: PathBuf,
    /// The state's content key (see [`super::key`]).
    key: super::key::ContentKey,
    commits: Arc<AtomicU64>,
    /// The first failure of a write nobody waited on ([`Db::record_later`]).
    unwaited: Arc<std::sync::Mutex<Option<String>>>,
}

/// Writes at most this many queued jobs per transaction.
const MAX_GROUP: usize = 512;

/// How long a round of non-durable writes waits for more to share its commit. Nobody
/// waits on those commits to send, so this costs no throughput; it saves commits (each one
/// rewrites the pages it touched into the WAL).
const LINGER: Duration = Duration::from_millis(2);
const LINGER_SLICE: Duration = Duration::from_micros(500);

impl Db {
    /// Opens the database (running migrations) on its own thread.
    pub fn open(path: &Path) -> Result<Db, StateError> {
        Db::of(State::open(path)?)
    }

    /// Serves an open state from a thread of its own.
    fn of(state: State) -> Result<Db, StateError> {
        let path = state.path().to_path_buf();
        // A page cache that holds a run's items (about 4 KiB per 10 items) up to 200,000
        // items: with SQLite's default of 2 MiB, outcome updates re-read pages they had
        // just written.
        if let Some(lite) = state.conn.lite() {
            lite.pragma_update(None, "cache_size", -(80 << 10))
                .map_err(|e| state.err(e))?;
            // Each write's savepoint keeps the pages it changes in a statement journal,
            // which SQLite otherwise spills to a temporary file, a write per page.
            lite.pragma_update(None, "temp_store", "memory")
                .map_err(|e| state.err(e))?;
        }
        let key = state.key().clone();
        let (jobs, rx) = mpsc::channel::<Job>();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        std::thread::Builder::new()
            .name("payrun-db".into())
            .spawn(move || serve(state.conn, rx, counter))
            .map_err(|e| StateError::Db {
                path: path.clone(),
                message: format!("cannot start the database thread: {e}"),
            })?;
        Ok(Db {
            jobs,
            path,
            key,
            commits,
            unwaited: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key the state's planned content is hashed with.
    pub fn key(&self) -> &super::key::ContentKey {
        &self.key
    }

    /// Transactions committed so far (each one fsync): group commit makes this smaller than
    /// the number of writes.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn gone(&self) -> StateError {
        StateError::Db {
            path: self.path.clone(),
            message: "the database thread has stopped".into(),
        }
    }

    /// Makes every later write transaction check the run's lease first (a PostgreSQL
    /// state): a run that lost it records nothing more.
    pub async fn fence(&self, fence: super::pg::Fence) -> Result<(), StateError> {
        self.read(move |c| {
            c.set_fence(fence);
            Ok(())
        })
        .await
    }

    /// Runs `f` on the database thread, outside any transaction.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Conn) -> SqlResult<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.jobs.send(Job::Read(job)).map_err(|_| self.gone())?;
        let path = self.path.clone();
        rx.await
            .map_err(|_| self.gone())?
            .map_err(|source| StateError::Sqlite { path, source })
    }

    /// Runs `f` in a transaction shared with the other queued writes; returns once that
    /// transaction is durably committed (fsync): for intents, which must never be lost.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Conn) -> SqlResult<T> + Send + 'static,
    ) -> Result<T, StateError> {
        self.submit(f, true).await
    }

    /// Like [`Db::write`], committed without waiting for the disk (WAL, synchronous=NORMAL):
    /// it survives a crash of payrun but maybe not of the machine. For outcomes: one lost to
    /// a power cut leaves its item in flight, and the next run asks the provider — safe.
    pub async fn record<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Conn) -> SqlResult<T> + Send + 'static,
    ) -> Result<T, StateError> {
        self.submit(f, false).await
    }

    /// Like [`Db::record`], without waiting for the commit: the write is queued and the
    /// caller goes on. A failure is kept and returned by the next call of this or of
    /// [`Db::settled`]. Writes and reads are served in the order they are queued, so a
    /// later read sees this write.
    ///
    /// `f` must make **one** statement: on SQLite it runs without a savepoint of its own,
    /// since SQLite undoes a failed statement by itself (a savepoint per write copied each
    /// page an outcome touched into the statement journal); PostgreSQL, where a failed
    /// statement spoils the transaction, gives it one.
    pub fn record_later(
        &self,
        f: impl FnOnce(&Conn) -> SqlResult<()> + Send + 'static,
    ) -> Result<(), StateError> {
        self.unwaited_failure()?;
        let failed = self.unwaited.clone();
        let job: WriteJob = Box::new(move |conn| {
            let result = conn.map(|c| alone(c, f));
            Box::new(move |commit: Result<(), String>| {
                if let Err(e) = ran(result, commit) {
                    failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                }
            })
        });
        self.jobs
            .send(Job::Write(job, false))
            .map_err(|_| self.gone())
    }

    /// Records an item's outcome like [`Db::record_later`]: queued, not waited for. The
    /// outcomes queued together are written a few statements for all.
    pub fn record_outcome(&self, id: i64, outcome: Outcome) -> Result<(), StateError> {
        self.unwaited_failure()?;
        let failed = self.unwaited.clone();
        let done: Completion = Box::new(move |result: Result<(), String>| {
            if let Err(e) = result {
                failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
            }
        });
        self.jobs
            .send(Job::Outcome(id, outcome, done))
            .map_err(|_| self.gone())
    }

    /// Waits until every write queued so far is committed; the first failure of those
    /// nobody waited on, if any.
    pub async fn settled(&self) -> Result<(), StateError> {
        self.read(|_| Ok(())).await?;
        self.unwaited_failure()
    }

    fn unwaited_failure(&self) -> Result<(), StateError> {
        let failed = self.unwaited.lock().unwrap_or_else(|p| p.into_inner());
        match &*failed {
            None => Ok(()),
            Some(message) => Err(StateError::Db {
                path: self.path.clone(),
                message: message.clone(),
            }),
        }
    }

    async fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Conn) -> SqlResult<T> + Send + 'static,
        durable: bool,
    ) -> Result<T, StateError> {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, String>>();
        let job: WriteJob = Box::new(move |conn| {
            let result = conn.map(|c| in_savepoint(c, f));
            Box::new(move |commit: Result<(), String>| {
                let _ = tx.send(ran(result, commit));
            })
        });
        self.jobs
            .send(Job::Write(job, durable))
            .map_err(|_| self.gone())?;
        rx.await
            .map_err(|_| self.gone())?
            .map_err(|message| StateError::Db {
                path: self.path.clone(),
                message,
            })
    }
}

/// What became of a write: its own result, unless its transaction failed to commit.
fn written<T, E: std::fmt::Display>(
    result: Result<T, E>,
    commit: Result<(), String>,
) -> Result<T, String> {
    match (result, commit) {
        (Ok(v), Ok(())) => Ok(v),
        (Err(e), _) => Err(e.to_string()),
        (Ok(_), Err(e)) => Err(format!("commit failed: {e}")),
    }
}

/// What became of a write that ran (`Some`), or of one whose round's transaction could not
/// begin (`None`: `commit` says why).
fn ran<T, E: std::fmt::Display>(
    result: Option<Result<T, E>>,
    commit: Result<(), String>,
) -> Result<T, String> {
    match result {
        Some(result) => written(result, commit),
        None => Err(commit
            .err()
            .unwrap_or_else(|| "the write did not run".into())),
    }
}

/// Runs one statement's writes so that their failure spoils no other write of the round.
fn alone<T>(conn: &Conn, f: impl FnOnce(&Conn) -> SqlResult<T>) -> SqlResult<T> {
    if conn.failure_spoils_transaction() {
        in_savepoint(conn, f)
    } else {
        f(conn)
    }
}

fn in_savepoint<T>(conn: &Conn, f: impl FnOnce(&Conn) -> SqlResult<T>) -> SqlResult<T> {
    // Prepared once and cached (SQLite): parsing these on every write was a tenth of this
    // thread.
    let run = |sql: &str| conn.savepoint_command(sql);
    run("SAVEPOINT job")?;
    match f(conn) {
        Ok(v) => {
            run("RELEASE job")?;
            Ok(v)
        }
        Err(e) => {
            let _ = run("ROLLBACK TO job").and_then(|()| run("RELEASE job"));
            Err(e)
        }
    }
}

/// Runs a round's writes in order, consecutive outcomes a statement for many; returns
/// what to tell each once the round's transaction ends.
fn run_writes(conn: &Conn, writes: Vec<Write>) -> Vec<Completion> {
    let mut completions = Vec::with_capacity(writes.len());
    let mut outcomes: Vec<(i64, Outcome, Completion)> = Vec::new();
    for w in writes {
        match w {
            Write::Job(job) => {
                write_outcomes(conn, &mut outcomes, &mut completions);
                completions.push(job(Some(conn)));
            }
            Write::Outcome(id, o, done) => {
                // A second outcome of an item follows the first in a statement of its own.
                if outcomes.len() == work::OUTCOMES_PER_STATEMENT
                    || outcomes.iter().any(|(other, _, _)| *other == id)
                {
                    write_outcomes(conn, &mut outcomes, &mut completions);
                }
                outcomes.push((id, o, done));
            }
        }
    }
    write_outcomes(conn, &mut outcomes, &mut completions);
    completions
}

/// Writes the outcomes kept so far, in one statement; each is told of it with the
/// transaction's end.
fn write_outcomes(
    conn: &Conn,
    outcomes: &mut Vec<(i64, Outcome, Completion)>,
    completions: &mut Vec<Completion>,
) {
    if outcomes.is_empty() {
        return;
    }
    let all: Vec<(i64, &Outcome)> = outcomes.iter().map(|(id, o, _)| (*id, o)).collect();
    let result = alone(conn, |c| work::set_outcomes(c, &all)).map_err(|e| e.to_string());
    for (_, _, done) in outcomes.drain(..) {
        let result = result.clone();
        completions.push(Box::new(move |commit: Result<(), String>| {
            done(written(result, commit))
        }));
    }
}

fn serve(conn: Conn, rx: mpsc::Receiver<Job>, commits: Arc<AtomicU64>) {
    let mut full_sync = true;
    while let Ok(first) = rx.recv() {
        let mut writes = Vec::new();
        let mut reads = Vec::new();
        let mut durable = false;
        match first {
            Job::Read(r) => reads.push(r),
            Job::Write(w, d) => {
                writes.push(Write::Job(w));
                durable |= d;
            }
            Job::Outcome(id, o, done) => writes.push(Write::Outcome(id, o, done)),
        }
        // Whatever else is already queued joins this round. A round of outcomes only
        // (nobody waits on the disk) first lingers a moment for more: one commit for many.
        // It sleeps rather than waits on the queue, so the writes that come meanwhile do
        // not wake this thread one by one.
        // An intent or a read that comes meanwhile ends the linger at the next slice.
        let mut lingered = Duration::ZERO;
        while writes.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Job::Write(w, d)) => {
                    writes.push(Write::Job(w));
                    durable |= d;
                }
                Ok(Job::Outcome(id, o, done)) => writes.push(Write::Outcome(id, o, done)),
                Ok(Job::Read(r)) => reads.push(r),
                Err(mpsc::TryRecvError::Empty)
                    if lingered < LINGER && !durable && reads.is_empty() && !writes.is_empty() =>
                {
                    std::thread::sleep(LINGER_SLICE);
                    lingered += LINGER_SLICE;
                }
                Err(_) => break,
            }
        }
        if !writes.is_empty() {
            if durable != full_sync && conn.set_durable(durable).is_ok() {
                full_sync = durable;
            }
            let began = conn.begin().map_err(|e| e.to_string());
            let completions: Vec<Completion> = match &began {
                Ok(()) => run_writes(&conn, writes),
                // Every write is told why (a lost lease, a lost connection), none dropped
                // unanswered: its caller would take the thread for stopped.
                Err(_) => writes
                    .into_iter()
                    .map(|w| match w {
                        Write::Outcome(_, _, done) => done,
                        Write::Job(job) => job(None),
                    })
                    .collect(),
            };
            let outcome = began.and_then(|()| conn.batch("COMMIT").map_err(|e| e.to_string()));
            if outcome.is_err() {
                let _ = conn.batch("ROLLBACK");
            } else {
                commits.fetch_add(1, Ordering::Relaxed);
            }
            for c in completions {
                c(outcome.clone());
            }
        }
        // Reads queued behind writes see them committed.
        for r in reads {
            r(&conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each store, served, with one table `t` of unique numbers.
    async fn with_table() -> Vec<(crate::state::testing::Store, Db)> {
        let mut out = Vec::new();
        for mut store in crate::state::testing::stores() {
            let db = Db::of(store.take()).unwrap();
            db.write(|c| c.batch("CREATE TABLE t (n INTEGER UNIQUE)"))
                .await
                .unwrap();
            out.push((store, db));
        }
        out
    }

    async fn rows(db: &Db) -> i64 {
        db.read(|c| {
            c.one("SELECT COUNT(*) FROM t", super::super::sql::args![], |r| {
                r.get(0)
            })
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_fail_alone() {
        for (store, db) in with_table().await {
            let tasks: Vec<_> = (0..200)
                .map(|i| {
                    let db = db.clone();
                    tokio::spawn(async move {
                        db.write(move |c| {
                            c.execute(
                                "INSERT INTO t VALUES (?1)",
                                super::super::sql::args![i % 150],
                            )
                        })
                        .await
                    })
                })
                .collect();
            let mut failed = 0;
            for t in tasks {
                if t.await.unwrap().is_err() {
                    failed += 1;
                }
            }
            assert_eq!(failed, 50, "{}: duplicates fail on their own", store.name);
            assert_eq!(rows(&db).await, 150, "{}", store.name);
            assert!(
                db.commits() < 200,
                "{}: {} commits for 201 writes",
                store.name,
                db.commits()
            );
        }
    }

    /// A run that lost its lease (PostgreSQL: a fence no lease holds) writes nothing, and
    /// each write says so: none is left unanswered, which its caller would take for a
    /// stopped database thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_of_a_round_that_cannot_begin_are_each_told_why() {
        for (store, db) in with_table().await {
            if store.name != "PostgreSQL" {
                continue;
            }
            db.fence(crate::state::pg::Fence {
                job: "j".into(),
                scope: "s".into(),
                token: 7,
            })
            .await
            .unwrap();
            db.record_later(|c| c.execute("INSERT INTO t VALUES (1)", &[]).map(drop))
                .unwrap();
            let waited = db
                .write(|c| c.execute("INSERT INTO t VALUES (2)", &[]))
                .await
                .unwrap_err()
                .to_string();
            assert!(waited.contains("lost its lease"), "{waited}");
            let later = db.settled().await.unwrap_err().to_string();
            assert!(later.contains("lost its lease"), "{later}");
            assert_eq!(rows(&db).await, 0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_not_waited_on_are_seen_in_order_and_their_failure_is_reported() {
        for (store, db) in with_table().await {
            for i in 0..100 {
                db.record_later(move |c| {
                    c.execute("INSERT INTO t VALUES (?1)", super::super::sql::args![i])
                        .map(drop)
                })
                .unwrap();
            }
            // A read queued behind them sees them all.
            assert_eq!(rows(&db).await, 100, "{}", store.name);
            db.settled().await.unwrap();

            // A failing one spoils no other, and is reported by the next call of either.
            db.record_later(|c| c.execute("INSERT INTO t VALUES (5)", &[]).map(drop))
                .unwrap();
            db.record_later(|c| c.execute("INSERT INTO t VALUES (100)", &[]).map(drop))
                .unwrap();
            let e = db.settled().await.unwrap_err().to_string();
            assert!(e.to_lowercase().contains("unique"), "{}: {e}", store.name);
            assert!(db.record_later(|_| Ok(())).is_err());
            assert_eq!(rows(&db).await, 101, "{}", store.name);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outcomes_queued_together_keep_their_order_and_fail_alone() {
        use crate::state::ItemState;
        for (store, db) in with_table().await {
            db.write(|c| {
                c.batch("INSERT INTO plans (id, job, scope, created_at) VALUES (1, 'j', 's', 't')")?;
                for id in 1..=300i64 {
                    c.execute(
                        "INSERT INTO items (id, plan_id, step, step_index, row_key, row_line, state, content_hash, payload, created_at, updated_at)
                         VALUES (?1, 1, 'pay', 0, ?2, ?1, 'in_flight', 'h', '{}', 't', 't')",
                        super::super::sql::args![id, format!("k{id}")],
                    )?;
                }
                Ok(())
            })
            .await
            .unwrap();
            let outcome = |state| Outcome {
                state,
                ..Outcome::default()
            };
            // Two outcomes of every item, queued one after the other (failed then
            // succeeded for odd items, the other way round for even ones): the later is
            // the one kept, whichever statement each went into.
            let order = |id: i64| {
                if id % 2 == 1 {
                    [ItemState::Failed, ItemState::Succeeded]
                } else {
                    [ItemState::Succeeded, ItemState::Failed]
                }
            };
            for id in 1..=300 {
                let [first, second] = order(id);
                db.record_outcome(id, outcome(first)).unwrap();
                if id % 7 == 0 {
                    // A write between outcomes: they do not pass it.
                    db.record_later(move |c| {
                        c.execute("INSERT INTO t VALUES (?1)", super::super::sql::args![id])
                            .map(drop)
                    })
                    .unwrap();
                }
                db.record_outcome(id, outcome(second)).unwrap();
            }
            // A failing write among them spoils none of them.
            db.record_later(|c| c.execute("INSERT INTO t VALUES (7)", &[]).map(drop))
                .unwrap();
            db.record_outcome(300, outcome(ItemState::Blocked)).unwrap();
            assert!(db.settled().await.is_err(), "{}", store.name);
            let states: Vec<String> = db
                .read(|c| {
                    c.all(
                        "SELECT state FROM items ORDER BY id",
                        super::super::sql::args![],
                        |r| r.get(0),
                    )
                })
                .await
                .unwrap();
            let expected: Vec<String> = (1..=300)
                .map(|id| match id {
                    300 => "blocked".to_string(),
                    id => order(id)[1].as_str().to_string(),
                })
                .collect();
            assert_eq!(states, expected, "{}", store.name);
            assert_eq!(rows(&db).await, 42, "{}", store.name);
        }
    }
}
