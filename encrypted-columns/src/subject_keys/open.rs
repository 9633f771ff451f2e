//! Creating subject keys, and opening many at once into a keyring.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query, SelectStatement};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, TransactionSession, TransactionTrait};
use zeroize::Zeroizing;

use super::SubjectKeys;
use super::error::SubjectKeyError;
use super::key_id::SubjectKeyIds;
use super::table::{CHECK_VALUE, CREATED_AT, ID, KEK_ID, PROVIDER, WRAPPED_KEY};
use crate::kek::{WRAPPED_KEY_LEN, WrapContext, WrappedKey};
use crate::keyring::{CheckValue, KeyId, KeyPurpose, Keyring, check_value};

/// Rows per `IN (…)` list: far under every backend's placeholder limit (SQLite's oldest is
/// 999), and large enough that 1,000 subjects cost two queries.
const CHUNK: usize = 500;

/// A key row as stored.
pub(super) struct StoredKey {
    pub(super) row: i64,
    pub(super) wrapped: Vec<u8>,
    pub(super) provider: String,
    pub(super) kek_id: Option<String>,
    pub(super) check_value: Option<Vec<u8>>,
}

impl StoredKey {
    /// The stored check value, `None` for rows written before check values existed.
    pub(super) fn expected_check_value(&self) -> Result<Option<CheckValue>, SubjectKeyError> {
        self.check_value
            .as_deref()
            .map(|bytes| {
                CheckValue::from_bytes(bytes).ok_or_else(|| SubjectKeyError::Damaged {
                    row: self.row,
                    problem: format!("its check value is {} bytes, not 16", bytes.len()),
                })
            })
            .transpose()
    }
}

/// A subject key just created: its row (what the application stores as the subject's key
/// reference) and envelope key id. Holds the key to seal the subject's first values without
/// another unwrap; `Debug` prints the row and id only.
pub struct SubjectKey {
    row: i64,
    key_id: KeyId,
    key: Zeroizing<[u8; WRAPPED_KEY_LEN]>,
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectKey")
            .field("row", &self.row)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SubjectKey {
    /// The row in the subject-key table.
    pub fn row(&self) -> i64 {
        self.row
    }

    /// The envelope key id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// A keyring sealing with this key, with `base`'s blind-index keys (see
    /// [`Keyring::with_data_key`]).
    pub fn sealing_ring(&self, base: &Keyring) -> Keyring {
        base.with_data_key_zeroizing(self.key_id, &self.key)
    }
}

/// Subjects' keys opened together: a keyring with them, and the rows that did not open.
#[derive(Debug)]
pub struct SubjectRing {
    /// The base keyring plus every key that opened, decrypt-only (the base's active key
    /// stays active).
    pub ring: Arc<Keyring>,
    /// Rows asked for that have no key row: erased subjects (their values no longer open).
    pub missing: BTreeSet<i64>,
    /// Rows whose key is not in `ring`, and why: damaged, tampered, wrong KEK, check-value
    /// mismatch, provider unreachable. Only their own subjects are affected.
    pub broken: BTreeMap<i64, SubjectKeyError>,
    /// Rows opened without a stored check value (written before check values existed):
    /// trusted on first use; fill them with [`SubjectKeys::fill_check_value`].
    pub unchecked: BTreeSet<i64>,
    ids: SubjectKeyIds,
}

impl SubjectRing {
    /// A keyring that seals with `row`'s key (and still opens every other key here).
    pub fn sealing(&self, row: i64) -> Result<Keyring, SubjectKeyError> {
        let mut sealing = (*self.ring).clone();
        sealing
            .promote(self.ids.key_id(row)?)
            .map_err(|_| SubjectKeyError::Missing { row })?;
        Ok(sealing)
    }

