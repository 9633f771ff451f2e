//! Opening patient rows one by one, each bound to its own patient's data key.
//!
//! Reading many patients at once needs a keyring holding all their data keys. With such a
//! ring, an envelope copied from patient 2's row into patient 1's would open, and be shown as
//! patient 1's. Per-patient keys make a binding free: every envelope in a row must carry that
//! row's own data key id (`data_key_id(key_id)`) in its header. So rows are read as raw bytes
//! and opened here, each envelope checked against its row before it is decrypted; a row that
//! fails is reported by id with the reason, and the other rows are still shown.

use chrono::{DateTime, NaiveDate, Utc};
use encrypted_columns::envelope::{EnvelopeError, key_id_of};
use encrypted_columns::{ColumnContext, Encrypted, KeyId, Keyring, Plaintext};
use sea_orm::{EntityTrait, FromQueryResult, QuerySelect, Select};

use super::{data_key_id, seal_err};
use crate::entities::patient::{self, Column};

/// A `patients` row as stored: envelopes still sealed.
#[derive(Debug, FromQueryResult)]
pub struct RawPatient {
    pub id: i32,
    pub key_id: i32,
    pub first_name: Vec<u8>,
    pub last_name: Vec<u8>,
    pub email: Vec<u8>,
    pub email_bidx: Vec<u8>,
    pub phone: Option<Vec<u8>>,
    pub phone_last4_bidx: Option<Vec<u8>>,
    pub address: Option<Vec<u8>>,
    pub date_of_birth: Vec<u8>,
    pub name_dob_bidx: Vec<u8>,
    pub medical_history: Option<Vec<u8>>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A row that could not be shown, and why (one line, no data).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unreadable {
    pub id: i32,
    pub reason: String,
}

/// Patients read in one go: those that opened, and those that did not.
#[derive(Debug, Default)]
pub struct Listing {
    pub rows: Vec<patient::Model>,
    pub unreadable: Vec<Unreadable>,
}

impl Listing {
    /// Fails, after the readable rows were shown, when some were not: the count and ids.
    pub fn finish(&self) -> Result<(), String> {
        if self.unreadable.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = self.unreadable.iter().map(|u| u.id.to_string()).collect();
        Err(format!(
            "{} patient row(s) could not be read (ids {}): {}",
            self.unreadable.len(),
            ids.join(", "),
            self.unreadable[0].reason
        ))
    }
}

/// `patients` selected as [`RawPatient`]s (add filters and order to it).
pub fn select_raw() -> Select<patient::Entity> {
    patient::Entity::find().select_only().columns([
        Column::Id,
        Column::KeyId,
        Column::FirstName,
        Column::LastName,
        Column::Email,
        Column::EmailBidx,
        Column::Phone,
        Column::PhoneLast4Bidx,
        Column::Address,
        Column::DateOfBirth,
        Column::NameDobBidx,
        Column::MedicalHistory,
        Column::Active,
        Column::CreatedAt,
        Column::UpdatedAt,
    ])
}

impl RawPatient {
    /// Every envelope of the row with the column it is in.
    pub fn envelopes(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        [
            ("first_name", Some(&self.first_name)),
            ("last_name", Some(&self.last_name)),
            ("email", Some(&self.email)),
            ("phone", self.phone.as_ref()),
            ("address", self.address.as_ref()),
            ("date_of_birth", Some(&self.date_of_birth)),
            ("medical_history", self.medical_history.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, bytes)| bytes.map(|b| (name, b.as_slice())))
    }

    /// The data key id every envelope of this row must carry.
    pub fn expected_key(&self) -> Result<KeyId, String> {
        data_key_id(self.key_id).map_err(|e| format!("patient {}: {e}", self.id))
    }

    /// Opens the row with `ring` after checking that every envelope is sealed with this
    /// row's own data key.
    pub fn open(self, ring: &Keyring) -> Result<patient::Model, String> {
        let expected = self.expected_key()?;
        for (column, bytes) in self.envelopes() {
            check_bound(self.id, column, bytes, expected)?;
        }
        let id = self.id;
        Ok(patient::Model {
            id,
            key_id: self.key_id,
            first_name: open(ring, id, "first_name", self.first_name)?,
            last_name: open(ring, id, "last_name", self.last_name)?,
            email: open(ring, id, "email", self.email)?,
            email_bidx: self.email_bidx,
            phone: open_opt(ring, id, "phone", self.phone)?,
            phone_last4_bidx: self.phone_last4_bidx,
            address: open_opt(ring, id, "address", self.address)?,
            date_of_birth: open::<NaiveDate, _>(ring, id, "date_of_birth", self.date_of_birth)?,
            name_dob_bidx: self.name_dob_bidx,
            medical_history: open_opt(ring, id, "medical_history", self.medical_history)?,
            active: self.active,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Why an envelope is not bound to the data key its row names.
#[derive(Debug)]
pub enum Unbound {
    /// Not even an envelope header.
    NotAnEnvelope(EnvelopeError),
    /// An envelope sealed with this other key.
    OtherKey(KeyId),
}

/// The binding check of every place that reads several patients with one keyring (rows,
/// audit details, erasure): `bytes` must be an envelope sealed with `expected`.
pub fn bound_to(bytes: &[u8], expected: KeyId) -> Result<(), Unbound> {
    match key_id_of(bytes) {
        Err(e) => Err(Unbound::NotAnEnvelope(e)),
        Ok(found) if found != expected => Err(Unbound::OtherKey(found)),
        Ok(_) => Ok(()),
    }
}

/// Refuses an envelope of patient `id` whose header names a key other than `expected`.
pub fn check_bound(id: i32, column: &str, bytes: &[u8], expected: KeyId) -> Result<(), String> {
    bound_to(bytes, expected).map_err(|unbound| match unbound {
        Unbound::NotAnEnvelope(e) => format!("patient {id}: {column} is not an envelope: {e}"),
        Unbound::OtherKey(found) => format!(
            "patient {id}: {column} is sealed with key {found}, not this patient's data key \
             {expected}: the value belongs to another record or the row was tampered with"
        ),
    })
}

fn open<T: Plaintext, C: ColumnContext>(
    ring: &Keyring,
    id: i32,
    column: &str,
    bytes: Vec<u8>,
) -> Result<Encrypted<T, C>, String> {
    Encrypted::from_envelope_with(ring, bytes)
        .map_err(|e| format!("patient {id}: {column}: {}", seal_err(&e)))
}

fn open_opt<T: Plaintext, C: ColumnContext>(
    ring: &Keyring,
    id: i32,
    column: &str,
    bytes: Option<Vec<u8>>,
) -> Result<Option<Encrypted<T, C>>, String> {
    bytes.map(|b| open(ring, id, column, b)).transpose()
}
