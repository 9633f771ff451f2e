//! `clinic keys new|promote|retire`: rotating the clinic's own keys when they live in the key
//! store (a KEK provider), where there is no `ENCRYPTED_COLUMNS_*` variable to edit.
//!
//! Encryption: `keys new --purpose encryption` (decrypt-only), `keys promote --purpose
//! encryption N`, `keys rotate` (re-wraps the data keys and the legacy table under N), then
//! `keys retire --purpose encryption OLD`. Blind indexes: the same with `index rebuild` in
//! place of `keys rotate`.

use encrypted_columns::KeyId;
use encrypted_columns::keyring::KeyPurpose;
use encrypted_columns::keystore::KeyState;
use serde::Serialize;

use super::key_store::{StoredKeyStatus, configured_or_refuse, open_db};
use crate::cli::KeyPurposeArg;
use crate::commands::{Global, print_json};
use crate::keys::{store, store_message};
use crate::output::say;

impl From<KeyPurposeArg> for KeyPurpose {
    fn from(arg: KeyPurposeArg) -> Self {
        match arg {
            KeyPurposeArg::Encryption => KeyPurpose::Encryption,
            KeyPurposeArg::BlindIndex => KeyPurpose::BlindIndex,
        }
    }
}

/// `clinic keys new --purpose P`: a new decrypt-only key in the store, wrapped by the
/// configured KEK.
pub async fn new(global: &Global, purpose: KeyPurposeArg) -> Result<(), String> {
    let purpose = KeyPurpose::from(purpose);
    let settings = configured_or_refuse("new")?;
    let kek = crate::kek::connect(settings).await?;
    let db = open_db(global).await?;
    let key = store()
        .create_key(&db, &*kek, purpose, KeyState::DecryptOnly)
        .await
        .map_err(|e| format!("cannot create the key: {}", store_message(&e)))?;
    let status = StoredKeyStatus::from(key);
    if global.json {
        return print_json(&status);
    }
    say!(
        "Created {} key {} (decrypt-only), check value {}, wrapped by {} ({}).",
        status.purpose,
        status.id,
        status.check_value,
        kek.provider(),
        kek.kek_id()
    );
    say!(
        "Next: `clinic keys promote --purpose {} {}`, then {}.",
        status.purpose,
        status.id,
        match purpose {
            KeyPurpose::BlindIndex => "`clinic index rebuild`",
            _ => "`clinic keys rotate`",
        }
    );
    Ok(())
}

/// `clinic keys promote --purpose P ID`: new values are sealed (or indexed) with key ID from
/// now on; the key active until now becomes decrypt-only.
pub async fn promote(global: &Global, purpose: KeyPurposeArg, id: u32) -> Result<(), String> {
    let purpose = KeyPurpose::from(purpose);
    configured_or_refuse("promote")?;
    let db = open_db(global).await?;
    let key = store()
        .promote(&db, purpose, KeyId(id))
        .await
        .map_err(|e| format!("cannot promote: {}", store_message(&e)))?;
    let status = StoredKeyStatus::from(key);
    if global.json {
        return print_json(&status);
    }
    say!(
        "{} key {} is active; the previous one is decrypt-only.",
        status.purpose,
        status.id
    );
    Ok(())
}

#[derive(Debug, Serialize)]
struct Retired {
    #[serde(flatten)]
    key: StoredKeyStatus,
}

/// `clinic keys retire --purpose P ID`: the key is kept in the store but no longer loaded.
/// Refused while any stored value still needs it (named per column, with counts), and for
/// the active key (the store re-checks that in its transaction). Nothing new is ever sealed
/// or indexed with a key that is not active, so the count cannot grow behind the check.
pub async fn retire(global: &Global, purpose: KeyPurposeArg, id: u32) -> Result<(), String> {
    let purpose = KeyPurpose::from(purpose);
    configured_or_refuse("retire")?;
    let db = open_db(global).await?;
    let still = match purpose {
        KeyPurpose::BlindIndex => crate::commands::index::blind_index_key_uses(
            id,
            &crate::commands::index::blind_index_usage(&db).await?,
            &crate::commands::index::audit_mac_usage(&db).await?,
        ),
        _ => crate::commands::index::uses_of(
            id,
            &crate::commands::keys::clinic_key_usage(&db).await?,
        ),
    };
    if !still.is_empty() {
        let total: u64 = still.values().sum();
        let parts: Vec<String> = still.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        return Err(format!(
            "{purpose} key {id} still seals {total} stored value(s) ({}); nothing was retired: \
             run `clinic {}` under the active key first",
            parts.join(", "),
            match purpose {
                KeyPurpose::BlindIndex => "index rebuild",
                _ => "keys rotate",
            }
        ));
    }
    let key = store()
        .retire(&db, purpose, KeyId(id))
        .await
        .map_err(|e| format!("cannot retire: {}", store_message(&e)))?;
    let retired = Retired {
        key: StoredKeyStatus::from(key),
    };
    if global.json {
        return print_json(&retired);
    }
    say!(
        "{} key {} is retired: kept in the key store, no longer loaded. No stored value used it.",
        retired.key.purpose,
        retired.key.id
    );
    Ok(())
}
