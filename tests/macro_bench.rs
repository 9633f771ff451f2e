//! What encryption costs an application: plaintext SeaORM next to encrypted columns (and,
//! on PostgreSQL, next to pgcrypto), on the workload of the reference documents.
//!
//! ```sh
//! TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//! TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test \
//! cargo bench -p encrypted-columns-tests --bench macro
//! ```
//!
//! SQLite (a temp file) always runs; PostgreSQL and MySQL/MariaDB run when their URL is set.
//! Each backend gets a fresh database (schema on PostgreSQL) through [`TestDb`], dropped at
//! the end, and one dedicated connection (a pool of exactly one) for every timed operation.
//!
//! # Workload
//! 10,000 patients, each with 8 PII fields of 50 bytes (names, e-mail, phone, address,
//! national id) and a 1 KiB medical history, through SeaORM:
//!
//! * `insert`: every row, in batches of 1,000 rows per `INSERT`, in one transaction. The
//!   timer covers building the `ActiveModel`s (clone of the plaintext, or sealing it and
//!   computing the e-mail blind index) and the commit.
//! * `select_all`: `Entity::find().all()`, until the models (decrypted) are in memory.
//! * `select_100`: 100 patients spread over the table by primary key, one `id IN (...)`
//!   query: the reference's "calendar view with 100 appointments". Timed on its second
//!   execution (the first, right after `select_all`, pays a one-off cost on both variants).
//! * `find_1000`: 1,000 single-row look-ups by e-mail, one query each: a unique index on the
//!   plaintext column, `find_one_by_email_bidx` (index value, query, decryption,
//!   false-positive check) on the encrypted one.
//!
//! Each operation runs `MACRO_BENCH_RUNS` times (default 7) on a freshly created table; the
//! plaintext and encrypted variants alternate within every run (and swap order between
//! runs), so machine noise hits both. The report gives medians and the encrypted/plaintext
//! ratio of the medians. One unmeasured warm-up run (at most 1,000 rows) comes first.
//!
//! # pgcrypto (PostgreSQL only)
//! The approach of one reference system: a `bytea` column per field, written with
//! `pgp_sym_encrypt($value, $passphrase, 'cipher-algo=aes256')` and read with
//! `pgp_sym_decrypt`, through SeaORM raw statements with bound values, same batches, one
//! transaction, same connection. pgcrypto has no searchable form, so there is no `find_1000`.
//!
//! # Storage
//! Bytes per row from the database's own accounting after the insert: PostgreSQL
//! `pg_table_size` (heap + TOAST) and `pg_total_relation_size` (+ indexes); MariaDB
//! `data_length` and `+ index_length` from `information_schema.tables` after `ANALYZE
//! TABLE`; SQLite the `dbstat` virtual table (pages of the table, and of the table and its
//! indexes), or, when `dbstat` is not compiled in, `sum(length(col))` of the values.
//!
//! # Output
//! A table per backend on stdout, `bench-results/macro.json` and a chart
//! `bench-results/macro.png` at the workspace root (text drawn with a TrueType font from
//! `/usr/share/fonts`, or `MACRO_BENCH_FONT`; without one the chart is skipped).
//!
//! # Quick mode
//! `MACRO_BENCH_ROWS` (default 10000), `MACRO_BENCH_RUNS` (default 7),
//! `MACRO_BENCH_PGCRYPTO_RUNS` (default 5, at most the runs), `MACRO_BENCH_LOOKUPS` (default
//! 1000), `MACRO_BENCH_BACKENDS` (e.g. `sqlite,postgres`). Other row or look-up counts, or
//! fewer than 5 runs, write their results to the temp directory instead of `bench-results/`,
//! unless `MACRO_BENCH_OUT` names a directory. Without `--bench` (e.g. `cargo test --benches`) the binary does
//! nothing.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use encrypted_columns::EncryptedString;
use encrypted_columns_tests::backend::with_database;
use encrypted_columns_tests::{Backend, TestDb, init_keyring};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    EntityTrait, QueryFilter, Schema, Statement, TransactionTrait, Value,
};
use serde_json::json;

type BoxResult<T> = Result<T, Box<dyn Error>>;

const DEFAULT_ROWS: usize = 10_000;
const DEFAULT_RUNS: usize = 7;
/// Fewer runs than this (the issue's minimum for a median) is a quick run.
const MIN_RUNS: usize = 5;
/// pgcrypto takes about 50 s a run at 10,000 rows: five runs are enough for its median.
const DEFAULT_PGCRYPTO_RUNS: usize = 5;
const DEFAULT_LOOKUPS: usize = 1_000;
/// Patients in the "calendar view".
const BY_ID: usize = 100;
/// Rows per `INSERT`: 10 bound values each (9 + key for pgcrypto), under every backend's
/// placeholder limit.
const BATCH: usize = 1_000;
/// Bytes of each PII field.
const FIELD_LEN: usize = 50;
/// Bytes of the medical history.
const HISTORY_LEN: usize = 1024;
/// Rows of the unmeasured warm-up run.
const WARM_UP_ROWS: usize = 1_000;

const PLAIN_TABLE: &str = "bench_plain_patients";
const ENC_TABLE: &str = "bench_enc_patients";
const PGCRYPTO_TABLE: &str = "bench_pgcrypto_patients";
const FIELDS: [&str; 9] = [
    "first_name",
    "last_name",
    "email",
    "phone",
    "street",
    "city",
    "postcode",
    "national_id",
    "medical_history",
];

/// The plaintext baseline: the same fields as `String`s, the e-mail with a unique index.
mod plain {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "bench_plain_patients")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub first_name: String,
        pub last_name: String,
        #[sea_orm(unique)]
        pub email: String,
        pub phone: String,
        pub street: String,
        pub city: String,
        pub postcode: String,
        pub national_id: String,
        #[sea_orm(column_type = "Text")]
        pub medical_history: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Every field encrypted; the e-mail also gets a unique full-width blind index.
