//! A KEK inside a PKCS#11 token: SoftHSM2, Thales Luna, AWS CloudHSM, YubiHSM (feature
//! `pkcs11`).
//!
//! The KEK is an AES-256 secret key object in the token, generated there with
//! `CKA_SENSITIVE = true` and `CKA_EXTRACTABLE = false`: its value can be neither read nor
//! wrapped out of the token. Wrapping is `CKM_AES_GCM` encryption of the 32-byte key inside the
//! token with a random 96-bit IV, a 128-bit tag, and the [`WrapContext`] as additional
//! authenticated data; unwrapping is the matching decryption, which fails (as
//! [`KekError::Unwrap`]) on any modified byte or another context.
//!
//! Why AES-GCM rather than `CKM_AES_KEY_WRAP_PAD`: the key-wrap mechanisms (RFC 3394/5649)
//! take no associated data, so binding the context would need a second construction; GCM binds
//! it natively and SoftHSM2 and the HSMs above all implement it. The 2^32-messages bound of
//! random GCM IVs is irrelevant here: a KEK wraps a handful of root keys in its lifetime.
//! (C_WrapKey would also need the root key as a token object, which this crate does not need.)
//!
//! Wrapped layout (61 bytes): `0x01 || IV (12) || ciphertext (32) || tag (16)`, with associated
//! data `0x01 || WrapContext::associated_data()`.
//!
//! PKCS#11 calls block, so every call runs in [`tokio::task::spawn_blocking`]. Each module is
//! loaded and `C_Initialize`d once per process and never unloaded (PKCS#11 allows one
//! initialisation per process, and a module's state is process-wide). Each [`Pkcs11Kek`] keeps
//! one logged-in session, re-opened once if the token drops it.
//!
//! ```no_run
//! use std::sync::Arc;
//! use encrypted_columns::kek::{KeyEncryptionKey, WrapContext};
//! use encrypted_columns::kek::pkcs11::{Pkcs11Config, Pkcs11Kek};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), encrypted_columns::kek::KekError> {
//! let config = Pkcs11Config::new(
//!     "/usr/lib/softhsm/libsofthsm2.so", // or the HSM vendor's module
//!     "clinic",                          // token label
//!     "clinic-kek-1",                    // KEK object label
//!     std::env::var("HSM_PIN").unwrap_or_default(),
//! )
//! .generate_if_missing(true); // at provisioning; false in production
//! let kek: Arc<dyn KeyEncryptionKey> = Arc::new(Pkcs11Kek::connect(config).await?);
//! println!("KEK: {} {}", kek.provider(), kek.kek_id()); // pkcs11 pkcs11:token=clinic;object=clinic-kek-1
//!
//! let ctx = WrapContext::new(1, "encryption", "clinic");
//! let wrapped = kek.wrap_key(&[7u8; 32], &ctx).await?; // store `wrapped.to_string()`
//! let root_key = kek.unwrap_key(&wrapped, &ctx).await?; // at start-up
//! # let _ = root_key; Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rand::Rng as _;
use zeroize::Zeroizing;

use super::{KekError, KekFuture, KeyEncryptionKey, WRAPPED_KEY_LEN, WrapContext, WrappedKey};

const PROVIDER: &str = "pkcs11";
const FORMAT_V1: u8 = 1;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = 1 + IV_LEN + WRAPPED_KEY_LEN + TAG_LEN;

/// Where the KEK is: module, token, key label and user PIN.
#[derive(Clone)]
pub struct Pkcs11Config {
    module: PathBuf,
    token_label: String,
    key_label: String,
    pin: Zeroizing<String>,
    generate_if_missing: bool,
}

impl Pkcs11Config {
    /// The KEK labelled `key_label` in the token labelled `token_label` of the PKCS#11 module
    /// (shared library) at `module`, logged in as the user with `pin`.
    pub fn new(
        module: impl Into<PathBuf>,
        token_label: impl Into<String>,
        key_label: impl Into<String>,
        pin: impl Into<String>,
    ) -> Self {
        Pkcs11Config {
            module: module.into(),
            token_label: token_label.into(),
            key_label: key_label.into(),
            pin: Zeroizing::new(pin.into()),
            generate_if_missing: false,
        }
    }

    /// Generates the KEK in the token if no key has its label (default: `false`, a missing
    /// KEK is [`KekError::UnknownKek`]). Provision from one process: two generating at once
    /// can create two keys with the label, which [`Pkcs11Kek::connect`] then refuses.
    pub fn generate_if_missing(mut self, generate: bool) -> Self {
        self.generate_if_missing = generate;
        self
    }

