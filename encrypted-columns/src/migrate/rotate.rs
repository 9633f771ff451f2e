//! Key rotation: re-encrypt rows sealed with older keys, recompute blind indexes of older
//! versions, resumably and without overwriting concurrent writes.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use sea_orm::sea_query::{CaseStatement, Condition, Expr, ExprTrait, Func, Order, Query};
use sea_orm::{ConnectionTrait, DbErr, TransactionSession, TransactionTrait};
use tracing::{Instrument, debug, info, info_span};

use super::sql::{a, check_columns, pk_of};
use super::state::{self, Kind};
use super::{MAX_BATCH_SIZE, Phase, Progress, RunOptions};
use crate::blind_index::{BlindIndex, IndexArg};
use crate::context::ColumnContext;
use crate::keyring::{self, KeyId};
use crate::types::{Encrypted, Plaintext};

/// An encrypted column (and the single-field blind indexes computed from it) to bring onto
/// the active keys.
pub struct RotateColumn<T, C> {
    table: String,
    primary_key: String,
    encrypted: String,
    indexes: Vec<(String, &'static BlindIndex)>,
    only: Option<Condition>,
    _types: PhantomData<fn() -> (T, C)>,
}

impl<T: Plaintext + IndexArg<T>, C: ColumnContext> RotateColumn<T, C> {
    /// Column `encrypted` of `table`, integer primary key `primary_key`.
    pub fn new(table: &str, primary_key: &str, encrypted: &str) -> Self {
        RotateColumn {
            table: table.to_owned(),
            primary_key: primary_key.to_owned(),
            encrypted: encrypted.to_owned(),
            indexes: Vec::new(),
            only: None,
            _types: PhantomData,
        }
    }

    /// Rotates only the rows matching `condition`; the others are neither read nor counted.
    /// For columns that hold envelopes in some rows only, such as a subject-key table's
    /// `wrapped_key`, where rows of other KEK providers hold that provider's wrapping:
    /// `Condition::all().add(Expr::col(Alias::new("provider")).eq("keyring"))`.
    pub fn only_where(mut self, condition: Condition) -> Self {
        self.only = Some(condition);
        self
    }

    /// Also recomputes blind-index column `column` (a single-field index over this column).
    pub fn with_index(mut self, column: &str, index: &'static BlindIndex) -> Self {
        self.indexes.push((column.to_owned(), index));
        self
    }
}

/// What a rotation run did, and what is left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Rows re-encrypted with the active key.
    pub resealed: u64,
    /// Rows whose blind indexes were recomputed with the active blind-index key.
    pub reindexed: u64,
    /// Batches committed.
    pub batches: u64,
    /// Whether the run reached the end of the table.
    pub finished: bool,
    /// Rows per encryption key id, after the run.
    pub rows_by_key: BTreeMap<KeyId, u64>,
    /// Per index column: rows per blind-index key id, after the run.
    pub index_rows_by_key: BTreeMap<String, BTreeMap<KeyId, u64>>,
}

impl RotationReport {
    /// Whether no row of this column still needs encryption key `id`.
    pub fn can_retire_key(&self, id: KeyId) -> bool {
        self.rows_by_key.get(&id).copied().unwrap_or(0) == 0
    }

    /// Whether no index value of this column still uses blind-index key `id`.
    pub fn can_retire_blind_index_key(&self, id: KeyId) -> bool {
        self.index_rows_by_key
            .values()
            .all(|by_key| by_key.get(&id).copied().unwrap_or(0) == 0)
    }
}

fn key_bytes(id: KeyId) -> Vec<u8> {
    id.0.to_be_bytes().to_vec()
}

fn substr(column: &str, start: i32, len: i32) -> Expr {
    Expr::expr(
        Func::cust(a("substr"))
            .arg(Expr::col(a(column)))
            .arg(start)
            .arg(len),
    )
}