mod enc {
    use encrypted_columns::{DeriveEncrypted, EncryptedString};
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
    #[sea_orm(table_name = "bench_enc_patients")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub first_name: EncryptedString<ctx::FirstName>,
        pub last_name: EncryptedString<ctx::LastName>,
        #[encrypted(blind_index(name = "email_bidx", normalize = "email", unique))]
        pub email: EncryptedString<ctx::Email>,
        /// `binary(33)`: one version byte and 256 bits (a MySQL BLOB cannot be UNIQUE).
        #[sea_orm(column_type = "Binary(33)", unique)]
        pub email_bidx: Vec<u8>,
        pub phone: EncryptedString<ctx::Phone>,
        pub street: EncryptedString<ctx::Street>,
        pub city: EncryptedString<ctx::City>,
        pub postcode: EncryptedString<ctx::Postcode>,
        pub national_id: EncryptedString<ctx::NationalId>,
        pub medical_history: EncryptedString<ctx::MedicalHistory>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

// --- Workload data ---------------------------------------------------------------------------

/// One patient's plaintext: 8 fields of exactly [`FIELD_LEN`] bytes and a history of
/// [`HISTORY_LEN`] bytes, all ASCII, varied by `n`.
#[derive(Clone, Debug, PartialEq)]
struct Person {
    first_name: String,
    last_name: String,
    email: String,
    phone: String,
    street: String,
    city: String,
    postcode: String,
    national_id: String,
    medical_history: String,
}

/// `prefix` padded to `len` bytes with letters that depend on `n`.
fn padded(prefix: String, n: usize, len: usize) -> String {
    let mut s = prefix;
    let mut i = n;
    while s.len() < len {
        s.push(char::from(b'a' + (i % 26) as u8));
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    s.truncate(len);
    s
}

impl Person {
    fn sample(n: usize) -> Person {
        const DOMAIN: &str = "@clinics.example.org";
        let local = padded(format!("patient{n:06}."), n, FIELD_LEN - DOMAIN.len());
        let words = [
            "Presented with",
            "intermittent",
            "chest pain;",
            "ECG normal.",
            "Allergic to",
            "penicillin.",
            "Type 2 diabetes,",
            "metformin 500 mg",
            "twice daily.",
            "Follow-up",
            "in six weeks;",
            "HbA1c 7.1%.",
            "Family history",
            "of hypertension.",
        ];
        let mut history = format!("Visit {n}: ");
        let mut i = n;
        while history.len() < HISTORY_LEN {
            history.push_str(words[i % words.len()]);
            history.push(' ');
            i = i.wrapping_mul(7).wrapping_add(3);
        }
        history.truncate(HISTORY_LEN);
        Person {
            first_name: padded(format!("Ada{n} "), n, FIELD_LEN),
            last_name: padded(format!("Lovelace-{n} "), n + 1, FIELD_LEN),
            email: format!("{local}{DOMAIN}"),
            phone: padded(
                format!("+44 20 7946 {:04} ext ", n % 10_000),
                n + 2,
                FIELD_LEN,
            ),
            street: padded(
                format!("{} Harley Street, flat ", n % 500 + 1),
                n + 3,
                FIELD_LEN,
            ),
            city: padded(format!("London district {} ", n % 33), n + 4, FIELD_LEN),
            postcode: padded(format!("W1G {}AB ", n % 10), n + 5, FIELD_LEN),
            national_id: padded(format!("NHS {:010} ", n * 7_919), n + 6, FIELD_LEN),
            medical_history: history,
        }
    }

    fn fields(&self) -> [&str; 9] {
        [
            &self.first_name,
            &self.last_name,
            &self.email,
            &self.phone,
            &self.street,
            &self.city,
            &self.postcode,
            &self.national_id,
            &self.medical_history,
        ]
    }

    fn of_plain(m: &plain::Model) -> Person {
        Person {
            first_name: m.first_name.clone(),
            last_name: m.last_name.clone(),
            email: m.email.clone(),
            phone: m.phone.clone(),
            street: m.street.clone(),
            city: m.city.clone(),
            postcode: m.postcode.clone(),
            national_id: m.national_id.clone(),
            medical_history: m.medical_history.clone(),
        }
    }

    fn of_enc(m: &enc::Model) -> Person {
        Person {
            first_name: m.first_name.expose().clone(),
            last_name: m.last_name.expose().clone(),
            email: m.email.expose().clone(),
            phone: m.phone.expose().clone(),
            street: m.street.expose().clone(),
            city: m.city.expose().clone(),
            postcode: m.postcode.expose().clone(),
            national_id: m.national_id.expose().clone(),
            medical_history: m.medical_history.expose().clone(),
        }
    }
}

// --- Configuration ---------------------------------------------------------------------------

struct Config {
    rows: usize,
    runs: usize,
    pgcrypto_runs: usize,
    lookups: usize,
    backends: Vec<Backend>,
    out_dir: PathBuf,
    quick: bool,
}

fn env_usize(name: &str, default: usize) -> BoxResult<usize> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a whole number").into()),
        _ => Ok(default),
    }
}

