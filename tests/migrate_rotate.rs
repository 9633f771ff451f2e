//! `migrate::rotate` with blind indexes when only one of the two keys changed (issue 10,
//! item 6), on every backend:
//!
//! 1. data key rotated, blind-index key unchanged: every envelope is resealed under the new
//!    key, every index value is left byte-identical;
//! 2. blind-index key rotated, data key unchanged: every index value is recomputed under the
//!    new version, every envelope is left byte-identical;
//! 3. both keys rotated over a table whose rows need one, the other, both or neither, in runs
//!    long enough that whole batches need only one kind of work.
//!
//! A batch whose rows need only one kind of work must not assign the other column (a CASE
//! without a WHEN arm is a syntax error on SQLite and PostgreSQL).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use encrypted_columns::blind_index::{BlindIndex, IndexInput, Pipeline};
use encrypted_columns::keyring::{self, KEY_LEN, generate_key};
use encrypted_columns::migrate::{self, RotateColumn, RotationReport, RunOptions};
use encrypted_columns::schema::blind_index_column_type;
use encrypted_columns::{ColumnContext, Encrypted, KeyId, Keyring, column_context};
use encrypted_columns_tests::{TestResult, backend_tests};
use sea_orm::sea_query::{Alias, ColumnDef, Order, Query, Table};
use sea_orm::{ConnectionTrait, DatabaseConnection, Value};

/// A test result carrying a value.
type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Fails the enclosing test body with a message.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

// ---------------------------------------------------------------------------------------------
// Tables: an integer `id`, an envelope `email_enc` and a blind index `email_bidx` over it.

column_context!(DataEmail, table = "rot1_data", column = "email");
column_context!(IndexEmail, table = "rot1_index", column = "email");
column_context!(MixedEmail, table = "rot1_mixed", column = "email");

fn email_index(table: &'static str) -> BlindIndex {
    BlindIndex::new(table, "email_bidx").field(Pipeline::parse("email").expect("email pipeline"))
}

static DATA_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("rot1_data"));
static INDEX_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("rot1_index"));
static MIXED_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("rot1_mixed"));

/// Rows of tests 1 and 2; [`BATCH`] makes that 16 batches.
const ROWS: i32 = 1_000;
const BATCH: u64 = 64;

/// `CREATE TABLE table (id int primary key, email_enc blob, email_bidx binary(n))`.
async fn create_table(conn: &DatabaseConnection, table: &str, index: &BlindIndex) -> TestResult {
    let create = Table::create()
        .table(a(table))
        .col(ColumnDef::new(a("id")).integer().not_null().primary_key())
        .col(ColumnDef::new(a("email_enc")).blob().null())
        .col(ColumnDef::new_with_type(a("email_bidx"), blind_index_column_type(index)).null())
        .to_owned();
    conn.execute(&create).await?;
    Ok(())
}

/// The plaintext of row `id`: NULL for every 97th row (rotation leaves those alone).
fn email(id: i32) -> Option<String> {
    (id % 97 != 0).then(|| format!("P{id:06}@Example.org"))
}

/// How many of rows `1..=rows` hold a value.
fn values_in(rows: i32) -> u64 {
    (1..=rows).filter(|&id| email(id).is_some()).count() as u64
}

/// A keyring holding exactly data key `data` and blind-index key `blind`, both active.
fn ring(data: (u32, &[u8; KEY_LEN]), blind: (u32, &[u8; KEY_LEN])) -> Res<Keyring> {
    let mut ring = Keyring::new(KeyId(data.0), *data.1);
    ring.add_blind_index_key(KeyId(blind.0), *blind.1)?;
    Ok(ring)
}

/// The blind-index value of `email` under `ring`'s active blind-index key.
fn index_of(index: &BlindIndex, ring: &Keyring, email: &Option<String>) -> Res<Option<Vec<u8>>> {
    Ok(match email {
        Some(e) => index.compute(ring, &[Some(IndexInput::Text(e))])?,
        None => None,
    })
}