    /// The KEK id in status output: an RFC 7512 PKCS#11 URI, `pkcs11:token=…;object=…`.
    pub fn kek_id(&self) -> String {
        format!(
            "pkcs11:token={};object={}",
            uri_escape(&self.token_label),
            uri_escape(&self.key_label)
        )
    }
}

impl fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("key_label", &self.key_label)
            .field("pin", &"<redacted>")
            .field("generate_if_missing", &self.generate_if_missing)
            .finish()
    }
}

fn uri_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A key-encryption key held in a PKCS#11 token. See the [module docs](self).
pub struct Pkcs11Kek {
    inner: Arc<Inner>,
}

struct Inner {
    kek_id: String,
    ctx: Pkcs11,
    slot: Slot,
    key_label: String,
    pin: AuthPin,
    /// The logged-in session and the KEK's handle in it; `None` after the token dropped it.
    session: Mutex<Option<(Session, ObjectHandle)>>,
}

impl fmt::Debug for Pkcs11Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Kek")
            .field("kek_id", &self.inner.kek_id)
            .finish_non_exhaustive()
    }
}

/// Modules loaded and initialised in this process, by path.
static MODULES: LazyLock<Mutex<HashMap<PathBuf, Pkcs11>>> = LazyLock::new(Default::default);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves no broken invariant here: the data is a cache.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn rv(error: &CkError) -> Option<RvError> {
    match error {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// The PKCS#11 return code or error, for messages (never carries data).
fn describe(error: &CkError) -> String {
    match error {
        CkError::Pkcs11(rv, function) => format!("{function}: {rv:?}"),
        CkError::LibraryLoading(e) => format!("cannot load the module: {e}"),
        other => other.to_string(),
    }
}

impl Inner {
    fn err_unreachable(kek_id: &str, reason: String) -> KekError {
        KekError::Unreachable {
            provider: PROVIDER.into(),
            kek_id: kek_id.into(),
            reason,
        }
    }

    /// Maps a PKCS#11 failure of an operation other than decryption.
    fn map(&self, error: &CkError) -> KekError {
        map_error(&self.kek_id, error)
    }

    /// Opens a session, logs in and finds the KEK.
    fn open(&self) -> Result<(Session, ObjectHandle), KekError> {
        let session = self
            .ctx
            .open_ro_session(self.slot)
            .map_err(|e| self.map(&e))?;
        login(&session, &self.pin).map_err(|e| self.map(&e))?;
        let key = find_key(&session, &self.key_label).map_err(|e| self.map(&e))?;
        match key.as_slice() {
            [key] => Ok((session, *key)),
            [] => Err(KekError::UnknownKek {
                provider: PROVIDER.into(),
                kek_id: self.kek_id.clone(),
            }),
            _ => Err(KekError::Config {
                provider: PROVIDER.into(),
                kek_id: self.kek_id.clone(),
                reason: format!("{} AES keys have this label", key.len()),
            }),
        }
    }

    /// Runs `op` on the logged-in session, re-opening it once if the token lost it.
    fn with_session<T>(
        &self,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, KekError>,
        lost: impl Fn(&KekError) -> bool,
    ) -> Result<T, KekError> {
        let mut slot = lock(&self.session);
        for attempt in 0..2 {
            let (session, key) = match slot.as_ref() {
                Some((session, key)) => (session, *key),
                None => {
                    let opened = self.open()?;
                    let (session, key) = slot.insert(opened);
                    (&*session, *key)
                }
            };
            match op(session, key) {
                Err(e) if attempt == 0 && lost(&e) => {
                    *slot = None;
                }
                result => return result,
            }
        }
        Err(Inner::err_unreachable(
            &self.kek_id,
            "the token dropped the session twice".into(),
        ))
    }
}

fn map_error(kek_id: &str, error: &CkError) -> KekError {
    let reason = describe(error);
    let kek_id = kek_id.to_owned();
    let provider = PROVIDER.to_owned();
    match rv(error) {
        Some(
            RvError::PinIncorrect
            | RvError::PinInvalid
            | RvError::PinLocked
            | RvError::PinExpired
            | RvError::PinLenRange,
        ) => KekError::Login {
            provider,
            kek_id,
            reason,
        },
        Some(
            RvError::KeyFunctionNotPermitted
            | RvError::KeyTypeInconsistent
            | RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::FunctionNotSupported
            | RvError::FunctionRejected
            | RvError::ActionProhibited
            | RvError::UserNotLoggedIn,
        ) => KekError::Denied {
            provider,
            kek_id,
            reason,
        },
        Some(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid) => {
            KekError::UnknownKek { provider, kek_id }
        }
        Some(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange) => {
            KekError::Unwrap { provider, kek_id }
        }
        _ => KekError::Unreachable {
            provider,
            kek_id,
            reason,
        },
    }
}

/// Session errors after which a fresh session may succeed.
fn session_lost(error: &KekError) -> bool {
    matches!(
        error,
        KekError::Unreachable { reason, .. } if reason.contains("SessionHandleInvalid")
            || reason.contains("SessionClosed")
            || reason.contains("DeviceRemoved")
            || reason.contains("TokenNotPresent")
    ) || matches!(error, KekError::UnknownKek { .. })
        || matches!(error, KekError::Denied { reason, .. } if reason.contains("UserNotLoggedIn"))
}

fn login(session: &Session, pin: &AuthPin) -> Result<(), CkError> {
    match session.login(UserType::User, Some(pin)) {
        // Logins are per application and token: another session of this process logged in.
        Err(e) if rv(&e) == Some(RvError::UserAlreadyLoggedIn) => Ok(()),
        other => other,
    }
}

fn find_key(session: &Session, label: &str) -> Result<Vec<ObjectHandle>, CkError> {
    session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ])
}

