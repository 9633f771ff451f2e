//! `migrate::rotate` with blind indexes when only one of the two keys changed (issue 10,
//! item 6), and when both did:
//!
//! 1. data key rotated, blind-index key unchanged: every envelope is resealed under the new
//!    key, every index value is left byte-identical;
//! 2. blind-index key rotated, data key unchanged: every index value is recomputed under the
//!    new version, every envelope is left byte-identical;
//! 3. both keys rotated over a table whose rows need one, the other, both or neither, in runs
//!    long enough that whole batches need only one kind of work;
//! 4. a batch size outside 1..=`MAX_BATCH_SIZE` (issue 11, item 6): refused by rotate, as by
//!    backfill and repair, with a typed error before anything is read or written.
//!
//! A batch whose rows need only one kind of work must not assign the other column (a CASE
//! without a WHEN arm is a syntax error on SQLite and PostgreSQL).

use std::collections::BTreeMap;
use std::sync::Arc;

use encrypted_columns::blind_index::BlindIndex;
use encrypted_columns::keyring;
use encrypted_columns::migrate::{self, MAX_BATCH_SIZE, RotateColumn, RotationReport};
use encrypted_columns::{ColumnContext, Error, KeyId, Keyring};
use encrypted_columns_tests::{TestDb, TestResult, backend_tests};
use sea_orm::DatabaseConnection;

use crate::email_table::{
    Row, check_rows_sealed_with, create_table, read_rows, seed_sealed, snapshot, started_table,
};
use crate::expect::crate_error;
use crate::keys::Keys;
use crate::support::{Res, batches};

// Tables: an integer `id`, an envelope `email_enc` and a blind index `email_bidx` over it.

email_context!(DataEmail, DATA_BIDX, "rot1_data");
email_context!(IndexEmail, INDEX_BIDX, "rot1_index");
email_context!(MixedEmail, MIXED_BIDX, "rot1_mixed");
email_context!(SizeEmail, SIZE_BIDX, "rot1_size");
email_context!(SizePlainEmail, SIZE_PLAIN_BIDX, "rot1_size_plain");

/// A test's table and its blind index.
type Tbl = (&'static str, &'static BlindIndex);

/// Rows of tests 1 and 2; [`BATCH`] makes that 16 batches.
const ROWS: i32 = 1_000;
const BATCH: u64 = 64;

/// The plaintext of row `id`: NULL for every 97th row (rotation leaves those alone).
fn email(id: i32) -> Option<String> {
    (id % 97 != 0).then(|| format!("P{id:06}@Example.org"))
}

/// How many of rows `1..=rows` hold a value.
fn values_in(rows: i32) -> u64 {
    (1..=rows).filter(|&id| email(id).is_some()).count() as u64
}

/// Creates `table` (no plaintext column) with rows `1..=rows`, row `id` holding [`email`]
/// sealed and indexed with `ring_for(id)` (a NULL index where `drop_index(id)`): the rows as
/// stored.
async fn seeded<'r, C: ColumnContext>(
    conn: &DatabaseConnection,
    (table, index): Tbl,
    rows: i32,
    ring_for: impl Fn(i32) -> &'r Keyring,
    drop_index: impl Fn(i32) -> bool,
) -> Res<Vec<Row>> {
    create_table(conn, table, false, index).await?;
    seed_sealed::<C>(conn, table, index, rows, email, ring_for, drop_index).await?;
    read_rows(conn, table, false).await
}

/// Rotates `table` under `ring` in batches of `batch`, to the end.
async fn rotate<C: ColumnContext>(
    conn: &DatabaseConnection,
    (table, index): Tbl,
    ring: &Arc<Keyring>,
    batch: u64,
) -> Res<RotationReport> {
    let spec =
        RotateColumn::<String, C>::new(table, "id", "email_enc").with_index("email_bidx", index);
    let report = keyring::scope(Arc::clone(ring), async {
        migrate::rotate(conn, &spec, &batches(batch), |_| {}).await
    })
    .await?;
    ensure!(report.finished, "rotation did not finish: {report:?}");
    Ok(report)
}

/// A second rotation of `table` under `ring` finds nothing to do.
async fn nothing_left<C: ColumnContext>(
    conn: &DatabaseConnection,
    table: Tbl,
    ring: &Arc<Keyring>,
) -> TestResult {
    let again = rotate::<C>(conn, table, ring, 500).await?;
    ensure!(
        (again.resealed, again.reindexed, again.batches) == (0, 0, 0),
        "a second run found work: {again:?}"
    );
    Ok(())
}

