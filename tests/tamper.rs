//! Someone with write access to the database, or the wrong keys: every bad envelope is a typed
//! error from SeaORM — never a panic, never another row's or column's plaintext. Key rotation
//! keeps old rows readable, and large values fit the column type the library recommends.

use std::sync::Arc;

use encrypted_columns::envelope::{EnvelopeError, HEADER_LEN, NONCE_LEN, OVERHEAD, TAG_LEN};
use encrypted_columns::keyring::{self, generate_key};
use encrypted_columns::{
    Encrypted, EncryptedBytes, EncryptedString, Error, Json, KeyId, Keyring, column_context,
};
use encrypted_columns_tests::entities::document::{self, BODY_MAX_PLAINTEXT, Transcript};
use encrypted_columns_tests::entities::patient::{self, PatientData, PatientEmail, PatientScan};
use encrypted_columns_tests::{Backend, backend_tests, raw};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbErr, DerivePartialModel, EntityTrait,
    IntoActiveModel, QueryOrder,
};

/// Reads row `id` through the entity, expecting failure; returns the crate's error inside.
async fn read_error(conn: &DatabaseConnection, id: i32) -> Result<Error, String> {
    match patient::Entity::find_by_id(id).one(conn).await {
        Ok(Some(model)) => Err(format!(
            "row {id} read back (email {:?}) but should have failed",
            model.email.expose()
        )),
        Ok(None) => Err(format!("row {id} is gone")),
        Err(err) => Error::from_db_err(&err)
            .cloned()
            .ok_or_else(|| format!("not a typed encrypted-columns error: {err}")),
    }
}

/// A keyring with one fresh random key under `id`.
fn random_keyring(id: u32) -> Arc<Keyring> {
    Arc::new(Keyring::new(KeyId(id), *generate_key()))
}

/// The row without `phone`: reads even when only `phone` is bad.
#[derive(Debug, DerivePartialModel)]
#[sea_orm(entity = "patient::Entity")]
struct EmailOnly {
    id: i32,
    email: EncryptedString<PatientEmail>,
}

backend_tests!(
    /// An envelope copied into another column of the same type does not open there.
    column_swap_is_refused,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let data = PatientData::sample(1);
        let id = data.seal()?.insert(conn).await?.id;
        let other = PatientData::sample(2).seal()?.insert(conn).await?.id;
        conn.execute_unprepared(&format!(
            "UPDATE patients SET phone = email WHERE id = {id}"
        ))
        .await?;
        assert_eq!(
            raw::get_envelope(conn, "patients", "phone", id).await?,
            raw::get_envelope(conn, "patients", "email", id).await?,
            "the swap happened"
        );

        let err = read_error(conn, id).await?;
        assert_eq!(
            err,
            Error::Decrypt {
                table: "patients",
                column: "phone",
                key_id: KeyId(1),
            }
        );
        // Listing the table fails the same way (no partial, silently wrong result)...
        let err = patient::Entity::find()
            .all(conn)
            .await
            .err()
            .ok_or("listing must fail")?;
        assert!(
            matches!(
                Error::from_db_err(&err),
                Some(Error::Decrypt { column: "phone", .. })
            ),
            "{err}"
        );
        // ...while the untouched row and the row's other columns are fine.
        assert!(
            patient::Entity::find_by_id(other)
                .one(conn)
                .await?
                .is_some()
        );
        let emails = patient::Entity::find()
            .order_by_asc(patient::Column::Id)
            .into_partial_model::<EmailOnly>()
            .all(conn)
            .await?;
        assert_eq!(emails[0].id, id);
        assert_eq!(emails[0].email.expose(), &data.email);

        // Bytes (another type, another column) do not open as a string's column either.
        conn.execute_unprepared(&format!(
            "UPDATE patients SET email = scan WHERE id = {other}"
        ))
        .await?;
        assert_eq!(
            read_error(conn, other).await?,
            Error::Decrypt {
                table: "patients",
                column: "email",
                key_id: KeyId(1),
            }
        );
        Ok(())
    }
);

