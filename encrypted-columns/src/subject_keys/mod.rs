//! Subject keys: one data key per patient, tenant or customer, wrapped by a KEK provider and
//! stored in a table the application references, so erasing a subject is deleting one row
//! (crypto-shredding).
//!
//! Data flows one way: a [`KeyEncryptionKey`] provider unwraps the rows of the subject-key
//! table ([`table`]), [`SubjectKeys`] verifies and caches them, and hands out a [`Keyring`](crate::Keyring)
//! holding them (decrypt-only, or sealing for one subject).
//!
//! * **Key ids** ([`SubjectKeyIds`]): a subject's envelope key id is `base + row` (base
//!   `0x8000_0000` by default), one-to-one; rows outside the range are refused, never mapped
//!   onto another row.
//! * **Binding**: each key is wrapped bound to `WrapContext::new(key_id, "subject", table)` and
//!   stored with its check value (FORMAT.md §10, purpose `subject`, its key id). Every unwrapped
//!   key is checked against it, so a wrapped key swapped between rows is refused even with a
//!   provider that binds no context ([`KeyringKek`](crate::kek::KeyringKek)). Envelopes are
//!   bound to their subject with [`SubjectKeyIds::check_binding`].
//! * **Batch open** ([`SubjectKeys::keyring`]): cached keys from the [cache](CacheConfig), the
//!   misses read in one query per 500 rows and unwrapped concurrently; one bad row costs only
//!   its own subject ([`SubjectRing::broken`]).
//! * **Destroy** ([`SubjectKeys::destroy`]): locks, deletes, proves no row with the id and no
//!   copy of the key remains, evicts the cached key.
//!
//! ```
//! use std::sync::Arc;
//! use encrypted_columns::{Context, Keyring};
//! use encrypted_columns::kek::{KeyEncryptionKey, StaticKek};
//! use encrypted_columns::subject_keys::{SubjectKeys, table};
//! use sea_orm::{ConnectionTrait, Database};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = Database::connect("sqlite::memory:").await?;
//! db.execute(&table::create_table_statement("tenant_keys")).await?;
//! let kek: Arc<dyn KeyEncryptionKey> = Arc::new(StaticKek::generate("kek-1"));
//! let keys = SubjectKeys::new("tenant_keys", kek);
//! let app = Keyring::generate();
//!
//! let tenant = keys.create(&db).await?;             // row 1, key id 0x8000_0001
//! let sealing = tenant.sealing_ring(&app);
//! let ctx = Context::new("invoices", "body");
//! let envelope = sealing.seal(ctx, b"42 EUR")?;
//!
//! let opened = keys.keyring(&db, &app, [tenant.row()]).await?;
//! keys.check_binding(&envelope, tenant.row())?;
//! assert_eq!(opened.ring.open(ctx, &envelope)?.as_slice(), b"42 EUR");
//!
//! keys.destroy(&db, tenant.row()).await?;          // crypto-shredded
//! let after = keys.keyring(&db, &app, [tenant.row()]).await?;
//! assert!(after.missing.contains(&tenant.row()));
//! assert!(after.ring.open(ctx, &envelope).is_err());
//! # Ok(()) }
//! ```

mod binding;
mod cache;
mod destroy;
mod error;
mod key_id;
mod open;
mod rewrap;
pub mod table;

use std::fmt;
use std::sync::Arc;

pub use cache::CacheConfig;
pub use destroy::DestroyReport;
pub use error::SubjectKeyError;
pub use key_id::{DEFAULT_ID_BASE, SubjectKeyIds};
pub use open::{SubjectKey, SubjectRing};
pub use rewrap::{SubjectRewrapProgress, SubjectRewrapReport};

use crate::kek::KeyEncryptionKey;
use cache::KeyCache;

/// How many unwraps [`SubjectKeys::keyring`] keeps in flight by default.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// The subject keys of one table: which KEK wraps new keys, which KEKs may read old ones, the
/// key-id mapping and the cache. Share one per process (`Arc`), so the cache is shared too.
pub struct SubjectKeys {
    table: String,
    kek: Arc<dyn KeyEncryptionKey>,
    readers: Vec<Arc<dyn KeyEncryptionKey>>,
    ids: SubjectKeyIds,
    cache: KeyCache,
    concurrency: usize,
}

impl fmt::Debug for SubjectKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectKeys")
            .field("table", &self.table)
            .field("kek", &(self.kek.provider(), self.kek.kek_id()))
            .field(
                "readers",
                &self
                    .readers
                    .iter()
                    .map(|k| (k.provider(), k.kek_id()))
                    .collect::<Vec<_>>(),
            )
            .field("ids", &self.ids)
            .field("cache", &self.cache.config())
            .finish_non_exhaustive()
    }
}

impl SubjectKeys {
    /// The subject keys stored in `table`, new ones wrapped by `kek` (which also reads the
    /// rows it wrapped). Default key-id base, cache and concurrency.
    pub fn new(table: impl Into<String>, kek: Arc<dyn KeyEncryptionKey>) -> Self {
        SubjectKeys {
            table: table.into(),
            kek,
            readers: Vec::new(),
            ids: SubjectKeyIds::default(),
            cache: KeyCache::new(CacheConfig::default()),
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// Also reads rows wrapped by `kek` (another provider, or a retired KEK), never wrapping
    /// new keys with it.
    pub fn with_reader(mut self, kek: Arc<dyn KeyEncryptionKey>) -> Self {
        self.readers.push(kek);
        self
    }

    /// Wraps new keys with `kek` from now on; the previous KEK stays a reader, so the rows it
    /// wrapped stay readable.
    pub fn with_kek(mut self, kek: Arc<dyn KeyEncryptionKey>) -> Self {
        let old = std::mem::replace(&mut self.kek, kek);
        self.readers.insert(0, old);
        self
    }

    /// Uses another key-id mapping (see [`SubjectKeyIds::new`]).
    pub fn with_ids(mut self, ids: SubjectKeyIds) -> Self {
        self.ids = ids;
        self
    }

    /// Replaces the cache (emptying it) with one configured by `config`.
    pub fn with_cache(mut self, config: CacheConfig) -> Self {
        self.cache = KeyCache::new(config);
        self
    }

    /// At most `n` unwraps in flight per [`keyring`](Self::keyring) call (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The key-id mapping.
    pub fn ids(&self) -> SubjectKeyIds {
        self.ids
    }

    /// The KEK that wraps new keys.
    pub fn kek(&self) -> &Arc<dyn KeyEncryptionKey> {
        &self.kek
    }

    /// How many keys the cache holds now.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Forgets `row`'s cached key (e.g. after another process destroyed it).
    pub fn evict(&self, row: i64) {
        self.cache.evict(row);
    }

    /// See [`SubjectKeyIds::check_binding`].
    pub fn check_binding(&self, envelope: &[u8], row: i64) -> Result<(), SubjectKeyError> {
        self.ids.check_binding(envelope, row)
    }

    /// The configured KEK for a row stored with `provider` and `kek_id` (NULL: any KEK of
    /// the provider).
    fn kek_for(
        &self,
        row: i64,
        provider: &str,
        kek_id: Option<&str>,
    ) -> Result<&Arc<dyn KeyEncryptionKey>, SubjectKeyError> {
        std::iter::once(&self.kek)
            .chain(&self.readers)
            .find(|k| k.provider() == provider && kek_id.is_none_or(|id| k.kek_id() == id))
            .ok_or_else(|| SubjectKeyError::NoKek {
                row,
                provider: provider.to_owned(),
                kek_id: kek_id.unwrap_or("any").to_owned(),
            })
    }
}