/// `{id: n}`, for comparing key-usage maps.
fn usage(pairs: &[(u32, u64)]) -> BTreeMap<KeyId, u64> {
    pairs
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|&(id, n)| (KeyId(id), n))
        .collect()
}

/// The report counts all `values` under data key `data` and blind-index key `index`.
fn check_report_keys(report: &RotationReport, (data, index): (u32, u32), values: u64) {
    assert_eq!(report.rows_by_key, usage(&[(data, values)]));
    assert_eq!(
        report.index_rows_by_key.get("email_bidx"),
        Some(&usage(&[(index, values)]))
    );
}

/// The independent check after a rotation: the rows of `before`, in the same order, each
/// opening with `retired` (a keyring holding only the new keys) to [`email`]`(id)` under key
/// id `key`, its index the fresh computation under `retired`'s blind-index key; NULL rows
/// stay NULL.
async fn rows_after<C: ColumnContext>(
    conn: &DatabaseConnection,
    (table, index): Tbl,
    retired: &Keyring,
    key: KeyId,
    before: &[Row],
) -> Res<Vec<Row>> {
    let after = read_rows(conn, table, false).await?;
    assert_eq!(after.len(), before.len());
    for (b, r) in before.iter().zip(&after) {
        ensure!(b.id == r.id, "row order differs: {} vs {}", b.id, r.id);
    }
    check_rows_sealed_with::<C>(&after, retired, index, key, |r| email(r.id))?;
    Ok(after)
}

/// Tests 1 and 2: [`ROWS`] rows sealed and indexed under data key 1 and blind-index key 1,
/// rotated in batches of [`BATCH`] to data key `to.0` and blind-index key `to.1` (one of them
/// 2). The rotation reseals every value if the data key changed and reindexes every value if
/// the index key did, and nothing else, in one batch per [`BATCH`] values; the report says
/// the key 1 that changed can retire; the report and the table count every value under the
/// keys `to`; [`rows_after`] holds with a keyring of only those keys; a second run finds
/// nothing to do; and `each_row(before, after)` holds for every row.
async fn rotate_one_key<C: ColumnContext>(
    db: &TestDb,
    tbl: Tbl,
    to: (u32, u32),
    each_row: impl Fn(&Row, &Row) -> TestResult,
) -> TestResult {
    let conn = &db.conn;
    let keys = Keys::generate();
    let old = keys.ring(1, 1)?;
    let new = Arc::new(keys.rotating_to(to.0, to.1)?);
    let retired = keys.ring(to.0, to.1)?;
    let before = seeded::<C>(conn, tbl, ROWS, |_| &old, |_| false).await?;
    let values = values_in(ROWS);
    let report = rotate::<C>(conn, tbl, &new, BATCH).await?;
    eprintln!("{}: {report:?}", db.backend);
    let changed = |key: u32| if key == 2 { values } else { 0 };
    assert_eq!(report.resealed, changed(to.0), "{report:?}");
    assert_eq!(report.reindexed, changed(to.1), "{report:?}");
    assert_eq!(report.batches, values.div_ceil(BATCH), "{report:?}");
    ensure!(
        report.can_retire_key(KeyId(1)) == (to.0 == 2),
        "key 1 kept or retired wrongly: {report:?}"
    );
    ensure!(
        report.can_retire_blind_index_key(KeyId(1)) == (to.1 == 2),
        "blind-index key 1 kept or retired wrongly: {report:?}"
    );
    check_report_keys(&report, to, values);
    assert_eq!(
        migrate::key_usage(conn, tbl.0, "email_enc").await?,
        usage(&[(to.0, values)])
    );
    assert_eq!(
        migrate::index_key_usage(conn, tbl.0, "email_bidx").await?,
        usage(&[(to.1, values)])
    );
    let after = rows_after::<C>(conn, tbl, &retired, KeyId(to.0), &before).await?;
    for (b, r) in before.iter().zip(&after) {
        each_row(b, r)?;
    }
    nothing_left::<C>(conn, tbl, &new).await
}

backend_tests!(
    /// Data key 1 → 2, blind-index key 1 unchanged, 1,000 rows in 16 batches: every envelope
    /// is resealed under key 2 to the same plaintext, every index value is byte-identical to
    /// before, the report counts every row resealed and none reindexed, and key 1 can retire.
    data_key_rotated_index_key_unchanged,
    |db: &TestDb| async move {
        rotate_one_key::<DataEmail>(db, ("rot1_data", &DATA_BIDX), (2, 1), |b, r| {
            ensure!(b.bidx == r.bidx, "row {}: index value changed", r.id);
            ensure!(
                b.enc.is_none() == r.enc.is_none() && (b.enc.is_none() || b.enc != r.enc),
                "row {}: envelope not resealed",
                r.id
            );
            Ok(())
        })
        .await
    }
);

