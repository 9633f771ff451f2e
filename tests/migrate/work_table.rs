//! The work table of the child processes: `id`, then `email` (blind index `email_bidx`),
//! `phone` and `notes`, each with its envelope `<column>_enc`, migrated as one plan (what
//! `migrate_child --table <table>` runs). Seeding, starting, phases, rows read back and the
//! independent check.

use std::sync::Arc;

use encrypted_columns::migrate::{self, EncryptTable, Phase, RunOptions, VerifyReport, state};
use encrypted_columns::schema::blind_index_column_type;
use encrypted_columns::{ColumnContext, Encrypted, Keyring, keyring};
use encrypted_columns_tests::TestResult;
use sea_orm::sea_query::{ColumnDef, Order, Query, Table};
use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::email_table::index_of;
use crate::plans::{WORK_BIDX, WorkEmail, WorkNotes, WorkPhone, work_plan};
use crate::support::{Res, a, batches, no_problems, phases_of};

/// The plaintext columns, in plan order.
pub const COLUMNS: [&str; 3] = ["email", "phone", "notes"];

/// The plan `migrate_child --table <table>` runs (all three columns).
pub fn plan(table: &str) -> EncryptTable {
    work_plan(table, COLUMNS.len())
}

/// `CREATE TABLE table (id int primary key, email varchar(320), email_enc blob,
/// email_bidx binary(n), phone varchar(64), phone_enc blob, notes varchar(1000), notes_enc
/// blob)`.
async fn create_table(conn: &DatabaseConnection, table: &str) -> TestResult {
    let mut create = Table::create();
    create
        .table(a(table))
        .col(ColumnDef::new(a("id")).integer().not_null().primary_key());
    for (column, len) in COLUMNS.into_iter().zip([320, 64, 1000]) {
        create
            .col(ColumnDef::new(a(column)).string_len(len).null())
            .col(ColumnDef::new(a(&format!("{column}_enc"))).blob().null());
        if column == "email" {
            let bidx = blind_index_column_type(&WORK_BIDX);
            create.col(ColumnDef::new_with_type(a("email_bidx"), bidx).null());
        }
    }
    conn.execute(&create).await?;
    Ok(())
}

/// The seeded plaintext of column `col` of row `id`; NULL for every 97th e-mail, 13th phone
/// and 7th note (so row 8827 and its multiples have no value at all).
pub fn seed_value(col: usize, id: i32) -> Option<String> {
    match col {
        0 => (id % 97 != 0).then(|| format!("p{id:06}@Example.org")),
        1 => (id % 13 != 0).then(|| format!("+1-555-{id:07}")),
        _ => (id % 7 != 0).then(|| {
            format!(
                "Notiz {id}: Blutdruck unauffällig, Kontrolle in {} Wochen",
                id % 9
            )
        }),
    }
}

/// Non-NULL seeded values of rows `lo..=hi`.
pub fn seeded_values(lo: i64, hi: i64) -> u64 {
    let mut n = 0;
    for id in lo..=hi {
        n += (0..COLUMNS.len())
            .filter(|&c| seed_value(c, id as i32).is_some())
            .count() as u64;
    }
    n
}

/// Inserts rows `1..=rows` with seeded plaintexts and no envelopes.
async fn seed_rows(conn: &DatabaseConnection, table: &str, rows: i32) -> TestResult {
    for chunk in (1..=rows).collect::<Vec<_>>().chunks(500) {
        let mut insert = Query::insert();
        insert
            .into_table(a(table))
            .columns([a("id"), a("email"), a("phone"), a("notes")]);
        for &id in chunk {
            insert.values_panic([
                id.into(),
                seed_value(0, id).into(),
                seed_value(1, id).into(),
                seed_value(2, id).into(),
            ]);
        }
        conn.execute(&insert).await?;
    }
    Ok(())
}

/// Records the migration of every column (`added`) and moves them to `dual_write`.
async fn start(conn: &DatabaseConnection, table: &str) -> TestResult {
    for column in COLUMNS {
        state::start(conn, table, column).await?;
    }
    let moved = migrate::dual_write(conn, &plan(table)).await?;
    ensure!(moved.len() == COLUMNS.len(), "dual_write moved {moved:?}");
    Ok(())
}

/// A work table `table` of `rows` seeded rows, every column in `dual_write`.
pub async fn started(conn: &DatabaseConnection, table: &str, rows: i32) -> TestResult {
    create_table(conn, table).await?;
    seed_rows(conn, table, rows).await?;
    start(conn, table).await
}

/// The phases of the three columns, in plan order.
pub async fn phases(conn: &impl ConnectionTrait, table: &str) -> Res<Vec<Phase>> {
    phases_of(conn, table, &COLUMNS).await
}

