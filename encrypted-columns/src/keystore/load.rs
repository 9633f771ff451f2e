//! Loading a scope's keys through a KEK into a [`Keyring`]: every unwrap of a load issued at
//! once, each key checked against its check value before the keyring holds it.

use std::future::poll_fn;
use std::task::Poll;

use sea_orm::ConnectionTrait;
use zeroize::Zeroizing;

use super::error::KeyStoreError;
use super::row::{KeyState, Row};
use super::store::KeyStore;
use crate::kek::{KekError, KekFuture, KeyEncryptionKey, WRAPPED_KEY_LEN};
use crate::keyring::{KeyId, KeyPurpose, Keyring, check_value};

impl KeyStore {
    /// The scope's active and decrypt-only keys, unwrapped by `kek`, as a [`Keyring`].
    ///
    /// Fails, naming the keys concerned, when a key is wrapped by another provider or KEK id
    /// (or is an environment key) ([`KeyStoreError::OtherKek`]), does not unwrap
    /// ([`KeyStoreError::KeyKek`]), unwraps to a key whose check value differs
    /// ([`KeyStoreError::CheckValueMismatch`]), or when a purpose has no or several active
    /// keys. Blind-index keys are optional; an encryption key is not.
    pub async fn load<C: ConnectionTrait>(
        &self,
        db: &C,
        kek: &dyn KeyEncryptionKey,
    ) -> Result<Keyring, KeyStoreError> {
        let rows: Vec<Row> = self
            .read_all(db)
            .await?
            .into_iter()
            .filter(|r| r.meta.state != KeyState::Retired)
            .collect();
        let foreign: Vec<String> = rows
            .iter()
            .filter(|r| !r.under(kek.provider(), kek.kek_id()))
            .map(|r| {
                format!(
                    "{} ({} {})",
                    r.meta.label(),
                    r.meta.provider,
                    r.meta.kek_id.as_deref().unwrap_or("-")
                )
            })
            .collect();
        if !foreign.is_empty() {
            return Err(KeyStoreError::OtherKek {
                scope: self.scope().to_owned(),
                provider: kek.provider().to_owned(),
                kek_id: kek.kek_id().to_owned(),
                keys: foreign,
            });
        }
        let contexts: Vec<_> = rows
            .iter()
            .map(|r| self.context(r.meta.purpose, r.meta.key_id))
            .collect();
        let mut unwraps = Vec::with_capacity(rows.len());
        for (row, ctx) in rows.iter().zip(&contexts) {
            if let Some(wrapped) = &row.wrapped_key {
                unwraps.push(kek.unwrap_key(wrapped, ctx));
            }
        }
        let keys = join_all(unwraps).await;

        let mut ring: Option<Keyring> = None;
        let mut pending_encryption = Vec::new();
        let mut blind = Vec::new();
        for (row, key) in rows.iter().zip(keys) {
            let (purpose, id) = (row.meta.purpose, row.meta.key_id);
            let key = key.map_err(|source| KeyStoreError::KeyKek {
                scope: self.scope().to_owned(),
                purpose,
                key_id: id.0,
                source,
            })?;
            if check_value(purpose, id, &key) != row.meta.check_value {
                return Err(KeyStoreError::CheckValueMismatch {
                    scope: self.scope().to_owned(),
                    purpose,
                    key_id: id.0,
                });
            }
            match purpose {
                KeyPurpose::Encryption => pending_encryption.push((id, key)),
                _ => blind.push((id, key)),
            }
        }
        let active_of = |purpose: KeyPurpose| -> Result<Option<KeyId>, KeyStoreError> {
            let active: Vec<u32> = rows
                .iter()
                .filter(|r| r.meta.purpose == purpose && r.meta.state == KeyState::Active)
                .map(|r| r.meta.key_id.0)
                .collect();
            match active.as_slice() {
                [] => Ok(None),
                [one] => Ok(Some(KeyId(*one))),
                _ => Err(KeyStoreError::TwoActiveKeys {
                    scope: self.scope().to_owned(),
                    purpose,
                    key_ids: active,
                }),
            }
        };
        let active = active_of(KeyPurpose::Encryption)?.ok_or(KeyStoreError::NoActiveKey {
            scope: self.scope().to_owned(),
            purpose: KeyPurpose::Encryption,
        })?;
        let active_blind = active_of(KeyPurpose::BlindIndex)?;
        if active_blind.is_none() && !blind.is_empty() {
            return Err(KeyStoreError::NoActiveKey {
                scope: self.scope().to_owned(),
                purpose: KeyPurpose::BlindIndex,
            });
        }
        let refused = |e: crate::Error| KeyStoreError::Keyring {
            scope: self.scope().to_owned(),
            reason: e.to_string(),
        };
        for (id, key) in &pending_encryption {
            match ring.as_mut() {
                None => ring = Some(Keyring::new(*id, **key)),
                Some(r) => r.add_key(*id, **key).map_err(refused)?,
            }
        }
        let mut ring = ring.ok_or(KeyStoreError::NoActiveKey {
            scope: self.scope().to_owned(),
            purpose: KeyPurpose::Encryption,
        })?;
        ring.promote(active).map_err(refused)?;
        for (id, key) in &blind {
            ring.add_blind_index_key(*id, **key).map_err(refused)?;
        }
        if let Some(id) = active_blind {
            ring.promote_blind_index_key(id).map_err(refused)?;
        }
        Ok(ring)
    }
}

type Unwrapped = Result<Zeroizing<[u8; WRAPPED_KEY_LEN]>, KekError>;

/// Drives every future at once and returns their outputs in order: a load's unwraps overlap
/// (one round trip's latency for a remote KMS, not one per key). A hand-written join keeps the
/// crate free of a futures dependency.
pub(super) async fn join_all(
    mut futures: Vec<KekFuture<'_, Zeroizing<[u8; 32]>>>,
) -> Vec<Unwrapped> {
    let mut done: Vec<Option<Unwrapped>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in futures.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(out) => *slot = Some(out),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}
