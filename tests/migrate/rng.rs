//! Seeded random choices: a test prints its seed, and `MIGRATE_TEST_SEED` repeats a run.

use std::time::{SystemTime, UNIX_EPOCH};

use encrypted_columns_tests::Backend;

/// SplitMix64: small, seedable, good enough to pick rows and delays.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mixed = [(30, 0xbf58_476d_1ce4_e5b9), (27, 0x94d0_49bb_1331_11eb)]
            .into_iter()
            .fold(self.0, |z, (shift, by): (u32, u64)| {
                (z ^ (z >> shift)).wrapping_mul(by)
            });
        mixed ^ (mixed >> 31)
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The run's seed: `MIGRATE_TEST_SEED` or the clock, printed so a failure can be repeated.
pub fn seed(test: &str, backend: Backend) -> u64 {
    let seed = std::env::var("MIGRATE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test} on {backend}: MIGRATE_TEST_SEED={seed}");
    seed
}
