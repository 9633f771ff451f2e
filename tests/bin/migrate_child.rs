//! Runs one `migrate::backfill` of `mig_crash.email` → `email_enc` (+ `email_bidx`) and
//! exits: the process tests/migrate.rs kills with SIGKILL at random moments to prove the
//! backfill resumes without loss or stale envelopes.
//!
//! ```text
//! migrate_child --url <database URL> [--batch-size N] [--throttle-ms M] [--no-keyring]
//! ```
//!
//! Keys come from the environment (`ENCRYPTED_COLUMNS_KEYS`,
//! `ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS`, as in production). `--no-keyring` installs none, to
//! check the library's own error. On success it prints one line of counts to stdout and exits
//! 0; on error it prints the error (never plaintext or keys) to stderr and exits 2. The table,
//! column context and blind index must match `crash` in tests/migrate.rs.

use std::process::ExitCode;
use std::sync::LazyLock;
use std::time::Duration;

use encrypted_columns::blind_index::{BlindIndex, Pipeline};
use encrypted_columns::migrate::{self, EncryptColumn, RunOptions};
use encrypted_columns::{Keyring, column_context, keyring};
use sea_orm::{ConnectOptions, Database};

column_context!(CrashEmail, table = "mig_crash", column = "email");

static CRASH_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| {
    BlindIndex::new("mig_crash", "email_bidx")
        .field(Pipeline::parse("email").expect("the `email` pipeline exists"))
});

struct Args {
    url: String,
    batch_size: u64,
    throttle: Option<Duration>,
    keyring: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: String::new(),
        batch_size: 20,
        throttle: None,
        keyring: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--url" => args.url = value("--url")?,
            "--batch-size" => {
                args.batch_size = value("--batch-size")?
                    .parse()
                    .map_err(|e| format!("--batch-size: {e}"))?
            }
            "--throttle-ms" => {
                let ms: u64 = value("--throttle-ms")?
                    .parse()
                    .map_err(|e| format!("--throttle-ms: {e}"))?;
                args.throttle = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "--no-keyring" => args.keyring = false,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.url.is_empty() {
        return Err("--url is required".into());
    }
    Ok(args)
}

async fn run(args: Args) -> Result<String, String> {
    if args.keyring {
        keyring::install(Keyring::from_env().map_err(|e| e.to_string())?);
    }
    let mut options = ConnectOptions::new(args.url);
    options.max_connections(2).sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let spec = EncryptColumn::<String, CrashEmail>::new("mig_crash", "id", "email", "email_enc")
        .with_index("email_bidx", &CRASH_BIDX);
    let options = RunOptions {
        batch_size: args.batch_size,
        throttle: args.throttle,
        max_batches: None,
    };
    let report = migrate::backfill(&db, &spec, &options, |_| {})
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "finished={} sealed={} skipped={} batches={}",
        report.finished, report.sealed, report.skipped, report.batches
    ))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let outcome = match parse_args() {
        Ok(args) => run(args).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("migrate_child: {e}");
            ExitCode::from(2)
        }
    }
}
