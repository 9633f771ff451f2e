//! Key-encryption keys (KEKs): providers that wrap and unwrap a 32-byte root key.
//!
//! A [`KeyEncryptionKey`] keeps the root keys of a [`Keyring`](crate::Keyring) encrypted at
//! rest: the application stores only [`WrappedKey`]s and asks the provider to unwrap them at
//! start-up and on cache misses, never per row. Each wrap is bound to a [`WrapContext`] (key id,
//! purpose, subject): a wrapped key moved to another key id, purpose or subject does not unwrap.
//!
//! Providers:
//!
//! - [`StaticKek`]: a 32-byte KEK held in memory, wrapping with XAES-256-GCM (the crate's
//!   column AEAD). Zero configuration; for tests, development, and deployments whose KEK comes
//!   from a secret store as bytes.
//! - [`KeyringKek`]: the application [`Keyring`](crate::Keyring) itself, wrapping as column
//!   envelopes: the format of key tables written before providers existed.
//! - `pkcs11::Pkcs11Kek` (feature `pkcs11`): a non-extractable AES-256 key inside a PKCS#11
//!   token (SoftHSM2, Thales Luna, AWS CloudHSM, YubiHSM); the KEK never leaves the token.
//! - `aws_kms::AwsKmsKek` (feature `aws-kms`): a symmetric key in AWS KMS (or a KMS-compatible
//!   endpoint); the KEK never leaves KMS, and KEK rotation between two KMS keys is `ReEncrypt`.
//!
//! # Why boxed futures
//!
//! KMS and HSM calls are I/O, so the methods are asynchronous. `async fn` in a trait is stable
//! but makes the trait unusable as `dyn KeyEncryptionKey`, and applications choose their
//! provider from configuration at run time: they hold an `Arc<dyn KeyEncryptionKey>`. The
//! methods therefore return a [`KekFuture`] (a pinned, boxed, `Send` future). The one allocation
//! per call is irrelevant at start-up and cache-miss frequency. Implementations write
//! `Box::pin(async move { ... })`.
//!
//! ```
//! use std::sync::Arc;
//! use encrypted_columns::kek::{KeyEncryptionKey, StaticKek, WrapContext};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), encrypted_columns::kek::KekError> {
//! let kek: Arc<dyn KeyEncryptionKey> = Arc::new(StaticKek::generate("dev-kek"));
//! let root_key = [7u8; 32];
//! let ctx = WrapContext::new(1, "encryption", "clinic");
//! let wrapped = kek.wrap_key(&root_key, &ctx).await?;
//! assert_eq!(*kek.unwrap_key(&wrapped, &ctx).await?, root_key);
//! // Bound to its context: the same bytes as key 2 do not unwrap.
//! assert!(kek.unwrap_key(&wrapped, &WrapContext::new(2, "encryption", "clinic")).await.is_err());
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use rand::Rng as _;
use xaes_256_gcm::aead::{AeadInOut, KeyInit};
use xaes_256_gcm::{Nonce, Tag, Xaes256Gcm};
use zeroize::Zeroizing;

#[cfg(feature = "aws-kms")]
pub mod aws_kms;
mod keyring_kek;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;

pub use keyring_kek::KeyringKek;

/// Length of the keys a KEK wraps (a keyring root key).
pub const WRAPPED_KEY_LEN: usize = 32;

/// The future a [`KeyEncryptionKey`] method returns.
pub type KekFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KekError>> + Send + 'a>>;

/// A key-encryption key: wraps and unwraps 32-byte keys, bound to a [`WrapContext`].
///
/// Object safe: hold it as `Arc<dyn KeyEncryptionKey>` (see the [module docs](self) for why the
/// methods return boxed futures rather than being `async fn`).
pub trait KeyEncryptionKey: Send + Sync + fmt::Debug {
    /// The provider's name for status output and errors, e.g. `"static"` or `"pkcs11"`.
    fn provider(&self) -> &str;

    /// Which KEK of the provider this is, for status output and errors (never secret).
    fn kek_id(&self) -> &str;

