//! Subject keys (`encrypted_columns::subject_keys`) on SQLite, PostgreSQL and MariaDB: created
//! through a provider, opened in batches after a reconnect, read across two providers,
//! destroyed (crypto-shredding) with the copy check, refused bad rows, the cache's bound and
//! TTL, and reads from the cache while a SoftHSM2 KEK is gone.
//!
//! The SoftHSM2 cases run when `TEST_SOFTHSM2_MODULE` names its module (as in
//! tests/kek_pkcs11.rs: one token directory per process, made before the module loads).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use encrypted_columns::kek::pkcs11::{Pkcs11Config, Pkcs11Kek};
use encrypted_columns::kek::{
    KekFuture, KeyEncryptionKey, KeyringKek, StaticKek, WRAPPED_KEY_LEN, WrapContext, WrappedKey,
};
use encrypted_columns::keyring::KeyPurpose;
use encrypted_columns::subject_keys::{CacheConfig, SubjectKeyError, SubjectKeys, table};
use encrypted_columns::zeroize::Zeroizing;
use encrypted_columns::{Context, Error, Keyring};
use encrypted_columns_tests::{TestDb, TestResult, backend_tests};
use sea_orm::sea_query::{Alias, ColumnDef, Expr, ExprTrait, Query, Table};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

const TABLE: &str = "subject_keys";
const NOTES: Context = Context::new("subject_notes", "body");
/// The TTL of the expiry tests.
const TTL: Duration = Duration::from_secs(3);

/// A fresh subject-key table and a notes table whose rows reference it.
async fn create_tables(db: &DatabaseConnection) -> TestResult {
    db.execute(&table::create_table_statement(TABLE)).await?;
    db.execute(
        &Table::create()
            .table(Alias::new("subject_notes"))
            .col(
                ColumnDef::new(Alias::new("id"))
                    .integer()
                    .not_null()
                    .auto_increment()
                    .primary_key(),
            )
            .col(ColumnDef::new(Alias::new("subject")).integer().not_null())
            .col(ColumnDef::new(Alias::new("body")).blob().not_null())
            .to_owned(),
    )
    .await?;
    Ok(())
}

