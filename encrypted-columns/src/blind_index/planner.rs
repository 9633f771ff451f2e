//! Choosing how many bits of a blind index to keep.
//!
//! Truncation trades leakage for false positives. Keeping `N` bits puts the distinct values
//! into `2^N` buckets; we pick the largest `N` with `2^N <= distinct / 2`, so every index
//! value is shared by two or more distinct plaintexts on average (an observer cannot tell
//! that two rows hold the same value), and lookups return a few extra rows that are filtered
//! by decrypting. A UNIQUE index cannot be truncated: it keeps 256 bits and reveals which
//! rows are equal, which is what uniqueness means.

use std::fmt;

use super::MAX_BITS;

/// A recommendation from [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Rows expected in the table.
    pub rows: u64,
    /// Distinct plaintext values expected.
    pub distinct: u64,
    /// Recommended bits to keep.
    pub bits: u16,
    /// Bytes of each stored value (version byte included).
    pub value_len: usize,
    /// Expected rows returned per lookup that do not match and are filtered out.
    pub false_positives_per_lookup: f64,
    /// Expected distinct plaintexts sharing one index value.
    pub values_per_index_value: f64,
    /// A warning when the column has too few distinct values for any index to be safe.
    pub warning: Option<String>,
}

/// Recommends the bits to keep for a non-unique blind index over `rows` rows holding
/// `distinct` distinct values.
///
/// ```
/// use encrypted_columns::blind_index::plan;
///
/// let p = plan(1_000_000, 1_000_000); // one e-mail per patient
/// assert_eq!(p.bits, 18);
/// assert!(p.false_positives_per_lookup > 3.0 && p.false_positives_per_lookup < 4.0);
/// println!("{p}");
/// ```
pub fn plan(rows: u64, distinct: u64) -> Plan {
    let distinct = distinct.clamp(1, rows.max(1));
    // Largest N with 2^N <= distinct / 2, at least 1 bit.
    let half = (distinct / 2).max(1);
    let bits = (63 - half.leading_zeros()).clamp(1, u32::from(MAX_BITS)) as u16;
    let buckets = 2f64.powi(i32::from(bits));
    let rows_f = rows as f64;
    let distinct_f = distinct as f64;
    let other_rows = rows_f - rows_f / distinct_f;
    let warning = (distinct <= 16).then(|| {
        format!(
            "only {distinct} distinct values: any index of this column reveals which of a few \
             large groups each row is in (like sex or blood type); do not index it alone, or \
             index it compounded with a high-cardinality field"
        )
    });
    Plan {
        rows,
        distinct,
        bits,
        value_len: 1 + usize::from(bits).div_ceil(8),
        false_positives_per_lookup: other_rows / buckets,
        values_per_index_value: distinct_f / buckets,
        warning,
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} rows, {} distinct values: keep {} bits ({} bytes per value with the version byte)",
            self.rows, self.distinct, self.bits, self.value_len
        )?;
        writeln!(
            f,
            "  ~{:.2} false positives per lookup (filtered by decrypting), ~{:.2} distinct values per index value",
            self.false_positives_per_lookup, self.values_per_index_value
        )?;
        write!(
            f,
            "  for a UNIQUE index keep all 256 bits (33 bytes); equal rows are then visible as equal"
        )?;
        if let Some(warning) = &self.warning {
            write!(f, "\n  warning: {warning}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_at_least_two_values() {
        for distinct in [2u64, 3, 10, 1000, 65_536, 1 << 40] {
            let p = plan(distinct * 3, distinct);
            assert!(p.values_per_index_value >= 1.0, "{p:?}");
            if distinct >= 4 {
                assert!(p.values_per_index_value >= 2.0, "{p:?}");
                assert!(p.values_per_index_value < 4.0, "{p:?}");
            }
        }
    }

    #[test]
    fn low_cardinality_warns() {
        assert!(plan(1000, 2).warning.is_some());
        assert!(plan(1000, 900).warning.is_none());
        assert_eq!(plan(0, 0).bits, 1);
    }
}
