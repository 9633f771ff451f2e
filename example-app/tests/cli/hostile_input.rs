//! Hostile and damaged input (issue 11, items 6, 7 and 9): out-of-range numbers, database URLs
//! with passwords, malformed dates and transcript files, terminal escapes in stored text, a
//! tampered `key_id`, and blind indexes left behind by an older index size or blind-index key.
//! Each bad input is one line on stderr and a non-zero exit — never a panic — and no message
//! repeats a password, a typed value or a value from a file.

use std::collections::BTreeMap;

use encrypted_columns::Keyring;
use encrypted_columns::blind_index::{BlindIndex, IndexInput, Pipeline};

use super::*;

/// Fails unless `out` is a refusal: non-zero exit, no panic, and stderr either one line
/// `clinic: …` or clap's own usage error (`error: …`, which may span lines).
fn assert_refused(out: &Output, what: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{what}: accepted; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    if stderr.starts_with("error: ") {
        return;
    }
    assert!(stderr.starts_with("clinic: "), "{what}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
}

/// Adds a patient through the CLI; returns its id.
fn add_patient(s: &Session, first: &str, email: &str, phone: &str) -> i64 {
    s.add_patient(first, "Hostileton", email, &["--phone", phone])
}

/// How many patients `patient find` returns for `by` (e.g. `["--email", "x@example.org"]`).
fn found(s: &Session, by: &[&str]) -> usize {
    let mut args = vec!["patient", "find"];
    args.extend_from_slice(by);
    s.json(&args).as_array().map_or(0, Vec::len)
}

/// A session with `clinic init` run.
fn initialized(tag: &str) -> Session {
    let s = Session::new(tag);
    s.ok(&["init"]);
    s
}

#[test]
fn numeric_arguments_out_of_range_are_refused_without_a_panic() {
    let s = initialized("numbers");
    add_patient(&s, "Ada", "ada@example.org", "+1 555 0177");
    let huge = "18446744073709551615";
    for args in [
        &["patient", "list", "--limit", huge][..],
        &["patient", "list", "--limit", "0"],
        &["patient", "list", "--offset", huge],
        &["patient", "list", "--offset", "2147483648"],
        &["audit", "list", "--limit", huge],
        &["keys", "rotate", "--batch-size", "0"],
        &["keys", "rotate", "--batch-size", huge],
        &["index", "rebuild", "--batch-size", "0"],
        &["index", "rebuild", "--batch-size", "10001"],
        &["index", "rebuild", "--batch-size", huge],
        &["migrate-legacy", "seed", "--rows", "0"],
        &["migrate-legacy", "seed", "--rows", "1000001"],
        &["migrate-legacy", "seed", "--rows", huge],
        &["migrate-legacy", "backfill", "--batch-size", huge],
        &["migrate-legacy", "backfill", "--throttle-ms", huge],
        &["migrate-legacy", "backfill", "--lease-secs", huge],
        &["migrate-legacy", "repair", "--batch-size", huge],
        &["demo", "--patients", "0"],
        &["demo", "--patients", huge],
        &["patient", "show", "2147483648"],
        &["note", "list", huge],
        &["transcript", "show", "-2147483649"],
    ] {
        assert_refused(&s.run(args), &args.join(" "));
    }
    // In range at the edges: refused only for what the data says, in the clinic's words.
    s.refused(&["patient", "show", "2147483647"], "no patient with id");
    s.refused(
        &["patient", "show", "--", "-2147483648"],
        "no patient with id",
    );
    let listed = s.json(&[
        "patient",
        "list",
        "--limit",
        "10000",
        "--offset",
        "2147483647",
    ]);
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
}

#[test]
fn a_key_id_outside_the_data_key_range_fails_in_one_line() {
    let s = initialized("keyid");
    add_patient(&s, "Ada", "ada@example.org", "+1 555 0177");
    let ben = add_patient(&s, "Ben", "ben@example.org", "+1 555 0277");
    let db = s.dir.join("clinic.db");
    // A tampered row: the trigger that keeps key_id pointing at a key row is dropped first.
    sql(&db, "DROP TRIGGER patients_key_id_update");
    sql(
        &db,
        &format!("UPDATE patients SET key_id = -2147483648 WHERE id = {ben}"),
    );
    let ben = ben.to_string();
    for args in [
        &["patient", "show", &ben][..],
        &["note", "list", &ben],
        &["consent", "show", &ben],
        &["patient", "update", &ben, "--first-name", "Benjamin"],
    ] {
        assert_refused(&s.run(args), &args.join(" "));
    }
    // The rebuild goes on without him and names him.
    let out = s.run(&["index", "rebuild"]);
    assert_one_line_failure(&out, &format!("#{ben} ("));
    assert!(
        text(&out.stdout).contains("1 rebuilt") || text(&out.stdout).contains("1 already current"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn database_urls_never_show_their_password_or_user() {
    let s = Session::new("urls");
    let mut urls: Vec<(String, &str)> = [
        "postgres://ada.admin:S3cretPw@127.0.0.1:notaport/db",
        "mysql://ada.admin:S3cretPw@[::1/db",
        "postgres://ada.admin:S3cret%21Pw@nohost.invalid/db",
        "postgres://ada.admin:S3cretPw@127.0.0.1:99999/db",
        "mariadb://ada.admin:S3cretPw@[::1/db",
        "sqlite://ada.admin:S3cretPw@/no/such/dir/x.db",
        "ada.admin:S3cretPw@127.0.0.1/db",
        "S3cretPw",
    ]
    .iter()
    .map(|u| (u.to_string(), "ada.admin"))
    .collect();
    // Real servers: their refusals name the user, and the password must not come back.
    if let Ok(base) = std::env::var("TEST_POSTGRES_URL") {
        let (_, host) = base.split_once('@').expect("URL with a user");
        urls.push((
            format!("postgres://nobody_x:S3cret%21Pw@{host}"),
            "nobody_x",
        ));
        urls.push((
            format!("postgres://nobody_x@{host}?password=S3cretPw"),
            "nobody_x",
        ));
    }
    if let Ok(base) = std::env::var("TEST_MYSQL_URL") {
        let (_, host) = base.split_once('@').expect("URL with a user");
        urls.push((format!("mysql://nobody_x:S3cretPw@{host}"), "nobody_x"));
        urls.push((format!("mariadb://nobody_x:S3cret%21Pw@{host}"), "nobody_x"));
    }
    for (url, user) in &urls {
        for trace in [false, true] {
            let mut cmd = clinic();
            cmd.args(["--database-url", url, "patient", "list"])
                .current_dir(&s.dir);
            for (k, v) in &s.env {
                cmd.env(k, v);
            }
            if trace {
                // SeaORM's connector logs its options, URL included, at trace level.
                cmd.env("RUST_LOG", "trace");
            }
            let out = cmd.output().expect("runs");
            let stderr = text(&out.stderr);
            assert!(!out.status.success(), "{url}: {stderr}");
            for secret in ["S3cret", "%21Pw", *user] {
                assert!(!stderr.contains(secret), "{url}: {secret} in {stderr}");
            }
            if !trace {
                assert_one_line_failure(&out, "database");
            }
        }
    }
}

#[test]
fn rejected_values_are_not_repeated() {
    let s = Session::new("echo");
    for (args, secret, needle) in [
        (
            &[
                "patient",
                "add",
                "--first-name",
                "A",
                "--last-name",
                "B",
                "--email",
                "a@example.org",
                "--dob",
                "1984-13-45",
            ][..],
            "1984-13-45",
            "YYYY-MM-DD",
        ),
        (
            &[
                "patient",
                "add",
                "--first-name",
                "A",
                "--last-name",
                "B",
                "--email",
                "a@example.org",
                "--dob",
                "2999-01-01",
            ],
            "2999",
            "in the future",
        ),
        (
            &["patient", "find", "--name-dob", "Hostileton", "1984-13-45"],
            "1984-13-45",
            "YYYY-MM-DD",
        ),
        (
            &[
                "patient",
                "add",
                "--first-name",
                "A",
                "--last-name",
                "B",
                "--email",
                "Ada Secretson@@x",
                "--dob",
                "1980-01-01",
            ],
            "Secretson",
            "invalid e-mail address",
        ),
        (
            &[
                "patient",
                "add",
                "--first-name",
                "A",
                "--last-name",
                "B",
                "--email",
                "a@example.org",
                "--dob",
                "1980-01-01",
                "--phone",
                "555 SECRET 12",
            ],
            "SECRET",
            "invalid phone number",
        ),
    ] {
        let out = s.run(args);
        assert_one_line_failure(&out, needle);
        assert!(!text(&out.stderr).contains(secret), "{}", text(&out.stderr));
    }
}

#[test]
fn transcript_files_are_checked_without_quoting_them() {
    let s = initialized("transcripts");
    let ada = add_patient(&s, "Ada", "ada@example.org", "+1 555 0177").to_string();
    let file = s.dir.join("visit.json");
    let path = file.to_str().expect("path");
    let said = "\"I never told anyone SECRET\"";
    for (content, needle) in [
        (
            format!(
                r#"{{"text": "t", "segments": [{{"speaker": "p", "start_ms": {said}, "end_ms": 1, "text": "x"}}]}}"#
            ),
            "line 1, column 84: `start_ms` of segment 1 must be a whole number of milliseconds",
        ),
        (
            format!(
                "{{\"text\": {said},\n\"segments\": [{{\"speaker\": {said}, \"start_ms\": 0, \"end_ms\": 86400001, \"text\": {said}}}]}}"
            ),
            "line 2, column 88: `end_ms` of segment 1 must be a whole number of milliseconds from 0 to 86400000",
        ),
        (format!(r#"{{"text": {said}, {said}: 1}}"#), "unknown field"),
        (
            format!(r#"{{"text": [{said}]}}"#),
            "`text` must be a string",
        ),
        (format!(r#"{{"text": "{}"#, &said[1..]), "EOF while parsing"),
        (said.to_owned(), "the file must hold one JSON object"),
    ] {
        std::fs::write(&file, &content).expect("write");
        let out = s.run(&["transcript", "import", &ada, path]);
        assert_one_line_failure(&out, "is not a transcript file");
        assert_one_line_failure(&out, needle);
        assert!(
            !text(&out.stderr).contains("SECRET"),
            "{}",
            text(&out.stderr)
        );
    }
    // An endless file is refused after a bounded read.
    s.refused(
        &["transcript", "import", &ada, "/dev/zero"],
        "larger than 8 MiB",
    );
    // Nothing was stored by any of them.
    assert_eq!(
        sql_count(&s.dir.join("clinic.db"), "SELECT count(*) FROM transcripts"),
        0
    );
}

#[test]
fn stored_escape_sequences_are_shown_escaped() {
    let s = initialized("escapes");
    let ada = add_patient(&s, "Ada", "ada@example.org", "+1 555 0177").to_string();
    let nasty = "ok\u{1b}[2J\u{1b}]0;pwned\u{7}\u{202e}";
    s.ok(&[
        "note",
        "add",
        &ada,
        "--author",
        nasty,
        "--subjective",
        nasty,
        "--objective",
        "o",
        "--assessment",
        "a",
        "--plan",
        "p",
    ]);
    s.ok(&[
        "consent",
        "record",
        &ada,
        "--scope",
        nasty,
        "--method",
        "verbal",
        "--signature",
        nasty,
    ]);
    let file = s.dir.join("visit.json");
    std::fs::write(
        &file,
        r#"{"text": "ok\u001b[2J", "segments": [{"speaker": "p\u001b[31m", "start_ms": 0, "end_ms": 1, "text": "ok\u009b2J"}]}"#,
    )
    .expect("write");
    let t = s.json(&["transcript", "import", &ada, file.to_str().expect("path")])["id"]
        .as_i64()
        .expect("id")
        .to_string();
    for args in [
        &["note", "list", &ada][..],
        &["consent", "show", &ada],
        &["transcript", "show", &t],
    ] {
        let out = s.ok(args);
        for raw in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
            assert!(!out.contains(raw), "{args:?} printed {raw:?} raw: {out:?}");
        }
        assert!(out.contains("\\u{1b}"), "{args:?}: {out}");
    }
    // JSON keeps the exact text (escaped by JSON itself).
    let notes = s.json(&["note", "list", &ada]);
    assert_eq!(notes[0]["subjective"], nasty);
}

/// The value a 16-bit `phone_last4_bidx` (the size before issue 11) held for `phone` under the
/// blind-index key of `env`.
fn sixteen_bit_last4(env: &[(String, String)], phone: &str) -> Vec<u8> {
    let vars: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ring = Keyring::from_vars(|name| vars.get(name).map(|v| v.to_string())).expect("keys");
    BlindIndex::new("patients", "phone_last4_bidx")
        .field(Pipeline::parse("digits, last(4)").expect("pipeline"))
        .bits(16)
        .compute(&ring, &[Some(IndexInput::Text(phone))])
        .expect("computes")
        .expect("not NULL")
}

#[test]
fn index_rebuild_brings_indexes_of_the_old_size_up_to_date() {
    // Keys whose 16-bit value for Ada's phone does not end in four zero bits: such a value
    // would also be the 12-bit one (truncation keeps a prefix), 1 time in 16.
    let (env, old_value) = loop {
        let env = generated_keys();
        let value = sixteen_bit_last4(&env, "+1 555 0177");
        if value[2] & 0x0f != 0 {
            break (env, value);
        }
    };
    let s = Session::with_keys("rebuild-size", env);
    s.ok(&["init"]);
    let ada = add_patient(&s, "Ada", "ada@example.org", "+1 555 0177");
    let ben = add_patient(&s, "Ben", "ben@example.org", "+1 555 0277");
    let cy = add_patient(&s, "Cy", "cy@example.org", "+1 555 0377");
    let db = s.dir.join("clinic.db");
    // What a database written before the size change holds: Ada's true 16-bit value, and a
    // value of another length for Ben. Cy's is current.
    sql(
        &db,
        &format!(
            "UPDATE patients SET phone_last4_bidx = X'{}' WHERE id = {ada}",
            hex::encode(&old_value)
        ),
    );
    sql(
        &db,
        &format!("UPDATE patients SET phone_last4_bidx = X'01ABCDEF' WHERE id = {ben}"),
    );
    assert_eq!(found(&s, &["--phone-last4", "0177"]), 0);
    assert_eq!(found(&s, &["--phone-last4", "0277"]), 0);
    assert_eq!(found(&s, &["--phone-last4", "0377"]), 1);

    let out = s.ok(&["index", "rebuild", "--batch-size", "2"]);
    assert!(
        out.contains("Checked 3 patient(s): 2 rebuilt, 1 already current"),
        "{out}"
    );
    assert!(out.contains("phone_last4_bidx 12 bits"), "{out}");
    for last4 in ["0177", "0277", "0377"] {
        assert_eq!(found(&s, &["--phone-last4", last4]), 1, "{last4}");
    }
    // Each rewrite is audited; nothing else changed.
    let audit = s.json(&["audit", "list", "--limit", "100"]);
    let rebuilt: Vec<&str> = audit
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| e["summary"] == "blind indexes recomputed")
        .filter_map(|e| e["record"].as_str())
        .collect();
    assert_eq!(rebuilt.len(), 2, "{audit}");
    assert!(
        !rebuilt.contains(&format!("patients#{cy}").as_str()),
        "{audit}"
    );
    assert!(
        s.ok(&["patient", "show", &ada.to_string()])
            .contains("+1 555 0177")
    );

    // Re-running finds nothing to do.
    let again = s.json(&["index", "rebuild"]);
    assert_eq!(again["rebuilt"], 0, "{again}");
    assert_eq!(again["already_current"], 3, "{again}");
    assert_eq!(again["skipped"], serde_json::json!([]), "{again}");
}

#[test]
fn index_rebuild_finishes_a_blind_index_key_rotation() {
    let s = initialized("rebuild-rotation");
    let ada = add_patient(&s, "Ada", "ada@example.org", "+1 555 0177");
    add_patient(&s, "Ben", "ben@example.org", "+1 555 0277");
    let key1 = env_value(&s.env, "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS").to_owned();
    let key2 =
        env_value(&generated_keys(), "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS").replacen("1:", "2:", 1);
    let both = s.with_env(with_var(
        &with_var(
            &s.env,
            "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS",
            &format!("{key1},{key2}"),
        ),
        "ENCRYPTED_COLUMNS_ACTIVE_BLIND_INDEX_KEY",
        "2",
    ));
    let only2 = s.with_env(with_var(
        &s.env,
        "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS",
        &key2,
    ));
    let by_email = ["--email", "ada@example.org"];
    let by_phone = ["--phone-last4", "0177"];
    let by_name = ["--name-dob", "HOSTILETON", "1980-05-06"];

    // Without key 1 the stored values are not found; with both, every version is queried.
    assert_eq!(found(&only2, &by_email), 0);
    assert_eq!(found(&both, &by_email), 1);
    let out = both.ok(&["keys", "status"]);
    assert!(out.contains("run `clinic index rebuild`"), "{out}");

    let summary = both.json(&["index", "rebuild"]);
    assert_eq!(summary["active_blind_index_key"], 2, "{summary}");
    assert_eq!(summary["rebuilt"], 2, "{summary}");
    for index in ["email_bidx", "phone_last4_bidx", "name_dob_bidx"] {
        assert_eq!(
            summary["index_values_by_key"][format!("patients.{index}")],
            serde_json::json!({ "2": 2 }),
            "{summary}"
        );
    }
    // Key 1 is retirable only if the audit chain did not use it either.
    let audit_used_1 = summary["audit_macs_by_key"].get("1").is_some();
    assert_eq!(
        summary["retirable_blind_index_keys"] == serde_json::json!([1]),
        !audit_used_1,
        "{summary}"
    );
    let text_out = both.ok(&["index", "rebuild"]);
    assert!(
        text_out.contains("Blind-index key(s) 1 "),
        "the output says what to do with key 1: {text_out}"
    );

    // With only key 2 loaded, every lookup works, and the data still opens (both patients
    // share last name and date of birth).
    for (by, n) in [(&by_email[..], 1), (&by_phone, 1), (&by_name, 2)] {
        assert_eq!(found(&only2, by), n, "{by:?}");
    }
    let found = only2.json(&["patient", "find", "--email", " ADA@example.org"]);
    assert_eq!(found[0]["id"].as_i64(), Some(ada), "{found}");
}

#[test]
fn index_rebuild_skips_a_damaged_patient_names_it_and_rebuilds_the_rest() {
    let s = initialized("rebuild-damaged");
    let ids: Vec<i64> = (0..5)
        .map(|n| {
            add_patient(
                &s,
                "P",
                &format!("p{n}@example.org"),
                &format!("555 01{n}9"),
            )
        })
        .collect();
    let db = s.dir.join("clinic.db");
    sql(&db, "UPDATE patients SET phone_last4_bidx = X'01ABCD'");
    // Patient 3's e-mail envelope: one byte flipped, so it no longer authenticates.
    sql(
        &db,
        &format!(
            "UPDATE patients SET email = substr(email, 1, 40) || X'00' || substr(email, 42) \
             WHERE id = {}",
            ids[2]
        ),
    );
    let out = s.run(&["index", "rebuild", "--batch-size", "2"]);
    assert_one_line_failure(&out, "1 patient(s) could not be rebuilt");
    assert_one_line_failure(&out, &format!("#{} (", ids[2]));
    assert!(
        !text(&out.stderr).contains("@example.org"),
        "{}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("4 rebuilt") && stdout.contains("1 skipped"),
        "{stdout}"
    );
    for n in [0, 1, 3, 4] {
        assert_eq!(
            found(&s, &["--phone-last4", &format!("01{n}9")]),
            1,
            "patient {n}"
        );
    }
    // The damaged row kept its old value.
    assert_eq!(
        sql_count(
            &db,
            &format!(
                "SELECT count(*) FROM patients WHERE id = {} AND phone_last4_bidx = X'01ABCD'",
                ids[2]
            )
        ),
        1
    );
}
