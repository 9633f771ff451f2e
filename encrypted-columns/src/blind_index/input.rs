//! What can be fed to a blind index: text (normalized by the index's transforms) or the
//! fixed byte encoding of any other plaintext type.

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::types::Plaintext;

/// One input of a blind index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexInput<'a> {
    /// Text, normalized by the index's pipeline before hashing.
    Text(&'a str),
    /// Bytes hashed as they are: byte strings, and numbers or dates in their FORMAT.md
    /// plaintext encoding. Transforms do not apply.
    Bytes(Cow<'a, [u8]>),
}

impl<'a> IndexInput<'a> {
    /// The input for a plaintext value of any [`Plaintext`] type: its stored encoding.
    pub fn encoded<T: Plaintext>(value: &T) -> Result<IndexInput<'static>> {
        let mut out = Vec::with_capacity(value.encoded_len());
        value.encode(&mut out).map_err(|problem| Error::Encode {
            type_name: T::TYPE_NAME,
            problem,
        })?;
        Ok(IndexInput::Bytes(Cow::Owned(out)))
    }
}

/// A value usable to look up, or compute the index of, a field whose plaintext type is `T`.
///
/// `find_by_email_bidx("ada@example.org")` accepts `&str` for an `EncryptedString` field
/// because `str: IndexArg<String>`. Implement it for your own [`Plaintext`] types with
/// [`IndexInput::encoded`].
pub trait IndexArg<T: ?Sized> {
    /// The input this value contributes.
    fn index_input(&self) -> Result<IndexInput<'_>>;
}

impl IndexArg<String> for str {
    fn index_input(&self) -> Result<IndexInput<'_>> {
        Ok(IndexInput::Text(self))
    }
}

impl IndexArg<String> for String {
    fn index_input(&self) -> Result<IndexInput<'_>> {
        Ok(IndexInput::Text(self))
    }
}

impl IndexArg<Vec<u8>> for [u8] {
    fn index_input(&self) -> Result<IndexInput<'_>> {
        Ok(IndexInput::Bytes(Cow::Borrowed(self)))
    }
}

impl IndexArg<Vec<u8>> for Vec<u8> {
    fn index_input(&self) -> Result<IndexInput<'_>> {
        Ok(IndexInput::Bytes(Cow::Borrowed(self)))
    }
}

impl<T: ?Sized, A: IndexArg<T> + ?Sized> IndexArg<T> for &A {
    fn index_input(&self) -> Result<IndexInput<'_>> {
        (**self).index_input()
    }
}

macro_rules! encoded_index_arg {
    ($($ty:ty),* $(,)?) => {$(
        impl IndexArg<$ty> for $ty {
            fn index_input(&self) -> Result<IndexInput<'_>> {
                IndexInput::encoded(self)
            }
        }
    )*};
}

encoded_index_arg!(i16, i32, i64, u32, u64, f32, f64, bool);
#[cfg(feature = "chrono")]
encoded_index_arg!(
    chrono::NaiveDate,
    chrono::NaiveDateTime,
    chrono::DateTime<chrono::Utc>
);
