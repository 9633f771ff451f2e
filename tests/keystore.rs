//! The key store (`encrypted_columns::keystore`, issue 12) on SQLite, PostgreSQL and MariaDB:
//! check values of environment keys, keys created and loaded through a KEK (StaticKek always,
//! PKCS#11 on SoftHSM2 when `TEST_SOFTHSM2_MODULE` is set), damaged rows, promote and retire,
//! and KEK rewrap (interrupted and resumed).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use encrypted_columns::kek::pkcs11::{Pkcs11Config, Pkcs11Kek};
use encrypted_columns::kek::{
    KekError, KekFuture, KeyEncryptionKey, StaticKek, WRAPPED_KEY_LEN, WrapContext, WrappedKey,
};
use encrypted_columns::keyring::KeyPurpose;
use encrypted_columns::keystore::{EnvKeyOutcome, KeyState, KeyStore, KeyStoreError, StoredKey};
use encrypted_columns::zeroize::Zeroizing;
use encrypted_columns::{EncryptedString, KeyId, Keyring, column_context};
use encrypted_columns_tests::{TestDb, TestResult, backend_tests};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, Database};

column_context!(pub Secret, table = "keystore_values", column = "secret");

fn ring(enc: u8, blind: u8) -> Keyring {
    let mut ring = Keyring::new(KeyId(1), [enc; 32]);
    ring.add_blind_index_key(KeyId(1), [blind; 32]).unwrap();
    ring
}

async fn store_of(db: &TestDb) -> Result<KeyStore, KeyStoreError> {
    let store = KeyStore::new("clinic");
    store.create_table(&db.conn).await?;
    Ok(store)
}

/// Overwrites one column of a stored key behind the store's back.
async fn tamper(
    db: &TestDb,
    purpose: KeyPurpose,
    id: u32,
    column: &str,
    value: Vec<u8>,
) -> TestResult {
    let update = Query::update()
        .table(Alias::new("encrypted_columns_keys"))
        .value(Alias::new(column), value)
        .and_where(Expr::col(Alias::new("purpose")).eq(purpose.as_str()))
        .and_where(Expr::col(Alias::new("key_id")).eq(i64::from(id)))
        .to_owned();
    assert_eq!(db.conn.execute(&update).await?.rows_affected(), 1);
    Ok(())
}

fn check_values(ring: &Keyring) -> Vec<String> {
    let mut out: Vec<String> = ring
        .key_ids()
        .map(|id| {
            ring.check_value(KeyPurpose::Encryption, id)
                .unwrap()
                .to_string()
        })
        .collect();
    out.extend(ring.blind_index_key_ids().map(|id| {
        ring.check_value(KeyPurpose::BlindIndex, id)
            .unwrap()
            .to_string()
    }));
    out
}

backend_tests!(
    env_keys_registered_then_accepted,
    |db: &TestDb| async move {
        let store = store_of(db).await?;
        let mut keys = ring(1, 2);
        keys.add_key(KeyId(2), [3u8; 32])?;
        let first = store.check_env_keys(&db.conn, &keys).await?;
        assert_eq!(first.count(EnvKeyOutcome::Registered), 3);
        let listed = store.list(&db.conn).await?;
        assert_eq!(listed.len(), 3);
        assert!(
            listed
                .iter()
                .all(|k| k.provider == "env" && !k.wrapped && k.kek_id.is_none())
        );
        let states: Vec<(KeyPurpose, u32, KeyState)> = listed
            .iter()
            .map(|k| (k.purpose, k.key_id.0, k.state))
            .collect();
        assert!(states.contains(&(KeyPurpose::Encryption, 1, KeyState::Active)));
        assert!(states.contains(&(KeyPurpose::Encryption, 2, KeyState::DecryptOnly)));
        assert!(states.contains(&(KeyPurpose::BlindIndex, 1, KeyState::Active)));
        let again = store.check_env_keys(&db.conn, &keys).await?;
        assert_eq!(again.count(EnvKeyOutcome::Checked), 3);
        assert_eq!(again.count(EnvKeyOutcome::Registered), 0);
        // Another scope has keys of its own.
        let other = KeyStore::new("tenant-2");
        let report = other.check_env_keys(&db.conn, &ring(9, 8)).await?;
        assert_eq!(report.count(EnvKeyOutcome::Registered), 2);
        Ok(())
    }
);

