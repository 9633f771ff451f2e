//! The one-column tables: an integer `id`, a plaintext `email` (unless noted), its envelope
//! `email_enc` and a blind index `email_bidx` over it. Seeding, the application's writes,
//! reading rows back, and the independent check of envelopes and indexes.

use std::collections::BTreeMap;

use encrypted_columns::blind_index::{BlindIndex, IndexInput};
use encrypted_columns::keyring;
use encrypted_columns::migrate::dual::{DualWrite, ReadPolicy};
use encrypted_columns::migrate::{EncryptColumn, MigrationState, state};
use encrypted_columns::schema::blind_index_column_type;
use encrypted_columns::{ColumnContext, Encrypted, KeyId, Keyring};
use encrypted_columns_tests::TestResult;
use sea_orm::sea_query::{ColumnDef, Expr, ExprTrait, Order, Query, Table, UpdateStatement};
use sea_orm::{ConnectionTrait, DatabaseConnection, Value};

use crate::support::{Res, a, count_where, no_problems};

/// `CREATE TABLE table (id int primary key, [email varchar(320),] email_enc blob,
/// email_bidx binary(n))`, the index column typed for `index`.
pub async fn create_table(
    conn: &DatabaseConnection,
    table: &str,
    plaintext: bool,
    index: &BlindIndex,
) -> TestResult {
    let mut create = Table::create();
    create
        .table(a(table))
        .col(ColumnDef::new(a("id")).integer().not_null().primary_key());
    if plaintext {
        create.col(ColumnDef::new(a("email")).string_len(320).null());
    }
    create
        .col(ColumnDef::new(a("email_enc")).blob().null())
        .col(ColumnDef::new_with_type(a("email_bidx"), blind_index_column_type(index)).null());
    conn.execute(&create.to_owned()).await?;
    Ok(())
}

/// The seeded plaintext of row `id`: ~20 bytes, NULL for every 97th row.
pub fn seed_email(id: i32) -> Option<String> {
    (id % 97 != 0).then(|| format!("p{id:06}@example.org"))
}

/// `id → seed_email(id)` for rows `1..=rows`.
pub fn seeded_emails(rows: i32) -> BTreeMap<i32, Option<String>> {
    (1..=rows).map(|id| (id, seed_email(id))).collect()
}

/// Inserts rows `1..=rows` with [`seed_email`] plaintexts and no envelopes.
pub async fn seed_plaintext(conn: &DatabaseConnection, table: &str, rows: i32) -> TestResult {
    for chunk in (1..=rows).collect::<Vec<_>>().chunks(500) {
        let mut insert = Query::insert();
        insert.into_table(a(table)).columns([a("id"), a("email")]);
        for &id in chunk {
            insert.values_panic([id.into(), seed_email(id).into()]);
        }
        conn.execute(&insert).await?;
    }
    Ok(())
}

/// A plaintext table of `rows` seeded rows ([`create_table`], [`seed_plaintext`]) whose
/// `email` migration is started (phase `added`), and the plan of that column
/// ([`email_spec`]).
pub async fn started_table<C: ColumnContext>(
    conn: &DatabaseConnection,
    table: &str,
    rows: i32,
    index: &'static BlindIndex,
) -> Res<EncryptColumn<String, C>> {
    create_table(conn, table, true, index).await?;
    seed_plaintext(conn, table, rows).await?;
    state::start(conn, table, "email").await?;
    Ok(email_spec(table, index))
}

/// `table.email` → `email_enc`, with `index` in `email_bidx`.
pub fn email_spec<C: ColumnContext>(
    table: &str,
    index: &'static BlindIndex,
) -> EncryptColumn<String, C> {
    EncryptColumn::new(table, "id", "email", "email_enc").with_index("email_bidx", index)
}

