//! The PKCS#11 KEK provider (`encrypted_columns::kek::pkcs11`) against SoftHSM2.
//!
//! Runs when `TEST_SOFTHSM2_MODULE` names SoftHSM2's module (`.ci/run` installs the package and
//! sets it); otherwise each test prints "skipped: …" and passes.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, when the module is initialised, and a module is
//! initialised once per process. So the binary makes one token directory (under Cargo's
//! target tmp dir, named by process id), initialises one token per test in it with
//! `softhsm2-util` *before* loading the module, and sets `SOFTHSM2_CONF` once; tests use their
//! own token by label and run in parallel safely.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use encrypted_columns::kek::pkcs11::{Pkcs11Config, Pkcs11Kek};
use encrypted_columns::kek::{KekError, KeyEncryptionKey, WrapContext, WrappedKey};

const MODULE_VAR: &str = "TEST_SOFTHSM2_MODULE";
/// Set by `fresh_process_unwraps_what_an_earlier_one_wrapped` for the child it starts.
const CHILD_WRAPPED_VAR: &str = "KEK_PKCS11_CHILD_WRAPPED";
use encrypted_columns_tests::softhsm::PIN;
/// One token per test.
const TOKENS: &[&str] = &[
    "round-trip",
    "attributes",
    "wrong-pin",
    "unknown-kek",
    "tampered",
    "context",
    "fresh",
];

struct Hsm {
    module: PathBuf,
}

static HSM: OnceLock<Hsm> = OnceLock::new();

/// The SoftHSM2 module with this binary's tokens, or `None` (after printing "skipped") when
/// `TEST_SOFTHSM2_MODULE` is unset.
fn hsm(test: &str) -> Option<&'static Hsm> {
    let Ok(module) = std::env::var(MODULE_VAR) else {
        eprintln!("skipped: {MODULE_VAR} not set ({test})");
        return None;
    };
    Some(HSM.get_or_init(|| setup(PathBuf::from(module))))
}

fn setup(module: PathBuf) -> Hsm {
    // A child started by the fresh-process test inherits the parent's SOFTHSM2_CONF and tokens.
    if std::env::var_os(CHILD_WRAPPED_VAR).is_some() {
        return Hsm { module };
    }
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    remove_stale_dirs(&base);
    let dir = base.join(format!("kek_pkcs11-{}", std::process::id()));
    let conf = encrypted_columns_tests::softhsm::create_tokens(&dir, TOKENS);
    // SAFETY: runs once, inside `OnceLock::get_or_init`, before this process loads the module
    // (every test reaches the module only through `hsm()`, which blocks until this returns);
    // nothing else in this binary reads the environment from C concurrently.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    Hsm { module }
}

/// Removes token directories of earlier runs whose process is gone.
fn remove_stale_dirs(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("kek_pkcs11-")) else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn config(hsm: &Hsm, token: &str, key: &str) -> Pkcs11Config {
    Pkcs11Config::new(&hsm.module, token, key, PIN)
}

async fn provisioned(hsm: &Hsm, token: &str) -> Pkcs11Kek {
    Pkcs11Kek::connect(config(hsm, token, "kek").generate_if_missing(true))
        .await
        .expect("connect and generate the KEK")
}

fn ctx() -> WrapContext {
    WrapContext::new(1, "encryption", "clinic")
}

const ROOT_KEY: [u8; 32] = [0x5a; 32];

#[tokio::test]
async fn wrap_then_unwrap_round_trips() {
    let Some(hsm) = hsm("wrap_then_unwrap_round_trips") else {
        return;
    };
    let kek = provisioned(hsm, "round-trip").await;
    assert_eq!(kek.provider(), "pkcs11");
    assert_eq!(kek.kek_id(), "pkcs11:token=round-trip;object=kek");

    let kek: std::sync::Arc<dyn KeyEncryptionKey> = std::sync::Arc::new(kek);
    let wrapped = kek.wrap_key(&ROOT_KEY, &ctx()).await.unwrap();
    assert_eq!(wrapped.as_bytes().len(), 61);
    assert!(!wrapped.as_bytes().windows(8).any(|w| w == &ROOT_KEY[..8]));
    assert_eq!(*kek.unwrap_key(&wrapped, &ctx()).await.unwrap(), ROOT_KEY);
    // Random IVs.
    let again = kek.wrap_key(&ROOT_KEY, &ctx()).await.unwrap();
    assert_ne!(wrapped, again);
    assert_eq!(*kek.unwrap_key(&again, &ctx()).await.unwrap(), ROOT_KEY);
    // Through the stored (base64) form.
    let stored = WrappedKey::from_base64(&wrapped.to_string()).unwrap();
    assert_eq!(*kek.unwrap_key(&stored, &ctx()).await.unwrap(), ROOT_KEY);
}