    /// Encrypts `key` under the KEK, binding `context` where the provider supports it.
    fn wrap_key<'a>(
        &'a self,
        key: &'a [u8; WRAPPED_KEY_LEN],
        context: &'a WrapContext,
    ) -> KekFuture<'a, WrappedKey>;

    /// Decrypts a key wrapped by [`wrap_key`](Self::wrap_key) with the same `context`.
    ///
    /// A modified wrapped key, another context or another KEK give [`KekError::Unwrap`].
    fn unwrap_key<'a>(
        &'a self,
        wrapped: &'a WrappedKey,
        context: &'a WrapContext,
    ) -> KekFuture<'a, Zeroizing<[u8; WRAPPED_KEY_LEN]>>;

    /// This KEK as [`Any`](std::any::Any), so a provider can recognise a KEK of its own type
    /// behind a `&dyn KeyEncryptionKey` — a KMS re-encrypting to another of its keys without
    /// releasing the key ([`rewrap_key`](Self::rewrap_key)). `None` by default; a wrapper that
    /// forwards every call to an inner KEK may forward this too.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// A fresh random 32-byte key and its wrapping under this KEK, bound to `context`.
    ///
    /// The default draws the key from the operating system's CSPRNG and calls
    /// [`wrap_key`](Self::wrap_key); providers that generate keys themselves (a KMS's
    /// `GenerateDataKey`) override it.
    fn generate_key<'a>(
        &'a self,
        context: &'a WrapContext,
    ) -> KekFuture<'a, (Zeroizing<[u8; WRAPPED_KEY_LEN]>, WrappedKey)> {
        Box::pin(async move {
            let mut key = Zeroizing::new([0u8; WRAPPED_KEY_LEN]);
            rand::rng().fill_bytes(key.as_mut_slice());
            let wrapped = self.wrap_key(&key, context).await?;
            Ok((key, wrapped))
        })
    }

    /// Re-wraps a key wrapped by this KEK under `to` (another KEK of this provider or of any
    /// other), with the same `context`: KEK rotation, which never touches data.
    ///
    /// The default unwraps here and wraps with `to`, so the key passes through this process's
    /// memory (wiped afterwards); providers that can re-encrypt without releasing the key (a
    /// KMS's `ReEncrypt`) override it for their own destinations.
    fn rewrap_key<'a>(
        &'a self,
        wrapped: &'a WrappedKey,
        context: &'a WrapContext,
        to: &'a dyn KeyEncryptionKey,
    ) -> KekFuture<'a, WrappedKey> {
        Box::pin(async move {
            let key = self.unwrap_key(wrapped, context).await?;
            to.wrap_key(&key, context).await
        })
    }
}

/// What a wrapped key is bound to: its key id, purpose and subject.
///
/// Providers with authenticated encryption bind [`associated_data`](Self::associated_data) as
/// AAD, so a wrapped key copied to another key id, purpose (encryption, blind index) or subject
/// (application, tenant) fails to unwrap instead of being used in the wrong place.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WrapContext {
    key_id: u32,
    purpose: String,
    subject: String,
}

impl WrapContext {
    /// A context for key `key_id` used for `purpose` (e.g. `"encryption"`, `"blind-index"`) by
    /// `subject` (e.g. an application or tenant name).
    pub fn new(key_id: u32, purpose: impl Into<String>, subject: impl Into<String>) -> Self {
        WrapContext {
            key_id,
            purpose: purpose.into(),
            subject: subject.into(),
        }
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The purpose.
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    /// The subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The bytes bound as associated data: a domain label, then the key id (u32 big-endian),
    /// then purpose and subject, each with a u32 big-endian length prefix (unambiguous for any
    /// lengths).
    pub fn associated_data(&self) -> Vec<u8> {
        const LABEL: &[u8] = b"encrypted-columns/kek/v1";
        let mut aad =
            Vec::with_capacity(LABEL.len() + 12 + self.purpose.len() + self.subject.len());
        aad.extend_from_slice(LABEL);
        aad.extend_from_slice(&self.key_id.to_be_bytes());
        for part in [self.purpose.as_bytes(), self.subject.as_bytes()] {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            aad.extend_from_slice(&len.to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad
    }
}

impl From<crate::KeyId> for WrapContext {
    /// Key `id` for purpose `"encryption"` with an empty subject.
    fn from(id: crate::KeyId) -> Self {
        WrapContext::new(id.0, "encryption", "")
    }
}

/// A key wrapped by a [`KeyEncryptionKey`]: opaque bytes, safe to store next to the data.
///
/// The layout is the provider's (each documents its own); it holds no key material in the
/// clear. Base64 in [`Display`](fmt::Display) and [`WrappedKey::from_base64`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WrappedKey(Vec<u8>);

impl WrappedKey {
    /// Wraps stored bytes (no check: a malformed value fails at unwrap).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        WrappedKey(bytes.into())
    }

    /// The stored bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Parses the standard base64 of [`Display`](fmt::Display).
    pub fn from_base64(text: &str) -> Option<Self> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .map(WrappedKey)
    }
}

impl fmt::Display for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use base64::Engine as _;
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WrappedKey({} bytes)", self.0.len())
    }
}

