//! Property tests of sealing and opening: round trips for arbitrary values, and a typed error
//! (never a panic, never wrong plaintext) for every malformed, tampered, wrong-key or
//! wrong-context envelope.

use std::collections::HashSet;
use std::sync::Arc;

use encrypted_columns::envelope::{NONCE_LEN, OVERHEAD};
use encrypted_columns::{
    Context, Encrypted, EncryptedBytes, EncryptedJson, EncryptedString, Error, Json, KeyId,
    Keyring, column_context, keyring,
};
use proptest::prelude::*;

column_context!(Email, table = "patients", column = "email");
column_context!(Phone, table = "patients", column = "phone");

const CTX: Context = Context::new("patients", "email");

fn ring() -> Keyring {
    Keyring::new(KeyId(1), [0x11; 32])
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN/inf", |f| f.is_finite())
            .prop_map(Value::from),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".*", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Asserts `bytes` fails to open with a typed error (the call itself must not panic).
fn assert_rejected(ring: &Keyring, ctx: Context, bytes: &[u8]) -> Error {
    match ring.open(ctx, bytes) {
        Ok(_) => panic!("a modified envelope opened"),
        Err(e) => e,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn strings_round_trip(s in "\\PC*") {
        let ring = ring();
        let value = EncryptedString::<Email>::new_with(&ring, s.clone()).unwrap();
        prop_assert_eq!(value.envelope().len(), s.len() + OVERHEAD);
        let back = EncryptedString::<Email>::from_envelope_with(&ring, value.envelope().to_vec()).unwrap();
        prop_assert_eq!(back.expose(), &s);
    }

    #[test]
    fn bytes_round_trip(b in prop::collection::vec(any::<u8>(), 0..2048)) {
        let ring = ring();
        let value = EncryptedBytes::<Email>::new_with(&ring, b.clone()).unwrap();
        let back = EncryptedBytes::<Email>::from_envelope_with(&ring, value.envelope().to_vec()).unwrap();
        prop_assert_eq!(back.expose(), &b);
    }

    #[test]
    fn json_round_trips(v in json_value()) {
        let ring = ring();
        let value = EncryptedJson::<serde_json::Value, Email>::new_with(&ring, Json(v.clone())).unwrap();
        let back = EncryptedJson::<serde_json::Value, Email>::from_envelope_with(&ring, value.envelope().to_vec()).unwrap();
        prop_assert_eq!(&back.expose().0, &v);
    }

    #[test]
    fn scalars_round_trip(i in any::<i64>(), f in any::<f64>(), b in any::<bool>(), days in -100_000i64..100_000, secs in -10_000_000_000i64..10_000_000_000, nanos in 0u32..1_000_000_000) {
        let ring = ring();
        let ei = Encrypted::<i64, Email>::new_with(&ring, i).unwrap();
        prop_assert_eq!(*Encrypted::<i64, Email>::from_envelope_with(&ring, ei.envelope().to_vec()).unwrap().expose(), i);
        let ef = Encrypted::<f64, Email>::new_with(&ring, f).unwrap();
        let back = *Encrypted::<f64, Email>::from_envelope_with(&ring, ef.envelope().to_vec()).unwrap().expose();
        prop_assert_eq!(back.to_bits(), f.to_bits());
        let eb = Encrypted::<bool, Email>::new_with(&ring, b).unwrap();
        prop_assert_eq!(*Encrypted::<bool, Email>::from_envelope_with(&ring, eb.envelope().to_vec()).unwrap().expose(), b);
        let date = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(days);
        let ed = Encrypted::<chrono::NaiveDate, Email>::new_with(&ring, date).unwrap();
        prop_assert_eq!(*Encrypted::<chrono::NaiveDate, Email>::from_envelope_with(&ring, ed.envelope().to_vec()).unwrap().expose(), date);
        let ts = chrono::DateTime::from_timestamp(secs, nanos).unwrap();
        let et = Encrypted::<chrono::DateTime<chrono::Utc>, Email>::new_with(&ring, ts).unwrap();
        prop_assert_eq!(*Encrypted::<chrono::DateTime<chrono::Utc>, Email>::from_envelope_with(&ring, et.envelope().to_vec()).unwrap().expose(), ts);
    }

    #[test]
    fn any_single_byte_change_is_rejected(pt in prop::collection::vec(any::<u8>(), 0..256), pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let ring = ring();
        let mut env = ring.seal(CTX, &pt).unwrap();
        let i = pos.index(env.len());
        env[i] ^= flip;
        let err = assert_rejected(&ring, CTX, &env);
        // A changed key id may name a key we do not hold; anything else fails authentication
        // or structure checks.
        { let ok = matches!(err, Error::Decrypt { .. } | Error::Malformed { .. } | Error::UnknownKeyId { .. }); prop_assert!(ok, "{err:?}") };
    }

    #[test]
    fn truncation_and_extension_are_rejected(pt in prop::collection::vec(any::<u8>(), 0..256), cut in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 1..64)) {
        let ring = ring();
        let env = ring.seal(CTX, &pt).unwrap();
        let short = &env[..cut.index(env.len())];
        let err = assert_rejected(&ring, CTX, short);
        { let ok = matches!(err, Error::Decrypt { .. } | Error::Malformed { .. }); prop_assert!(ok, "{err:?}") };
        let mut long = env.clone();
        long.extend_from_slice(&extra);
        { let ok = matches!(assert_rejected(&ring, CTX, &long), Error::Decrypt { .. }); prop_assert!(ok) };
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_open(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = assert_rejected(&ring(), CTX, &bytes);
    }

    #[test]
    fn wrong_key_and_wrong_context_are_rejected(s in ".{0,64}", other_key in any::<[u8; 32]>()) {
        prop_assume!(other_key != [0x11; 32]);
        let ring = ring();
        let value = EncryptedString::<Email>::new_with(&ring, s).unwrap();
        let env = value.envelope().to_vec();
        // Same key id, different key bytes.
        let impostor = Keyring::new(KeyId(1), other_key);
        { let ok = matches!(
            EncryptedString::<Email>::from_envelope_with(&impostor, env.clone()),
            Err(Error::Decrypt { table: "patients", column: "email", key_id: KeyId(1) })
        ); prop_assert!(ok) };
        // Key id unknown to the reader.
        let stranger = Keyring::new(KeyId(2), [0x11; 32]);
        { let ok = matches!(
            EncryptedString::<Email>::from_envelope_with(&stranger, env.clone()),
            Err(Error::UnknownKeyId { id: KeyId(1) })
        ); prop_assert!(ok) };
        // Right key, another column.
        { let ok = matches!(
            EncryptedString::<Phone>::from_envelope_with(&ring, env),
            Err(Error::Decrypt { column: "phone", .. })
        ); prop_assert!(ok) };
    }
}

#[test]
fn every_bit_flip_of_a_short_envelope_is_rejected() {
    let ring = ring();
    let env = ring.seal(CTX, b"ada@example.org").unwrap();
    for i in 0..env.len() {
        for flip in 1..=255u8 {
            let mut bad = env.clone();
            bad[i] ^= flip;
            assert!(ring.open(CTX, &bad).is_err(), "byte {i} ^ {flip:#x} opened");
        }
    }
}

#[test]
fn a_million_seals_repeat_no_nonce() {
    let ring = ring();
    let mut seen = HashSet::with_capacity(1_000_000);
    for _ in 0..1_000_000 {
        let env = ring.seal(CTX, b"x").unwrap();
        let nonce: [u8; NONCE_LEN] = env[5..5 + NONCE_LEN].try_into().unwrap();
        assert!(
            seen.insert(nonce),
            "nonce repeated after {} seals",
            seen.len()
        );
    }
}

#[test]
fn rotation_keeps_old_values_readable_and_seals_new_ones_with_the_new_key() {
    let mut ring = ring();
    let old = EncryptedString::<Email>::new_with(&ring, "old@example.org".into()).unwrap();
    ring.add_key(KeyId(2), [0x22; 32]).unwrap();
    let still_old = EncryptedString::<Email>::new_with(&ring, "x".into()).unwrap();
    assert_eq!(
        still_old.key_id(),
        KeyId(1),
        "added keys are decrypt-only until promoted"
    );
    ring.promote(KeyId(2)).unwrap();
    let reopened =
        EncryptedString::<Email>::from_envelope_with(&ring, old.envelope().to_vec()).unwrap();
    assert_eq!(reopened.expose(), "old@example.org");
    let ring = Arc::new(ring);
    let resealed = keyring::scope_sync(Arc::clone(&ring), || reopened.reseal().unwrap());
    assert_eq!(resealed.key_id(), KeyId(2));
    assert_eq!(resealed, old, "equality compares plaintext, not envelopes");
    assert_ne!(resealed.envelope(), old.envelope());
}

#[test]
fn no_keyring_is_a_typed_error() {
    // A fresh task with no scope and (in this test binary) nothing installed.
    keyring::uninstall();
    assert_eq!(
        EncryptedString::<Email>::new("x".into()).unwrap_err(),
        Error::NoKeyring
    );
    assert_eq!(
        EncryptedString::<Email>::from_envelope(vec![1; 60]).unwrap_err(),
        Error::NoKeyring
    );
}

#[test]
fn debug_and_display_redact() {
    let ring = ring();
    let v = EncryptedString::<Email>::new_with(&ring, "ada@example.org".into()).unwrap();
    assert!(!format!("{v:?}").contains("ada"));
    assert_eq!(v.to_string(), "<redacted>");
    let err =
        EncryptedString::<Phone>::from_envelope_with(&ring, v.envelope().to_vec()).unwrap_err();
    assert!(!err.to_string().contains("ada"));
}
