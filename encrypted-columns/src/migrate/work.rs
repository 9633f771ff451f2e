//! Sharing a table-wide job (backfill, repair) between any number of workers, on any number
//! of machines, through two tables we own.
//!
//! `encrypted_columns_migration_work` holds one row per `(table, job)`: the pass number, the
//! highest primary key handed out in this pass, and whether the job finished.
//! `encrypted_columns_migration_claims` holds one row per chunk handed out: its key range,
//! its owner and the lease that owner holds on it.
//!
//! A worker claims the next chunk in a short transaction that first locks the work row (an
//! UPDATE, so on SQLite it takes the write lock before reading anything). Expired claims (a
//! worker died, or stalled past its lease) are taken over first, picked with
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL and MariaDB so a claim its slow owner is committing
//! right now is passed over rather than waited for. A claim is marked done in the same
//! transaction as the chunk's data, so a chunk is either written and done, or neither.
//! When no chunk is left to hand out and none is outstanding, the pass is complete.

use std::time::Duration;

use sea_orm::sea_query::{
    ColumnDef, Condition, Expr, ExprTrait, Func, Index, LockBehavior, LockType, OnConflict, Order,
    Query, Table,
};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, TransactionSession, TransactionTrait};

use super::retry::retrying;
use super::sql::{a, now_ms, pk_of};

/// Name of the job table.
pub const WORK_TABLE: &str = "encrypted_columns_migration_work";
/// Name of the claims table.
pub const CLAIMS_TABLE: &str = "encrypted_columns_migration_claims";

/// Creates the work and claims tables if they do not exist.
pub(crate) async fn ensure_tables<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    let work = Table::create()
        .table(a(WORK_TABLE))
        .if_not_exists()
        .col(ColumnDef::new(a("table_name")).string_len(190).not_null())
        .col(ColumnDef::new(a("job")).string_len(16).not_null())
        .col(ColumnDef::new(a("pass")).big_integer().not_null())
        .col(ColumnDef::new(a("cursor_pk")).big_integer().null())
        .col(ColumnDef::new(a("columns")).string_len(1000).not_null())
        .col(ColumnDef::new(a("finished")).integer().not_null())
        .col(ColumnDef::new(a("updated_at_ms")).big_integer().not_null())
        .primary_key(Index::create().col(a("table_name")).col(a("job")))
        .to_owned();
    db.execute(&work).await?;
    let claims = Table::create()
        .table(a(CLAIMS_TABLE))
        .if_not_exists()
        .col(ColumnDef::new(a("table_name")).string_len(190).not_null())
        .col(ColumnDef::new(a("job")).string_len(16).not_null())
        .col(ColumnDef::new(a("pass")).big_integer().not_null())
        .col(ColumnDef::new(a("lo")).big_integer().not_null())
        .col(ColumnDef::new(a("hi")).big_integer().not_null())
        .col(ColumnDef::new(a("owner")).string_len(64).not_null())
        .col(ColumnDef::new(a("lease_until_ms")).big_integer().not_null())
        .col(ColumnDef::new(a("done")).integer().not_null())
        .primary_key(
            Index::create()
                .col(a("table_name"))
                .col(a("job"))
                .col(a("pass"))
                .col(a("lo")),
        )
        .to_owned();
    db.execute(&claims).await?;
    Ok(())
}

/// A chunk of the table this worker holds: keys `lo..=hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    pub pass: i64,
    pub lo: i64,
    pub hi: i64,
    /// Taken over from a worker whose lease expired.
    pub taken_over: bool,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Work on this chunk, then [`Job::complete`] it inside the chunk's transaction.
    Chunk(Claim),
    /// Other workers hold the last chunks of the pass: try again after this long.
    Wait(Duration),
    /// Pass `pass` is complete: nothing handed out is outstanding.
    PassDone(i64),
    /// The job is finished (by this worker or another).
    Finished,
}

/// One worker's handle on a table-wide job.
pub(crate) struct Job {
    pub table: String,
    pub job: &'static str,
    pub owner: String,
    pub lease: Duration,
    /// The plan's columns, so a job started for other columns is not silently continued.
    pub columns: String,
}