backend_tests!(
    /// One flipped bit anywhere in a stored envelope is a typed error naming the column.
    flipped_bits_are_refused,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let id = PatientData::sample(3).seal()?.insert(conn).await?.id;
        let original = raw::get_envelope(conn, "patients", "email", id).await?;
        let len = original.len();
        let positions = [
            0,                       // version
            1,                       // key id, most significant byte
            HEADER_LEN - 1,          // key id, least significant byte
            HEADER_LEN,              // nonce, first byte
            HEADER_LEN + NONCE_LEN - 1, // nonce, last byte
            HEADER_LEN + NONCE_LEN,  // ciphertext, first byte
            len - TAG_LEN - 1,       // ciphertext, last byte
            len - TAG_LEN,           // tag, first byte
            len - 1,                 // tag, last byte
        ];
        for position in positions {
            let mut tampered = original.clone();
            tampered[position] ^= 0x01;
            raw::set_bytes(conn, "patients", "email", id, Some(tampered.clone())).await?;
            let err = read_error(conn, id).await?;
            let expected = match position {
                0 => Error::Malformed {
                    table: "patients",
                    column: "email",
                    problem: EnvelopeError::UnsupportedVersion,
                },
                1..HEADER_LEN => {
                    let id = u32::from_be_bytes([
                        tampered[1],
                        tampered[2],
                        tampered[3],
                        tampered[4],
                    ]);
                    Error::UnknownKeyId { id: KeyId(id) }
                }
                _ => Error::Decrypt {
                    table: "patients",
                    column: "email",
                    key_id: KeyId(1),
                },
            };
            assert_eq!(err, expected, "bit flipped at byte {position} of {len}");
        }
        // Restored, the row reads again: the failures above came from the flips alone.
        raw::set_bytes(conn, "patients", "email", id, Some(original)).await?;
        let model = patient::Entity::find_by_id(id)
            .one(conn)
            .await?
            .ok_or("row not found")?;
        assert_eq!(model.email.expose(), &PatientData::sample(3).email);
        Ok(())
    }
);

backend_tests!(
    /// Truncated or extended envelopes: too short to parse is `Malformed`, long enough but
    /// wrong is `Decrypt`.
    truncated_and_extended_envelopes_are_refused,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let id = PatientData::sample(4).seal()?.insert(conn).await?.id;
        let original = raw::get_envelope(conn, "patients", "email", id).await?;
        assert!(original.len() > OVERHEAD + 1);
        let malformed = |len| Error::Malformed {
            table: "patients",
            column: "email",
            problem: EnvelopeError::TooShort { len },
        };
        let decrypt = Error::Decrypt {
            table: "patients",
            column: "email",
            key_id: KeyId(1),
        };
        let mut extended = original.clone();
        extended.push(0);
        let cases = [
            (Vec::new(), malformed(0)),
            (original[..1].to_vec(), malformed(1)),
            (original[..HEADER_LEN].to_vec(), malformed(HEADER_LEN)),
            (original[..OVERHEAD - 1].to_vec(), malformed(OVERHEAD - 1)),
            (original[..OVERHEAD].to_vec(), decrypt.clone()),
            (original[..original.len() - 1].to_vec(), decrypt.clone()),
            (extended, decrypt.clone()),
        ];
        for (bytes, expected) in cases {
            let len = bytes.len();
            raw::set_bytes(conn, "patients", "email", id, Some(bytes)).await?;
            assert_eq!(read_error(conn, id).await?, expected, "{len} stored bytes");
        }
        Ok(())
    }
);

