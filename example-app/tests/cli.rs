//! Runs the built `clinic` binary as a user would.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use sea_orm::{ConnectionTrait, Database};

const PLAINTEXTS: [&str; 7] = [
    "Examplewood",
    "Samplesson",
    "alba.examplewood@example.org",
    "bram.samplesson@example.org",
    "+1 555 0100",
    "penicillin",
    "Alba",
];

fn clinic() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clinic"));
    cmd.env_remove("ENCRYPTED_COLUMNS_KEYS")
        .env_remove("ENCRYPTED_COLUMNS_ACTIVE_KEY")
        .env_remove("ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS")
        .env_remove("ENCRYPTED_COLUMNS_ACTIVE_BLIND_INDEX_KEY")
        .env_remove("DATABASE_URL");
    cmd
}

fn fresh_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "clinic-cli-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_demo_succeeded(out: &Output) {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(
            "#1: Alba Examplewood <alba.examplewood@example.org>, +1 555 0100, born 1984-03-09"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("none of this patient's plaintext appears in the stored bytes"));
    assert!(
        stdout
            .contains("patients.phone: cannot open value sealed with key 1: authentication failed")
    );
    assert!(stdout.contains("Encrypted<String>(patients.email, key 1, <redacted>)"));
    assert!(
        stdout.contains("find_one_by_email_bidx(\"  ALBA.EXAMPLEWOOD@EXAMPLE.ORG  \") found #1"),
        "{stdout}"
    );
    assert!(stdout.contains("find_all_by_phone_last4_bidx(\"0100\"): 1 patient(s)"));
    assert!(
        stdout.contains("find_all_by_name_dob_bidx(\"examplewood\", 1984-03-09): 1 patient(s)")
    );
    assert!(stdout.contains(
        "patients.email_bidx: another row already has this value (unique blind index), so nothing was written"
    ));
}

fn assert_no_plaintext_in(bytes: &[u8], what: &str) {
    for p in PLAINTEXTS {
        assert!(
            !bytes.windows(p.len()).any(|w| w == p.as_bytes()),
            "{p:?} found in {what}"
        );
    }
}