backend_tests!(
    wrong_env_keys_refused_and_nothing_written,
    |db: &TestDb| async move {
        let store = store_of(db).await?;
        store.check_env_keys(&db.conn, &ring(1, 2)).await?;
        let before = store.list(&db.conn).await?;

        // The right encryption key, a wrong blind-index key under id 1.
        let err = store
            .check_env_keys(&db.conn, &ring(1, 7))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                KeyStoreError::CheckValueMismatch {
                    purpose: KeyPurpose::BlindIndex,
                    key_id: 1,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("blind-index key 1") && text.contains("clinic"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);

        // A wrong encryption key, plus a new key 2 seen for the first time: refused, and key 2 is
        // not registered either (one transaction).
        let mut wrong = ring(5, 2);
        wrong.add_key(KeyId(2), [6u8; 32])?;
        let err = store.check_env_keys(&db.conn, &wrong).await.unwrap_err();
        assert_eq!(err.key(), Some((KeyPurpose::Encryption, 1)), "{err}");
        assert!(err.to_string().contains("encryption key 1"), "{err}");
        assert_eq!(store.list(&db.conn).await?, before);
        // The right keys are still accepted.
        store.check_env_keys(&db.conn, &ring(1, 2)).await?;
        Ok(())
    }
);

backend_tests!(
    concurrent_first_sights_do_not_both_win,
    |db: &TestDb| async move {
        let store = store_of(db).await?;
        let a = Database::connect(db.url()).await?;
        let b = Database::connect(db.url()).await?;
        let (ring_a, ring_b) = (ring(1, 2), ring(3, 4));
        let (ra, rb) = tokio::join!(
            store.check_env_keys(&a, &ring_a),
            store.check_env_keys(&b, &ring_b)
        );
        // At most one wins (the loser sees a mismatch, or the database makes it wait and fail).
        assert!(ra.is_ok() != rb.is_ok(), "a: {ra:?}, b: {rb:?}");
        let winner = if ra.is_ok() { &ring_a } else { &ring_b };
        let stored = store.list(&db.conn).await?;
        assert_eq!(stored.len(), 2);
        for key in &stored {
            assert_eq!(
                Some(key.check_value),
                winner.check_value(key.purpose, key.key_id)
            );
        }
        a.close().await?;
        b.close().await?;
        Ok(())
    }
);

/// Creates encryption key 1 and blind-index key 1 under `kek`, loads them, and returns the
/// loaded keyring.
async fn create_and_load(
    db: &TestDb,
    store: &KeyStore,
    kek: &dyn KeyEncryptionKey,
) -> Result<Keyring, Box<dyn std::error::Error>> {
    let enc = store
        .create_key(&db.conn, kek, KeyPurpose::Encryption, KeyState::Active)
        .await?;
    let blind = store
        .create_key(&db.conn, kek, KeyPurpose::BlindIndex, KeyState::Active)
        .await?;
    assert_eq!((enc.key_id, blind.key_id), (KeyId(1), KeyId(1)));
    assert!(enc.wrapped && enc.provider == kek.provider());
    assert_eq!(enc.kek_id.as_deref(), Some(kek.kek_id()));
    let ring = store.load(&db.conn, kek).await?;
    assert_eq!(ring.active_key_id(), KeyId(1));
    assert_eq!(ring.active_blind_index_key_id(), Some(KeyId(1)));
    assert_eq!(
        ring.check_value(KeyPurpose::Encryption, KeyId(1)),
        Some(enc.check_value)
    );
    Ok(ring)
}

backend_tests!(
    create_and_load_through_static_kek,
    |db: &TestDb| async move {
        let store = store_of(db).await?;
        let kek = StaticKek::generate("kek-a");
        let ring = create_and_load(db, &store, &kek).await?;
        // Loaded again (a fresh process): the same keys, so a value sealed by one opens in the other.
        let sealed = EncryptedString::<Secret>::new_with(&ring, "ada@example.org".into())?;
        let again = store.load(&db.conn, &kek).await?;
        let opened =
            EncryptedString::<Secret>::from_envelope_with(&again, sealed.envelope().to_vec())?;
        assert_eq!(opened.expose(), "ada@example.org");
        // A second key of a purpose gets the next id, decrypt-only.
        let two = store
            .create_key(
                &db.conn,
                &kek,
                KeyPurpose::Encryption,
                KeyState::DecryptOnly,
            )
            .await?;
        assert_eq!((two.key_id, two.state), (KeyId(2), KeyState::DecryptOnly));
        let ring = store.load(&db.conn, &kek).await?;
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), [KeyId(1), KeyId(2)]);
        assert_eq!(ring.active_key_id(), KeyId(1));
        // Another KEK is refused, naming its provider and id and the keys.
        let err = store
            .load(&db.conn, &StaticKek::generate("kek-b"))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, KeyStoreError::OtherKek { .. }), "{text}");
        assert!(
            text.contains("static (kek-b)") && text.contains("encryption key 1 (static kek-a)"),
            "{text}"
        );
        Ok(())
    }
);

