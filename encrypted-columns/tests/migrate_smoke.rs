//! The migration path end to end on in-memory SQLite (the cross-backend, concurrent and
//! crash tests live in the workspace's `tests/` crate).

use encrypted_columns::migrate::{
    self, EncryptColumn, Phase, RotateColumn, RunOptions, dual::ReadPolicy,
};
use encrypted_columns::{Error, KeyId, Keyring, column_context, keyring};
use sea_orm::{ConnectionTrait, Database};
use std::sync::Arc;

column_context!(LegacyEmail, table = "legacy", column = "email");

#[tokio::test]
async fn phases_backfill_verify_cutover_rotate() {
    let mut ring = Keyring::generate();
    let db = Database::connect("sqlite::memory:").await.unwrap();
    db.execute_unprepared(
        "CREATE TABLE legacy (id INTEGER PRIMARY KEY, email TEXT, email_enc BLOB, email_bidx BLOB)",
    )
    .await
    .unwrap();
    for i in 0..1234 {
        let email = if i % 100 == 7 {
            "NULL".to_string()
        } else {
            format!("'p{i}@example.org'")
        };
        db.execute_unprepared(&format!(
            "INSERT INTO legacy (id, email) VALUES ({i}, {email})"
        ))
        .await
        .unwrap();
    }
    static INDEX: std::sync::LazyLock<encrypted_columns::blind_index::BlindIndex> =
        std::sync::LazyLock::new(|| {
            encrypted_columns::blind_index::BlindIndex::new("legacy", "email_bidx")
                .field(encrypted_columns::blind_index::Pipeline::parse("email").unwrap())
        });
    let spec = EncryptColumn::<String, LegacyEmail>::new("legacy", "id", "email", "email_enc")
        .with_index("email_bidx", &INDEX);
    let shared = Arc::new(ring.clone());
    keyring::scope(Arc::clone(&shared), async {
        // Out of order: nothing started.
        let err = migrate::backfill(&db, &spec, &RunOptions::default(), |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(Error::from_db_err(&err), Some(Error::Phase { .. })),
            "{err}"
        );
        migrate::state::start(&db, "legacy", "email").await.unwrap();
        let err = migrate::backfill(&db, &spec, &RunOptions::default(), |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(
                Error::from_db_err(&err),
                Some(Error::Phase { from: "added", .. })
            ),
            "{err}"
        );
        migrate::state::transition(&db, "legacy", "email", Phase::DualWrite, None)
            .await
            .unwrap();
        let err = migrate::state::transition(&db, "legacy", "email", Phase::CutOver, None)
            .await
            .unwrap_err();
        assert!(matches!(
            Error::from_db_err(&err),
            Some(Error::Phase { .. })
        ));

        let opts = RunOptions {
            batch_size: 100,
            max_batches: Some(3),
            ..Default::default()
        };
        let first = migrate::backfill(&db, &spec, &opts, |_| {}).await.unwrap();
        assert_eq!((first.sealed, first.finished), (300, false));
        let mut seen = 0;
        let rest = migrate::backfill(&db, &spec, &RunOptions::default(), |p| seen = p.done)
            .await
            .unwrap();
        assert!(rest.finished);
        assert_eq!(first.sealed + rest.sealed, 1234 - 13);
        assert_eq!(seen, rest.sealed);
        let report = migrate::verify(&db, &spec, &RunOptions::default())
            .await
            .unwrap();
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.both_null, 13);
        assert_eq!(
            migrate::state::load(&db, "legacy", "email")
                .await
                .unwrap()
                .unwrap()
                .phase,
            Phase::Verified
        );
        // Tamper with one row: verify names it.
        db.execute_unprepared("UPDATE legacy SET email = 'changed@example.org' WHERE id = 42")
            .await
            .unwrap();
        let report = migrate::verify(&db, &spec, &RunOptions::default())
            .await
            .unwrap();
        assert_eq!(report.problem_ids, vec![42]);
        assert!(!report.passed());
        // A failing verify demotes: cut-over is refused until a verify passes again.
        assert_eq!(
            migrate::state::load(&db, "legacy", "email")
                .await
                .unwrap()
                .unwrap()
                .phase,
            Phase::Backfilled
        );
        let err = migrate::cut_over(&db, &spec, &RunOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                Error::from_db_err(&err),
                Some(Error::Phase {
                    from: "backfilled",
                    ..
                })
            ),
            "{err}"
        );
        db.execute_unprepared("UPDATE legacy SET email = 'p42@example.org' WHERE id = 42")
            .await
            .unwrap();
        migrate::verify(&db, &spec, &RunOptions::default())
            .await
            .unwrap();
        // A move that checks nothing is refused: cut-over goes through `cut_over`.
        let err = migrate::state::transition(&db, "legacy", "email", Phase::CutOver, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("migrate::cut_over"), "{err}");
        let cut = migrate::cut_over(&db, &spec, &RunOptions::default())
            .await
            .unwrap();
        assert_eq!(cut.moved, ["email"]);
        assert_eq!(cut.check.rows, 1234);
        assert_eq!(
            ReadPolicy::load(&db, "legacy", "email").await.unwrap(),
            ReadPolicy::EncryptedOnly
        );
    })
    .await;

    ring.add_key(KeyId(2), [9; 32]).unwrap();
    ring.promote(KeyId(2)).unwrap();
    ring.add_blind_index_key(KeyId(2), [8; 32]).unwrap();
    ring.promote_blind_index_key(KeyId(2)).unwrap();
    keyring::scope(Arc::new(ring), async {
        let rot = RotateColumn::<String, LegacyEmail>::new("legacy", "id", "email_enc")
            .with_index("email_bidx", &INDEX);
        let opts = RunOptions {
            batch_size: 200,
            max_batches: Some(2),
            ..Default::default()
        };
        let part = migrate::rotate(&db, &rot, &opts, |_| {}).await.unwrap();
        assert_eq!(part.resealed, 400);
        let done = migrate::rotate(&db, &rot, &RunOptions::default(), |_| {})
            .await
            .unwrap();
        assert_eq!(part.resealed + done.resealed, 1221);
        assert!(
            done.can_retire_key(KeyId(1)) && done.can_retire_blind_index_key(KeyId(1)),
            "{done:?}"
        );
        assert_eq!(done.rows_by_key.get(&KeyId(2)), Some(&1221));
    })
    .await;
}
