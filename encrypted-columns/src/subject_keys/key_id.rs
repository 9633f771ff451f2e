//! One-to-one mapping between subject-key rows and envelope key ids.

use super::error::SubjectKeyError;
use crate::keyring::KeyId;

/// The default first envelope key id of subject keys: row 1 is key `0x8000_0001`. The
/// application's own keyring ids must stay below it.
pub const DEFAULT_ID_BASE: u32 = 0x8000_0000;

/// Maps subject-key rows to envelope key ids and back: key id = `base + row`.
///
/// Rows outside `1..=u32::MAX - base` have no key id: they are refused with
/// [`SubjectKeyError::InvalidRow`], never wrapped around onto another row's key.
///
/// ```
/// use encrypted_columns::KeyId;
/// use encrypted_columns::subject_keys::SubjectKeyIds;
///
/// let ids = SubjectKeyIds::default();
/// assert_eq!(ids.key_id(1)?, KeyId(0x8000_0001));
/// assert_eq!(ids.row_of(KeyId(0x8000_0001)), Some(1));
/// assert!(ids.key_id(0).is_err() && ids.key_id(-1).is_err());
/// assert!(ids.key_id(i64::from(u32::MAX)).is_err());
/// assert_eq!(ids.row_of(KeyId(7)), None);
/// # Ok::<(), encrypted_columns::subject_keys::SubjectKeyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubjectKeyIds {
    base: u32,
}

impl Default for SubjectKeyIds {
    fn default() -> Self {
        SubjectKeyIds {
            base: DEFAULT_ID_BASE,
        }
    }
}

impl SubjectKeyIds {
    /// Key ids from `base + 1` up. A base of `u32::MAX` leaves no room for any row and is
    /// refused.
    pub fn new(base: u32) -> Result<Self, SubjectKeyError> {
        if base == u32::MAX {
            return Err(SubjectKeyError::InvalidBase { base });
        }
        Ok(SubjectKeyIds { base })
    }

    /// The base: subject key ids are above it, the application's own keys at or below it.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// The largest row that has a key id.
    pub fn max_row(&self) -> i64 {
        i64::from(u32::MAX - self.base)
    }

    /// The envelope key id of row `row`.
    pub fn key_id(&self, row: i64) -> Result<KeyId, SubjectKeyError> {
        match u32::try_from(row) {
            Ok(n) if n > 0 && n <= u32::MAX - self.base => Ok(KeyId(self.base + n)),
            _ => Err(SubjectKeyError::InvalidRow {
                row,
                max: self.max_row(),
            }),
        }
    }

    /// The row whose key id is `id`, if `id` is a subject key id.
    pub fn row_of(&self, id: KeyId) -> Option<i64> {
        id.0.checked_sub(self.base)
            .filter(|n| *n > 0)
            .map(i64::from)
    }

    /// Whether `id` is in the subject range (the application's keyring must not use it).
    pub fn is_subject_key(&self, id: KeyId) -> bool {
        self.row_of(id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_key_ids_are_one_to_one_and_refuse_out_of_range_rows() {
        let ids = SubjectKeyIds::new(1000).unwrap();
        assert_eq!(ids.key_id(1).unwrap(), KeyId(1001));
        assert_eq!(ids.key_id(ids.max_row()).unwrap(), KeyId(u32::MAX));
        for bad in [0, -1, i64::MIN, ids.max_row() + 1, i64::MAX] {
            assert!(
                matches!(ids.key_id(bad), Err(SubjectKeyError::InvalidRow { row, .. }) if row == bad),
                "{bad}"
            );
        }
        for row in [1, 2, 77, ids.max_row()] {
            assert_eq!(ids.row_of(ids.key_id(row).unwrap()), Some(row));
        }
        assert_eq!(ids.row_of(KeyId(1000)), None);
        assert_eq!(ids.row_of(KeyId(3)), None);
        assert!(SubjectKeyIds::new(u32::MAX).is_err());
        let top = SubjectKeyIds::new(u32::MAX - 1).unwrap();
        assert_eq!(top.max_row(), 1);
        assert!(top.key_id(2).is_err());
    }
}
