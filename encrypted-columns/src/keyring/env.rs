//! Loading keys from the `ENCRYPTED_COLUMNS_*` environment variables (table in the
//! [module docs](super)). Errors name the variable and the problem, never key bytes.

use std::collections::BTreeMap;
use std::sync::RwLock;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::material::{KEY_LEN, RootKey};
use super::ring::{Keyring, check_blind_index_id};
use crate::error::{Error, Result};
use crate::key_id::KeyId;

/// Variable holding the encryption root keys.
pub const ENV_KEYS: &str = "ENCRYPTED_COLUMNS_KEYS";
/// Variable naming the active encryption key id.
pub const ENV_ACTIVE_KEY: &str = "ENCRYPTED_COLUMNS_ACTIVE_KEY";
/// Variable holding the blind-index root keys.
pub const ENV_BLIND_INDEX_KEYS: &str = "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS";
/// Variable naming the active blind-index key id.
pub const ENV_ACTIVE_BLIND_INDEX_KEY: &str = "ENCRYPTED_COLUMNS_ACTIVE_BLIND_INDEX_KEY";

impl Keyring {
    /// Loads keys from the process environment (see the [module docs](super) for variables).
    ///
    /// Errors name the variable and what is wrong with it, never the key bytes.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`Keyring::from_env`], reading variables through `lookup` (for tests, or
    /// configuration systems other than the environment).
    ///
    /// ```
    /// use encrypted_columns::{Keyring, KeyId};
    /// let keys = "1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    /// let ring = Keyring::from_vars(|name| (name == "ENCRYPTED_COLUMNS_KEYS").then(|| keys.to_string()))?;
    /// assert_eq!(ring.active_key_id(), KeyId(1));
    ///
    /// let err = Keyring::from_vars(|_| None).unwrap_err();
    /// assert!(err.to_string().contains("ENCRYPTED_COLUMNS_KEYS is not set"));
    /// # Ok::<(), encrypted_columns::Error>(())
    /// ```
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let keys_var = lookup(ENV_KEYS).map(Zeroizing::new);
        let keys_var = keys_var
            .as_deref()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                Error::key_config(
                    ENV_KEYS,
                    format!(
                        "{ENV_KEYS} is not set: set it to `<id>:<base64 of 32 random bytes>`, e.g. \
                     `{ENV_KEYS}=1:$(head -c 32 /dev/urandom | base64)`"
                    ),
                )
            })?;
        let keys = parse_key_list(ENV_KEYS, keys_var)?;
        let active = pick_active(ENV_KEYS, ENV_ACTIVE_KEY, &keys, lookup(ENV_ACTIVE_KEY))?;

        let blind = lookup(ENV_BLIND_INDEX_KEYS).map(Zeroizing::new);
        let blind_index_keys = match blind.as_deref().filter(|v| !v.trim().is_empty()) {
            Some(v) => parse_key_list(ENV_BLIND_INDEX_KEYS, v)?,
            None => BTreeMap::new(),
        };
        for id in blind_index_keys.keys() {
            check_blind_index_id(ENV_BLIND_INDEX_KEYS, *id)?;
        }
        let active_blind_index = if blind_index_keys.is_empty() {
            None
        } else {
            Some(pick_active(
                ENV_BLIND_INDEX_KEYS,
                ENV_ACTIVE_BLIND_INDEX_KEY,
                &blind_index_keys,
                lookup(ENV_ACTIVE_BLIND_INDEX_KEY),
            )?)
        };
        // Load-time check, not on a hot path, so a plain comparison is fine: one secret
        // serving two purposes would defeat the separation between ciphertexts and indexes.
        for (bid, bkey) in &blind_index_keys {
            for (eid, ekey) in &keys {
                if bkey.0 == ekey.0 {
                    return Err(Error::key_config(
                        ENV_BLIND_INDEX_KEYS,
                        format!(
                            "blind-index key {bid} equals encryption key {eid}; generate a \
                             separate random key for blind indexes"
                        ),
                    ));
                }
            }
        }
        Ok(Keyring {
            keys,
            active,
            blind_index_keys,
            active_blind_index,
            ciphers: RwLock::default(),
            index_macs: RwLock::default(),
        })
    }
}

fn parse_key_list(var: &str, value: &str) -> Result<BTreeMap<KeyId, RootKey>> {
    let mut keys = BTreeMap::new();
    for (index, entry) in value.split(',').map(str::trim).enumerate() {
        let position = index + 1;
        if entry.is_empty() {
            return Err(Error::key_config(
                var,
                format!(
                    "entry {position} is empty; expected `<id>:<base64 key>` entries separated by commas"
                ),
            ));
        }
        let (id, b64) = entry.split_once(':').ok_or_else(|| {
            Error::key_config(
                var,
                format!("entry {position} has no `:`; expected `<id>:<base64 key>`, e.g. `1:<44 base64 characters>`"),
            )
        })?;
        let id = parse_id(var, &format!("entry {position}"), id)?;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| {
                    Error::key_config(
                        var,
                        format!("key {id} is not valid base64 (standard alphabet, e.g. the output of `base64`)"),
                    )
                })?,
        );
        let key = RootKey::from_slice(&bytes, &format!("{var}: key {id}"))
            .map_err(|_| {
                Error::key_config(
                    var,
                    format!(
                        "key {id} decodes to {} bytes; keys must be exactly {KEY_LEN} bytes (generate one with `head -c 32 /dev/urandom | base64`)",
                        bytes.len()
                    ),
                )
            })?;
        if keys.insert(id, key).is_some() {
            return Err(Error::key_config(var, format!("key id {id} appears twice")));
        }
    }
    Ok(keys)
}

