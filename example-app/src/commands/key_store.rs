//! `clinic keys init|rewrap`, and the key-store part of `clinic keys status`: the clinic's keys
//! in the library's key store (`encrypted_columns::keystore`), wrapped by the KEK provider
//! `CLINIC_KEK` names (`crate::kek`).

use std::ops::ControlFlow;
use std::sync::Arc;

use encrypted_columns::kek::KeyEncryptionKey;
use encrypted_columns::keyring::KeyPurpose;
use encrypted_columns::keystore::{KeyState, StoredKey};
use encrypted_columns::subject_keys::{CacheConfig, SubjectKeys};
use sea_orm::DatabaseConnection;
use serde::Serialize;

use crate::clinic::{Clinic, KEY_TABLE};
use crate::commands::{Global, print_json};
use crate::connect::connect;
use crate::kek::{CLINIC_KEK, Settings};
use crate::keys::{KEY_STORE_SCOPE, store, store_message};
use crate::output::say;

/// One stored key, for `keys status`.
#[derive(Debug, Serialize)]
pub struct StoredKeyStatus {
    /// `encryption` or `blind-index`.
    pub purpose: &'static str,
    /// The key id.
    pub id: u32,
    /// `active`, `decrypt-only`, `retired`.
    pub state: &'static str,
    /// The key check value, hex.
    pub check_value: String,
    /// `wrapped` (by a KEK) or `env` (supplied by ENCRYPTED_COLUMNS_*; check value only).
    pub source: &'static str,
    /// `env` or the KEK provider.
    pub provider: String,
    /// The KEK id, for wrapped keys.
    pub kek_id: Option<String>,
}

impl From<StoredKey> for StoredKeyStatus {
    fn from(k: StoredKey) -> Self {
        StoredKeyStatus {
            purpose: k.purpose.as_str(),
            id: k.key_id.0,
            state: k.state.as_str(),
            check_value: k.check_value.to_string(),
            source: if k.wrapped { "wrapped" } else { "env" },
            provider: k.provider,
            kek_id: k.kek_id,
        }
    }
}

/// The provider and KEK id this process loaded its keys through (`env` and none for
/// environment keys).
pub fn configured_provider() -> (String, Option<String>) {
    crate::keys::loaded_from()
        .cloned()
        .unwrap_or_else(|| ("env".to_owned(), None))
}

/// Every key of the clinic's scope, for `keys status`.
pub async fn stored_keys(db: &DatabaseConnection) -> Result<Vec<StoredKeyStatus>, String> {
    let keys = store()
        .list(db)
        .await
        .map_err(|e| format!("cannot read the key store: {}", store_message(&e)))?;
    Ok(keys.into_iter().map(StoredKeyStatus::from).collect())
}

/// Prints the key-store part of `keys status`.
pub fn print_stored(provider: &str, kek_id: Option<&str>, keys: &[StoredKeyStatus]) {
    say!(
        "Key provider: {provider}{}. Key store (scope '{KEY_STORE_SCOPE}'):",
        kek_id.map_or(String::new(), |k| format!(" (KEK {k})"))
    );
    for k in keys {
        say!(
            "  {:<12} key {:<3} {:<13} check value {}  {}",
            k.purpose,
            k.id,
            k.state,
            k.check_value,
            match &k.kek_id {
                Some(kek) => format!("wrapped by {} {kek}", k.provider),
                None => "env (check value only)".to_owned(),
            }
        );
    }
}

/// Connects to a database whose schema is current; no keys needed.
pub(super) async fn open_db(global: &Global) -> Result<DatabaseConnection, String> {
    let db = connect(global.url()).await?;
    Clinic::check_schema(&db).await?;
    Ok(db)
}

pub(super) fn configured_or_refuse(what: &str) -> Result<Settings, String> {
    crate::kek::configured()?.ok_or_else(|| {
        format!(
            "`clinic keys {what}` needs a KEK provider: set {CLINIC_KEK}=static, pkcs11 or aws-kms (with \
             environment keys, every command registers their check values itself)"
        )
    })
}

#[derive(Debug, Serialize)]
struct InitSummary {
    provider: String,
    kek_id: String,
    created: Vec<StoredKeyStatus>,
}