/// Re-encrypts (and re-indexes) every row of `spec` not yet under the active keys. Run it
/// after promoting a new key everywhere; when the report says a key can be retired for every
/// column, remove it from the keyring.
pub async fn rotate<T, C, D>(
    db: &D,
    spec: &RotateColumn<T, C>,
    options: &RunOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<RotationReport, DbErr>
where
    T: Plaintext + IndexArg<T>,
    C: ColumnContext,
    D: ConnectionTrait + TransactionTrait,
{
    let span = info_span!("rotate", table = %spec.table, column = %spec.encrypted);
    run(db, spec, options, &mut progress).instrument(span).await
}

async fn run<T, C, D>(
    db: &D,
    spec: &RotateColumn<T, C>,
    options: &RunOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<RotationReport, DbErr>
where
    T: Plaintext + IndexArg<T>,
    C: ColumnContext,
    D: ConnectionTrait + TransactionTrait,
{
    let (table, pk, enc) = (&spec.table, &spec.primary_key, &spec.encrypted);
    // Checked before anything is read or written. The batch size becomes a bound LIMIT: a
    // huge one panics inside some drivers (u64 to i64), a zero one would never advance. The
    // lease does not matter here (rotation claims no chunks), so this is not `checked_batch`.
    if !(1..=MAX_BATCH_SIZE).contains(&options.batch_size) {
        return Err(crate::Error::Migration {
            table: table.clone(),
            column: enc.clone(),
            problem: format!(
                "batch size {} is outside 1..={MAX_BATCH_SIZE}",
                options.batch_size
            ),
        }
        .into());
    }
    let keyring = keyring::current()?;
    let active = keyring.active_key_id();
    let active_bi = keyring.active_blind_index_key_id();
    if !spec.indexes.is_empty() && active_bi.is_none() {
        return Err(crate::Error::NoBlindIndexKey.into());
    }
    let mut columns = vec![pk.as_str(), enc.as_str()];
    columns.extend(spec.indexes.iter().map(|(c, _)| c.as_str()));
    check_columns(db, table, &columns).await?;

    let target = format!("k{}:b{}", active, active_bi.map_or(0, |k| k.0));
    let current = state::create_kind(
        db,
        table,
        enc,
        Kind::Rotate,
        Phase::Backfilling,
        Some(&target),
    )
    .await?;
    let mut cursor = match (&current.target, current.phase) {
        (Some(t), Phase::Backfilling) if *t == target => current.cursor.unwrap_or(i64::MIN),
        _ => i64::MIN, // new keys since the last run: start over
    };
    if current.phase != Phase::Backfilling || current.target.as_deref() != Some(&target) {
        state::save_cursor(db, table, enc, Kind::Rotate, None, 0, Some(&target)).await?;
        set_phase(db, table, enc, Phase::Backfilling).await?;
    }

    // Rows needing work: envelope under another key, or an index of another version (or none).
    let mut stale = Condition::any().add(substr(enc, 2, 4).ne(key_bytes(active)));
    if let Some(version) = active_bi {
        let version_byte = vec![u8::try_from(version.0).unwrap_or(0)];
        for (column, _) in &spec.indexes {
            stale = stale
                .add(Expr::col(a(column)).is_null())
                .add(substr(column, 1, 1).ne(version_byte.clone()));
        }
    }
    // Rows outside the caller's filter are not this column's envelopes: never selected.
    let selected = match &spec.only {
        Some(only) => Condition::all().add(stale.clone()).add(only.clone()),
        None => stale.clone(),
    };
    let total = count(db, table, pk, enc, selected.clone()).await?;
    info!(total, %target, "rotation starting");

    let mut report = RotationReport::default();
    let mut done = 0u64;
    loop {
        if options.max_batches.is_some_and(|max| report.batches >= max) {
            return Ok(report);
        }
        let select = Query::select()
            .columns(columns.iter().map(|c| a(c)))
            .from(a(table))
            .and_where(Expr::col(a(pk)).gt(cursor))
            .and_where(Expr::col(a(enc)).is_not_null())
            .cond_where(selected.clone())
            .order_by(a(pk), Order::Asc)
            .limit(options.batch_size)
            .to_owned();
        let rows = db.query_all(&select).await?;
        if rows.is_empty() {
            break;
        }
        let mut ids = Vec::with_capacity(rows.len());
        // Each CASE with the number of WHEN arms it got: a column whose CASE has none is left
        // out of the UPDATE (`CASE ELSE .. END` is a syntax error on SQLite and PostgreSQL).
        let (mut enc_case, mut enc_arms) = (CaseStatement::new(), 0usize);
        let mut index_cases: Vec<(CaseStatement, usize)> = spec
            .indexes
            .iter()
            .map(|_| (CaseStatement::new(), 0))
            .collect();
        for row in &rows {
            let id = pk_of(row, table, pk)?;
            let envelope: Vec<u8> = row.try_get("", enc)?;
            let opened = Encrypted::<T, C>::from_envelope_with(&keyring, envelope.clone())?;
            // Compare-and-set on the envelope read: each seal is unique, so a concurrent
            // write (already under the active keys) makes the guard fail and is kept.
            let guard = || {
                Expr::col(a(pk))
                    .eq(id)
                    .and(Expr::col(a(enc)).eq(envelope.clone()))
            };
            if opened.key_id() != active {
                let resealed = Encrypted::<T, C>::new_with(&keyring, opened.expose().clone())?;
                enc_case = enc_case.case(guard(), Expr::val(resealed.envelope().to_vec()));
                enc_arms += 1;
                report.resealed += 1;
            }
            let mut reindexed = false;
            for ((column, index), (case, arms)) in spec.indexes.iter().zip(index_cases.iter_mut()) {
                let stored: Option<Vec<u8>> = row.try_get("", column)?;
                let current_version = stored
                    .as_ref()
                    .and_then(|s| s.first())
                    .map(|b| u32::from(*b));
                if current_version == active_bi.map(|k| k.0) {
                    continue;
                }
                let value = index.compute(&keyring, &[Some(opened.expose().index_input()?)])?;
                *case = std::mem::take(case).case(guard(), Expr::val(value));
                *arms += 1;
                reindexed = true;
            }
            if reindexed {
                report.reindexed += 1;
            }
            ids.push(id);
        }
        let last = *ids.last().unwrap_or(&cursor);
        let mut update = Query::update();
        update
            .table(a(table))
            .and_where(Expr::col(a(pk)).is_in(ids.clone()));
        // Index columns first: MySQL evaluates single-table assignments left to right, so
        // after `enc = CASE ..` the index guards (`enc = <envelope read>`) would see the new
        // envelope, fail, and leave every resealed row's index on the old key.
        let mut assigned = 0usize;
        for ((column, _), (case, arms)) in spec.indexes.iter().zip(index_cases) {
            if arms > 0 {
                update.value(a(column), case.finally(Expr::col(a(column))));
                assigned += 1;
            }
        }
        if enc_arms > 0 {
            update.value(a(enc), enc_case.finally(Expr::col(a(enc))));
            assigned += 1;
        }
        let txn = db.begin().await?;
        // No arm at all (every row of the batch already current): nothing to write, but the
        // cursor still moves past the batch.
        if assigned > 0 {
            txn.execute(&update).await?;
        }
        state::save_cursor(
            &txn,
            table,
            enc,
            Kind::Rotate,
            Some(last),
            ids.len() as i64,
            None,
        )
        .await?;
        txn.commit().await?;
        cursor = last;
        done += ids.len() as u64;
        report.batches += 1;
        debug!(
            batch = report.batches,
            rows = ids.len(),
            cursor,
            "rotation batch committed"
        );
        progress(&Progress {
            done,
            skipped: 0,
            total,
            cursor,
        });
        if let Some(pause) = options.throttle {
            tokio::time::sleep(pause).await;
        }
    }
    set_phase(db, table, enc, Phase::Backfilled).await?;
    report.finished = true;
    report.rows_by_key = group_by_key(db, table, enc, substr(enc, 2, 4), spec.only.clone()).await?;
    for (column, _) in &spec.indexes {
        let by_key =
            group_by_key(db, table, column, substr(column, 1, 1), spec.only.clone()).await?;
        report.index_rows_by_key.insert(column.clone(), by_key);
    }
    info!(
        resealed = report.resealed,
        reindexed = report.reindexed,
        "rotation finished"
    );
    Ok(report)
}

/// Rotation rows move freely between `backfilling` and `backfilled` (no phase rules).
async fn set_phase<D: ConnectionTrait>(
    db: &D,
    table: &str,
    column: &str,
    phase: Phase,
) -> Result<(), DbErr> {
    let update = Query::update()
        .table(a(state::STATE_TABLE))
        .value(a("phase"), phase.as_str())
        .value(a("updated_at_ms"), super::sql::now_ms())
        .and_where(Expr::col(a("table_name")).eq(table))
        .and_where(Expr::col(a("column_name")).eq(column))
        .and_where(Expr::col(a("kind")).eq("rotate"))
        .to_owned();
    db.execute(&update).await.map(|_| ())
}

async fn count<D: ConnectionTrait>(
    db: &D,
    table: &str,
    pk: &str,
    enc: &str,
    stale: Condition,
) -> Result<u64, DbErr> {
    let q = Query::select()
        .expr_as(Func::count(Expr::col(a(pk))), a("n"))
        .from(a(table))
        .and_where(Expr::col(a(enc)).is_not_null())
        .cond_where(stale)
        .to_owned();
    Ok(match db.query_one(&q).await? {
        Some(row) => u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0),
        None => 0,
    })
}

/// How many rows of `table.column` were sealed with each encryption key id (for `keys
/// status` reports and deciding when a key can be retired). Reads only the 4 key-id bytes
/// of each envelope, in the database.
pub async fn key_usage<D: ConnectionTrait>(
    db: &D,
    table: &str,
    column: &str,
) -> Result<BTreeMap<KeyId, u64>, DbErr> {
    check_columns(db, table, &[column]).await?;
    group_by_key(db, table, column, substr(column, 2, 4), None).await
}

/// [`key_usage`] of the rows matching `condition` only (see [`RotateColumn::only_where`]).
pub async fn key_usage_where<D: ConnectionTrait>(
    db: &D,
    table: &str,
    column: &str,
    condition: Condition,
) -> Result<BTreeMap<KeyId, u64>, DbErr> {
    check_columns(db, table, &[column]).await?;
    group_by_key(db, table, column, substr(column, 2, 4), Some(condition)).await
}

/// How many rows of blind-index column `table.column` hold values of each blind-index key id.
pub async fn index_key_usage<D: ConnectionTrait>(
    db: &D,
    table: &str,
    column: &str,
) -> Result<BTreeMap<KeyId, u64>, DbErr> {
    check_columns(db, table, &[column]).await?;
    group_by_key(db, table, column, substr(column, 1, 1), None).await
}

/// Rows per key id, read from the id bytes at the front of each stored value.
async fn group_by_key<D: ConnectionTrait>(
    db: &D,
    table: &str,
    column: &str,
    key_expr: Expr,
    only: Option<Condition>,
) -> Result<BTreeMap<KeyId, u64>, DbErr> {
    // Grouped by the output alias: PostgreSQL does not see `substr(col, $1, $2)` and
    // `substr(col, $3, $4)` as the same expression, so grouping by a second copy of it fails.
    let mut q = Query::select()
        .expr_as(key_expr, a("key_bytes"))
        .expr_as(Func::count(Expr::col(a(column))), a("n"))
        .from(a(table))
        .and_where(Expr::col(a(column)).is_not_null())
        .add_group_by([Expr::col(a("key_bytes"))])
        .to_owned();
    if let Some(only) = only {
        q.cond_where(only);
    }
    let mut out = BTreeMap::new();
    for row in db.query_all(&q).await? {
        let bytes: Vec<u8> = row.try_get("", "key_bytes")?;
        let n = u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0);
        let id = bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        *out.entry(KeyId(id)).or_insert(0) += n;
    }
    Ok(out)
}