backend_tests!(
    /// Reading under a keyring that lacks the key names the missing key id; a different key
    /// under the same id fails authentication.
    wrong_keys_are_typed_errors,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let id = PatientData::sample(5).seal()?.insert(conn).await?.id;

        let err = keyring::scope(random_keyring(2), read_error(conn, id)).await?;
        assert_eq!(err, Error::UnknownKeyId { id: KeyId(1) });
        assert!(err.to_string().contains("key id 1 is not in the keyring"));

        let err = keyring::scope(random_keyring(1), read_error(conn, id)).await?;
        assert_eq!(
            err,
            Error::Decrypt {
                table: "patients",
                column: "email",
                key_id: KeyId(1),
            }
        );

        // With the right keys in force again, the row reads.
        let model = patient::Entity::find_by_id(id)
            .one(conn)
            .await?
            .ok_or("row not found")?;
        assert_eq!(PatientData::of(&model), PatientData::sample(5));
        Ok(())
    }
);

backend_tests!(
    /// `keyring::scope` is per task: a tenant's rows open inside its scope only — not in
    /// tasks it spawns, not outside — and other tenants' rows do not open inside it.
    scoped_keyring_is_task_local,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let tenant = random_keyring(1);
        let global_row = PatientData::sample(6).seal()?.insert(conn).await?.id;
        let tenant_row = keyring::scope(Arc::clone(&tenant), async {
            let id = PatientData::sample(7).seal()?.insert(conn).await?.id;
            let model = patient::Entity::find_by_id(id)
                .one(conn)
                .await?
                .ok_or("row not found")?;
            assert_eq!(PatientData::of(&model), PatientData::sample(7));
            assert!(matches!(
                read_error(conn, global_row).await?,
                Error::Decrypt { .. }
            ));

            let spawned_conn = conn.clone();
            let spawned = tokio::spawn(async move {
                patient::Entity::find_by_id(id)
                    .one(&spawned_conn)
                    .await
                    .map(|_| ())
            })
            .await?;
            let err = spawned
                .err()
                .ok_or("a spawned task must not inherit the scope")?;
            assert!(
                matches!(Error::from_db_err(&err), Some(Error::Decrypt { .. })),
                "{err}"
            );
            Ok::<_, Box<dyn std::error::Error>>(id)
        })
        .await?;
        assert!(matches!(
            read_error(conn, tenant_row).await?,
            Error::Decrypt { .. }
        ));
        assert!(
            patient::Entity::find_by_id(global_row)
                .one(conn)
                .await?
                .is_some()
        );
        Ok(())
    }
);

/// Ids of patients whose `email` was sealed under `key`, found by SQL from the envelope
/// header alone (README: "`substr(col, 2, 4)` finds them for re-encryption").
async fn ids_sealed_under(conn: &DatabaseConnection, key: KeyId) -> Result<Vec<i32>, DbErr> {
    let select = Query::select()
        .column(Alias::new("id"))
        .from(Alias::new("patients"))
        .and_where(Expr::cust("substr(email, 2, 4)").eq(key.0.to_be_bytes().to_vec()))
        .order_by(Alias::new("id"), sea_orm::sea_query::Order::Asc)
        .to_owned();
    conn.query_all(&select)
        .await?
        .iter()
        .map(|row| row.try_get_by_index::<i32>(0))
        .collect()
}

