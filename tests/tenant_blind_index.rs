//! Multi-tenant blind indexes (issue 12), on every backend: tenants with blind-index keys of
//! their own (`Keyring::for_tenant`), lookups that take a tenant filter in SQL
//! (`find_all_by_<index>_where`) and still drop false positives, e-mails unique per tenant
//! (`unique, scope(tenant_id)`), and a lookup that meets a row sealed under a key it does not
//! hold failing with `Error::LookupKeyMissing`, which names no key id.
//!
//! Tenant keyrings use data key ids 4000001 (tenant 1) and 4000002 (tenant 2): numbers no
//! message contains by chance, so "the error does not mention tenant 2's key" is checkable.

use std::future::Future;
use std::sync::Arc;

use encrypted_columns::blind_index::IndexInput;
use encrypted_columns::keyring::{self, generate_key};
use encrypted_columns::{EncryptedString, Error, KeyId, Keyring};
use encrypted_columns_tests::entities::{account, tenant_account};
use encrypted_columns_tests::{TestResult, backend_tests};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
};

use tenant_account::{Column, Entity as Accounts};

/// A test result carrying a value.
type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Fails the enclosing test body with a message.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

const TENANT_1_KEY: KeyId = KeyId(4_000_001);
const TENANT_2_KEY: KeyId = KeyId(4_000_002);

/// A master keyring and two tenants' keyrings: tenant 1 and tenant 2, each with its own data
/// key and, when `own_index_keys`, blind-index keys derived for it (else the master's).
struct Tenants {
    one: Arc<Keyring>,
    two: Arc<Keyring>,
}

impl Tenants {
    fn new(own_index_keys: bool) -> Res<Self> {
        let master = Keyring::generate();
        let ring = |tenant: &str, id: KeyId| -> Res<Arc<Keyring>> {
            Ok(Arc::new(if own_index_keys {
                master.for_tenant(tenant, id, *generate_key())?
            } else {
                master.with_data_key(id, *generate_key())
            }))
        };
        Ok(Tenants {
            one: ring("1", TENANT_1_KEY)?,
            two: ring("2", TENANT_2_KEY)?,
        })
    }
}

/// Runs `body` in `ring`'s scope.
async fn as_tenant<T>(ring: &Arc<Keyring>, body: impl Future<Output = T>) -> T {
    keyring::scope(Arc::clone(ring), body).await
}

/// Inserts an account of `tenant` sealed with the keyring in force; returns its id.
async fn register(
    db: &DatabaseConnection,
    tenant: i32,
    email: &str,
    phone: &str,
) -> Result<i32, DbErr> {
    let account = tenant_account::ActiveModel {
        tenant_id: Set(tenant),
        email: Set(EncryptedString::new(email.to_owned())?),
        phone: Set(EncryptedString::new(phone.to_owned())?),
        ..Default::default()
    };
    Ok(account.insert(db).await?.id)
}

fn ids(rows: &[tenant_account::Model]) -> Vec<i32> {
    let mut ids: Vec<i32> = rows.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids
}

/// The crate's error inside `err`, if that is what failed.
fn lib_error(err: &DbErr) -> Option<Error> {
    Error::from_db_err(err).cloned()
}

/// Asserts `err` is `LookupKeyMissing` on `index` and mentions none of the tenants' key ids.
fn ensure_key_missing(err: &DbErr, index: &'static str) -> TestResult {
    ensure!(
        lib_error(err)
            == Some(Error::LookupKeyMissing {
                table: "ten_accounts",
                index
            }),
        "expected LookupKeyMissing on {index}, got {err}"
    );
    let message = format!("{err} {err:?}");
    for id in [TENANT_1_KEY, TENANT_2_KEY] {
        ensure!(
            !message.contains(&id.to_string()),
            "the error names key {id}: {message}"
        );
    }
    Ok(())
}

