//! Checks the test vectors in FORMAT.md against two implementations: this crate, and an
//! independent one written here from the spec's words with the plain RustCrypto primitives.
//! The vectors are parsed out of FORMAT.md itself, so the document cannot drift from the code.
//!
//! `PRINT_VECTORS=1 cargo test -p encrypted-columns --test format_vectors -- --nocapture`
//! prints freshly computed blocks for the inputs, for editing the document.

use encrypted_columns::{Context, KeyId, Keyring, Plaintext};
use hkdf::Hkdf;
use sha2::Sha256;
use xaes_256_gcm::Xaes256Gcm;
use xaes_256_gcm::aead::{Aead, KeyInit, Payload};

#[derive(Debug, Default)]
struct Vector {
    name: String,
    fields: Vec<(String, String)>,
}

impl Vector {
    fn get(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("vector {} lacks `{key}`", self.name))
    }
    fn hex(&self, key: &str) -> Vec<u8> {
        hex::decode(self.get(key)).unwrap_or_else(|e| panic!("vector {} `{key}`: {e}", self.name))
    }
}

fn vectors(kind: &str) -> Vec<Vector> {
    let doc = include_str!("../FORMAT.md");
    let mut out = Vec::new();
    let mut current: Option<Vector> = None;
    let fence = format!("```{kind}");
    for line in doc.lines() {
        if line.trim() == fence {
            current = Some(Vector::default());
        } else if line.trim() == "```" {
            if let Some(v) = current.take() {
                out.push(v);
            }
        } else if let Some(v) = current.as_mut() {
            let (k, val) = line.split_once(':').expect("`key: value` lines in vectors");
            let (k, val) = (k.trim().to_string(), val.trim().to_string());
            if k == "name" {
                v.name = val;
            } else if let Some((_, prev)) = v.fields.iter_mut().find(|(key, _)| *key == k) {
                prev.push_str(&val); // long hex continues on the next line
            } else {
                v.fields.push((k, val));
            }
        }
    }
    out
}

fn lp(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// HKDF-SHA256 as FORMAT.md §3 describes it.
fn spec_derive(root: &[u8], label: &str, names: &[&str]) -> [u8; 32] {
    let mut info = label.as_bytes().to_vec();
    info.push(0);
    for n in names {
        lp(&mut info, n);
    }
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"encrypted-columns/v1"), root)
        .expand(&info, &mut okm)
        .expect("32 bytes");
    okm
}