backend_tests!(
    tampered_rows_are_refused_naming_the_key,
    |db: &TestDb| async move {
        let store = store_of(db).await?;
        let kek = StaticKek::generate("kek");
        create_and_load(db, &store, &kek).await?;
        let rows = store.list(&db.conn).await?;
        let blind = rows
            .iter()
            .find(|k| k.purpose == KeyPurpose::BlindIndex)
            .unwrap();

        // Another key's (valid-length) check value: the unwrapped key does not match it.
        let mut other = blind.check_value.as_bytes().to_vec();
        other[0] ^= 1;
        tamper(db, KeyPurpose::BlindIndex, 1, "check_value", other).await?;
        let err = store.load(&db.conn, &kek).await.unwrap_err();
        assert!(
            matches!(
                err,
                KeyStoreError::CheckValueMismatch {
                    purpose: KeyPurpose::BlindIndex,
                    key_id: 1,
                    ..
                }
            ),
            "{err}"
        );
        // A truncated check value is a damaged row.
        tamper(db, KeyPurpose::BlindIndex, 1, "check_value", vec![1u8; 15]).await?;
        let err = store.load(&db.conn, &kek).await.unwrap_err();
        assert!(
            matches!(err, KeyStoreError::DamagedRow { key_id: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("15 bytes"), "{err}");
        tamper(
            db,
            KeyPurpose::BlindIndex,
            1,
            "check_value",
            blind.check_value.as_bytes().to_vec(),
        )
        .await?;
        store.load(&db.conn, &kek).await?;

        // A modified wrapped key does not unwrap; the error names the key and the KEK.
        let update = Query::select()
            .column(Alias::new("wrapped_key"))
            .from(Alias::new("encrypted_columns_keys"))
            .and_where(Expr::col(Alias::new("purpose")).eq("encryption"))
            .to_owned();
        let row = db.conn.query_one(&update).await?.unwrap();
        let mut wrapped: Vec<u8> = row.try_get("", "wrapped_key")?;
        wrapped[30] ^= 0x40;
        tamper(db, KeyPurpose::Encryption, 1, "wrapped_key", wrapped).await?;
        let err = store.load(&db.conn, &kek).await.unwrap_err();
        assert!(
            matches!(
                err,
                KeyStoreError::KeyKek {
                    purpose: KeyPurpose::Encryption,
                    key_id: 1,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("encryption key 1") && text.contains("static (kek)"),
            "{text}"
        );
        // A bad state text is a damaged row too, never a panic.
        let update = Query::update()
            .table(Alias::new("encrypted_columns_keys"))
            .value(Alias::new("state"), "enabled")
            .and_where(Expr::col(Alias::new("purpose")).eq("blind-index"))
            .to_owned();
        db.conn.execute(&update).await?;
        let err = store.list(&db.conn).await.unwrap_err();
        assert!(matches!(err, KeyStoreError::DamagedRow { .. }), "{err}");
        Ok(())
    }
);

backend_tests!(promote_and_retire_rules, |db: &TestDb| async move {
    let store = store_of(db).await?;
    let kek = StaticKek::generate("kek");
    create_and_load(db, &store, &kek).await?;
    let enc = KeyPurpose::Encryption;
    let err = store
        .create_key(&db.conn, &kek, enc, KeyState::Active)
        .await
        .unwrap_err();
    assert!(
        matches!(err, KeyStoreError::ActiveKeyExists { key_id: 1, .. }),
        "{err}"
    );
    store
        .create_key(&db.conn, &kek, enc, KeyState::DecryptOnly)
        .await?;
    let err = store.retire(&db.conn, enc, KeyId(1)).await.unwrap_err();
    assert!(
        matches!(err, KeyStoreError::KeyIsActive { key_id: 1, .. }),
        "{err}"
    );
    let err = store.promote(&db.conn, enc, KeyId(9)).await.unwrap_err();
    assert!(
        matches!(err, KeyStoreError::UnknownKey { key_id: 9, .. }),
        "{err}"
    );

    let promoted = store.promote(&db.conn, enc, KeyId(2)).await?;
    assert_eq!(promoted.state, KeyState::Active);
    let states = |keys: Vec<StoredKey>| -> Vec<(u32, KeyState)> {
        keys.into_iter()
            .filter(|k| k.purpose == KeyPurpose::Encryption)
            .map(|k| (k.key_id.0, k.state))
            .collect()
    };
    assert_eq!(
        states(store.list(&db.conn).await?),
        [(1, KeyState::DecryptOnly), (2, KeyState::Active)]
    );
    // Promoting the active key again changes nothing.
    store.promote(&db.conn, enc, KeyId(2)).await?;
    let ring = store.load(&db.conn, &kek).await?;
    assert_eq!(ring.active_key_id(), KeyId(2));
    assert_eq!(ring.key_ids().count(), 2);

    store.retire(&db.conn, enc, KeyId(1)).await?;
    store.retire(&db.conn, enc, KeyId(1)).await?; // again: already retired
    let err = store.promote(&db.conn, enc, KeyId(1)).await.unwrap_err();
    assert!(
        matches!(err, KeyStoreError::KeyIsRetired { key_id: 1, .. }),
        "{err}"
    );
    let ring = store.load(&db.conn, &kek).await?;
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), [KeyId(2)]);
    assert_eq!(
        states(store.list(&db.conn).await?),
        [(1, KeyState::Retired), (2, KeyState::Active)]
    );
    // Two active rows (written behind the store's back) are refused at load.
    let update = Query::update()
        .table(Alias::new("encrypted_columns_keys"))
        .value(Alias::new("state"), "active")
        .and_where(Expr::col(Alias::new("purpose")).eq("encryption"))
        .to_owned();
    db.conn.execute(&update).await?;
    let err = store.load(&db.conn, &kek).await.unwrap_err();
    assert!(matches!(err, KeyStoreError::TwoActiveKeys { .. }), "{err}");
    assert!(err.to_string().contains("1, 2"), "{err}");
    Ok(())
});

backend_tests!(rewrap_static_a_to_static_b, |db: &TestDb| async move {
    let store = store_of(db).await?;
    let a = StaticKek::generate("kek-a");
    let b = StaticKek::generate("kek-b");
    let ring = create_and_load(db, &store, &a).await?;
    let sealed = EncryptedString::<Secret>::new_with(&ring, "sealed before".into())?;
    // A key of another scope under a third KEK is not this scope's business.
    let other = KeyStore::new("tenant-2");
    let c = StaticKek::generate("kek-c");
    other
        .create_key(&db.conn, &c, KeyPurpose::Encryption, KeyState::Active)
        .await?;

    let mut steps = 0;
    let report = store
        .rewrap(&db.conn, &a, &b, |p| {
            steps += 1;
            assert_eq!(p.total, 2);
            ControlFlow::Continue(())
        })
        .await?;
    assert_eq!(steps, 2);
    assert_eq!(report.rewrapped.len(), 2);
    assert!(report.finished() && report.untouched.is_empty());
    let after = store.load(&db.conn, &b).await?;
    assert_eq!(check_values(&after), check_values(&ring));
    let opened = EncryptedString::<Secret>::from_envelope_with(&after, sealed.envelope().to_vec())?;
    assert_eq!(opened.expose(), "sealed before");
    let err = store.load(&db.conn, &a).await.unwrap_err();
    assert!(err.to_string().contains("static (kek-a)"), "{err}");
    // A re-run has nothing to do.
    let again = store
        .rewrap(&db.conn, &a, &b, |_| ControlFlow::Continue(()))
        .await?;
    assert!(again.rewrapped.is_empty());
    assert_eq!(again.already_done.len(), 2);
    // The other scope still loads with its own KEK.
    other.load(&db.conn, &c).await?;
    Ok(())
});

/// A destination KEK that fails every wrap after the first `ok` ones (a KMS going away midway).
#[derive(Debug)]
struct Failing {
    inner: StaticKek,
    ok: AtomicUsize,
}

impl KeyEncryptionKey for Failing {
    fn provider(&self) -> &str {
        self.inner.provider()
    }
    fn kek_id(&self) -> &str {
        self.inner.kek_id()
    }
    fn wrap_key<'a>(
        &'a self,
        key: &'a [u8; WRAPPED_KEY_LEN],
        context: &'a WrapContext,
    ) -> KekFuture<'a, WrappedKey> {
        Box::pin(async move {
            if self.ok.fetch_sub(1, Ordering::SeqCst) == 0 {
                self.ok.store(0, Ordering::SeqCst);
                return Err(KekError::Unreachable {
                    provider: "static".into(),
                    kek_id: self.kek_id().into(),
                    reason: "test: gone".into(),
                });
            }
            self.inner.wrap_key(key, context).await
        })
    }
    fn unwrap_key<'a>(
        &'a self,
        wrapped: &'a WrappedKey,
        context: &'a WrapContext,
    ) -> KekFuture<'a, Zeroizing<[u8; WRAPPED_KEY_LEN]>> {
        self.inner.unwrap_key(wrapped, context)
    }
}

