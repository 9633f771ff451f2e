//! Runs the built `clinic` binary as a user would.

use std::process::Output;

use sea_orm::{ConnectionTrait, Database};

mod support;
use support::*;

/// The demo's generated population, reproduced from its seed.
#[allow(dead_code)]
#[path = "../../src/fake.rs"]
mod fake;

/// The seed in `commands::demo::DEMO_SEED`.
const DEMO_SEED: u64 = 0x00C1_1A1C;

/// Plaintexts the demo stores that must never appear in stored bytes: the followed patient's
/// fields and, for every generated patient, the e-mail, last name, phone and address.
fn demo_plaintexts(population: u32) -> Vec<String> {
    let mut out: Vec<String> = [
        "Examplewood",
        "alba.examplewood@example.org",
        "+1 555 0142",
        "12 Lantern Lane",
        "penicillin intolerance",
        "Sneezing and itchy eyes",
        "Signed on tablet",
        "trees bloomed",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut rng = fake::Rng::new(DEMO_SEED);
    for n in 0..population {
        let p = fake::person(n, &mut rng);
        out.push(p.email);
        out.push(p.last_name);
        out.extend(p.phone);
        out.extend(p.address);
    }
    out.sort();
    out.dedup();
    out
}

fn assert_demo_succeeded(out: &Output) {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    for needle in [
        "1. Registering 1000 fictional patients",
        "#1001: Alba Examplewood <alba.examplewood@example.org>, +1 555 0142, born 1984-03-09",
        "none of this patient's plaintext appears in the stored bytes",
        "patients.phone: cannot open value sealed with key 2147484649: authentication failed",
        "Encrypted<String>(patients.email, key 2147484649, <redacted>)",
        "find by e-mail \"  ALBA.EXAMPLEWOOD@EXAMPLE.ORG  \" found #1001",
        "find by last name + date of birth (\"EXAMPLEWOOD\", 1984-03-09): 1 patient(s)",
        "patients.email_bidx: another row already has this value (unique blind index), so nothing was written",
        "SOAP note #1 (4 sealed sections), consent #1",
        "legacy_patients.email: 300 row(s) checked, 300 open to exactly their plaintext",
        "Dropped legacy_patients.email",
        "patient_keys.wrapped_key         re-encrypted 1001 value(s)",
        "#1001 still reads (Alba Examplewood)",
        "seals nothing any more (in production it could now be retired)",
        "so the demo rotates back to key",
        "Verified: 0 row(s) left",
        "UnknownKeyId: data key",
        "Not reached yet: a backup taken before the erase still holds the wrapped data key",
        "\"audit_log is append-only\"",
        "phone_last4_bidx   12 bits",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
}

/// Fails if any of `plaintexts` is in `bytes`, as text or (PostgreSQL prints `bytea` as hex)
/// as lowercase hex.
fn assert_no_plaintext_in(bytes: &[u8], plaintexts: &[String], what: &str) {
    let lower = bytes.to_ascii_lowercase();
    for p in plaintexts {
        let hex: String = p.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(
            !bytes.windows(p.len()).any(|w| w == p.as_bytes()),
            "{p:?} found in {what}"
        );
        assert!(
            !lower.windows(hex.len()).any(|w| w == hex.as_bytes()),
            "{p:?} found hex-encoded in {what}"
        );
    }
}

/// The SQLite database file and its WAL, if one is left.
fn sqlite_bytes(path: &std::path::Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).expect("database file");
    let wal = format!("{}-wal", path.display());
    bytes.extend(std::fs::read(wal).unwrap_or_default());
    bytes
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
    let file = sqlite_bytes(&dir.join("clinic-demo.db"));
    assert!(file.len() > 100_000, "{} bytes", file.len());
    assert_no_plaintext_in(&file, &demo_plaintexts(1000), "the SQLite file");

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
fn demo_on_server(var: &str) {
    let Some(server) = ServerDb::new(var, "cli_demo") else {
        return;
    };
    let out = clinic()
        .args(["demo", "--database-url", &server.url])
        .output()
        .expect("runs");
    // A plain dump of what the demo stored must show none of the plaintext.
    let dump = block_on(async {
        let admin = Database::connect(&server.admin)
            .await
            .expect("connect to the test server");
        admin_dump(&admin, var, &server.name).await
    });
    assert_demo_succeeded(&out);
    assert!(dump.len() > 100_000, "dump too small: {}", dump.len());
    assert_no_plaintext_in(
        &dump,
        &demo_plaintexts(1000),
        &format!("a dump of every table of {var}'s demo"),
    );
}

/// Every row of every table in schema/database `name`, as bytes.
async fn admin_dump(admin: &sea_orm::DatabaseConnection, var: &str, name: &str) -> Vec<u8> {
    let backend = admin.get_database_backend();
    let query = |sql: String| async move {
        admin
            .query_all_raw(sea_orm::Statement::from_string(backend, sql))
            .await
            .expect("dump query")
    };
    let postgres = var.contains("POSTGRES");
    let tables_sql = format!(
        "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = '{name}'"
    );
    let mut out = Vec::new();
    let tables = query(tables_sql).await;
    assert!(tables.len() >= 8, "{} tables in {name}", tables.len());
    for table in tables {
        let table: String = table
            .try_get("", "t")
            .or_else(|_| {
                table
                    .try_get::<Vec<u8>>("", "t")
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            })
            .expect("table name");
        let sql = if postgres {
            format!("SELECT CAST(t.* AS text) AS r FROM {name}.{table} t")
        } else {
            let columns = query(format!(
                "SELECT column_name AS c FROM information_schema.columns \
                 WHERE table_schema = '{name}' AND table_name = '{table}'"
            ))
            .await;
            let columns: Vec<String> = columns
                .iter()
                .map(|c| {
                    let c: String = c
                        .try_get("", "c")
                        .or_else(|_| {
                            c.try_get::<Vec<u8>>("", "c")
                                .map(|b| String::from_utf8_lossy(&b).into_owned())
                        })
                        .expect("column name");
                    format!("`{c}`")
                })
                .collect();
            format!(
                "SELECT CONCAT_WS('|', {}) AS r FROM {name}.`{table}`",
                columns.join(", ")
            )
        };
        for row in query(sql).await {
            let value: Vec<u8> = row
                .try_get::<Vec<u8>>("", "r")
                .or_else(|_| row.try_get::<String>("", "r").map(String::into_bytes))
                .expect("row text");
            out.extend_from_slice(&value);
            out.push(b'\n');
        }
    }
    out
}

#[test]
fn demo_on_postgres() {
    demo_on_server("TEST_POSTGRES_URL");
}

#[test]
fn demo_on_mysql() {
    demo_on_server("TEST_MYSQL_URL");
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
    assert!(ok(&["init"]).contains(&format!(
        "Applied {} migration(s)",
        <migration::Migrator as migration::MigratorTrait>::migrations().len()
    )));
    assert!(ok(&["migrate-legacy", "seed", "--rows", "1200"]).contains("plaintext only"));
    let status = ok(&["migrate-legacy", "status"]);
    assert!(status.contains("legacy_patients: 1200 row(s)"), "{status}");
    assert!(status.contains("email      added"), "{status}");

    // Out of order: each refused with one line naming the real reason, and the phase stays.
    let out = run(&["migrate-legacy", "backfill"]);
    assert_one_line_failure(
        &out,
        "cannot move the migration from `added` to `backfilling`: every writer must dual-write first",
    );
    let out = run(&["migrate-legacy", "cutover"]);
    assert_one_line_failure(&out, "every writer must dual-write first");
    let out = run(&["migrate-legacy", "drop"]);
    assert_one_line_failure(&out, "every writer must dual-write first");
    let out = run(&["migrate-legacy", "backfill", "--batch-size", "0"]);
    assert!(!out.status.success());
    assert!(ok(&["migrate-legacy", "status"]).contains("email      added"));

    assert!(ok(&["migrate-legacy", "dual-write"]).contains("phase dual_write"));
    assert!(ok(&["migrate-legacy", "seed", "--rows", "7"]).contains("dual-written"));
    let backfill = ok(&["migrate-legacy", "backfill", "--batch-size", "250"]);
    for line in [
        "legacy_patients.full_name: sealed 1200 value(s).",
        "legacy_patients.email: sealed 1200 value(s).",
        "legacy_patients.phone: sealed 800 value(s).",
        "This worker sealed 3200 value(s) in 1200 row(s) in 5 batch(es).",
        "Phase backfilled.",
    ] {
        assert!(backfill.contains(line), "{line} not in {backfill}");
    }
    // A restart leaves the finished columns alone.
    let again = ok(&["migrate-legacy", "backfill"]);
    assert!(
        again.contains("Already past the backfill, left alone: full_name, email, phone."),
        "{again}"
    );
    let verify = ok(&["migrate-legacy", "verify"]);
    assert!(
        verify.contains(
            "legacy_patients.email: 1207 row(s) checked, 1207 open to exactly their plaintext, 0 NULL in both; phase verified."
        ),
        "{verify}"
    );

    // An old instance, still writing plaintext only, changes a verified row: verify fails,
    // demotes, and cut-over is refused until repair and a passing verify.
    let db = dir.join("clinic.db");
    sql(
        &db,
        "UPDATE legacy_patients SET email = 'moved-10@example.net' WHERE id = 10",
    );
    let out = run(&["migrate-legacy", "verify"]);
    assert_one_line_failure(&out, "run `clinic migrate-legacy repair`");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("1 row(s) do not match (ids: 10)"),
        "{stdout}"
    );
    assert!(ok(&["migrate-legacy", "status"]).contains("email      backfilled"));
    let out = run(&["migrate-legacy", "cutover"]);
    assert_one_line_failure(&out, "cut-over needs a passing verify");
    let repair = ok(&["migrate-legacy", "repair"]);
    assert!(
        repair.contains("Repair round 1: re-sealed 1 value(s) in 1 row(s).")
            && repair.contains("every value matches"),
        "{repair}"
    );
    let cut = ok(&["migrate-legacy", "cutover"]);
    assert!(
        cut.contains("Re-checked 1207 row(s) with writers held off"),
        "{cut}"
    );
    assert!(ok(&["migrate-legacy", "cutover"]).contains("Already cut over"));
    assert!(ok(&["migrate-legacy", "seed", "--rows", "3"]).contains("envelopes only"));

    // After cut-over an old instance inserts a plaintext-only row: drop refuses, naming it,
    // and drops nothing; repair seals it; then the drop goes through.
    sql(
        &db,
        "INSERT INTO legacy_patients (id, full_name, email) VALUES (5000, 'Late Writer', 'late@example.org')",
    );
    let out = run(&["migrate-legacy", "drop"]);
    assert_one_line_failure(
        &out,
        "drop refused: 1 row(s) hold plaintext that no envelope carries",
    );
    assert!(
        text(&out.stderr).contains("(ids: 5000)"),
        "{}",
        text(&out.stderr)
    );
    assert!(ok(&["migrate-legacy", "status"]).contains("email      cut_over"));
    assert_eq!(
        sql_count(
            &db,
            "SELECT count(*) FROM legacy_patients WHERE email IS NOT NULL"
        ),
        1208,
        "the plaintext columns are untouched by the refused drop"
    );
    let repair = ok(&["migrate-legacy", "repair"]);
    assert!(
        repair.contains("re-sealed 2 value(s) in 1 row(s)"),
        "{repair}"
    );
    let dropped = ok(&["migrate-legacy", "drop"]);
    assert!(
        dropped.contains("Dropped legacy_patients.email")
            && dropped.contains("Checked 1211 row(s) under an exclusive lock first"),
        "{dropped}"
    );
    assert!(ok(&["migrate-legacy", "status"]).contains("email      purged"));
    // Re-running finishes nothing twice and fails nothing.
    let again = ok(&["migrate-legacy", "drop"]);
    assert!(
        again.contains("Already dropped: full_name, email, phone."),
        "{again}"
    );
    // The late row's values survived the drop: its envelopes open to them.
    let shown = ok(&["migrate-legacy", "status"]);
    assert!(shown.contains("legacy_patients: 1211 row(s)"), "{shown}");

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

#[test]
fn every_command_on_sqlite() {
    let s = Session::new("commands");
    // Before init: a pointer to `clinic init`, not a SQL error.
    s.refused(&["patient", "list"], "run `clinic init` first");
    assert!(s.ok(&["init"]).contains(&format!(
        "Applied {} migration(s)",
        <migration::Migrator as migration::MigratorTrait>::migrations().len()
    )));
    assert!(s.ok(&["init"]).contains("Applied 0 migration(s)"));

    let add = |first: &str, last: &str, email: &str, phone: &str, dob: &str| -> i64 {
        let v = s.json(&[
            "patient",
            "add",
            "--first-name",
            first,
            "--last-name",
            last,
            "--email",
            email,
            "--phone",
            phone,
            "--dob",
            dob,
            "--address",
            "7 Quarry Lane, Fictionville",
            "--history",
            "Mild asthma since childhood.",
        ]);
        v["id"].as_i64().expect("id")
    };
    let ada = add(
        "Ada",
        "Testwood",
        "Ada.Testwood@Example.org",
        "+1 555 0177",
        "1980-05-06",
    );
    let ben = add(
        "Ben",
        "Mockford",
        "ben.mockford@example.org",
        "+1 555 0277",
        "1975-01-02",
    );
    assert_ne!(ada, ben);
    let ada_s = ada.to_string();
    let ben_s = ben.to_string();

    // Bad input: one line each, nothing written.
    s.refused(
        &[
            "patient",
            "add",
            "--first-name",
            "X",
            "--last-name",
            "Y",
            "--email",
            "nope",
            "--dob",
            "1990-01-01",
        ],
        "invalid e-mail address",
    );
    s.refused(
        &[
            "patient",
            "add",
            "--first-name",
            "X",
            "--last-name",
            "Y",
            "--email",
            "x@example.org",
            "--dob",
            "1990-31-01",
        ],
        "invalid date of birth: it must be a real date written YYYY-MM-DD",
    );
    s.refused(
        &[
            "patient",
            "add",
            "--first-name",
            "X",
            "--email",
            "x@example.org",
            "--dob",
            "1990-01-01",
        ],
        "--last-name is required",
    );
    s.refused(
        &[
            "patient",
            "add",
            "--first-name",
            "Eve",
            "--last-name",
            "Twin",
            "--email",
            " ADA.TESTWOOD@example.org",
            "--dob",
            "1990-01-01",
        ],
        "another patient already has this e-mail",
    );
    s.refused(&["patient", "show", "999"], "no patient with id 999");
    s.refused(
        &["patient", "find", "--phone-last4", "12a4"],
        "expected exactly four digits",
    );
    s.refused(&["patient", "erase", &ben_s], "run again with --yes");
    assert_eq!(
        s.json(&["patient", "list"]).as_array().map(Vec::len),
        Some(2)
    );

    // show / list / find, text and JSON.
    let shown = s.ok(&["patient", "show", &ada_s]);
    for needle in [
        "Ada Testwood",
        "Ada.Testwood@Example.org",
        "+1 555 0177",
        "1980-05-06",
        "Mild asthma",
    ] {
        assert!(shown.contains(needle), "{needle} not in {shown}");
    }
    let v = s.json(&["patient", "show", &ada_s]);
    assert_eq!(v["email"], "Ada.Testwood@Example.org");
    assert_eq!(v["date_of_birth"], "1980-05-06");
    let list = s.ok(&["patient", "list"]);
    assert!(
        list.lines()
            .next()
            .is_some_and(|l| l.contains("NAME") && l.contains("E-MAIL")),
        "{list}"
    );
    assert!(
        list.contains("Ben Mockford") && list.contains("2 of 2 patient(s)"),
        "{list}"
    );
    let found = s.json(&["patient", "find", "--email", "  ada.testwood@EXAMPLE.org "]);
    assert_eq!(found[0]["id"].as_i64(), Some(ada));
    assert_eq!(found.as_array().map(Vec::len), Some(1));
    let found = s.json(&["patient", "find", "--phone-last4", "0277"]);
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(found[0]["id"].as_i64(), Some(ben));
    let found = s.json(&["patient", "find", "--name-dob", "MOCKFORD", "1975-01-02"]);
    assert_eq!(found[0]["id"].as_i64(), Some(ben));
    assert!(
        s.ok(&["patient", "find", "--email", "nobody@example.org"])
            .contains("No patient matches")
    );

    // update: the blind index follows the new e-mail.
    s.ok(&[
        "patient",
        "update",
        &ben_s,
        "--email",
        "ben.m@example.org",
        "--active",
        "false",
    ]);
    assert_eq!(
        s.json(&["patient", "find", "--email", "ben.mockford@example.org"])
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let found = s.json(&["patient", "find", "--email", "BEN.M@example.org"]);
    assert_eq!(found[0]["active"], false);
    s.refused(&["patient", "update", &ben_s], "nothing to change");
    s.refused(
        &[
            "patient",
            "update",
            &ben_s,
            "--email",
            "ada.testwood@example.org",
        ],
        "already has this e-mail",
    );

    // notes, consent, transcripts.
    s.ok(&[
        "note",
        "add",
        &ada_s,
        "--author",
        "dr.x",
        "--subjective",
        "Cough for a week.",
        "--objective",
        "Lungs clear.",
        "--assessment",
        "Viral bronchitis.",
        "--plan",
        "Rest, fluids.",
    ]);
    let notes = s.ok(&["note", "list", &ada_s]);
    assert!(
        notes.contains("S  Cough for a week.") && notes.contains("P  Rest, fluids."),
        "{notes}"
    );
    s.refused(
        &[
            "note",
            "add",
            "999",
            "--author",
            "a",
            "--subjective",
            "s",
            "--objective",
            "o",
            "--assessment",
            "a",
            "--plan",
            "p",
        ],
        "no patient with id 999",
    );
    s.ok(&[
        "consent",
        "record",
        &ada_s,
        "--scope",
        "recording",
        "--method",
        "verbal",
        "--signature",
        "Witnessed by nurse Example",
    ]);
    s.ok(&[
        "consent",
        "record",
        &ada_s,
        "--scope",
        "research",
        "--method",
        "written",
        "--signature",
        "Declined on paper",
        "--refused",
    ]);
    let consents = s.json(&["consent", "show", &ada_s]);
    assert_eq!(consents[0]["method"], "verbal");
    assert_eq!(consents[1]["granted"], false);
    assert_eq!(consents[0]["signature"], "Witnessed by nurse Example");
    assert!(s.ok(&["consent", "show", &ada_s]).contains("REFUSED"));
    let file = s.dir.join("visit.json");
    std::fs::write(
        &file,
        r#"{"text": "Any wheezing? Only at night.", "segments": [
        {"speaker": "clinician", "start_ms": 0, "end_ms": 1500, "text": "Any wheezing?"},
        {"speaker": "patient", "start_ms": 1600, "end_ms": 3000, "text": "Only at night."}]}"#,
    )
    .expect("write");
    let t = s.json(&["transcript", "import", &ada_s, file.to_str().expect("path")]);
    let t_id = t["id"].as_i64().expect("id").to_string();
    let shown = s.ok(&["transcript", "show", &t_id]);
    assert!(shown.contains("patient    Only at night."), "{shown}");
    assert_eq!(
        s.json(&["transcript", "show", &t_id])["segments"][1]["speaker"],
        "patient"
    );
    std::fs::write(&file, r#"{"text": "x", "segments": [{"who": "a"}]}"#).expect("write");
    s.refused(
        &["transcript", "import", &ada_s, file.to_str().expect("path")],
        "is not a transcript file",
    );
    s.refused(
        &["transcript", "import", &ada_s, "/no/such/file.json"],
        "cannot read /no/such/file.json",
    );
    s.refused(&["transcript", "show", "999"], "no transcript with id 999");

    // Every read above is in the audit log, with the actor.
    let audit = s.json(&["audit", "list", "--patient", &ada_s, "--limit", "500"]);
    let entries = audit.as_array().expect("array");
    let reads = entries.iter().filter(|e| e["action"] == "read").count();
    assert!(reads >= 10, "{reads} reads audited: {audit}");
    assert!(
        entries
            .iter()
            .any(|e| e["record"] == format!("transcripts#{t_id}"))
    );
    assert!(entries.iter().all(|e| e["actor"] == "clinic-cli"));
    assert!(
        s.ok(&["--actor", "nurse.kim", "patient", "show", &ada_s])
            .contains("Ada")
    );
    assert_eq!(
        s.json(&["audit", "list", "--limit", "1"])[0]["actor"],
        "nurse.kim"
    );
    assert!(s.ok(&["audit", "list"]).contains("WHEN (UTC)"));

    // index report.
    let report = s.json(&["index", "report"]);
    let names: Vec<&str> = report
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["index"].as_str())
        .collect();
    assert_eq!(names, ["email_bidx", "phone_last4_bidx", "name_dob_bidx"]);
    assert_eq!(report[0]["distinct"], 2);
    assert!(s.ok(&["index", "report"]).contains("truncated"));

    // keys status, then a rotation to a new key 2.
    let status = s.json(&["keys", "status"]);
    assert_eq!(status["active_key"], 1);
    assert_eq!(status["patient_data_keys"], 2);
    let mut s2_env = s.env.clone();
    let key1 = s
        .env
        .iter()
        .find(|(k, _)| k == "ENCRYPTED_COLUMNS_KEYS")
        .map(|(_, v)| v.clone())
        .expect("key");
    let fresh = generated_keys();
    let key2 = fresh
        .iter()
        .find(|(k, _)| k == "ENCRYPTED_COLUMNS_KEYS")
        .map(|(_, v)| v.replacen("1:", "2:", 1))
        .expect("key");
    for (k, v) in s2_env.iter_mut() {
        if k == "ENCRYPTED_COLUMNS_KEYS" {
            *v = format!("{key1},{key2}");
        }
    }
    s2_env.push(("ENCRYPTED_COLUMNS_ACTIVE_KEY".into(), "2".into()));
    let s2 = s.with_env(s2_env);
    let rotated = s2.ok(&["keys", "rotate", "--batch-size", "1"]);
    assert!(
        rotated.contains("patient_keys.wrapped_key         re-encrypted 2 value(s)"),
        "{rotated}"
    );
    assert!(rotated.contains("Key(s) 1 now seal nothing"), "{rotated}");
    let status = s2.json(&["keys", "status"]);
    assert_eq!(status["retirable_keys"], serde_json::json!([1]));
    // With key 1 gone from the environment, everything still reads.
    let mut s3_env = s2.env.clone();
    for (k, v) in s3_env.iter_mut() {
        if k == "ENCRYPTED_COLUMNS_KEYS" {
            *v = key2.clone();
        }
    }
    let s3 = s.with_env(s3_env);
    assert!(s3.ok(&["patient", "show", &ada_s]).contains("Ada Testwood"));

    // Wrong key: the same id with other bytes is refused in one line by its check value in
    // the key store (issue 12), before it could open (or seal) anything.
    // (Ada's key is wrapped by key 2 now, so the impostor is a key 2 with other bytes.)
    let impostor: Vec<(String, String)> = generated_keys()
        .iter()
        .map(|(k, v)| {
            if k == "ENCRYPTED_COLUMNS_KEYS" {
                (k.clone(), v.replacen("1:", "2:", 1))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    let wrong = s.with_env(impostor);
    let out = wrong.run(&["patient", "show", &ada_s]);
    assert_one_line_failure(&out, "key 2 in ENCRYPTED_COLUMNS_KEYS is not the key");

    // Erase Ben: key destroyed, rows gone, his audit trail stays but its details are sealed.
    // From here on only key 2 is loaded (key 1 is retired).
    let erased = s3.ok(&["patient", "erase", &ben_s, "--yes"]);
    assert!(erased.contains("Erased patient #"), "{erased}");
    assert!(erased.contains("0 row(s) left"), "{erased}");
    s3.refused(
        &["patient", "show", &ben_s],
        &format!("no patient with id {ben}"),
    );
    let trail = s3.json(&["audit", "list", "--patient", &ben_s]);
    let trail = trail.as_array().expect("array");
    assert!(trail.iter().any(|e| e["action"] == "erase"));
    assert!(
        trail
            .iter()
            .any(|e| e["details"] == "(unreadable: the patient's key was destroyed)"),
        "{trail:?}"
    );
    assert_eq!(
        s3.json(&["patient", "list"]).as_array().map(Vec::len),
        Some(1)
    );

    // No plaintext of what was stored is in the database file.
    let plain: Vec<String> = [
        "Testwood",
        "Mockford",
        "Ada.Testwood@Example.org",
        "ben.m@example.org",
        "+1 555 0177",
        "Quarry Lane",
        "Mild asthma",
        "Cough for a week",
        "Witnessed by nurse",
        "Only at night",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_no_plaintext_in(&sqlite_bytes(&s.dir.join("clinic.db")), &plain, "clinic.db");
}

#[test]
fn missing_keys_and_unreachable_databases_fail_in_one_line() {
    let dir = fresh_dir("nokeys");
    let out = clinic()
        .args(["patient", "list"])
        .current_dir(&dir)
        .output()
        .expect("runs");
    assert_one_line_failure(&out, "ENCRYPTED_COLUMNS_KEYS");
    assert!(
        !dir.join("clinic.db").exists(),
        "nothing created without keys"
    );
    let s = Session::new("unreachable");
    s.refused(
        &[
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
            "patient",
            "list",
        ],
        "cannot connect to the postgres database at 127.0.0.1:1/none",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn debug_logs_of_the_demo_hold_no_phi_and_no_key_material() {
    let s = Session::new("logs");
    let mut cmd = clinic();
    cmd.args(["demo", "--patients", "50"])
        .current_dir(&s.dir)
        .env("RUST_LOG", "trace");
    for (k, v) in &s.env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logs = out.stderr;
    assert!(
        logs.len() > 1_000,
        "expected debug logs, got {} bytes",
        logs.len()
    );
    let mut secrets = demo_plaintexts(50);
    for (_, value) in &s.env {
        for entry in value.split(',') {
            let b64 = entry.split_once(':').map_or(entry, |(_, k)| k);
            secrets.push(b64.to_string());
        }
    }
    assert_no_plaintext_in(&logs, &secrets, "RUST_LOG=trace output");
}

mod audit_chain;
#[cfg(feature = "aws-kms")]
mod aws_kms;
mod binding;
mod demo_safety;
mod hostile_input;
mod keys;
mod providers;
mod subject_keys;
