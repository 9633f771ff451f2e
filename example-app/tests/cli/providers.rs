//! Issue 12's proof, per KEK provider, through the CLI (every step a fresh `clinic` process):
//! start from nothing, create the keys through the provider, seal two patients (their data
//! keys wrapped by the provider too), open them, rotate the KEK (`keys rewrap`: no data is
//! re-encrypted), open them with the new KEK alone, erase one patient and check the other
//! still opens. StaticKek always; PKCS#11 on SoftHSM2 when `TEST_SOFTHSM2_MODULE` is set; AWS
//! KMS on moto_server when the `aws-kms` feature is on and `TEST_MOTO_SERVER` is set.

use crate::support::*;

/// How one provider is configured and rotated in a test.
struct Provider<'a> {
    /// `CLINIC_KEK` and the settings of the first KEK.
    session: Session,
    /// The provider's name, as stored in `patient_keys.provider`.
    name: &'a str,
    /// `keys rewrap` arguments that move to the second KEK.
    rewrap: Vec<&'a str>,
    /// The variable to change, and its value, to run with the second KEK.
    switch: (&'a str, String),
}

/// The life of two patients under `provider`; `count` runs a `SELECT count(*)` on the
/// database the commands use.
fn provider_life(provider: Provider<'_>, url: Option<&str>, count: &dyn Fn(&str) -> i64) {
    let s = &provider.session;
    s.ok(&with_url(url, &["init"]));
    let created = s.json(&with_url(url, &["keys", "init"]));
    assert_eq!(created["provider"], provider.name, "{created}");
    let add = |s: &Session, first: &str, email: &str| -> i64 {
        let out = s.json(&with_url(
            url,
            &[
                "patient",
                "add",
                "--first-name",
                first,
                "--last-name",
                "Doe",
                "--email",
                email,
                "--dob",
                "1980-05-06",
            ],
        ));
        out["id"].as_i64().expect("id")
    };
    let ada = add(s, "Ada", "ada@example.org");
    let cy = add(s, "Cy", "cy@example.org");
    // The patients' data keys are wrapped by the provider, not by the clinic keyring.
    let by_provider = format!(
        "SELECT count(*) FROM patient_keys WHERE provider = '{}' AND check_value IS NOT NULL",
        provider.name
    );
    assert_eq!(count(&by_provider), 2);

    let listed = s.ok(&with_url(url, &["patient", "list"]));
    assert!(listed.contains("ada@example.org") && listed.contains("cy@example.org"));

    // Rotate the KEK: the store's keys and both data keys move, no data is re-encrypted.
    let patients_before = count("SELECT count(*) FROM patients");
    let mut rewrap = vec!["keys", "rewrap"];
    rewrap.extend_from_slice(&provider.rewrap);
    let moved = s.json(&with_url(url, &rewrap));
    assert_eq!(moved["rewrapped"], 2, "{moved}");
    assert_eq!(moved["patient_keys_rewrapped"], 2, "{moved}");
    assert_eq!(count("SELECT count(*) FROM patients"), patients_before);

    // The old KEK opens nothing now; the new one alone opens everything.
    let out = s.run(&with_url(url, &["patient", "list"]));
    assert_one_line_failure(&out, provider.name);
    let (var, value) = &provider.switch;
    let new = s.with_env(with_var(&s.env, var, value));
    let listed = new.ok(&with_url(url, &["patient", "list"]));
    assert!(listed.contains("ada@example.org") && listed.contains("cy@example.org"));
    let new_kek = new.json(&with_url(url, &["keys", "status"]))["kek_id"]
        .as_str()
        .expect("kek id")
        .to_owned();
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM patient_keys WHERE kek_id = '{new_kek}'"
        )),
        2
    );
    // Re-running the rewrap (as after an interruption) finds everything done.
    let again = s.json(&with_url(url, &rewrap));
    assert_eq!(
        (&again["rewrapped"], &again["patient_keys_already_done"]),
        (&serde_json::json!(0), &serde_json::json!(2)),
        "{again}"
    );

    // Erase Ada: her key row is gone, her record with it; Cy still opens.
    new.ok(&with_url(
        url,
        &["patient", "erase", &ada.to_string(), "--yes"],
    ));
    assert_eq!(count("SELECT count(*) FROM patient_keys"), 1);
    let out = new.run(&with_url(url, &["patient", "show", &ada.to_string()]));
    assert!(!out.status.success());
    let shown = new.ok(&with_url(url, &["patient", "show", &cy.to_string()]));
    assert!(shown.contains("cy@example.org"), "{shown}");
}