async fn add_note(db: &DatabaseConnection, subject: i64, envelope: Vec<u8>) -> TestResult {
    db.execute(
        &Query::insert()
            .into_table(Alias::new("subject_notes"))
            .columns([Alias::new("subject"), Alias::new("body")])
            .values_panic([subject.into(), envelope.into()])
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// Every note as (subject row, envelope).
async fn notes(db: &DatabaseConnection) -> Result<Vec<(i64, Vec<u8>)>, Box<dyn std::error::Error>> {
    let rows = db
        .query_all(
            &Query::select()
                .columns([Alias::new("subject"), Alias::new("body")])
                .from(Alias::new("subject_notes"))
                .order_by(Alias::new("id"), sea_orm::sea_query::Order::Asc)
                .to_owned(),
        )
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let subject: i32 = row.try_get("", "subject")?;
        out.push((i64::from(subject), row.try_get("", "body")?));
    }
    Ok(out)
}

/// Sets a column of key row `row` with plain SQL (tampering, rewrapping).
async fn set_key_column(
    db: &DatabaseConnection,
    row: i64,
    column: &str,
    value: sea_orm::Value,
) -> TestResult {
    db.execute(
        &Query::update()
            .table(Alias::new(TABLE))
            .value(Alias::new(column), value)
            .and_where(Expr::col(Alias::new("id")).eq(row))
            .to_owned(),
    )
    .await?;
    Ok(())
}

async fn key_bytes(
    db: &DatabaseConnection,
    row: i64,
    column: &str,
) -> Result<Option<Vec<u8>>, Box<dyn std::error::Error>> {
    let found = db
        .query_one(
            &Query::select()
                .column(Alias::new(column))
                .from(Alias::new(TABLE))
                .and_where(Expr::col(Alias::new("id")).eq(row))
                .to_owned(),
        )
        .await?
        .ok_or("no such key row")?;
    Ok(found.try_get("", column)?)
}

/// The whole life of two subjects with `kek` (and a second connection made from `db.url()`
/// with `reconnect_kek`, the same KEK as a fresh object): create, seal, reconnect with an
/// empty cache, open, destroy one.
async fn life_of_two_subjects(
    db: &TestDb,
    kek: Arc<dyn KeyEncryptionKey>,
    reconnect_kek: Arc<dyn KeyEncryptionKey>,
) -> TestResult {
    create_tables(&db.conn).await?;
    let app = Keyring::generate();
    let keys = SubjectKeys::new(TABLE, kek);
    let alice = keys.create(&db.conn).await?;
    let bob = keys.create(&db.conn).await?;
    assert_ne!(alice.row(), bob.row());
    assert_eq!(alice.key_id(), keys.ids().key_id(alice.row())?);
    for (subject, text) in [(&alice, "alice 1"), (&bob, "bob 1"), (&alice, "alice 2")] {
        let envelope = subject.sealing_ring(&app).seal(NOTES, text.as_bytes())?;
        add_note(&db.conn, subject.row(), envelope).await?;
    }
    // The stored row: the provider's name and KEK, the key's check value.
    let stored_kcv = key_bytes(&db.conn, alice.row(), table::CHECK_VALUE).await?;
    assert_eq!(stored_kcv.map(|v| v.len()), Some(16));

    // Everything dropped; a new connection, a new SubjectKeys with an empty cache.
    drop(keys);
    let conn = Database::connect(db.url()).await?;
    let keys = SubjectKeys::new(TABLE, reconnect_kek);
    assert_eq!(keys.cached(), 0);
    let rows: Vec<i64> = notes(&conn).await?.iter().map(|(s, _)| *s).collect();
    let opened = keys.keyring(&conn, &app, rows.iter().copied()).await?;
    assert!(opened.broken.is_empty(), "{:?}", opened.broken);
    assert!(opened.missing.is_empty() && opened.unchecked.is_empty());
    assert_eq!(keys.cached(), 2);
    let mut texts = Vec::new();
    for (subject, envelope) in notes(&conn).await? {
        keys.check_binding(&envelope, subject)?;
        texts.push(String::from_utf8(
            opened.ring.open(NOTES, &envelope)?.to_vec(),
        )?);
    }
    assert_eq!(texts, ["alice 1", "bob 1", "alice 2"]);
    // The ring opens but does not seal for a subject; `sealing` does.
    assert_eq!(opened.ring.active_key_id(), app.active_key_id());
    let sealing = opened.sealing(bob.row())?;
    assert_eq!(sealing.active_key_id(), bob.key_id());
    // A note of Bob's read as Alice's is refused by the binding check, naming Alice's row.
    let (_, bobs) = &notes(&conn).await?[1];
    let err = keys.check_binding(bobs, alice.row()).unwrap_err();
    assert!(
        matches!(err, SubjectKeyError::Unbound { row, .. } if row == alice.row()),
        "{err}"
    );

    // Destroy Alice: her notes no longer open, Bob's do.
    let report = keys.destroy(&conn, alice.row()).await?;
    assert_eq!((report.row, report.deleted), (alice.row(), 1));
    assert_eq!(report.key_id, alice.key_id());
    assert!(report.check_value.is_some());
    let after = keys.keyring(&conn, &app, rows.iter().copied()).await?;
    assert_eq!(
        after.missing.iter().copied().collect::<Vec<_>>(),
        [alice.row()]
    );
    for (subject, envelope) in notes(&conn).await? {
        let opened = after.ring.open(NOTES, &envelope);
        if subject == alice.row() {
            assert!(
                matches!(opened, Err(Error::UnknownKeyId { id }) if id == alice.key_id()),
                "{opened:?}"
            );
        } else {
            assert_eq!(opened?.as_slice(), b"bob 1");
        }
    }
    // Re-running the destroy finds nothing left to do.
    assert_eq!(keys.destroy(&conn, alice.row()).await?.deleted, 0);
    // The original connection sees the same.
    assert!(
        keys.sealing_ring(&db.conn, &app, alice.row())
            .await
            .is_err()
    );
    conn.close().await?;
    Ok(())
}

backend_tests!(
    /// StaticKek: the same KEK bytes in a fresh object after the reconnect.
    static_kek_subjects_survive_a_reconnect_and_one_is_destroyed,
    |db: &TestDb| async move {
        let bytes = Zeroizing::new([0x11u8; 32]);
        life_of_two_subjects(
            db,
            Arc::new(StaticKek::new("kek-1", &bytes)),
            Arc::new(StaticKek::new("kek-1", &bytes)),
        )
        .await
    }
);

backend_tests!(
    /// PKCS#11 (SoftHSM2): a KEK in the token, a second connection to it after the reconnect.
    pkcs11_subjects_survive_a_reconnect_and_one_is_destroyed,
    |db: &TestDb| async move {
        let Some(hsm) = hsm("pkcs11_subjects_survive_a_reconnect_and_one_is_destroyed") else {
            return Ok(());
        };
        let first = Pkcs11Kek::connect(hsm.config(&db.name).generate_if_missing(true)).await?;
        let second = Pkcs11Kek::connect(hsm.config(&db.name)).await?;
        life_of_two_subjects(db, Arc::new(first), Arc::new(second)).await
    }
);

backend_tests!(
    /// Rows of two providers open in one batch; a key rewrapped from one KEK to the other
    /// (rewrap_key + UPDATE) opens with the new KEK alone; a KEK nobody configured is named.
    rows_of_two_providers_and_a_rewrap,
    |db: &TestDb| async move {
        create_tables(&db.conn).await?;
        let app = Arc::new(Keyring::generate());
        let legacy: Arc<dyn KeyEncryptionKey> =
            Arc::new(KeyringKek::new(Arc::clone(&app), TABLE, "wrapped_key")?);
        let kek2: Arc<dyn KeyEncryptionKey> = Arc::new(StaticKek::generate("kek-2"));
        let old = SubjectKeys::new(TABLE, Arc::clone(&legacy));
        let a = old.create(&db.conn).await?;
        let both = old.with_kek(Arc::clone(&kek2));
        let b = both.create(&db.conn).await?;
        let ea = a.sealing_ring(&app).seal(NOTES, b"a")?;
        let eb = b.sealing_ring(&app).seal(NOTES, b"b")?;
        // The legacy row is an ordinary envelope of subject_keys.wrapped_key.
        let wrapped_a = key_bytes(&db.conn, a.row(), table::WRAPPED_KEY).await?.ok_or("null")?;
        assert!(app.open(Context::new(TABLE, "wrapped_key"), &wrapped_a).is_ok());

        let fresh = SubjectKeys::new(TABLE, Arc::clone(&kek2)).with_reader(Arc::clone(&legacy));
        let opened = fresh.keyring(&db.conn, &app, [a.row(), b.row()]).await?;
        assert!(opened.broken.is_empty(), "{:?}", opened.broken);
        assert_eq!(opened.ring.open(NOTES, &ea)?.as_slice(), b"a");
        assert_eq!(opened.ring.open(NOTES, &eb)?.as_slice(), b"b");

        // Only the new KEK: the legacy row is refused, naming its provider.
        let only_new = SubjectKeys::new(TABLE, Arc::clone(&kek2));
        let mut opened = only_new.keyring(&db.conn, &app, [a.row(), b.row()]).await?;
        let err = opened.take_error(a.row()).unwrap_err();
        assert!(
            matches!(&err, SubjectKeyError::NoKek { provider, .. } if provider == "keyring"),
            "{err}"
        );
        opened.take_error(b.row())?;

        // Rewrap row a to kek-2, then the new KEK alone opens it.
        let ctx = WrapContext::new(a.key_id().0, KeyPurpose::Subject.as_str(), TABLE);
        let moved = legacy
            .rewrap_key(&WrappedKey::from_bytes(wrapped_a), &ctx, kek2.as_ref())
            .await?;
        set_key_column(&db.conn, a.row(), table::WRAPPED_KEY, moved.as_bytes().to_vec().into()).await?;
        set_key_column(&db.conn, a.row(), table::PROVIDER, "static".into()).await?;
        set_key_column(&db.conn, a.row(), table::KEK_ID, "kek-2".into()).await?;
        let only_new = SubjectKeys::new(TABLE, Arc::clone(&kek2));
        let opened = only_new.keyring(&db.conn, &app, [a.row(), b.row()]).await?;
        assert!(opened.broken.is_empty(), "{:?}", opened.broken);
        assert_eq!(opened.ring.open(NOTES, &ea)?.as_slice(), b"a");
        Ok(())
    }
);

backend_tests!(
    /// `SubjectKeys::rewrap` moves every row of one KEK to another: stopped after one row and
    /// re-run it finishes (counting the moved row as done), rows of a third KEK are left and
    /// counted, a row changed meanwhile is not overwritten, and afterwards the new KEK alone
    /// opens every moved subject while the old one opens none of them.
    rewrap_moves_every_row_resumably,
    |db: &TestDb| async move {
        create_tables(&db.conn).await?;
        let app = Arc::new(Keyring::generate());
        let kek_a: Arc<dyn KeyEncryptionKey> = Arc::new(StaticKek::generate("kek-a"));
        let kek_b: Arc<dyn KeyEncryptionKey> = Arc::new(StaticKek::generate("kek-b"));
        let third: Arc<dyn KeyEncryptionKey> = Arc::new(StaticKek::generate("kek-3"));
        let keys = SubjectKeys::new(TABLE, Arc::clone(&kek_a));
        let mut subjects = Vec::new();
        for i in 0..3u8 {
            let s = keys.create(&db.conn).await?;
            let envelope = s.sealing_ring(&app).seal(NOTES, &[b'a' + i])?;
            subjects.push((s.row(), envelope));
        }
        let other = SubjectKeys::new(TABLE, Arc::clone(&third)).create(&db.conn).await?;
        let before = key_bytes(&db.conn, subjects[0].0, table::CHECK_VALUE).await?;

        // Stopped after the first moved row.
        let stopped = keys
            .rewrap(&db.conn, kek_a.as_ref(), kek_b.as_ref(), |_| {
                std::ops::ControlFlow::Break(())
            })
            .await?;
        assert!(stopped.stopped && !stopped.finished());
        assert_eq!(stopped.rewrapped, 1);
        // A fresh reader with only kek-a no longer opens the moved row: it really moved.
        let only_a = SubjectKeys::new(TABLE, Arc::clone(&kek_a));
        let mut opened = only_a.keyring(&db.conn, &app, [subjects[0].0]).await?;
        assert!(opened.take_error(subjects[0].0).is_err());

        // Re-run: finishes, counting the first row as already done.
        let mut seen = 0;
        let done = keys
            .rewrap(&db.conn, kek_a.as_ref(), kek_b.as_ref(), |_| {
                seen += 1;
                std::ops::ControlFlow::Continue(())
            })
            .await?;
        assert!(done.finished(), "{done:?}");
        assert_eq!((done.rewrapped, done.already_done, seen), (2, 1, 2));
        assert_eq!(
            done.untouched.get(&("static".to_owned(), "kek-3".to_owned())),
            Some(&1)
        );
        // The keys did not change: same check value, and the new KEK alone opens everything.
        assert_eq!(key_bytes(&db.conn, subjects[0].0, table::CHECK_VALUE).await?, before);
        let only_b = SubjectKeys::new(TABLE, Arc::clone(&kek_b));
        let rows: Vec<i64> = subjects.iter().map(|(r, _)| *r).collect();
        let opened = only_b.keyring(&db.conn, &app, rows.clone()).await?;
        assert!(opened.broken.is_empty(), "{:?}", opened.broken);
        for (i, (_, envelope)) in subjects.iter().enumerate() {
            assert_eq!(opened.ring.open(NOTES, envelope)?.as_slice(), &[b'a' + i as u8]);
        }
        let provider = key_bytes(&db.conn, other.row(), table::WRAPPED_KEY).await?;
        assert!(provider.is_some());
        let opened = SubjectKeys::new(TABLE, Arc::clone(&third))
            .keyring(&db.conn, &app, [other.row()])
            .await?;
        assert!(opened.broken.is_empty(), "the third KEK's row was touched");

        // Nothing left under kek-a: a third run moves nothing and finds all three done.
        let again = keys
            .rewrap(&db.conn, kek_a.as_ref(), kek_b.as_ref(), |_| {
                std::ops::ControlFlow::Continue(())
            })
            .await?;
        assert_eq!((again.rewrapped, again.already_done), (0, 3));

        // A wrapped key tampered with: the rewrap fails naming the row, and writes nothing.
        let tampered_row = rows[1];
        let mut bytes = key_bytes(&db.conn, tampered_row, table::WRAPPED_KEY).await?.ok_or("null")?;
        bytes[30] ^= 1;
        set_key_column(&db.conn, tampered_row, table::WRAPPED_KEY, bytes.clone().into()).await?;
        let kek_c: Arc<dyn KeyEncryptionKey> = Arc::new(StaticKek::generate("kek-c"));
        let err = keys
            .rewrap(&db.conn, kek_b.as_ref(), kek_c.as_ref(), |_| {
                std::ops::ControlFlow::Continue(())
            })
            .await
            .unwrap_err();
        assert_eq!(err.row(), Some(tampered_row), "{err}");
        assert_eq!(
            key_bytes(&db.conn, tampered_row, table::WRAPPED_KEY).await?,
            Some(bytes)
        );
        Ok(())
    }
);

backend_tests!(
    /// With a provider that binds no key id (KeyringKek), wrapped keys swapped between rows
    /// are caught by the check values; a copied row is found by destroy, which then refuses
    /// and deletes nothing; a NULL check value is filled on first use.
    swapped_and_copied_key_rows_are_caught,
    |db: &TestDb| async move {
        create_tables(&db.conn).await?;
        let app = Arc::new(Keyring::generate());
        let kek: Arc<dyn KeyEncryptionKey> =
            Arc::new(KeyringKek::new(Arc::clone(&app), TABLE, "wrapped_key")?);
        let keys = SubjectKeys::new(TABLE, kek).with_cache(CacheConfig::disabled());
        let a = keys.create(&db.conn).await?;
        let b = keys.create(&db.conn).await?;
        let c = keys.create(&db.conn).await?;
        let wa = key_bytes(&db.conn, a.row(), table::WRAPPED_KEY).await?.ok_or("null")?;
        let wb = key_bytes(&db.conn, b.row(), table::WRAPPED_KEY).await?.ok_or("null")?;
        set_key_column(&db.conn, a.row(), table::WRAPPED_KEY, wb.clone().into()).await?;
        set_key_column(&db.conn, b.row(), table::WRAPPED_KEY, wa.clone().into()).await?;
        let opened = keys.keyring(&db.conn, &app, [a.row(), b.row(), c.row()]).await?;
        for row in [a.row(), b.row()] {
            let err = opened.broken.get(&row).ok_or("swapped row opened")?;
            assert!(matches!(err, SubjectKeyError::CheckValueMismatch { row: r } if *r == row), "{err}");
            assert!(err.to_string().contains(&format!("row {row}")), "{err}");
        }
        assert_eq!(opened.broken.len(), 2, "row c still opens");
        assert!(opened.ring.key_ids().any(|id| id == c.key_id()));
        set_key_column(&db.conn, a.row(), table::WRAPPED_KEY, wa.clone().into()).await?;
        set_key_column(&db.conn, b.row(), table::WRAPPED_KEY, wb.into()).await?;

        // A copy of row a (wrapped key and check value) in a new row.
        let kcv = key_bytes(&db.conn, a.row(), table::CHECK_VALUE).await?.ok_or("null")?;
        let copy = keys.create(&db.conn).await?;
        set_key_column(&db.conn, copy.row(), table::WRAPPED_KEY, wa.into()).await?;
        set_key_column(&db.conn, copy.row(), table::CHECK_VALUE, kcv.clone().into()).await?;
        let err = keys.destroy(&db.conn, a.row()).await.unwrap_err();
        assert!(
            matches!(&err, SubjectKeyError::CopiesRemain { row, copies } if *row == a.row() && copies == &[copy.row()]),
            "{err}"
        );
        assert!(err.to_string().contains(&copy.row().to_string()), "{err}");
        // Nothing was deleted.
        assert!(keys.sealing_ring(&db.conn, &app, a.row()).await.is_ok());
        // Only the check value copied (different wrapped bytes) is found too.
        let fresh_wrap = key_bytes(&db.conn, c.row(), table::WRAPPED_KEY).await?.ok_or("null")?;
        set_key_column(&db.conn, copy.row(), table::WRAPPED_KEY, fresh_wrap.into()).await?;
        assert!(matches!(
            keys.destroy(&db.conn, a.row()).await,
            Err(SubjectKeyError::CopiesRemain { .. })
        ));
        set_key_column(&db.conn, copy.row(), table::CHECK_VALUE, sea_orm::Value::Bytes(None)).await?;
        // Now row `copy` has no check value: trusted on first use, then filled.
        let opened = keys.keyring(&db.conn, &app, [copy.row()]).await?;
        assert!(opened.unchecked.contains(&copy.row()));
        assert!(keys.fill_check_value(&db.conn, copy.row()).await?);
        assert!(!keys.fill_check_value(&db.conn, copy.row()).await?, "filled once");
        let filled = key_bytes(&db.conn, copy.row(), table::CHECK_VALUE).await?.ok_or("null")?;
        assert_eq!(filled.len(), 16);
        let opened = keys.keyring(&db.conn, &app, [copy.row()]).await?;
        assert!(opened.unchecked.is_empty() && opened.broken.is_empty());
        assert_ne!(filled, kcv, "its own key id's check value, not row a's");
        assert_eq!(keys.destroy(&db.conn, a.row()).await?.deleted, 1);
        Ok(())
    }
);

backend_tests!(
    /// Negative, zero and huge rows are refused everywhere, never mapped onto another row.
    out_of_range_rows_are_refused,
    |db: &TestDb| async move {
        create_tables(&db.conn).await?;
        let app = Keyring::generate();
        let keys = SubjectKeys::new(TABLE, Arc::new(StaticKek::generate("k")));
        let real = keys.create(&db.conn).await?;
        let huge = i64::from(u32::MAX);
        let wrapped_around = huge + real.row(); // would be real.row() modulo 2^32
        let opened = keys
            .keyring(&db.conn, &app, [-1, 0, huge, wrapped_around, real.row()])
            .await?;
        for row in [-1, 0, huge, wrapped_around] {
            assert!(
                matches!(opened.broken.get(&row), Some(SubjectKeyError::InvalidRow { row: r, .. }) if *r == row),
                "{row}: {:?}",
                opened.broken.get(&row)
            );
        }
        assert_eq!(opened.ring.key_ids().filter(|id| keys.ids().is_subject_key(*id)).count(), 1);
        for row in [-1, 0, huge] {
            assert!(matches!(
                keys.destroy(&db.conn, row).await,
                Err(SubjectKeyError::InvalidRow { .. })
            ));
            assert!(keys.check_binding(&[0u8; 64], row).is_err());
        }
        // The real row is untouched.
        assert!(keys.sealing_ring(&db.conn, &app, real.row()).await.is_ok());
        Ok(())
    }
);

/// Counts unwraps, so cache hits and misses are visible.
#[derive(Debug)]
struct Counting {
    inner: StaticKek,
    unwraps: AtomicUsize,
}

impl KeyEncryptionKey for Counting {
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
        self.inner.wrap_key(key, context)
    }
    fn unwrap_key<'a>(
        &'a self,
        wrapped: &'a WrappedKey,
        context: &'a WrapContext,
    ) -> KekFuture<'a, Zeroizing<[u8; WRAPPED_KEY_LEN]>> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        self.inner.unwrap_key(wrapped, context)
    }
}

