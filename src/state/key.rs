//! The state's content key. Items keep a hash of their full fields — account and document
//! numbers included — to tell a changed row from an unchanged one; beside it they keep a
//! display copy with those numbers masked to their length and last three characters. A
//! plain hash of so little unknown would be brute-forced in seconds; so the hash is keyed
//! (HMAC-SHA-256) with 32 random bytes kept **outside** the database, in `<state>.key`
//! (owner-only) beside it. A copy of the database alone (a backup, a file read by someone
//! else) gives nothing back.
//!
//! A state from before keys holds plain SHA-256 hashes: it gets a key, and each row's hash
//! is rewritten keyed when it is planned again unchanged. A state whose key file is lost
//! cannot tell a changed row from an unchanged one: payrun refuses it (see
//! `docs/personal-data.md`).

use super::Conn;
use super::StateError;
use super::sql::args;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// How planned content is hashed for a state.
#[derive(Clone)]
pub struct ContentKey {
    key: [u8; 32],
    /// The HMAC keyed once: each hash starts from a copy (keying costs two compressions,
    /// two thirds of hashing a short item).
    mac: Hmac<Sha256>,
    /// The state still holds plain SHA-256 hashes (from before keys): they count as the
    /// same content until rewritten.
    legacy: bool,
}

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(…)")
    }
}

impl ContentKey {
    /// A key of its own, for a throwaway state (tests).
    pub fn random() -> ContentKey {
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&fastrand::u64(..).to_le_bytes());
        }
        ContentKey::new(key, false)
    }

    fn new(key: [u8; 32], legacy: bool) -> ContentKey {
        ContentKey {
            key,
            mac: Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key"),
            legacy,
        }
    }

    /// Whether `other` is the same key (a state copied elsewhere must keep its key).
    pub fn same_as(&self, other: &ContentKey) -> bool {
        self.key == other.key
    }

    /// Writes the key as the key file of the SQLite state at `db` (owner-only), unless
    /// one is there.
    pub(super) fn write_beside(&self, db: &Path) -> std::io::Result<()> {
        let path = key_path(db);
        if path.exists() {
            return Ok(());
        }
        let mut f = crate::private::create(&path)?;
        f.write_all(crate::plan::hex(&self.key).as_bytes())?;
        f.sync_all()
    }

    /// The keyed hash (hex) of `data`.
    pub fn hash(&self, data: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(data);
        crate::plan::hex(&mac.finalize().into_bytes())
    }

    /// The plain hash a state from before keys holds for `data`, while it may hold some.
    pub fn legacy_hash(&self, data: &[u8]) -> Option<String> {
        self.legacy.then(|| crate::plan::hex(&Sha256::digest(data)))
    }
}

/// Where the key of the state database at `db` is kept.
pub fn key_path(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    db.with_file_name(format!("{name}.key"))
}

/// The key of the state database at `db` (open as `conn`): read from its key file, or
/// made for a state that has none yet — a new one, or one from before keys. A state with
/// items, keyed hashes and no key file is refused.
pub fn load(conn: &Conn, db: &Path) -> Result<ContentKey, StateError> {
    let path = key_path(db);
    let err = |message: String| StateError::Db {
        path: db.to_path_buf(),
        message,
    };
    let legacy = conn
        .optional("SELECT value FROM meta WHERE key = 'hash'", args![], |r| {
            r.get::<String>(0)
        })
        .map_err(|e| err(e.to_string()))?
        .is_some_and(|v| v == "sha256");
    match std::fs::File::open(&path) {
        Ok(mut f) => {
            let mut text = String::new();
            f.read_to_string(&mut text)
                .map_err(|e| err(format!("cannot read its key file {}: {e}", path.display())))?;
            let key = parse(text.trim()).ok_or_else(|| {
                err(format!(
                    "its key file {} is not a payrun key",
                    path.display()
                ))
            })?;
            Ok(ContentKey::new(key, legacy))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let has_items: bool = conn
                .one("SELECT EXISTS (SELECT 1 FROM items)", args![], |r| r.get(0))
                .map_err(|e| err(e.to_string()))?;
            if has_items && !legacy {
                return Err(err(format!(
                    "its key file {} is missing: without it, payrun cannot tell which rows changed since they were planned. Restore it from where this state came from (it is kept beside the state, and belongs in the same backups), or start a new state file: the provider's payouts are read before anything is sent again",
                    path.display()
                )));
            }
            let key = ContentKey::random();
            let mut f = crate::private::create(&path)
                .map_err(|e| err(format!("cannot write its key file {}: {e}", path.display())))?;
            f.write_all(crate::plan::hex(&key.key).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| err(format!("cannot write its key file {}: {e}", path.display())))?;
            Ok(ContentKey::new(key.key, legacy))
        }
        Err(e) => Err(err(format!(
            "cannot read its key file {}: {e}",
            path.display()
        ))),
    }
}

