//! Typed, encrypted-at-rest columns for [SeaORM](https://www.sea-ql.org/SeaORM/).
//!
//! Declare a field as `EncryptedString<Marker>` (or any [`Encrypted<T, C>`]) and SeaORM stores
//! an authenticated envelope instead of the plaintext: sealed when you build the value, opened
//! when a row is read. Values are encrypted with XAES-256-GCM under a per-column subkey derived
//! from a versioned [`Keyring`], and each envelope is bound to its logical table and column.
//!
//! ```
//! use encrypted_columns::{column_context, EncryptedString, Keyring, keyring};
//! use sea_orm::{entity::prelude::*, ActiveValue::Set};
//!
//! column_context!(pub PatientEmail, table = "patients", column = "email");
//!
//! #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
//! #[sea_orm(table_name = "patients")]
//! pub struct Model {
//!     #[sea_orm(primary_key)]
//!     pub id: i32,
//!     pub email: EncryptedString<PatientEmail>,
//! }
//! # #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)] pub enum Relation {}
//! impl ActiveModelBehavior for ActiveModel {}
//!
//! keyring::install(Keyring::generate()); // at start-up: Keyring::from_env()?
//! let email = EncryptedString::<PatientEmail>::new("ada@example.org".into())?;
//! let row = ActiveModel { email: Set(email), ..Default::default() };
//! # let _ = row;
//! # Ok::<(), encrypted_columns::Error>(())
//! ```
//!
//! The byte formats are specified in `FORMAT.md`, with test vectors.

#![warn(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
pub mod blind_index;
pub mod context;
pub mod envelope;
mod error;
pub mod kek;
mod key_id;
pub mod keyring;
pub mod keystore;
pub mod migrate;
pub mod schema;
mod seal;
pub mod subject_keys;
mod types;

pub use context::{ColumnContext, Context};
pub use error::{Error, Result};
pub use key_id::KeyId;
pub use keyring::Keyring;
pub use types::expose;
pub use types::{Encrypted, EncryptedBytes, EncryptedField, EncryptedString, Plaintext};
#[cfg(feature = "json")]
pub use types::{EncryptedJson, Json};

#[doc(hidden)]
pub use zeroize;

pub use encrypted_columns_derive::DeriveEncrypted;

// Compiles and runs the README's quick start as a doctest, so the first code users copy works.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