backend_tests!(
    /// The cache holds at most its bound (least recently used out) and serves a key only for
    /// its TTL: counted in unwraps.
    cache_bound_and_ttl_are_honoured,
    |db: &TestDb| async move {
        create_tables(&db.conn).await?;
        let app = Keyring::generate();
        let kek = Arc::new(Counting {
            inner: StaticKek::generate("counted"),
            unwraps: AtomicUsize::new(0),
        });
        let creator = SubjectKeys::new(TABLE, Arc::clone(&kek) as Arc<dyn KeyEncryptionKey>);
        let mut rows = Vec::new();
        for _ in 0..3 {
            rows.push(creator.create(&db.conn).await?.row());
        }
        let count = || kek.unwraps.load(Ordering::SeqCst);
        let bounded = SubjectKeys::new(TABLE, Arc::clone(&kek) as Arc<dyn KeyEncryptionKey>)
            .with_cache(CacheConfig::new(2, None));
        bounded.keyring(&db.conn, &app, rows.clone()).await?;
        assert_eq!((count(), bounded.cached()), (3, 2));
        // The two most recent (rows 2 and 3) are served from the cache; row 1 is unwrapped.
        bounded.keyring(&db.conn, &app, [rows[1], rows[2]]).await?;
        assert_eq!(count(), 3);
        bounded.keyring(&db.conn, &app, [rows[0]]).await?;
        assert_eq!(count(), 4);

        let before = count();
        let expiring = SubjectKeys::new(TABLE, Arc::clone(&kek) as Arc<dyn KeyEncryptionKey>)
            .with_cache(CacheConfig::new(10, Some(TTL)));
        expiring.keyring(&db.conn, &app, rows.clone()).await?;
        // Generous: the second open must start within the TTL even on a loaded machine.
        expiring.keyring(&db.conn, &app, rows.clone()).await?;
        assert_eq!(count(), before + 3, "served from the cache within the TTL");
        tokio::time::sleep(TTL + Duration::from_millis(200)).await;
        expiring.keyring(&db.conn, &app, rows.clone()).await?;
        assert_eq!(count(), before + 6, "expired keys are unwrapped again");
        Ok(())
    }
);