backend_tests!(
    /// With their own blind-index keys, two tenants register the same e-mail; each finds only
    /// its own row, with or without the tenant filter; an address only tenant 2 holds is no
    /// match for tenant 1, not an error naming tenant 2's key; a duplicate within one tenant
    /// is refused with the typed unique violation.
    own_index_keys_keep_tenants_apart,
    |db: &TestDb| async move {
        let db = &db.conn;
        let tenants = Tenants::new(true)?;
        let one = as_tenant(&tenants.one, register(db, 1, "Ada@Example.org", "555 0100")).await?;
        let two = as_tenant(&tenants.two, register(db, 2, " ada@example.org", "555 0100")).await?;
        let only_two =
            as_tenant(&tenants.two, register(db, 2, "grace@example.org", "555 0200")).await?;

        // Same e-mail, different index values: nothing links the two rows.
        let index = Accounts::email_bidx_index();
        let ada = [Some(IndexInput::Text("ada@example.org"))];
        ensure!(
            index.compute(&tenants.one, &ada)? != index.compute(&tenants.two, &ada)?,
            "tenants share an index value"
        );

        for (ring, tenant, own) in [(&tenants.one, 1, one), (&tenants.two, 2, two)] {
            let (filtered, unfiltered) = as_tenant(ring, async {
                let filtered = Accounts::find_all_by_email_bidx_where(
                    db,
                    Column::TenantId.eq(tenant),
                    "ADA@example.org",
                )
                .await?;
                let unfiltered = Accounts::find_all_by_email_bidx(db, "ADA@example.org").await?;
                Ok::<_, DbErr>((filtered, unfiltered))
            })
            .await?;
            ensure!(ids(&filtered) == [own], "tenant {tenant} found {filtered:?}");
            ensure!(ids(&unfiltered) == [own], "tenant {tenant} found {unfiltered:?}");
            ensure!(
                filtered[0].tenant_id == tenant,
                "tenant {tenant}'s row is not its own"
            );
        }

        // Tenant 1 looks up tenant 2's address: no match, no error.
        let (filtered, unfiltered, one_row) = as_tenant(&tenants.one, async {
            Ok::<_, DbErr>((
                Accounts::find_all_by_email_bidx_where(
                    db,
                    Column::TenantId.eq(1),
                    "grace@example.org",
                )
                .await?,
                Accounts::find_all_by_email_bidx(db, "grace@example.org").await?,
                Accounts::find_one_by_email_bidx_where(db, Condition::all(), "grace@example.org")
                    .await?,
            ))
        })
        .await?;
        ensure!(
            filtered.is_empty() && unfiltered.is_empty() && one_row.is_none(),
            "tenant 1 found tenant 2's row {only_two}"
        );

        // A duplicate within tenant 1 is refused, and named.
        let err = as_tenant(&tenants.one, register(db, 1, "ada@EXAMPLE.org ", "555 0300"))
            .await
            .err()
            .ok_or("a duplicate e-mail within tenant 1 was accepted")?;
        ensure!(
            Accounts::unique_violation(&err)
                == Some(Error::Duplicate {
                    table: "ten_accounts",
                    index: "email_bidx"
                }),
            "not a typed duplicate: {err}"
        );
        Ok(())
    }
);

backend_tests!(
    /// Tenants sharing the master's blind-index keys (`with_data_key`): the composite UNIQUE
    /// (tenant_id, email_bidx) lets the same e-mail into both tenants while the table-wide
    /// UNIQUE of `bi_accounts` (no scope) still refuses it; and the tenant filter, applied in
    /// SQL, keeps tenant 2's row (same index value, a key tenant 1 lacks) out of tenant 1's
    /// lookup, which without it fails without naming tenant 2's key.
    shared_index_keys_scoped_unique_and_filter,
    |db: &TestDb| async move {
        let db = &db.conn;
        let tenants = Tenants::new(false)?;
        let one = as_tenant(&tenants.one, register(db, 1, "lin@example.org", "555 0100")).await?;
        as_tenant(&tenants.two, register(db, 2, "lin@example.org", "555 0100")).await?;

        let global = |ring: Arc<Keyring>| async move {
            as_tenant(&ring, async {
                let account = account::ActiveModel {
                    email: Set(EncryptedString::new("lin@example.org".to_owned())?),
                    blood_type: Set(EncryptedString::new("AB+".to_owned())?),
                    ..Default::default()
                };
                account.insert(db).await.map(|_| ())
            })
            .await
        };
        global(Arc::clone(&tenants.one)).await?;
        let err = global(Arc::clone(&tenants.two))
            .await
            .err()
            .ok_or("the table-wide unique index accepted a second account")?;
        ensure!(
            account::Entity::unique_violation(&err)
                == Some(Error::Duplicate {
                    table: "bi_accounts",
                    index: "email_bidx"
                }),
            "not a typed duplicate: {err}"
        );

        let (filtered, unfiltered) = as_tenant(&tenants.one, async {
            (
                Accounts::find_all_by_email_bidx_where(
                    db,
                    Column::TenantId.eq(1),
                    "lin@example.org",
                )
                .await,
                Accounts::find_all_by_email_bidx_where(db, Condition::all(), "lin@example.org")
                    .await,
            )
        })
        .await;
        ensure!(ids(&filtered?) == [one], "the filtered lookup");
        ensure_key_missing(&unfiltered.err().ok_or("no error")?, "email_bidx")?;
        Ok(())
    }
);

