//! The state in PostgreSQL: connecting (TLS as libpq's `sslmode` says), the schema and its
//! migrations (recorded in the database, safe when two hosts start at once), and the lease
//! that lets one run per job and scope work across hosts — with a fencing number every
//! write transaction of the run checks, so a run that lost its lease records nothing.
//!
//! No session-level advisory lock is used (they break behind PgBouncer in transaction
//! mode): the migration lock is a transaction-level one, the run lock a lease row.

use super::sql::{Backend, Conn, Pg, SqlError, SqlResult, args};
use std::cell::RefCell;
use std::time::Duration;

/// How long a lease lasts without a heartbeat: a holder that stopped (killed, frozen,
/// partitioned) longer than this is taken over. `PAYRUN_LEASE` (e.g. `2m`) sets another,
/// the same on every host; it must stay well above the heartbeat's 5 s.
pub const LEASE: Duration = Duration::from_secs(30);

/// The lease's length: `PAYRUN_LEASE`, else [`LEASE`].
pub fn lease() -> Duration {
    std::env::var("PAYRUN_LEASE")
        .ok()
        .and_then(|v| crate::job::parse_duration(&v).ok())
        .filter(|d| *d >= Duration::from_secs(1))
        .unwrap_or(LEASE)
}

/// Whether a state location is a PostgreSQL URL.
pub fn is_url(location: &str) -> bool {
    location.starts_with("postgresql://") || location.starts_with("postgres://")
}

/// Connects to the database at `url`: TLS as its `sslmode` asks (`disable`, `prefer`,
/// `require` — encrypted, the certificate not checked, as libpq does —, `verify-ca` — the
/// certificate's chain checked — and `verify-full` — its host name too), against the
/// system's roots or those of `sslrootcert`. Errors never show the password.
pub(super) fn connect(url: &str) -> Result<Pg, String> {
    let shown = crate::redact::url_without_password(url);
    let (url, params) = take_tls(url);
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| format!("{shown}: not a PostgreSQL URL ({e})"))?;
    config.application_name("payrun");
    config.connect_timeout(Duration::from_secs(10));
    let client = match params.mode.as_str() {
        "disable" => super::sql::off_runtime(|| config.connect(postgres::NoTls)),
        mode => {
            config.ssl_mode(if mode == "prefer" {
                postgres::config::SslMode::Prefer
            } else {
                postgres::config::SslMode::Require
            });
            let tls = tls(&params).map_err(|e| format!("{shown}: {e}"))?;
            super::sql::off_runtime(|| config.connect(tls))
        }
    }
    .map_err(|e| format!("{shown}: cannot connect: {}", super::sql::SqlError::Pg(e)))?;
    // (Each transaction sets how long it may idle: see `sql::pg_begin`.)
    Ok(Pg::new(client))
}

/// libpq's TLS settings in a URL, which the driver does not read.
#[derive(Debug, PartialEq)]
struct TlsParams {
    /// `sslmode` (default `prefer`, as libpq).
    mode: String,
    /// `sslrootcert`: the PEM file of the certificates that sign the server's (instead of
    /// the system's roots).
    root_cert: Option<String>,
}

/// The URL without libpq's TLS settings (handled here), and those settings.
fn take_tls(url: &str) -> (String, TlsParams) {
    let mut params = TlsParams {
        mode: "prefer".into(),
        root_cert: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), params);
    };
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.split_once('=') {
            Some(("sslmode", v)) => {
                params.mode = v.to_string();
                false
            }
            Some(("sslrootcert", v)) => {
                // A path may hold any character, `%XX`-escaped.
                params.root_cert = Some(
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned(),
                );
                false
            }
            _ => true,
        })
        .collect();
    if rest.is_empty() {
        (base.to_string(), params)
    } else {
        (format!("{base}?{}", rest.join("&")), params)
    }
}