backend_tests!(
    /// Blind-index key 1 → 2, data key 1 unchanged, 1,000 rows in 16 batches: every index
    /// value is recomputed under version 2 and equals a fresh computation, every envelope is
    /// byte-identical to before, the report counts none resealed and every row reindexed,
    /// and blind-index key 1 can retire.
    index_key_rotated_data_key_unchanged,
    |db: &TestDb| async move {
        rotate_one_key::<IndexEmail>(db, ("rot1_index", &INDEX_BIDX), (1, 2), |b, r| {
            ensure!(b.enc == r.enc, "row {}: envelope changed", r.id);
            match (&b.bidx, &r.bidx) {
                (None, None) => Ok(()),
                (Some(old), Some(new)) => {
                    ensure!(old != new, "row {}: index value not recomputed", r.id);
                    ensure!(new[0] == 2, "row {}: index version {}", r.id, new[0]);
                    Ok(())
                }
                _ => Err(format!("row {}: index NULL-ness changed", r.id).into()),
            }
        })
        .await
    }
);

/// What row `id` of the mixed table needs: (resealing, reindexing). Rows 1..=100 need only
/// resealing, 101..=200 only reindexing, 201..=300 both, 301..=400 neither; 401..=600 mix
/// all four row by row (and every 7th of those has a NULL index to fill in).
fn mixed_needs(id: i32) -> (bool, bool) {
    match id {
        1..=100 => (true, false),
        101..=200 => (false, true),
        201..=300 => (true, true),
        301..=400 => (false, false),
        _ if id % 7 == 0 => (id % 2 == 0, true),
        _ => (id % 4 < 2, id % 4 == 1 || id % 4 == 2),
    }
}

const MIXED_ROWS: i32 = 600;
const MIXED_BATCH: u64 = 25;

backend_tests!(
    /// Data key 1 → 2 and blind-index key 1 → 2 over 600 rows that need resealing only,
    /// reindexing only, both or neither — in runs of 100 (whole batches of one kind) and then
    /// row by row (every kind in one batch): each row gets exactly the work it needs, and
    /// whatever was already current stays byte-identical.
    mixed_rows,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let table: Tbl = ("rot1_mixed", &MIXED_BIDX);
        let keys = Keys::generate();
        // Seal with the key each row should (not) need to leave.
        let rings = [
            keys.ring(2, 2)?, // neither
            keys.ring(2, 1)?, // reindex only
            keys.ring(1, 2)?, // reseal only
            keys.ring(1, 1)?, // both
        ];
        let ring_for = |id: i32| {
            let (reseal, reindex) = mixed_needs(id);
            &rings[usize::from(reseal) * 2 + usize::from(reindex)]
        };
        let null_index = |id: i32| id > 400 && id % 7 == 0;
        let before = seeded::<MixedEmail>(conn, table, MIXED_ROWS, ring_for, null_index).await?;

        let new = Arc::new(keys.rotating_to(2, 2)?);
        let retired = keys.ring(2, 2)?;

        let with_value = |want: fn((bool, bool)) -> bool| {
            (1..=MIXED_ROWS)
                .filter(|&id| email(id).is_some() && want(mixed_needs(id)))
                .count() as u64
        };
        let (reseal, reindex, stale) = (
            with_value(|(s, _)| s),
            with_value(|(_, i)| i),
            with_value(|(s, i)| s || i),
        );
        let values = values_in(MIXED_ROWS);

        let report = rotate::<MixedEmail>(conn, table, &new, MIXED_BATCH).await?;
        eprintln!("{}: {report:?}", db.backend);
        assert_eq!(report.resealed, reseal, "{report:?}");
        assert_eq!(report.reindexed, reindex, "{report:?}");
        assert_eq!(report.batches, stale.div_ceil(MIXED_BATCH), "{report:?}");
        ensure!(
            report.can_retire_key(KeyId(1)) && report.can_retire_blind_index_key(KeyId(1)),
            "the report keeps key 1: {report:?}"
        );
        check_report_keys(&report, (2, 2), values);

        let after = rows_after::<MixedEmail>(conn, table, &retired, KeyId(2), &before).await?;
        for (b, r) in before.iter().zip(&after) {
            if b.enc.is_none() {
                ensure!(*r == *b, "row {}: NULL row changed", r.id);
                continue;
            }
            let (reseal, reindex) = mixed_needs(r.id);
            ensure!(
                (b.enc != r.enc) == reseal,
                "row {}: envelope {} (needed resealing: {reseal})",
                r.id,
                if b.enc != r.enc { "changed" } else { "kept" }
            );
            ensure!(
                (b.bidx != r.bidx) == reindex,
                "row {}: index {} (needed reindexing: {reindex})",
                r.id,
                if b.bidx != r.bidx { "changed" } else { "kept" }
            );
        }
        nothing_left::<MixedEmail>(conn, table, &new).await?;
        Ok(())
    }
);