/// Inserts rows `1..=rows`, row `id` sealed and indexed with `ring_for(id)` (NULL envelope
/// and index where [`email`] is NULL); `drop_index(id)` stores a NULL index instead.
async fn seed<'r, C: ColumnContext>(
    conn: &DatabaseConnection,
    table: &str,
    index: &BlindIndex,
    rows: i32,
    ring_for: impl Fn(i32) -> &'r Keyring,
    drop_index: impl Fn(i32) -> bool,
) -> TestResult {
    for chunk in (1..=rows).collect::<Vec<_>>().chunks(250) {
        let mut insert = Query::insert();
        insert
            .into_table(a(table))
            .columns([a("id"), a("email_enc"), a("email_bidx")]);
        for &id in chunk {
            let ring = ring_for(id);
            let value = email(id);
            let enc = value
                .clone()
                .map(|v| Encrypted::<String, C>::new_with(ring, v))
                .transpose()?
                .map(|e| e.envelope().to_vec());
            let bidx = if drop_index(id) {
                None
            } else {
                index_of(index, ring, &value)?
            };
            insert.values_panic([
                id.into(),
                Value::Bytes(enc).into(),
                Value::Bytes(bidx).into(),
            ]);
        }
        conn.execute(&insert).await?;
    }
    Ok(())
}

/// One row as stored.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: i32,
    enc: Option<Vec<u8>>,
    bidx: Option<Vec<u8>>,
}

/// Every row of `table`, by id.
async fn read_rows(conn: &impl ConnectionTrait, table: &str) -> Res<Vec<Row>> {
    let select = Query::select()
        .columns([a("id"), a("email_enc"), a("email_bidx")])
        .from(a(table))
        .order_by(a("id"), Order::Asc)
        .to_owned();
    let mut rows = Vec::new();
    for row in conn.query_all(&select).await? {
        rows.push(Row {
            id: row.try_get("", "id")?,
            enc: row.try_get("", "email_enc")?,
            bidx: row.try_get("", "email_bidx")?,
        });
    }
    Ok(rows)
}

