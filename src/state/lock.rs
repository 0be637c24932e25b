//! One run per job and scope. The kernel arbitrates: a run holds an OS lock (`flock`) on a
//! file beside the state database for as long as it lives, so two runs in two containers
//! that share the state's volume (each in its own PID namespace, where pids mean nothing
//! to the other) cannot both hold it, and a holder that died — however it died — has
//! released it. On NFS the server arbitrates the same lock for hosts that share the volume.
//!
//! The `locks` table records who holds it (run, pid, host, start) with a heartbeat, for
//! messages, for `status` and `unlock`, and for the one case the kernel cannot decide: a
//! file system without locks, where a holder whose heartbeat is older than [`LEASE`] is
//! taken for dead.

use super::Conn;
use super::sql::{SqlResult, args};
use super::work::{self, Holder, now};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a run writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Where file locks are not available: how old a heartbeat must be for its holder to be
/// taken for dead.
pub const LEASE: Duration = Duration::from_secs(60);

/// The lock of one job and scope, held until dropped.
pub struct RunLock {
    /// `None` where the file system has no locks (the heartbeat alone decides), and for a
    /// PostgreSQL state (its lease decides).
    _file: Option<File>,
    pub path: PathBuf,
    /// A PostgreSQL state: the lease, and a connection of its own to renew and release it.
    lease: Option<Lease>,
}

/// How long a run that lost its database tries to reach it again to let its lease go.
const RELEASE_RETRIES: Duration = Duration::from_secs(10);

struct Lease {
    conn: std::sync::Mutex<Conn>,
    fence: super::pg::Fence,
    /// Where to reconnect to let the lease go when its connection was lost.
    url: String,
}

impl std::fmt::Debug for RunLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLock")
            .field("path", &self.path)
            .field("lease", &self.lease.as_ref().map(|l| &l.fence))
            .finish()
    }
}

impl RunLock {
    /// Whether the kernel holds this lock, or only the heartbeat stands for it.
    pub fn by_kernel(&self) -> bool {
        self._file.is_some()
    }

    /// The lease's fencing number, for a PostgreSQL state.
    pub fn fence(&self) -> Option<super::pg::Fence> {
        self.lease.as_ref().map(|l| l.fence.clone())
    }

