//! Which blind-index keys the clinic's stored values still use: index values per key, and
//! the audit chain's MACs per key. `clinic index rebuild` and `clinic keys status` both say
//! from this which older keys can be retired.

use std::collections::BTreeMap;

use encrypted_columns::{KeyId, Keyring, migrate};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};

use crate::clinic::db_err;
use crate::entities::{audit_entry, patient};

/// Blind-index columns outside `patients` that the clinic keeps: `(table, column)`. `clinic
/// keys rotate` recomputes them (with the legacy table's envelopes).
pub(super) const OTHER_INDEX_COLUMNS: [(&str, &str); 1] = [("legacy_patients", "email_bidx")];

/// Stored index values per blind-index key id, for every blind index the clinic keeps
/// (`patients` and [`OTHER_INDEX_COLUMNS`]), keyed `table.column`. Reads only each value's
/// version byte, in the database.
pub async fn blind_index_usage(
    db: &DatabaseConnection,
) -> Result<BTreeMap<String, BTreeMap<u32, u64>>, String> {
    let mut columns: Vec<(&str, &str)> = patient::Entity::blind_indexes()
        .iter()
        .map(|i| ("patients", i.name()))
        .collect();
    columns.extend(OTHER_INDEX_COLUMNS);
    let mut out = BTreeMap::new();
    for (table, column) in columns {
        let usage = migrate::index_key_usage(db, table, column)
            .await
            .map_err(db_err)?;
        out.insert(
            format!("{table}.{column}"),
            usage.into_iter().map(|(k, n)| (k.0, n)).collect(),
        );
    }
    Ok(out)
}

/// Audit entries per blind-index key id that made their chain MAC.
pub async fn audit_mac_usage(db: &DatabaseConnection) -> Result<BTreeMap<u32, u64>, String> {
    let rows: Vec<(Option<i32>, i64)> = audit_entry::Entity::find()
        .select_only()
        .column(audit_entry::Column::MacKey)
        .column_as(audit_entry::Column::Id.count(), "n")
        .filter(audit_entry::Column::MacKey.is_not_null())
        .group_by(audit_entry::Column::MacKey)
        .into_tuple()
        .all(db)
        .await
        .map_err(db_err)?;
    Ok(rows
        .into_iter()
        .filter_map(|(k, n)| Some((u32::try_from(k?).ok()?, u64::try_from(n).ok()?)))
        .collect())
}

/// Loaded blind-index keys, other than the active one, that neither a stored index value
/// (`usage`) nor an audit chain MAC (`audit`) uses.
pub fn retirable_blind_index_keys(
    ring: &Keyring,
    usage: &BTreeMap<String, BTreeMap<u32, u64>>,
    audit: &BTreeMap<u32, u64>,
) -> Vec<u32> {
    let active: Option<KeyId> = ring.active_blind_index_key_id();
    ring.blind_index_key_ids()
        .filter(|k| Some(*k) != active)
        .filter(|k| blind_index_key_uses(k.0, usage, audit).is_empty())
        .map(|k| k.0)
        .collect()
}

/// Where key `id` is still used: for each `table.column` of `usage` (stored values per key
/// id), how many values it sealed or indexed; only columns with some. Empty: nothing needs it.
pub fn uses_of(id: u32, usage: &BTreeMap<String, BTreeMap<u32, u64>>) -> BTreeMap<String, u64> {
    usage
        .iter()
        .filter_map(|(column, by_key)| by_key.get(&id).map(|n| (column.clone(), *n)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// [`uses_of`] for blind-index key `id`, with the audit chain's MACs it made counted as
/// `audit_log.mac`: an older blind-index key can go only when nothing at all uses it.
pub fn blind_index_key_uses(
    id: u32,
    usage: &BTreeMap<String, BTreeMap<u32, u64>>,
    audit: &BTreeMap<u32, u64>,
) -> BTreeMap<String, u64> {
    let mut uses = uses_of(id, usage);
    if let Some(n) = audit.get(&id).filter(|n| **n > 0) {
        uses.insert("audit_log.mac".to_owned(), *n);
    }
    uses
}