fn key(table: &str, job: &str) -> Condition {
    Condition::all()
        .add(Expr::col(a("table_name")).eq(table))
        .add(Expr::col(a("job")).eq(job))
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4)
}

/// A worker name unique across processes and machines: pid and random bits.
pub(crate) fn owner_name() -> String {
    let random: u64 = rand::random();
    format!("pid{}-{random:016x}", std::process::id())
}

/// The job's row as read under its lock.
struct WorkRow {
    pass: i64,
    cursor: Option<i64>,
    columns: String,
    finished: bool,
}

impl Job {
    async fn read<C: ConnectionTrait>(&self, db: &C) -> Result<Option<WorkRow>, DbErr> {
        let q = Query::select()
            .columns([a("pass"), a("cursor_pk"), a("columns"), a("finished")])
            .from(a(WORK_TABLE))
            .cond_where(key(&self.table, self.job))
            .to_owned();
        let Some(row) = db.query_one(&q).await? else {
            return Ok(None);
        };
        Ok(Some(WorkRow {
            pass: row.try_get("", "pass")?,
            cursor: row.try_get("", "cursor_pk")?,
            columns: row.try_get("", "columns")?,
            finished: row.try_get::<i32>("", "finished")? != 0,
        }))
    }

    /// Locks the job row for the rest of the transaction (creating it first if needed).
    /// A write comes first so that SQLite takes its write lock before anything is read.
    async fn lock<C: ConnectionTrait>(&self, db: &C) -> Result<WorkRow, DbErr> {
        let touch = Query::update()
            .table(a(WORK_TABLE))
            .value(a("updated_at_ms"), now_ms())
            .cond_where(key(&self.table, self.job))
            .to_owned();
        if db.execute(&touch).await?.rows_affected() == 0 {
            let insert = Query::insert()
                .into_table(a(WORK_TABLE))
                .columns([
                    a("table_name"),
                    a("job"),
                    a("pass"),
                    a("columns"),
                    a("finished"),
                    a("updated_at_ms"),
                ])
                .values_panic([
                    self.table.as_str().into(),
                    self.job.into(),
                    1i64.into(),
                    self.columns.as_str().into(),
                    0i32.into(),
                    now_ms().into(),
                ])
                .on_conflict(
                    OnConflict::columns([a("table_name"), a("job")])
                        .do_nothing_on([a("table_name")])
                        .to_owned(),
                )
                .to_owned();
            db.execute(&insert).await?;
            db.execute(&touch).await?;
        }
        self.read(db).await?.ok_or_else(|| {
            DbErr::Custom(format!(
                "{WORK_TABLE}: the row of {}/{} is missing after insert",
                self.table, self.job
            ))
        })
    }

    /// Joins the job, starting a new run of it when the last one finished (`restart`) or
    /// was left by a plan with other columns and no live claims. Returns the pass to work in.
    pub async fn join<D: ConnectionTrait + TransactionTrait>(
        &self,
        db: &D,
        restart: bool,
    ) -> Result<i64, DbErr> {
        ensure_tables(db).await?;
        retrying("join the job", async || {
            let txn = db.begin().await?;
            let row = self.lock(&txn).await?;
            let now = now_ms();
            let other_columns = row.columns != self.columns;
            if other_columns && !row.finished {
                let live = Query::select()
                    .expr_as(Func::count(Expr::col(a("lo"))), a("n"))
                    .from(a(CLAIMS_TABLE))
                    .cond_where(key(&self.table, self.job))
                    .and_where(Expr::col(a("done")).eq(0))
                    .and_where(Expr::col(a("lease_until_ms")).gte(now))
                    .to_owned();
                let n: i64 = match txn.query_one(&live).await? {
                    Some(r) => r.try_get("", "n")?,
                    None => 0,
                };
                if n > 0 {
                    return Err(crate::Error::Migration {
                        table: self.table.clone(),
                        column: self.columns.clone(),
                        problem: format!(
                            "another {} of this table is running over other columns ({}); run \
                             every worker with the same columns",
                            self.job, row.columns
                        ),
                    }
                    .into());
                }
            }
            let pass = if (row.finished && restart) || other_columns {
                let next = row.pass + 1;
                let reset = Query::update()
                    .table(a(WORK_TABLE))
                    .value(a("pass"), next)
                    .value(a("cursor_pk"), Option::<i64>::None)
                    .value(a("columns"), self.columns.as_str())
                    .value(a("finished"), 0i32)
                    .value(a("updated_at_ms"), now)
                    .cond_where(key(&self.table, self.job))
                    .to_owned();
                txn.execute(&reset).await?;
                self.delete_claims_before(&txn, next).await?;
                next
            } else {
                row.pass
            };
            txn.commit().await?;
            Ok(pass)
        })
        .await
    }