    /// Extends a PostgreSQL state's lease; `Err` once it is no longer this run's. (A file
    /// lock needs nothing.)
    pub fn renew(&self) -> Result<(), String> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        let conn = lease.conn.lock().unwrap_or_else(|p| p.into_inner());
        super::pg::renew(&conn, &lease.fence).map_err(|e| e.to_string())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if let Some(lease) = &self.lease {
            let conn = lease.conn.lock().unwrap_or_else(|p| p.into_inner());
            if super::pg::release(&conn, &lease.fence).is_err() {
                // Its connection was lost (a restart of the server): a new one lets it go,
                // so the next run need not wait for it to run out. A server restarting
                // takes a few seconds to take connections again: tried for a while, never
                // longer than the lease would have lasted anyway.
                let until = std::time::Instant::now() + super::pg::lease().min(RELEASE_RETRIES);
                let mut pause = Duration::from_millis(100);
                loop {
                    if let Ok(again) = super::pg::open(&lease.url) {
                        let _ = super::pg::release(&again, &lease.fence);
                        break;
                    }
                    if std::time::Instant::now() + pause > until {
                        break;
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Takes the lease of `(job, scope)` in the PostgreSQL state at `url`.
fn take_lease(url: &str, job: &str, scope: &str) -> std::io::Result<Option<RunLock>> {
    let conn = super::pg::open(url).map_err(std::io::Error::other)?;
    let holder = format!("pid {} on {}", std::process::id(), work::host_name());
    match super::pg::take_lease(&conn, job, scope, &holder)
        .map_err(|e| std::io::Error::other(e.to_string()))?
    {
        Ok(fence) => Ok(Some(RunLock {
            _file: None,
            path: PathBuf::from(crate::redact::url_without_password(url)),
            lease: Some(Lease {
                conn: std::sync::Mutex::new(conn),
                fence,
                url: url.to_string(),
            }),
        })),
        Err(_) => Ok(None),
    }
}

/// The lock file of `(job, scope)` beside the state database `state`: one per job and
/// scope, named by a hash (a scope may hold any character).
pub fn lock_path(state: &Path, job: &str, scope: &str) -> PathBuf {
    let digest = Sha256::digest(format!("{job}\u{1f}{scope}").as_bytes());
    let name = state
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tag: String = crate::plan::hex(&digest).chars().take(16).collect();
    state.with_file_name(format!("{name}.lock-{tag}"))
}

/// Takes the lock of `(job, scope)`: `Ok(None)` when another process holds it.
pub fn try_take(state: &Path, job: &str, scope: &str) -> std::io::Result<Option<RunLock>> {
    let text = state.to_string_lossy();
    if super::pg::is_url(&text) {
        return take_lease(&text, job, scope);
    }
    let path = lock_path(state, job, scope);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private::create_dir_all(dir)?;
    }
    let mut open = OpenOptions::new();
    open.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    let file = open.open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(RunLock {
            _file: Some(file),
            path,
            lease: None,
        })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            tracing::warn!(
                path = %path.display(),
                "this file system has no file locks: a run is taken for dead when its heartbeat is older than {}s",
                LEASE.as_secs()
            );
            Ok(Some(RunLock {
                _file: None,
                path,
                lease: None,
            }))
        }
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Who holds a lock another process wanted, as far as the state records it.
#[derive(Debug, Clone)]
pub struct Held {
    /// `None` when the holder has not recorded itself yet (it has just started).
    pub holder: Option<Holder>,
    pub heartbeat: Option<String>,
    /// The state is in PostgreSQL: a lease, not a file lock, keeps other runs out.
    pub leased: bool,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.holder {
            Some(h) => write!(
                f,
                "run {} (pid {} on {}, started {}, last alive {})",
                h.run_id,
                h.pid,
                h.host,
                h.started_at,
                self.heartbeat.as_deref().unwrap_or(&h.started_at)
            ),
            None => write!(f, "a run that is starting"),
        }
    }
}

impl Held {
    /// What the state says of the holder of `plan_id`'s lock (`None`: no plan yet).
    pub fn read(conn: &Conn, plan_id: Option<i64>) -> Held {
        let leased = conn.lite().is_none();
        match plan_id.map(|p| holder(conn, p)) {
            Some(Ok(Some((h, beat)))) => Held {
                holder: Some(h),
                heartbeat: Some(beat),
                leased,
            },
            _ => Held {
                holder: None,
                heartbeat: None,
                leased,
            },
        }
    }

    /// What the user may do about it.
    pub fn what_to_do(&self) -> String {
        if self.leased {
            format!(
                "wait for it to end; a run whose process is gone is taken over once its lease runs out ({}s without a heartbeat, PAYRUN_LEASE)",
                super::pg::lease().as_secs()
            )
        } else {
            "wait for it to end (`payrun unlock` clears the lock of a run whose process is gone)"
                .into()
        }
    }
}

/// The recorded holder of a plan's lock, with its last heartbeat.
pub fn holder(conn: &Conn, plan_id: i64) -> SqlResult<Option<(Holder, String)>> {
    conn.optional(
        "SELECT run_id, pid, host, started_at, COALESCE(heartbeat_at, started_at) FROM locks WHERE plan_id = ?1",
        args![plan_id],
        |r| {
            Ok((
                Holder {
                    run_id: r.get(0)?,
                    pid: r.get(1)?,
                    host: r.get(2)?,
                    started_at: r.get(3)?,
                },
                r.get(4)?,
            ))
        },
    )
}

/// Whether a heartbeat written at `at` (RFC 3339) is older than [`LEASE`].
pub fn expired(at: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| {
            let age = chrono::Utc::now() - t.with_timezone(&chrono::Utc);
            age.to_std().is_ok_and(|a| a > LEASE)
        })
        .unwrap_or(true)
}

/// Ends the record of a holder that is gone: its run is interrupted (exit 4); what it left
/// in flight stays in doubt, for the next run to settle.
pub fn clear_dead(conn: &Conn, plan_id: i64, holder: &Holder) -> SqlResult<()> {
    conn.execute(
        "UPDATE runs SET ended_at = ?2, exit_code = ?3 WHERE id = ?1 AND ended_at IS NULL",
        args![holder.run_id, now(), crate::exit::INTERRUPTED],
    )?;
    conn.execute(
        "DELETE FROM locks WHERE plan_id = ?1 AND run_id = ?2",
        args![plan_id, holder.run_id],
    )?;
    Ok(())
}

/// Starts a run under `lock` and records it as the holder, in one transaction. Holding
/// the OS lock proves a recorded holder dead: it is cleared. Without file locks, a holder
/// whose heartbeat is fresh is refused.
pub fn start_run(conn: &Conn, plan_id: i64, lock: &RunLock) -> SqlResult<Result<i64, Held>> {
    if let Some((h, heartbeat)) = holder(conn, plan_id)? {
        // The kernel's lock, or a PostgreSQL lease, is the authority: a record left by a
        // holder that lost either is stale. Only the heartbeat stands for a file lock the
        // file system cannot give.
        if !lock.by_kernel() && lock.lease.is_none() && !expired(&heartbeat) {
            return Ok(Err(Held {
                holder: Some(h),
                heartbeat: Some(heartbeat),
                leased: false,
            }));
        }
        clear_dead(conn, plan_id, &h)?;
    }
    let (pid, host, started) = (i64::from(std::process::id()), work::host_name(), now());
    let run_id = conn.insert(
        "INSERT INTO runs (plan_id, started_at, pid, host) VALUES (?1, ?2, ?3, ?4) RETURNING id",
        args![plan_id, started, pid, host],
    )?;
    conn.execute(
        "INSERT INTO locks (plan_id, run_id, pid, host, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        args![plan_id, run_id, pid, host, started],
    )?;
    Ok(Ok(run_id))
}

/// A run's lock and the task that writes its heartbeat; dropping it stops the heartbeat
/// and lets the lock go.
pub struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
    _lock: std::sync::Arc<RunLock>,
}

impl Heartbeat {
    /// Writes run `run_id`'s heartbeat every [`HEARTBEAT`] while it holds `lock`.
    pub fn start(
        lock: std::sync::Arc<RunLock>,
        db: super::Db,
        plan_id: i64,
        run_id: i64,
    ) -> Heartbeat {
        // The task holds the lock weakly: dropping the heartbeat lets the lock go at once,
        // not when the aborted task is dropped at the runtime's leisure.
        let held = std::sync::Arc::downgrade(&lock);
        // A lease is renewed three times in its length, at least.
        let period = match lock.lease {
            Some(_) => HEARTBEAT.min(super::pg::lease() / 3),
            None => HEARTBEAT,
        };
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            every.tick().await;
            loop {
                every.tick().await;
                // A PostgreSQL lease is renewed on a connection of its own. Once it is lost,
                // every write of the run fails its fencing check: nothing more is recorded
                // or sent.
                let Some(lease) = held.upgrade() else { return };
                let renewed = tokio::task::spawn_blocking(move || lease.renew()).await;
                if let Ok(Err(why)) = renewed {
                    tracing::error!("{why}");
                    return;
                }
                if db.record_later(move |c| beat(c, plan_id, run_id)).is_err() {
                    return;
                }
            }
        });
        Heartbeat { task, _lock: lock }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes a run's heartbeat.
pub fn beat(conn: &Conn, plan_id: i64, run_id: i64) -> SqlResult<()> {
    conn.execute(
        "UPDATE locks SET heartbeat_at = ?3 WHERE plan_id = ?1 AND run_id = ?2",
        args![plan_id, run_id, now()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_job_and_scope_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.db");
        let a = try_take(&state, "pay", "2026-11").unwrap().expect("free");
        assert!(a.by_kernel());
        assert!(try_take(&state, "pay", "2026-11").unwrap().is_none());
        // Another scope (or job) has a lock of its own.
        assert!(try_take(&state, "pay", "2026-12").unwrap().is_some());
        drop(a);
        assert!(try_take(&state, "pay", "2026-11").unwrap().is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(lock_path(&state, "pay", "2026-11"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
