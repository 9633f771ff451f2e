//! Loading the keyring for the CLI, with messages a person can act on.

use encrypted_columns::keyring::{ENV_BLIND_INDEX_KEYS, ENV_KEYS, generate_key_entry};
use encrypted_columns::{KeyId, Keyring};

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