    async fn delete_claims_before<C: ConnectionTrait>(
        &self,
        db: &C,
        pass: i64,
    ) -> Result<(), DbErr> {
        let delete = Query::delete()
            .from_table(a(CLAIMS_TABLE))
            .cond_where(key(&self.table, self.job))
            .and_where(Expr::col(a("pass")).lt(pass))
            .to_owned();
        db.execute(&delete).await.map(|_| ())
    }

    /// Hands out the next chunk of up to `batch` rows of `table` (keys in `pk`) that match
    /// `needs_work`, or says why there is none.
    pub async fn next<D: ConnectionTrait + TransactionTrait>(
        &self,
        db: &D,
        pk: &str,
        needs_work: &Condition,
        batch: u64,
    ) -> Result<Next, DbErr> {
        retrying("claim a chunk", async || {
            let txn = db.begin().await?;
            let row = self.lock(&txn).await?;
            if row.finished {
                txn.commit().await?;
                return Ok(Next::Finished);
            }
            let now = now_ms();
            let pass = row.pass;
            // A chunk whose owner's lease ran out.
            let mut expired = Query::select();
            expired
                .columns([a("lo"), a("hi")])
                .from(a(CLAIMS_TABLE))
                .cond_where(key(&self.table, self.job))
                .and_where(Expr::col(a("pass")).eq(pass))
                .and_where(Expr::col(a("done")).eq(0))
                .and_where(Expr::col(a("lease_until_ms")).lt(now))
                .order_by(a("lo"), Order::Asc)
                .limit(1);
            if txn.get_database_backend() != DbBackend::Sqlite {
                expired.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
            }
            if let Some(found) = txn.query_one(&expired).await? {
                let lo: i64 = found.try_get("", "lo")?;
                let hi: i64 = found.try_get("", "hi")?;
                let take = Query::update()
                    .table(a(CLAIMS_TABLE))
                    .value(a("owner"), self.owner.as_str())
                    .value(a("lease_until_ms"), now + lease_ms(self.lease))
                    .cond_where(key(&self.table, self.job))
                    .and_where(Expr::col(a("pass")).eq(pass))
                    .and_where(Expr::col(a("lo")).eq(lo))
                    .and_where(Expr::col(a("done")).eq(0))
                    .to_owned();
                let taken = txn.execute(&take).await?.rows_affected() == 1;
                txn.commit().await?;
                if taken {
                    return Ok(Next::Chunk(Claim {
                        pass,
                        lo,
                        hi,
                        taken_over: true,
                    }));
                }
                return Ok(Next::Wait(Duration::from_millis(0)));
            }
            // A new chunk past the cursor.
            let select = Query::select()
                .column(a(pk))
                .from(a(&self.table))
                .and_where(Expr::col(a(pk)).gt(row.cursor.unwrap_or(i64::MIN)))
                .cond_where(needs_work.clone())
                .order_by(a(pk), Order::Asc)
                .limit(batch)
                .to_owned();
            let ids = txn.query_all(&select).await?;
            if let (Some(first), Some(last)) = (ids.first(), ids.last()) {
                let lo = pk_of(first, &self.table, pk)?;
                let hi = pk_of(last, &self.table, pk)?;
                let insert = Query::insert()
                    .into_table(a(CLAIMS_TABLE))
                    .columns([
                        a("table_name"),
                        a("job"),
                        a("pass"),
                        a("lo"),
                        a("hi"),
                        a("owner"),
                        a("lease_until_ms"),
                        a("done"),
                    ])
                    .values_panic([
                        self.table.as_str().into(),
                        self.job.into(),
                        pass.into(),
                        lo.into(),
                        hi.into(),
                        self.owner.as_str().into(),
                        (now + lease_ms(self.lease)).into(),
                        0i32.into(),
                    ])
                    .to_owned();
                txn.execute(&insert).await?;
                let advance = Query::update()
                    .table(a(WORK_TABLE))
                    .value(a("cursor_pk"), hi)
                    .cond_where(key(&self.table, self.job))
                    .to_owned();
                txn.execute(&advance).await?;
                txn.commit().await?;
                return Ok(Next::Chunk(Claim {
                    pass,
                    lo,
                    hi,
                    taken_over: false,
                }));
            }
            // Nothing left to hand out: wait for live claims, or the pass is complete.
            let outstanding = Query::select()
                .expr_as(Func::min(Expr::col(a("lease_until_ms"))), a("until"))
                .from(a(CLAIMS_TABLE))
                .cond_where(key(&self.table, self.job))
                .and_where(Expr::col(a("pass")).eq(pass))
                .and_where(Expr::col(a("done")).eq(0))
                .to_owned();
            let until: Option<i64> = match txn.query_one(&outstanding).await? {
                Some(r) => r.try_get("", "until")?,
                None => None,
            };
            txn.commit().await?;
            Ok(match until {
                Some(until) => {
                    // Outstanding chunks usually finish within a batch's time: look again
                    // soon (a worker that waits out a whole poll finishes that much later).
                    let ms = (until - now).clamp(5, 25);
                    Next::Wait(Duration::from_millis(u64::try_from(ms).unwrap_or(25)))
                }
                None => Next::PassDone(pass),
            })
        })
        .await
    }