fn tls(params: &TlsParams) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::client::danger::ServerCertVerifier;
    use std::sync::Arc;
    crate::provider::http::install_tls_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match params.mode.as_str() {
        "verify-ca" | "verify-full" => {
            let chain: Arc<dyn ServerCertVerifier> = match &params.root_cert {
                Some(path) => roots_of_file(path, provider.clone())?,
                None => Arc::new(
                    rustls_platform_verifier::Verifier::new(provider.clone())
                        .map_err(|e| format!("cannot load the system's certificate roots: {e}"))?,
                ),
            };
            ServerCert {
                chain: Some(chain),
                host_name: params.mode == "verify-full",
                provider,
            }
        }
        "prefer" | "require" => ServerCert {
            chain: None,
            host_name: false,
            provider,
        },
        other => {
            return Err(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The certificates of an `sslrootcert` file, as a verifier of server certificates.
fn roots_of_file(
    path: &str,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
) -> Result<std::sync::Arc<rustls::client::WebPkiServerVerifier>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("sslrootcert {path}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert {path}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert {path}: no certificate in it"));
    }
    rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider,
    )
    .build()
    .map_err(|e| format!("sslrootcert {path}: {e}"))
}

/// How a server's certificate is taken: as it is (`prefer`, `require`: encrypted, not
/// checked, libpq's meaning), its chain checked (`verify-ca`: any server the authority
/// signed), or its chain and host name (`verify-full`). Handshake signatures are always
/// checked.
#[derive(Debug)]
struct ServerCert {
    chain: Option<std::sync::Arc<dyn rustls::client::danger::ServerCertVerifier>>,
    host_name: bool,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for ServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::client::danger::ServerCertVerified;
        use rustls::{CertificateError, Error};
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // The chain is checked before the name: a name that does not match means the
            // chain held.
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.host_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The schema in PostgreSQL: the same tables and columns as SQLite's (integers as
/// `BIGINT`, text compared byte by byte as SQLite does), and the lease. Append-only, like
/// SQLite's list; the version is recorded in `schema_version`.
const MIGRATIONS: &[&str] = &[
    // 1: everything SQLite's migrations 1–8 made, and the run lease.
    r#"
    CREATE TABLE plans (
        id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        job         TEXT COLLATE "C" NOT NULL,
        scope       TEXT COLLATE "C" NOT NULL,
        created_at  TEXT COLLATE "C" NOT NULL,
        UNIQUE (job, scope)
    );
    CREATE TABLE batches (
        id               BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        plan_id          BIGINT NOT NULL REFERENCES plans(id),
        step             TEXT COLLATE "C" NOT NULL,
        seq              BIGINT NOT NULL,
        group_key        TEXT COLLATE "C" NOT NULL,
        external_id      TEXT COLLATE "C" NOT NULL,
        state            TEXT COLLATE "C" NOT NULL DEFAULT 'open',
        provider_ref     TEXT COLLATE "C",
        created_at       TEXT COLLATE "C" NOT NULL,
        attempts         BIGINT NOT NULL DEFAULT 0,
        first_attempt_at TEXT COLLATE "C",
        provider_status  TEXT COLLATE "C",
        error_code       TEXT COLLATE "C",
        error_message    TEXT COLLATE "C",
        doubt_since      TEXT COLLATE "C",
        doubt_applied    BIGINT NOT NULL DEFAULT 0,
        UNIQUE (plan_id, step, seq)
    );
    CREATE TABLE items (
        id               BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        plan_id          BIGINT NOT NULL REFERENCES plans(id),
        step             TEXT COLLATE "C" NOT NULL,
        step_index       BIGINT NOT NULL,
        row_key          TEXT COLLATE "C" NOT NULL,
        row_line         BIGINT NOT NULL,
        state            TEXT COLLATE "C" NOT NULL,
        version          BIGINT NOT NULL DEFAULT 1,
        content_hash     TEXT COLLATE "C" NOT NULL,
        payload          TEXT COLLATE "C" NOT NULL,
        amount           TEXT COLLATE "C",
        currency         TEXT COLLATE "C",
        batch_id         BIGINT REFERENCES batches(id),
        external_id      TEXT COLLATE "C",
        conflict_hash    TEXT COLLATE "C",
        conflict_payload TEXT COLLATE "C",
        attempts         BIGINT NOT NULL DEFAULT 0,
        error_code       TEXT COLLATE "C",
        error_message    TEXT COLLATE "C",
        provider_ref     TEXT COLLATE "C",
        created_at       TEXT COLLATE "C" NOT NULL,
        updated_at       TEXT COLLATE "C" NOT NULL,
        row_offset       BIGINT NOT NULL DEFAULT 0,
        first_attempt_at TEXT COLLATE "C",
        provider_status  TEXT COLLATE "C",
        group_key        TEXT COLLATE "C",
        doubt_since      TEXT COLLATE "C",
        doubt_applied    BIGINT NOT NULL DEFAULT 0,
        UNIQUE (plan_id, step, row_key)
    );
    CREATE INDEX items_by_batch ON items (batch_id) WHERE batch_id IS NOT NULL;
    CREATE INDEX items_by_line ON items (plan_id, row_line, row_key);
    CREATE TABLE runs (
        id                BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        plan_id           BIGINT NOT NULL REFERENCES plans(id),
        started_at        TEXT COLLATE "C" NOT NULL,
        ended_at          TEXT COLLATE "C",
        exit_code         BIGINT,
        pid               BIGINT NOT NULL,
        host              TEXT COLLATE "C" NOT NULL,
        requests          BIGINT NOT NULL DEFAULT 0,
        retries           BIGINT NOT NULL DEFAULT 0,
        rate_limited      BIGINT NOT NULL DEFAULT 0,
        in_doubt_resolved BIGINT NOT NULL DEFAULT 0,
        counts            TEXT COLLATE "C",
        settle_ms         BIGINT NOT NULL DEFAULT 0,
        duplicates        BIGINT NOT NULL DEFAULT 0,
        error             TEXT COLLATE "C"
    );
    CREATE TABLE locks (
        plan_id      BIGINT PRIMARY KEY REFERENCES plans(id),
        run_id       BIGINT NOT NULL,
        pid          BIGINT NOT NULL,
        host         TEXT COLLATE "C" NOT NULL,
        started_at   TEXT COLLATE "C" NOT NULL,
        heartbeat_at TEXT COLLATE "C"
    );
    CREATE TABLE exports (
        run_id      BIGINT NOT NULL REFERENCES runs(id),
        plan_id     BIGINT NOT NULL REFERENCES plans(id),
        step        TEXT COLLATE "C" NOT NULL,
        resource    TEXT COLLATE "C" NOT NULL,
        from_at     TEXT COLLATE "C" NOT NULL,
        to_at       TEXT COLLATE "C" NOT NULL,
        state       TEXT COLLATE "C" NOT NULL,
        rows        BIGINT NOT NULL DEFAULT 0,
        pages       BIGINT NOT NULL DEFAULT 0,
        duplicates  BIGINT NOT NULL DEFAULT 0,
        path        TEXT COLLATE "C" NOT NULL,
        error       TEXT COLLATE "C",
        started_at  TEXT COLLATE "C" NOT NULL,
        ended_at    TEXT COLLATE "C",
        PRIMARY KEY (run_id, step)
    );
    CREATE INDEX exports_watermark ON exports (plan_id, step, state);
    CREATE TABLE meta (
        key   TEXT COLLATE "C" PRIMARY KEY,
        value TEXT COLLATE "C" NOT NULL
    );
    INSERT INTO meta (key, value) VALUES ('instance', md5(random()::text || clock_timestamp()::text));
    CREATE TABLE duplicates (
        plan_id      BIGINT NOT NULL REFERENCES plans(id),
        step         TEXT COLLATE "C" NOT NULL,
        external_id  TEXT COLLATE "C" NOT NULL,
        row_key      TEXT COLLATE "C",
        uuids        TEXT COLLATE "C" NOT NULL,
        found_at     TEXT COLLATE "C" NOT NULL,
        run_id       BIGINT NOT NULL,
        PRIMARY KEY (plan_id, step, external_id)
    );
    CREATE TABLE payout_methods (
        base        TEXT COLLATE "C" NOT NULL,
        name        TEXT COLLATE "C" NOT NULL,
        record      TEXT COLLATE "C" NOT NULL,
        fetched_at  TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (base, name)
    );
    -- One run per job and scope across hosts: the holder, the fencing number every write of
    -- its run checks, and when the lease ends without a heartbeat.
    CREATE TABLE leases (
        job        TEXT COLLATE "C" NOT NULL,
        scope      TEXT COLLATE "C" NOT NULL,
        holder     TEXT COLLATE "C",
        fence      BIGINT NOT NULL DEFAULT 0,
        expires_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (job, scope)
    );
    "#,
    // 2: room in each page of items for the new versions a run's updates write (intent,
    // outcome), so that they stay on the page and leave the indexes alone (HOT updates).
    "ALTER TABLE items SET (fillfactor = 50)",
    // 3: SQLite's migration 9: plan digests, their payout rows, approvals; payout items'
    // keyed hash of account and amount.
    r#"
    CREATE TABLE digests (
        id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        plan_id     BIGINT NOT NULL REFERENCES plans(id),
        digest      TEXT COLLATE "C" NOT NULL,
        planned_by  TEXT COLLATE "C" NOT NULL,
        planned_at  TEXT COLLATE "C" NOT NULL,
        rows        BIGINT NOT NULL,
        totals      TEXT COLLATE "C" NOT NULL,
        UNIQUE (plan_id, digest)
    );
    ALTER TABLE plans ADD COLUMN digest_id BIGINT;
    CREATE TABLE digest_rows (
        digest_id    BIGINT NOT NULL REFERENCES digests(id),
        step         TEXT COLLATE "C" NOT NULL,
        row_key      TEXT COLLATE "C" NOT NULL,
        content_hash TEXT COLLATE "C" NOT NULL,
        amount       TEXT COLLATE "C",
        currency     TEXT COLLATE "C",
        batch        TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (digest_id, step, row_key)
    );
    CREATE TABLE approvals (
        digest_id   BIGINT NOT NULL REFERENCES digests(id),
        approver    TEXT COLLATE "C" NOT NULL,
        note        TEXT COLLATE "C",
        approved_at TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (digest_id, approver)
    );
    ALTER TABLE items ADD COLUMN payee_hash TEXT COLLATE "C";
    "#,
    // 4: SQLite's 10 (a payin's pay details, a refund's amount).
    r#"
    ALTER TABLE items ADD COLUMN details TEXT COLLATE "C";
    "#,
    // 5: no foreign keys from items: the server checked each new item's plan (and batch)
    // row by row, half of what a plan's items cost it to write, for references payrun
    // makes itself in the same transaction (plans are never deleted; a batch only while
    // no item names it).
    r#"
    ALTER TABLE items DROP CONSTRAINT IF EXISTS items_plan_id_fkey;
    ALTER TABLE items DROP CONSTRAINT IF EXISTS items_batch_id_fkey;
    "#,
];

/// The schema version this build writes in PostgreSQL.
pub const CURRENT: i64 = MIGRATIONS.len() as i64;

/// Brings the schema up to date, in one transaction under a transaction-level advisory
/// lock (two hosts starting at once: one migrates, the other then finds it done).
/// A database of a newer payrun is refused, untouched.
pub fn migrate(conn: &Conn) -> Result<(), String> {
    let run = || -> SqlResult<Result<(), String>> {
        conn.batch(
            "BEGIN;
             SELECT pg_advisory_xact_lock(7061797200);
             CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);",
        )?;
        let found: Option<i64> =
            conn.one("SELECT MAX(version) FROM schema_version", args![], |r| {
                r.get(0)
            })?;
        let found = found.unwrap_or(0);
        if found > CURRENT {
            conn.batch("ROLLBACK")?;
            return Ok(Err(format!(
                "its schema is version {found}, newer than this payrun's {CURRENT}: use the payrun that wrote it, or a newer one"
            )));
        }
        for sql in MIGRATIONS.iter().skip(found as usize) {
            conn.batch(sql)?;
        }
        if found < CURRENT {
            conn.execute("DELETE FROM schema_version", args![])?;
            conn.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                args![CURRENT],
            )?;
        }
        conn.batch("COMMIT")?;
        Ok(Ok(()))
    };
    match run() {
        Ok(r) => r,
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(format!("cannot bring its schema up to date: {e}"))
        }
    }
}

