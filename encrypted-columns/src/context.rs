//! Column context: the logical (table, column) pair bound into every envelope.
//!
//! The context selects the per-column subkey (HKDF) and is part of the associated data, so a
//! ciphertext copied from `patients.email` into `patients.phone` fails to open instead of
//! decrypting as the wrong field. Names are *logical*: renaming a physical table or column
//! keeps data readable as long as the logical names stay.
//!
//! Entity fields carry their context in the type (`EncryptedString<PatientEmail>`), because
//! SeaORM's `Into<Value>` and `TryGetable` receive no column information at run time. Declare
//! marker types with [`column_context!`](crate::column_context).

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

/// A logical (table, column) pair. Cheap to copy; names are `'static` so per-column ciphers
/// can be cached without allocating on every seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Context {
    table: &'static str,
    column: &'static str,
}

impl Context {
    /// A context from static names (what [`column_context!`](crate::column_context) generates).
    ///
    /// ```
    /// # use encrypted_columns::Context;
    /// let ctx = Context::new("patients", "email");
    /// assert_eq!(ctx.table(), "patients");
    /// ```
    pub const fn new(table: &'static str, column: &'static str) -> Self {
        Context { table, column }
    }

    /// A context from names known only at run time (migration tooling, CLIs). Each distinct
    /// pair is interned once for the life of the process, so call this with a bounded set of
    /// names (your schema's columns), not with user input.
    pub fn intern(table: &str, column: &str) -> Result<Self> {
        check_name(table, column)?;
        static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
        let mut names = NAMES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut get = |s: &str| -> &'static str {
            match names.get(s) {
                Some(interned) => interned,
                None => {
                    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
                    names.insert(leaked);
                    leaked
                }
            }
        };
        let table = get(table);
        let column = get(column);
        Ok(Context { table, column })
    }

    /// The logical table name.
    pub const fn table(&self) -> &'static str {
        self.table
    }

    /// The logical column name.
    pub const fn column(&self) -> &'static str {
        self.column
    }

    /// Checks the names can be length-prefixed into key derivation and associated data.
    pub(crate) fn validate(&self) -> Result<()> {
        check_name(self.table, self.column)
    }
}

fn check_name(table: &str, column: &str) -> Result<()> {
    let problem = if table.is_empty() || column.is_empty() {
        Some("table and column names must not be empty")
    } else if table.len() > usize::from(u16::MAX) || column.len() > usize::from(u16::MAX) {
        Some("names must be at most 65535 bytes")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::InvalidContext {
            table: table.to_owned(),
            column: column.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

/// A marker type naming the logical column an encrypted field belongs to.
///
/// Implement it with [`column_context!`](crate::column_context) (or, later, the derive).
pub trait ColumnContext: Send + Sync + 'static {
    /// Logical table name.
    const TABLE: &'static str;
    /// Logical column name.
    const COLUMN: &'static str;
    /// The context value for this marker.
    const CONTEXT: Context = Context::new(Self::TABLE, Self::COLUMN);
}

/// Declares a [`ColumnContext`] marker type.
///
/// ```
/// use encrypted_columns::{column_context, ColumnContext};
///
/// column_context!(pub PatientEmail, table = "patients", column = "email");
/// assert_eq!(PatientEmail::COLUMN, "email");
/// ```
#[macro_export]
macro_rules! column_context {
    ($(#[$meta:meta])* $vis:vis $name:ident, table = $table:literal, column = $column:literal $(,)?) => {
        $(#[$meta])*
        #[doc = concat!("Column context marker for `", $table, ".", $column, "`.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        $vis struct $name;

        impl $crate::ColumnContext for $name {
            const TABLE: &'static str = $table;
            const COLUMN: &'static str = $column;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intern_returns_equal_contexts() {
        let a = Context::intern("t", "c").expect("valid");
        let b = Context::intern(&String::from("t"), "c").expect("valid");
        assert_eq!(a, b);
        assert_eq!(a, Context::new("t", "c"));
        assert!(std::ptr::eq(a.table(), b.table()));
    }

    #[test]
    fn rejects_empty_names() {
        assert!(matches!(
            Context::intern("", "c"),
            Err(Error::InvalidContext { .. })
        ));
        assert!(Context::new("t", "").validate().is_err());
    }
}