fn parse_id(var: &str, what: &str, raw: &str) -> Result<KeyId> {
    raw.trim().parse::<u32>().map(KeyId).map_err(|_| {
        Error::key_config(
            var,
            format!(
                "{what}: key id {:?} is not a whole number from 0 to 4294967295",
                raw.trim()
            ),
        )
    })
}

fn pick_active(
    keys_var: &str,
    active_var: &str,
    keys: &BTreeMap<KeyId, RootKey>,
    active: Option<String>,
) -> Result<KeyId> {
    match active.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        Some(raw) => {
            let id = parse_id(active_var, "value", raw)?;
            if keys.contains_key(&id) {
                Ok(id)
            } else {
                Err(Error::key_config(
                    active_var,
                    format!(
                        "names key {id}, but {keys_var} holds only {}",
                        list_ids(keys)
                    ),
                ))
            }
        }
        None => match keys.keys().copied().collect::<Vec<_>>().as_slice() {
            [only] => Ok(*only),
            _ => Err(Error::key_config(
                active_var,
                format!(
                    "{active_var} is not set but {keys_var} holds {} keys ({}); set it to the id new values are sealed with",
                    keys.len(),
                    list_ids(keys)
                ),
            )),
        },
    }
}

fn list_ids(keys: &BTreeMap<KeyId, RootKey>) -> String {
    keys.keys()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::generate_key_entry;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        Keyring::from_vars(vars(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn loads_keys_and_active() {
        let two = format!(
            "1:{K1}, 2:{}",
            base64::engine::general_purpose::STANDARD.encode([9u8; 32])
        );
        let ring =
            Keyring::from_vars(vars(&[(ENV_KEYS, &two), (ENV_ACTIVE_KEY, "2")])).expect("loads");
        assert_eq!(ring.active_key_id(), KeyId(2));
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), vec![KeyId(1), KeyId(2)]);
        assert_eq!(ring.active_blind_index_key_id(), None);
    }

    #[test]
    fn bad_configuration_names_variable_and_problem() {
        assert!(err(&[]).contains("ENCRYPTED_COLUMNS_KEYS is not set"));
        assert!(err(&[(ENV_KEYS, K1)]).contains("entry 1 has no `:`"));
        assert!(err(&[(ENV_KEYS, "x:AAAA")]).contains("key id \"x\" is not a whole number"));
        assert!(err(&[(ENV_KEYS, "1:not base64!")]).contains("key 1 is not valid base64"));
        assert!(err(&[(ENV_KEYS, "1:AAAA")]).contains("key 1 decodes to 3 bytes"));
        let dup = format!("1:{K1},1:{K1}");
        assert!(err(&[(ENV_KEYS, &dup)]).contains("key id 1 appears twice"));
        let two = format!(
            "1:{K1},2:{}",
            base64::engine::general_purpose::STANDARD.encode([9u8; 32])
        );
        assert!(err(&[(ENV_KEYS, &two)]).contains("ENCRYPTED_COLUMNS_ACTIVE_KEY is not set"));
        assert!(
            err(&[(ENV_KEYS, &two), (ENV_ACTIVE_KEY, "3")])
                .contains("names key 3, but ENCRYPTED_COLUMNS_KEYS holds only 1, 2")
        );
        let same = format!("7:{K1}");
        let reuse = err(&[
            (ENV_KEYS, &format!("1:{K1}")),
            (ENV_BLIND_INDEX_KEYS, &same),
        ]);
        assert!(
            reuse.contains("blind-index key 7 equals encryption key 1"),
            "{reuse}"
        );
    }

    #[test]
    fn errors_and_debug_never_show_key_material() {
        let ring = Keyring::from_vars(vars(&[(ENV_KEYS, &format!("1:{K1}"))])).expect("loads");
        let debug = format!("{ring:?}");
        assert!(!debug.contains(K1) && !debug.contains("0, 1, 2"), "{debug}");
        let short = err(&[(ENV_KEYS, "1:AAECAwQFBgcI")]);
        assert!(!short.contains("AAECAwQFBgcI"), "{short}");
    }

    #[test]
    fn generated_entry_round_trips_through_env_format() {
        let entry = generate_key_entry(KeyId(5));
        let ring = Keyring::from_vars(vars(&[(ENV_KEYS, entry.as_str())])).expect("loads");
        assert_eq!(ring.active_key_id(), KeyId(5));
    }
}