fn static_provider(tag: &str) -> Provider<'static> {
    let (a, b) = (random_kek(), random_kek());
    let env = vec![
        ("CLINIC_KEK".to_owned(), "static".to_owned()),
        ("CLINIC_KEK_STATIC".to_owned(), a),
        ("NEW_KEK".to_owned(), b.clone()),
    ];
    Provider {
        session: Session::with_keys(tag, env),
        name: "static",
        rewrap: vec!["--to-static-env", "NEW_KEK"],
        switch: ("CLINIC_KEK_STATIC", b),
    }
}

#[test]
fn providers_static_kek_life_on_sqlite() {
    let provider = static_provider("prov-static");
    let db = provider.session.db();
    provider_life(provider, None, &|q| sql_count(&db, q));
}

#[test]
fn providers_static_kek_life_on_postgres() {
    if let Some(server) = ServerDb::new("TEST_POSTGRES_URL", "prov_static") {
        let provider = static_provider("prov-static-pg");
        provider_life(provider, Some(&server.url), &|q| server.count_in(q));
    }
}

#[test]
fn providers_static_kek_life_on_mysql() {
    if let Some(server) = ServerDb::new("TEST_MYSQL_URL", "prov_static") {
        let provider = static_provider("prov-static-my");
        provider_life(provider, Some(&server.url), &|q| server.count_in(q));
    }
}

