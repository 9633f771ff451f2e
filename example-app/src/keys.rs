//! Loading the keyring for the CLI, with messages a person can act on: from the
//! `ENCRYPTED_COLUMNS_*` variables, checked against the key store, or from the key store
//! through the KEK provider `CLINIC_KEK` names (`crate::kek`).

use std::sync::{Arc, OnceLock};

use encrypted_columns::kek::KeyEncryptionKey;
use encrypted_columns::keyring::{ENV_BLIND_INDEX_KEYS, ENV_KEYS, KeyPurpose, generate_key_entry};
use encrypted_columns::keystore::{KeyStore, KeyStoreError};
use encrypted_columns::{KeyId, Keyring};
use sea_orm::DatabaseConnection;

use crate::clinic::DATA_KEY_ID_BASE;

/// Where the keyring in use came from.
pub enum KeySource {
    /// Loaded from `ENCRYPTED_COLUMNS_*` variables.
    Environment,
    /// None were set: fresh keys that live only as long as this process.
    Ephemeral,
}

/// Loads keys from the environment. With `allow_ephemeral`, missing keys are replaced by fresh
/// throwaway ones (the demo); invalid keys are always an error.
pub fn load(allow_ephemeral: bool) -> Result<(Keyring, KeySource), String> {
    let set = std::env::var_os(ENV_KEYS).is_some_and(|v| !v.is_empty());
    if !set && allow_ephemeral {
        return Ok((Keyring::generate(), KeySource::Ephemeral));
    }
    let ring = Keyring::from_env().map_err(|e| format!("cannot load keys: {e}"))?;
    if let Some(id) = ring.key_ids().find(|id| id.0 >= DATA_KEY_ID_BASE) {
        return Err(format!(
            "cannot load keys: key id {id} in {ENV_KEYS} is too large; the clinic reserves ids \
             from {DATA_KEY_ID_BASE} up for patient data keys (use small ids: 1, 2, 3, …)"
        ));
    }
    if ring.active_blind_index_key_id().is_none() {
        // Checked up front: the clinic's tables have blind indexes, and failing at the first
        // insert would leave a half-set-up database behind.
        return Err(format!(
            "cannot load keys: {ENV_BLIND_INDEX_KEYS} is not set; the clinic searches encrypted \
             fields through blind indexes, which need their own key (`clinic keys generate` \
             prints one)"
        ));
    }
    Ok((ring, KeySource::Environment))
}

/// Fresh key material as environment lines, for `clinic keys generate`.
pub fn generate_env_lines() -> String {
    let keys = generate_key_entry(KeyId(1));
    let blind = generate_key_entry(KeyId(1));
    format!(
        "# Fresh keys for encrypted-columns. Keep them in your secret store: data sealed with\n\
         # them cannot be read without them.\n\
         {ENV_KEYS}={}\n{ENV_BLIND_INDEX_KEYS}={}\n",
        keys.as_str(),
        blind.as_str()
    )
}

/// The key-store scope of the clinic's keys (also the subject their wrappings are bound to).
pub const KEY_STORE_SCOPE: &str = "clinic";

/// The clinic's scope of the key store.
pub fn store() -> KeyStore {
    KeyStore::new(KEY_STORE_SCOPE)
}

/// Where a command's keys come from, settled before the database is opened so a missing or
/// invalid setting fails before anything is touched.
pub enum Source {
    /// `ENCRYPTED_COLUMNS_*` (checked against the store once connected).
    Environment(Keyring),
    /// The key store, unwrapped by this KEK.
    Kek(Arc<dyn KeyEncryptionKey>),
}

/// Reads the configured key source: the KEK provider if `CLINIC_KEK` names one (connected
/// here: a PKCS#11 login), else the environment keys.
pub async fn source() -> Result<Source, String> {
    match crate::kek::from_env().await? {
        Some(kek) => Ok(Source::Kek(kek)),
        None => load(false).map(|(ring, _)| Source::Environment(ring)),
    }
}

/// The keyring of `source` on `db` (whose schema is current): environment keys after their
/// check values matched the store's, or the store's keys unwrapped by the KEK.
pub async fn resolve(source: Source, db: &DatabaseConnection) -> Result<Keyring, String> {
    match source {
        Source::Environment(ring) => {
            check_env(db, &ring).await?;
            let _ = LOADED_FROM.set(("env".to_owned(), None));
            Ok(ring)
        }
        Source::Kek(kek) => {
            let ring = store()
                .load(db, &*kek)
                .await
                .map_err(|e| format!("cannot load keys: {}", store_message(&e)))?;
            let _ = LOADED_FROM.set((kek.provider().to_owned(), Some(kek.kek_id().to_owned())));
            Ok(ring)
        }
    }
}

/// The provider and KEK id [`resolve`] loaded this process's keys through.
static LOADED_FROM: OnceLock<(String, Option<String>)> = OnceLock::new();

/// Where this process's keys came from: (`"env"`, none) or (provider, KEK id); `None` before
/// [`resolve`] ran. Read by `keys status` instead of reaching the provider a second time.
pub fn loaded_from() -> Option<&'static (String, Option<String>)> {
    LOADED_FROM.get()
}

/// Checks environment keys against the key store (registering ids seen for the first time).
/// A wrong key under a registered id is refused naming its variable and id, before any value
/// is sealed or index value computed with it.
pub async fn check_env(db: &DatabaseConnection, ring: &Keyring) -> Result<(), String> {
    match store().check_env_keys(db, ring).await {
        Ok(_) => Ok(()),
        Err(KeyStoreError::CheckValueMismatch {
            purpose, key_id, ..
        }) => {
            let var = match purpose {
                KeyPurpose::BlindIndex => ENV_BLIND_INDEX_KEYS,
                _ => ENV_KEYS,
            };
            Err(format!(
                "cannot load keys: key {key_id} in {var} is not the key this database registered \
                 under id {key_id} (its check value differs); nothing was written. Use the key \
                 the database was set up with, or give the new key a new id"
            ))
        }
        Err(e) => Err(format!("cannot check keys: {}", store_message(&e))),
    }
}

/// A key-store error as the clinic shows it: the library's one-line message, which names the
/// scope, purpose and key id and never holds key bytes.
pub fn store_message(err: &KeyStoreError) -> String {
    err.to_string()
}
