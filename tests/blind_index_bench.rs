//! What a blind index costs: per value, and per lookup at 100,000 rows next to a plaintext
//! index on the same table.
//!
//! `cargo bench -p encrypted-columns-tests --bench blind_index`, with `TEST_POSTGRES_URL`
//! and/or `TEST_MYSQL_URL` set to add those backends (SQLite, a temp file, always runs).
//!
//! * `compute/hmac_sha256_prekeyed`: HMAC-SHA256 of the 30-byte e-mail from a cloned keyed
//!   state: the floor. `compute/hmac_sha256_keyed`: the same with the key schedule per call.
//! * `compute/blind_index_email`: `BlindIndex::compute` with the `email` pipeline, 256 bits —
//!   keyring lookup, normalization, length-prefixed message, HMAC, version byte.
//! * `lookup_100k/<backend>/plaintext_index`: `Column::Email.eq(..)` on a plaintext column
//!   with an ordinary index, `.all()` (as the generated lookup does).
//! * `lookup_100k/<backend>/encrypted_bidx`: `Entity::find_one_by_email_bidx`: index value,
//!   query on the unique companion column, decryption and the false-positive check.
//!
//! Both lookups load the same full row (so both decrypt its envelope column); the difference
//! is the blind-index work. The table is created through SeaORM and seeded once per backend,
//! outside the timed loops, in its own database (schema on PostgreSQL) dropped at the end.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use encrypted_columns::EncryptedString;
use encrypted_columns::blind_index::{BlindIndex, IndexInput, Pipeline};
use encrypted_columns_tests::{Backend, TestDb, init_keyring};
use hmac::{Hmac, KeyInit, Mac};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    TransactionTrait,
};
use sha2::Sha256;
use tokio::runtime::Runtime;

const ROWS: u32 = 100_000;
/// Rows per INSERT: 3 bound values each, under every backend's placeholder limit.
const BATCH: u32 = 5_000;
/// Rows per transaction.
const TRANSACTION: u32 = 25_000;

mod patient {
    use encrypted_columns::{DeriveEncrypted, EncryptedString};
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
    #[sea_orm(table_name = "bench_patients")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        /// The plaintext baseline, with an ordinary (non-unique) index.
        #[sea_orm(indexed)]
        pub email: String,
        /// The same address, encrypted, with a unique full-width blind index.
        #[encrypted(blind_index(name = "email_bidx", normalize = "email", unique))]
        pub email_enc: EncryptedString<ctx::EmailEnc>,
        /// `binary(33)`: one version byte and 256 bits (a MySQL BLOB cannot be UNIQUE).
        #[sea_orm(column_type = "Binary(33)", unique)]
        pub email_bidx: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Row `n`'s address: always 30 bytes.
fn email(n: u32) -> String {
    let email = format!("user{n:06}@clinics.example.org");
    debug_assert_eq!(email.len(), 30);
    email
}

/// The addresses looked up, in turn: spread over the table.
fn probes() -> Vec<String> {
    (0..64u32).map(|i| email(i * 7_919 % ROWS)).collect()
}

fn runtime() -> Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => panic!("tokio runtime: {err}"),
    }
}

fn compute(c: &mut Criterion) {
    let ring = init_keyring();
    let input = email(42);
    let mut group = c.benchmark_group("compute");

    let key = [7u8; 32];
    let keyed = match Hmac::<Sha256>::new_from_slice(&key) {
        Ok(mac) => mac,
        Err(err) => panic!("HMAC key: {err}"),
    };
    group.bench_function("hmac_sha256_prekeyed", |b| {
        b.iter(|| {
            let mut mac = keyed.clone();
            mac.update(black_box(input.as_bytes()));
            mac.finalize().into_bytes()
        })
    });
    group.bench_function("hmac_sha256_keyed", |b| {
        b.iter(|| {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(black_box(&key)) else {
                unreachable!("HMAC takes any key length")
            };
            mac.update(black_box(input.as_bytes()));
            mac.finalize().into_bytes()
        })
    });

    let pipeline = match Pipeline::parse("email") {
        Ok(p) => p,
        Err(err) => panic!("email pipeline: {err}"),
    };
    let index = BlindIndex::new("bench_patients", "email_bidx").field(pipeline);
    group.bench_function("blind_index_email", |b| {
        b.iter(|| index.compute(&ring, &[Some(IndexInput::Text(black_box(&input)))]))
    });
    group.finish();
}

