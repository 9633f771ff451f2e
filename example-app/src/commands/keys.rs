//! `clinic keys status|rotate`.
//!
//! Rotation of the clinic key is cheap by design: patient data is sealed with per-patient
//! data keys, and only those small wrapped keys (plus the legacy table, sealed directly with
//! the clinic key) are re-encrypted. The audit log holds nothing sealed with the clinic key,
//! so the append-only table never needs rewriting.

use std::collections::BTreeMap;

use encrypted_columns::migrate::{self, Progress, RotateColumn, RunOptions};
use encrypted_columns::subject_keys;
use encrypted_columns::{ColumnContext, KeyId, Plaintext, blind_index::IndexArg};
use indicatif::{ProgressBar, ProgressStyle};
use sea_orm::DatabaseConnection;
use sea_orm::sea_query::{Alias, Expr, ExprTrait};
use sea_orm::{Condition, EntityTrait, PaginatorTrait};
use serde::Serialize;

use crate::clinic::{DATA_KEY_ID_BASE, db_err};
use crate::commands::{Global, print_json};
use crate::entities::{legacy_patient, patient_key};
use crate::output::{join_ids, say};

/// Columns sealed directly with the clinic key: `(table, column)`.
const CLINIC_KEY_COLUMNS: [(&str, &str); 4] = [
    ("patient_keys", "wrapped_key"),
    ("legacy_patients", "full_name_enc"),
    ("legacy_patients", "email_enc"),
    ("legacy_patients", "phone_enc"),
];

#[derive(Debug, Serialize)]
struct Status {
    /// `env` (ENCRYPTED_COLUMNS_* checked against the key store) or the KEK provider.
    provider: String,
    /// The KEK id, with a KEK provider.
    kek_id: Option<String>,
    /// Every key of the key store: purpose, id, state, check value, wrapped or env.
    stored_keys: Vec<crate::commands::key_store::StoredKeyStatus>,
    active_key: u32,
    keys: Vec<u32>,
    active_blind_index_key: Option<u32>,
    blind_index_keys: Vec<u32>,
    /// Per `table.column`: stored values per clinic key id.
    values_by_key: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Patient data keys in the database (one per patient).
    patient_data_keys: u64,
    /// Clinic key ids no stored value uses any more (safe to remove once every process runs
    /// without them).
    retirable_keys: Vec<u32>,
    /// Per `table.column` of every blind index: stored index values per blind-index key id.
    index_values_by_key: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Loaded blind-index key ids, other than the active one, that neither an index value
    /// nor an audit chain MAC uses.
    retirable_blind_index_keys: Vec<u32>,
}

