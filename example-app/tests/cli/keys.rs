//! The key store from the command line (issue 12): environment keys checked against their
//! registered check values, and keys wrapped by a KEK provider (`CLINIC_KEK=static` always,
//! `pkcs11` on SoftHSM2 when `TEST_SOFTHSM2_MODULE` is set): `keys init`, loading in fresh
//! processes, `keys rewrap`, and one-line refusals.

use std::process::Command;

use crate::support::*;

const PATIENT_COUNT: &str = "SELECT count(*) FROM patients";

/// A wrong blind-index or encryption key under a registered id is refused in one line naming
/// the variable and id, and nothing is written: the e-mail is not duplicated.
fn wrong_env_key_refused(url: Option<&str>, count: &dyn Fn() -> i64) {
    let session = Session::new("keys-env");
    session.ok(&with_url(url, &["init"]));
    let add = |s: &Session| {
        s.run(&with_url(
            url,
            &[
                "patient",
                "add",
                "--first-name",
                "Ada",
                "--last-name",
                "Lovelace",
                "--email",
                "ada@example.org",
                "--dob",
                "1980-05-06",
            ],
        ))
    };
    assert!(add(&session).status.success());
    assert_eq!(count(), 1);

    let other = generated_keys();
    let wrong_blind = session.with_env(with_var(
        &session.env,
        "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS",
        env_value(&other, "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS"),
    ));
    let out = add(&wrong_blind);
    assert_one_line_failure(&out, "key 1 in ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS");
    assert_eq!(count(), 1, "the e-mail was duplicated");

    let wrong_data = session.with_env(with_var(
        &session.env,
        "ENCRYPTED_COLUMNS_KEYS",
        env_value(&other, "ENCRYPTED_COLUMNS_KEYS"),
    ));
    let out = add(&wrong_data);
    assert_one_line_failure(&out, "key 1 in ENCRYPTED_COLUMNS_KEYS");
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains(env_value(&other, "ENCRYPTED_COLUMNS_KEYS")),
        "{stderr}"
    );
    assert_eq!(count(), 1);

    // The right keys still work, and find the one patient.
    let listed = session.json(&with_url(url, &["patient", "list"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    // The same e-mail again is a duplicate, as it should be.
    assert!(!add(&session).status.success());
    assert_eq!(count(), 1);
}

#[test]
fn keys_wrong_env_key_is_refused_on_sqlite() {
    let session = Session::new("keys-env-sqlite");
    let db = session.db();
    session.ok(&["init"]);
    session.add_patient("Ada", "Lovelace", "ada@example.org", &[]);
    let other = generated_keys();
    let wrong = session.with_env(with_var(
        &session.env,
        "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS",
        env_value(&other, "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS"),
    ));
    wrong.refused(
        &[
            "patient",
            "add",
            "--first-name",
            "Ada",
            "--last-name",
            "Lovelace",
            "--email",
            "ada@example.org",
            "--dob",
            "1980-05-06",
        ],
        "key 1 in ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS",
    );
    assert_eq!(sql_count(&db, PATIENT_COUNT), 1);
    let before = sql_count(&db, "SELECT count(*) FROM encrypted_columns_keys");
    assert_eq!(before, 2);
    wrong.refused(&["patient", "list"], "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS");
    assert_eq!(
        sql_count(&db, "SELECT count(*) FROM encrypted_columns_keys"),
        2
    );
}

fn server_wrong_env_key(var: &str, tag: &str) {
    let Some(server) = ServerDb::new(var, tag) else {
        return;
    };
    wrong_env_key_refused(Some(&server.url), &|| server.count_in(PATIENT_COUNT));
}

#[test]
fn keys_wrong_env_key_is_refused_on_postgres() {
    server_wrong_env_key("TEST_POSTGRES_URL", "keys_env");
}

#[test]
fn keys_wrong_env_key_is_refused_on_mysql() {
    server_wrong_env_key("TEST_MYSQL_URL", "keys_env");
}

/// init → patient add → list (fresh process) → rewrap A → B → list with B, refused with A.
fn static_kek_flow(url: Option<&str>) {
    let kek_a = random_kek();
    let kek_b = random_kek();
    let env = vec![
        ("CLINIC_KEK".to_owned(), "static".to_owned()),
        ("CLINIC_KEK_STATIC".to_owned(), kek_a.clone()),
        ("NEW_KEK".to_owned(), kek_b.clone()),
    ];
    let session = Session::with_keys("keys-static", env);
    session.ok(&with_url(url, &["init"]));
    let created = session.json(&with_url(url, &["keys", "init"]));
    assert_eq!(created["provider"], "static");
    let kek_a_id = created["kek_id"].as_str().expect("kek id").to_owned();
    assert!(kek_a_id.starts_with("static:"), "{kek_a_id}");
    assert_eq!(created["created"].as_array().map(Vec::len), Some(2));
    session.refused(&with_url(url, &["keys", "init"]), "encryption key 1");

    session.ok(&with_url(
        url,
        &[
            "patient",
            "add",
            "--first-name",
            "Grace",
            "--last-name",
            "Hopper",
            "--email",
            "grace@example.org",
            "--dob",
            "1980-05-06",
        ],
    ));
    let listed = session.ok(&with_url(url, &["patient", "list"]));
    assert!(listed.contains("grace@example.org"), "{listed}");

    let out = session.run(&with_url(
        url,
        &["keys", "rewrap", "--to-static-env", "NEW_KEK"],
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("(2/2)"), "progress on stderr: {stderr}");
    assert!(!stderr.contains(&kek_b) && !text(&out.stdout).contains(&kek_b));

    // Still the old KEK: refused in one line naming the provider and the KEK ids.
    let out = session.run(&with_url(url, &["patient", "list"]));
    assert_one_line_failure(&out, &kek_a_id);
    assert!(text(&out.stderr).contains("static"));

    let with_b = session.with_env(with_var(&session.env, "CLINIC_KEK_STATIC", &kek_b));
    let listed = with_b.ok(&with_url(url, &["patient", "list"]));
    assert!(listed.contains("grace@example.org"), "{listed}");
    let status = with_b.json(&with_url(url, &["keys", "status"]));
    assert_eq!(status["provider"], "static");
    assert_ne!(status["kek_id"], kek_a_id.as_str());
    let stored = status["stored_keys"].as_array().expect("stored keys");
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .all(|k| k["source"] == "wrapped" && k["state"] == "active")
    );
    assert_eq!(status["active_key"], 1);

    // Re-run (as after an interruption): nothing left to move.
    let again = with_b.json(&with_url(
        url,
        &["keys", "rewrap", "--to-static-env", "NEW_KEK"],
    ));
    assert_eq!(
        (again["rewrapped"].as_u64(), again["already_done"].as_u64()),
        (Some(0), Some(2))
    );
}

#[test]
fn keys_static_kek_init_rewrap_and_load_on_sqlite() {
    static_kek_flow(None);
}

#[test]
fn keys_static_kek_init_rewrap_and_load_on_postgres() {
    if let Some(server) = ServerDb::new("TEST_POSTGRES_URL", "keys_static") {
        static_kek_flow(Some(&server.url));
    }
}

#[test]
fn keys_static_kek_init_rewrap_and_load_on_mysql() {
    if let Some(server) = ServerDb::new("TEST_MYSQL_URL", "keys_static") {
        static_kek_flow(Some(&server.url));
    }
}

#[test]
fn keys_kek_settings_are_checked_and_never_echoed() {
    let session = Session::with_keys("keys-settings", generated_keys());
    session.ok(&["init"]);
    // keys init needs a provider.
    session.refused(&["keys", "init"], "CLINIC_KEK=static, pkcs11 or aws-kms");
    let with = |pairs: &[(&str, &str)]| {
        session.with_env(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    with(&[("CLINIC_KEK", "vault")]).refused(&["patient", "list"], "CLINIC_KEK must be");
    with(&[("CLINIC_KEK", "static")]).refused(&["patient", "list"], "CLINIC_KEK_STATIC is not set");
    let bad = "bm90LWEta2V5LW9mLTMyLWJ5dGVz";
    let out =
        with(&[("CLINIC_KEK", "static"), ("CLINIC_KEK_STATIC", bad)]).run(&["patient", "list"]);
    assert_one_line_failure(
        &out,
        "CLINIC_KEK_STATIC must be the base64 of exactly 32 bytes",
    );
    assert!(!text(&out.stderr).contains(bad));
    with(&[("CLINIC_KEK", "pkcs11")]).refused(&["patient", "list"], "CLINIC_PKCS11_KEY is not set");
    // Environment keys into a store whose keys are wrapped: named, not mixed.
    let kek = random_kek();
    let kek_env = with(&[("CLINIC_KEK", "static"), ("CLINIC_KEK_STATIC", &kek)]);
    let other = Session::with_keys("keys-settings-2", kek_env.env.clone());
    other.ok(&["init"]);
    other.ok(&["keys", "init"]);
    let env_keys = other.with_env(generated_keys());
    env_keys.refused(&["patient", "list"], "key 1 in ENCRYPTED_COLUMNS_KEYS");
}

// --- PKCS#11 (SoftHSM2) ------------------------------------------------------------------------

pub(crate) const PIN: &str = "user-pin-5678";

/// A SoftHSM2 configuration with one fresh token, for the `clinic` processes of one test.
pub(crate) fn softhsm_token(dir: &std::path::Path, label: &str) -> Option<(String, String)> {
    let Ok(module) = std::env::var("TEST_SOFTHSM2_MODULE") else {
        eprintln!("skipped: TEST_SOFTHSM2_MODULE not set");
        return None;
    };
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).expect("token dir");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .expect("conf");
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label])
        .args(["--so-pin", "so-pin-1234", "--pin", PIN])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util");
    assert!(out.status.success(), "{}", text(&out.stderr));
    Some((module, conf.display().to_string()))
}

/// The clinic's settings for KEK `key` in the token "clinic" of [`softhsm_token`].
pub(crate) fn pkcs11_env(module: &str, conf: &str, key: &str) -> Vec<(String, String)> {
    [
        ("SOFTHSM2_CONF", conf),
        ("CLINIC_KEK", "pkcs11"),
        ("CLINIC_PKCS11_MODULE", module),
        ("CLINIC_PKCS11_TOKEN", "clinic"),
        ("CLINIC_PKCS11_PIN", PIN),
        ("CLINIC_PKCS11_KEY", key),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn keys_pkcs11_init_rewrap_and_wrong_pin() {
    let dir = fresh_dir("keys-hsm");
    let Some((module, conf)) = softhsm_token(&dir, "clinic") else {
        return;
    };
    let env = pkcs11_env(&module, &conf, "kek-a");
    let session = Session::with_keys("keys-hsm-db", env);
    session.ok(&["init"]);
    let created = session.json(&["keys", "init"]);
    assert_eq!(created["provider"], "pkcs11");
    assert_eq!(created["kek_id"], "pkcs11:token=clinic;object=kek-a");
    session.add_patient("Ada", "Lovelace", "ada@example.org", &[]);
    assert!(session.ok(&["patient", "list"]).contains("ada@example.org"));

    session.ok(&["keys", "rewrap", "--to-pkcs11-key", "kek-b"]);
    let out = session.run(&["patient", "list"]);
    assert_one_line_failure(&out, "pkcs11:token=clinic;object=kek-a");
    let with_b = session.with_env(with_var(&session.env, "CLINIC_PKCS11_KEY", "kek-b"));
    assert!(with_b.ok(&["patient", "list"]).contains("ada@example.org"));

    // A wrong PIN: one line naming the provider, never the PIN, no panic.
    let wrong = session.with_env(with_var(&with_b.env, "CLINIC_PKCS11_PIN", "not-the-pin-99"));
    let out = wrong.run(&["patient", "list"]);
    assert_one_line_failure(&out, "pkcs11");
    assert!(text(&out.stderr).contains("login"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("not-the-pin-99"));
    let _ = std::fs::remove_dir_all(&dir);
}