backend_tests!(
    /// SoftHSM2 taken away (the KEK object destroyed in the token by another session): the
    /// cached subject still opens; an uncached one, and an expired one, fail with a typed
    /// error naming the provider.
    provider_down_reads_from_the_cache,
    |db: &TestDb| async move {
        let Some(hsm) = hsm("provider_down_reads_from_the_cache") else {
            return Ok(());
        };
        create_tables(&db.conn).await?;
        let app = Keyring::generate();
        let label = format!("{}-down", db.name);
        let kek: Arc<dyn KeyEncryptionKey> =
            Arc::new(Pkcs11Kek::connect(hsm.config(&label).generate_if_missing(true)).await?);
        let creator = SubjectKeys::new(TABLE, Arc::clone(&kek));
        let cached = creator.create(&db.conn).await?;
        let uncached = creator.create(&db.conn).await?;
        let expiring = creator.create(&db.conn).await?;
        let keys = SubjectKeys::new(TABLE, Arc::clone(&kek));
        let short = SubjectKeys::new(TABLE, Arc::clone(&kek))
            .with_cache(CacheConfig::new(10, Some(TTL)));
        let opened = keys.keyring(&db.conn, &app, [cached.row()]).await?;
        assert!(opened.broken.is_empty(), "{:?}", opened.broken);
        let opened = short.keyring(&db.conn, &app, [expiring.row()]).await?;
        assert!(opened.broken.is_empty(), "{:?}", opened.broken);
        let envelope = cached.sealing_ring(&app).seal(NOTES, b"still here")?;

        hsm.destroy_kek(&label);

        let mut opened = keys.keyring(&db.conn, &app, [cached.row(), uncached.row()]).await?;
        assert_eq!(opened.ring.open(NOTES, &envelope)?.as_slice(), b"still here");
        let err = opened.take_error(uncached.row()).unwrap_err();
        match &err {
            SubjectKeyError::Kek { row, source } => {
                assert_eq!(*row, uncached.row());
                assert_eq!(source.provider(), "pkcs11");
            }
            other => panic!("expected a provider error, got {other}"),
        }
        assert!(err.to_string().contains("pkcs11"), "{err}");
        tokio::time::sleep(TTL + Duration::from_millis(200)).await;
        let mut opened = short.keyring(&db.conn, &app, [expiring.row()]).await?;
        assert!(matches!(
            opened.take_error(expiring.row()),
            Err(SubjectKeyError::Kek { .. })
        ));
        Ok(())
    }
);