backend_tests!(
    /// Rotation: rows sealed under key 1 still open after key 2 is promoted, new rows carry
    /// key 2 in a big-endian header, SQL finds the old rows, and resealing moves them over.
    key_rotation_keeps_old_rows_readable,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let k1 = generate_key();
        let k2 = generate_key();
        let k3 = generate_key();
        let old = Arc::new(Keyring::new(KeyId(1), *k1));
        let mut rotated = Keyring::new(KeyId(1), *k1);
        rotated.add_key(KeyId(2), *k2)?;
        rotated.promote(KeyId(2))?;
        let rotated = Arc::new(rotated);

        let before = keyring::scope(Arc::clone(&old), async {
            PatientData::sample(8).seal()?.insert(conn).await
        })
        .await?;
        assert_eq!(before.email.key_id(), KeyId(1));

        let (after, resealed) = keyring::scope(Arc::clone(&rotated), async {
            let read = patient::Entity::find_by_id(before.id)
                .one(conn)
                .await?
                .ok_or("old row not found")?;
            assert_eq!(PatientData::of(&read), PatientData::sample(8));
            assert_eq!(read.email.key_id(), KeyId(1));
            assert_eq!(read.record.key_id(), KeyId(1));

            let after = PatientData::sample(9).seal()?.insert(conn).await?;
            assert_eq!(after.email.key_id(), KeyId(2));
            assert_eq!(after.birth_date.key_id(), KeyId(2));

            // Header: byte 0 version 1, bytes 1..5 the key id, big-endian.
            let old_header = raw::get_envelope(conn, "patients", "email", before.id).await?;
            let new_header = raw::get_envelope(conn, "patients", "email", after.id).await?;
            assert_eq!(old_header[..HEADER_LEN], [0x01, 0, 0, 0, 1]);
            assert_eq!(new_header[..HEADER_LEN], [0x01, 0, 0, 0, 2]);

            assert_eq!(ids_sealed_under(conn, KeyId(1)).await?, vec![before.id]);
            assert_eq!(ids_sealed_under(conn, KeyId(2)).await?, vec![after.id]);

            // Re-encrypt the old row's email with the active key.
            let mut active = read.clone().into_active_model();
            active.email = Set(read.email.reseal()?);
            let resealed = active.update(conn).await?;
            assert_eq!(resealed.email.key_id(), KeyId(2));
            assert_eq!(resealed.email, read.email);
            assert_eq!(
                ids_sealed_under(conn, KeyId(2)).await?,
                vec![before.id, after.id]
            );
            assert!(ids_sealed_under(conn, KeyId(1)).await?.is_empty());
            Ok::<_, Box<dyn std::error::Error>>((after, resealed))
        })
        .await?;
        assert_eq!(
            resealed.phone.key_id(),
            KeyId(1),
            "only email was resealed"
        );

        // A node still on the old keyring cannot open key-2 values, and says which key.
        let err = keyring::scope(Arc::clone(&old), read_error(conn, after.id)).await?;
        assert_eq!(err, Error::UnknownKeyId { id: KeyId(2) });

        // A multi-byte key id is stored most significant byte first.
        let mut wide = (*rotated).clone();
        wide.add_key(KeyId(0x0102_0304), *k3)?;
        wide.promote(KeyId(0x0102_0304))?;
        let wide = Arc::new(wide);
        let third = keyring::scope(Arc::clone(&wide), async {
            let model = PatientData::sample(10).seal()?.insert(conn).await?;
            let read = patient::Entity::find_by_id(model.id)
                .one(conn)
                .await?
                .ok_or("row not found")?;
            assert_eq!(PatientData::of(&read), PatientData::sample(10));
            Ok::<_, Box<dyn std::error::Error>>(read)
        })
        .await?;
        assert_eq!(third.email.key_id(), KeyId(0x0102_0304));
        let stored = raw::get_envelope(conn, "patients", "email", third.id).await?;
        assert_eq!(stored[..HEADER_LEN], [0x01, 0x01, 0x02, 0x03, 0x04]);
        assert_eq!(
            ids_sealed_under(conn, KeyId(0x0102_0304)).await?,
            vec![third.id]
        );

        // Once key 1 is retired, values still under it are reported by key id.
        let mut retired = (*wide).clone();
        retired.remove_key(KeyId(1))?;
        let err = keyring::scope(Arc::new(retired), read_error(conn, before.id)).await?;
        assert_eq!(err, Error::UnknownKeyId { id: KeyId(1) });
        Ok(())
    }
);

column_context!(BalanceAsText, table = "patients", column = "balance_cents");