/// A run's hold on its job and scope: the lease's fencing number.
#[derive(Debug, Clone)]
pub struct Fence {
    pub job: String,
    pub scope: String,
    pub token: i64,
}

/// Who holds a lease, as a message says it.
#[derive(Debug, Clone)]
pub struct Holder {
    pub holder: String,
    pub expires_in_seconds: i64,
}

/// Takes the lease of `job` and `scope` for `holder` when it is free or its holder's time
/// ran out: the new fencing number; `Err(holder)` while another holds it.
pub fn take_lease(
    conn: &Conn,
    job: &str,
    scope: &str,
    holder: &str,
) -> SqlResult<Result<Fence, Holder>> {
    conn.execute(
        "INSERT INTO leases (job, scope) VALUES (?1, ?2) ON CONFLICT (job, scope) DO NOTHING",
        args![job, scope],
    )?;
    let secs = lease().as_secs() as i64;
    // The lease row may be locked by a holder's transaction: wait for it no longer than it
    // takes the server to end a frozen one (see `sql::pg_begin`), then call it held.
    let taken = conn.transaction(|conn| {
        conn.batch(&format!(
            "SET LOCAL lock_timeout = {}",
            2 * lease().as_millis() + 1000
        ))?;
        conn.optional(
            "UPDATE leases SET holder = ?3, fence = fence + 1,
                expires_at = now() + CAST(?4 AS BIGINT) * interval '1 second'
         WHERE job = ?1 AND scope = ?2 AND (holder IS NULL OR expires_at < now())
         RETURNING fence",
            args![job, scope, holder, secs],
            |r| r.get(0),
        )
    });
    let taken: Option<i64> = match taken {
        Err(SqlError::Pg(e))
            if e.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
        {
            None
        }
        other => other?,
    };
    if let Some(token) = taken {
        return Ok(Ok(Fence {
            job: job.into(),
            scope: scope.into(),
            token,
        }));
    }
    let held = conn.optional(
        "SELECT COALESCE(holder, ''), CAST(EXTRACT(EPOCH FROM expires_at - now()) AS BIGINT)
         FROM leases WHERE job = ?1 AND scope = ?2",
        args![job, scope],
        |r| {
            Ok(Holder {
                holder: r.get(0)?,
                expires_in_seconds: r.get(1)?,
            })
        },
    )?;
    Ok(Err(held.unwrap_or(Holder {
        holder: "another run".into(),
        expires_in_seconds: 0,
    })))
}