/// `clinic keys status`.
pub async fn status(global: &Global) -> Result<(), String> {
    let clinic = global.open().await?;
    let ring = clinic.master();
    let values_by_key = clinic_key_usage(&clinic.db).await?;
    let mut used = BTreeMap::<u32, u64>::new();
    for usage in values_by_key.values() {
        for (k, n) in usage {
            *used.entry(*k).or_default() += n;
        }
    }
    let patient_data_keys = patient_key::Entity::find()
        .count(&clinic.db)
        .await
        .map_err(db_err)?;
    let index_values_by_key = crate::commands::index::blind_index_usage(&clinic.db).await?;
    let audit_macs = crate::commands::index::audit_mac_usage(&clinic.db).await?;
    let retirable_blind_index_keys =
        crate::commands::index::retirable_blind_index_keys(ring, &index_values_by_key, &audit_macs);
    let (provider, kek_id) = crate::commands::key_store::configured_provider();
    let stored_keys = crate::commands::key_store::stored_keys(&clinic.db).await?;
    let status = Status {
        provider,
        kek_id,
        stored_keys,
        active_key: ring.active_key_id().0,
        keys: ring.key_ids().map(|k| k.0).collect(),
        active_blind_index_key: ring.active_blind_index_key_id().map(|k| k.0),
        blind_index_keys: ring.blind_index_key_ids().map(|k| k.0).collect(),
        retirable_keys: ring
            .key_ids()
            .filter(|k| *k != ring.active_key_id() && !used.contains_key(&k.0))
            .map(|k| k.0)
            .collect(),
        values_by_key,
        patient_data_keys,
        index_values_by_key,
        retirable_blind_index_keys,
    };
    if global.json {
        return print_json(&status);
    }
    crate::commands::key_store::print_stored(
        &status.provider,
        status.kek_id.as_deref(),
        &status.stored_keys,
    );
    say!(
        "Clinic keys loaded: {} (active: {}). Blind-index keys: {} (active: {}).",
        join_ids(&status.keys),
        status.active_key,
        join_ids(&status.blind_index_keys),
        status
            .active_blind_index_key
            .map_or("none".to_owned(), |k| k.to_string())
    );
    let by_keyring: u64 = status
        .values_by_key
        .get("patient_keys.wrapped_key")
        .map_or(0, |m| m.values().sum());
    say!(
        "Patient data keys: {} ({} wrapped by the clinic keyring, {} by a KEK provider; \
         patient data never uses a clinic key directly).",
        status.patient_data_keys,
        by_keyring,
        status.patient_data_keys.saturating_sub(by_keyring)
    );
    for (column, usage) in &status.values_by_key {
        if usage.is_empty() {
            continue;
        }
        let parts: Vec<String> = usage
            .iter()
            .map(|(k, n)| {
                let mark = if *k == status.active_key {
                    ""
                } else {
                    " (old)"
                };
                format!("key {k}{mark}: {n}")
            })
            .collect();
        say!("  {column:<32} {}", parts.join(", "));
    }
    for (k, _) in used.iter().filter(|(k, _)| **k < DATA_KEY_ID_BASE) {
        if !status.keys.contains(k) {
            say!(
                "  warning: values sealed with key {k} exist but that key is not loaded: \
                 they cannot be read. Add it back to ENCRYPTED_COLUMNS_KEYS."
            );
        }
    }
    let active_bi = status.active_blind_index_key;
    let old_index_values: u64 = status
        .index_values_by_key
        .values()
        .flat_map(|m| m.iter())
        .filter(|(k, _)| Some(**k) != active_bi)
        .map(|(_, n)| n)
        .sum();
    if old_index_values > 0 {
        say!(
            "{old_index_values} blind-index value(s) were computed with an older blind-index \
             key: run `clinic index rebuild` (patients) and `clinic keys rotate` (the legacy \
             table) before removing it."
        );
    } else if !status.retirable_blind_index_keys.is_empty() {
        say!(
            "Blind-index key(s) {} compute no stored index value and made no audit MAC: they \
             can be removed from ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS.",
            join_ids(&status.retirable_blind_index_keys)
        );
    }
    if used.keys().any(|k| *k != status.active_key) {
        say!("Values under older keys remain: run `clinic keys rotate`.");
    } else if !status.retirable_keys.is_empty() {
        say!(
            "Key(s) {} seal nothing any more and can be removed from ENCRYPTED_COLUMNS_KEYS.",
            join_ids(&status.retirable_keys)
        );
    } else {
        say!("Everything is sealed with the active key.");
    }
    Ok(())
}

/// What a rotation did, per column.
#[derive(Debug, Serialize)]
pub struct RotationSummary {
    /// The key everything is now sealed with.
    pub active_key: u32,
    /// `table.column` → values re-encrypted.
    pub resealed: BTreeMap<String, u64>,
    /// Clinic keys no value uses any more.
    pub retirable_keys: Vec<u32>,
}

/// `clinic keys rotate`.
pub async fn rotate(global: &Global, batch_size: u64) -> Result<(), String> {
    if batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    let clinic = global.open().await?;
    let summary = rotate_all(
        &clinic.db,
        clinic.master().key_ids().collect(),
        batch_size,
        !global.json,
    )
    .await?;
    if global.json {
        return print_json(&summary);
    }
    // Advice for the operator of a real rotation; the demo, which rotates back, prints its own.
    if summary.retirable_keys.is_empty() {
        say!("Nothing is sealed with an older key.");
    } else {
        say!(
            "Key(s) {} now seal nothing: remove them from ENCRYPTED_COLUMNS_KEYS once every \
             process runs with key {} active.",
            join_ids(&summary.retirable_keys),
            summary.active_key
        );
    }
    Ok(())
}