/// Why a KEK operation failed. Every variant names the provider and KEK id; none holds key
/// bytes, wrapped or not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KekError {
    /// The provider could not be reached: module not loadable, token absent, network down.
    #[error("KEK provider {provider} ({kek_id}) is unreachable: {reason}")]
    Unreachable {
        /// The provider's name.
        provider: String,
        /// The KEK id.
        kek_id: String,
        /// What failed (no secrets).
        reason: String,
    },
    /// The provider refused the credentials (wrong PIN, locked PIN).
    #[error("KEK provider {provider} ({kek_id}) refused the login: {reason}")]
    Login {
        /// The provider's name.
        provider: String,
        /// The KEK id.
        kek_id: String,
        /// What the provider said (no secrets).
        reason: String,
    },
    /// The provider has no such KEK.
    #[error("KEK provider {provider} has no key-encryption key {kek_id}")]
    UnknownKek {
        /// The provider's name.
        provider: String,
        /// The KEK id.
        kek_id: String,
    },
    /// The provider denied the operation (key usage or policy forbids it).
    #[error("KEK provider {provider} ({kek_id}) denied the operation: {reason}")]
    Denied {
        /// The provider's name.
        provider: String,
        /// The KEK id.
        kek_id: String,
        /// What the provider said.
        reason: String,
    },
    /// The wrapped key did not unwrap: modified, truncated, wrapped under another KEK, or
    /// bound to another context.
    #[error(
        "KEK provider {provider} ({kek_id}) cannot unwrap the key: it was modified, or wrapped \
         under another KEK or for another key id, purpose or subject"
    )]
    Unwrap {
        /// The provider's name.
        provider: String,
        /// The KEK id.
        kek_id: String,
    },
    /// The provider's configuration is invalid or incomplete.
    #[error("KEK provider {provider} ({kek_id}) is misconfigured: {reason}")]
    Config {
        /// The provider's name.
        provider: String,
        /// The KEK id.
        kek_id: String,
        /// What is wrong.
        reason: String,
    },
}

impl KekError {
    /// The provider named by the error.
    pub fn provider(&self) -> &str {
        match self {
            KekError::Unreachable { provider, .. }
            | KekError::Login { provider, .. }
            | KekError::UnknownKek { provider, .. }
            | KekError::Denied { provider, .. }
            | KekError::Unwrap { provider, .. }
            | KekError::Config { provider, .. } => provider,
        }
    }

    /// The KEK id named by the error.
    pub fn kek_id(&self) -> &str {
        match self {
            KekError::Unreachable { kek_id, .. }
            | KekError::Login { kek_id, .. }
            | KekError::UnknownKek { kek_id, .. }
            | KekError::Denied { kek_id, .. }
            | KekError::Unwrap { kek_id, .. }
            | KekError::Config { kek_id, .. } => kek_id,
        }
    }
}

/// Format byte of [`StaticKek`] wrapped keys.
const STATIC_FORMAT_V1: u8 = 1;
const STATIC_NONCE_LEN: usize = 24;
const STATIC_TAG_LEN: usize = 16;
const STATIC_WRAPPED_LEN: usize = 1 + STATIC_NONCE_LEN + WRAPPED_KEY_LEN + STATIC_TAG_LEN;

/// A KEK held in memory: XAES-256-GCM, the AEAD of the crate's column envelopes.
///
/// Wrapped layout (73 bytes): `0x01 || nonce (24, random) || ciphertext (32) || tag (16)`, with
/// associated data `0x01 || WrapContext::associated_data()`. The KEK's key schedule is wiped on
/// drop.
pub struct StaticKek {
    kek_id: String,
    aead: Xaes256Gcm,
}

impl StaticKek {
    /// A KEK from 32 bytes (e.g. read from a secret store), named `kek_id` in status output.
    pub fn new(kek_id: impl Into<String>, kek: &Zeroizing<[u8; WRAPPED_KEY_LEN]>) -> Self {
        StaticKek {
            kek_id: kek_id.into(),
            aead: Xaes256Gcm::new(&(**kek).into()),
        }
    }