fn spec_aad(key_id: u32, table: &str, column: &str) -> Vec<u8> {
    let mut aad = vec![1u8];
    aad.extend_from_slice(&key_id.to_be_bytes());
    lp(&mut aad, table);
    lp(&mut aad, column);
    aad
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

#[test]
fn envelope_vectors_match_spec_and_library() {
    let all = vectors("vector");
    assert!(
        all.len() >= 5,
        "FORMAT.md must carry at least 5 envelope vectors"
    );
    for v in &all {
        let key_id: u32 = v.get("key id").parse().expect("key id");
        let root = v.hex("root key");
        let (table, column) = (v.get("table"), v.get("column"));
        let plaintext = v.hex("plaintext");
        let nonce: [u8; 24] = v.hex("nonce").try_into().expect("24-byte nonce");

        // Independent implementation, from the spec's words.
        let column_key = spec_derive(&root, "column-key", &[table, column]);
        assert_eq!(
            hex::encode(column_key),
            v.get("column key"),
            "{}: column key",
            v.name
        );
        let aad = spec_aad(key_id, table, column);
        assert_eq!(hex::encode(&aad), v.get("aad"), "{}: aad", v.name);
        let sealed = Xaes256Gcm::new(&column_key.into())
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .expect("seal");
        let mut envelope = aad[..5].to_vec();
        envelope.extend_from_slice(&nonce);
        envelope.extend_from_slice(&sealed);
        assert_eq!(
            hex::encode(&envelope),
            v.get("envelope"),
            "{}: envelope",
            v.name
        );

        // The library agrees both ways.
        let ring = Keyring::from_slice(KeyId(key_id), &root).expect("key");
        let ctx = Context::new(leak(table), leak(column));
        let ours = ring
            .seal_with_nonce_for_test_vectors(ctx, &nonce, &plaintext)
            .expect("library seal");
        assert_eq!(ours, envelope, "{}: library envelope", v.name);
        let opened = ring.open(ctx, &envelope).expect("library open");
        assert_eq!(
            opened.as_slice(),
            plaintext.as_slice(),
            "{}: library open",
            v.name
        );

        // Any other column context must refuse it.
        let other = Context::new(leak(table), leak(&format!("{column}_other")));
        assert!(
            ring.open(other, &envelope).is_err(),
            "{}: wrong context opened",
            v.name
        );
    }
}

#[test]
fn typed_plaintext_encodings_match_spec() {
    // The `type` line of a vector names how its plaintext decodes (FORMAT.md §5).
    for v in vectors("vector") {
        let bytes = zeroize::Zeroizing::new(v.hex("plaintext"));
        let shown = v.get("value");
        let decoded = match v.get("type") {
            "String" => String::decode(bytes).expect("utf-8"),
            "i64" => i64::decode(bytes).expect("i64").to_string(),
            "bool" => bool::decode(bytes).expect("bool").to_string(),
            "NaiveDate" => chrono::NaiveDate::decode(bytes).expect("date").to_string(),
            "Json" => {
                let value =
                    encrypted_columns::Json::<serde_json::Value>::decode(bytes).expect("json");
                serde_json::to_string(&value.0).expect("json")
            }
            "bytes" => hex::encode(bytes.as_slice()),
            other => panic!("{}: unknown type {other}", v.name),
        };
        assert_eq!(decoded, shown, "{}: typed value", v.name);
    }
}

#[test]
fn blind_index_key_vectors_match_spec() {
    let all = vectors("blind-index-key");
    assert!(!all.is_empty());
    for v in all {
        let version: u32 = v.get("key id").parse().expect("id");
        let root = v.hex("root key");
        let (table, index) = (v.get("table"), v.get("index"));
        let spec = spec_derive(&root, "blind-index-key", &[table, index]);
        assert_eq!(hex::encode(spec), v.get("index key"), "{}", v.name);
        let mut ring = Keyring::new(KeyId(1), [0x55; 32]);
        ring.add_blind_index_key(KeyId(version), root.clone().try_into().expect("32"))
            .expect("add");
        let ours = ring
            .blind_index_key(KeyId(version), table, index)
            .expect("derive");
        assert_eq!(
            hex::encode(ours.as_slice()),
            v.get("index key"),
            "{}",
            v.name
        );
    }
}

#[test]
fn tenant_blind_index_key_vectors_match_spec_and_library() {
    let all = vectors("tenant-blind-index-key");
    assert!(!all.is_empty());
    for v in all {
        let version: u32 = v.get("key id").parse().expect("id");
        let root = v.hex("root key");
        let (tenant, table, index) = (v.get("tenant"), v.get("table"), v.get("index"));
        let tenant_root = spec_derive(&root, "tenant-blind-index-key", &[tenant]);
        assert_eq!(
            hex::encode(tenant_root),
            v.get("tenant root key"),
            "{}",
            v.name
        );
        let spec = spec_derive(&tenant_root, "blind-index-key", &[table, index]);
        assert_eq!(hex::encode(spec), v.get("index key"), "{}", v.name);

        let mut master = Keyring::new(KeyId(1), [0x55; 32]);
        master
            .add_blind_index_key(KeyId(version), root.clone().try_into().expect("32"))
            .expect("add");
        let ring = master
            .for_tenant(tenant, KeyId(2), [0x66; 32])
            .expect("tenant keyring");
        let ours = ring
            .blind_index_key(KeyId(version), table, index)
            .expect("derive");
        assert_eq!(
            hex::encode(ours.as_slice()),
            v.get("index key"),
            "{}",
            v.name
        );
    }
}

/// Prints vector blocks for the inputs below (used to write FORMAT.md, not a check).
#[test]
fn print_vectors_when_asked() {
    if std::env::var_os("PRINT_VECTORS").is_none() {
        return;
    }
    let root_a: Vec<u8> = (0u8..32).collect();
    let root_b: Vec<u8> = (0u8..32).map(|i| 0xff - i).collect();
    let nonce_a: Vec<u8> = (0u8..24).collect();
    let nonce_b: Vec<u8> = (0u8..24).map(|i| 0xa0 + i).collect();
    let enc = |v: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::new();
        v(&mut out);
        out
    };
    let date = chrono::NaiveDate::from_ymd_opt(1990, 5, 17).expect("date");
    struct Input<'a> {
        name: &'a str,
        key_id: u32,
        root: &'a [u8],
        table: &'a str,
        column: &'a str,
        ty: &'a str,
        plaintext: Vec<u8>,
        shown: String,
        nonce: &'a [u8],
    }
    let input = |name, key_id, root, table, column, ty, plaintext, shown: &str, nonce| Input {
        name,
        key_id,
        root,
        table,
        column,
        ty,
        plaintext,
        shown: shown.to_string(),
        nonce,
    };
    let uni = "Zoë Ångström — 東京 🩺";
    let json = r#"{"speaker":"clinician","t":[0,1.5]}"#;
    let inputs = vec![
        input(
            "email",
            1,
            &root_a,
            "patients",
            "email",
            "String",
            b"ada@example.org".to_vec(),
            "ada@example.org",
            &nonce_a,
        ),
        input(
            "empty string",
            1,
            &root_a,
            "patients",
            "middle_name",
            "String",
            Vec::new(),
            "",
            &nonce_b,
        ),
        input(
            "unicode, large key id",
            0x0102_0304,
            &root_b,
            "transcripts",
            "raw_text",
            "String",
            uni.as_bytes().to_vec(),
            uni,
            &nonce_a,
        ),
        input(
            "i64",
            2,
            &root_b,
            "patients",
            "mrn",
            "i64",
            enc(&|o| (-42i64).encode(o).unwrap()),
            "-42",
            &nonce_b,
        ),
        input(
            "bool",
            2,
            &root_b,
            "patients",
            "smoker",
            "bool",
            enc(&|o| true.encode(o).unwrap()),
            "true",
            &nonce_a,
        ),
        input(
            "date",
            1,
            &root_a,
            "patients",
            "date_of_birth",
            "NaiveDate",
            enc(&|o| date.encode(o).unwrap()),
            "1990-05-17",
            &nonce_a,
        ),
        input(
            "json",
            7,
            &root_a,
            "transcripts",
            "segments",
            "Json",
            json.as_bytes().to_vec(),
            json,
            &nonce_b,
        ),
    ];
    for i in inputs {
        let column_key = spec_derive(i.root, "column-key", &[i.table, i.column]);
        let aad = spec_aad(i.key_id, i.table, i.column);
        let n: [u8; 24] = i.nonce.try_into().expect("24");
        let sealed = Xaes256Gcm::new(&column_key.into())
            .encrypt(
                &n.into(),
                Payload {
                    msg: &i.plaintext,
                    aad: &aad,
                },
            )
            .expect("seal");
        let mut env = aad[..5].to_vec();
        env.extend_from_slice(i.nonce);
        env.extend_from_slice(&sealed);
        println!(
            "```vector\nname: {}\nkey id: {}\nroot key: {}\ntable: {}\ncolumn: {}\ntype: {}\nvalue: {}\nplaintext: {}\nnonce: {}\ncolumn key: {}\naad: {}\nenvelope: {}\n```\n",
            i.name,
            i.key_id,
            hex::encode(i.root),
            i.table,
            i.column,
            i.ty,
            i.shown,
            hex::encode(&i.plaintext),
            hex::encode(i.nonce),
            hex::encode(column_key),
            hex::encode(&aad),
            hex::encode(&env)
        );
    }
    let bi = spec_derive(&root_b, "blind-index-key", &["patients", "email_bidx"]);
    println!(
        "```blind-index-key\nname: email index\nkey id: 1\nroot key: {}\ntable: patients\nindex: email_bidx\nindex key: {}\n```",
        hex::encode(&root_b),
        hex::encode(bi)
    );
}