/// Loads and initialises `module` once per process.
fn module(path: &Path, kek_id: &str) -> Result<Pkcs11, KekError> {
    let mut modules = lock(&MODULES);
    if let Some(ctx) = modules.get(path) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(path).map_err(|e| {
        Inner::err_unreachable(kek_id, format!("{}: {}", path.display(), describe(&e)))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        // Another library of this process initialised the module first.
        Err(e) if rv(&e) == Some(RvError::CryptokiAlreadyInitialized) => {}
        Err(e) => return Err(map_error(kek_id, &e)),
    }
    modules.insert(path.to_owned(), ctx.clone());
    Ok(ctx)
}

fn find_slot(ctx: &Pkcs11, token_label: &str, kek_id: &str) -> Result<Slot, KekError> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| map_error(kek_id, &e))?;
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| map_error(kek_id, &e))?;
        if info.label().trim_end() == token_label {
            return Ok(slot);
        }
    }
    Err(Inner::err_unreachable(
        kek_id,
        format!("no initialised token labelled {token_label:?}"),
    ))
}

fn generate_key(
    ctx: &Pkcs11,
    slot: Slot,
    config: &Pkcs11Config,
    pin: &AuthPin,
) -> Result<(), CkError> {
    let session = ctx.open_rw_session(slot)?;
    login(&session, pin)?;
    if !find_key(&session, &config.key_label)?.is_empty() {
        return Ok(());
    }
    session.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Label(config.key_label.as_bytes().to_vec()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
        ],
    )?;
    Ok(())
}

fn blocking_failed(kek_id: &str, error: &tokio::task::JoinError) -> KekError {
    Inner::err_unreachable(
        kek_id,
        format!("the PKCS#11 call did not complete: {error}"),
    )
}

impl Pkcs11Kek {
    /// Loads the module, finds the token, logs in and finds (or, with
    /// [`generate_if_missing`](Pkcs11Config::generate_if_missing), generates) the KEK.
    ///
    /// Errors: [`KekError::Unreachable`] (module not loadable, no such token),
    /// [`KekError::Login`] (wrong or locked PIN), [`KekError::UnknownKek`] (no key with the
    /// label), [`KekError::Config`] (several keys with the label).
    pub async fn connect(config: Pkcs11Config) -> Result<Self, KekError> {
        let kek_id = config.kek_id();
        let id = kek_id.clone();
        tokio::task::spawn_blocking(move || Self::connect_blocking(config))
            .await
            .map_err(|e| blocking_failed(&id, &e))?
    }

    fn connect_blocking(config: Pkcs11Config) -> Result<Self, KekError> {
        let kek_id = config.kek_id();
        let ctx = module(&config.module, &kek_id)?;
        let slot = find_slot(&ctx, &config.token_label, &kek_id)?;
        let pin = AuthPin::from(config.pin.as_str());
        if config.generate_if_missing {
            generate_key(&ctx, slot, &config, &pin).map_err(|e| map_error(&kek_id, &e))?;
        }
        let inner = Inner {
            kek_id,
            ctx,
            slot,
            key_label: config.key_label.clone(),
            pin,
            session: Mutex::new(None),
        };
        let opened = inner.open()?;
        *lock(&inner.session) = Some(opened);
        Ok(Pkcs11Kek {
            inner: Arc::new(inner),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Inner) -> Result<T, KekError> + Send + 'static,
    ) -> Result<T, KekError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || op(&inner))
            .await
            .map_err(|e| blocking_failed(&self.inner.kek_id, &e))?
    }
}

