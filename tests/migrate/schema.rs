//! The `migrate::schema` helpers through a `SchemaManager`, as a SeaORM migration uses them.

use std::collections::BTreeMap;

use encrypted_columns::blind_index::unique_violation;
use encrypted_columns::migrate::{self, EncryptColumn, Phase, schema, state};
use encrypted_columns::{Encrypted, Error, column_context};
use encrypted_columns_tests::{Backend, backend_tests, raw};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{ColumnDef, ColumnType, Expr, ExprTrait, Index, Query, Table};
use sea_orm_migration::SchemaManager;

use crate::email_table::{seed_email, seeded_emails};
use crate::expect::crate_error;
use crate::support::{a, batches, dropped_exactly, phase_of, phases_of, second_pool};

// UNIQUE, so the schema helper creates a unique index.
email_context!(LegacyEmail, LEGACY_BIDX, "mig_legacy", unique);
column_context!(LegacyNotes, table = "mig_legacy", column = "notes");
column_context!(ScopedEmail, table = "mig_scoped", column = "email");

// UNIQUE per tenant: the schema helper creates a composite (tenant_id, email_bidx) index.
static SCOPED_BIDX: std::sync::LazyLock<encrypted_columns::blind_index::BlindIndex> =
    std::sync::LazyLock::new(|| {
        crate::plans::email_index("mig_scoped")
            .unique()
            .scoped_by("tenant_id")
    });

backend_tests!(
    /// `add_blind_index_column` with an index unique per tenant: the backfill accepts the
    /// same e-mail in two tenants (its duplicate pre-check leaves scoped indexes to the
    /// database), and the composite UNIQUE index refuses a duplicate within one tenant, named
    /// as the index's.
    scoped_unique_blind_index_column,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let manager = SchemaManager::new(conn);
        manager
            .create_table(
                Table::create()
                    .table(a("mig_scoped"))
                    .col(ColumnDef::new(a("id")).integer().not_null().primary_key())
                    .col(ColumnDef::new(a("tenant_id")).integer().not_null())
                    .col(ColumnDef::new(a("email")).string_len(320).null())
                    .to_owned(),
            )
            .await?;
        for (id, tenant, email) in [
            (1, 1, "ada@example.org"),
            (2, 2, "Ada@Example.org"),
            (3, 1, "bob@example.org"),
        ] {
            let insert = Query::insert()
                .into_table(a("mig_scoped"))
                .columns([a("id"), a("tenant_id"), a("email")])
                .values_panic([id.into(), tenant.into(), email.into()])
                .to_owned();
            conn.execute(&insert).await?;
        }
        schema::add_encrypted_column(&manager, "mig_scoped", "email", "email_enc", 320).await?;
        schema::add_blind_index_column(&manager, "mig_scoped", "email_bidx", &SCOPED_BIDX)
            .await?;
        ensure!(
            manager
                .has_index("mig_scoped", &schema::index_name("mig_scoped", "email_bidx"))
                .await?,
            "the scoped unique index is missing"
        );
        state::transition(conn, "mig_scoped", "email", Phase::DualWrite, None).await?;
        let email =
            EncryptColumn::<String, ScopedEmail>::new("mig_scoped", "id", "email", "email_enc")
                .with_index("email_bidx", &SCOPED_BIDX);
        ensure!(
            migrate::backfill(conn, &email, &batches(2), |_| {})
                .await?
                .finished,
            "the backfill refused the same e-mail in two tenants"
        );
        let ada = raw::get_envelope(conn, "mig_scoped", "email_bidx", 1).await?;
        ensure!(
            raw::get_envelope(conn, "mig_scoped", "email_bidx", 2).await? == ada,
            "one keyring, one normalized e-mail: one index value in both tenants"
        );
        // Row 3 is tenant 1's: given row 1's value, the composite index refuses it.
        let err = raw::set_bytes(conn, "mig_scoped", "email_bidx", 3, Some(ada))
            .await
            .err()
            .ok_or("a duplicate within tenant 1 was accepted")?;
        assert_eq!(
            unique_violation(&err, "mig_scoped", &["email_bidx"]),
            Some(Error::Duplicate {
                table: "mig_scoped",
                index: "email_bidx"
            }),
            "{err}"
        );
        Ok(())
    }
);