/// One input part of a blind-index vector: text (with transforms) or raw bytes.
enum Part<'a> {
    Text(&'a str, &'a str),
    Bytes(Vec<u8>),
}

/// FORMAT.md §8 by hand: message = parts as u32 length || bytes; value = key id byte ||
/// HMAC-SHA256 truncated to `bits`, spare low bits zeroed.
fn spec_blind_value(
    index_key: &[u8],
    version: u8,
    bits: usize,
    normalized: &[Vec<u8>],
) -> (Vec<u8>, Vec<u8>) {
    use hmac::{KeyInit as _, Mac};
    let mut message = Vec::new();
    for part in normalized {
        message.extend_from_slice(&(part.len() as u32).to_be_bytes());
        message.extend_from_slice(part);
    }
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(index_key).expect("key");
    mac.update(&message);
    let tag = mac.finalize().into_bytes();
    let bytes = bits.div_ceil(8);
    let mut value = vec![version];
    value.extend_from_slice(&tag[..bytes]);
    let spare = bytes * 8 - bits;
    if spare > 0 {
        *value.last_mut().expect("non-empty") &= 0xffu8 << spare;
    }
    (message, value)
}

fn library_blind_value(
    ring: &Keyring,
    table: &str,
    index: &str,
    bits: u16,
    parts: &[Part<'_>],
) -> (Vec<u8>, Vec<u8>) {
    use encrypted_columns::blind_index::{BlindIndex, IndexInput, Pipeline};
    let mut idx = BlindIndex::named(table, index).expect("names").bits(bits);
    let mut inputs = Vec::new();
    for part in parts {
        match part {
            Part::Text(transforms, text) => {
                idx = idx.field(Pipeline::parse(transforms).expect("transforms"));
                inputs.push(IndexInput::Text(text));
            }
            Part::Bytes(bytes) => {
                idx = idx.field(Pipeline::identity());
                inputs.push(IndexInput::Bytes(bytes.as_slice().into()));
            }
        }
    }
    let message = idx.message(&inputs).expect("message").to_vec();
    let some: Vec<_> = inputs.into_iter().map(Some).collect();
    let value = idx
        .compute(ring, &some)
        .expect("compute")
        .expect("non-null");
    (message, value)
}

#[test]
fn blind_index_vectors_match_spec_and_library() {
    let all = vectors("blind-index");
    assert!(
        all.len() >= 5,
        "FORMAT.md must hold at least 5 blind-index vectors"
    );
    for v in all {
        let version: u8 = v.get("key id").parse().expect("id");
        let root: [u8; 32] = v.hex("root key").try_into().expect("32 bytes");
        let (table, index) = (v.get("table"), v.get("index"));
        let bits: u16 = v.get("bits").parse().expect("bits");
        let count: usize = v.get("parts").parse().expect("parts");
        let index_key = spec_derive(&root, "blind-index-key", &[table, index]);
        assert_eq!(hex::encode(index_key), v.get("index key"), "{}", v.name);

        let mut normalized = Vec::new();
        let mut texts = Vec::new();
        for i in 1..=count {
            normalized.push(v.hex(&format!("part {i} normalized")));
            let raw = v.hex(&format!("part {i} input"));
            texts.push((v.get(&format!("part {i} transforms")).to_string(), raw));
        }
        let (message, value) = spec_blind_value(&index_key, version, bits.into(), &normalized);
        assert_eq!(
            hex::encode(&message),
            v.get("message"),
            "{}: spec message",
            v.name
        );
        assert_eq!(
            hex::encode(&value),
            v.get("value"),
            "{}: spec value",
            v.name
        );

        let parts: Vec<Part<'_>> = texts
            .iter()
            .enumerate()
            .map(
                |(i, (transforms, raw))| match v.get(&format!("part {} kind", i + 1)) {
                    "text" => Part::Text(transforms, std::str::from_utf8(raw).expect("utf-8")),
                    _ => Part::Bytes(raw.clone()),
                },
            )
            .collect();
        let mut ring = Keyring::new(KeyId(1), [0x55; 32]);
        ring.add_blind_index_key(KeyId(version.into()), root)
            .expect("add");
        let (lib_message, lib_value) = library_blind_value(&ring, table, index, bits, &parts);
        assert_eq!(
            hex::encode(lib_message),
            v.get("message"),
            "{}: library message",
            v.name
        );
        assert_eq!(
            hex::encode(lib_value),
            v.get("value"),
            "{}: library value",
            v.name
        );
    }
}

/// Prints blind-index vector blocks (used to write FORMAT.md §8, not a check).
#[test]
fn print_blind_index_vectors_when_asked() {
    if std::env::var_os("PRINT_VECTORS").is_none() {
        return;
    }
    let root_b: [u8; 32] = std::array::from_fn(|i| 0xff - i as u8);
    let root_c: [u8; 32] = std::array::from_fn(|i| 0x40 + i as u8);
    let dob = 7441i32.to_be_bytes().to_vec(); // 1990-05-17 as NaiveDate encoding
    type Case<'a> = (&'a str, u8, [u8; 32], &'a str, &'a str, u16, Vec<Part<'a>>);
    let cases: Vec<Case<'_>> = vec![
        (
            "email, full width",
            1,
            root_b,
            "patients",
            "email_bidx",
            256,
            vec![Part::Text("email", " Ada@Example.ORG ")],
        ),
        (
            "phone last 4, 16 bits",
            1,
            root_b,
            "patients",
            "phone_last4_bidx",
            16,
            vec![Part::Text("digits, last(4)", "+1 (555) 010-0199")],
        ),
        (
            "email domain, 12 bits",
            1,
            root_b,
            "patients",
            "email_domain_bidx",
            12,
            vec![Part::Text("email_domain", "Ada@Example.org")],
        ),
        (
            "compound last name + date of birth",
            2,
            root_c,
            "patients",
            "name_dob_bidx",
            32,
            vec![
                Part::Text("casefold, trim", "  Ångström "),
                Part::Bytes(dob),
            ],
        ),
        (
            "casefold, key 7",
            7,
            root_c,
            "patients",
            "last_name_bidx",
            256,
            vec![Part::Text("casefold", "STRAßE ﬁ")],
        ),
        (
            "identity text",
            1,
            root_b,
            "clinical_notes",
            "author_bidx",
            64,
            vec![Part::Text("", "Dr. Q")],
        ),
    ];
    for (name, version, root, table, index, bits, parts) in cases {
        let mut ring = Keyring::new(KeyId(1), [0x55; 32]);
        ring.add_blind_index_key(KeyId(version.into()), root)
            .expect("add");
        let (message, value) = library_blind_value(&ring, table, index, bits, &parts);
        let index_key = spec_derive(&root, "blind-index-key", &[table, index]);
        println!(
            "```blind-index\nname: {name}\nkey id: {version}\nroot key: {}\ntable: {table}\nindex: {index}\nbits: {bits}\nparts: {}",
            hex::encode(root),
            parts.len()
        );
        for (i, part) in parts.iter().enumerate() {
            let n = i + 1;
            match part {
                Part::Text(t, text) => {
                    let normalized = encrypted_columns::blind_index::Pipeline::parse(t)
                        .expect("t")
                        .apply(text)
                        .into_owned();
                    println!(
                        "part {n} kind: text\npart {n} transforms: {t}\npart {n} input: {}\npart {n} normalized: {}",
                        hex::encode(text),
                        hex::encode(normalized)
                    );
                }
                Part::Bytes(b) => println!(
                    "part {n} kind: bytes\npart {n} transforms: \npart {n} input: {}\npart {n} normalized: {}",
                    hex::encode(b),
                    hex::encode(b)
                ),
            }
        }
        println!(
            "message: {}\nindex key: {}\nvalue: {}\n```\n",
            hex::encode(message),
            hex::encode(index_key),
            hex::encode(value)
        );
    }
}