    /// Marks `claim` done; call inside the chunk's transaction. Returns whether this worker
    /// still held it (a worker past its lease may have lost it to another).
    pub async fn complete<C: ConnectionTrait>(&self, db: &C, claim: &Claim) -> Result<bool, DbErr> {
        let done = Query::update()
            .table(a(CLAIMS_TABLE))
            .value(a("done"), 1i32)
            .cond_where(key(&self.table, self.job))
            .and_where(Expr::col(a("pass")).eq(claim.pass))
            .and_where(Expr::col(a("lo")).eq(claim.lo))
            .and_where(Expr::col(a("owner")).eq(self.owner.as_str()))
            .to_owned();
        Ok(db.execute(&done).await?.rows_affected() == 1)
    }

    /// After pass `pass` completed: starts the next pass (if no other worker did) and
    /// returns its number.
    pub async fn next_pass<D: ConnectionTrait + TransactionTrait>(
        &self,
        db: &D,
        pass: i64,
    ) -> Result<i64, DbErr> {
        retrying("start the next pass", async || {
            let txn = db.begin().await?;
            let row = self.lock(&txn).await?;
            if row.pass == pass && !row.finished {
                let reset = Query::update()
                    .table(a(WORK_TABLE))
                    .value(a("pass"), pass + 1)
                    .value(a("cursor_pk"), Option::<i64>::None)
                    .cond_where(key(&self.table, self.job))
                    .to_owned();
                txn.execute(&reset).await?;
                self.delete_claims_before(&txn, pass + 1).await?;
            }
            let now = self.read(&txn).await?.map_or(pass + 1, |r| r.pass);
            txn.commit().await?;
            Ok(now)
        })
        .await
    }

    /// Marks the job finished in pass `pass`, running `also` in the same transaction (the
    /// phase change). Returns `false`, with nothing done, if another worker finished it or
    /// moved it to another pass first.
    pub async fn finish<D, F>(&self, db: &D, pass: i64, also: F) -> Result<bool, DbErr>
    where
        D: ConnectionTrait + TransactionTrait,
        F: AsyncFn(&D::Transaction) -> Result<(), DbErr>,
    {
        retrying("finish the job", async || {
            let txn = db.begin().await?;
            let row = self.lock(&txn).await?;
            if row.finished || row.pass != pass {
                txn.commit().await?;
                return Ok(false);
            }
            let finish = Query::update()
                .table(a(WORK_TABLE))
                .value(a("finished"), 1i32)
                .cond_where(key(&self.table, self.job))
                .to_owned();
            txn.execute(&finish).await?;
            self.delete_claims_before(&txn, pass + 1).await?;
            also(&txn).await?;
            txn.commit().await?;
            Ok(true)
        })
        .await
    }
}
