//! A key store: the application's root keys in a database table, each with its key check
//! value (FORMAT.md §10), either wrapped under a key-encryption key ([`crate::kek`]) or, for
//! keys supplied by environment variables, registered by check value only.
//!
//! * [`KeyStore::check_env_keys`]: a wrong `ENCRYPTED_COLUMNS_*` key under a known id is
//!   refused before it seals a value or computes an index value.
//! * [`KeyStore::create_key`], [`KeyStore::load`], [`KeyStore::promote`],
//!   [`KeyStore::retire`], [`KeyStore::list`]: keys generated and wrapped by a KEK provider,
//!   loaded into a [`Keyring`](crate::Keyring) at start-up.
//! * [`KeyStore::rewrap`]: KEK rotation, which rewraps the keys and never re-encrypts data.
//!
//! The table (`encrypted_columns_keys` by default) is created by
//! `migration::CreateKeyStore` (feature `migration`) or [`create_table_statement`].
//!
//! ```
//! use encrypted_columns::kek::StaticKek;
//! use encrypted_columns::keyring::KeyPurpose;
//! use encrypted_columns::keystore::{KeyState, KeyStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = sea_orm::Database::connect("sqlite::memory:").await?;
//! let store = KeyStore::new("clinic");
//! store.create_table(&db).await?;
//! let kek = StaticKek::generate("dev-kek");
//! store.create_key(&db, &kek, KeyPurpose::Encryption, KeyState::Active).await?;
//! store.create_key(&db, &kek, KeyPurpose::BlindIndex, KeyState::Active).await?;
//! let keyring = store.load(&db, &kek).await?;
//! assert_eq!(keyring.active_key_id().0, 1);
//! // Another KEK cannot load them, and the error says which provider and KEK it tried.
//! let err = store.load(&db, &StaticKek::generate("other")).await.unwrap_err();
//! assert!(err.to_string().contains("static (other)"), "{err}");
//! # Ok(()) }
//! ```

// Layout; every import points down this list, none back up:
//   `error`     KeyStoreError
//   `schema`    the table's CREATE statement and `a`, the identifier helper
//   `store`     KeyStore: table and scope, wrap contexts
//   `row`       KeyState, StoredKey, reading and checking rows; `list`
//   `check`     check values of environment keys
//   `admin`     create, promote, retire
//   `load`      unwrapping a scope's keys into a Keyring
//   `rewrap`    KEK rotation
//   `migration` the sea-orm-migration step (feature `migration`)

mod admin;
mod check;
mod error;
mod load;
#[cfg(feature = "migration")]
pub mod migration;
mod rewrap;
mod row;
mod schema;
mod store;

pub use check::{EnvCheckReport, EnvKeyCheck, EnvKeyOutcome};
pub use error::KeyStoreError;
pub use rewrap::{RewrapProgress, RewrapReport};
pub use row::{KeyState, StoredKey};
pub use schema::create_table_statement;
pub use store::{DEFAULT_TABLE, ENV_PROVIDER, KeyStore};