// SoftHSM2 setup, as in tests/kek_pkcs11.rs.

const MODULE_VAR: &str = "TEST_SOFTHSM2_MODULE";
use encrypted_columns_tests::softhsm::PIN;
const TOKEN: &str = "subjects";

struct Hsm {
    module: PathBuf,
}

impl Hsm {
    fn config(&self, key: &str) -> Pkcs11Config {
        Pkcs11Config::new(&self.module, TOKEN, key, PIN)
    }

    /// Destroys KEK `key` in the token from a session of its own: the provider's KEK is gone.
    fn destroy_kek(&self, key: &str) {
        use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
        use cryptoki::error::{Error as CkError, RvError};
        use cryptoki::object::Attribute;
        use cryptoki::session::UserType;
        use cryptoki::types::AuthPin;
        let pkcs11 = Pkcs11::new(&self.module).expect("load the module");
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => panic!("C_Initialize: {e}"),
        }
        let slot = pkcs11
            .get_slots_with_initialized_token()
            .expect("slots")
            .into_iter()
            .find(|s| {
                pkcs11
                    .get_token_info(*s)
                    .is_ok_and(|t| t.label().trim_end() == TOKEN)
            })
            .expect("the token");
        let session = pkcs11.open_rw_session(slot).expect("session");
        match session.login(UserType::User, Some(&AuthPin::from(PIN))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => panic!("C_Login: {e}"),
        }
        let found = session
            .find_objects(&[Attribute::Label(key.as_bytes().to_vec())])
            .expect("find");
        assert_eq!(found.len(), 1, "one KEK labelled {key}");
        session.destroy_object(found[0]).expect("destroy the KEK");
    }
}