/// `clinic keys init [--provider NAME]`.
pub async fn init(global: &Global, provider: Option<String>) -> Result<(), String> {
    let settings = match provider.as_deref().map(str::trim) {
        None => configured_or_refuse("init")?,
        Some(name) => {
            let configured = std::env::var(CLINIC_KEK).unwrap_or_default();
            let configured = configured.trim();
            if !configured.is_empty() && configured != name {
                return Err(format!(
                    "--provider {name} contradicts {CLINIC_KEK}={configured}; every later \
                     command reads {CLINIC_KEK}, so set it to {name} instead"
                ));
            }
            crate::kek::settings_for(name)?.ok_or_else(|| {
                format!(
                    "--provider {name} wraps nothing: with environment keys every command \
                     registers their check values itself; use static, pkcs11 or aws-kms"
                )
            })?
        }
    };
    let kek = crate::kek::connect_provisioning(settings).await?;
    let db = open_db(global).await?;
    let store = store();
    let existing = store
        .list(&db)
        .await
        .map_err(|e| format!("cannot read the key store: {}", store_message(&e)))?;
    // An init interrupted between its two keys left only keys of this very KEK: finish it.
    // Anything else (environment keys, another KEK, a complete set) is refused untouched.
    let ours = |k: &StoredKey| {
        k.wrapped && k.provider == kek.provider() && k.kek_id.as_deref() == Some(kek.kek_id())
    };
    let missing: Vec<KeyPurpose> = [KeyPurpose::Encryption, KeyPurpose::BlindIndex]
        .into_iter()
        .filter(|p| !existing.iter().any(|k| k.purpose == *p))
        .collect();
    if !existing.is_empty() && (missing.is_empty() || !existing.iter().all(ours)) {
        let ids: Vec<String> = existing.iter().map(StoredKey::label).collect();
        return Err(format!(
            "the key store already holds {} key(s) for scope '{KEY_STORE_SCOPE}' ({}); nothing \
             was created",
            existing.len(),
            ids.join(", ")
        ));
    }
    let mut created = Vec::new();
    for purpose in missing {
        // create_key re-checks inside its transaction: a concurrent `keys init` makes this one
        // fail with "already has active … key", not a second active key.
        let key = store
            .create_key(&db, &*kek, purpose, KeyState::Active)
            .await
            .map_err(|e| format!("cannot create keys: {}", store_message(&e)))?;
        created.push(StoredKeyStatus::from(key));
    }
    let summary = InitSummary {
        provider: kek.provider().to_owned(),
        kek_id: kek.kek_id().to_owned(),
        created,
    };
    if global.json {
        return print_json(&summary);
    }
    let made: Vec<String> = summary
        .created
        .iter()
        .map(|k| format!("{} key {}", k.purpose, k.id))
        .collect();
    say!(
        "Created {}, wrapped by {} ({}).",
        made.join(" and "),
        summary.provider,
        summary.kek_id
    );
    for k in &summary.created {
        say!(
            "  {} key {}: check value {}",
            k.purpose,
            k.id,
            k.check_value
        );
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct RewrapSummary {
    from: String,
    to: String,
    rewrapped: usize,
    already_done: usize,
    untouched: Vec<String>,
    /// Patient data keys moved to the new KEK.
    patient_keys_rewrapped: usize,
    /// Patient data keys already under it (an earlier, interrupted run).
    patient_keys_already_done: usize,
    /// Patient data keys under another wrapping (the clinic keyring), left as they are.
    patient_keys_untouched: usize,
}

/// Where `clinic keys rewrap` moves the keys: exactly one of its `--to-…` options.
pub struct RewrapTarget {
    /// `--to-static-env VAR`.
    pub static_env: Option<String>,
    /// `--to-pkcs11-key LABEL`.
    pub pkcs11_key: Option<String>,
    /// `--to-aws-kms-key KEY`.
    pub aws_kms_key: Option<String>,
}

/// `clinic keys rewrap --to-static-env VAR | --to-pkcs11-key LABEL | --to-aws-kms-key KEY`.
pub async fn rewrap(global: &Global, target: RewrapTarget) -> Result<(), String> {
    let from_settings = configured_or_refuse("rewrap")?;
    let to_settings = match (target.static_env, target.pkcs11_key, target.aws_kms_key) {
        (Some(var), None, None) => crate::kek::static_from(&var)?,
        (None, Some(label), None) => crate::kek::pkcs11_with_key(&label)?,
        (None, None, Some(key)) => crate::kek::aws_kms_with_key(&key)?,
        _ => {
            return Err(
                "give exactly one of --to-static-env, --to-pkcs11-key and --to-aws-kms-key".into(),
            );
        }
    };
    let from: Arc<dyn KeyEncryptionKey> = crate::kek::connect(from_settings).await?;
    let to: Arc<dyn KeyEncryptionKey> = crate::kek::connect_provisioning(to_settings).await?;
    let db = open_db(global).await?;
    let report = store()
        .rewrap(&db, &*from, &*to, |p| {
            // Progress on stderr, so stdout stays the result (and `--json` parseable).
            eprintln!(
                "rewrapped {} key {} ({}/{})",
                p.last.0,
                p.last.1,
                p.rewrapped + p.already_done,
                p.total
            );
            ControlFlow::Continue(())
        })
        .await
        .map_err(|e| format!("cannot rewrap: {}", store_message(&e)))?;
    // Then the patients' data keys that this KEK wraps (those the clinic keyring wraps stay:
    // they follow the clinic key, which the store just moved).
    let patients = SubjectKeys::new(KEY_TABLE, Arc::clone(&from))
        .with_cache(CacheConfig::disabled())
        .rewrap(&db, &*from, &*to, |p| {
            eprintln!(
                "rewrapped patient data key row {} ({} moved)",
                p.row, p.rewrapped
            );
            ControlFlow::Continue(())
        })
        .await
        .map_err(|e| {
            format!(
                "cannot rewrap the patients' data keys: {}; the clinic's own keys are already \
                 under the new KEK: run `clinic keys rewrap` again (with the old KEK's settings) \
                 to finish",
                e
            )
        })?;
    if !patients.changed_concurrently.is_empty() {
        return Err(format!(
            "{} patient data key row(s) changed while this ran ({}); nothing of theirs was \
             overwritten: run `clinic keys rewrap` again",
            patients.changed_concurrently.len(),
            patients
                .changed_concurrently
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !report.changed_concurrently.is_empty() {
        let keys: Vec<String> = report
            .changed_concurrently
            .iter()
            .map(|(p, id)| format!("{p} key {id}"))
            .collect();
        return Err(format!(
            "{} key(s) changed while this ran ({}); nothing of theirs was overwritten: run \
             `clinic keys rewrap` again",
            keys.len(),
            keys.join(", ")
        ));
    }
    let summary = RewrapSummary {
        from: format!("{} ({})", from.provider(), from.kek_id()),
        to: format!("{} ({})", to.provider(), to.kek_id()),
        rewrapped: report.rewrapped.len(),
        already_done: report.already_done.len(),
        untouched: report.untouched.iter().map(StoredKey::label).collect(),
        patient_keys_rewrapped: patients.rewrapped,
        patient_keys_already_done: patients.already_done,
        patient_keys_untouched: patients.untouched.values().sum(),
    };
    if global.json {
        return print_json(&summary);
    }
    say!(
        "Rewrapped {} key(s) from {} to {} ({} already there). No data was re-encrypted.",
        summary.rewrapped,
        summary.from,
        summary.to,
        summary.already_done
    );
    say!(
        "Rewrapped {} patient data key(s) ({} already there; {} wrapped by the clinic keyring \
         follow the clinic key and stay as they are).",
        summary.patient_keys_rewrapped,
        summary.patient_keys_already_done,
        summary.patient_keys_untouched
    );
    if !summary.untouched.is_empty() {
        say!(
            "Under neither KEK, left alone: {}.",
            summary.untouched.join(", ")
        );
    }
    say!(
        "From now on run the clinic with the new KEK: {}.",
        match to.provider() {
            "static" => "CLINIC_KEK=static and CLINIC_KEK_STATIC set to the new KEK",
            "aws-kms" => "CLINIC_KEK=aws-kms and CLINIC_AWS_KMS_KEY set to the new key",
            _ => "CLINIC_KEK=pkcs11 and CLINIC_PKCS11_KEY set to the new label",
        }
    );
    Ok(())
}