impl Config {
    fn from_env() -> BoxResult<Config> {
        let rows = env_usize("MACRO_BENCH_ROWS", DEFAULT_ROWS)?.max(BY_ID);
        let runs = env_usize("MACRO_BENCH_RUNS", DEFAULT_RUNS)?.max(1);
        let pgcrypto_runs =
            env_usize("MACRO_BENCH_PGCRYPTO_RUNS", DEFAULT_PGCRYPTO_RUNS)?.min(runs);
        let lookups = env_usize("MACRO_BENCH_LOOKUPS", DEFAULT_LOOKUPS)?.clamp(1, rows);
        let backends = match std::env::var("MACRO_BENCH_BACKENDS") {
            Ok(list) if !list.trim().is_empty() => list
                .split(',')
                .map(|b| match b.trim() {
                    "sqlite" => Ok(Backend::Sqlite),
                    "postgres" => Ok(Backend::Postgres),
                    "mysql" | "mariadb" => Ok(Backend::MySql),
                    other => Err(format!("MACRO_BENCH_BACKENDS: unknown backend {other:?}")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => vec![Backend::Sqlite, Backend::Postgres, Backend::MySql],
        };
        let quick = rows != DEFAULT_ROWS
            || runs < MIN_RUNS
            || pgcrypto_runs < DEFAULT_PGCRYPTO_RUNS.min(runs)
            || lookups != DEFAULT_LOOKUPS;
        let out_dir = match std::env::var("MACRO_BENCH_OUT") {
            Ok(dir) if !dir.trim().is_empty() => PathBuf::from(dir),
            _ if quick => std::env::temp_dir().join("macro-bench-quick"),
            _ => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("bench-results"),
        };
        Ok(Config {
            rows,
            runs,
            pgcrypto_runs,
            lookups,
            backends,
            out_dir,
            quick,
        })
    }
}

// --- Measurements ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    Plain,
    Encrypted,
    Pgcrypto,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plaintext",
            Variant::Encrypted => "encrypted",
            Variant::Pgcrypto => "pgcrypto",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Variant::Plain => PLAIN_TABLE,
            Variant::Encrypted => ENC_TABLE,
            Variant::Pgcrypto => PGCRYPTO_TABLE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Insert,
    SelectAll,
    SelectById,
    FindByEmail,
}

const OPS: [Op; 4] = [Op::Insert, Op::SelectAll, Op::SelectById, Op::FindByEmail];

impl Op {
    fn key(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::SelectAll => "select_all",
            Op::SelectById => "select_100",
            Op::FindByEmail => "find_1000",
        }
    }

    fn label(self, config: &Config) -> String {
        match self {
            Op::Insert => format!("insert {} rows, 1 txn", config.rows),
            Op::SelectAll => format!("select all {} rows", config.rows),
            Op::SelectById => format!("select {BY_ID} by id"),
            Op::FindByEmail => format!("find {} by e-mail", config.lookups),
        }
    }

    /// The issue's target for encrypted ÷ plaintext, if it sets one.
    fn target(self) -> Option<f64> {
        match self {
            Op::Insert => Some(1.10),
            Op::SelectAll | Op::SelectById => Some(1.30),
            Op::FindByEmail => None,
        }
    }

    /// The issue's target for pgcrypto ÷ encrypted, if it sets one.
    fn pgcrypto_target(self) -> Option<f64> {
        match self {
            Op::Insert => Some(20.0),
            Op::SelectAll => Some(100.0),
            Op::SelectById | Op::FindByEmail => None,
        }
    }
}

/// Table size as the database accounts it, in bytes.
#[derive(Debug, Clone)]
struct Storage {
    /// Heap (+ TOAST) only.
    table: i64,
    /// Table and its indexes.
    total: i64,
    /// The stored values alone: `sum(length(col))` over the row's columns.
    values: i64,
    method: &'static str,
}

struct BackendReport {
    backend: Backend,
    version: String,
    /// Milliseconds per run.
    samples: BTreeMap<(Variant, Op), Vec<f64>>,
    storage: BTreeMap<Variant, Storage>,
}

impl BackendReport {
    fn median(&self, variant: Variant, op: Op) -> Option<f64> {
        self.samples.get(&(variant, op)).map(|s| median(s))
    }

    fn ratio(&self, num: Variant, den: Variant, op: Op) -> Option<f64> {
        Some(self.median(num, op)? / self.median(den, op)?)
    }
}

fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

// --- Per-variant workload --------------------------------------------------------------------

async fn create_table(conn: &DatabaseConnection, variant: Variant) -> BoxResult<()> {
    let backend = conn.get_database_backend();
    let schema = Schema::new(backend);
    match variant {
        Variant::Plain => {
            conn.execute(&schema.create_table_from_entity(plain::Entity))
                .await?;
        }
        Variant::Encrypted => {
            conn.execute(&schema.create_table_from_entity(enc::Entity))
                .await?;
        }
        Variant::Pgcrypto => {
            let columns: Vec<String> = FIELDS
                .iter()
                .map(|f| format!("{f} bytea NOT NULL"))
                .collect();
            conn.execute_unprepared(&format!(
                "CREATE TABLE {PGCRYPTO_TABLE} (id serial PRIMARY KEY, {})",
                columns.join(", ")
            ))
            .await?;
        }
    }
    Ok(())
}

async fn insert(
    conn: &DatabaseConnection,
    variant: Variant,
    data: &[Person],
    passphrase: &str,
) -> BoxResult<f64> {
    let started = Instant::now();
    let txn = conn.begin().await?;
    for chunk in data.chunks(BATCH) {
        match variant {
            Variant::Plain => {
                let rows = chunk.iter().map(|p| plain::ActiveModel {
                    first_name: Set(p.first_name.clone()),
                    last_name: Set(p.last_name.clone()),
                    email: Set(p.email.clone()),
                    phone: Set(p.phone.clone()),
                    street: Set(p.street.clone()),
                    city: Set(p.city.clone()),
                    postcode: Set(p.postcode.clone()),
                    national_id: Set(p.national_id.clone()),
                    medical_history: Set(p.medical_history.clone()),
                    ..Default::default()
                });
                plain::Entity::insert_many(rows)
                    .exec_without_returning(&txn)
                    .await?;
            }
            Variant::Encrypted => {
                let mut rows = Vec::with_capacity(chunk.len());
                for p in chunk {
                    let mut row = enc::ActiveModel {
                        first_name: Set(EncryptedString::new(p.first_name.clone())?),
                        last_name: Set(EncryptedString::new(p.last_name.clone())?),
                        email: Set(EncryptedString::new(p.email.clone())?),
                        phone: Set(EncryptedString::new(p.phone.clone())?),
                        street: Set(EncryptedString::new(p.street.clone())?),
                        city: Set(EncryptedString::new(p.city.clone())?),
                        postcode: Set(EncryptedString::new(p.postcode.clone())?),
                        national_id: Set(EncryptedString::new(p.national_id.clone())?),
                        medical_history: Set(EncryptedString::new(p.medical_history.clone())?),
                        ..Default::default()
                    };
                    row.fill_blind_indexes()?;
                    rows.push(row);
                }
                enc::Entity::insert_many(rows)
                    .exec_without_returning(&txn)
                    .await?;
            }
            Variant::Pgcrypto => {
                // $1 is the passphrase; each row's nine values follow.
                let mut sql = format!(
                    "INSERT INTO {PGCRYPTO_TABLE} ({}) VALUES ",
                    FIELDS.join(", ")
                );
                let mut values = Vec::with_capacity(1 + chunk.len() * FIELDS.len());
                values.push(Value::from(passphrase.to_owned()));
                for (r, p) in chunk.iter().enumerate() {
                    sql.push_str(if r == 0 { "(" } else { ", (" });
                    for (f, field) in p.fields().into_iter().enumerate() {
                        values.push(Value::from(field.to_owned()));
                        let _ = write!(
                            sql,
                            "{}{}.pgp_sym_encrypt(${}, $1, 'cipher-algo=aes256')",
                            if f == 0 { "" } else { ", " },
                            pgcrypto_schema(),
                            values.len()
                        );
                    }
                    sql.push(')');
                }
                txn.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    sql,
                    values,
                ))
                .await?;
            }
        }
    }
    txn.commit().await?;
    Ok(ms(started))
}

