//! The pre-check of a backfill: plaintexts that would collide under a UNIQUE blind index.
//!
//! Legacy data was never held to the normalized uniqueness the index enforces
//! (`Ada@Example.org` and ` ada@example.org` are one e-mail to the `email` pipeline), so a
//! backfill would stop at the first colliding batch with a bare constraint error. Finding
//! every collision first names them all, before anything is written.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DbErr};

use super::plan::EncryptTable;
use super::sql::scan;
use super::verify::MAX_LISTED_IDS;
use crate::keyring::Keyring;

/// Fails with [`Error::DuplicateValues`](crate::Error::DuplicateValues) for the first unique
/// index whose values (computed from plaintext where there is one, as stored otherwise)
/// repeat across rows. Indexes unique per [`scope`](crate::blind_index::BlindIndex::scope)
/// (per tenant) are not checked here: the same value in two scopes is allowed, and telling
/// scopes apart would need the scope columns; the database's composite UNIQUE index still
/// refuses a duplicate within one scope when the backfill writes it.
pub(crate) async fn unique_duplicates<C: ConnectionTrait>(
    db: &C,
    keyring: &Keyring,
    plan: &EncryptTable,
    batch: u64,
) -> Result<(), DbErr> {
    let (table, pk) = (&plan.table, &plan.primary_key);
    for job in &plan.columns {
        let unique: Vec<usize> = (0..job.indexes().len())
            .filter(|&i| {
                let index = &job.indexes()[i].1;
                index.is_unique() && index.scope().is_empty()
            })
            .collect();
        if unique.is_empty() {
            continue;
        }
        let mut seen: Vec<HashMap<Vec<u8>, Vec<i64>>> = vec![HashMap::new(); unique.len()];
        let mut columns = vec![job.plaintext()];
        columns.extend(unique.iter().map(|&i| job.indexes()[i].0.as_str()));
        scan(db, table, pk, &columns, batch, |id, row| {
            let computed = job.index_values(keyring, row)?;
            for (slot, &i) in unique.iter().enumerate() {
                let value = match computed[i].clone() {
                    Some(v) => Some(v),
                    None => row.try_get::<Option<Vec<u8>>>("", &job.indexes()[i].0)?,
                };
                if let Some(value) = value {
                    seen[slot].entry(value).or_default().push(id);
                }
            }
            Ok(())
        })
        .await?;
        for (slot, &i) in unique.iter().enumerate() {
            let mut groups: Vec<Vec<i64>> = seen[slot]
                .drain()
                .map(|(_, ids)| ids)
                .filter(|ids| ids.len() > 1)
                .collect();
            if groups.is_empty() {
                continue;
            }
            groups.sort();
            let count = groups.iter().map(|g| g.len() as u64).sum();
            let ids = groups.into_iter().flatten().take(MAX_LISTED_IDS).collect();
            return Err(crate::Error::DuplicateValues {
                table: table.clone(),
                column: job.plaintext().to_owned(),
                index: job.indexes()[i].0.clone(),
                count,
                ids,
            }
            .into());
        }
    }
    Ok(())
}