static HSM: OnceLock<Hsm> = OnceLock::new();

fn hsm(test: &str) -> Option<&'static Hsm> {
    let Ok(module) = std::env::var(MODULE_VAR) else {
        eprintln!("skipped: {MODULE_VAR} not set ({test})");
        return None;
    };
    Some(HSM.get_or_init(|| setup(PathBuf::from(module))))
}

fn setup(module: PathBuf) -> Hsm {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("subject_keys-{}", std::process::id()));
    let conf = encrypted_columns_tests::softhsm::create_tokens(&dir, &[TOKEN]);
    // SAFETY: runs once, inside `OnceLock::get_or_init`, before this process loads the module
    // (every test reaches it only through `hsm()`); nothing reads the environment from C
    // concurrently.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    Hsm { module }
}

encrypted_columns::column_context!(
    WrappedKeyColumn,
    table = "subject_keys",
    column = "wrapped_key"
);

backend_tests!(
    /// Rotating the application keyring re-encrypts the `keyring` provider's rows like any
    /// column, and only those: `RotateColumn::only_where(provider = 'keyring')`. Without the
    /// filter the StaticKek row is read as an envelope and the rotation fails.
    keyring_rotation_reseals_only_the_keyring_providers_rows,
    |db: &TestDb| async move {
        use encrypted_columns::KeyId;
        use encrypted_columns::migrate::{self, RotateColumn, RunOptions};
        use sea_orm::Condition;

        create_tables(&db.conn).await?;
        let app = Arc::new(Keyring::generate());
        let legacy: Arc<dyn KeyEncryptionKey> =
            Arc::new(KeyringKek::new(Arc::clone(&app), TABLE, "wrapped_key")?);
        let kek2: Arc<dyn KeyEncryptionKey> = Arc::new(StaticKek::generate("kek-2"));
        let keys = SubjectKeys::new(TABLE, Arc::clone(&legacy));
        let a = keys.create(&db.conn).await?;
        let keys = keys.with_kek(Arc::clone(&kek2));
        let b = keys.create(&db.conn).await?;
        let static_before = key_bytes(&db.conn, b.row(), table::WRAPPED_KEY).await?;

        let mut rotated = (*app).clone();
        rotated.add_key(KeyId(2), [0x22u8; 32])?;
        rotated.promote(KeyId(2))?;
        let rotated = Arc::new(rotated);
        let spec = RotateColumn::<Vec<u8>, WrappedKeyColumn>::new(TABLE, "id", "wrapped_key");
        let unfiltered = encrypted_columns::keyring::scope(
            Arc::clone(&rotated),
            migrate::rotate(&db.conn, &spec, &RunOptions::default(), |_| {}),
        )
        .await;
        assert!(unfiltered.is_err(), "the static row is no envelope");
        let keyring_rows =
            Condition::all().add(Expr::col(Alias::new(table::PROVIDER)).eq(table::LEGACY_PROVIDER));
        let spec = spec.only_where(keyring_rows.clone());
        let report = encrypted_columns::keyring::scope(
            Arc::clone(&rotated),
            migrate::rotate(&db.conn, &spec, &RunOptions::default(), |_| {}),
        )
        .await?;
        assert_eq!(report.resealed, 1);
        assert_eq!(report.rows_by_key.into_iter().collect::<Vec<_>>(), [(KeyId(2), 1)]);
        let usage =
            migrate::key_usage_where(&db.conn, TABLE, "wrapped_key", keyring_rows).await?;
        assert_eq!(usage.into_iter().collect::<Vec<_>>(), [(KeyId(2), 1)]);
        assert_eq!(key_bytes(&db.conn, b.row(), table::WRAPPED_KEY).await?, static_before);

        // Both still open: the keyring row with the rotated keyring, the other with kek-2.
        let after = SubjectKeys::new(
            TABLE,
            Arc::new(KeyringKek::new(Arc::clone(&rotated), TABLE, "wrapped_key")?),
        )
        .with_reader(kek2);
        let opened = after.keyring(&db.conn, &rotated, [a.row(), b.row()]).await?;
        assert!(opened.broken.is_empty(), "{:?}", opened.broken);
        Ok(())
    }
);