#[test]
fn demo_runs_on_a_fresh_default_sqlite_file_and_again() {
    let dir = fresh_dir("default");
    let first = clinic()
        .arg("demo")
        .current_dir(&dir)
        .output()
        .expect("runs");
    assert_demo_succeeded(&first);
    let stdout = text(&first.stdout);
    assert!(
        stdout.contains("No ENCRYPTED_COLUMNS_KEYS is set"),
        "{stdout}"
    );
    assert!(stdout.contains("Creating clinic-demo.db"), "{stdout}");
    let file = std::fs::read(dir.join("clinic-demo.db")).expect("database file");
    assert!(file.len() > 4096);
    assert_no_plaintext_in(&file, "the SQLite file");

    let again = clinic()
        .arg("demo")
        .current_dir(&dir)
        .output()
        .expect("runs");
    assert_demo_succeeded(&again);
    assert!(text(&again.stdout).contains("Starting from a fresh clinic-demo.db"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_uses_keys_from_the_environment() {
    let dir = fresh_dir("envkeys");
    let keys = clinic().args(["keys", "generate"]).output().expect("runs");
    assert!(keys.status.success());
    let keys = text(&keys.stdout);
    let line = keys
        .lines()
        .find(|l| l.starts_with("ENCRYPTED_COLUMNS_KEYS=1:"))
        .expect("a key line");
    let value = line.trim_start_matches("ENCRYPTED_COLUMNS_KEYS=");
    let blind = keys
        .lines()
        .find_map(|l| l.strip_prefix("ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS="))
        .expect("a blind-index key line");
    let out = clinic()
        .arg("demo")
        .env("ENCRYPTED_COLUMNS_KEYS", value)
        .env("ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS", blind)
        .current_dir(&dir)
        .output()
        .expect("runs");
    assert_demo_succeeded(&out);
    assert!(text(&out.stdout).contains("Keys loaded from ENCRYPTED_COLUMNS_KEYS"));

    // Encryption keys without a blind-index key: refused before anything is created.
    let out = clinic()
        .arg("demo")
        .env("ENCRYPTED_COLUMNS_KEYS", value)
        .current_dir(&dir)
        .output()
        .expect("runs");
    assert_one_line_failure(&out, "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS");
    let _ = std::fs::remove_dir_all(&dir);
}

fn assert_one_line_failure(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "should fail; stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("clinic: "), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn malformed_keys_fail_with_one_line_and_write_nothing() {
    let dir = fresh_dir("badkeys");
    for (value, needle) in [
        (
            "1:AAAA",
            "key 1 decodes to 3 bytes; keys must be exactly 32 bytes",
        ),
        ("not-a-key", "entry 1 has no `:`"),
        ("1:%%%", "key 1 is not valid base64"),
    ] {
        let out = clinic()
            .arg("demo")
            .env("ENCRYPTED_COLUMNS_KEYS", value)
            .current_dir(&dir)
            .output()
            .expect("runs");
        assert_one_line_failure(&out, "ENCRYPTED_COLUMNS_KEYS");
        assert_one_line_failure(&out, needle);
        // The rejected value itself is never echoed back.
        assert!(!text(&out.stderr).contains(value.trim_start_matches("1:")));
    }
    assert!(!dir.join("clinic-demo.db").exists(), "nothing written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_database_urls_fail_with_one_clear_line() {
    let out = clinic()
        .args(["demo", "--database-url", "nosuch://x"])
        .output()
        .expect("runs");
    assert_one_line_failure(&out, "unsupported database URL scheme \"nosuch\"");
    let out = clinic()
        .args(["demo", "--database-url", "sqlite:///no/such/dir/x.db"])
        .output()
        .expect("runs");
    assert_one_line_failure(&out, "cannot connect to the sqlite database");
}

#[test]
fn help_reads_well() {
    let out = clinic().arg("--help").output().expect("runs");
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.contains("encrypted at rest") && help.contains("--database-url"),
        "{help}"
    );
    let out = clinic().args(["demo", "--help"]).output().expect("runs");
    assert!(text(&out.stdout).contains("fake patients"));
}

/// Runs the demo on a server backend, in a schema/database of its own.
async fn demo_on_server(var: &str) {
    let Ok(base) = std::env::var(var) else {
        eprintln!("skipped: {var} not set");
        return;
    };
    let name = format!("clinic_cli_{}", std::process::id());
    let admin = Database::connect(&base)
        .await
        .expect("connect to the test server");
    let url = if var.contains("POSTGRES") {
        admin
            .execute_unprepared(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .await
            .expect("schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-c%20search_path%3D{name}")
    } else {
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .expect("drop");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("database");
        let (server, _) = base.rsplit_once('/').expect("URL with a database");
        format!("{server}/{name}")
    };
    let out = clinic()
        .args(["demo", "--database-url", &url])
        .output()
        .expect("runs");
    // A plain dump of what the demo stored must show none of the plaintext.
    let dump = admin_dump(&admin, var, &name).await;
    let cleanup = if var.contains("POSTGRES") {
        format!("DROP SCHEMA {name} CASCADE")
    } else {
        format!("DROP DATABASE {name}")
    };
    admin.execute_unprepared(&cleanup).await.expect("cleanup");
    assert_demo_succeeded(&out);
    assert!(dump.len() > 200, "dump too small: {}", dump.len());
    assert_no_plaintext_in(&dump, &format!("a dump of {var}'s demo tables"));
}

async fn admin_dump(admin: &sea_orm::DatabaseConnection, var: &str, name: &str) -> Vec<u8> {
    let sql = if var.contains("POSTGRES") {
        format!("SELECT CAST(t.* AS text) AS r FROM {name}.patients t")
    } else {
        format!(
            "SELECT CONCAT_WS('|', id, first_name, last_name, email, phone, date_of_birth, medical_history) AS r FROM {name}.patients"
        )
    };
    let rows = admin
        .query_all_raw(sea_orm::Statement::from_string(
            admin.get_database_backend(),
            sql,
        ))
        .await
        .expect("dump");
    let mut out = Vec::new();
    for row in rows {
        let value: Vec<u8> = row
            .try_get::<Vec<u8>>("", "r")
            .or_else(|_| row.try_get::<String>("", "r").map(String::into_bytes))
            .expect("row text");
        out.extend_from_slice(&value);
    }
    out
}

#[tokio::test]
async fn demo_on_postgres() {
    demo_on_server("TEST_POSTGRES_URL").await;
}

#[tokio::test]
async fn demo_on_mysql() {
    demo_on_server("TEST_MYSQL_URL").await;
}

/// `clinic keys generate` output as (name, value) pairs.
fn generated_keys() -> Vec<(String, String)> {
    let out = clinic().args(["keys", "generate"]).output().expect("runs");
    assert!(out.status.success());
    text(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn migrate_legacy_walks_every_phase_and_refuses_steps_out_of_order() {
    let dir = fresh_dir("legacy");
    let keys = generated_keys();
    let run = |args: &[&str]| {
        let mut cmd = clinic();
        cmd.args(args).current_dir(&dir);
        for (k, v) in &keys {
            cmd.env(k, v);
        }
        cmd.output().expect("runs")
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };

    let out = run(&["migrate-legacy", "status"]);
    assert_one_line_failure(&out, "run `clinic init` first");
    assert!(ok(&["init"]).contains("Applied 3 migration(s)"));
    assert!(ok(&["migrate-legacy", "seed", "--rows", "1200"]).contains("plaintext only"));
    let status = ok(&["migrate-legacy", "status"]);
    assert!(status.contains("legacy_patients: 1200 row(s)"), "{status}");
    assert!(status.contains("email      added"), "{status}");

    // Out of order: each refused with one line, and the phase stays.
    let out = run(&["migrate-legacy", "backfill"]);
    assert_one_line_failure(
        &out,
        "cannot move the migration from `added` to `backfilling`",
    );
    let out = run(&["migrate-legacy", "cutover"]);
    assert_one_line_failure(&out, "cut-over needs a passing verify");
    let out = run(&["migrate-legacy", "drop"]);
    assert_one_line_failure(&out, "can only be dropped after cut-over");
    assert!(ok(&["migrate-legacy", "status"]).contains("email      added"));

    assert!(ok(&["migrate-legacy", "dual-write"]).contains("phase dual_write"));
    assert!(ok(&["migrate-legacy", "seed", "--rows", "7"]).contains("dual-written"));
    let backfill = ok(&["migrate-legacy", "backfill", "--batch-size", "250"]);
    assert!(
        backfill.contains("legacy_patients.email: sealed 1200 row(s) in 5 batch(es)"),
        "{backfill}"
    );
    let verify = ok(&["migrate-legacy", "verify"]);
    assert!(
        verify.contains(
            "legacy_patients.email: 1207 row(s) checked, 1207 open to exactly their plaintext"
        ),
        "{verify}"
    );
    ok(&["migrate-legacy", "cutover"]);
    assert!(ok(&["migrate-legacy", "seed", "--rows", "3"]).contains("envelopes only"));
    let dropped = ok(&["migrate-legacy", "drop"]);
    assert!(
        dropped.contains("Dropped legacy_patients.email"),
        "{dropped}"
    );
    assert!(ok(&["migrate-legacy", "status"]).contains("email      dropped"));

    // No legacy plaintext is left in the file.
    let mut bytes = std::fs::read(dir.join("clinic.db")).expect("database file");
    bytes.extend(std::fs::read(dir.join("clinic.db-wal")).unwrap_or_default());
    for needle in [
        "ada.examplewood0@example.org",
        "Ada Examplewood",
        "+1 555 0101",
    ] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} still in clinic.db"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
