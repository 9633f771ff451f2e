//! One isolated database per test, on each backend.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};

use crate::{TestResult, entities, init_keyring};

/// The three backends the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file under the system temp directory: always runs.
    Sqlite,
    /// A fresh schema in the database named by `TEST_POSTGRES_URL`.
    Postgres,
    /// A fresh database on the server named by `TEST_MYSQL_URL` (MySQL or MariaDB).
    MySql,
}

impl Backend {
    /// The variable naming the server, or `None` for SQLite (which needs none).
    pub fn url_var(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some("TEST_POSTGRES_URL"),
            Backend::MySql => Some("TEST_MYSQL_URL"),
        }
    }

    /// SeaORM's name for this backend.
    pub fn db_backend(self) -> DbBackend {
        match self {
            Backend::Sqlite => DbBackend::Sqlite,
            Backend::Postgres => DbBackend::Postgres,
            Backend::MySql => DbBackend::MySql,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
        })
    }
}

/// What has to be removed when the test ends.
enum Cleanup {
    SqliteFile(PathBuf),
    PostgresSchema { admin_url: String },
    MySqlDatabase { admin_url: String },
}

/// A database of its own for one test, with every test table created and empty.
pub struct TestDb {
    /// Connection to the test's database (schema on PostgreSQL).
    pub conn: DatabaseConnection,
    /// Which backend this is.
    pub backend: Backend,
    /// The unique name of the SQLite file stem, PostgreSQL schema or MySQL database.
    pub name: String,
    cleanup: Cleanup,
}

impl TestDb {
    /// SeaORM's backend of the connection.
    pub fn db_backend(&self) -> DbBackend {
        self.backend.db_backend()
    }

    /// A URL that connects another process (or another pool) to this test's database: the
    /// same SQLite file, the same PostgreSQL schema (as the connection's `search_path`) or
    /// the same MySQL database. For SeaORM's `Database::connect`.
    pub fn url(&self) -> String {
        match &self.cleanup {
            Cleanup::SqliteFile(path) => format!("sqlite://{}?mode=rw", path.display()),
            Cleanup::PostgresSchema { admin_url } => {
                let sep = if admin_url.contains('?') { '&' } else { '?' };
                format!("{admin_url}{sep}options[search_path]={}", self.name)
            }
            Cleanup::MySqlDatabase { admin_url } => {
                with_database(admin_url, &self.name).unwrap_or_else(|e| panic!("{e}"))
            }
        }
    }

