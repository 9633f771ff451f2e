//! Shared setup for the cross-backend integration tests.
//!
//! * [`TestDb`] gives each test its own database: a fresh SQLite file always, a fresh
//!   PostgreSQL schema when `TEST_POSTGRES_URL` is set, a fresh MySQL/MariaDB database when
//!   `TEST_MYSQL_URL` is set. Each is dropped when the test ends, pass or fail.
//! * [`backend_tests!`] turns one async test body into `::sqlite`, `::postgres` and `::mysql`
//!   test functions.
//! * [`entities`] holds the entities under test; [`raw`] reads and writes stored bytes with
//!   plain SQL, bypassing the encrypted types; [`softhsm`] makes SoftHSM2 tokens for the
//!   PKCS#11 tests.
//! * [`init_keyring`] installs one process-wide keyring, once. Tests that need another keyring
//!   use `encrypted_columns::keyring::scope`, never `install` (tests run in parallel).

pub mod backend;
pub mod entities;
pub mod raw;
pub mod softhsm;

use std::sync::{Arc, OnceLock};

use encrypted_columns::{Keyring, keyring};

pub use backend::{Backend, TestDb, run_test};

/// What a test body returns: `?` works on `DbErr`, `encrypted_columns::Error` and friends.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The keyring every test starts with: key id 1, random bytes, installed process-wide once.
pub fn init_keyring() -> Arc<Keyring> {
    static INSTALLED: OnceLock<Arc<Keyring>> = OnceLock::new();
    Arc::clone(INSTALLED.get_or_init(|| {
        let ring = Arc::new(Keyring::generate());
        keyring::install(Arc::clone(&ring));
        ring
    }))
}

/// Generates one test per backend from a single async body.
///
/// ```ignore
/// backend_tests!(round_trip, |db: &TestDb| async move {
///     // `db.conn` is a fresh, empty database with the test tables created.
///     Ok(())
/// });
/// ```
///
/// expands to `mod round_trip { async fn sqlite(); async fn postgres(); async fn mysql(); }`.
/// The PostgreSQL and MySQL variants print a "skipped" line and pass when their URL variable
/// is unset. The body returns [`TestResult`]; items of the enclosing module are in scope.
/// Doc comments before the name document the generated module.
#[macro_export]
macro_rules! backend_tests {
    ($(#[$meta:meta])* $name:ident, |$db:ident: &TestDb| async move $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($db: &$crate::TestDb) -> $crate::TestResult $body

            #[tokio::test]
            async fn sqlite() {
                $crate::run_test($crate::Backend::Sqlite, module_path!(), body).await;
            }

            #[tokio::test]
            async fn postgres() {
                $crate::run_test($crate::Backend::Postgres, module_path!(), body).await;
            }

            #[tokio::test]
            async fn mysql() {
                $crate::run_test($crate::Backend::MySql, module_path!(), body).await;
            }
        }
    };
}