/// The quoted schema holding pgcrypto's functions (the bench's own schema is the only one
/// on its search path).
static PGCRYPTO_SCHEMA: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn pgcrypto_schema() -> &'static str {
    PGCRYPTO_SCHEMA.get().map_or("public", String::as_str)
}

fn pgcrypto_select(where_clause: &str) -> String {
    let columns: Vec<String> = FIELDS
        .iter()
        .map(|f| format!("{}.pgp_sym_decrypt({f}, $1) AS {f}", pgcrypto_schema()))
        .collect();
    format!(
        "SELECT id, {} FROM {PGCRYPTO_TABLE}{where_clause}",
        columns.join(", ")
    )
}

fn pgcrypto_row(row: &sea_orm::QueryResult) -> BoxResult<(i32, Person)> {
    let get = |col: &str| row.try_get::<String>("", col);
    Ok((
        row.try_get::<i32>("", "id")?,
        Person {
            first_name: get("first_name")?,
            last_name: get("last_name")?,
            email: get("email")?,
            phone: get("phone")?,
            street: get("street")?,
            city: get("city")?,
            postcode: get("postcode")?,
            national_id: get("national_id")?,
            medical_history: get("medical_history")?,
        },
    ))
}

/// The rows read back, as (id, plaintext), for checking after the timer stopped.
type ReadBack = Vec<(i32, Person)>;

async fn select_all(
    conn: &DatabaseConnection,
    variant: Variant,
    passphrase: &str,
) -> BoxResult<(f64, usize, ReadBack)> {
    let started = Instant::now();
    match variant {
        Variant::Plain => {
            let rows = plain::Entity::find().all(conn).await?;
            let t = ms(started);
            let sample = rows.iter().take(3).map(|m| (m.id, Person::of_plain(m)));
            Ok((t, rows.len(), sample.collect()))
        }
        Variant::Encrypted => {
            let rows = enc::Entity::find().all(conn).await?;
            let t = ms(started);
            let sample = rows.iter().take(3).map(|m| (m.id, Person::of_enc(m)));
            Ok((t, rows.len(), sample.collect()))
        }
        Variant::Pgcrypto => {
            let rows = conn
                .query_all_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    pgcrypto_select(""),
                    [Value::from(passphrase.to_owned())],
                ))
                .await?
                .iter()
                .map(pgcrypto_row)
                .collect::<BoxResult<Vec<_>>>()?;
            let t = ms(started);
            let n = rows.len();
            Ok((t, n, rows.into_iter().take(3).collect()))
        }
    }
}

async fn select_by_id(
    conn: &DatabaseConnection,
    variant: Variant,
    ids: &[i32],
    passphrase: &str,
) -> BoxResult<(f64, ReadBack)> {
    let started = Instant::now();
    let rows: ReadBack = match variant {
        Variant::Plain => {
            let rows = plain::Entity::find()
                .filter(plain::Column::Id.is_in(ids.iter().copied()))
                .all(conn)
                .await?;
            let t = ms(started);
            let rows = rows.iter().map(|m| (m.id, Person::of_plain(m))).collect();
            return Ok((t, rows));
        }
        Variant::Encrypted => {
            let rows = enc::Entity::find()
                .filter(enc::Column::Id.is_in(ids.iter().copied()))
                .all(conn)
                .await?;
            let t = ms(started);
            let rows = rows.iter().map(|m| (m.id, Person::of_enc(m))).collect();
            return Ok((t, rows));
        }
        Variant::Pgcrypto => {
            let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
            let mut values = vec![Value::from(passphrase.to_owned())];
            values.extend(ids.iter().map(|&id| Value::from(id)));
            conn.query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                pgcrypto_select(&format!(" WHERE id IN ({})", placeholders.join(", "))),
                values,
            ))
            .await?
            .iter()
            .map(pgcrypto_row)
            .collect::<BoxResult<Vec<_>>>()?
        }
    };
    Ok((ms(started), rows))
}

async fn find_by_email(
    conn: &DatabaseConnection,
    variant: Variant,
    data: &[Person],
    probes: &[usize],
) -> BoxResult<f64> {
    let started = Instant::now();
    for &i in probes {
        let email = data[i].email.as_str();
        let id = match variant {
            // `.all()`, not `.one()`: the generated `find_one_by_*` runs `.all()` too (then
            // drops false positives), and on sqlx-sqlite `.one()` costs one more hand-off to
            // the connection's worker thread (about 80 µs a look-up here), which would be
            // credited to encryption.
            Variant::Plain => plain::Entity::find()
                .filter(plain::Column::Email.eq(email))
                .all(conn)
                .await?
                .first()
                .map(|m| m.id),
            Variant::Encrypted => enc::Entity::find_one_by_email_bidx(conn, email)
                .await?
                .map(|m| m.id),
            Variant::Pgcrypto => return Err("pgcrypto has no e-mail look-up".into()),
        };
        if id != Some(i as i32 + 1) {
            return Err(
                format!("{}: look-up of row {} found {id:?}", variant.name(), i + 1).into(),
            );
        }
    }
    Ok(ms(started))
}