    /// Creates a fresh database for `test`, or `None` when the backend is not configured.
    pub async fn create(backend: Backend, test: &str) -> Result<Option<TestDb>, String> {
        let server_url = match backend.url_var() {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(url) if !url.trim().is_empty() => Some(url),
                _ => return Ok(None),
            },
        };
        let name = unique_name(test);
        let (conn, cleanup) = match (backend, server_url) {
            (Backend::Sqlite, _) => {
                let path = std::env::temp_dir().join(format!("{name}.sqlite"));
                remove_sqlite_files(&path);
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let conn = connect(ConnectOptions::new(url)).await?;
                (conn, Cleanup::SqliteFile(path))
            }
            (Backend::Postgres, Some(admin_url)) => {
                exec_admin(&admin_url, &format!(r#"CREATE SCHEMA "{name}""#)).await?;
                let mut options = ConnectOptions::new(admin_url.clone());
                options.set_schema_search_path(name.clone());
                let conn = connect(options).await?;
                (conn, Cleanup::PostgresSchema { admin_url })
            }
            (Backend::MySql, Some(admin_url)) => {
                exec_admin(&admin_url, &format!("CREATE DATABASE `{name}`")).await?;
                let conn = connect(ConnectOptions::new(with_database(&admin_url, &name)?)).await?;
                (conn, Cleanup::MySqlDatabase { admin_url })
            }
            (_, None) => unreachable!("server backends return early without a URL"),
        };
        let db = TestDb {
            conn,
            backend,
            name,
            cleanup,
        };
        if let Err(err) = entities::create_tables(&db.conn).await {
            let _ = db.drop_database().await;
            return Err(format!("creating test tables on {backend}: {err}"));
        }
        Ok(Some(db))
    }

    /// Closes the connection and removes the database (file, schema or database).
    pub async fn drop_database(self) -> Result<(), String> {
        let TestDb {
            conn,
            name,
            cleanup,
            ..
        } = self;
        conn.close()
            .await
            .map_err(|e| format!("closing {name}: {e}"))?;
        match cleanup {
            Cleanup::SqliteFile(path) => {
                std::fs::remove_file(&path).map_err(|e| format!("removing {path:?}: {e}"))?;
                remove_sqlite_files(&path);
                Ok(())
            }
            Cleanup::PostgresSchema { admin_url } => {
                exec_admin(&admin_url, &format!(r#"DROP SCHEMA "{name}" CASCADE"#)).await
            }
            Cleanup::MySqlDatabase { admin_url } => {
                exec_admin(&admin_url, &format!("DROP DATABASE `{name}`")).await
            }
        }
    }
}

/// Runs one test body on `backend`: makes the database, runs `body`, drops the database
/// whether the body passed, failed or panicked, then reports the outcome.
pub async fn run_test<F>(backend: Backend, test: &str, body: F)
where
    F: AsyncFnOnce(&TestDb) -> TestResult,
{
    init_keyring();
    let db = match TestDb::create(backend, test).await {
        Ok(Some(db)) => db,
        Ok(None) => {
            let var = backend.url_var().unwrap_or("?");
            eprintln!("skipped: {var} not set ({test} on {backend})");
            return;
        }
        Err(err) => panic!("{test} on {backend}: setup failed: {err}"),
    };
    let name = db.name.clone();
    let outcome = CatchUnwind(Box::pin(body(&db))).await;
    let cleanup = db.drop_database().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(err)) => panic!("{test} on {backend} (database {name}) failed: {err}"),
        Err(panic) => resume_unwind(panic),
    }
    if let Err(err) = cleanup {
        panic!("{test} on {backend}: cleanup of {name} failed: {err}");
    }
}

/// Awaits a future, turning a panic while polling it into an `Err` (what
/// `futures::FutureExt::catch_unwind` does, without the dependency).
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// `ect_<test>_<pid>_<counter>`, lower-case ASCII, at most 63 bytes (PostgreSQL's identifier
/// limit; MySQL allows 64). The pid and counter keep it unique even when the test part is cut.
pub fn unique_name(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let suffix = format!(
        "_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut stem = String::from("ect_");
    let mut last_underscore = true;
    for c in test.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        };
        if c == '_' && last_underscore {
            continue;
        }
        last_underscore = c == '_';
        stem.push(c);
    }
    stem.truncate(63 - suffix.len());
    let stem = stem.trim_end_matches('_');
    format!("{stem}{suffix}")
}

/// `url` with its database path replaced by `database` (query string kept).
pub fn with_database(url: &str, database: &str) -> Result<String, String> {
    let authority_start = url
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| format!("not a URL: {url:?}"))?;
    let rest = &url[authority_start..];
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..path_start];
    let query = rest[path_start..]
        .find('?')
        .map(|i| &rest[path_start + i..])
        .unwrap_or("");
    Ok(format!(
        "{}{authority}/{database}{query}",
        &url[..authority_start]
    ))
}

async fn connect(mut options: ConnectOptions) -> Result<DatabaseConnection, String> {
    options.max_connections(4).sqlx_logging(false);
    let url = options.get_url().to_owned();
    Database::connect(options)
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))
}

/// Runs one statement on a short-lived connection to the server's own database.
async fn exec_admin(url: &str, sql: &str) -> Result<(), String> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(1).sqlx_logging(false);
    let admin = Database::connect(options)
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    let result = admin
        .execute_unprepared(sql)
        .await
        .map(|_| ())
        .map_err(|e| format!("{sql}: {e}"));
    let _ = admin.close().await;
    result
}

fn remove_sqlite_files(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}