/// Extends the lease (the heartbeat); [`SqlError::Fenced`] when it is no longer this run's.
pub fn renew(conn: &Conn, f: &Fence) -> SqlResult<()> {
    let secs = lease().as_secs() as i64;
    let n = conn.execute(
        "UPDATE leases SET expires_at = now() + CAST(?4 AS BIGINT) * interval '1 second'
         WHERE job = ?1 AND scope = ?2 AND fence = ?3",
        args![f.job, f.scope, f.token, secs],
    )?;
    if n == 0 {
        return Err(SqlError::Fenced);
    }
    Ok(())
}

/// Lets the lease go (the run ended).
pub fn release(conn: &Conn, f: &Fence) -> SqlResult<()> {
    conn.execute(
        "UPDATE leases SET holder = NULL, expires_at = now()
         WHERE job = ?1 AND scope = ?2 AND fence = ?3",
        args![f.job, f.scope, f.token],
    )?;
    Ok(())
}

/// In a write transaction: the lease is still `f`'s (its row is held until the commit, so
/// no one takes it over meanwhile), else [`SqlError::Fenced`].
pub fn check_fence(conn: &Conn, f: &Fence) -> SqlResult<()> {
    let held = conn.optional(
        "SELECT 1 FROM leases WHERE job = ?1 AND scope = ?2 AND fence = ?3 FOR SHARE",
        args![f.job, f.scope, f.token],
        |_| Ok(()),
    )?;
    held.ok_or(SqlError::Fenced)
}

/// Opens the state at `url` as a connection, its schema up to date.
pub fn open(url: &str) -> Result<Conn, String> {
    let conn = Conn(Backend::Pg(Box::new(RefCell::new(connect(url)?))));
    migrate(&conn)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_taken_out_of_the_url() {
        assert_eq!(
            take_tls("postgresql://a@h/db?sslmode=require&connect_timeout=5"),
            (
                "postgresql://a@h/db?connect_timeout=5".to_string(),
                TlsParams {
                    mode: "require".into(),
                    root_cert: None
                }
            )
        );
        assert_eq!(
            take_tls("postgresql://a@h/db?sslrootcert=/etc/my%20ca.pem&sslmode=verify-full"),
            (
                "postgresql://a@h/db".to_string(),
                TlsParams {
                    mode: "verify-full".into(),
                    root_cert: Some("/etc/my ca.pem".into())
                }
            )
        );
        assert_eq!(take_tls("postgresql://a@h/db").1.mode, "prefer".to_string());
    }
}
