//! A KEK backed by the application keyring: wrapped keys are ordinary column envelopes.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::{KekError, KekFuture, KeyEncryptionKey, WRAPPED_KEY_LEN, WrapContext, WrappedKey};
use crate::context::Context;
use crate::error::Error;
use crate::keyring::Keyring;

const PROVIDER: &str = "keyring";

/// A [`KeyEncryptionKey`] that seals keys as envelopes with a [`Keyring`]'s active key under
/// one (table, column) context: exactly the bytes an `EncryptedBytes` column of that table
/// and column holds, so tables of keys written that way before key-store providers existed
/// keep working unchanged. Provider `"keyring"`, KEK id `"table.column"`.
///
/// What it binds: the envelope's associated data is the table and column, so a wrapped key
/// moved to another column fails to unwrap. It does **not** bind the [`WrapContext`]'s key
/// id, purpose or subject (the envelope format has no room for them): a wrapped key copied to
/// another row of the same column still unwraps. Subject-key tables close that gap with the
/// key check value stored beside each key ([`crate::subject_keys`]), which is computed with
/// the row's key id.
///
/// Rotating the keyring re-encrypts these rows like any other column (the envelope header
/// names the keyring key that sealed it); until then, every keyring key that sealed one must
/// stay loaded, and a backup holding a wrapped key opens with the keyring key that sealed it.
///
/// ```
/// use std::sync::Arc;
/// use encrypted_columns::{Context, Keyring};
/// use encrypted_columns::kek::{KeyEncryptionKey, KeyringKek, WrapContext};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ring = Arc::new(Keyring::generate());
/// let kek = KeyringKek::new(Arc::clone(&ring), "tenant_keys", "wrapped_key")?;
/// let ctx = WrapContext::new(0x8000_0001, "subject", "tenant_keys");
/// let wrapped = kek.wrap_key(&[4u8; 32], &ctx).await?;
/// // An ordinary envelope of tenant_keys.wrapped_key:
/// let opened = ring.open(Context::new("tenant_keys", "wrapped_key"), wrapped.as_bytes())?;
/// assert_eq!(opened.as_slice(), &[4u8; 32]);
/// assert_eq!(*kek.unwrap_key(&wrapped, &ctx).await?, [4u8; 32]);
/// assert_eq!((kek.provider(), kek.kek_id()), ("keyring", "tenant_keys.wrapped_key"));
/// # Ok(()) }
/// ```
pub struct KeyringKek {
    keyring: Arc<Keyring>,
    context: Context,
    kek_id: String,
}

impl KeyringKek {
    /// Wraps with `keyring` as envelopes of `table`.`column`. Fails if the names cannot be a
    /// column context (empty, or too long to length-prefix).
    pub fn new(keyring: Arc<Keyring>, table: &str, column: &str) -> Result<Self, Error> {
        // A bounded set of names (one per key table), so interning them is fine.
        let context = Context::intern(table, column)?;
        Ok(KeyringKek {
            keyring,
            context,
            kek_id: format!("{table}.{column}"),
        })
    }

    /// Like [`new`](Self::new) with a context already built (e.g. a `column_context!`
    /// marker's). Names that cannot be a context fail at the first wrap or unwrap.
    pub fn for_context(keyring: Arc<Keyring>, context: Context) -> Self {
        KeyringKek {
            keyring,
            context,
            kek_id: format!("{}.{}", context.table(), context.column()),
        }
    }

    /// The keyring.
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    fn error(&self, err: &Error) -> KekError {
        match err {
            Error::UnknownKeyId { id } => KekError::UnknownKek {
                provider: PROVIDER.into(),
                // The keyring's own words, so operators meet the message they know.
                kek_id: format!("{} (key id {id} is not in the keyring)", self.kek_id),
            },
            _ => KekError::Unwrap {
                provider: PROVIDER.into(),
                kek_id: self.kek_id.clone(),
            },
        }
    }
}

impl fmt::Debug for KeyringKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyringKek")
            .field("kek_id", &self.kek_id)
            .field("active_key", &self.keyring.active_key_id())
            .finish_non_exhaustive()
    }
}

impl KeyEncryptionKey for KeyringKek {
    fn provider(&self) -> &str {
        PROVIDER
    }

    fn kek_id(&self) -> &str {
        &self.kek_id
    }

    fn wrap_key<'a>(
        &'a self,
        key: &'a [u8; WRAPPED_KEY_LEN],
        _context: &'a WrapContext,
    ) -> KekFuture<'a, WrappedKey> {
        Box::pin(async move {
            self.keyring
                .seal(self.context, key)
                .map(WrappedKey::from_bytes)
                .map_err(|e| match e {
                    Error::UnknownKeyId { .. } => self.error(&e),
                    _ => KekError::Denied {
                        provider: PROVIDER.into(),
                        kek_id: self.kek_id.clone(),
                        reason: "the keyring refused to seal".into(),
                    },
                })
        })
    }

    fn unwrap_key<'a>(
        &'a self,
        wrapped: &'a WrappedKey,
        _context: &'a WrapContext,
    ) -> KekFuture<'a, Zeroizing<[u8; WRAPPED_KEY_LEN]>> {
        Box::pin(async move {
            let opened = self
                .keyring
                .open(self.context, wrapped.as_bytes())
                .map_err(|e| self.error(&e))?;
            let mut key = Zeroizing::new([0u8; WRAPPED_KEY_LEN]);
            if opened.len() != WRAPPED_KEY_LEN {
                return Err(KekError::Unwrap {
                    provider: PROVIDER.into(),
                    kek_id: self.kek_id.clone(),
                });
            }
            key.copy_from_slice(&opened);
            Ok(key)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn keyring_kek_binds_the_column_and_names_a_missing_keyring_key() {
        let ring = Arc::new(Keyring::generate());
        let kek = KeyringKek::new(Arc::clone(&ring), "t", "wrapped_key").unwrap();
        let ctx = WrapContext::new(1, "subject", "t");
        let wrapped = block_on(kek.wrap_key(&[9u8; 32], &ctx)).unwrap();
        let other = KeyringKek::new(Arc::clone(&ring), "t", "other").unwrap();
        assert!(matches!(
            block_on(other.unwrap_key(&wrapped, &ctx)),
            Err(KekError::Unwrap { .. })
        ));
        let stranger = KeyringKek::new(
            Arc::new(Keyring::new(crate::KeyId(2), [1u8; 32])),
            "t",
            "wrapped_key",
        )
        .unwrap();
        let err = block_on(stranger.unwrap_key(&wrapped, &ctx)).unwrap_err();
        assert!(matches!(err, KekError::UnknownKek { .. }), "{err}");
        assert!(
            err.to_string().contains("key id 1 is not in the keyring"),
            "{err}"
        );
        // A 16-byte plaintext in the right column is not a key.
        let short = WrappedKey::from_bytes(ring.seal(kek.context, &[1u8; 16]).unwrap());
        assert!(block_on(kek.unwrap_key(&short, &ctx)).is_err());
        assert!(!format!("{kek:?}").contains("9, 9"));
    }
}