#[tokio::test]
async fn the_kek_is_sensitive_and_not_extractable() {
    let Some(hsm) = hsm("the_kek_is_sensitive_and_not_extractable") else {
        return;
    };
    let _kek = provisioned(hsm, "attributes").await;

    // Look at the key object with plain cryptoki, as any other application of the token could.
    let pkcs11 = Pkcs11::new(&hsm.module).unwrap();
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = pkcs11
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == "attributes")
        .expect("the token");
    let session = pkcs11.open_ro_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(PIN))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    let keys = session
        .find_objects(&[Attribute::Label(b"kek".to_vec())])
        .unwrap();
    assert_eq!(keys.len(), 1);
    let attrs = session
        .get_attributes(
            keys[0],
            &[
                AttributeType::Extractable,
                AttributeType::Sensitive,
                AttributeType::NeverExtractable,
                AttributeType::Token,
                AttributeType::ValueLen,
                AttributeType::Value,
            ],
        )
        .unwrap();
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    assert!(
        attrs.contains(&Attribute::NeverExtractable(true)),
        "{attrs:?}"
    );
    assert!(attrs.contains(&Attribute::Token(true)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::ValueLen(32.into())), "{attrs:?}");
    assert!(
        !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
        "the key's value was readable: {} attributes returned",
        attrs.len()
    );
    // The token answers CKR_ATTRIBUTE_SENSITIVE for the value.
    let info = session
        .get_attribute_info(keys[0], &[AttributeType::Value])
        .unwrap();
    assert!(matches!(info[..], [AttributeInfo::Sensitive]), "{info:?}");
    // And it cannot be made extractable afterwards (CKA_EXTRACTABLE is one-way).
    let rw = pkcs11.open_rw_session(slot).unwrap();
    assert!(
        rw.update_attributes(keys[0], &[Attribute::Extractable(true)])
            .is_err()
    );
}

#[tokio::test]
async fn wrong_pin_is_a_login_error_naming_the_provider() {
    let Some(hsm) = hsm("wrong_pin_is_a_login_error_naming_the_provider") else {
        return;
    };
    let config = Pkcs11Config::new(&hsm.module, "wrong-pin", "kek", "not-the-pin");
    let err = Pkcs11Kek::connect(config).await.unwrap_err();
    assert!(matches!(err, KekError::Login { .. }), "{err}");
    assert_eq!(err.provider(), "pkcs11");
    assert_eq!(err.kek_id(), "pkcs11:token=wrong-pin;object=kek");
    let text = err.to_string();
    assert!(
        text.contains("pkcs11") && text.contains("wrong-pin"),
        "{text}"
    );
    assert!(!text.contains("not-the-pin"), "{text}");
    // The right PIN still works (the failed attempt did not lock the token).
    let kek = provisioned(hsm, "wrong-pin").await;
    let wrapped = kek.wrap_key(&ROOT_KEY, &ctx()).await.unwrap();
    assert_eq!(*kek.unwrap_key(&wrapped, &ctx()).await.unwrap(), ROOT_KEY);
}

#[tokio::test]
async fn unknown_kek_label_and_unknown_token_are_typed_errors() {
    let Some(hsm) = hsm("unknown_kek_label_and_unknown_token_are_typed_errors") else {
        return;
    };
    let err = Pkcs11Kek::connect(config(hsm, "unknown-kek", "no-such-kek"))
        .await
        .unwrap_err();
    assert!(matches!(err, KekError::UnknownKek { .. }), "{err}");
    assert_eq!(err.kek_id(), "pkcs11:token=unknown-kek;object=no-such-kek");
    assert!(err.to_string().contains("no-such-kek"), "{err}");

    let err = Pkcs11Kek::connect(config(hsm, "no-such-token", "kek"))
        .await
        .unwrap_err();
    assert!(matches!(err, KekError::Unreachable { .. }), "{err}");

    let bad_module = Pkcs11Config::new("/nonexistent/libpkcs11.so", "t", "kek", PIN);
    let err = Pkcs11Kek::connect(bad_module).await.unwrap_err();
    assert!(matches!(err, KekError::Unreachable { .. }), "{err}");
}