backend_tests!(interrupted_rewrap_resumes, |db: &TestDb| async move {
    let store = store_of(db).await?;
    let a = StaticKek::generate("kek-a");
    let b_bytes = Zeroizing::new([0x42u8; 32]);
    let b = StaticKek::new("kek-b", &b_bytes);
    let ring = create_and_load(db, &store, &a).await?;
    for _ in 0..2 {
        store
            .create_key(&db.conn, &a, KeyPurpose::Encryption, KeyState::DecryptOnly)
            .await?;
    }
    let sealed = EncryptedString::<Secret>::new_with(&ring, "still readable".into())?;

    // Stopped by the callback after one key.
    let report = store
        .rewrap(&db.conn, &a, &b, |_| ControlFlow::Break(()))
        .await?;
    assert!(report.stopped && !report.finished());
    assert_eq!(report.rewrapped.len(), 1);
    // Half moved: neither KEK loads the scope, and the error names the other KEK's keys.
    let err = store.load(&db.conn, &b).await.unwrap_err();
    assert!(err.to_string().contains("static kek-a"), "{err}");
    assert!(store.load(&db.conn, &a).await.is_err());

    // The destination fails after one more wrap: an error naming the key, the rest untouched.
    let failing = Failing {
        inner: StaticKek::new("kek-b", &b_bytes),
        ok: AtomicUsize::new(1),
    };
    let err = store
        .rewrap(&db.conn, &a, &failing, |_| ControlFlow::Continue(()))
        .await
        .unwrap_err();
    assert!(matches!(err, KeyStoreError::KeyKek { .. }), "{err}");
    let under_b = store
        .list(&db.conn)
        .await?
        .iter()
        .filter(|k| k.kek_id.as_deref() == Some("kek-b"))
        .count();
    assert_eq!(under_b, 2);

    // Run again: finishes, counting the earlier keys as done.
    let report = store
        .rewrap(&db.conn, &a, &b, |_| ControlFlow::Continue(()))
        .await?;
    assert!(report.finished());
    assert_eq!((report.already_done.len(), report.rewrapped.len()), (2, 2));
    let after = store.load(&db.conn, &b).await?;
    assert_eq!(
        check_values(&after),
        check_values(&store_ring(&ring, &after))
    );
    let opened = EncryptedString::<Secret>::from_envelope_with(&after, sealed.envelope().to_vec())?;
    assert_eq!(opened.expose(), "still readable");
    Ok(())
});

