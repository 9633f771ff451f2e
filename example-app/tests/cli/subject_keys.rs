//! `patient_keys` as the library's subject-key table (issue 12, migration 12): every key row
//! names its provider and holds its key's check value; a wrapped key swapped between patients
//! is refused by it, naming the row, while the others still list; erasure finds a copy of the
//! key in another row and refuses; check values missing from old rows are filled on first
//! write.

use super::*;

/// A clinic with three patients; returns the session and their ids.
fn three_patients(tag: &str) -> (Session, [i64; 3]) {
    let s = Session::new(tag);
    s.ok(&["init"]);
    let ada = s.add_patient("Ada", "Testwood", "ada@example.org", &[]);
    let ben = s.add_patient("Ben", "Samplefield", "ben@example.org", &[]);
    let cy = s.add_patient("Cy", "Placeholder", "cy@example.org", &[]);
    (s, [ada, ben, cy])
}

fn key_row(s: &Session, patient: i64) -> i64 {
    sql_count(
        &s.db(),
        &format!("SELECT key_id FROM patients WHERE id = {patient}"),
    )
}

fn check_value_hex(s: &Session, key_row: i64) -> Option<String> {
    sql_value::<Option<String>>(
        &s.db(),
        &format!(
            "SELECT lower(hex(check_value)) FROM patient_keys WHERE id = {key_row} \
             AND check_value IS NOT NULL UNION ALL SELECT NULL LIMIT 1"
        ),
    )
}

#[test]
fn new_key_rows_name_their_provider_and_hold_a_check_value() {
    let (s, [ada, ..]) = three_patients("subject-rows");
    let row = key_row(&s, ada);
    let provider = sql_value::<String>(
        &s.db(),
        &format!("SELECT provider || '/' || kek_id FROM patient_keys WHERE id = {row}"),
    );
    assert_eq!(provider, "keyring/patient_keys.wrapped_key");
    let kcv = check_value_hex(&s, row).expect("a check value");
    assert_eq!(kcv.len(), 32, "{kcv}");
    // Still an ordinary envelope of the clinic keyring (format unchanged): version 1, key 1.
    let header = sql_value::<String>(
        &s.db(),
        &format!("SELECT hex(substr(wrapped_key, 1, 5)) FROM patient_keys WHERE id = {row}"),
    );
    assert_eq!(header, "0100000001");
}

#[test]
fn a_wrapped_key_swapped_between_patients_is_refused_by_the_check_value() {
    let (s, [ada, ben, cy]) = three_patients("subject-swap");
    let (ada_key, ben_key) = (key_row(&s, ada), key_row(&s, ben));
    // The clinic keyring wraps without the key id (an envelope binds table and column only),
    // so only the check value can tell the keys apart.
    let wrapped = |row: i64| {
        sql_value::<String>(
            &s.db(),
            &format!("SELECT hex(wrapped_key) FROM patient_keys WHERE id = {row}"),
        )
    };
    let (ada_wrapped, ben_wrapped) = (wrapped(ada_key), wrapped(ben_key));
    for (row, bytes) in [(ada_key, &ben_wrapped), (ben_key, &ada_wrapped)] {
        sql(
            &s.db(),
            &format!("UPDATE patient_keys SET wrapped_key = x'{bytes}' WHERE id = {row}"),
        );
    }
    let out = s.run(&["patient", "list"]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("cy@example.org"), "{stdout}");
    assert!(!stdout.contains("ada@example.org") && !stdout.contains("ben@example.org"));
    assert!(
        stderr.contains(&format!("patient_keys row {ada_key} does not open"))
            && stderr.contains("check value"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("(ids {ada}, {ben})")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    s.refused(
        &["patient", "show", &ben.to_string()],
        &format!("patient_keys row {ben_key} does not open"),
    );
    s.ok(&["patient", "show", &cy.to_string()]);
}

#[test]
fn erase_refuses_while_another_row_holds_a_copy_of_the_key() {
    let (s, [ada, ben, _]) = three_patients("subject-copy");
    let ada_key = key_row(&s, ada);
    let kcv = check_value_hex(&s, ada_key).expect("a check value");
    // A spare copy of Ada's key row (as a restore or a careless script might leave behind).
    sql(
        &s.db(),
        &format!(
            "INSERT INTO patient_keys (wrapped_key, provider, kek_id, check_value, created_at) \
             SELECT wrapped_key, provider, kek_id, check_value, created_at FROM patient_keys \
             WHERE id = {ada_key}"
        ),
    );
    let copy = sql_count(&s.db(), "SELECT max(id) FROM patient_keys");
    s.refused(
        &["patient", "erase", &ada.to_string(), "--yes"],
        &format!("1 other patient_keys row(s) hold a copy of its data key (ids {copy})"),
    );
    // Nothing was deleted: Ada still opens, her key row is there.
    s.ok(&["patient", "show", &ada.to_string()]);
    assert_eq!(
        sql_count(
            &s.db(),
            &format!("SELECT count(*) FROM patient_keys WHERE id = {ada_key}")
        ),
        1
    );
    // The copy removed, the erase goes through and reports the check value it checked with.
    sql(
        &s.db(),
        &format!("DELETE FROM patient_keys WHERE id = {copy}"),
    );
    let report = s.json(&["patient", "erase", &ada.to_string(), "--yes"]);
    assert_eq!(report["key_rows"], 1);
    assert_eq!(report["key_check_value"].as_str(), Some(kcv.as_str()));
    assert_eq!(report["wrapped_by_clinic_key"], 1);
    assert_eq!(report["wrapped_by"], "clinic key 1");
    // Ben is untouched.
    s.ok(&["patient", "show", &ben.to_string()]);
}

#[test]
fn key_rows_without_a_check_value_open_and_get_one_on_the_next_write() {
    let (s, [ada, ben, _]) = three_patients("subject-tofu");
    let ben_key = key_row(&s, ben);
    let kcv = check_value_hex(&s, ben_key).expect("a check value");
    // As a row written before migration 12 looks: provider keyring, no KEK id, no check value.
    sql(
        &s.db(),
        &format!("UPDATE patient_keys SET kek_id = NULL, check_value = NULL WHERE id = {ben_key}"),
    );
    let listed = s.json(&["patient", "list"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    assert_eq!(check_value_hex(&s, ben_key), None, "reads do not write");
    s.ok(&[
        "patient",
        "update",
        &ben.to_string(),
        "--phone",
        "+1 555 0100",
    ]);
    assert_eq!(check_value_hex(&s, ben_key).as_deref(), Some(kcv.as_str()));
    // And a legacy row is erased like any other; its check value is computed for the copy
    // check.
    let ada_key = key_row(&s, ada);
    sql(
        &s.db(),
        &format!("UPDATE patient_keys SET check_value = NULL WHERE id = {ada_key}"),
    );
    let report = s.json(&["patient", "erase", &ada.to_string(), "--yes"]);
    assert_eq!(report["key_rows"], 1);
    assert_eq!(report["key_check_value"].as_str().map(str::len), Some(32));
}