/// The PKCS#11 life on SoftHSM2, on SQLite or the server behind `var`.
fn pkcs11_life(tag: &str, var: Option<&str>) {
    let server = match var {
        Some(var) => match ServerDb::new(var, &tag.replace('-', "_")) {
            Some(server) => Some(server),
            None => return,
        },
        None => None,
    };
    let dir = fresh_dir(tag);
    let Some((module, conf)) = crate::keys::softhsm_token(&dir, "clinic") else {
        return;
    };
    let env = crate::keys::pkcs11_env(&module, &conf, "kek-a");
    let provider = Provider {
        session: Session::with_keys(&format!("{tag}-db"), env),
        name: "pkcs11",
        rewrap: vec!["--to-pkcs11-key", "kek-b"],
        switch: ("CLINIC_PKCS11_KEY", "kek-b".to_owned()),
    };
    match &server {
        Some(server) => provider_life(provider, Some(&server.url), &|q| server.count_in(q)),
        None => {
            let db = provider.session.db();
            provider_life(provider, None, &|q| sql_count(&db, q));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn providers_pkcs11_kek_life_on_sqlite() {
    pkcs11_life("prov-hsm", None);
}

#[test]
fn providers_pkcs11_kek_life_on_postgres() {
    pkcs11_life("prov-hsm-pg", Some("TEST_POSTGRES_URL"));
}

#[test]
fn providers_pkcs11_kek_life_on_mysql() {
    pkcs11_life("prov-hsm-my", Some("TEST_MYSQL_URL"));
}

/// The AWS KMS life on a moto_server of its own, on SQLite or the server behind `var`.
#[cfg(feature = "aws-kms")]
fn aws_kms_life(tag: &str, var: Option<&str>) {
    let server = match var {
        Some(var) => match ServerDb::new(var, &tag.replace('-', "_")) {
            Some(server) => Some(server),
            None => return,
        },
        None => None,
    };
    let Some(moto) = crate::aws_kms::Moto::start(tag) else {
        return;
    };
    let (key_a, key_b) = (moto.create_key(), moto.create_key());
    let mut env = moto.env();
    env.push(("CLINIC_KEK".to_owned(), "aws-kms".to_owned()));
    env.push(("CLINIC_AWS_KMS_KEY".to_owned(), key_a));
    let provider = Provider {
        session: Session::with_keys(&format!("{tag}-db"), env),
        name: "aws-kms",
        rewrap: vec!["--to-aws-kms-key", &key_b],
        switch: ("CLINIC_AWS_KMS_KEY", key_b.clone()),
    };
    match &server {
        Some(server) => provider_life(provider, Some(&server.url), &|q| server.count_in(q)),
        None => {
            let db = provider.session.db();
            provider_life(provider, None, &|q| sql_count(&db, q));
        }
    }
}

#[cfg(feature = "aws-kms")]
#[test]
fn providers_aws_kms_life_on_sqlite() {
    aws_kms_life("prov-kms", None);
}

#[cfg(feature = "aws-kms")]
#[test]
fn providers_aws_kms_life_on_postgres() {
    aws_kms_life("prov-kms-pg", Some("TEST_POSTGRES_URL"));
}

#[cfg(feature = "aws-kms")]
#[test]
fn providers_aws_kms_life_on_mysql() {
    aws_kms_life("prov-kms-my", Some("TEST_MYSQL_URL"));
}

/// `keys init --provider` must agree with `CLINIC_KEK`; an init interrupted after its first key
/// is finished by running it again, and a complete one is refused untouched.
#[test]
fn providers_keys_init_provider_flag_and_resume() {
    let provider = static_provider("prov-init");
    let s = &provider.session;
    let db = s.db();
    s.ok(&["init"]);
    s.refused(
        &["keys", "init", "--provider", "pkcs11"],
        "--provider pkcs11 contradicts CLINIC_KEK=static",
    );
    s.refused(
        &["keys", "init", "--provider", "env"],
        "--provider env contradicts CLINIC_KEK=static",
    );
    let plain = Session::with_keys("prov-init-env", generated_keys());
    plain.ok(&["init"]);
    plain.refused(&["keys", "init", "--provider", "env"], "wraps nothing");
    let created = s.json(&["keys", "init", "--provider", "static"]);
    assert_eq!(created["created"].as_array().map(Vec::len), Some(2));
    // As if the process had died between its two keys.
    sql(
        &db,
        "DELETE FROM encrypted_columns_keys WHERE purpose = 'blind-index'",
    );
    let finished = s.json(&["keys", "init"]);
    let made = finished["created"].as_array().expect("created");
    assert_eq!(made.len(), 1, "{finished}");
    assert_eq!(made[0]["purpose"], "blind-index", "{finished}");
    assert_eq!(
        sql_count(&db, "SELECT count(*) FROM encrypted_columns_keys"),
        2
    );
    s.refused(&["keys", "init"], "already holds 2 key(s)");
    s.add_patient("Ada", "Doe", "ada@example.org", &[]);
}

/// Rotating keys that live in the key store: `keys new`, `keys promote`, `keys rotate` and
/// `keys retire`, which refuses the active key and a key stored values still use, naming
/// the columns and counts.
#[test]
fn providers_stored_keys_rotate_through_new_promote_retire() {
    let provider = static_provider("prov-life");
    let s = &provider.session;
    s.ok(&["init"]);
    s.ok(&["keys", "init"]);
    s.add_patient("Ada", "Doe", "ada@example.org", &[]);

    let bi = s.json(&["keys", "new", "--purpose", "blind-index"]);
    assert_eq!(
        (bi["id"].as_u64(), &bi["state"]),
        (Some(2), &serde_json::json!("decrypt-only"))
    );
    s.refused(
        &["keys", "retire", "--purpose", "blind-index", "1"],
        "active",
    );
    s.ok(&["keys", "promote", "--purpose", "blind-index", "2"]);
    let out = s.run(&["keys", "retire", "--purpose", "blind-index", "1"]);
    assert_one_line_failure(&out, "blind-index key 1 still seals");
    assert!(
        text(&out.stderr).contains("patients.email_bidx: 1"),
        "{}",
        text(&out.stderr)
    );
    // Lookups still find Ada (key 1 is loaded, decrypt-only), new patients index with key 2.
    assert!(
        s.ok(&["patient", "find", "--email", "ada@example.org"])
            .contains("Ada")
    );
    s.add_patient("Cy", "Doe", "cy@example.org", &[]);

    let enc = s.json(&["keys", "new", "--purpose", "encryption"]);
    assert_eq!(enc["id"].as_u64(), Some(2));
    s.ok(&["keys", "promote", "--purpose", "encryption", "2"]);
    s.ok(&["keys", "rotate"]);
    s.ok(&["keys", "retire", "--purpose", "encryption", "1"]);
    s.refused(
        &["keys", "retire", "--purpose", "encryption", "2"],
        "active",
    );

    // A fresh process loads keys 2 (and blind-index 1, still decrypt-only) and reads both.
    let listed = s.ok(&["patient", "list"]);
    assert!(listed.contains("ada@example.org") && listed.contains("cy@example.org"));
    let status = s.json(&["keys", "status"]);
    let states: Vec<(String, u64, String)> = status["stored_keys"]
        .as_array()
        .expect("stored keys")
        .iter()
        .map(|k| {
            (
                k["purpose"].as_str().unwrap_or_default().to_owned(),
                k["id"].as_u64().unwrap_or_default(),
                k["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("encryption", 1, "retired"),
        ("encryption", 2, "active"),
        ("blind-index", 1, "decrypt-only"),
        ("blind-index", 2, "active"),
    ] {
        let expected = (expected.0.to_owned(), expected.1, expected.2.to_owned());
        assert!(states.contains(&expected), "{expected:?} in {states:?}");
    }
    assert_eq!(status["active_key"], 2);
}