/// `after`'s keys must include `before`'s: the check values of `before`'s ids in `after`.
fn store_ring(before: &Keyring, after: &Keyring) -> Keyring {
    for id in before.key_ids() {
        assert_eq!(
            before.check_value(KeyPurpose::Encryption, id),
            after.check_value(KeyPurpose::Encryption, id)
        );
    }
    after.clone()
}

// --- PKCS#11 (SoftHSM2) -----------------------------------------------------------------------

const MODULE_VAR: &str = "TEST_SOFTHSM2_MODULE";
use encrypted_columns_tests::softhsm::PIN;
const TOKEN: &str = "keystore";

/// SoftHSM2 with this binary's token, or `None` when `TEST_SOFTHSM2_MODULE` is unset. As in
/// tests/kek_pkcs11.rs: the token is made and `SOFTHSM2_CONF` set once, before the module is
/// loaded (SoftHSM2 reads its configuration once per process).
fn hsm() -> Option<&'static PathBuf> {
    static HSM: OnceLock<PathBuf> = OnceLock::new();
    let module = std::env::var(MODULE_VAR).ok()?;
    Some(HSM.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("keystore-hsm-{}", std::process::id()));
        let conf = encrypted_columns_tests::softhsm::create_tokens(&dir, &[TOKEN]);
        // SAFETY: once, inside get_or_init, before any test of this binary loads the module
        // (all reach it through this function).
        unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
        PathBuf::from(module)
    }))
}