/// `WrapContext` associated data as FORMAT.md §9 describes it (u32 length prefixes, not the
/// u16 `lp` of §1).
fn spec_wrap_aad(key_id: u32, purpose: &str, subject: &str) -> Vec<u8> {
    let mut aad = vec![1u8];
    aad.extend_from_slice(b"encrypted-columns/kek/v1");
    aad.extend_from_slice(&key_id.to_be_bytes());
    for part in [purpose, subject] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// `StaticKek` wrapping as FORMAT.md §9 describes it: XAES-256-GCM keyed by the KEK itself.
fn spec_static_wrap(kek: &[u8; 32], nonce: &[u8; 24], key: &[u8; 32], aad: &[u8]) -> Vec<u8> {
    let sealed = Xaes256Gcm::new(&(*kek).into())
        .encrypt(&(*nonce).into(), Payload { msg: key, aad })
        .expect("seal");
    let mut wrapped = vec![1u8];
    wrapped.extend_from_slice(nonce);
    wrapped.extend_from_slice(&sealed);
    wrapped
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(future)
}

#[test]
fn static_kek_vectors_match_spec_and_library() {
    use encrypted_columns::kek::{KekError, KeyEncryptionKey, StaticKek, WrapContext, WrappedKey};
    let all = vectors("wrapped-key");
    assert!(
        all.len() >= 2,
        "FORMAT.md must carry at least 2 StaticKek vectors"
    );
    assert!(
        all.iter().any(|v| v.get("subject").is_empty()),
        "one StaticKek vector has an empty subject"
    );
    for v in &all {
        let kek: [u8; 32] = v.hex("kek").try_into().expect("32-byte kek");
        let key_id: u32 = v.get("key id").parse().expect("key id");
        let (purpose, subject) = (v.get("purpose"), v.get("subject"));
        let nonce: [u8; 24] = v.hex("nonce").try_into().expect("24-byte nonce");
        let key: [u8; 32] = v.hex("key").try_into().expect("32-byte key");
        let expected = v.hex("wrapped");
        assert_eq!(expected.len(), 73, "{}: wrapped length", v.name);

        // Independent implementation, from the spec's words.
        let aad = spec_wrap_aad(key_id, purpose, subject);
        assert_eq!(hex::encode(&aad), v.get("aad"), "{}: aad", v.name);
        assert_eq!(
            hex::encode(spec_static_wrap(&kek, &nonce, &key, &aad)),
            v.get("wrapped"),
            "{}: spec wrapped",
            v.name
        );

        // The library: unwraps through the public trait, and wraps to the same bytes.
        let ctx = WrapContext::new(key_id, purpose, subject);
        assert_eq!(
            hex::encode(&aad[1..]),
            hex::encode(ctx.associated_data()),
            "{}: WrapContext::associated_data",
            v.name
        );
        let static_kek = StaticKek::new("vector", &zeroize::Zeroizing::new(kek));
        let provider: &dyn KeyEncryptionKey = &static_kek;
        let wrapped = WrappedKey::from_bytes(expected.clone());
        let unwrapped = block_on(provider.unwrap_key(&wrapped, &ctx)).expect("library unwrap");
        assert_eq!(*unwrapped, key, "{}: library unwrap", v.name);
        let ours = static_kek
            .wrap_with_nonce_for_test_vectors(&key, &ctx, &nonce)
            .expect("library wrap");
        assert_eq!(
            hex::encode(ours.as_bytes()),
            v.get("wrapped"),
            "{}: library wrap",
            v.name
        );

        // Another key id, purpose or subject, a flipped bit or another KEK must refuse it.
        let mut flipped = expected.clone();
        flipped[40] ^= 1;
        let other_kek = StaticKek::new("other", &zeroize::Zeroizing::new([0x5a; 32]));
        let refusals = [
            (
                provider,
                wrapped.clone(),
                WrapContext::new(key_id.wrapping_add(1), purpose, subject),
            ),
            (
                provider,
                wrapped.clone(),
                WrapContext::new(key_id, format!("{purpose}-other"), subject),
            ),
            (
                provider,
                wrapped.clone(),
                WrapContext::new(key_id, purpose, format!("{subject}x")),
            ),
            (provider, WrappedKey::from_bytes(flipped), ctx.clone()),
            (
                &other_kek as &dyn KeyEncryptionKey,
                wrapped.clone(),
                ctx.clone(),
            ),
        ];
        for (kek, bytes, context) in &refusals {
            let err = block_on(kek.unwrap_key(bytes, context)).expect_err("must not unwrap");
            assert!(matches!(err, KekError::Unwrap { .. }), "{}: {err}", v.name);
        }
    }
}

/// Prints StaticKek vector blocks (used to write FORMAT.md §9, not a check).
#[test]
fn print_static_kek_vectors_when_asked() {
    use encrypted_columns::kek::{StaticKek, WrapContext};
    if std::env::var_os("PRINT_VECTORS").is_none() {
        return;
    }
    let kek_a: [u8; 32] = std::array::from_fn(|i| 0x80 + i as u8);
    let kek_b: [u8; 32] = std::array::from_fn(|i| 0x3f - i as u8);
    let key_a: [u8; 32] = std::array::from_fn(|i| 0x20 + i as u8);
    let key_b: [u8; 32] = std::array::from_fn(|i| 0xc0 + i as u8);
    let nonce_a: [u8; 24] = std::array::from_fn(|i| i as u8);
    let nonce_b: [u8; 24] = std::array::from_fn(|i| 0xa0 + i as u8);
    let cases = [
        (
            "encryption key, tenant",
            kek_a,
            1u32,
            "encryption",
            "clinic",
            nonce_a,
            key_a,
        ),
        (
            "blind-index key, empty subject",
            kek_b,
            16_909_060,
            "blind-index",
            "",
            nonce_b,
            key_b,
        ),
    ];
    for (name, kek, key_id, purpose, subject, nonce, key) in cases {
        let ctx = WrapContext::new(key_id, purpose, subject);
        let wrapped = StaticKek::new("vector", &zeroize::Zeroizing::new(kek))
            .wrap_with_nonce_for_test_vectors(&key, &ctx, &nonce)
            .expect("wrap");
        println!(
            "```wrapped-key\nname: {name}\nkek: {}\nkey id: {key_id}\npurpose: {purpose}\nsubject: {subject}\nnonce: {}\nkey: {}\naad: {}\nwrapped: {}\n```\n",
            hex::encode(kek),
            hex::encode(nonce),
            hex::encode(key),
            hex::encode(spec_wrap_aad(key_id, purpose, subject)),
            hex::encode(wrapped.as_bytes())
        );
    }
}

#[test]
fn key_check_value_vectors_match_spec_and_library() {
    use encrypted_columns::keyring::{KeyPurpose, check_value};
    let all = vectors("key-check-value");
    assert!(
        all.len() >= 3,
        "FORMAT.md must carry a KCV vector per purpose"
    );
    for v in &all {
        let root: [u8; 32] = v.hex("root key").try_into().expect("32-byte key");
        let id: u32 = v.get("key id").parse().expect("key id");
        let purpose = v.get("purpose");
        // Independent implementation, from the spec's words.
        let mut info = b"key-check-value".to_vec();
        info.push(0);
        lp(&mut info, purpose);
        lp(&mut info, &id.to_string());
        assert_eq!(hex::encode(&info), v.get("info"), "{}: info", v.name);
        let okm = spec_derive(&root, "key-check-value", &[purpose, &id.to_string()]);
        assert_eq!(
            hex::encode(&okm[..16]),
            v.get("check value"),
            "{}: spec",
            v.name
        );
        // The library, through the free function and a keyring holding the key.
        let purpose = KeyPurpose::parse(purpose).expect("known purpose");
        let ours = check_value(purpose, KeyId(id), &root);
        assert_eq!(
            ours.to_string(),
            v.get("check value"),
            "{}: library",
            v.name
        );
        let mut ring = Keyring::new(KeyId(id), root);
        if purpose == KeyPurpose::BlindIndex {
            ring = Keyring::new(KeyId(id.wrapping_add(1000)), [0x11; 32]);
            ring.add_blind_index_key(KeyId(id), root)
                .expect("blind-index key");
        }
        if purpose != KeyPurpose::Subject {
            assert_eq!(
                ring.check_value(purpose, KeyId(id)),
                Some(ours),
                "{}",
                v.name
            );
        }
        // Another id or purpose gives another value.
        assert_ne!(check_value(purpose, KeyId(id ^ 1), &root), ours);
    }
}