/// Inserts rows `1..=rows` without plaintext, row `id` holding `value(id)` sealed and indexed
/// with `ring_for(id)` (NULL envelope and index where the value is NULL); `drop_index(id)`
/// stores a NULL index instead.
pub async fn seed_sealed<'r, C: ColumnContext>(
    conn: &DatabaseConnection,
    table: &str,
    index: &BlindIndex,
    rows: i32,
    value: fn(i32) -> Option<String>,
    ring_for: impl Fn(i32) -> &'r Keyring,
    drop_index: impl Fn(i32) -> bool,
) -> TestResult {
    for chunk in (1..=rows).collect::<Vec<_>>().chunks(500) {
        let mut insert = Query::insert();
        insert
            .into_table(a(table))
            .columns([a("id"), a("email_enc"), a("email_bidx")]);
        for &id in chunk {
            let ring = ring_for(id);
            let value = value(id);
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
pub struct Row {
    pub id: i32,
    pub email: Option<String>,
    pub enc: Option<Vec<u8>>,
    pub bidx: Option<Vec<u8>>,
}

/// Every row of `table`, by id (`email` is `None` where the table has no such column).
pub async fn read_rows(conn: &impl ConnectionTrait, table: &str, plaintext: bool) -> Res<Vec<Row>> {
    let mut select = Query::select();
    select.column(a("id"));
    if plaintext {
        select.column(a("email"));
    }
    select
        .columns([a("email_enc"), a("email_bidx")])
        .from(a(table))
        .order_by(a("id"), Order::Asc);
    let mut rows = Vec::new();
    for row in conn.query_all(&select).await? {
        rows.push(Row {
            id: row.try_get("", "id")?,
            email: if plaintext {
                row.try_get("", "email")?
            } else {
                None
            },
            enc: row.try_get("", "email_enc")?,
            bidx: row.try_get("", "email_bidx")?,
        });
    }
    Ok(rows)
}

/// The blind-index value of `email` under the keyring's active blind-index key.
pub fn index_of(
    index: &BlindIndex,
    ring: &Keyring,
    email: &Option<String>,
) -> Res<Option<Vec<u8>>> {
    Ok(match email {
        Some(e) => index.compute(ring, &[Some(IndexInput::Text(e))])?,
        None => None,
    })
}

/// The independent check: each row's envelope opens (with `ring`) to exactly `expected(row)`
/// and its blind index is the recomputation under `ring`'s active blind-index key; NULL
/// plaintext has NULL envelope and index. Returns how many rows held a value.
pub fn check_rows<C: ColumnContext>(
    rows: &[Row],
    ring: &Keyring,
    index: &BlindIndex,
    expected: impl Fn(&Row) -> Option<String>,
) -> Res<usize> {
    check_rows_under::<C>(rows, ring, index, None, expected)
}

/// [`check_rows`], and every envelope is sealed under data key `key`.
pub fn check_rows_sealed_with<C: ColumnContext>(
    rows: &[Row],
    ring: &Keyring,
    index: &BlindIndex,
    key: KeyId,
    expected: impl Fn(&Row) -> Option<String>,
) -> Res<usize> {
    check_rows_under::<C>(rows, ring, index, Some(key), expected)
}

fn check_rows_under<C: ColumnContext>(
    rows: &[Row],
    ring: &Keyring,
    index: &BlindIndex,
    key: Option<KeyId>,
    expected: impl Fn(&Row) -> Option<String>,
) -> Res<usize> {
    let mut bad: Vec<String> = Vec::new();
    let mut values = 0;
    for row in rows {
        let want = expected(row);
        let problem = match (&want, &row.enc) {
            (None, None) => None,
            (None, Some(_)) => Some("envelope without plaintext".to_owned()),
            (Some(_), None) => Some("no envelope".to_owned()),
            (Some(want), Some(enc)) => {
                values += 1;
                match Encrypted::<String, C>::from_envelope_with(ring, enc.clone()) {
                    Ok(opened) if key.is_some_and(|k| opened.key_id() != k) => {
                        Some(format!("sealed with key {}", opened.key_id()))
                    }
                    Ok(opened) if opened.expose() == want => None,
                    Ok(_) => Some("envelope opens to another value".to_owned()),
                    Err(err) => Some(format!("envelope does not open: {err}")),
                }
            }
        };
        let problem = problem.or_else(|| match index_of(index, ring, &want) {
            Ok(fresh) if fresh == row.bidx => None,
            Ok(_) => Some("blind index differs from a fresh computation".to_owned()),
            Err(err) => Some(format!("computing the index: {err}")),
        });
        if let Some(problem) = problem {
            bad.push(format!("row {}: {problem}", row.id));
        }
    }
    no_problems(&bad, "row", 5)?;
    Ok(values)
}

/// [`check_rows`] over the whole of `table` with `ring`: it holds exactly as many rows as
/// `expected`, and row `id` holds `expected[id]`.
pub async fn check_table<C: ColumnContext>(
    conn: &impl ConnectionTrait,
    (table, index): (&str, &BlindIndex),
    ring: &Keyring,
    expected: &BTreeMap<i32, Option<String>>,
) -> TestResult {
    let rows = read_rows(conn, table, false).await?;
    assert_eq!(rows.len(), expected.len());
    check_rows::<C>(&rows, ring, index, |r| {
        expected.get(&r.id).cloned().flatten()
    })?;
    Ok(())
}

/// The UPDATE of row `id` that stores `write` ([`ReadPolicy::write`]'s plaintext and
/// envelope) in `email` and `email_enc`.
pub fn write_update<C: ColumnContext>(
    table: &str,
    id: i32,
    write: DualWrite<String, C>,
) -> UpdateStatement {
    Query::update()
        .table(a(table))
        .value(a("email"), write.plaintext)
        .value(
            a("email_enc"),
            Value::Bytes(write.encrypted.map(|e| e.envelope().to_vec())),
        )
        .and_where(Expr::col(a("id")).eq(id))
        .to_owned()
}

/// The application's write of `value` to row `id` under `policy`, with the keyring in force:
/// plaintext (unless `policy` is past cut-over), envelope and blind index together in one
/// UPDATE. Under [`ReadPolicy::EncryptedFirst`], a dual write as the application does it in
/// phase `dual_write`.
pub async fn policy_write<C: ColumnContext>(
    conn: &impl ConnectionTrait,
    table: &str,
    index: &BlindIndex,
    policy: ReadPolicy,
    id: i32,
    value: Option<String>,
) -> Res<()> {
    let ring = keyring::current()?;
    let bidx = index_of(index, &ring, &value)?;
    let mut update = write_update(table, id, policy.write::<String, C>(value)?);
    update.value(a("email_bidx"), Value::Bytes(bidx));
    conn.execute(&update).await?;
    Ok(())
}

/// A dual write ([`policy_write`] under [`ReadPolicy::EncryptedFirst`]).
pub async fn dual_write<C: ColumnContext>(
    conn: &impl ConnectionTrait,
    table: &str,
    index: &BlindIndex,
    id: i32,
    value: Option<String>,
) -> Res<()> {
    policy_write::<C>(conn, table, index, ReadPolicy::EncryptedFirst, id, value).await
}

/// Every row of `table`, by id, with the value its envelope column `enc` opens to (under
/// the keyring in force); `None` where the envelope is NULL.
pub async fn opened_values<C: ColumnContext>(
    conn: &impl ConnectionTrait,
    table: &str,
    enc: &str,
) -> Res<BTreeMap<i32, Option<String>>> {
    let ring = keyring::current()?;
    let select = Query::select()
        .columns([a("id"), a(enc)])
        .from(a(table))
        .to_owned();
    let mut out = BTreeMap::new();
    for row in conn.query_all(&select).await? {
        let id: i32 = row.try_get("", "id")?;
        let envelope: Option<Vec<u8>> = row.try_get("", enc)?;
        let value = envelope
            .map(|e| {
                Encrypted::<String, C>::from_envelope_with(&ring, e)
                    .map(|v| v.expose().clone())
                    .map_err(|err| format!("{table}.{enc} of row {id} does not open: {err}"))
            })
            .transpose()?;
        out.insert(id, value);
    }
    Ok(out)
}

/// The independent end-of-migration check: `table` holds exactly the rows of `expected`, and
/// each row's envelope in `enc` opens to exactly `expected[id]` (NULL for `None`). Reports the
/// ids that differ (never the values).
pub async fn check_envelopes<C: ColumnContext>(
    conn: &impl ConnectionTrait,
    table: &str,
    enc: &str,
    expected: &BTreeMap<i32, Option<String>>,
) -> TestResult {
    let opened = opened_values::<C>(conn, table, enc).await?;
    let lost: Vec<i32> = expected
        .iter()
        .filter(|(id, want)| opened.get(id) != Some(want))
        .map(|(id, _)| *id)
        .collect();
    let extra: Vec<i32> = opened
        .keys()
        .filter(|id| !expected.contains_key(id))
        .copied()
        .collect();
    ensure!(
        lost.is_empty() && extra.is_empty(),
        "{table}.{enc}: {} value(s) lost or wrong (ids {:?}), {} unexpected row(s) {:?}",
        lost.len(),
        &lost[..lost.len().min(20)],
        extra.len(),
        &extra[..extra.len().min(20)]
    );
    Ok(())
}

/// Everything a refused step must leave alone: the state row, the log, every data row
/// (`email` included while the table has it).
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub state: Option<MigrationState>,
    pub log_rows: i64,
    pub rows: Vec<Row>,
}

pub async fn snapshot(conn: &impl ConnectionTrait, table: &str, plaintext: bool) -> Res<Snapshot> {
    Ok(Snapshot {
        state: state::load(conn, table, "email").await?,
        log_rows: count_where(conn, state::LOG_TABLE, []).await?,
        rows: read_rows(conn, table, plaintext).await?,
    })
}
