//! `clinic demo` never destroys a database it did not make, and leaves what it stores
//! readable with the keys it was run with (issue 11, item 1).

use super::*;

/// Runs `clinic` in `dir` with `env` set.
fn run_with(dir: &std::path::Path, env: &[(String, String)], args: &[&str]) -> Output {
    let mut cmd = clinic();
    cmd.args(args).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("runs")
}

/// Like [`run_with`], and fails the test unless the command succeeded; returns stdout.
fn ok_with(dir: &std::path::Path, env: &[(String, String)], args: &[&str]) -> String {
    let out = run_with(dir, env, args);
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("not in the keyring") && !stdout.contains("not loaded"),
        "{args:?}: {stdout}"
    );
    stdout
}

/// A refusal: non-zero exit, one `clinic: ` line on stderr naming `needle`, nothing on
/// stdout (the demo refuses before it says anything).
fn assert_refused(out: &Output, needle: &str) {
    assert_one_line_failure(out, needle);
    assert!(
        out.stdout.is_empty(),
        "printed before refusing:\n{}",
        text(&out.stdout)
    );
}

/// The id of the patient the demo follows, from its "Patient #N. What the database holds"
/// line.
fn alba_id(stdout: &str) -> String {
    stdout
        .lines()
        .find(|l| l.contains(". What the database holds for it"))
        .and_then(|l| l.split_once('#'))
        .and_then(|(_, rest)| rest.split_once('.'))
        .map(|(id, _)| id.to_string())
        .unwrap_or_else(|| panic!("no followed patient in:\n{stdout}"))
}

/// Every file in `dir` with its bytes, to show that a refused run left the directory alone
/// (no file changed, none removed, no journal or WAL file created).
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read"))
        })
        .collect();
    files.sort();
    files
}

