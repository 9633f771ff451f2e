//! Opening 1,000 subjects' keys (`SubjectKeys::keyring`) on SQLite: cold (a new `SubjectKeys`,
//! empty cache: one batch of reads and unwraps) and warm (every key cached), through the
//! application keyring as envelopes (`KeyringKek`, the clinic's format), `StaticKek`, and
//! SoftHSM2 (`Pkcs11Kek`, when `TEST_SOFTHSM2_MODULE` names its module). Prints the time per
//! batch and the ratio to the keyring's cold open.
//!
//! `cargo bench -p encrypted-columns-tests --bench subject_keys`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use encrypted_columns::Keyring;
use encrypted_columns::kek::pkcs11::{Pkcs11Config, Pkcs11Kek};
use encrypted_columns::kek::{KeyEncryptionKey, KeyringKek, StaticKek};
use encrypted_columns::subject_keys::{SubjectKeys, table};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

const SUBJECTS: usize = 1_000;
const ROUNDS: u32 = 5;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> Res<()> {
    let app = Arc::new(Keyring::generate());
    let mut providers: Vec<(&str, Arc<dyn KeyEncryptionKey>)> = vec![
        (
            "keyring (envelopes)",
            Arc::new(KeyringKek::new(
                Arc::clone(&app),
                "bench_keys",
                "wrapped_key",
            )?),
        ),
        ("static", Arc::new(StaticKek::generate("bench"))),
    ];
    match std::env::var("TEST_SOFTHSM2_MODULE") {
        Ok(module) => providers.push(("pkcs11 (SoftHSM2)", Arc::new(softhsm(&module).await?))),
        Err(_) => println!("skipped pkcs11: TEST_SOFTHSM2_MODULE not set"),
    }
    println!("{SUBJECTS} subjects per batch, median of {ROUNDS} rounds, SQLite in memory");
    println!(
        "{:<22} {:>12} {:>12} {:>10} {:>10}",
        "provider", "cold", "warm", "cold/ref", "warm/ref"
    );
    let mut reference = None;
    for (name, kek) in providers {
        let db = Database::connect("sqlite::memory:").await?;
        let rows = populate(&db, &kek).await?;
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        for _ in 0..ROUNDS {
            let keys = SubjectKeys::new("bench_keys", Arc::clone(&kek));
            cold.push(open(&keys, &db, &app, &rows).await?);
            warm.push(open(&keys, &db, &app, &rows).await?);
        }
        let (cold, warm) = (median(cold), median(warm));
        let reference = *reference.get_or_insert(cold);
        println!(
            "{name:<22} {:>10.2}ms {:>10.2}ms {:>10.2} {:>10.3}",
            ms(cold),
            ms(warm),
            cold.as_secs_f64() / reference.as_secs_f64(),
            warm.as_secs_f64() / reference.as_secs_f64(),
        );
    }
    Ok(())
}

async fn populate(db: &DatabaseConnection, kek: &Arc<dyn KeyEncryptionKey>) -> Res<Vec<i64>> {
    db.execute(&table::create_table_statement("bench_keys"))
        .await?;
    let keys = SubjectKeys::new("bench_keys", Arc::clone(kek));
    let mut rows = Vec::with_capacity(SUBJECTS);
    for _ in 0..SUBJECTS {
        rows.push(keys.create(db).await?.row());
    }
    Ok(rows)
}

async fn open(
    keys: &SubjectKeys,
    db: &DatabaseConnection,
    app: &Keyring,
    rows: &[i64],
) -> Res<Duration> {
    let start = Instant::now();
    let opened = keys.keyring(db, app, rows.iter().copied()).await?;
    let took = start.elapsed();
    // A bench that opened nothing would measure nothing.
    if !opened.broken.is_empty() || opened.ring.key_ids().count() != SUBJECTS + 1 {
        return Err(format!("{} rows did not open", opened.broken.len()).into());
    }
    Ok(took)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A KEK in a fresh SoftHSM2 token in a directory of this process's own.
async fn softhsm(module: &str) -> Res<Pkcs11Kek> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("subject_keys_bench-{}", std::process::id()));
    let conf = encrypted_columns_tests::softhsm::create_tokens(&dir, &["bench"]);
    // SAFETY: single-threaded use of the environment: set before the module is loaded, and
    // nothing else in this process reads it concurrently.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let config = Pkcs11Config::new(
        module,
        "bench",
        "kek",
        encrypted_columns_tests::softhsm::PIN,
    )
    .generate_if_missing(true);
    Ok(Pkcs11Kek::connect(config).await?)
}
