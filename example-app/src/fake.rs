//! Fictional patients for the demo: invented surnames, `example.org` addresses (reserved for
//! documentation, RFC 2606) and 555-01xx phone numbers (reserved for fiction). Generated from
//! a seed so every run stores the same people; no real data anywhere.

//!
//! Self-contained (no `crate::` paths): the CLI tests include this file to know which
//! plaintexts the demo stored, and look for them in the raw database.

use chrono::NaiveDate;

/// A generated person.
#[derive(Debug, Clone)]
pub struct Person {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub date_of_birth: NaiveDate,
    pub medical_history: Option<String>,
}

const FIRST: [&str; 24] = [
    "Alba", "Bram", "Cora", "Dario", "Edda", "Fenn", "Greta", "Hugo", "Ilse", "Jonas", "Kaia",
    "Lorin", "Mira", "Nils", "Odile", "Pavel", "Quinn", "Rosa", "Silas", "Tove", "Ulla", "Viggo",
    "Wren", "Yara",
];
const LAST_STEM: [&str; 16] = [
    "Example",
    "Sample",
    "Placeholder",
    "Fiction",
    "Mockery",
    "Testa",
    "Dummi",
    "Specimen",
    "Fabel",
    "Inventa",
    "Notreal",
    "Madeup",
    "Pretend",
    "Imagin",
    "Storybook",
    "Hypothe",
];
const LAST_END: [&str; 8] = ["wood", "sson", "berg", "ford", "ham", "ley", "mont", "vale"];
const STREETS: [&str; 8] = [
    "Elm", "Quarry", "Lantern", "Meadow", "Harbor", "Cedar", "Willow", "Orchard",
];
const HISTORY: [&str; 10] = [
    "Seasonal allergic rhinitis, managed with antihistamines.",
    "Penicillin intolerance (rash), documented in childhood.",
    "Type 2 diabetes, diet-controlled; HbA1c reviewed yearly.",
    "Mild persistent asthma; inhaled corticosteroid as needed.",
    "Appendectomy, uncomplicated recovery.",
    "Hypertension, on a low-dose ACE inhibitor.",
    "Migraine without aura, two to three episodes a month.",
    "Fractured left radius after a cycling fall, healed.",
    "Hypothyroidism, levothyroxine daily.",
    "No known chronic conditions.",
];

/// A small reproducible generator (SplitMix64): the demo must store the same people on every
/// run, so the tests can look for them in the raw database.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One of `items`.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Person number `n` (0-based) of the demo's generated population; call in order with one
/// generator.
pub fn person(n: u32, rng: &mut Rng) -> Person {
    let first = rng.pick(&FIRST).to_owned();
    let last = format!("{}{}", rng.pick(&LAST_STEM), rng.pick(&LAST_END));
    let email = format!(
        "{}.{}.{n:04}@example.org",
        first.to_lowercase(),
        last.to_lowercase()
    );
    let phone = (rng.below(10) != 0).then(|| format!("+1 555 01{:02}", rng.below(100)));
    let address = (rng.below(5) != 0).then(|| {
        format!(
            "{} {} Lane, Fictionville {:05}",
            1 + rng.below(400),
            rng.pick(&STREETS),
            10_000 + rng.below(80_000)
        )
    });
    let born = NaiveDate::from_ymd_opt(1930, 1, 1).unwrap_or_default()
        + chrono::Days::new(rng.below(365 * 85) as u64);
    let history = (rng.below(4) != 0).then(|| {
        let a = rng.pick(&HISTORY);
        let b = rng.pick(&HISTORY);
        if a == b {
            a.to_owned()
        } else {
            format!("{a} {b}")
        }
    });
    Person {
        first_name: first,
        last_name: last,
        email,
        phone,
        address,
        date_of_birth: born,
        medical_history: history,
    }
}