/// Batch sizes every step must refuse: zero (would never advance), one past the bound, and
/// the largest `u64` (a bound LIMIT of it panics inside some drivers).
const BAD_BATCH_SIZES: [u64; 3] = [0, MAX_BATCH_SIZE + 1, u64::MAX];

/// `err` is `Error::Migration` about the batch size, naming `table.column` when given.
fn expect_batch_size_error(
    err: &sea_orm::DbErr,
    on: Option<(&str, &str)>,
    size: u64,
) -> TestResult {
    let (inner, message) = crate_error(err)?;
    let Error::Migration { table, column, .. } = inner else {
        return Err(format!("batch size {size}: expected Error::Migration, got {message}").into());
    };
    ensure!(
        message.contains(&format!(
            "batch size {size} is outside 1..={MAX_BATCH_SIZE}"
        )),
        "batch size {size}: {message}"
    );
    if let Some((t, c)) = on {
        ensure!(
            (table.as_str(), column.as_str()) == (t, c),
            "batch size {size}: names {table}.{column}, not {t}.{c}"
        );
    }
    Ok(())
}

backend_tests!(
    /// `migrate::rotate` with a batch size of 0, `MAX_BATCH_SIZE + 1` or `u64::MAX` fails with
    /// `Error::Migration` naming the column, before anything is read or written (rows
    /// byte-identical, no state row); `MAX_BATCH_SIZE` itself works. Backfill and repair
    /// refuse the same sizes with the same typed error.
    batch_sizes_out_of_range_are_refused,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let table: Tbl = ("rot1_size", &SIZE_BIDX);
        let keys = Keys::generate();
        let old = keys.ring(1, 1)?;
        let before = seeded::<SizeEmail>(conn, table, 120, |_| &old, |_| false).await?;
        let new = Arc::new(keys.rotating_to(2, 2)?);
        let spec = RotateColumn::<String, SizeEmail>::new(table.0, "id", "email_enc")
            .with_index("email_bidx", table.1);
        for size in BAD_BATCH_SIZES {
            let err = keyring::scope(Arc::clone(&new), async {
                migrate::rotate(conn, &spec, &batches(size), |_| {}).await
            })
            .await
            .expect_err("a bad batch size was accepted");
            expect_batch_size_error(&err, Some(("rot1_size", "email_enc")), size)?;
            ensure!(
                read_rows(conn, table.0, false).await? == before,
                "batch size {size}: rows changed"
            );
            ensure!(
                !migrate::state::list(conn)
                    .await?
                    .iter()
                    .any(|s| s.table == table.0),
                "batch size {size}: a rotation state row was written"
            );
        }
        let report = rotate::<SizeEmail>(conn, table, &new, MAX_BATCH_SIZE).await?;
        assert_eq!(report.resealed, values_in(120), "{report:?}");
        assert_eq!(report.batches, 1, "{report:?}");

        // Backfill and repair, on a plaintext table: refused at any phase, state unchanged.
        let plain = "rot1_size_plain";
        let spec = started_table::<SizePlainEmail>(conn, plain, 40, &SIZE_PLAIN_BIDX).await?;
        migrate::dual_write(conn, &spec).await?;
        let started = snapshot(conn, plain, true).await?;
        for size in BAD_BATCH_SIZES {
            let err = migrate::backfill(conn, &spec, &batches(size), |_| {})
                .await
                .expect_err("backfill accepted a bad batch size");
            expect_batch_size_error(&err, None, size)?;
            ensure!(
                snapshot(conn, plain, true).await? == started,
                "backfill with batch size {size} changed something"
            );
        }
        let filled = migrate::backfill(conn, &spec, &batches(MAX_BATCH_SIZE), |_| {}).await?;
        ensure!(filled.finished, "backfill did not finish: {filled:?}");
        let backfilled = snapshot(conn, plain, true).await?;
        for size in BAD_BATCH_SIZES {
            let err = migrate::repair(conn, &spec, &batches(size), |_| {})
                .await
                .expect_err("repair accepted a bad batch size");
            expect_batch_size_error(&err, None, size)?;
            ensure!(
                snapshot(conn, plain, true).await? == backfilled,
                "repair with batch size {size} changed something"
            );
        }
        Ok(())
    }
);
