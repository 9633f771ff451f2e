//! Whether the demo may use a database: it writes only into one with no tables, marks what it
//! sets up, and replaces its own default file only when that mark is there. Every refusal is
//! decided before a byte is written or deleted.

use std::path::Path;

use chrono::Utc;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, QueryResult, Statement};

use crate::clinic::db_err;
use crate::connect::connect;
use crate::output::shown;

/// SQLite file the demo starts afresh when no database URL is given.
pub const DEFAULT_DEMO_FILE: &str = "clinic-demo.db";

/// Table the demo creates first in every database it sets up: its mark of ownership. Only a
/// file holding it (with a [`MARKER_MAKER`] row) is ever deleted by a later run.
pub const MARKER_TABLE: &str = "clinic_demo_marker";

/// `made_by` of the marker row.
const MARKER_MAKER: &str = "clinic demo";

/// What is at [`DEFAULT_DEMO_FILE`] before the demo runs.
pub(super) enum DemoFile {
    /// Nothing: the demo creates it.
    Absent,
    /// A file an earlier demo made (it holds the marker), or an empty file: nothing of the
    /// user's is lost by replacing it.
    Replaceable,
}

/// Decides whether the default file may be replaced, reading it only: any file the demo did
/// not make is refused and left exactly as it is.
pub(super) async fn inspect_demo_file() -> Result<DemoFile, String> {
    let path = Path::new(DEFAULT_DEMO_FILE);
    let refuse = |why: &str| {
        format!(
            "refusing to run the demo: {DEFAULT_DEMO_FILE} in this directory {why}, and the demo \
             never deletes what it did not make; move it away, or pass --database-url of an \
             empty database"
        )
    };
    // symlink_metadata: a link to some other database is not the demo's to delete.
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DemoFile::Absent),
        Err(e) => return Err(format!("cannot inspect {DEFAULT_DEMO_FILE}: {e}")),
    };
    if !meta.is_file() {
        return Err(refuse("is not a regular file"));
    }
    let wal_len = std::fs::metadata(format!("{DEFAULT_DEMO_FILE}-wal")).map_or(0, |m| m.len());
    if meta.len() == 0 && wal_len == 0 {
        // What a run interrupted between creating the file and marking it leaves: no data.
        return Ok(DemoFile::Replaceable);
    }
    let mut header = [0u8; 16];
    let is_sqlite = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
        .is_ok()
        && header == *b"SQLite format 3\0";
    if !is_sqlite {
        return Err(refuse("is not an SQLite database"));
    }
    // Read-only and immutable: SQLite takes no lock and creates no journal, WAL or shm file
    // next to a database that may not be ours.
    let db = connect(&format!(
        "sqlite://{DEFAULT_DEMO_FILE}?mode=ro&immutable=true"
    ))
    .await
    .map_err(|e| refuse(&format!("cannot be opened as a database ({e})")))?;
    let found = inventory(&db).await;
    let _ = db.close().await;
    let found = found.map_err(|e| refuse(&format!("cannot be read as a database ({e})")))?;
    if found.demo_made {
        Ok(DemoFile::Replaceable)
    } else {
        Err(refuse(&format!(
            "was not made by `clinic demo` (it holds {})",
            found.tables_listed()
        )))
    }
}

/// Deletes the default demo file and the journal files SQLite may keep beside it (a stale
/// hot journal would be replayed into the new file).
pub(super) fn remove_demo_file() -> Result<(), String> {
    std::fs::remove_file(DEFAULT_DEMO_FILE)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        })
        .map_err(|e| format!("cannot remove the old {DEFAULT_DEMO_FILE}: {e}"))?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{DEFAULT_DEMO_FILE}{suffix}"));
    }
    Ok(())
}

/// What a database holds before the demo writes to it.
pub(super) struct Inventory {
    /// Where, in words (file, schema or database name; never credentials).
    place: String,
    /// Tables and views, by name.
    tables: Vec<String>,
    /// Whether it holds the demo's marker.
    demo_made: bool,
}

impl Inventory {
    /// "3 table(s): a, b, c" with at most five names.
    fn tables_listed(&self) -> String {
        const SHOWN: usize = 5;
        let mut names: Vec<String> = self
            .tables
            .iter()
            .take(SHOWN)
            .map(|t| shown(t).into_owned())
            .collect();
        if self.tables.len() > SHOWN {
            names.push("…".into());
        }
        format!("{} table(s): {}", self.tables.len(), names.join(", "))
    }
}