backend_tests!(
    /// The extra filter is ANDed in SQL, and the false-positive check still runs on the
    /// 2-bit `phone_bidx`: rows that collide with the looked-up value are dropped, a row that
    /// matches but fails the filter is not returned, and a row of another tenant planted
    /// with tenant 1's index value fails the lookup only when the filter lets it through.
    filter_in_sql_and_false_positives,
    |db: &TestDb| async move {
        let db = &db.conn;
        let tenants = Tenants::new(true)?;
        let index = Accounts::phone_bidx_index();
        let value = |phone: &str| -> Res<Vec<u8>> {
            index
                .compute(&tenants.one, &[Some(IndexInput::Text(phone))])?
                .ok_or_else(|| "no index value".into())
        };
        let wanted = value("5550100")?;
        // A phone whose 2-bit index value collides with the wanted one (3 in 4 odds per try
        // of missing: 200 tries cannot all miss in practice).
        let colliding = (101..301)
            .map(|n| format!("555 0{n}"))
            .find(|phone| value(phone).is_ok_and(|v| v == wanted))
            .ok_or("no colliding phone among 200")?;

        let (target, collision, other_tenant) = as_tenant(&tenants.one, async {
            Ok::<_, DbErr>((
                register(db, 1, "ada@example.org", "555-0100").await?,
                register(db, 1, "bob@example.org", &colliding).await?,
                // Sealed with tenant 1's keys but filed under tenant 3: only the filter
                // keeps it out.
                register(db, 3, "cy@example.org", "(555) 0100").await?,
            ))
        })
        .await?;

        let (candidates, found, unfiltered) = as_tenant(&tenants.one, async {
            Ok::<_, DbErr>((
                Accounts::find_by_phone_bidx("5550100")?
                    .filter(Column::TenantId.eq(1))
                    .all(db)
                    .await?,
                Accounts::find_all_by_phone_bidx_where(db, Column::TenantId.eq(1), "5550100")
                    .await?,
                Accounts::find_all_by_phone_bidx_where(db, Condition::all(), "5550100").await?,
            ))
        })
        .await?;
        ensure!(
            ids(&candidates) == [target, collision],
            "the SQL candidates: {candidates:?}"
        );
        ensure!(ids(&found) == [target], "false positive kept: {found:?}");
        ensure!(
            ids(&unfiltered) == [target, other_tenant],
            "without the filter: {unfiltered:?}"
        );

        // Tenant 2's row, planted with tenant 1's index value for the wanted phone.
        let planted = as_tenant(&tenants.two, register(db, 2, "dee@example.org", "555 0999"))
            .await?;
        Accounts::update_many()
            .col_expr(Column::PhoneBidx, Expr::value(wanted.clone()))
            .filter(Column::Id.eq(planted))
            .exec(db)
            .await?;
        let (filtered, broken_filter, old_helper) = as_tenant(&tenants.one, async {
            (
                Accounts::find_all_by_phone_bidx_where(db, Column::TenantId.eq(1), "5550100")
                    .await,
                Accounts::find_all_by_phone_bidx_where(
                    db,
                    Column::TenantId.is_in([1, 2]),
                    "5550100",
                )
                .await,
                Accounts::find_all_by_phone_bidx(db, "5550100").await,
            )
        })
        .await;
        ensure!(ids(&filtered?) == [target], "the tenant filter");
        ensure_key_missing(&broken_filter.err().ok_or("no error")?, "phone_bidx")?;
        // The unfiltered helper is unchanged: it reports the key id, which is why a
        // multi-tenant lookup goes through `_where`.
        ensure!(
            lib_error(&old_helper.err().ok_or("no error")?)
                == Some(Error::UnknownKeyId { id: TENANT_2_KEY }),
            "find_all_by_phone_bidx changed"
        );
        Ok(())
    }
);

backend_tests!(
    /// Tenant 1's keyring without the key its rows were sealed with: the filtered lookup
    /// fails with `LookupKeyMissing` rather than reporting no match for a row of its own.
    own_row_under_a_missing_key_is_an_error,
    |db: &TestDb| async move {
        let db = &db.conn;
        let tenants = Tenants::new(true)?;
        as_tenant(&tenants.one, register(db, 1, "ada@example.org", "555 0100")).await?;
        // Same tenant id, so the same blind-index keys; another data key.
        let master_less = Arc::new(
            Keyring::generate().for_tenant("1", KeyId(4_000_003), *generate_key())?,
        );
        let lookup = as_tenant(&master_less, async {
            Accounts::find_all_by_email_bidx_where(db, Column::TenantId.eq(1), "ada@example.org")
                .await
        })
        .await;
        // Another master gives other index values: no candidate, so no match.
        ensure!(lookup?.is_empty(), "a different master's index matched");

        let mut rotated = (*tenants.one).clone();
        rotated.add_key(KeyId(4_000_003), *generate_key())?;
        rotated.promote(KeyId(4_000_003))?;
        rotated.remove_key(TENANT_1_KEY)?;
        let rotated = Arc::new(rotated);
        let lookup = as_tenant(&rotated, async {
            Accounts::find_all_by_email_bidx_where(db, Column::TenantId.eq(1), "ada@example.org")
                .await
        })
        .await;
        ensure_key_missing(&lookup.err().ok_or("no error")?, "email_bidx")?;
        Ok(())
    }
);