    /// A random KEK (tests and development: wrapped keys die with the process).
    pub fn generate(kek_id: impl Into<String>) -> Self {
        let mut kek = Zeroizing::new([0u8; WRAPPED_KEY_LEN]);
        rand::rng().fill_bytes(kek.as_mut_slice());
        StaticKek::new(kek_id, &kek)
    }

    fn aad(context: &WrapContext) -> Vec<u8> {
        let mut aad = vec![STATIC_FORMAT_V1];
        aad.extend_from_slice(&context.associated_data());
        aad
    }

    fn wrap_now(
        &self,
        key: &[u8; WRAPPED_KEY_LEN],
        context: &WrapContext,
    ) -> Result<WrappedKey, KekError> {
        let mut nonce = [0u8; STATIC_NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        self.wrap_with_nonce_for_test_vectors(key, context, &nonce)
    }

    /// Wraps with a caller-chosen nonce: the code path of
    /// [`wrap_key`](KeyEncryptionKey::wrap_key) after it draws its random nonce. Only for test
    /// vectors: a repeated nonce under one KEK breaks confidentiality and authenticity.
    #[doc(hidden)]
    pub fn wrap_with_nonce_for_test_vectors(
        &self,
        key: &[u8; WRAPPED_KEY_LEN],
        context: &WrapContext,
        nonce: &[u8; STATIC_NONCE_LEN],
    ) -> Result<WrappedKey, KekError> {
        let nonce = *nonce;
        let mut out = Vec::with_capacity(STATIC_WRAPPED_LEN);
        out.push(STATIC_FORMAT_V1);
        out.extend_from_slice(&nonce);
        let mut buf = Zeroizing::new(*key);
        let tag = self
            .aead
            .encrypt_inout_detached(
                &Nonce::from(nonce),
                &Self::aad(context),
                buf.as_mut_slice().into(),
            )
            // XAES-256-GCM fails only for inputs over 2^36 bytes; 32 bytes never do.
            .map_err(|_| KekError::Denied {
                provider: "static".into(),
                kek_id: self.kek_id.clone(),
                reason: "the AEAD refused the input".into(),
            })?;
        out.extend_from_slice(buf.as_slice());
        out.extend_from_slice(tag.as_slice());
        Ok(WrappedKey(out))
    }

    fn unwrap_now(
        &self,
        wrapped: &WrappedKey,
        context: &WrapContext,
    ) -> Result<Zeroizing<[u8; WRAPPED_KEY_LEN]>, KekError> {
        let bytes = wrapped.as_bytes();
        let fail = || KekError::Unwrap {
            provider: "static".into(),
            kek_id: self.kek_id.clone(),
        };
        if bytes.len() != STATIC_WRAPPED_LEN || bytes[0] != STATIC_FORMAT_V1 {
            return Err(fail());
        }
        let (nonce, rest) = bytes[1..].split_at(STATIC_NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(WRAPPED_KEY_LEN);
        let nonce: [u8; STATIC_NONCE_LEN] = nonce.try_into().map_err(|_| fail())?;
        let tag: [u8; STATIC_TAG_LEN] = tag.try_into().map_err(|_| fail())?;
        let mut key = Zeroizing::new([0u8; WRAPPED_KEY_LEN]);
        key.copy_from_slice(ciphertext);
        self.aead
            .decrypt_inout_detached(
                &Nonce::from(nonce),
                &Self::aad(context),
                key.as_mut_slice().into(),
                &Tag::from(tag),
            )
            .map_err(|_| fail())?;
        Ok(key)
    }
}

impl fmt::Debug for StaticKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKek")
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

impl KeyEncryptionKey for StaticKek {
    fn provider(&self) -> &str {
        "static"
    }

    fn kek_id(&self) -> &str {
        &self.kek_id
    }

    fn wrap_key<'a>(
        &'a self,
        key: &'a [u8; WRAPPED_KEY_LEN],
        context: &'a WrapContext,
    ) -> KekFuture<'a, WrappedKey> {
        Box::pin(async move { self.wrap_now(key, context) })
    }