async fn storage(conn: &DatabaseConnection, table: &str) -> BoxResult<Storage> {
    let backend = conn.get_database_backend();
    let one = |sql: String| Statement::from_string(backend, sql);

    // What the rows hold, before any page, header or index overhead.
    let mut lengths: Vec<String> = FIELDS.iter().map(|f| format!("length({f})")).collect();
    if table == ENC_TABLE {
        lengths.push("length(email_bidx)".to_owned());
    }
    let sum = format!("coalesce(sum({}), 0)", lengths.join(" + "));
    let sum = match backend {
        DbBackend::Postgres => format!("({sum})::bigint"),
        DbBackend::MySql => format!("CAST({sum} AS SIGNED)"),
        _ => sum,
    };
    let values: i64 = conn
        .query_one_raw(one(format!("SELECT {sum} AS v FROM {table}")))
        .await?
        .ok_or("no length row")?
        .try_get("", "v")?;

    let (row, method) = match backend {
        DbBackend::Postgres => (
            conn.query_one_raw(one(format!(
                "SELECT pg_table_size('{table}')::bigint AS t, \
                 pg_total_relation_size('{table}')::bigint AS total"
            )))
            .await?,
            "pg_table_size (heap + TOAST) / pg_total_relation_size (+ indexes)",
        ),
        DbBackend::MySql => {
            conn.execute_unprepared(&format!("ANALYZE TABLE {table}"))
                .await?;
            (
                conn.query_one_raw(one(format!(
                    "SELECT CAST(data_length AS SIGNED) AS t, \
                     CAST(data_length + index_length AS SIGNED) AS total \
                     FROM information_schema.tables \
                     WHERE table_schema = DATABASE() AND table_name = '{table}'"
                )))
                .await?,
                "information_schema.tables data_length / + index_length, after ANALYZE TABLE",
            )
        }
        _ => {
            let dbstat = conn
                .query_one_raw(one(format!(
                    "SELECT \
                       (SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = '{table}') AS t, \
                       (SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = '{table}' \
                          OR name IN (SELECT name FROM sqlite_master \
                                      WHERE type = 'index' AND tbl_name = '{table}')) AS total"
                )))
                .await;
            match dbstat {
                Ok(row) => (row, "dbstat: pages of the table / + its indexes"),
                // Not compiled in: only the values can be counted.
                Err(_) => {
                    return Ok(Storage {
                        table: values,
                        total: values,
                        values,
                        method: "sum(length(col)) only (dbstat not available)",
                    });
                }
            }
        }
    };
    let row = row.ok_or("no size row")?;
    Ok(Storage {
        table: row.try_get("", "t")?,
        total: row.try_get("", "total")?,
        values,
        method,
    })
}

/// One variant, start to finish, on a fresh table: returns (op, ms) and the storage.
async fn run_variant(
    conn: &DatabaseConnection,
    variant: Variant,
    data: &[Person],
    ids: &[i32],
    probes: &[usize],
    passphrase: &str,
) -> BoxResult<(Vec<(Op, f64)>, Storage)> {
    create_table(conn, variant).await?;
    let outcome = run_ops(conn, variant, data, ids, probes, passphrase).await;
    conn.execute_unprepared(&format!("DROP TABLE {}", variant.table()))
        .await?;
    outcome
}

async fn run_ops(
    conn: &DatabaseConnection,
    variant: Variant,
    data: &[Person],
    ids: &[i32],
    probes: &[usize],
    passphrase: &str,
) -> BoxResult<(Vec<(Op, f64)>, Storage)> {
    let check = |(id, person): &(i32, Person)| -> BoxResult<()> {
        let expected = usize::try_from(*id - 1)
            .ok()
            .and_then(|i| data.get(i))
            .ok_or_else(|| format!("{}: unexpected id {id}", variant.name()))?;
        if person != expected {
            return Err(format!("{}: row {id} reads back wrong", variant.name()).into());
        }
        Ok(())
    };
    let mut times = Vec::with_capacity(OPS.len());
    times.push((Op::Insert, insert(conn, variant, data, passphrase).await?));
    let size = storage(conn, variant.table()).await?;

    let (t, n, sample) = select_all(conn, variant, passphrase).await?;
    if n != data.len() {
        return Err(format!("{}: select all found {n} rows", variant.name()).into());
    }
    sample.iter().try_for_each(check)?;
    times.push((Op::SelectAll, t));

    // Untimed once first: the first query after dropping the 10,000 rows just read pays a
    // one-off cost of up to 30 ms on SQLite (either variant), which is not what a calendar
    // view costs in a running application.
    select_by_id(conn, variant, ids, passphrase).await?;
    let (t, rows) = select_by_id(conn, variant, ids, passphrase).await?;
    if rows.len() != ids.len() {
        return Err(format!("{}: select by id found {} rows", variant.name(), rows.len()).into());
    }
    rows.iter().try_for_each(check)?;
    times.push((Op::SelectById, t));

    if variant != Variant::Pgcrypto {
        times.push((
            Op::FindByEmail,
            find_by_email(conn, variant, data, probes).await?,
        ));
    }
    Ok((times, size))
}

// --- Per backend -----------------------------------------------------------------------------

/// A pool of exactly one connection to the database `db` made, so every timed statement
/// runs on the same session (and its prepared-statement cache).
async fn dedicated_connection(db: &TestDb) -> BoxResult<DatabaseConnection> {
    let mut options = match db.backend {
        Backend::Sqlite => {
            let path = std::env::temp_dir().join(format!("{}.sqlite", db.name));
            ConnectOptions::new(format!("sqlite://{}?mode=rw", path.display()))
        }
        Backend::Postgres => {
            let mut options = ConnectOptions::new(std::env::var("TEST_POSTGRES_URL")?);
            options.set_schema_search_path(db.name.clone());
            options
        }
        Backend::MySql => {
            ConnectOptions::new(with_database(&std::env::var("TEST_MYSQL_URL")?, &db.name)?)
        }
    };
    options
        .max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    Ok(Database::connect(options).await?)
}

async fn server_version(conn: &DatabaseConnection) -> BoxResult<String> {
    let backend = conn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "SELECT 'PostgreSQL ' || current_setting('server_version') AS v",
        DbBackend::MySql => "SELECT CONCAT('MySQL/MariaDB ', VERSION()) AS v",
        _ => "SELECT 'SQLite ' || sqlite_version() AS v",
    };
    let row = conn
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .ok_or("no version row")?;
    Ok(row.try_get("", "v")?)
}

/// `n` ids spread over `1..=rows`.
fn spread_ids(n: usize, rows: usize) -> Vec<i32> {
    let mut ids: Vec<i32> = (0..n).map(|i| (i * rows / n + 1) as i32).collect();
    ids.dedup();
    ids
}

/// Row indexes to look up by e-mail: spread over the table, in a scattered order.
fn probes(n: usize, rows: usize) -> Vec<usize> {
    (0..n).map(|i| (i * 7_919 + 13) % rows).collect()
}

async fn bench_backend(
    backend: Backend,
    config: &Config,
    data: &[Person],
    passphrase: &str,
) -> BoxResult<Option<BackendReport>> {
    let Some(db) = TestDb::create(backend, "bench_macro").await? else {
        eprintln!(
            "macro/{backend}: skipped, {} not set",
            backend.url_var().unwrap_or("?")
        );
        return Ok(None);
    };
    let conn = match dedicated_connection(&db).await {
        Ok(conn) => conn,
        Err(err) => {
            let _ = db.drop_database().await;
            return Err(err);
        }
    };
    let outcome = bench_on(&conn, backend, config, data, passphrase).await;
    let closed = conn.close().await;
    let dropped = db.drop_database().await;
    let report = outcome?;
    closed?;
    dropped?;
    Ok(Some(report))
}

