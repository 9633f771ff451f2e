//! Rows bound to their patient: envelopes of another patient refused everywhere several
//! patients are read, damaged rows named without hiding the others, erasure that checks the
//! key it destroys, and what erasure reaches (issue 11 items 2, 3, 4, 6, 8).

use super::*;

/// A clinic with three patients; returns the session and their ids.
fn three_patients(tag: &str) -> (Session, [i64; 3]) {
    let s = Session::new(tag);
    s.ok(&["init"]);
    let add = |first: &str, last: &str, email: &str, phone: &str| -> i64 {
        let history = format!("History of {first}");
        s.add_patient(
            first,
            last,
            email,
            &["--phone", phone, "--history", &history],
        )
    };
    let ada = add("Ada", "Testwood", "ada@example.org", "+1 555 0177");
    let ben = add("Ben", "Samplefield", "ben@example.org", "+1 555 0123");
    let cy = add("Cy", "Placeholder", "cy@example.org", "+1 555 0188");
    (s, [ada, ben, cy])
}

fn key_row(s: &Session, patient: i64) -> i64 {
    sql_count(
        &s.db(),
        &format!("SELECT key_id FROM patients WHERE id = {patient}"),
    )
}

#[test]
fn another_patients_envelopes_are_refused_not_shown_as_this_patients() {
    let (s, [ada, ben, cy]) = three_patients("bind-copy");
    // Ben's e-mail and history envelopes, copied into Ada's row.
    sql(
        &s.db(),
        &format!(
            "UPDATE patients SET email = (SELECT email FROM patients WHERE id = {ben}), \
             medical_history = (SELECT medical_history FROM patients WHERE id = {ben}) \
             WHERE id = {ada}"
        ),
    );

    let out = s.run(&["patient", "list"]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "a tampered row must fail the listing"
    );
    assert_eq!(
        stdout.matches("ben@example.org").count(),
        1,
        "Ben's e-mail shown only as Ben's:\n{stdout}"
    );
    assert!(stdout.contains("cy@example.org"), "others still listed");
    assert!(!stdout.contains("Ada Testwood"), "{stdout}");
    assert!(
        stderr.contains(&format!("patient {ada}: email is sealed with key")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("(ids {ada})")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // JSON: the readable rows only, then the failure.
    let out = s.run(&["--json", "patient", "list"]);
    assert!(!out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ids: Vec<i64> = rows
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, vec![ben, cy]);

    // find by Ada's own e-mail: the candidate is her row, which no longer opens.
    let out = s.run(&["patient", "find", "--email", "ada@example.org"]);
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains("ben@example.org"));
    // find by Ben's: only Ben.
    let found = s.json(&["patient", "find", "--email", "ben@example.org"]);
    assert_eq!(found.as_array().map(Vec::len), Some(1));
    assert_eq!(found[0]["id"].as_i64(), Some(ben));
    // show: one line naming the column.
    s.refused(
        &["patient", "show", &ada.to_string()],
        "email is sealed with key",
    );
    // Reads that were refused are not audited as reads of Ada.
    let audit = s.json(&["audit", "list", "--patient", &ada.to_string()]);
    assert!(
        audit
            .as_array()
            .expect("array")
            .iter()
            .all(|e| e["action"] != "read"),
        "{audit}"
    );
}

#[test]
fn one_damaged_row_names_itself_and_the_others_still_list() {
    let (s, [ada, ben, cy]) = three_patients("bind-damage");
    // Ada: a truncated envelope. Ben: his key row's wrapped key replaced with junk.
    sql(
        &s.db(),
        &format!("UPDATE patients SET first_name = x'0180' WHERE id = {ada}"),
    );
    let ben_key = key_row(&s, ben);
    sql(
        &s.db(),
        &format!("UPDATE patient_keys SET wrapped_key = x'00112233' WHERE id = {ben_key}"),
    );
    let out = s.run(&["patient", "list"]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stdout.contains("cy@example.org"), "{stdout}");
    assert!(stdout.contains("1 of 3 patient(s)"), "{stdout}");
    assert!(
        stderr.contains(&format!("patient {ada}: first_name")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("patient_keys row {ben_key} does not open")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "2 patient row(s) could not be read (ids {ada}, {ben})"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    // Cy is found and shown as usual.
    assert!(
        s.ok(&["patient", "show", &cy.to_string()])
            .contains("Cy Placeholder")
    );
}

#[test]
fn a_missing_key_row_is_not_called_an_erasure() {
    let (s, [ada, _, _]) = three_patients("bind-missing");
    let ada_key = key_row(&s, ada);
    // The foreign key (a trigger on SQLite) keeps a used key row; a writer with DDL rights
    // could still remove both.
    assert!(
        try_sql(
            &s.db(),
            &format!("DELETE FROM patient_keys WHERE id = {ada_key}")
        )
        .is_err()
    );
    sql(&s.db(), "DROP TRIGGER patient_keys_in_use");
    sql(
        &s.db(),
        &format!("DELETE FROM patient_keys WHERE id = {ada_key}"),
    );
    let out = s.run(&["patient", "show", &ada.to_string()]);
    assert_one_line_failure(&out, "the key row is missing");
    assert!(!text(&out.stderr).contains("ENCRYPTED_COLUMNS_KEYS"));
    let out = s.run(&["patient", "list"]);
    assert!(!out.status.success());
    assert!(text(&out.stdout).contains("ben@example.org"));
    assert!(!text(&out.stderr).contains("ENCRYPTED_COLUMNS_KEYS"));
}

#[test]
fn out_of_range_key_ids_are_one_line_errors_not_panics() {
    let (s, [ada, ben, _]) = three_patients("bind-range");
    // Migration 9 refuses a key_id that names no key row.
    assert!(
        try_sql(
            &s.db(),
            &format!("UPDATE patients SET key_id = -2147483648 WHERE id = {ada}")
        )
        .is_err()
    );
    sql(&s.db(), "DROP TRIGGER patients_key_id_update");
    for bad in ["-2147483648", "-1", "0"] {
        sql(
            &s.db(),
            &format!("UPDATE patients SET key_id = {bad} WHERE id = {ada}"),
        );
        let out = s.run(&["patient", "show", &ada.to_string()]);
        assert_one_line_failure(&out, "is not a valid patient_keys id");
        let out = s.run(&["patient", "list"]);
        assert!(!out.status.success());
        assert!(text(&out.stdout).contains("ben@example.org"));
        assert!(!text(&out.stderr).contains("panicked"));
    }
    // −N and N are different rows, not one key: Ben's key row as a negative number opens
    // nothing of Ben's.
    let ben_key = key_row(&s, ben);
    sql(
        &s.db(),
        &format!("UPDATE patients SET key_id = -{ben_key} WHERE id = {ada}"),
    );
    let out = s.run(&["patient", "show", &ada.to_string()]);
    assert_one_line_failure(&out, "is not a valid patient_keys id");
}

#[test]
fn erase_refuses_a_key_id_that_is_not_the_patients_own() {
    let (s, [ada, ben, cy]) = three_patients("bind-erase");
    let (ada_key, ben_key) = (key_row(&s, ada), key_row(&s, ben));
    // Two patients naming one key row: the UNIQUE index refuses it.
    let err = try_sql(
        &s.db(),
        &format!("UPDATE patients SET key_id = {ada_key} WHERE id = {ben}"),
    )
    .expect_err("UNIQUE refuses");
    assert!(err.contains("UNIQUE"), "{err}");

    // Swapping two patients' key ids keeps every constraint satisfied; only the envelopes
    // tell. Erasing Ben now would destroy Ada's key and keep his.
    sql(
        &s.db(),
        "INSERT INTO patient_keys (wrapped_key, created_at) VALUES (x'00', '2026-01-01')",
    );
    let spare = sql_count(&s.db(), "SELECT max(id) FROM patient_keys");
    for statement in [
        format!("UPDATE patients SET key_id = {spare} WHERE id = {ben}"),
        format!("UPDATE patients SET key_id = {ben_key} WHERE id = {ada}"),
        format!("UPDATE patients SET key_id = {ada_key} WHERE id = {ben}"),
    ] {
        sql(&s.db(), &statement);
    }
    let keys_before = sql_count(&s.db(), "SELECT count(*) FROM patient_keys");
    let out = s.run(&["patient", "erase", &ben.to_string(), "--yes"]);
    assert_one_line_failure(&out, &format!("refusing to erase patient {ben}"));
    assert!(text(&out.stderr).contains("nothing was deleted"));
    assert!(text(&out.stderr).contains(&format!("patients#{ben}.email")));
    assert_eq!(
        sql_count(&s.db(), "SELECT count(*) FROM patient_keys"),
        keys_before
    );
    assert_eq!(
        sql_count(
            &s.db(),
            &format!("SELECT count(*) FROM patients WHERE id = {ben}")
        ),
        1
    );
    // Put them back: both read, and erasing Ben destroys exactly his key.
    for statement in [
        format!("UPDATE patients SET key_id = {spare} WHERE id = {ben}"),
        format!("UPDATE patients SET key_id = {ada_key} WHERE id = {ada}"),
        format!("UPDATE patients SET key_id = {ben_key} WHERE id = {ben}"),
    ] {
        sql(&s.db(), &statement);
    }
    s.ok(&["patient", "erase", &ben.to_string(), "--yes"]);
    let left = |id: i64| {
        sql_count(
            &s.db(),
            &format!("SELECT count(*) FROM patient_keys WHERE id = {id}"),
        )
    };
    assert_eq!(left(ben_key), 0, "Ben's key row is gone");
    assert_eq!(left(ada_key), 1, "Ada's key row is kept");
    assert!(
        s.ok(&["patient", "show", &ada.to_string()])
            .contains("Ada Testwood")
    );
    assert!(
        s.ok(&["patient", "show", &cy.to_string()])
            .contains("Cy Placeholder")
    );

    // A dropped UNIQUE index does not let erasure destroy a shared key either.
    sql(&s.db(), "DROP INDEX patients_key_id_unique");
    sql(
        &s.db(),
        &format!("UPDATE patients SET key_id = {ada_key} WHERE id = {cy}"),
    );
    let out = s.run(&["patient", "erase", &cy.to_string(), "--yes"]);
    assert_one_line_failure(
        &out,
        &format!("also named by 1 other patient(s) (ids {ada})"),
    );
    assert_eq!(left(ada_key), 1);
}

#[test]
fn erase_says_what_it_does_not_reach_and_leaves_no_key_bytes_in_the_file() {
    let (s, [ada, ben, _]) = three_patients("bind-shred");
    let ada_key = key_row(&s, ada);
    let wrapped = sql_value::<String>(
        &s.db(),
        &format!("SELECT hex(wrapped_key) FROM patient_keys WHERE id = {ada_key}"),
    );
    let wrapped = hex::decode(wrapped).expect("hex");
    let file = || {
        let mut bytes = std::fs::read(s.db()).expect("db file");
        for suffix in ["-wal", "-journal"] {
            if let Ok(more) = std::fs::read(s.dir.join(format!("clinic.db{suffix}"))) {
                bytes.extend(more);
            }
        }
        bytes
    };
    let holds = |bytes: &[u8]| {
        bytes
            .windows(wrapped.len())
            .any(|w| w == wrapped.as_slice())
    };
    assert!(holds(&file()), "the wrapped key is in the file before");

    let out = s.ok(&["patient", "erase", &ada.to_string(), "--yes"]);
    assert!(out.contains(&format!("Erased patient #{ada}")), "{out}");
    assert!(out.contains("not reached by this erase"), "{out}");
    assert!(out.contains("clinic key 1 opens it"), "{out}");
    assert!(out.contains("blind-index key"), "{out}");
    assert!(
        !out.contains("every copy"),
        "no claim beyond the facts: {out}"
    );
    let report = s.json(&["patient", "erase", &ben.to_string(), "--yes"]);
    assert_eq!(report["remaining_rows"], 0);
    assert_eq!(report["wrapped_by_clinic_key"], 1);
    // Backups, blind indexes, the audit log (SQLite zeroes freed pages, so no fourth).
    assert_eq!(report["not_reached"].as_array().map(Vec::len), Some(3));

    assert_eq!(
        sql_count(
            &s.db(),
            &format!("SELECT count(*) FROM patient_keys WHERE id = {ada_key}")
        ),
        0
    );
    assert!(
        !holds(&file()),
        "secure_delete: the erased key's bytes are not left in free pages"
    );
    // Erasing again: one line that says it was erased already.
    s.refused(
        &["patient", "erase", &ada.to_string(), "--yes"],
        "it was erased already",
    );
}

/// The stronger path README describes: rotate the clinic key, destroy the old one, and a
/// backup taken before the erase no longer opens the erased patient.
#[test]
fn rotating_the_clinic_key_shreds_erased_patients_in_old_backups() {
    let (s, [ada, ben, _]) = three_patients("bind-backup");
    std::fs::copy(s.db(), s.dir.join("backup.db")).expect("backup");
    let backup = format!("sqlite://{}?mode=rw", s.dir.join("backup.db").display());
    s.ok(&["patient", "erase", &ben.to_string(), "--yes"]);

    // The limit, shown: with the clinic key still around, the old backup opens Ben.
    let shown = s.ok(&[
        "--database-url",
        &backup,
        "patient",
        "show",
        &ben.to_string(),
    ]);
    assert!(shown.contains("Ben Samplefield"), "{shown}");

    // Rotate to key 2; only live patients' data keys are re-wrapped.
    const KEYS: &str = "ENCRYPTED_COLUMNS_KEYS";
    let key1 = env_value(&s.env, KEYS).to_owned();
    let key2 = env_value(&generated_keys(), KEYS).replacen("1:", "2:", 1);
    let both = with_var(&s.env, KEYS, &format!("{key1},{key2}"));
    let both = with_var(&both, "ENCRYPTED_COLUMNS_ACTIVE_KEY", "2");
    let rotated = s.with_env(both).ok(&["keys", "rotate"]);
    assert!(
        rotated.contains("patient_keys.wrapped_key         re-encrypted 2 value(s)"),
        "only the two live patients' keys: {rotated}"
    );

    // Key 1 destroyed: only key 2 exists anywhere.
    let after = s.with_env(with_var(&s.env, KEYS, &key2));
    assert!(
        after
            .ok(&["patient", "show", &ada.to_string()])
            .contains("Ada Testwood")
    );
    let out = after.run(&[
        "--database-url",
        &backup,
        "patient",
        "show",
        &ben.to_string(),
    ]);
    assert_one_line_failure(&out, "key id 1 is not in the keyring");
    assert!(!text(&out.stdout).contains("Samplefield"));
    // The price README states: the old backup is unreadable as a whole.
    let out = after.run(&[
        "--database-url",
        &backup,
        "patient",
        "show",
        &ada.to_string(),
    ]);
    assert_one_line_failure(&out, "key id 1 is not in the keyring");
}

/// Migration 9's foreign key and UNIQUE index on a server, and erasure under them.
fn key_rows_are_bound_on(var: &str) {
    let Some(server) = ServerDb::new(var, "binding") else {
        return;
    };
    let s = Session::new("binding-server");
    let at = |args: &[&str]| -> Vec<String> {
        let mut with = vec!["--database-url".to_owned(), server.url.clone()];
        with.extend(args.iter().map(|a| a.to_string()));
        with
    };
    let ok = |args: &[&str]| -> String {
        let args = at(args);
        s.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    ok(&["init"]);
    let add = |first: &str, email: &str| -> i64 {
        let out = ok(&[
            "--json",
            "patient",
            "add",
            "--first-name",
            first,
            "--last-name",
            "Testwood",
            "--email",
            email,
            "--dob",
            "1980-05-06",
        ]);
        serde_json::from_str::<serde_json::Value>(&out).expect("JSON")["id"]
            .as_i64()
            .expect("id")
    };
    let ada = add("Ada", "ada@example.org");
    let ben = add("Ben", "ben@example.org");
    let key_of = |id: i64| server.count_in(&format!("SELECT key_id FROM patients WHERE id = {id}"));
    let (ada_key, ben_key) = (key_of(ada), key_of(ben));
    for statement in [
        format!("UPDATE patients SET key_id = {ada_key} WHERE id = {ben}"),
        format!("UPDATE patients SET key_id = 999999 WHERE id = {ben}"),
        format!("DELETE FROM patient_keys WHERE id = {ben_key}"),
    ] {
        assert!(
            server.try_exec_in(&statement).is_err(),
            "{var}: {statement} must be refused"
        );
    }
    let report: serde_json::Value = serde_json::from_str(&ok(&[
        "--json",
        "patient",
        "erase",
        &ben.to_string(),
        "--yes",
    ]))
    .expect("JSON");
    let left = |key: i64| {
        server.count_in(&format!(
            "SELECT count(*) FROM patient_keys WHERE id = {key}"
        ))
    };
    assert_eq!(
        (left(ben_key), left(ada_key)),
        (0, 1),
        "{var}: exactly Ben's key row went"
    );
    // Servers keep dead rows for a while: the report says so.
    assert_eq!(report["not_reached"].as_array().map(Vec::len), Some(4));
    assert!(
        report["not_reached"][3]
            .as_str()
            .is_some_and(|s| s.contains("VACUUM"))
    );
}

#[test]
fn key_rows_are_bound_on_postgres() {
    key_rows_are_bound_on("TEST_POSTGRES_URL");
}

#[test]
fn key_rows_are_bound_on_mysql() {
    key_rows_are_bound_on("TEST_MYSQL_URL");
}