async fn hsm_kek(module: &PathBuf, label: &str) -> Pkcs11Kek {
    Pkcs11Kek::connect(Pkcs11Config::new(module, TOKEN, label, PIN).generate_if_missing(true))
        .await
        .expect("connect to SoftHSM2")
}

backend_tests!(
    create_load_and_rewrap_through_pkcs11,
    |db: &TestDb| async move {
        let Some(module) = hsm() else {
            eprintln!("skipped: {MODULE_VAR} not set");
            return Ok(());
        };
        let store = store_of(db).await?;
        let hsm_a = hsm_kek(module, &format!("a-{}", db.name)).await;
        let ring = create_and_load(db, &store, &hsm_a).await?;
        let sealed = EncryptedString::<Secret>::new_with(&ring, "hsm".into())?;
        // PKCS#11 → StaticKek → another PKCS#11 key.
        let stat = StaticKek::generate("bridge");
        store
            .rewrap(&db.conn, &hsm_a, &stat, |_| ControlFlow::Continue(()))
            .await?;
        let hsm_b = hsm_kek(module, &format!("b-{}", db.name)).await;
        let report = store
            .rewrap(&db.conn, &stat, &hsm_b, |_| ControlFlow::Continue(()))
            .await?;
        assert_eq!(report.rewrapped.len(), 2);
        let after = store.load(&db.conn, &hsm_b).await?;
        let opened =
            EncryptedString::<Secret>::from_envelope_with(&after, sealed.envelope().to_vec())?;
        assert_eq!(opened.expose(), "hsm");
        let err = store.load(&db.conn, &hsm_a).await.unwrap_err();
        assert!(err.to_string().contains("pkcs11"), "{err}");
        Ok(())
    }
);