async fn bench_on(
    conn: &DatabaseConnection,
    backend: Backend,
    config: &Config,
    data: &[Person],
    passphrase: &str,
) -> BoxResult<BackendReport> {
    let version = server_version(conn).await?;
    let with_pgcrypto = backend == Backend::Postgres && config.pgcrypto_runs > 0;
    if with_pgcrypto {
        conn.execute_unprepared("CREATE EXTENSION IF NOT EXISTS pgcrypto")
            .await
            .map_err(|e| format!("pgcrypto is not available ({e}); install postgresql-contrib"))?;
        let row = conn
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT quote_ident(n.nspname) AS s FROM pg_extension e \
                 JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto'",
            ))
            .await?
            .ok_or("pgcrypto: extension not found after CREATE EXTENSION")?;
        let _ = PGCRYPTO_SCHEMA.set(row.try_get("", "s")?);
    }
    eprintln!(
        "macro/{backend}: {version}; {} rows, {} runs{}",
        config.rows,
        config.runs,
        if with_pgcrypto {
            format!(" ({} with pgcrypto)", config.pgcrypto_runs)
        } else {
            String::new()
        }
    );

    // Warm-up: statement caches, cipher and index-key caches, allocator, buffer pool.
    let warm = &data[..data.len().min(WARM_UP_ROWS)];
    let warm_ids = spread_ids(BY_ID.min(warm.len()), warm.len());
    let warm_probes = probes(config.lookups.min(warm.len()), warm.len());
    for variant in [Variant::Plain, Variant::Encrypted] {
        run_variant(conn, variant, warm, &warm_ids, &warm_probes, passphrase).await?;
    }

    let ids = spread_ids(BY_ID, data.len());
    let probes = probes(config.lookups, data.len());
    let mut samples: BTreeMap<(Variant, Op), Vec<f64>> = BTreeMap::new();
    let mut storage = BTreeMap::new();
    for run in 0..config.runs {
        let mut order = if run % 2 == 0 {
            vec![Variant::Plain, Variant::Encrypted]
        } else {
            vec![Variant::Encrypted, Variant::Plain]
        };
        if with_pgcrypto && run < config.pgcrypto_runs {
            order.push(Variant::Pgcrypto);
        }
        for variant in order {
            let started = Instant::now();
            let (times, size) = run_variant(conn, variant, data, &ids, &probes, passphrase).await?;
            let summary: Vec<String> = times
                .iter()
                .map(|(op, t)| format!("{} {t:.1} ms", op.key()))
                .collect();
            eprintln!(
                "macro/{backend}: run {}/{} {:<9} {} ({:.1} s)",
                run + 1,
                config.runs,
                variant.name(),
                summary.join(", "),
                started.elapsed().as_secs_f64()
            );
            for (op, t) in times {
                samples.entry((variant, op)).or_default().push(t);
            }
            storage.insert(variant, size);
        }
    }
    Ok(BackendReport {
        backend,
        version,
        samples,
        storage,
    })
}

// --- Reporting -------------------------------------------------------------------------------

fn verdict(value: f64, target: f64, at_most: bool) -> &'static str {
    if (at_most && value <= target) || (!at_most && value >= target) {
        "met"
    } else {
        "MISSED"
    }
}

fn print_report(r: &BackendReport, config: &Config) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} ({}): median of {} runs, ms",
        r.backend, r.version, config.runs
    );
    let pg = r.samples.contains_key(&(Variant::Pgcrypto, Op::Insert));
    if pg {
        let _ = writeln!(out, "(pgcrypto: median of {} runs)", config.pgcrypto_runs);
    }
    let _ = write!(
        out,
        "{:<28} {:>11} {:>11} {:>7} {:>15}",
        "operation", "plaintext", "encrypted", "ratio", "target"
    );
    if pg {
        let _ = write!(
            out,
            " {:>11} {:>10} {:>12}",
            "pgcrypto", "pgc/enc", "target"
        );
    }
    out.push('\n');
    for op in OPS {
        let (Some(p), Some(e), Some(ratio)) = (
            r.median(Variant::Plain, op),
            r.median(Variant::Encrypted, op),
            r.ratio(Variant::Encrypted, Variant::Plain, op),
        ) else {
            continue;
        };
        let target = op
            .target()
            .map(|t| format!("≤{t:.2}× {}", verdict(ratio, t, true)))
            .unwrap_or_default();
        let _ = write!(
            out,
            "{:<28} {p:>11.1} {e:>11.1} {ratio:>6.2}× {target:>15}",
            op.label(config)
        );
        if let (Some(g), Some(vs)) = (
            r.median(Variant::Pgcrypto, op),
            r.ratio(Variant::Pgcrypto, Variant::Encrypted, op),
        ) {
            let target = op
                .pgcrypto_target()
                .map(|t| format!("≥{t:.0}× {}", verdict(vs, t, false)))
                .unwrap_or_default();
            let _ = write!(out, " {g:>11.1} {vs:>9.1}× {target:>12}");
        }
        out.push('\n');
    }
    let rows = config.rows as f64;
    if let (Some(p), Some(e)) = (
        r.storage.get(&Variant::Plain),
        r.storage.get(&Variant::Encrypted),
    ) {
        let pg = r.storage.get(&Variant::Pgcrypto);
        type Line = (&'static str, fn(&Storage) -> i64);
        let lines: [Line; 3] = [
            ("bytes/row: values", |s| s.values),
            ("bytes/row: table", |s| s.table),
            ("bytes/row: with indexes", |s| s.total),
        ];
        for (label, get) in lines {
            let _ = write!(
                out,
                "{label:<28} {:>11.0} {:>11.0} {:>6.2}×",
                get(p) as f64 / rows,
                get(e) as f64 / rows,
                get(e) as f64 / get(p) as f64
            );
            if let Some(g) = pg {
                let _ = write!(out, " {:>15} {:>11.0}", "", get(g) as f64 / rows);
            }
            out.push('\n');
        }
        let _ = writeln!(out, "  (storage: {})", e.method);
    }
    println!("{out}");
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    json!({
        "cpu": cpu,
        "logical_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn to_json(reports: &[BackendReport], config: &Config, load: (&str, &str)) -> serde_json::Value {
    let backends: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let mut ops = serde_json::Map::new();
            for op in OPS {
                let mut entry = serde_json::Map::new();
                for variant in [Variant::Plain, Variant::Encrypted, Variant::Pgcrypto] {
                    if let Some(s) = r.samples.get(&(variant, op)) {
                        entry.insert(
                            variant.name().into(),
                            json!({ "median_ms": median(s), "runs_ms": s }),
                        );
                    }
                }
                if let Some(ratio) = r.ratio(Variant::Encrypted, Variant::Plain, op) {
                    entry.insert("encrypted_over_plaintext".into(), json!(ratio));
                    if let Some(t) = op.target() {
                        entry.insert("target_max".into(), json!(t));
                        entry.insert("target_met".into(), json!(ratio <= t));
                    }
                }
                if let Some(ratio) = r.ratio(Variant::Pgcrypto, Variant::Encrypted, op) {
                    entry.insert("pgcrypto_over_encrypted".into(), json!(ratio));
                    if let Some(t) = op.pgcrypto_target() {
                        entry.insert("pgcrypto_target_min".into(), json!(t));
                        entry.insert("pgcrypto_target_met".into(), json!(ratio >= t));
                    }
                }
                ops.insert(op.key().into(), entry.into());
            }
            let storage: serde_json::Map<String, serde_json::Value> = r
                .storage
                .iter()
                .map(|(v, s)| {
                    (
                        v.name().to_owned(),
                        json!({
                            "table_bytes": s.table,
                            "total_bytes": s.total,
                            "value_bytes": s.values,
                            "value_bytes_per_row": s.values as f64 / config.rows as f64,
                            "table_bytes_per_row": s.table as f64 / config.rows as f64,
                            "total_bytes_per_row": s.total as f64 / config.rows as f64,
                            "method": s.method,
                        }),
                    )
                })
                .collect();
            json!({
                "backend": r.backend.to_string(),
                "version": r.version,
                "ops": ops,
                "storage": storage,
            })
        })
        .collect();
    json!({
        "command": "cargo bench -p encrypted-columns-tests --bench macro",
        "machine": machine(),
        "load_average": { "start": load.0, "end": load.1 },
        "config": {
            "rows": config.rows,
            "runs": config.runs,
            "pgcrypto_runs": config.pgcrypto_runs,
            "lookups": config.lookups,
            "select_by_id": BY_ID,
            "insert_batch_rows": BATCH,
            "pii_fields": 8,
            "pii_field_bytes": FIELD_LEN,
            "medical_history_bytes": HISTORY_LEN,
        },
        "backends": backends,
    })
}

