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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use encrypted_columns::blind_index::{BlindIndex, IndexInput, plan};
    use encrypted_columns::{KeyId, Keyring};

    use super::*;

    /// Buckets holding exactly one of the 10,000 last-4 values "0000".."9999" under `index`,
    /// with a fixed blind-index key (so the count is the same on every run).
    fn lonely_last4s(index: &BlindIndex) -> usize {
        let mut ring = Keyring::new(KeyId(1), [0x11; 32]);
        ring.add_blind_index_key(KeyId(1), [0x5a; 32])
            .expect("blind-index key");
        let mut buckets: HashMap<Vec<u8>, u32> = HashMap::new();
        for n in 0..10_000 {
            let last4 = format!("{n:04}");
            let value = index
                .compute(&ring, &[Some(IndexInput::Text(&last4))])
                .expect("computes")
                .expect("not NULL");
            *buckets.entry(value).or_default() += 1;
        }
        buckets.values().filter(|n| **n == 1).count()
    }

    /// The phone-last-4 index keeps the bits the planner gives for 10,000 possible values,
    /// and at that size few last-4s are alone in their bucket (their index value would give
    /// them away); at 16 bits most were.
    #[test]
    fn phone_last4_is_sized_by_the_planner_and_rarely_singles_a_value_out() {
        let index = patient::Entity::phone_last4_bidx_index();
        let planned = plan(10_000, 10_000);
        assert_eq!(planned.bits, 12, "{planned}");
        assert_eq!(index.bit_len(), planned.bits);
        assert!(
            (2.0..3.0).contains(&planned.values_per_index_value),
            "{planned}"
        );

        // The check: at most 12% of last-4 values alone in their bucket (expected
        // 10,000 · (1 − 2^-12)^9999 ≈ 870, 8.7%).
        let few_alone = |alone: usize| alone <= 1_200;
        let alone = lonely_last4s(index);
        eprintln!("12 bits: {alone} of 10,000 last-4 values alone in their bucket");
        assert!(few_alone(alone), "{alone} of 10,000 alone at 12 bits");
        assert!(
            alone >= 600,
            "{alone}: far fewer than expected, is the key fixed?"
        );

        // The same index at the old 16 bits fails it (expected ≈ 8,585, 86%).
        let sixteen = index
            .parts()
            .iter()
            .fold(BlindIndex::new(index.table(), index.name()), |i, part| {
                i.field(part.clone())
            })
            .bits(16);
        let alone_16 = lonely_last4s(&sixteen);
        eprintln!("16 bits: {alone_16} of 10,000 last-4 values alone in their bucket");
        assert!(
            !few_alone(alone_16),
            "{alone_16} of 10,000 alone at 16 bits"
        );
    }
}
