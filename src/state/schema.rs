//! Schema migrations: an append-only list, applied in order and tracked with
//! `PRAGMA user_version`. Never edit a migration that has shipped; add a new one.

use super::StateError;
use rusqlite::Connection;
use std::path::Path;

const MIGRATIONS: &[&str] = &[
    // 1: plans (one per job + scope), payout batches, items (one per row and step).
    r#"
    CREATE TABLE plans (
        id          INTEGER PRIMARY KEY,
        job         TEXT NOT NULL,
        scope       TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        UNIQUE (job, scope)
    );
    CREATE TABLE batches (
        id           INTEGER PRIMARY KEY,
        plan_id      INTEGER NOT NULL REFERENCES plans(id),
        step         TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        group_key    TEXT NOT NULL,
        external_id  TEXT NOT NULL,
        -- open: still taking rows; later states are the executor's
        state        TEXT NOT NULL DEFAULT 'open',
        provider_ref TEXT,
        created_at   TEXT NOT NULL,
        UNIQUE (plan_id, step, seq)
    );
    CREATE TABLE items (
        id               INTEGER PRIMARY KEY,
        plan_id          INTEGER NOT NULL REFERENCES plans(id),
        step             TEXT NOT NULL,
        step_index       INTEGER NOT NULL,
        row_key          TEXT NOT NULL,
        row_line         INTEGER NOT NULL,
        -- pending | skipped | in_flight | succeeded | failed | blocked
        state            TEXT NOT NULL,
        version          INTEGER NOT NULL DEFAULT 1,
        -- sha256 of the full rendered fields; payload is the masked copy
        content_hash     TEXT NOT NULL,
        payload          TEXT NOT NULL,
        amount           TEXT,
        currency         TEXT,
        batch_id         INTEGER REFERENCES batches(id),
        external_id      TEXT,
        -- set when the row changed after the item was sent: never re-sent
        conflict_hash    TEXT,
        conflict_payload TEXT,
        attempts         INTEGER NOT NULL DEFAULT 0,
        error_code       TEXT,
        error_message    TEXT,
        provider_ref     TEXT,
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL,
        UNIQUE (plan_id, step, row_key)
    );
    CREATE INDEX items_by_state ON items (plan_id, step_index, state);
    CREATE INDEX items_by_batch ON items (batch_id);
    "#,
    // 2: what the executor needs: where a row is in the file, attempt times, batch send
    // state, runs and the per-plan lock.
    r#"
    ALTER TABLE items ADD COLUMN row_offset INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE items ADD COLUMN first_attempt_at TEXT;
    ALTER TABLE items ADD COLUMN provider_status TEXT;
    -- payout items: which batches they may join (currency, method, description, schedule)
    ALTER TABLE items ADD COLUMN group_key TEXT;
    ALTER TABLE batches ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE batches ADD COLUMN first_attempt_at TEXT;
    ALTER TABLE batches ADD COLUMN provider_status TEXT;
    ALTER TABLE batches ADD COLUMN error_code TEXT;
    ALTER TABLE batches ADD COLUMN error_message TEXT;
    CREATE TABLE runs (
        id                INTEGER PRIMARY KEY,
        plan_id           INTEGER NOT NULL REFERENCES plans(id),
        started_at        TEXT NOT NULL,
        ended_at          TEXT,
        exit_code         INTEGER,
        pid               INTEGER NOT NULL,
        host              TEXT NOT NULL,
        requests          INTEGER NOT NULL DEFAULT 0,
        retries           INTEGER NOT NULL DEFAULT 0,
        rate_limited      INTEGER NOT NULL DEFAULT 0,
        in_doubt_resolved INTEGER NOT NULL DEFAULT 0,
        counts            TEXT
    );
    CREATE TABLE locks (
        plan_id    INTEGER PRIMARY KEY REFERENCES plans(id),
        run_id     INTEGER NOT NULL,
        pid        INTEGER NOT NULL,
        host       TEXT NOT NULL,
        started_at TEXT NOT NULL
    );
    "#,
    // 3: export steps, one row per step and run; the newest completed one's `to_at` is the
    // step's `last_run` watermark.
    r#"
    CREATE TABLE exports (
        run_id      INTEGER NOT NULL REFERENCES runs(id),
        plan_id     INTEGER NOT NULL REFERENCES plans(id),
        step        TEXT NOT NULL,
        resource    TEXT NOT NULL,
        from_at     TEXT NOT NULL,
        to_at       TEXT NOT NULL,
        -- running | completed | failed | interrupted
        state       TEXT NOT NULL,
        rows        INTEGER NOT NULL DEFAULT 0,
        pages       INTEGER NOT NULL DEFAULT 0,
        duplicates  INTEGER NOT NULL DEFAULT 0,
        path        TEXT NOT NULL,
        error       TEXT,
        started_at  TEXT NOT NULL,
        ended_at    TEXT,
        PRIMARY KEY (run_id, step)
    );
    CREATE INDEX exports_watermark ON exports (plan_id, step, state);
    "#,
    // 4: items_by_state served no query (they select by step name, through the unique
    // (plan_id, step, row_key) index) yet was rewritten on every state change: two of the
    // four B-tree writes of each intent and each outcome.
    r#"
    DROP INDEX IF EXISTS items_by_state;
    "#,
    // 5: rows in file order for the report writers, which read them once per file. Lines
    // only grow as a plan is written, so this index is appended to, cheaply.
    r#"
    CREATE INDEX items_by_line ON items (plan_id, row_line, row_key);
    "#,
    // 6: only payout items have a batch; the other steps' items no longer each add a NULL
    // entry to items_by_batch as they are planned. (`batch_id = ?` still uses it.)
    r#"
    DROP INDEX items_by_batch;
    CREATE INDEX items_by_batch ON items (batch_id) WHERE batch_id IS NOT NULL;
    "#,
    // 7: requests in doubt settle before "absent" is believed (when the attempt in doubt
    // was sent; whether a 2xx that could not be read proved it applied), the lock's
    // heartbeat, how long a run waited for settling, and duplicates found at the provider.
    r#"
    ALTER TABLE items ADD COLUMN doubt_since TEXT;
    ALTER TABLE items ADD COLUMN doubt_applied INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE batches ADD COLUMN doubt_since TEXT;
    ALTER TABLE batches ADD COLUMN doubt_applied INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE locks ADD COLUMN heartbeat_at TEXT;
    ALTER TABLE runs ADD COLUMN settle_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0;
    -- why a run stopped with exit 5 (credentials refused, the provider out of reach, ...)
    ALTER TABLE runs ADD COLUMN error TEXT;
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- which state file this is: runs of two state files are told apart by it (their ids
    -- repeat), e.g. in report folders
    INSERT INTO meta (key, value) VALUES ('instance', lower(hex(randomblob(8))));
    -- a state with items from before keyed hashes holds plain SHA-256 ones (see key.rs)
    INSERT INTO meta (key, value) SELECT 'hash', 'sha256' WHERE EXISTS (SELECT 1 FROM items);
    CREATE TABLE duplicates (
        plan_id      INTEGER NOT NULL REFERENCES plans(id),
        step         TEXT NOT NULL,
        -- the external id (a batch's, or a row's transaction's) found more than once
        external_id  TEXT NOT NULL,
        row_key      TEXT,
        -- the provider's batches that carry it, oldest first, comma-separated
        uuids        TEXT NOT NULL,
        found_at     TEXT NOT NULL,
        run_id       INTEGER NOT NULL,
        PRIMARY KEY (plan_id, step, external_id)
    );
    "#,
    // 8: the provider's payout methods as it last described them (`payrun methods`,
    // `plan`), per provider URL, for `validate` and `plan` to check parameters against.
    r#"
    CREATE TABLE payout_methods (
        base        TEXT NOT NULL,
        name        TEXT NOT NULL,
        -- the provider's record, as JSON
        record      TEXT NOT NULL,
        fetched_at  TEXT NOT NULL,
        PRIMARY KEY (base, name)
    );
    "#,
    // 9: plan digests (what a plan would send, as one hash; `plans.digest_id` the current
    // one), the payout rows each was made of (kept for jobs with `approval:`, to say what
    // changed), approvals bound to a digest; payout items' keyed hash of account and amount
    // (the duplicate-payroll guard; not indexed: a run compares its own plan's few with
    // them once, and an index on random keys would slow every plan's inserts).
    r#"
    CREATE TABLE digests (
        id          INTEGER PRIMARY KEY,
        plan_id     INTEGER NOT NULL REFERENCES plans(id),
        digest      TEXT NOT NULL,
        planned_by  TEXT NOT NULL,
        planned_at  TEXT NOT NULL,
        rows        INTEGER NOT NULL,
        -- JSON: [[currency, total, payouts], ...]
        totals      TEXT NOT NULL,
        UNIQUE (plan_id, digest)
    );
    ALTER TABLE plans ADD COLUMN digest_id INTEGER;
    CREATE TABLE digest_rows (
        digest_id    INTEGER NOT NULL REFERENCES digests(id),
        step         TEXT NOT NULL,
        row_key      TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        amount       TEXT,
        currency     TEXT,
        batch        TEXT NOT NULL,
        PRIMARY KEY (digest_id, step, row_key)
    );
    CREATE TABLE approvals (
        digest_id   INTEGER NOT NULL REFERENCES digests(id),
        approver    TEXT NOT NULL,
        note        TEXT,
        approved_at TEXT NOT NULL,
        PRIMARY KEY (digest_id, approver)
    );
    ALTER TABLE items ADD COLUMN payee_hash TEXT;
    "#,
    // 10: what the provider gave for a row to use: a payin's pay details (a PayID, a pay
    // URL), a refund's amount (JSON text).
    r#"
    ALTER TABLE items ADD COLUMN details TEXT;
    "#,
];

/// The schema version this build writes.
pub const CURRENT: i64 = MIGRATIONS.len() as i64;

pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StateError> {
    let wrap = |source: rusqlite::Error| StateError::Sqlite {
        path: path.to_path_buf(),
        source: source.into(),
    };
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(wrap)?;
    if found > CURRENT {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found,
            known: CURRENT,
        });
    }
    if found == CURRENT {
        return Ok(());
    }
    // All that is missing in one transaction (one fsync): a failure leaves the schema as
    // it was.
    let tx = conn.transaction().map_err(wrap)?;
    for sql in MIGRATIONS.iter().skip(found as usize) {
        tx.execute_batch(sql).map_err(wrap)?;
    }
    tx.pragma_update(None, "user_version", CURRENT)
        .map_err(wrap)?;
    tx.commit().map_err(wrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_fresh_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, CURRENT);
    }

    #[test]
    fn an_older_schema_gets_every_later_migration() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, CURRENT);
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'items' AND sql IS NOT NULL ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(indexes, ["items_by_batch", "items_by_line"]);
        let partial: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'items_by_batch'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(partial.ends_with("WHERE batch_id IS NOT NULL"), "{partial}");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", CURRENT + 1)
            .unwrap();
        assert!(matches!(
            migrate(&mut conn, Path::new("x.db")),
            Err(StateError::TooNew { .. })
        ));
    }
}