async fn seed(db: &DatabaseConnection) -> Result<(), Box<dyn std::error::Error>> {
    db.get_schema_builder()
        .register(patient::Entity)
        .apply(db)
        .await?;
    let mut n = 0;
    while n < ROWS {
        let txn = db.begin().await?;
        let end = (n + TRANSACTION).min(ROWS);
        while n < end {
            let batch_end = (n + BATCH).min(end);
            let mut rows = Vec::with_capacity(BATCH as usize);
            for i in n..batch_end {
                let address = email(i);
                let mut row = patient::ActiveModel {
                    email: Set(address.clone()),
                    email_enc: Set(EncryptedString::new(address)?),
                    ..Default::default()
                };
                row.fill_blind_indexes()?;
                rows.push(row);
            }
            patient::Entity::insert_many(rows)
                .exec_without_returning(&txn)
                .await?;
            n = batch_end;
        }
        txn.commit().await?;
    }
    let analyze = match db.get_database_backend() {
        DbBackend::MySql => "ANALYZE TABLE bench_patients",
        _ => "ANALYZE bench_patients",
    };
    db.execute_unprepared(analyze).await?;

    // Both paths find the row before anything is timed.
    let probe = email(12_345);
    let plain = patient::Entity::find()
        .filter(patient::Column::Email.eq(probe.as_str()))
        .one(db)
        .await?
        .ok_or("plaintext lookup found nothing")?;
    let encrypted = patient::Entity::find_one_by_email_bidx(db, probe.to_uppercase())
        .await?
        .ok_or("blind-index lookup found nothing")?;
    if plain != encrypted || *encrypted.email_enc.expose() != probe {
        return Err("the two lookups disagree".into());
    }
    Ok(())
}

fn lookup(c: &mut Criterion) {
    init_keyring();
    let rt = runtime();
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        let db = match rt.block_on(TestDb::create(backend, "bench_blind_index")) {
            Ok(Some(db)) => db,
            Ok(None) => {
                eprintln!(
                    "lookup_100k/{backend}: skipped, {} not set",
                    backend.url_var().unwrap_or("?")
                );
                continue;
            }
            Err(err) => panic!("{backend}: {err}"),
        };
        let started = Instant::now();
        let seeded = rt.block_on(seed(&db.conn));
        if let Err(err) = seeded {
            let _ = rt.block_on(db.drop_database());
            panic!("seeding {backend}: {err}");
        }
        eprintln!(
            "lookup_100k/{backend}: seeded {ROWS} rows in {:.1?}",
            started.elapsed()
        );

        let probes = probes();
        let conn = &db.conn;
        let mut group = c.benchmark_group(format!("lookup_100k/{backend}"));
        let mut i = 0;
        group.bench_function("plaintext_index", |b| {
            b.iter(|| {
                i = (i + 1) % probes.len();
                // `.all()` like the generated lookup (which must see every candidate to drop
                // false positives): on SQLite, sqlx's `.one()` alone costs ~80 µs more.
                let found = rt.block_on(
                    patient::Entity::find()
                        .filter(patient::Column::Email.eq(probes[i].as_str()))
                        .all(conn),
                );
                assert!(matches!(&found, Ok(rows) if rows.len() == 1));
                found
            })
        });
        group.bench_function("encrypted_bidx", |b| {
            b.iter(|| {
                i = (i + 1) % probes.len();
                let found = rt.block_on(patient::Entity::find_one_by_email_bidx(conn, &probes[i]));
                assert!(matches!(found, Ok(Some(_))));
                found
            })
        });
        group.finish();

        if let Err(err) = rt.block_on(db.drop_database()) {
            panic!("dropping the {backend} bench database: {err}");
        }
    }
}

criterion_group! {
    name = per_value;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = compute
}
criterion_group! {
    name = per_lookup;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = lookup
}
criterion_main!(per_value, per_lookup);
