//! `clinic index report`: what each blind index of `patients` reveals about the data.

use encrypted_columns::blind_index::leakage_report;
use serde::Serialize;

use crate::clinic::db_err;
use crate::commands::{Global, print_json};
use crate::entities::patient;
use crate::output::say;

#[derive(Debug, Serialize)]
struct IndexView {
    index: String,
    bits: u16,
    unique: bool,
    rows: u64,
    indexed: u64,
    distinct: u64,
    largest_group: u64,
    largest_share: f64,
    entropy_bits: f64,
    singletons: u64,
    /// Rows a lookup of one value is expected to return that do not match (dropped after
    /// decryption): indexed rows / 2^bits, for truncated indexes.
    false_positives_per_lookup: f64,
    warnings: Vec<String>,
}

/// Runs `clinic index report`.
pub async fn report(global: &Global) -> Result<(), String> {
    let clinic = global.open().await?;
    let mut views = Vec::new();
    for index in patient::Entity::blind_indexes() {
        let report = leakage_report(&clinic.db, "patients", index.name())
            .await
            .map_err(db_err)?;
        let bits = index.bit_len();
        let false_positives_per_lookup = if bits >= 64 {
            0.0
        } else {
            report.indexed as f64 / 2f64.powi(i32::from(bits))
        };
        views.push(IndexView {
            index: index.name().to_owned(),
            bits,
            unique: index.is_unique(),
            rows: report.rows,
            indexed: report.indexed,
            distinct: report.distinct,
            largest_group: report.largest_group,
            largest_share: report.largest_share,
            entropy_bits: report.entropy_bits,
            singletons: report.singletons,
            false_positives_per_lookup,
            warnings: report.warnings,
        });
    }
    if global.json {
        return print_json(&views);
    }
    say!(
        "Blind indexes of `patients` (computed from stored index values only; nothing is decrypted):"
    );
    for v in &views {
        say!(
            "\n  {} ({} bits{}): {} of {} rows indexed, {} distinct value(s)",
            v.index,
            v.bits,
            if v.unique { ", unique" } else { "" },
            v.indexed,
            v.rows,
            v.distinct
        );
        say!(
            "    largest group {} row(s) ({:.1}%), {:.1} bits of entropy, {} singleton(s)",
            v.largest_group,
            v.largest_share * 100.0,
            v.entropy_bits,
            v.singletons
        );
        if v.bits < 256 {
            say!(
                "    truncated: a lookup returns ~{:.2} unrelated row(s) on top of the matches, \
                 so equal index values do not prove equal plaintexts",
                v.false_positives_per_lookup
            );
        }
        for w in &v.warnings {
            say!("    warning: {w}");
        }
    }
    say!(
        "\nA blind index lets the database group rows with equal values: an index with few, \
         large groups leaks frequencies. Truncated indexes blur that at the cost of false \
         positives, which lookups drop after decrypting."
    );
    Ok(())
}

/// Runs `clinic index rebuild`.
pub async fn rebuild(_global: &Global, _batch_size: u64) -> Result<(), String> {
    Err("`clinic index rebuild` is not built yet".into())
}