/// A clinic database set up the way a user would, with one patient added through the CLI:
/// returns the patient's id.
fn user_clinic_db(dir: &std::path::Path, env: &[(String, String)]) -> String {
    ok_with(dir, env, &["init"]);
    let added = ok_with(
        dir,
        env,
        &[
            "--json",
            "patient",
            "add",
            "--first-name",
            "Ada",
            "--last-name",
            "Keepwood",
            "--email",
            "ada.keepwood@example.org",
            "--dob",
            "1980-05-06",
            "--history",
            "Must survive the demo.",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&added).expect("JSON");
    v["id"].as_i64().expect("id").to_string()
}

/// Reads back, with `env`, everything a demo run with `patients` generated patients stored at
/// `url`, through the commands a user would run next.
fn assert_demo_data_readable(
    dir: &std::path::Path,
    env: &[(String, String)],
    url: &str,
    demo_stdout: &str,
    patients: usize,
) {
    let alba = alba_id(demo_stdout);
    let listed = ok_with(
        dir,
        env,
        &["--database-url", url, "--json", "patient", "list"],
    );
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    // The generated patients and Alba, less the one the demo erased.
    assert_eq!(listed.as_array().map(Vec::len), Some(patients), "{listed}");
    assert!(
        ok_with(dir, env, &["--database-url", url, "patient", "list"]).contains("Alba Examplewood")
    );
    let shown = ok_with(dir, env, &["--database-url", url, "patient", "show", &alba]);
    assert!(
        shown.contains("alba.examplewood@example.org") && shown.contains("penicillin"),
        "{shown}"
    );
    let status = ok_with(
        dir,
        env,
        &["--database-url", url, "--json", "keys", "status"],
    );
    let status: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    // A JSON number prints as the map keys do: "1".
    let active = status["active_key"].to_string();
    let by_column = status["values_by_key"].as_object().expect("values_by_key");
    assert!(
        by_column.contains_key("patient_keys.wrapped_key"),
        "{status}"
    );
    for (column, by_key) in by_column {
        let keys: Vec<&String> = by_key.as_object().expect("by key").keys().collect();
        let expected: Vec<&String> = if column == "patient_keys.wrapped_key" {
            vec![&active]
        } else {
            keys.iter().copied().filter(|k| **k == active).collect()
        };
        assert_eq!(
            keys, expected,
            "{column} holds values under keys {keys:?}, the active key is {active}"
        );
    }
    let status = ok_with(dir, env, &["--database-url", url, "keys", "status"]);
    assert!(
        status.contains("Everything is sealed with the active key")
            || status.contains("seal nothing any more"),
        "{status}"
    );
}

#[test]
fn demo_refuses_a_non_empty_sqlite_database_given_by_url_and_leaves_it_alone() {
    let dir = fresh_dir("demo-refuses-url");
    let env = generated_keys();
    let ada = user_clinic_db(&dir, &env);
    let db = dir.join("clinic.db");
    let before = snapshot(&dir);
    for url in [
        format!("sqlite://{}", db.display()),
        format!("sqlite://{}?mode=rwc", db.display()),
    ] {
        let out = run_with(&dir, &env, &["demo", "--database-url", &url]);
        assert_refused(&out, "is not empty");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("table(s): ")
                && stderr.contains("audit_log, clinical_notes")
                && stderr.contains("empty database"),
            "{stderr}"
        );
        // The same through DATABASE_URL, which `demo` honours like every command.
        let mut cmd = clinic();
        cmd.arg("demo").current_dir(&dir).env("DATABASE_URL", &url);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        assert_refused(&cmd.output().expect("runs"), "is not empty");
    }
    assert_eq!(snapshot(&dir), before, "the refused runs changed a file");
    assert!(!dir.join("clinic-demo.db").exists());
    assert_eq!(sql_count(&db, "SELECT count(*) FROM patients"), 1);
    let shown = ok_with(&dir, &env, &["patient", "show", &ada]);
    assert!(
        shown.contains("Ada Keepwood") && shown.contains("Must survive the demo."),
        "{shown}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_refuses_a_clinic_demo_db_it_did_not_make_and_leaves_it_byte_identical() {
    let env = generated_keys();
    // Someone's clinic database that happens to carry the demo's file name.
    let dir = fresh_dir("demo-not-ours");
    let ada = user_clinic_db(&dir, &env);
    std::fs::rename(dir.join("clinic.db"), dir.join("clinic-demo.db")).expect("rename");
    let before = snapshot(&dir);
    let out = run_with(&dir, &env, &["demo", "--patients", "5"]);
    assert_refused(
        &out,
        "clinic-demo.db in this directory was not made by `clinic demo`",
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("table(s): ")
            && stderr.contains("move it away")
            && stderr.contains("--database-url"),
        "{stderr}"
    );
    // Without keys too: the throwaway-key path is no licence to delete.
    let out = run_with(&dir, &[], &["demo", "--patients", "5"]);
    assert_refused(&out, "was not made by `clinic demo`");
    assert_eq!(
        snapshot(&dir),
        before,
        "the refused runs changed the directory"
    );
    let shown = ok_with(
        &dir,
        &env,
        &[
            "--database-url",
            "sqlite://clinic-demo.db",
            "patient",
            "show",
            &ada,
        ],
    );
    assert!(shown.contains("Ada Keepwood"), "{shown}");
    let _ = std::fs::remove_dir_all(&dir);

    // A file that is not a database at all.
    let dir = fresh_dir("demo-not-sqlite");
    std::fs::write(dir.join("clinic-demo.db"), "my notes, not a database\n").expect("write");
    let before = snapshot(&dir);
    let out = run_with(&dir, &env, &["demo", "--patients", "5"]);
    assert_refused(
        &out,
        "clinic-demo.db in this directory is not an SQLite database",
    );
    assert_eq!(snapshot(&dir), before);

    // A directory of that name.
    std::fs::remove_file(dir.join("clinic-demo.db")).expect("remove");
    std::fs::create_dir(dir.join("clinic-demo.db")).expect("mkdir");
    std::fs::write(dir.join("clinic-demo.db").join("keep"), "x").expect("write");
    let out = run_with(&dir, &env, &["demo", "--patients", "5"]);
    assert_refused(&out, "is not a regular file");
    assert!(dir.join("clinic-demo.db").join("keep").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_reruns_on_its_own_file_and_refuses_it_by_url() {
    let dir = fresh_dir("demo-own-file");
    let env = generated_keys();
    let first = ok_with(&dir, &env, &["demo", "--patients", "20"]);
    assert!(first.contains("Creating clinic-demo.db"), "{first}");
    assert!(
        first.contains("clinic --database-url sqlite://clinic-demo.db patient list"),
        "{first}"
    );
    assert_demo_data_readable(&dir, &env, "sqlite://clinic-demo.db", &first, 20);
    let before = snapshot(&dir);

    // Given by URL, the demo's own file is refused: a database it is given is never reset.
    let url = format!("sqlite://{}", dir.join("clinic-demo.db").display());
    let out = run_with(&dir, &env, &["demo", "--database-url", &url]);
    assert_refused(&out, "holds a previous demo run");
    assert!(
        text(&out.stderr).contains("drop it or use an empty database"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(snapshot(&dir), before);

    // Without a URL it is replaced, and the new run reads back as well.
    let again = ok_with(&dir, &env, &["demo", "--patients", "20"]);
    assert!(
        again.contains("Starting from a fresh clinic-demo.db"),
        "{again}"
    );
    assert_demo_data_readable(&dir, &env, "sqlite://clinic-demo.db", &again, 20);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_with_lasting_keys_on_a_fresh_sqlite_url_leaves_everything_readable() {
    let dir = fresh_dir("demo-lasting-sqlite");
    let env = generated_keys();
    let url = format!("sqlite://{}?mode=rwc", dir.join("mine.db").display());
    let out = ok_with(
        &dir,
        &env,
        &["demo", "--patients", "25", "--database-url", &url],
    );
    assert!(
        out.contains(
            "Key 2 existed only in this process, so the demo rotates back to key 1: \
             your ENCRYPTED_COLUMNS_KEYS still opens everything"
        ),
        "{out}"
    );
    assert!(
        out.contains("Re-wrapped 26 data keys and re-sealed 800 legacy value(s) under key 1 again"),
        "{out}"
    );
    assert!(
        out.contains("clinic --database-url <the same URL> patient list"),
        "{out}"
    );
    assert_demo_data_readable(&dir, &env, &url, &out, 25);
    assert!(!dir.join("clinic-demo.db").exists(), "the URL was used");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_with_keys_1_and_2_active_1_leaves_everything_readable() {
    let dir = fresh_dir("demo-two-keys");
    let one = generated_keys();
    let two = generated_keys();
    let key = |env: &[(String, String)], id: &str| {
        env.iter()
            .find(|(k, _)| k == "ENCRYPTED_COLUMNS_KEYS")
            .map(|(_, v)| v.replacen("1:", &format!("{id}:"), 1))
            .expect("key")
    };
    let env: Vec<(String, String)> = one
        .iter()
        .map(|(k, v)| {
            if k == "ENCRYPTED_COLUMNS_KEYS" {
                (k.clone(), format!("{},{}", key(&one, "1"), key(&two, "2")))
            } else {
                (k.clone(), v.clone())
            }
        })
        .chain([("ENCRYPTED_COLUMNS_ACTIVE_KEY".to_string(), "1".to_string())])
        .collect();
    let out = ok_with(&dir, &env, &["demo", "--patients", "15"]);
    // Key 2 is the user's, so the demo's throwaway key must be 3, and the data ends on key 1.
    assert!(
        out.contains("A new key 3 is added and made active"),
        "{out}"
    );
    assert!(out.contains("rotates back to key 1"), "{out}");
    assert_demo_data_readable(&dir, &env, "sqlite://clinic-demo.db", &out, 15);
    let status = ok_with(
        &dir,
        &env,
        &[
            "--database-url",
            "sqlite://clinic-demo.db",
            "--json",
            "keys",
            "status",
        ],
    );
    let status: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    assert_eq!(status["active_key"], 1);
    assert_eq!(status["retirable_keys"], serde_json::json!([2]));
    let _ = std::fs::remove_dir_all(&dir);
}

fn demo_refuses_a_non_empty_server_database(var: &str) {
    let Some(server) = ServerDb::new(var, "demo_safety") else {
        return;
    };
    let name = &server.name;
    server.exec(&format!(
        "CREATE TABLE {name}.precious (id INT PRIMARY KEY, note VARCHAR(40))"
    ));
    server.exec(&format!(
        "INSERT INTO {name}.precious (id, note) VALUES (1, 'irreplaceable')"
    ));
    let dir = fresh_dir("demo-refuses-server");
    let env = generated_keys();
    let out = run_with(&dir, &env, &["demo", "--database-url", &server.url]);
    assert_refused(&out, "is not empty (1 table(s): precious)");
    assert!(
        text(&out.stderr).contains(name.as_str()),
        "{}",
        text(&out.stderr)
    );
    // Without keys (throwaway ones) the same.
    let out = run_with(&dir, &[], &["demo", "--database-url", &server.url]);
    assert_refused(&out, "is not empty");
    assert_eq!(server.tables(), 1, "the refused demo created tables");
    assert_eq!(
        server.count(&format!(
            "SELECT count(*) FROM {name}.precious WHERE note = 'irreplaceable'"
        )),
        1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_refuses_a_non_empty_postgres_schema() {
    demo_refuses_a_non_empty_server_database("TEST_POSTGRES_URL");
}

#[test]
fn demo_refuses_a_non_empty_mysql_database() {
    demo_refuses_a_non_empty_server_database("TEST_MYSQL_URL");
}

fn demo_with_lasting_keys_on_a_server_leaves_everything_readable(var: &str) {
    let Some(server) = ServerDb::new(var, "demo_safety") else {
        return;
    };
    let dir = fresh_dir("demo-lasting-server");
    let env = generated_keys();
    let out = ok_with(
        &dir,
        &env,
        &["demo", "--patients", "20", "--database-url", &server.url],
    );
    assert!(out.contains("rotates back to key 1"), "{out}");
    assert_demo_data_readable(&dir, &env, &server.url, &out, 20);
    // The demo's database is never reset when given again.
    let tables = server.tables();
    let out = run_with(&dir, &env, &["demo", "--database-url", &server.url]);
    assert_refused(&out, "holds a previous demo run");
    assert_eq!(server.tables(), tables);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_with_lasting_keys_on_postgres_leaves_everything_readable() {
    demo_with_lasting_keys_on_a_server_leaves_everything_readable("TEST_POSTGRES_URL");
}

#[test]
fn demo_with_lasting_keys_on_mysql_leaves_everything_readable() {
    demo_with_lasting_keys_on_a_server_leaves_everything_readable("TEST_MYSQL_URL");
}