/// Sum of `rows_done` over the columns.
pub async fn rows_done(conn: &impl ConnectionTrait, table: &str) -> Res<i64> {
    let mut sum = 0;
    for column in COLUMNS {
        sum += state::load(conn, table, column)
            .await?
            .ok_or("no migration state")?
            .rows_done;
    }
    Ok(sum)
}

/// One row as stored (`plain` all `None` when the plaintext columns are gone).
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i32,
    pub plain: [Option<String>; 3],
    pub enc: [Option<Vec<u8>>; 3],
    pub bidx: Option<Vec<u8>>,
}

pub async fn read_rows(conn: &impl ConnectionTrait, table: &str, plaintext: bool) -> Res<Vec<Row>> {
    let mut select = Query::select();
    select.column(a("id"));
    if plaintext {
        select.columns(COLUMNS.map(a));
    }
    select
        .columns([
            a("email_enc"),
            a("phone_enc"),
            a("notes_enc"),
            a("email_bidx"),
        ])
        .from(a(table))
        .order_by(a("id"), Order::Asc);
    let mut rows = Vec::new();
    for row in conn.query_all(&select).await? {
        let mut plain = [None, None, None];
        if plaintext {
            for (slot, column) in plain.iter_mut().zip(COLUMNS) {
                *slot = row.try_get("", column)?;
            }
        }
        rows.push(Row {
            id: row.try_get("", "id")?,
            plain,
            enc: [
                row.try_get("", "email_enc")?,
                row.try_get("", "phone_enc")?,
                row.try_get("", "notes_enc")?,
            ],
            bidx: row.try_get("", "email_bidx")?,
        });
    }
    Ok(rows)
}

fn open_as<C: ColumnContext>(ring: &Keyring, envelope: &[u8]) -> Option<String> {
    Encrypted::<String, C>::from_envelope_with(ring, envelope.to_vec())
        .ok()
        .map(|e| e.expose().clone())
}

/// Opens the envelope of column `col` (`None` if it does not open).
pub fn open(col: usize, ring: &Keyring, envelope: &[u8]) -> Option<String> {
    match col {
        0 => open_as::<WorkEmail>(ring, envelope),
        1 => open_as::<WorkPhone>(ring, envelope),
        _ => open_as::<WorkNotes>(ring, envelope),
    }
}

/// The independent check: every envelope opens with `ring` to exactly `expected(row, col)`,
/// NULL stays NULL, and the e-mail blind index is its recomputation. Returns the number of
/// values (non-NULL cells).
pub fn check_rows(
    rows: &[Row],
    ring: &Keyring,
    expected: impl Fn(&Row, usize) -> Option<String>,
) -> Res<u64> {
    let mut bad = Vec::new();
    let mut values = 0;
    for row in rows {
        for (col, name) in COLUMNS.iter().enumerate() {
            let want = expected(row, col);
            let problem = match (&want, &row.enc[col]) {
                (None, None) => None,
                (None, Some(_)) => Some("envelope without plaintext"),
                (Some(_), None) => Some("no envelope"),
                (Some(want), Some(enc)) => {
                    values += 1;
                    match open(col, ring, enc) {
                        Some(v) if &v == want => None,
                        Some(_) => Some("envelope opens to another value"),
                        None => Some("envelope does not open"),
                    }
                }
            };
            if let Some(problem) = problem {
                bad.push(format!("row {} {name}: {problem}", row.id));
            }
        }
        if index_of(&WORK_BIDX, ring, &expected(row, 0))? != row.bidx {
            bad.push(format!("row {}: blind index differs", row.id));
        }
    }
    no_problems(&bad, "value", 6)?;
    Ok(values)
}

/// Backfills `plan` in batches of 500 to the end and verifies it (under the keyring in
/// force): the backfill finishes with nothing left, verify passes.
pub async fn backfill_and_verify(conn: &DatabaseConnection, plan: &EncryptTable) -> TestResult {
    let options = batches(500);
    let b = migrate::backfill(conn, plan, &options, |_| {}).await?;
    ensure!(b.finished && b.remaining == 0, "backfill: {b:?}");
    let v = migrate::verify(conn, plan, &options).await?;
    ensure!(v.passed(), "verify: {v:?}");
    Ok(())
}

/// Verifies `table` under `ring` (the children's keyring) — it must pass — then checks every
/// row independently against `expected(row, column)`: verify's report and the number of
/// values that open.
pub async fn verify_and_check(
    conn: &DatabaseConnection,
    table: &str,
    ring: &Arc<Keyring>,
    expected: impl Fn(&Row, usize) -> Option<String>,
) -> Res<(VerifyReport, u64)> {
    let verified = keyring::scope(Arc::clone(ring), async {
        migrate::verify(conn, &plan(table), &RunOptions::default()).await
    })
    .await?;
    ensure!(verified.passed(), "verify failed: {verified:?}");
    let rows = read_rows(conn, table, true).await?;
    let values = check_rows(&rows, ring, expected)?;
    Ok((verified, values))
}
