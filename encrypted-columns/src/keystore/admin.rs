//! Creating keys under a KEK, promoting and retiring them. Each change re-checks its
//! precondition inside its own transaction, with a locking read of the row it changes.

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, TransactionSession, TransactionTrait};

use super::error::KeyStoreError;
use super::row::{KeyState, NewRow, StoredKey};
use super::schema::a;
use super::store::KeyStore;
use crate::kek::KeyEncryptionKey;
use crate::keyring::{KeyId, KeyPurpose, check_value};

/// Attempts at finding a free id when other processes create keys at the same moment.
const CREATE_ATTEMPTS: usize = 5;

impl KeyStore {
    /// Creates a key for `purpose` under `kek`: the next free id of the purpose (blind-index
    /// ids 1 to 255), a fresh key from [`KeyEncryptionKey::generate_key`] bound to (id,
    /// purpose, scope), stored wrapped with its check value.
    ///
    /// `state` [`KeyState::Active`] is refused while another key of the purpose is active
    /// ([`KeyStoreError::ActiveKeyExists`]): create the next key decrypt-only, deploy it, then
    /// [`promote`](Self::promote) it.
    pub async fn create_key<C>(
        &self,
        db: &C,
        kek: &dyn KeyEncryptionKey,
        purpose: KeyPurpose,
        state: KeyState,
    ) -> Result<StoredKey, KeyStoreError>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        if purpose == KeyPurpose::Subject {
            return Err(KeyStoreError::UnsupportedPurpose { purpose });
        }
        for _ in 0..CREATE_ATTEMPTS {
            let rows = self.read_all(db).await?;
            let of_purpose = || rows.iter().filter(|r| r.meta.purpose == purpose);
            let next = of_purpose()
                .map(|r| u64::from(r.meta.key_id.0) + 1)
                .max()
                .unwrap_or(1);
            let limit = match purpose {
                KeyPurpose::BlindIndex => 255,
                _ => u64::from(u32::MAX),
            };
            let id = match u32::try_from(next) {
                Ok(id) if next <= limit => KeyId(id),
                _ => {
                    return Err(KeyStoreError::NoFreeKeyId {
                        scope: self.scope().to_owned(),
                        purpose,
                    });
                }
            };
            let (key, wrapped) = kek.generate_key(&self.context(purpose, id)).await?;
            let kcv = check_value(purpose, id, &key);
            drop(key);

            let txn = db.begin().await?;
            if state == KeyState::Active
                && let Some(active) = self.active_ids(&txn, purpose).await?.first()
            {
                return Err(KeyStoreError::ActiveKeyExists {
                    scope: self.scope().to_owned(),
                    purpose,
                    key_id: *active,
                });
            }
            self.insert_if_free(
                &txn,
                NewRow {
                    purpose,
                    id,
                    state,
                    provider: kek.provider(),
                    wrapping: Some((kek.kek_id(), &wrapped)),
                    check_value: &kcv,
                },
            )
            .await?;
            // Ours only if the row now holds our wrapping: another process may have taken the id.
            let row = self.read_one(&txn, purpose, id, true).await?;
            if let Some(row) = row
                && row.wrapped_key.as_ref() == Some(&wrapped)
            {
                if state == KeyState::Active {
                    self.exactly_one_active(&txn, purpose, id).await?;
                }
                txn.commit().await?;
                return Ok(row.meta);
            }
            txn.rollback().await?;
        }
        Err(KeyStoreError::NoFreeKeyId {
            scope: self.scope().to_owned(),
            purpose,
        })
    }

    /// Makes key `id` the active key of `purpose`; the key active until now becomes
    /// decrypt-only, in the same transaction. Promoting the active key again does nothing.
    /// Refused for an unknown or retired key.
    pub async fn promote<C>(
        &self,
        db: &C,
        purpose: KeyPurpose,
        id: KeyId,
    ) -> Result<StoredKey, KeyStoreError>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        let txn = db.begin().await?;
        let row = self.locked_row(&txn, purpose, id).await?;
        match row.state {
            KeyState::Retired => return Err(self.err_retired(purpose, id)),
            KeyState::Active => {
                self.exactly_one_active(&txn, purpose, id).await?;
                txn.commit().await?;
                return Ok(row);
            }
            KeyState::DecryptOnly => {}
        }
        // One statement moves both: the old active (whichever it is by now) and the new one.
        let update = Query::update()
            .table(self.t())
            .value(
                a("state"),
                Expr::case(
                    Expr::col(a("key_id")).eq(i64::from(id.0)),
                    KeyState::Active.as_str(),
                )
                .finally(KeyState::DecryptOnly.as_str()),
            )
            .value(a("updated_at"), Expr::current_timestamp())
            .and_where(Expr::col(a("scope")).eq(self.scope()))
            .and_where(Expr::col(a("purpose")).eq(purpose.as_str()))
            .and_where(
                Expr::col(a("state"))
                    .eq(KeyState::Active.as_str())
                    .or(Expr::col(a("key_id"))
                        .eq(i64::from(id.0))
                        .and(Expr::col(a("state")).eq(KeyState::DecryptOnly.as_str()))),
            )
            .to_owned();
        txn.execute(&update).await?;
        // A concurrent promotion of another key may have committed meanwhile: refuse rather
        // than leave two active keys.
        self.exactly_one_active(&txn, purpose, id).await?;
        let row = self.locked_row(&txn, purpose, id).await?;
        txn.commit().await?;
        Ok(row)
    }

    /// Retires key `id` of `purpose`: kept in the table, no longer loaded. Refused for the
    /// active key ([`KeyStoreError::KeyIsActive`]); retiring a retired key does nothing.
    pub async fn retire<C>(
        &self,
        db: &C,
        purpose: KeyPurpose,
        id: KeyId,
    ) -> Result<StoredKey, KeyStoreError>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        let txn = db.begin().await?;
        let row = self.locked_row(&txn, purpose, id).await?;
        match row.state {
            KeyState::Active => {
                return Err(KeyStoreError::KeyIsActive {
                    scope: self.scope().to_owned(),
                    purpose,
                    key_id: id.0,
                });
            }
            KeyState::Retired => {
                txn.commit().await?;
                return Ok(row);
            }
            KeyState::DecryptOnly => {}
        }
        // Compare-and-set on the state read under the lock.
        let update = Query::update()
            .table(self.t())
            .value(a("state"), KeyState::Retired.as_str())
            .value(a("updated_at"), Expr::current_timestamp())
            .and_where(Expr::col(a("scope")).eq(self.scope()))
            .and_where(Expr::col(a("purpose")).eq(purpose.as_str()))
            .and_where(Expr::col(a("key_id")).eq(i64::from(id.0)))
            .and_where(Expr::col(a("state")).eq(KeyState::DecryptOnly.as_str()))
            .to_owned();
        txn.execute(&update).await?;
        let row = self.locked_row(&txn, purpose, id).await?;
        if row.state != KeyState::Retired {
            return Err(KeyStoreError::KeyIsActive {
                scope: self.scope().to_owned(),
                purpose,
                key_id: id.0,
            });
        }
        txn.commit().await?;
        Ok(row)
    }

    async fn locked_row<C: ConnectionTrait>(
        &self,
        db: &C,
        purpose: KeyPurpose,
        id: KeyId,
    ) -> Result<StoredKey, KeyStoreError> {
        if purpose == KeyPurpose::Subject {
            return Err(KeyStoreError::UnsupportedPurpose { purpose });
        }
        self.read_one(db, purpose, id, true)
            .await?
            .map(|r| r.meta)
            .ok_or_else(|| KeyStoreError::UnknownKey {
                scope: self.scope().to_owned(),
                purpose,
                key_id: id.0,
            })
    }

    async fn exactly_one_active<C: ConnectionTrait>(
        &self,
        db: &C,
        purpose: KeyPurpose,
        id: KeyId,
    ) -> Result<(), KeyStoreError> {
        let active = self.active_ids(db, purpose).await?;
        if active == [id.0] {
            Ok(())
        } else if active.is_empty() {
            Err(KeyStoreError::NoActiveKey {
                scope: self.scope().to_owned(),
                purpose,
            })
        } else {
            Err(KeyStoreError::TwoActiveKeys {
                scope: self.scope().to_owned(),
                purpose,
                key_ids: active,
            })
        }
    }

    fn err_retired(&self, purpose: KeyPurpose, id: KeyId) -> KeyStoreError {
        KeyStoreError::KeyIsRetired {
            scope: self.scope().to_owned(),
            purpose,
            key_id: id.0,
        }
    }
}
