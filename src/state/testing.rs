//! The stores state's unit tests run against: SQLite (in memory), and PostgreSQL in a
//! fresh database when `PAYRUN_TEST_PG` names a server (`.ci/run` starts one; under
//! `CI=true` it must be there).

use super::{State, key, pg};
use std::path::PathBuf;

/// A store to test against; a PostgreSQL one drops its database when dropped.
pub struct Store {
    pub name: &'static str,
    state: Option<State>,
    /// (server's administration URL, database name)
    database: Option<(String, String)>,
}

impl Store {
    pub fn state(&self) -> &State {
        self.state
            .as_ref()
            .expect("the state lives as long as its store")
    }

    /// The state, handed over (for a [`super::Db`]); the database stays until the store
    /// is dropped.
    pub fn take(&mut self) -> State {
        self.state.take().expect("the state is taken once")
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        drop(self.state.take());
        if let Some((admin, name)) = self.database.take() {
            admin_sql(
                &admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// SQLite in memory, and PostgreSQL when there is a test server.
pub fn stores() -> Vec<Store> {
    let mut out = vec![Store {
        name: "SQLite",
        state: Some(State::open_in_memory().expect("an SQLite state in memory")),
        database: None,
    }];
    let admin = std::env::var("PAYRUN_TEST_PG")
        .ok()
        .filter(|v| !v.is_empty());
    match admin {
        None => assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "PAYRUN_TEST_PG is not set: .ci/run starts a PostgreSQL cluster for the state tests"
        ),
        Some(admin) => {
            let name = format!("payrun_unit_{:016x}", fastrand::u64(..));
            admin_sql(&admin, &format!("CREATE DATABASE {name}"));
            let (base, _) = admin.rsplit_once('/').expect("a URL ending in /database");
            let url = format!("{base}/{name}");
            let conn = pg::open(&url).expect("the test database opens");
            out.push(Store {
                name: "PostgreSQL",
                state: Some(State {
                    conn,
                    path: PathBuf::from(crate::redact::url_without_password(&url)),
                    key: key::ContentKey::random(),
                }),
                database: Some((admin, name)),
            });
        }
    }
    out
}

/// Runs SQL on the server as its administrator (off any async thread: the blocking client
/// may not run there).
fn admin_sql(admin: &str, sql: &str) {
    let (admin, sql) = (admin.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("PAYRUN_TEST_PG: {e}"));
        client
            .batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    })
    .join()
    .expect("the administration thread ends");
}
