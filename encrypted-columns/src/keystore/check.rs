//! Check values of environment keys: the first process to see a key id registers the key's
//! check value; every later load compares against it, so a wrong key under a known id is
//! refused before it seals a value or computes an index value.

use sea_orm::{ConnectionTrait, TransactionSession, TransactionTrait};

use super::error::KeyStoreError;
use super::row::{KeyState, NewRow};
use super::store::{ENV_PROVIDER, KeyStore};
use crate::keyring::{CheckValue, KeyId, KeyPurpose, Keyring};

/// What [`KeyStore::check_env_keys`] did with one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKeyOutcome {
    /// The store knew the id and the check value matched.
    Checked,
    /// First sight: the key's check value was registered.
    Registered,
}

/// One key of an environment check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvKeyCheck {
    /// Encryption or blind index.
    pub purpose: KeyPurpose,
    /// The key id.
    pub key_id: KeyId,
    /// Checked or registered.
    pub outcome: EnvKeyOutcome,
}

/// What [`KeyStore::check_env_keys`] found: one entry per key of the keyring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvCheckReport {
    /// Per key, encryption keys first, ascending ids.
    pub keys: Vec<EnvKeyCheck>,
}

impl EnvCheckReport {
    /// How many keys had `outcome`.
    pub fn count(&self, outcome: EnvKeyOutcome) -> usize {
        self.keys.iter().filter(|k| k.outcome == outcome).count()
    }
}

impl KeyStore {
    /// Checks every encryption and blind-index key of `keyring` (typically loaded from the
    /// `ENCRYPTED_COLUMNS_*` variables) against the store: a known id must have the same check
    /// value; an id seen for the first time is registered (provider `"env"`, state active or
    /// decrypt-only as in the keyring).
    ///
    /// All in one transaction: a mismatch rolls it back, so a refused run registers nothing.
    /// Two processes registering the same id at once cannot both win: the primary key lets one
    /// insert through, and the other compares against it (on SQLite, whose writers take turns,
    /// the other may instead fail with the database's "locked" error; run it again).
    ///
    /// Errors: [`KeyStoreError::CheckValueMismatch`] naming the purpose and id.
    pub async fn check_env_keys<C>(
        &self,
        db: &C,
        keyring: &Keyring,
    ) -> Result<EnvCheckReport, KeyStoreError>
    where
        C: ConnectionTrait + TransactionTrait,
    {
        let mut wanted: Vec<(KeyPurpose, KeyId, KeyState)> = Vec::new();
        for id in keyring.key_ids() {
            let state = if id == keyring.active_key_id() {
                KeyState::Active
            } else {
                KeyState::DecryptOnly
            };
            wanted.push((KeyPurpose::Encryption, id, state));
        }
        for id in keyring.blind_index_key_ids() {
            let state = if Some(id) == keyring.active_blind_index_key_id() {
                KeyState::Active
            } else {
                KeyState::DecryptOnly
            };
            wanted.push((KeyPurpose::BlindIndex, id, state));
        }
        let txn = db.begin().await?;
        let mut report = EnvCheckReport::default();
        for (purpose, id, state) in wanted {
            let Some(kcv) = keyring.check_value(purpose, id) else {
                continue;
            };
            let outcome = match self.read_one(&txn, purpose, id, false).await? {
                Some(row) => {
                    self.compare(purpose, id, &row.meta.check_value, &kcv)?;
                    EnvKeyOutcome::Checked
                }
                None => {
                    let row = NewRow {
                        purpose,
                        id,
                        state,
                        provider: ENV_PROVIDER,
                        wrapping: None,
                        check_value: &kcv,
                    };
                    self.insert_if_free(&txn, row).await?;
                    // Re-read with a locking read: if another process inserted this id between
                    // our read and our insert, the insert did nothing and this sees its row.
                    let row = self.read_one(&txn, purpose, id, true).await?.ok_or(
                        KeyStoreError::UnknownKey {
                            scope: self.scope().to_owned(),
                            purpose,
                            key_id: id.0,
                        },
                    )?;
                    self.compare(purpose, id, &row.meta.check_value, &kcv)?;
                    EnvKeyOutcome::Registered
                }
            };
            report.keys.push(EnvKeyCheck {
                purpose,
                key_id: id,
                outcome,
            });
        }
        txn.commit().await?;
        Ok(report)
    }

    fn compare(
        &self,
        purpose: KeyPurpose,
        id: KeyId,
        stored: &CheckValue,
        actual: &CheckValue,
    ) -> Result<(), KeyStoreError> {
        if stored == actual {
            Ok(())
        } else {
            Err(KeyStoreError::CheckValueMismatch {
                scope: self.scope().to_owned(),
                purpose,
                key_id: id.0,
            })
        }
    }
}