/// Lists the tables of the current schema (PostgreSQL), the current database (MySQL,
/// MariaDB) or `main` (SQLite), and looks for the demo's marker.
pub(super) async fn inventory(db: &DatabaseConnection) -> Result<Inventory, String> {
    let backend = db.get_database_backend();
    let rows = |sql: &'static str| async move {
        db.query_all_raw(Statement::from_string(backend, sql))
            .await
            .map_err(|e| format!("cannot list the database's tables: {e}"))
    };
    let (place, list) = match backend {
        DatabaseBackend::Sqlite => {
            let file = rows("SELECT file AS name FROM pragma_database_list WHERE name = 'main'")
                .await?
                .first()
                .map(text_of)
                .unwrap_or_default();
            let place = if file.is_empty() {
                "the in-memory SQLite database".to_owned()
            } else {
                format!("the SQLite database {}", shown(&file))
            };
            (
                place,
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
            )
        }
        DatabaseBackend::Postgres => {
            let found = rows(
                "SELECT current_database()::text AS name, current_schema()::text AS schema_name",
            )
            .await?;
            let row = found
                .first()
                .ok_or("the server named no current database")?;
            let database = text_of(row);
            let schema: Option<String> = row.try_get("", "schema_name").map_err(db_err)?;
            let Some(schema) = schema else {
                return Err(format!(
                    "refusing to run the demo: no schema of database {} is selected (the \
                     search_path names none that exists); create one or fix the search_path",
                    shown(&database)
                ));
            };
            (
                format!(
                    "schema {} of the PostgreSQL database {}",
                    shown(&schema),
                    shown(&database)
                ),
                // pg_class, not information_schema: it lists tables whatever the privileges.
                "SELECT c.relname::text AS name FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                 ORDER BY 1",
            )
        }
        DatabaseBackend::MySql => {
            let found = rows("SELECT DATABASE() AS name").await?;
            let database = found.first().map(text_of).unwrap_or_default();
            if database.is_empty() {
                return Err(
                    "refusing to run the demo: the URL names no database (end it with /NAME of \
                     an empty database)"
                        .into(),
                );
            }
            (
                format!("the database {}", shown(&database)),
                "SELECT CAST(table_name AS CHAR) AS name FROM information_schema.tables \
                 WHERE table_schema = DATABASE() ORDER BY 1",
            )
        }
        other => return Err(format!("the demo does not support {other:?} databases")),
    };
    let tables: Vec<String> = rows(list).await?.iter().map(text_of).collect();
    let demo_made = tables.iter().any(|t| t == MARKER_TABLE) && {
        // Scoped: the trait's `min`/`max` would shadow `Ord`'s in the rest of the demo.
        use sea_orm::sea_query::ExprTrait;
        let query = Query::select()
            .expr(Expr::cust("COUNT(*)"))
            .from(MARKER_TABLE)
            .and_where(Expr::col("made_by").eq(MARKER_MAKER))
            .to_owned();
        let marks: i64 = db
            .query_one(&query)
            .await
            .map_err(db_err)?
            .map(|r| r.try_get_by_index(0))
            .transpose()
            .map_err(db_err)?
            .unwrap_or(0);
        marks > 0
    };
    Ok(Inventory {
        place,
        tables,
        demo_made,
    })
}

/// Column `name` as text: MariaDB reports catalog strings as binary on some versions.
fn text_of(row: &QueryResult) -> String {
    row.try_get::<String>("", "name")
        .or_else(|_| {
            row.try_get::<Vec<u8>>("", "name")
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
        .unwrap_or_default()
}

/// The demo writes only into a database with no tables. One it made earlier is refused too
/// when given by URL: resetting a server database is a decision for its owner.
pub(super) fn refuse_unless_empty(found: &Inventory, by_url: bool) -> Result<(), String> {
    if found.tables.is_empty() {
        return Ok(());
    }
    let elsewhere = if by_url {
        ", or run `clinic demo` without --database-url or DATABASE_URL to use its own \
         clinic-demo.db"
    } else {
        ""
    };
    if found.demo_made {
        return Err(format!(
            "refusing to run the demo: {} holds a previous demo run ({}); the demo never resets \
             a database it is given: drop it or use an empty database{elsewhere}",
            found.place,
            found.tables_listed()
        ));
    }
    Err(format!(
        "refusing to run the demo: {} is not empty ({}); the demo only writes into a database \
         with no tables: pass --database-url of an empty database{elsewhere}",
        found.place,
        found.tables_listed()
    ))
}

/// Marks a database as the demo's, before anything else is written to it: only a marked
/// `clinic-demo.db` is ever replaced by a later run.
pub(super) async fn mark(db: &DatabaseConnection) -> Result<(), String> {
    let failed = |e: String| format!("cannot mark the database as the demo's: {e}");
    // A primary key, for servers that require one on every table.
    db.execute_unprepared(&format!(
        "CREATE TABLE {MARKER_TABLE} (id INTEGER NOT NULL PRIMARY KEY, \
         run_started VARCHAR(40) NOT NULL, made_by VARCHAR(40) NOT NULL)"
    ))
    .await
    .map_err(|e| failed(db_err(e)))?;
    let mut insert = Query::insert();
    insert
        .into_table(MARKER_TABLE)
        .columns(["id", "run_started", "made_by"]);
    insert
        .values([
            1.into(),
            Utc::now().to_rfc3339().into(),
            MARKER_MAKER.into(),
        ])
        .map_err(|e| failed(e.to_string()))?;
    db.execute(&insert).await.map_err(|e| failed(db_err(e)))?;
    Ok(())
}