// --- Chart -----------------------------------------------------------------------------------

mod chart {
    use super::{BackendReport, BoxResult, Config, OPS, Op, Variant};
    use plotters::coord::Shift;
    use plotters::coord::types::RangedCoordf64;
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    use std::path::Path;

    const FONT: &str = "sans-serif";
    const PLAIN: RGBColor = RGBColor(150, 150, 150);
    const ENCRYPTED: RGBColor = RGBColor(31, 119, 180);
    const PGCRYPTO: RGBColor = RGBColor(214, 39, 40);
    const CANDIDATE_FONTS: [&str; 4] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ];

    /// Registers a TrueType font for the chart's text; `None` if none is found.
    pub fn register_font() -> Option<String> {
        let mut candidates: Vec<String> = std::env::var("MACRO_BENCH_FONT").into_iter().collect();
        candidates.extend(CANDIDATE_FONTS.iter().map(|s| s.to_string()));
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            // The font table wants 'static bytes; the chart is drawn once per process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                return Some(path);
            }
        }
        None
    }

    fn color(variant: Variant) -> RGBColor {
        match variant {
            Variant::Plain => PLAIN,
            Variant::Encrypted => ENCRYPTED,
            Variant::Pgcrypto => PGCRYPTO,
        }
    }

    fn label_ms(v: f64) -> String {
        if v >= 10_000.0 {
            format!("{:.1} s", v / 1e3)
        } else if v >= 100.0 {
            format!("{v:.0} ms")
        } else {
            format!("{v:.1} ms")
        }
    }

    /// Writes `labels` under the centres of the categories `0..1`, `1..2`, … of the x axis
    /// (plotters' own tick labels sit at round numbers, not at category centres).
    fn category_labels<Y: Ranged<ValueType = f64>>(
        chart: &ChartContext<'_, BitMapBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
        area: &DrawingArea<BitMapBackend<'_>, Shift>,
        labels: &[String],
        bottom: f64,
    ) -> BoxResult<()> {
        let (base_x, base_y) = area.get_base_pixel();
        let style = TextStyle::from((FONT, 16).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top));
        for (i, label) in labels.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, bottom));
            area.draw(&Text::new(
                label.clone(),
                (x - base_x, y - base_y + 8),
                style.clone(),
            ))?;
        }
        Ok(())
    }

    /// One panel: milliseconds of `op` per backend, a bar per variant, log scale.
    fn cost_panel(
        area: &DrawingArea<BitMapBackend<'_>, Shift>,
        reports: &[BackendReport],
        op: Op,
        title: &str,
    ) -> BoxResult<()> {
        let variants = [Variant::Plain, Variant::Encrypted, Variant::Pgcrypto];
        let values: Vec<f64> = reports
            .iter()
            .flat_map(|r| variants.iter().filter_map(move |&v| r.median(v, op)))
            .collect();
        let lo = values
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .max(0.01)
            / 3.0;
        let hi = values.iter().copied().fold(0.0, f64::max) * 4.0;
        let n = reports.len();
        let names: Vec<String> = reports.iter().map(|r| r.backend.to_string()).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..n as f64, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(RGBColor(238, 238, 238))
            .x_labels(0)
            .y_desc("milliseconds (log scale)")
            .y_labels(6)
            .y_label_style((FONT, 13))
            .y_label_formatter(&|y| label_ms(*y))
            .draw()?;
        category_labels(&chart, area, &names, lo)?;
        let width = 0.26;
        for (slot, &variant) in variants.iter().enumerate() {
            let bars: Vec<(f64, f64, String)> = reports
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let v = r.median(variant, op)?;
                    let x0 = i as f64 + 0.11 + slot as f64 * width;
                    // Encrypted bars say "× plaintext", pgcrypto bars "× encrypted".
                    let text = match variant {
                        Variant::Plain => None,
                        Variant::Encrypted => r
                            .ratio(Variant::Encrypted, Variant::Plain, op)
                            .map(|ratio| format!("{ratio:.2}×")),
                        Variant::Pgcrypto => r
                            .ratio(Variant::Pgcrypto, Variant::Encrypted, op)
                            .map(|ratio| format!("{ratio:.0}× enc")),
                    }
                    .unwrap_or_else(|| label_ms(v));
                    Some((x0, v, text))
                })
                .collect();
            if bars.is_empty() {
                continue;
            }
            let c = color(variant);
            chart
                .draw_series(bars.iter().map(|&(x0, v, _)| {
                    Rectangle::new([(x0, lo), (x0 + width * 0.92, v)], c.filled())
                }))?
                .label(variant.name())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
            let style = TextStyle::from((FONT, 13).into_font())
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Bottom));
            chart.draw_series(bars.iter().map(|(x0, v, text)| {
                Text::new(text.clone(), (x0 + width * 0.46, v * 1.08), style.clone())
            }))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }

    /// Encrypted ÷ plaintext for every operation and backend, with the targets.
    fn ratio_panel(
        area: &DrawingArea<BitMapBackend<'_>, Shift>,
        reports: &[BackendReport],
        config: &Config,
    ) -> BoxResult<()> {
        let ratios: Vec<f64> = reports
            .iter()
            .flat_map(|r| {
                OPS.iter()
                    .filter_map(move |&op| r.ratio(Variant::Encrypted, Variant::Plain, op))
            })
            .collect();
        let hi = ratios.iter().copied().fold(1.5, f64::max) * 1.15;
        let n = OPS.len();
        let labels: Vec<String> = OPS
            .iter()
            .map(|op| match op {
                Op::Insert => "insert".to_owned(),
                Op::SelectAll => "select all".to_owned(),
                Op::SelectById => format!("{} by id", super::BY_ID),
                Op::FindByEmail => format!("{} by e-mail", config.lookups),
            })
            .collect();
        let mut chart = ChartBuilder::on(area)
            .caption("encrypted ÷ plaintext (lines: targets)", (FONT, 20))
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n as f64, 0f64..hi)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(RGBColor(238, 238, 238))
            .x_labels(0)
            .y_label_style((FONT, 13))
            .y_label_formatter(&|y| format!("{y:.1}×"))
            .draw()?;
        category_labels(&chart, area, &labels, 0.0)?;
        let palette = [RGBColor(44, 160, 44), ENCRYPTED, RGBColor(255, 127, 14)];
        let width = 0.8 / reports.len().max(1) as f64;
        for (slot, r) in reports.iter().enumerate() {
            let c = palette[slot % palette.len()];
            let bars: Vec<(f64, f64)> = OPS
                .iter()
                .enumerate()
                .filter_map(|(i, &op)| {
                    let ratio = r.ratio(Variant::Encrypted, Variant::Plain, op)?;
                    Some((i as f64 + 0.1 + slot as f64 * width, ratio))
                })
                .collect();
            chart
                .draw_series(bars.iter().map(|&(x0, v)| {
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], c.filled())
                }))?
                .label(r.backend.to_string())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
            let style = TextStyle::from((FONT, 12).into_font())
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Bottom));
            chart.draw_series(bars.iter().map(|&(x0, v)| {
                Text::new(
                    format!("{v:.2}"),
                    (x0 + width * 0.45, v + hi * 0.01),
                    style.clone(),
                )
            }))?;
        }
        // Targets: insert ≤ 1.10×, selects ≤ 1.30×; and parity.
        let line = |x0: f64, x1: f64, y: f64, c: RGBColor| {
            PathElement::new(vec![(x0, y), (x1, y)], c.stroke_width(2))
        };
        chart.draw_series([
            line(0.0, n as f64, 1.0, BLACK),
            line(0.0, 1.0, 1.10, PGCRYPTO),
            line(1.0, 3.0, 1.30, PGCRYPTO),
        ])?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }

    pub fn draw(path: &Path, reports: &[BackendReport], config: &Config) -> BoxResult<()> {
        let root = BitMapBackend::new(path, (1800, 640)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(
            &format!(
                "{} patients (8 × {} B PII + {} B history), SeaORM, one connection — median of {} runs",
                config.rows,
                super::FIELD_LEN,
                super::HISTORY_LEN,
                config.runs
            ),
            (FONT, 24),
        )?;
        let panels = root.split_evenly((1, 3));
        cost_panel(
            &panels[0],
            reports,
            Op::Insert,
            "insert all rows (one transaction)",
        )?;
        cost_panel(&panels[1], reports, Op::SelectAll, "select all rows")?;
        ratio_panel(&panels[2], reports, config)?;
        root.present()?;
        Ok(())
    }
}

