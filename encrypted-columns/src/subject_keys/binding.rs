//! Binding an envelope to its subject: when one keyring holds many subjects' keys (a listing),
//! an envelope copied from subject B's record into subject A's would open, and be shown as
//! A's. Every envelope names its key id in its header, and a subject's key id is its row's,
//! so checking the header against the row the record references binds value and subject for
//! free, before anything is decrypted.

use super::error::SubjectKeyError;
use super::key_id::SubjectKeyIds;
use crate::envelope::key_id_of;

impl SubjectKeyIds {
    /// Succeeds if `envelope` is sealed with subject row `row`'s own key; otherwise
    /// [`SubjectKeyError::Unbound`] naming the row and what the envelope carries (never its
    /// bytes), or [`SubjectKeyError::InvalidRow`] for a row that has no key id.
    ///
    /// ```
    /// use encrypted_columns::{Context, KeyId, Keyring};
    /// use encrypted_columns::subject_keys::{SubjectKeyError, SubjectKeyIds};
    ///
    /// let ids = SubjectKeyIds::default();
    /// let ring = Keyring::new(ids.key_id(7)?, [1u8; 32]);
    /// let envelope = ring.seal(Context::new("notes", "body"), b"hello")?;
    /// assert!(ids.check_binding(&envelope, 7).is_ok());
    /// assert!(matches!(
    ///     ids.check_binding(&envelope, 8),
    ///     Err(SubjectKeyError::Unbound { row: 8, .. })
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_binding(&self, envelope: &[u8], row: i64) -> Result<(), SubjectKeyError> {
        let expected = self.key_id(row)?;
        let found = match key_id_of(envelope) {
            Ok(found) if found == expected => return Ok(()),
            Ok(found) => match self.row_of(found) {
                Some(other) => format!("sealed with key {found} (subject key row {other})"),
                None => format!("sealed with key {found} (not a subject key)"),
            },
            Err(problem) => format!("not an envelope ({problem})"),
        };
        Err(SubjectKeyError::Unbound {
            row,
            expected,
            found,
        })
    }
}