impl KeyEncryptionKey for Pkcs11Kek {
    fn provider(&self) -> &str {
        PROVIDER
    }

    fn kek_id(&self) -> &str {
        &self.inner.kek_id
    }

    fn wrap_key<'a>(
        &'a self,
        key: &'a [u8; WRAPPED_KEY_LEN],
        context: &'a WrapContext,
    ) -> KekFuture<'a, WrappedKey> {
        let key = Zeroizing::new(*key);
        let aad = aad(context);
        Box::pin(self.blocking(move |inner| {
            let mut iv = [0u8; IV_LEN];
            rand::rng().fill_bytes(&mut iv);
            let sealed = inner.with_session(
                |session, kek| {
                    let mut iv = iv;
                    let params = GcmParams::new(&mut iv, &aad, (TAG_LEN as u64 * 8).into())
                        .map_err(|e| inner.map(&e))?;
                    session
                        .encrypt(&Mechanism::AesGcm(params), kek, key.as_slice())
                        .map_err(|e| inner.map(&e))
                },
                session_lost,
            )?;
            if sealed.len() != WRAPPED_KEY_LEN + TAG_LEN {
                return Err(KekError::Denied {
                    provider: PROVIDER.into(),
                    kek_id: inner.kek_id.clone(),
                    reason: format!("AES-GCM returned {} bytes, not 48", sealed.len()),
                });
            }
            let mut out = Vec::with_capacity(WRAPPED_LEN);
            out.push(FORMAT_V1);
            out.extend_from_slice(&iv);
            out.extend_from_slice(&sealed);
            Ok(WrappedKey::from_bytes(out))
        }))
    }

    fn unwrap_key<'a>(
        &'a self,
        wrapped: &'a WrappedKey,
        context: &'a WrapContext,
    ) -> KekFuture<'a, Zeroizing<[u8; WRAPPED_KEY_LEN]>> {
        let bytes = wrapped.as_bytes().to_vec();
        let aad = aad(context);
        Box::pin(self.blocking(move |inner| {
            let tampered = || KekError::Unwrap {
                provider: PROVIDER.into(),
                kek_id: inner.kek_id.clone(),
            };
            if bytes.len() != WRAPPED_LEN || bytes[0] != FORMAT_V1 {
                return Err(tampered());
            }
            let (iv, sealed) = bytes[1..].split_at(IV_LEN);
            let plain = inner.with_session(
                |session, kek| {
                    let mut iv: [u8; IV_LEN] = iv.try_into().map_err(|_| tampered())?;
                    let params = GcmParams::new(&mut iv, &aad, (TAG_LEN as u64 * 8).into())
                        .map_err(|e| inner.map(&e))?;
                    session
                        .decrypt(&Mechanism::AesGcm(params), kek, sealed)
                        .map(Zeroizing::new)
                        .map_err(|e| match rv(&e) {
                            // SoftHSM2 2.6 reports a failed GCM tag check as
                            // CKR_GENERAL_ERROR (HSMs: CKR_ENCRYPTED_DATA_INVALID). A
                            // decryption that starts and then fails is taken as a bad input.
                            Some(RvError::FunctionFailed | RvError::GeneralError) => tampered(),
                            _ => inner.map(&e),
                        })
                },
                session_lost,
            )?;
            let key: [u8; WRAPPED_KEY_LEN] = plain.as_slice().try_into().map_err(|_| tampered())?;
            Ok(Zeroizing::new(key))
        }))
    }
}

fn aad(context: &WrapContext) -> Vec<u8> {
    let mut aad = vec![FORMAT_V1];
    aad.extend_from_slice(&context.associated_data());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kek_pkcs11_config_debug_redacts_pin_and_id_is_a_uri() {
        let config = Pkcs11Config::new("/x.so", "clinic a", "kek;1", "s3cret-pin");
        assert!(!format!("{config:?}").contains("s3cret"));
        assert_eq!(config.kek_id(), "pkcs11:token=clinic%20a;object=kek%3B1");
    }

    #[test]
    fn kek_pkcs11_missing_module_is_unreachable() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let config = Pkcs11Config::new("/nonexistent/libnothing.so", "t", "k", "1234");
        let err = rt.block_on(Pkcs11Kek::connect(config)).unwrap_err();
        assert!(matches!(err, KekError::Unreachable { .. }), "{err}");
        assert_eq!(err.provider(), "pkcs11");
        assert!(err.to_string().contains("pkcs11:token=t;object=k"), "{err}");
    }
}
