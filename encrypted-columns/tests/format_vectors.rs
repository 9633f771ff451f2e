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
        let mut ring = Keyring::generate();
        ring.add_blind_index_key(KeyId(version + 1000), root.clone().try_into().expect("32"))
            .expect("add");
        let ours = ring
            .blind_index_key(KeyId(version + 1000), table, index)
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
