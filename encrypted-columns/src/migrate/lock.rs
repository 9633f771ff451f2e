//! Running a check and the step it guards with the table's writers held off, so that what
//! was checked is still true when the step acts.
//!
//! * PostgreSQL: one transaction that starts with `LOCK TABLE … IN SHARE ROW EXCLUSIVE MODE`,
//!   which excludes writers and a second cut-over or drop. Readers go on; writers wait. DDL is transactional, so the drop commits with the phase change or not at
//!   all.
//! * SQLite: one transaction whose first statement writes (to the state table), which takes
//!   the database's write lock before anything is read.
//! * MySQL/MariaDB: DDL commits implicitly, so a transaction cannot hold a check and an
//!   `ALTER TABLE` together. `LOCK TABLES` can: writers (and for a drop, readers too) wait
//!   until `UNLOCK TABLES`, with autocommit off in between as the manual advises for InnoDB.
//!   The `ALTER TABLE` itself commits; a crash right after it leaves the column dropped and
//!   its phase `cut_over`, which the next drop notices and records.
//!
//! The body gets the transaction (on MySQL: the connection holding the locks) and must touch
//! no table but the migrated one and the state and log tables.

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, TransactionSession, TransactionTrait};

use super::sql::a;
use super::state::{LOG_TABLE, STATE_TABLE};

/// How much of the table a locked section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Writers wait; readers go on.
    Writes,
    /// Writers and other holders of this lock wait (MySQL: readers too).
    Schema,
}

fn quote(backend: DbBackend, name: &str) -> String {
    match backend {
        DbBackend::MySql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// Runs `body` with `table`'s writers held off, committing what it did if it returns `Ok`.
pub(crate) async fn locked<D, T>(
    db: &D,
    table: &str,
    hold: Hold,
    body: impl AsyncFnOnce(&D::Transaction) -> Result<T, DbErr>,
) -> Result<T, DbErr>
where
    D: ConnectionTrait + TransactionTrait,
{
    let backend = db.get_database_backend();
    let txn = db.begin().await?;
    match backend {
        DbBackend::Postgres => {
            // Blocks writers and a second holder (the mode is self-conflicting); readers go
            // on. The drop's ALTER TABLE then takes ACCESS EXCLUSIVE for its moment.
            let mode = "SHARE ROW EXCLUSIVE";
            txn.execute_unprepared(&format!(
                "LOCK TABLE {} IN {mode} MODE",
                quote(backend, table)
            ))
            .await?;
            let out = body(&txn).await?;
            txn.commit().await?;
            Ok(out)
        }
        DbBackend::MySql => {
            let mode = match hold {
                Hold::Writes => "READ",
                Hold::Schema => "WRITE",
            };
            txn.execute_unprepared("SET autocommit = 0").await?;
            let lock = format!(
                "LOCK TABLES {} {mode}, {} WRITE, {} WRITE",
                quote(backend, table),
                quote(backend, STATE_TABLE),
                quote(backend, LOG_TABLE)
            );
            let out = match txn.execute_unprepared(&lock).await {
                Ok(_) => body(&txn).await,
                Err(err) => Err(err),
            };
            // The connection goes back to the pool: whatever happened, leave it unlocked and
            // in autocommit mode.
            let end = if out.is_ok() { "COMMIT" } else { "ROLLBACK" };
            let ended = txn.execute_unprepared(end).await;
            let unlocked = txn.execute_unprepared("UNLOCK TABLES").await;
            let reset = txn.execute_unprepared("SET autocommit = 1").await;
            let out = out?;
            ended?;
            unlocked?;
            reset?;
            txn.commit().await?;
            Ok(out)
        }
        _ => {
            // A write first, so SQLite takes the write lock before the body reads anything.
            let touch = Query::update()
                .table(a(STATE_TABLE))
                .value(a("updated_at_ms"), super::sql::now_ms())
                .and_where(Expr::col(a("table_name")).eq(table))
                .to_owned();
            txn.execute(&touch).await?;
            let out = body(&txn).await?;
            txn.commit().await?;
            Ok(out)
        }
    }
}