    /// Moves `row`'s failure out: its error if broken, [`SubjectKeyError::Missing`] if it
    /// has no key row, `Ok` if its key is in the ring.
    pub fn take_error(&mut self, row: i64) -> Result<(), SubjectKeyError> {
        if let Some(err) = self.broken.remove(&row) {
            return Err(err);
        }
        if self.missing.contains(&row) {
            return Err(SubjectKeyError::Missing { row });
        }
        Ok(())
    }
}

impl SubjectKeys {
    /// Creates a subject key: a row in the table (its id is the subject's key reference), a
    /// fresh key from [`generate_key`](crate::kek::KeyEncryptionKey::generate_key) bound to
    /// `WrapContext::new(key_id, "subject", table)`, and its check value. Runs in a
    /// transaction of its own, or a savepoint of `db`'s when `db` is one, so a KEK failure
    /// leaves no row behind.
    pub async fn create<C: TransactionTrait>(&self, db: &C) -> Result<SubjectKey, SubjectKeyError> {
        let txn = db.begin().await.map_err(self.db_err())?;
        let row = self.insert_placeholder(&txn).await?;
        let key_id = self.ids.key_id(row)?;
        let context = self.wrap_context(key_id);
        let (key, wrapped) = self
            .kek
            .generate_key(&context)
            .await
            .map_err(|source| SubjectKeyError::Kek { row, source })?;
        let kcv = check_value(KeyPurpose::Subject, key_id, &key);
        let update = Query::update()
            .table(Alias::new(&self.table))
            .value(Alias::new(WRAPPED_KEY), wrapped.as_bytes().to_vec())
            .value(Alias::new(CHECK_VALUE), kcv.as_bytes().to_vec())
            .and_where(Expr::col(Alias::new(ID)).eq(row))
            .to_owned();
        let updated = txn.execute(&update).await.map_err(self.db_err())?;
        if updated.rows_affected() != 1 {
            return Err(SubjectKeyError::Damaged {
                row,
                problem: format!(
                    "the new row vanished while its key was stored ({} rows updated)",
                    updated.rows_affected()
                ),
            });
        }
        txn.commit().await.map_err(self.db_err())?;
        self.cache.insert(row, &key);
        Ok(SubjectKey { row, key_id, key })
    }

    /// Inserts a row with an empty wrapped key, to learn its id (which the key is bound to).
    async fn insert_placeholder<C: ConnectionTrait>(&self, db: &C) -> Result<i64, SubjectKeyError> {
        let mut insert = Query::insert()
            .into_table(Alias::new(&self.table))
            .columns([
                Alias::new(WRAPPED_KEY),
                Alias::new(PROVIDER),
                Alias::new(KEK_ID),
                Alias::new(CREATED_AT),
            ])
            .values_panic([
                Vec::<u8>::new().into(),
                self.kek.provider().into(),
                self.kek.kek_id().into(),
                Expr::current_timestamp(),
            ])
            .to_owned();
        if db.get_database_backend() == DbBackend::MySql {
            let result = db.execute(&insert).await.map_err(self.db_err())?;
            return i64::try_from(result.last_insert_id()).map_err(|_| SubjectKeyError::Damaged {
                row: -1,
                problem: "the database returned an id beyond i64".into(),
            });
        }
        insert.returning_col(Alias::new(ID));
        let returned = db
            .query_one(&insert)
            .await
            .map_err(self.db_err())?
            .ok_or_else(|| SubjectKeyError::Damaged {
                row: -1,
                problem: "the insert returned no id".into(),
            })?;
        row_id(&returned, &self.table).map_err(self.db_err())
    }

    pub(super) fn wrap_context(&self, key_id: KeyId) -> WrapContext {
        WrapContext::new(key_id.0, KeyPurpose::Subject.as_str(), self.table.as_str())
    }

    pub(super) fn db_err(&self) -> impl FnOnce(sea_orm::DbErr) -> SubjectKeyError + '_ {
        SubjectKeyError::db(&self.table)
    }