    fn unwrap_key<'a>(
        &'a self,
        wrapped: &'a WrappedKey,
        context: &'a WrapContext,
    ) -> KekFuture<'a, Zeroizing<[u8; WRAPPED_KEY_LEN]>> {
        Box::pin(async move { self.unwrap_now(wrapped, context) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn ctx() -> WrapContext {
        WrapContext::new(3, "encryption", "clinic")
    }

    #[test]
    fn kek_static_round_trips_through_dyn() {
        let kek: Arc<dyn KeyEncryptionKey> = Arc::new(StaticKek::generate("test-kek"));
        let key = [0x42u8; 32];
        let wrapped = block_on(kek.wrap_key(&key, &ctx())).unwrap();
        assert_eq!(wrapped.as_bytes().len(), STATIC_WRAPPED_LEN);
        assert!(!wrapped.as_bytes().windows(32).any(|w| w == key));
        assert_eq!(*block_on(kek.unwrap_key(&wrapped, &ctx())).unwrap(), key);
        // Random nonces: wrapping twice gives different bytes.
        let again = block_on(kek.wrap_key(&key, &ctx())).unwrap();
        assert_ne!(wrapped, again);
        assert_eq!(kek.provider(), "static");
        assert_eq!(kek.kek_id(), "test-kek");
    }

    #[test]
    fn kek_static_rejects_other_context_tampering_and_other_kek() {
        let kek = StaticKek::generate("k1");
        let key = [9u8; 32];
        let wrapped = block_on(kek.wrap_key(&key, &ctx())).unwrap();
        for other in [
            WrapContext::new(4, "encryption", "clinic"),
            WrapContext::new(3, "blind-index", "clinic"),
            WrapContext::new(3, "encryption", "other"),
        ] {
            let err = block_on(kek.unwrap_key(&wrapped, &other)).unwrap_err();
            assert!(matches!(err, KekError::Unwrap { .. }), "{err}");
        }
        for i in 0..wrapped.as_bytes().len() {
            let mut bytes = wrapped.as_bytes().to_vec();
            bytes[i] ^= 0x01;
            let err = block_on(kek.unwrap_key(&WrappedKey::from_bytes(bytes), &ctx())).unwrap_err();
            assert!(matches!(err, KekError::Unwrap { .. }));
        }
        let truncated = WrappedKey::from_bytes(&wrapped.as_bytes()[..40]);
        assert!(block_on(kek.unwrap_key(&truncated, &ctx())).is_err());
        let err = block_on(StaticKek::generate("k2").unwrap_key(&wrapped, &ctx())).unwrap_err();
        assert_eq!((err.provider(), err.kek_id()), ("static", "k2"));
        let text = err.to_string();
        assert!(text.contains("static") && text.contains("k2"), "{text}");
    }

    #[test]
    fn kek_static_same_kek_bytes_unwrap_and_base64_round_trips() {
        let bytes = Zeroizing::new([5u8; 32]);
        let a = StaticKek::new("a", &bytes);
        let b = StaticKek::new("b", &bytes);
        let wrapped = block_on(a.wrap_key(&[1u8; 32], &ctx())).unwrap();
        let parsed = WrappedKey::from_base64(&wrapped.to_string()).unwrap();
        assert_eq!(parsed, wrapped);
        assert_eq!(*block_on(b.unwrap_key(&parsed, &ctx())).unwrap(), [1u8; 32]);
        assert!(!format!("{a:?}").contains("aead"));
        assert_eq!(format!("{wrapped:?}"), "WrappedKey(73 bytes)");
    }

    #[test]
    fn kek_default_generate_and_rewrap_move_a_key_between_keks() {
        let old = StaticKek::generate("old");
        let new = StaticKek::generate("new");
        let (key, wrapped) = block_on(old.generate_key(&ctx())).unwrap();
        assert_ne!(*key, [0u8; 32]);
        assert_eq!(*block_on(old.unwrap_key(&wrapped, &ctx())).unwrap(), *key);
        let moved = block_on(old.rewrap_key(&wrapped, &ctx(), &new)).unwrap();
        assert_eq!(*block_on(new.unwrap_key(&moved, &ctx())).unwrap(), *key);
        assert!(block_on(old.unwrap_key(&moved, &ctx())).is_err());
        // A rewrap that cannot unwrap fails with the source KEK named, and wraps nothing.
        let err = block_on(new.rewrap_key(&wrapped, &ctx(), &old)).unwrap_err();
        assert_eq!((err.provider(), err.kek_id()), ("static", "new"));
    }

    #[test]
    fn kek_context_encoding_is_unambiguous() {
        let a = WrapContext::new(1, "ab", "c").associated_data();
        let b = WrapContext::new(1, "a", "bc").associated_data();
        assert_ne!(a, b);
        let from_id = WrapContext::from(crate::KeyId(7));
        assert_eq!((from_id.key_id(), from_id.purpose()), (7, "encryption"));
    }
}