/// The key of a PostgreSQL state: never in the database, so it comes from where the
/// runs' secrets come from — `PAYRUN_STATE_KEY_FILE` (a file of 64 hex digits) or
/// `PAYRUN_STATE_KEY` —, the same on every host. A check value kept in the database (an
/// HMAC of a constant: nothing to learn from it) refuses a wrong key.
pub fn load_external(conn: &Conn, shown: &Path) -> Result<ContentKey, StateError> {
    let err = |message: String| StateError::Db {
        path: shown.to_path_buf(),
        message,
    };
    let text = match (
        std::env::var_os("PAYRUN_STATE_KEY_FILE").filter(|v| !v.is_empty()),
        std::env::var("PAYRUN_STATE_KEY")
            .ok()
            .filter(|v| !v.is_empty()),
    ) {
        (Some(file), _) => std::fs::read_to_string(&file).map_err(|e| {
            err(format!(
                "cannot read PAYRUN_STATE_KEY_FILE {}: {e}",
                Path::new(&file).display()
            ))
        })?,
        (None, Some(v)) => v,
        (None, None) => {
            return Err(err(
                "a PostgreSQL state needs its content key kept apart from the database: set \
                 PAYRUN_STATE_KEY_FILE to a file holding 64 hex digits (`openssl rand -hex 32`), \
                 or PAYRUN_STATE_KEY, the same on every host that runs the job"
                    .into(),
            ));
        }
    };
    let key = parse(text.trim()).ok_or_else(|| err("the state key is not 64 hex digits".into()))?;
    let key = ContentKey::new(key, false);
    let check = key.hash(b"payrun state key check");
    let stored: Option<String> = conn
        .optional(
            "SELECT value FROM meta WHERE key = 'key_check'",
            args![],
            |r| r.get(0),
        )
        .map_err(|e| err(e.to_string()))?;
    match stored {
        Some(s) if s != check => Err(err(
            "the state key given is not this database's key (PAYRUN_STATE_KEY_FILE or \
             PAYRUN_STATE_KEY): with another key payrun cannot tell a changed row from an \
             unchanged one"
                .into(),
        )),
        Some(_) => Ok(key),
        None => {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('key_check', ?1) ON CONFLICT (key) DO NOTHING",
                args![check],
            )
            .map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
    }
}

fn parse(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyed_hash_is_not_the_plain_one_and_depends_on_the_key() {
        let (a, b) = (ContentKey::random(), ContentKey::random());
        let data = br#"{"account_number":"12345678"}"#;
        assert_ne!(a.hash(data), b.hash(data));
        assert_ne!(a.hash(data), crate::plan::hex(&Sha256::digest(data)));
        assert_eq!(a.hash(data), a.hash(data));
        assert_eq!(a.legacy_hash(data), None);
        assert_eq!(parse(&crate::plan::hex(&a.key)), Some(a.key));
    }
}