    /// Opens the keys of `rows` into a keyring: `base`'s keys plus theirs, decrypt-only.
    ///
    /// Cached keys are served from the cache (so they open while the provider is down); the
    /// others are read in one query per 500 rows and unwrapped concurrently, each checked
    /// against its stored check value. A row that fails lands in [`SubjectRing::broken`] and
    /// costs only its own subject; only a database failure fails the call.
    pub async fn keyring<C: ConnectionTrait>(
        &self,
        db: &C,
        base: &Keyring,
        rows: impl IntoIterator<Item = i64>,
    ) -> Result<SubjectRing, SubjectKeyError> {
        let rows: BTreeSet<i64> = rows.into_iter().collect();
        let mut ring = base.clone();
        let mut broken = BTreeMap::new();
        let mut misses = Vec::new();
        for row in rows {
            let key_id = match self.ids.key_id(row) {
                Ok(id) => id,
                Err(e) => {
                    broken.insert(row, e);
                    continue;
                }
            };
            match self.cache.get(row) {
                Some(key) => add(&mut ring, &mut broken, row, key_id, &key),
                None => misses.push(row),
            }
        }
        let stored = self.read_rows(db, &misses, false).await?;
        let found: BTreeSet<i64> = stored.iter().map(|s| s.row).collect();
        let missing = misses.into_iter().filter(|r| !found.contains(r)).collect();
        let unchecked = stored
            .iter()
            .filter(|s| s.check_value.is_none())
            .map(|s| s.row)
            .collect();
        let opened = join_bounded(
            stored
                .iter()
                .map(|s| Box::pin(self.unwrap_stored(s)) as Boxed<'_, _>)
                .collect(),
            self.concurrency,
        )
        .await;
        for (stored, result) in stored.iter().zip(opened) {
            let row = stored.row;
            match result {
                Ok((key_id, key)) => {
                    self.cache.insert(row, &key);
                    add(&mut ring, &mut broken, row, key_id, &key);
                }
                Err(e) => {
                    broken.insert(row, e);
                }
            }
        }
        Ok(SubjectRing {
            ring: Arc::new(ring),
            missing,
            broken,
            unchecked,
            ids: self.ids,
        })
    }

    /// A keyring sealing with `row`'s key (and opening `base`'s values): the one-subject
    /// case of [`keyring`](Self::keyring), failing with that row's error.
    pub async fn sealing_ring<C: ConnectionTrait>(
        &self,
        db: &C,
        base: &Keyring,
        row: i64,
    ) -> Result<Keyring, SubjectKeyError> {
        let mut opened = self.keyring(db, base, [row]).await?;
        opened.take_error(row)?;
        opened.sealing(row)
    }

    /// Stores the check value of `row`'s key if the row has none (rows written before check
    /// values existed: trust on first use). Returns whether it wrote one; `false` for a row
    /// that already has one or does not exist. Re-runnable: the UPDATE only fills a NULL.
    pub async fn fill_check_value<C: ConnectionTrait>(
        &self,
        db: &C,
        row: i64,
    ) -> Result<bool, SubjectKeyError> {
        let Some(stored) = self.read_rows(db, &[row], false).await?.pop() else {
            return Ok(false);
        };
        if stored.check_value.is_some() {
            return Ok(false);
        }
        let (key_id, key) = self.unwrap_stored(&stored).await?;
        let kcv = check_value(KeyPurpose::Subject, key_id, &key);
        let update = Query::update()
            .table(Alias::new(&self.table))
            .value(Alias::new(CHECK_VALUE), kcv.as_bytes().to_vec())
            .and_where(Expr::col(Alias::new(ID)).eq(row))
            .and_where(Expr::col(Alias::new(CHECK_VALUE)).is_null())
            .to_owned();
        let updated = db.execute(&update).await.map_err(self.db_err())?;
        Ok(updated.rows_affected() == 1)
    }

    /// Reads the stored rows among `rows`, in chunks; `lock` takes row locks (in a
    /// transaction, on the backends that have them).
    pub(super) async fn read_rows<C: ConnectionTrait>(
        &self,
        db: &C,
        rows: &[i64],
        lock: bool,
    ) -> Result<Vec<StoredKey>, SubjectKeyError> {
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(CHUNK) {
            let mut select = self.select();
            select.and_where(Expr::col(Alias::new(ID)).is_in(chunk.iter().copied()));
            if lock {
                select.lock_exclusive();
            }
            for result in db.query_all(&select).await.map_err(self.db_err())? {
                out.push(self.stored(&result)?);
            }
        }
        Ok(out)
    }

    pub(super) fn select(&self) -> SelectStatement {
        Query::select()
            .columns([ID, WRAPPED_KEY, PROVIDER, KEK_ID, CHECK_VALUE].map(Alias::new))
            .from(Alias::new(&self.table))
            .to_owned()
    }

    pub(super) fn stored(&self, result: &QueryResult) -> Result<StoredKey, SubjectKeyError> {
        let row = row_id(result, &self.table).map_err(self.db_err())?;
        let get_err = |e: sea_orm::DbErr| SubjectKeyError::Damaged {
            row,
            problem: format!("a column does not decode: {e}"),
        };
        Ok(StoredKey {
            row,
            wrapped: result.try_get("", WRAPPED_KEY).map_err(get_err)?,
            provider: result.try_get("", PROVIDER).map_err(get_err)?,
            kek_id: result.try_get("", KEK_ID).map_err(get_err)?,
            check_value: result.try_get("", CHECK_VALUE).map_err(get_err)?,
        })
    }

    /// Unwraps one stored row with the KEK its row names and checks its check value.
    pub(super) async fn unwrap_stored(
        &self,
        stored: &StoredKey,
    ) -> Result<(KeyId, Zeroizing<[u8; WRAPPED_KEY_LEN]>), SubjectKeyError> {
        let row = stored.row;
        let key_id = self.ids.key_id(row)?;
        let expected = stored.expected_check_value()?;
        let kek = self.kek_for(row, &stored.provider, stored.kek_id.as_deref())?;
        let key = kek
            .unwrap_key(
                &WrappedKey::from_bytes(stored.wrapped.as_slice()),
                &self.wrap_context(key_id),
            )
            .await
            .map_err(|source| SubjectKeyError::Kek { row, source })?;
        if let Some(expected) = expected
            && check_value(KeyPurpose::Subject, key_id, &key) != expected
        {
            return Err(SubjectKeyError::CheckValueMismatch { row });
        }
        Ok((key_id, key))
    }
}

fn add(
    ring: &mut Keyring,
    broken: &mut BTreeMap<i64, SubjectKeyError>,
    row: i64,
    key_id: KeyId,
    key: &Zeroizing<[u8; WRAPPED_KEY_LEN]>,
) {
    if let Err(source) = ring.add_key_zeroizing(key_id, key) {
        broken.insert(row, SubjectKeyError::Keyring { row, source });
    }
}

/// Reads an integer id whatever its width (PostgreSQL will not decode INT4 as i64).
pub(super) fn row_id(result: &QueryResult, table: &str) -> Result<i64, sea_orm::DbErr> {
    match result.try_get::<i64>("", ID) {
        Ok(id) => Ok(id),
        Err(_) => result.try_get::<i32>("", ID).map(i64::from).map_err(|e| {
            sea_orm::DbErr::Custom(format!("{table}.{ID} is not an integer column: {e}"))
        }),
    }
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs `futures` with at most `limit` in flight, results in input order (what
/// `futures::stream::buffered` does, without the dependency). Providers that do I/O (a KMS,
/// an HSM through `spawn_blocking`) overlap their round trips.
async fn join_bounded<'a, T>(futures: Vec<Boxed<'a, T>>, limit: usize) -> Vec<T> {
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    let mut pending: Vec<(usize, Boxed<'a, T>)> = Vec::new();
    let mut queue = futures.into_iter().enumerate();
    loop {
        while pending.len() < limit {
            match queue.next() {
                Some(next) => pending.push(next),
                None => break,
            }
        }
        if pending.is_empty() {
            break;
        }
        poll_fn(|cx| {
            let before = pending.len();
            pending.retain_mut(|(i, fut)| match fut.as_mut().poll(cx) {
                Poll::Ready(value) => {
                    results[*i] = Some(value);
                    false
                }
                Poll::Pending => true,
            });
            if pending.len() < before {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
    results.into_iter().flatten().collect()
}