/// The independent check: with `retired` (a keyring holding only the new keys), each row's
/// envelope opens under key id `key` to [`email`]`(id)`, and its index is the fresh
/// computation under `retired`'s blind-index key; NULL rows stay NULL.
fn check_rows<C: ColumnContext>(
    rows: &[Row],
    retired: &Keyring,
    index: &BlindIndex,
    key: KeyId,
) -> TestResult {
    let mut bad = Vec::new();
    for row in rows {
        let want = email(row.id);
        let problem = match (&want, &row.enc) {
            (None, None) => None,
            (None, Some(_)) => Some("envelope without plaintext".to_owned()),
            (Some(_), None) => Some("no envelope".to_owned()),
            (Some(want), Some(enc)) => {
                match Encrypted::<String, C>::from_envelope_with(retired, enc.clone()) {
                    Ok(opened) if opened.key_id() != key => {
                        Some(format!("sealed with key {}", opened.key_id()))
                    }
                    Ok(opened) if opened.expose() != want => Some("opens to another value".into()),
                    Ok(_) => None,
                    Err(err) => Some(format!("does not open: {err}")),
                }
            }
        };
        let problem = problem.or_else(|| match index_of(index, retired, &want) {
            Ok(fresh) if fresh == row.bidx => None,
            Ok(_) => Some("blind index differs from a fresh computation".into()),
            Err(err) => Some(format!("computing the index: {err}")),
        });
        if let Some(problem) = problem {
            bad.push(format!("row {}: {problem}", row.id));
        }
    }
    ensure!(
        bad.is_empty(),
        "{} bad row(s), first: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    Ok(())
}

/// Rotates `table` under `ring` in batches of `batch`, to the end.
async fn rotate<C: ColumnContext>(
    conn: &DatabaseConnection,
    table: &str,
    index: &'static BlindIndex,
    ring: &Arc<Keyring>,
    batch: u64,
) -> Res<RotationReport> {
    let spec =
        RotateColumn::<String, C>::new(table, "id", "email_enc").with_index("email_bidx", index);
    let options = RunOptions {
        batch_size: batch,
        ..RunOptions::default()
    };
    let report = keyring::scope(Arc::clone(ring), async {
        migrate::rotate(conn, &spec, &options, |_| {}).await
    })
    .await?;
    ensure!(report.finished, "rotation did not finish: {report:?}");
    Ok(report)
}

/// A second rotation of `table` under `ring` finds nothing to do.
async fn nothing_left<C: ColumnContext>(
    conn: &DatabaseConnection,
    table: &str,
    index: &'static BlindIndex,
    ring: &Arc<Keyring>,
) -> TestResult {
    let again = rotate::<C>(conn, table, index, ring, 500).await?;
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

backend_tests!(
    /// Data key 1 → 2, blind-index key 1 unchanged, 1,000 rows in 16 batches: every envelope
    /// is resealed under key 2 to the same plaintext, every index value is byte-identical to
    /// before, the report counts every row resealed and none reindexed, and key 1 can retire.
    data_key_rotated_index_key_unchanged,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let table = "rot1_data";
        create_table(conn, table, &DATA_BIDX).await?;
        let (k1, k2, b1) = (generate_key(), generate_key(), generate_key());
        let old = ring((1, &k1), (1, &b1))?;
        let mut new = ring((1, &k1), (1, &b1))?;
        new.add_key(KeyId(2), *k2)?;
        new.promote(KeyId(2))?;
        let retired = ring((2, &k2), (1, &b1))?;
        seed::<DataEmail>(conn, table, &DATA_BIDX, ROWS, |_| &old, |_| false).await?;
        let before = read_rows(conn, table).await?;
        let values = values_in(ROWS);

        let new = Arc::new(new);
        let report = rotate::<DataEmail>(conn, table, &DATA_BIDX, &new, BATCH).await?;
        eprintln!("{}: {report:?}", db.backend);
        assert_eq!(report.resealed, values, "{report:?}");
        assert_eq!(report.reindexed, 0, "{report:?}");
        assert_eq!(report.batches, values.div_ceil(BATCH), "{report:?}");
        ensure!(report.can_retire_key(KeyId(1)), "key 1 kept: {report:?}");
        assert_eq!(report.rows_by_key, usage(&[(2, values)]));
        assert_eq!(
            report.index_rows_by_key.get("email_bidx"),
            Some(&usage(&[(1, values)]))
        );
        assert_eq!(
            migrate::key_usage(conn, table, "email_enc").await?,
            usage(&[(2, values)])
        );
        assert_eq!(
            migrate::index_key_usage(conn, table, "email_bidx").await?,
            usage(&[(1, values)])
        );

        let after = read_rows(conn, table).await?;
        assert_eq!(after.len(), before.len());
        check_rows::<DataEmail>(&after, &retired, &DATA_BIDX, KeyId(2))?;
        for (b, r) in before.iter().zip(&after) {
            ensure!(b.id == r.id, "row order differs: {} vs {}", b.id, r.id);
            ensure!(b.bidx == r.bidx, "row {}: index value changed", r.id);
            ensure!(
                b.enc.is_none() == r.enc.is_none() && (b.enc.is_none() || b.enc != r.enc),
                "row {}: envelope not resealed",
                r.id
            );
        }
        nothing_left::<DataEmail>(conn, table, &DATA_BIDX, &new).await?;
        Ok(())
    }
);

backend_tests!(
    /// Blind-index key 1 → 2, data key 1 unchanged, 1,000 rows in 16 batches: every index
    /// value is recomputed under version 2 and equals a fresh computation, every envelope is
    /// byte-identical to before, the report counts none resealed and every row reindexed,
    /// and blind-index key 1 can retire.
    index_key_rotated_data_key_unchanged,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let table = "rot1_index";
        create_table(conn, table, &INDEX_BIDX).await?;
        let (k1, b1, b2) = (generate_key(), generate_key(), generate_key());
        let old = ring((1, &k1), (1, &b1))?;
        let mut new = ring((1, &k1), (1, &b1))?;
        new.add_blind_index_key(KeyId(2), *b2)?;
        new.promote_blind_index_key(KeyId(2))?;
        let retired = ring((1, &k1), (2, &b2))?;
        seed::<IndexEmail>(conn, table, &INDEX_BIDX, ROWS, |_| &old, |_| false).await?;
        let before = read_rows(conn, table).await?;
        let values = values_in(ROWS);

        let new = Arc::new(new);
        let report = rotate::<IndexEmail>(conn, table, &INDEX_BIDX, &new, BATCH).await?;
        eprintln!("{}: {report:?}", db.backend);
        assert_eq!(report.resealed, 0, "{report:?}");
        assert_eq!(report.reindexed, values, "{report:?}");
        assert_eq!(report.batches, values.div_ceil(BATCH), "{report:?}");
        ensure!(
            report.can_retire_blind_index_key(KeyId(1)),
            "blind-index key 1 kept: {report:?}"
        );
        ensure!(!report.can_retire_key(KeyId(1)), "key 1 still seals every row");
        assert_eq!(report.rows_by_key, usage(&[(1, values)]));
        assert_eq!(
            report.index_rows_by_key.get("email_bidx"),
            Some(&usage(&[(2, values)]))
        );
        assert_eq!(
            migrate::key_usage(conn, table, "email_enc").await?,
            usage(&[(1, values)])
        );
        assert_eq!(
            migrate::index_key_usage(conn, table, "email_bidx").await?,
            usage(&[(2, values)])
        );

        let after = read_rows(conn, table).await?;
        assert_eq!(after.len(), before.len());
        check_rows::<IndexEmail>(&after, &retired, &INDEX_BIDX, KeyId(1))?;
        for (b, r) in before.iter().zip(&after) {
            ensure!(b.id == r.id, "row order differs: {} vs {}", b.id, r.id);
            ensure!(b.enc == r.enc, "row {}: envelope changed", r.id);
            match (&b.bidx, &r.bidx) {
                (None, None) => {}
                (Some(old), Some(new)) => {
                    ensure!(old != new, "row {}: index value not recomputed", r.id);
                    ensure!(new[0] == 2, "row {}: index version {}", r.id, new[0]);
                }
                _ => return Err(format!("row {}: index NULL-ness changed", r.id).into()),
            }
        }
        nothing_left::<IndexEmail>(conn, table, &INDEX_BIDX, &new).await?;
        Ok(())
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
        let table = "rot1_mixed";
        create_table(conn, table, &MIXED_BIDX).await?;
        let (k1, k2, b1, b2) = (
            generate_key(),
            generate_key(),
            generate_key(),
            generate_key(),
        );
        // Seal with the key each row should (not) need to leave.
        let rings = [
            ring((2, &k2), (2, &b2))?, // neither
            ring((2, &k2), (1, &b1))?, // reindex only
            ring((1, &k1), (2, &b2))?, // reseal only
            ring((1, &k1), (1, &b1))?, // both
        ];
        let ring_for = |id: i32| {
            let (reseal, reindex) = mixed_needs(id);
            &rings[usize::from(reseal) * 2 + usize::from(reindex)]
        };
        let null_index = |id: i32| id > 400 && id % 7 == 0;
        seed::<MixedEmail>(conn, table, &MIXED_BIDX, MIXED_ROWS, ring_for, null_index).await?;
        let before = read_rows(conn, table).await?;

        let mut new = ring((1, &k1), (1, &b1))?;
        new.add_key(KeyId(2), *k2)?;
        new.promote(KeyId(2))?;
        new.add_blind_index_key(KeyId(2), *b2)?;
        new.promote_blind_index_key(KeyId(2))?;
        let retired = ring((2, &k2), (2, &b2))?;

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

        let new = Arc::new(new);
        let report = rotate::<MixedEmail>(conn, table, &MIXED_BIDX, &new, MIXED_BATCH).await?;
        eprintln!("{}: {report:?}", db.backend);
        assert_eq!(report.resealed, reseal, "{report:?}");
        assert_eq!(report.reindexed, reindex, "{report:?}");
        assert_eq!(report.batches, stale.div_ceil(MIXED_BATCH), "{report:?}");
        ensure!(
            report.can_retire_key(KeyId(1)) && report.can_retire_blind_index_key(KeyId(1)),
            "the report keeps key 1: {report:?}"
        );
        assert_eq!(report.rows_by_key, usage(&[(2, values)]));
        assert_eq!(
            report.index_rows_by_key.get("email_bidx"),
            Some(&usage(&[(2, values)]))
        );

        let after = read_rows(conn, table).await?;
        assert_eq!(after.len(), before.len());
        check_rows::<MixedEmail>(&after, &retired, &MIXED_BIDX, KeyId(2))?;
        for (b, r) in before.iter().zip(&after) {
            ensure!(b.id == r.id, "row order differs: {} vs {}", b.id, r.id);
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
        nothing_left::<MixedEmail>(conn, table, &MIXED_BIDX, &new).await?;
        Ok(())
    }
);