#[tokio::test]
async fn tampered_wrapped_keys_are_typed_errors() {
    let Some(hsm) = hsm("tampered_wrapped_keys_are_typed_errors") else {
        return;
    };
    let kek = provisioned(hsm, "tampered").await;
    let wrapped = kek.wrap_key(&ROOT_KEY, &ctx()).await.unwrap();
    let bytes = wrapped.as_bytes();
    // Every byte: format, IV, ciphertext and tag.
    for i in 0..bytes.len() {
        let mut changed = bytes.to_vec();
        changed[i] ^= 0x80;
        let err = kek
            .unwrap_key(&WrappedKey::from_bytes(changed), &ctx())
            .await
            .unwrap_err();
        assert!(matches!(err, KekError::Unwrap { .. }), "byte {i}: {err}");
        assert_eq!(err.kek_id(), "pkcs11:token=tampered;object=kek");
    }
    for bad in [
        &bytes[..bytes.len() - 1],
        &bytes[..0],
        &[bytes, &b"x"[..]].concat()[..],
    ] {
        let err = kek
            .unwrap_key(&WrappedKey::from_bytes(bad), &ctx())
            .await
            .unwrap_err();
        assert!(matches!(err, KekError::Unwrap { .. }), "{err}");
    }
    // The session still works after failed decryptions.
    assert_eq!(*kek.unwrap_key(&wrapped, &ctx()).await.unwrap(), ROOT_KEY);
}

#[tokio::test]
async fn another_context_or_kek_does_not_unwrap() {
    let Some(hsm) = hsm("another_context_or_kek_does_not_unwrap") else {
        return;
    };
    let kek = provisioned(hsm, "context").await;
    let wrapped = kek.wrap_key(&ROOT_KEY, &ctx()).await.unwrap();
    for other in [
        WrapContext::new(2, "encryption", "clinic"),
        WrapContext::new(1, "blind-index", "clinic"),
        WrapContext::new(1, "encryption", "other-clinic"),
    ] {
        let err = kek.unwrap_key(&wrapped, &other).await.unwrap_err();
        assert!(matches!(err, KekError::Unwrap { .. }), "{other:?}: {err}");
    }
    // Another KEK in the same token.
    let other = Pkcs11Kek::connect(config(hsm, "context", "kek-2").generate_if_missing(true))
        .await
        .unwrap();
    let err = other.unwrap_key(&wrapped, &ctx()).await.unwrap_err();
    assert!(matches!(err, KekError::Unwrap { .. }), "{err}");
    assert_eq!(err.kek_id(), "pkcs11:token=context;object=kek-2");
}

#[tokio::test]
async fn fresh_process_unwraps_what_an_earlier_one_wrapped() {
    let Some(hsm) = hsm("fresh_process_unwraps_what_an_earlier_one_wrapped") else {
        return;
    };
    if std::env::var_os(CHILD_WRAPPED_VAR).is_some() {
        return; // only the parent runs this one
    }
    let kek = provisioned(hsm, "fresh").await;
    let wrapped = kek.wrap_key(&ROOT_KEY, &ctx()).await.unwrap();
    drop(kek);

    // A new provider instance (new session, key found again by label).
    let again = Pkcs11Kek::connect(config(hsm, "fresh", "kek"))
        .await
        .unwrap();
    assert_eq!(*again.unwrap_key(&wrapped, &ctx()).await.unwrap(), ROOT_KEY);

    // A new process: this binary again, running only `child_unwraps_the_parents_key`.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_unwraps_the_parents_key",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_WRAPPED_VAR, wrapped.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("child: unwrapped the parent's key"),
        "child did not run:\n{stdout}\n{stderr}"
    );
}

/// The child of `fresh_process_unwraps_what_an_earlier_one_wrapped`; passes trivially in a
/// normal run.
#[tokio::test]
async fn child_unwraps_the_parents_key() {
    let Ok(stored) = std::env::var(CHILD_WRAPPED_VAR) else {
        return;
    };
    let hsm = hsm("child_unwraps_the_parents_key").expect("the parent set the module");
    let wrapped = WrappedKey::from_base64(&stored).unwrap();
    let kek = Pkcs11Kek::connect(config(hsm, "fresh", "kek"))
        .await
        .unwrap();
    assert_eq!(*kek.unwrap_key(&wrapped, &ctx()).await.unwrap(), ROOT_KEY);
    println!("child: unwrapped the parent's key");
}