/// Re-encrypts every value under an older clinic key with the installed keyring's active key.
/// `held` are the clinic key ids loaded (to say which can be retired).
pub async fn rotate_all(
    db: &DatabaseConnection,
    held: Vec<KeyId>,
    batch_size: u64,
    chatty: bool,
) -> Result<RotationSummary, String> {
    let active = encrypted_columns::keyring::current()
        .map_err(|e| e.to_string())?
        .active_key_id();
    if chatty {
        say!("Re-encrypting values sealed with older clinic keys under key {active}:");
    }
    let options = RunOptions {
        batch_size,
        ..RunOptions::default()
    };
    let mut resealed = BTreeMap::new();
    let mut in_use = BTreeMap::<KeyId, u64>::new();
    let mut run = |name: String, report: migrate::RotationReport| {
        for (k, n) in &report.rows_by_key {
            *in_use.entry(*k).or_default() += n;
        }
        resealed.insert(name, report.resealed);
    };
    // Only data keys the clinic keyring wraps are re-encrypted; those a KMS or HSM wraps do
    // not depend on the clinic key (`keys rewrap` moves them between KEKs).
    let spec = RotateColumn::<Vec<u8>, patient_key::ctx::WrappedKey>::new(
        "patient_keys",
        "id",
        "wrapped_key",
    )
    .only_where(keyring_wrapped());
    run(
        "patient_keys.wrapped_key".into(),
        one("patient_keys.wrapped_key", db, &spec, &options, chatty).await?,
    );
    let spec = RotateColumn::<String, legacy_patient::ctx::FullNameEnc>::new(
        "legacy_patients",
        "id",
        "full_name_enc",
    );
    run(
        "legacy_patients.full_name_enc".into(),
        one("legacy_patients.full_name_enc", db, &spec, &options, chatty).await?,
    );
    // Its blind index too: rows whose index an older blind-index key computed are
    // recomputed with the active one (the patients' indexes: `clinic index rebuild`).
    let spec = RotateColumn::<String, legacy_patient::ctx::EmailEnc>::new(
        "legacy_patients",
        "id",
        "email_enc",
    )
    .with_index("email_bidx", legacy_patient::Entity::email_bidx_index());
    run(
        "legacy_patients.email_enc".into(),
        one("legacy_patients.email_enc", db, &spec, &options, chatty).await?,
    );
    let spec = RotateColumn::<String, legacy_patient::ctx::PhoneEnc>::new(
        "legacy_patients",
        "id",
        "phone_enc",
    );
    run(
        "legacy_patients.phone_enc".into(),
        one("legacy_patients.phone_enc", db, &spec, &options, chatty).await?,
    );
    let retirable_keys: Vec<u32> = held
        .iter()
        .filter(|k| **k != active && in_use.get(k).is_none_or(|n| *n == 0))
        .map(|k| k.0)
        .collect();
    Ok(RotationSummary {
        active_key: active.0,
        resealed,
        retirable_keys,
    })
}

async fn one<T, C>(
    name: &str,
    db: &DatabaseConnection,
    spec: &RotateColumn<T, C>,
    options: &RunOptions,
    chatty: bool,
) -> Result<migrate::RotationReport, String>
where
    T: Plaintext + IndexArg<T>,
    C: ColumnContext,
{
    let bar = if chatty {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    }
    .with_message(name.to_owned());
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>30} [{bar:30}] {pos}/{len} rows  {per_sec}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let report = migrate::rotate(db, spec, options, |p: &Progress| {
        bar.set_length(p.total);
        bar.set_position(p.done + p.skipped);
    })
    .await
    .map_err(|e| format!("rotating {name}: {}", db_err(e)))?;
    bar.finish_and_clear();
    if chatty {
        say!("  {name:<32} re-encrypted {} value(s)", report.resealed);
    }
    Ok(report)
}

/// Per `table.column` sealed with the clinic key: stored values per clinic key id.
pub async fn clinic_key_usage(
    db: &DatabaseConnection,
) -> Result<BTreeMap<String, BTreeMap<u32, u64>>, String> {
    let mut values_by_key = BTreeMap::new();
    for (table, column) in CLINIC_KEY_COLUMNS {
        let usage = match (table, column) {
            // Only the rows the clinic keyring wraps are envelopes; a KMS or HSM wraps the rest.
            ("patient_keys", "wrapped_key") => {
                migrate::key_usage_where(db, table, column, keyring_wrapped())
                    .await
                    .map_err(db_err)?
            }
            _ => migrate::key_usage(db, table, column)
                .await
                .map_err(db_err)?,
        };
        let usage: BTreeMap<u32, u64> = usage.into_iter().map(|(k, n)| (k.0, n)).collect();
        values_by_key.insert(format!("{table}.{column}"), usage);
    }
    Ok(values_by_key)
}

/// The `patient_keys` rows whose data key the clinic keyring wraps (an envelope).
fn keyring_wrapped() -> Condition {
    Condition::all().add(ExprTrait::eq(
        Expr::col(Alias::new(subject_keys::table::PROVIDER)),
        subject_keys::table::LEGACY_PROVIDER,
    ))
}