backend_tests!(
    /// A value that authenticates but is not the column's Rust type (the type was changed
    /// without migrating) is `Error::Decode`, and the message does not quote it.
    changed_column_type_is_a_decode_error,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let id = PatientData::sample(11).seal()?.insert(conn).await?.id;
        let text = EncryptedString::<BalanceAsText>::new("1250.75 USD".into())?;
        raw::set_bytes(
            conn,
            "patients",
            "balance_cents",
            id,
            Some(text.envelope().to_vec()),
        )
        .await?;
        let err = read_error(conn, id).await?;
        assert!(
            matches!(
                err,
                Error::Decode {
                    table: "patients",
                    column: "balance_cents",
                    type_name: "i64",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.to_string().contains("1250"), "{err}");
        Ok(())
    }
);

/// Over 100 KiB of JSON: a transcript of 1,500 segments.
fn long_transcript() -> Transcript {
    (0..1500)
        .map(|i| {
            format!(
                "[{:02}:{:02}] {}: patient reports intermittent chest pain, no radiation; {:03}",
                i / 60,
                i % 60,
                if i % 2 == 0 { "Doctor" } else { "Patient" },
                i
            )
        })
        .collect()
}

#[derive(Debug, DerivePartialModel)]
#[sea_orm(entity = "patient::Entity")]
struct ScanOnly {
    scan: EncryptedBytes<PatientScan>,
}

backend_tests!(
    /// Values past MySQL's 64 KiB `blob`: a column declared with `envelope_column_type`
    /// (`mediumblob` on MySQL) holds them; a plain `blob` on MySQL refuses them or fails to
    /// open them with a typed error — never returns wrong plaintext.
    large_values_fit_the_recommended_column_type,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let transcript = long_transcript();
        let json_len = serde_json::to_vec(&transcript)?.len();
        assert!(json_len > 100 * 1024 && json_len <= BODY_MAX_PLAINTEXT);

        document::ActiveModel {
            id: Set(1),
            body: Set(Encrypted::new(Json(transcript.clone()))?),
        }
        .insert(conn)
        .await?;
        let read = document::Entity::find_by_id(1)
            .one(conn)
            .await?
            .ok_or("document not found")?;
        assert_eq!(read.body.expose().0, transcript);
        let stored = raw::get_envelope(conn, "documents", "body", 1).await?;
        assert_eq!(stored.len(), json_len + OVERHEAD);
        assert!(stored.len() > encrypted_columns::schema::MYSQL_BLOB_MAX);

        if db.backend == Backend::MySql {
            let row = conn
                .query_one_raw(sea_orm::Statement::from_string(
                    db.db_backend(),
                    "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = \
                     DATABASE() AND TABLE_NAME = 'documents' AND COLUMN_NAME = 'body'",
                ))
                .await?
                .ok_or("documents.body not in information_schema")?;
            assert_eq!(row.try_get_by_index::<String>(0)?, "mediumblob");
        }

        // The same size in `patients.scan`, declared by the entity as a plain `Blob`.
        let big: Vec<u8> = (0..json_len).map(|i| (i % 251) as u8).collect();
        let mut active = PatientData::sample(12).seal()?;
        active.scan = Set(EncryptedBytes::new(big.clone())?);
        match (db.backend, active.insert(conn).await) {
            (Backend::MySql, Err(err)) => {
                // Strict mode: "Data too long for column".
                assert!(err.to_string().contains("too long"), "{err}");
            }
            (Backend::MySql, Ok(model)) => {
                // Without strict mode the server truncates: reading must fail, typed.
                let err = patient::Entity::find_by_id(model.id)
                    .into_partial_model::<ScanOnly>()
                    .one(conn)
                    .await
                    .err()
                    .ok_or("a truncated envelope read back")?;
                assert!(
                    matches!(
                        Error::from_db_err(&err),
                        Some(Error::Decrypt { column: "scan", .. })
                    ),
                    "{err}"
                );
            }
            (_, inserted) => {
                let model = inserted?;
                let read = patient::Entity::find_by_id(model.id)
                    .into_partial_model::<ScanOnly>()
                    .one(conn)
                    .await?
                    .ok_or("row not found")?;
                assert_eq!(read.scan.expose(), &big);
            }
        }
        Ok(())
    }
);