// --- Main ------------------------------------------------------------------------------------

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "macro bench: run it with `cargo bench -p encrypted-columns-tests --bench macro`"
        );
        return;
    }
    if let Err(err) = run() {
        eprintln!("macro bench failed: {err}");
        std::process::exit(1);
    }
}

fn run() -> BoxResult<()> {
    let config = Config::from_env()?;
    init_keyring();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // pgcrypto's passphrase: random, never printed.
    let passphrase: String = encrypted_columns::keyring::generate_key()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let data: Vec<Person> = (0..config.rows).map(Person::sample).collect();
    let load_start = loadavg();

    let mut reports = Vec::new();
    for &backend in &config.backends {
        if let Some(report) = rt
            .block_on(bench_backend(backend, &config, &data, &passphrase))
            .map_err(|e| format!("{backend}: {e}"))?
        {
            print_report(&report, &config);
            reports.push(report);
        }
    }
    let load_end = loadavg();
    println!("load average (1/5/15 min): {load_start} at start, {load_end} at end");
    if config.quick {
        println!("quick mode: not the reference workload");
    }

    std::fs::create_dir_all(&config.out_dir)?;
    let json_path = config.out_dir.join("macro.json");
    let value = to_json(&reports, &config, (&load_start, &load_end));
    std::fs::write(&json_path, serde_json::to_string_pretty(&value)? + "\n")?;
    println!("wrote {}", json_path.display());
    match chart::register_font() {
        Some(_) => {
            let png = config.out_dir.join("macro.png");
            chart::draw(&png, &reports, &config)?;
            println!("wrote {}", png.display());
        }
        None => {
            eprintln!("macro bench: no TrueType font found (set MACRO_BENCH_FONT), chart not drawn")
        }
    }
    Ok(())
}