backend_tests!(
    /// `migrate::schema` through a SchemaManager: add the envelope columns (a `mediumblob`
    /// on MySQL for a 100 kB plaintext) and a UNIQUE blind-index column, walk the phases
    /// (two one-column plans on one table), refuse dropping the plaintext before cut-over,
    /// drop it after (with the index on it: on SQLite found without being named), leave the
    /// other column alone, treat a second drop as done, purge (the raw rewrite, then
    /// `migrate::purge`, which records it), and rename the envelope column onto the
    /// plaintext's name — its envelopes still open.
    schema_helpers_walk_every_phase,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let manager = SchemaManager::new(conn);
        manager
            .create_table(
                Table::create()
                    .table(a("mig_legacy"))
                    .col(ColumnDef::new(a("id")).integer().not_null().primary_key())
                    .col(ColumnDef::new(a("email")).string_len(320).null())
                    // Room for the 80 kB note on MySQL, whose `text` holds 64 KiB.
                    .col(
                        ColumnDef::new_with_type(
                            a("notes"),
                            if db.backend == Backend::MySql {
                                ColumnType::custom(a("mediumtext"))
                            } else {
                                ColumnType::Text
                            },
                        )
                        .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("mig_legacy_email_idx")
                    .table(a("mig_legacy"))
                    .col(a("email"))
                    .to_owned(),
            )
            .await?;
        let big_note = "n".repeat(80_000);
        for id in 1..=40 {
            let note = if id == 3 {
                Some(big_note.clone())
            } else {
                Some(format!("note {id}"))
            };
            let insert = Query::insert()
                .into_table(a("mig_legacy"))
                .columns([a("id"), a("email"), a("notes")])
                .values_panic([id.into(), seed_email(id).into(), note.into()])
                .to_owned();
            conn.execute(&insert).await?;
        }

        schema::add_encrypted_column(&manager, "mig_legacy", "email", "email_enc", 320).await?;
        schema::add_blind_index_column(&manager, "mig_legacy", "email_bidx", &LEGACY_BIDX).await?;
        schema::add_encrypted_column(&manager, "mig_legacy", "notes", "notes_enc", 100_000).await?;
        for column in ["email_enc", "email_bidx", "notes_enc"] {
            ensure!(
                manager.has_column("mig_legacy", column).await?,
                "{column} missing"
            );
        }
        let index = schema::index_name("mig_legacy", "email_bidx");
        ensure!(
            manager.has_index("mig_legacy", &index).await?,
            "{index} missing"
        );
        assert_eq!(phase_of(conn, "mig_legacy").await?, Phase::Added);
        // Idempotent start: adding the blind index did not move the phase.
        schema::add_blind_index_column(&manager, "mig_legacy", "email_bidx2", &LEGACY_BIDX).await?;
        assert_eq!(phase_of(conn, "mig_legacy").await?, Phase::Added);

        let email =
            EncryptColumn::<String, LegacyEmail>::new("mig_legacy", "id", "email", "email_enc")
                .with_index("email_bidx", &LEGACY_BIDX);
        let notes =
            EncryptColumn::<String, LegacyNotes>::new("mig_legacy", "id", "notes", "notes_enc");

        // Dropping before cut-over is refused and drops nothing.
        let err = schema::drop_plaintext_column(&manager, &email, &["mig_legacy_email_idx"])
            .await
            .unwrap_err();
        let (inner, message) = crate_error(&err)?;
        ensure!(
            matches!(
                inner,
                Error::Phase {
                    from: "added",
                    to: "dropped",
                    ..
                }
            ),
            "{message}"
        );
        ensure!(
            manager.has_column("mig_legacy", "email").await?,
            "email dropped"
        );
        ensure!(
            manager
                .has_index("mig_legacy", "mig_legacy_email_idx")
                .await?,
            "index dropped"
        );

        // Walk the phases for both columns, each as a plan of its own.
        state::transition(conn, "mig_legacy", "email", Phase::DualWrite, None).await?;
        state::transition(conn, "mig_legacy", "notes", Phase::DualWrite, None).await?;
        let opts = batches(7);
        ensure!(
            migrate::backfill(conn, &email, &opts, |_| {})
                .await?
                .finished,
            "email backfill"
        );
        ensure!(
            migrate::backfill(conn, &notes, &opts, |_| {})
                .await?
                .finished,
            "notes backfill"
        );
        ensure!(
            migrate::verify(conn, &email, &opts).await?.passed(),
            "email verify"
        );
        ensure!(
            migrate::verify(conn, &notes, &opts).await?.passed(),
            "notes verify"
        );
        // The 80 kB note round-trips (a MySQL `blob` would have refused its envelope).
        let row = conn
            .query_one(
                &Query::select()
                    .column(a("notes_enc"))
                    .from(a("mig_legacy"))
                    .and_where(Expr::col(a("id")).eq(3))
                    .to_owned(),
            )
            .await?
            .ok_or("row 3")?;
        let enc: Vec<u8> = row.try_get("", "notes_enc")?;
        ensure!(
            Encrypted::<String, LegacyNotes>::from_envelope(enc)?.expose() == &big_note,
            "the long note did not round-trip"
        );
        // The index is UNIQUE and named so that a duplicate is reported as this column's.
        let first = raw::get_envelope(conn, "mig_legacy", "email_bidx", 1).await?;
        let err = raw::set_bytes(conn, "mig_legacy", "email_bidx", 2, Some(first))
            .await
            .err()
            .ok_or("a duplicate blind-index value was accepted")?;
        assert_eq!(
            unique_violation(&err, "mig_legacy", &["email_bidx", "email_bidx2"]),
            Some(Error::Duplicate {
                table: "mig_legacy",
                index: "email_bidx"
            }),
            "{err}"
        );
        assert_eq!(migrate::cut_over(conn, &email, &opts).await?.moved, ["email"]);
        assert_eq!(
            phases_of(conn, "mig_legacy", &["email", "notes"]).await?,
            [Phase::CutOver, Phase::Verified]
        );

        // On SQLite, which cannot drop an indexed column, the index on the plaintext is found
        // and dropped without being named; elsewhere it is named.
        let indexes: &[&str] = if db.backend == Backend::Sqlite {
            &[]
        } else {
            &["mig_legacy_email_idx"]
        };
        let dropped = schema::drop_plaintext_column(&manager, &email, indexes).await?;
        dropped_exactly(&manager, ("mig_legacy", &["email"]), &dropped, 40).await?;
        ensure!(
            !manager
                .has_index("mig_legacy", "mig_legacy_email_idx")
                .await?,
            "index still there"
        );
        ensure!(
            manager.has_column("mig_legacy", "notes").await?,
            "notes dropped with email"
        );
        assert_eq!(phase_of(conn, "mig_legacy").await?, Phase::Dropped);
        // A second drop is a no-op that reports the column as already dropped.
        let again = schema::drop_plaintext_column(&manager, &email, &[]).await?;
        ensure!(
            again.already == ["email"] && again.dropped.is_empty() && again.recorded.is_empty(),
            "{again:?}"
        );

        // The raw rewrite records nothing; `migrate::purge` rewrites and records `purged`.
        schema::purge_dropped_data(&manager, "mig_legacy").await?;
        assert_eq!(phase_of(conn, "mig_legacy").await?, Phase::Dropped);
        if db.backend == Backend::Sqlite {
            // VACUUM rewrote the file: the dropped plaintext is gone from it.
            let path = db.url();
            let path = path
                .strip_prefix("sqlite://")
                .and_then(|p| p.split('?').next())
                .ok_or("sqlite path")?;
            let bytes = std::fs::read(path)?;
            ensure!(
                !raw::contains(&bytes, b"p000001@example.org"),
                "dropped plaintext still in the SQLite file"
            );
        }
        assert_eq!(migrate::purge(conn, &email).await?, ["email"]);
        assert_eq!(phase_of(conn, "mig_legacy").await?, Phase::Purged);
        schema::rename_column(&manager, "mig_legacy", "email_enc", "email").await?;
        ensure!(
            manager.has_column("mig_legacy", "email").await?,
            "renamed column missing"
        );
        // Read through a new connection, as the application does after a migration: on
        // SQLite, a pooled connection that lived through the DROP and RENAME was seen to
        // return NULL for the renamed column on its first query (sqlx 0.9, SQLite 3.51).
        let fresh = second_pool(db, 1).await?;
        let mut opened = BTreeMap::new();
        for row in fresh
            .query_all(
                &Query::select()
                    .columns([a("id"), a("email")])
                    .from(a("mig_legacy"))
                    .to_owned(),
            )
            .await?
        {
            let id: i32 = row.try_get("", "id")?;
            let enc: Option<Vec<u8>> = row.try_get("", "email")?;
            let value = enc
                .map(|e| {
                    Encrypted::<String, LegacyEmail>::from_envelope(e).map(|v| v.expose().clone())
                })
                .transpose()?;
            opened.insert(id, value);
        }
        let expected = seeded_emails(40);
        let differing: Vec<(i32, bool, bool)> = expected
            .iter()
            .filter(|(id, v)| opened.get(id) != Some(v))
            .map(|(id, v)| {
                (
                    *id,
                    v.is_some(),
                    opened.get(id).is_some_and(|o| o.is_some()),
                )
            })
            .collect();
        ensure!(
            differing.is_empty(),
            "renamed envelopes do not open to the original values: {differing:?}"
        );
        fresh.close().await?;
        Ok(())
    }
);
