//! Blind indexes on every backend: lookups that are exact through normalization and
//! truncation, uniqueness under concurrent writers, the write paths that skip `before_save`,
//! compound indexes, index-key rotation, the leakage report, lookup SQL without plaintext,
//! and SeaORM 2's `#[sea_orm::model]` entity format.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::NaiveDate;
use encrypted_columns::blind_index::{BlindIndex, IndexInput, leakage_report};
use encrypted_columns::keyring::{self, generate_key};
use encrypted_columns::{Encrypted, EncryptedString, Error, KeyId, Keyring};
use encrypted_columns_tests::entities::{account, nurse, person, subscriber, ward};
use encrypted_columns_tests::{TestResult, backend_tests, raw};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sea_orm::ActiveValue::{Set, Unchanged};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbBackend, EntityLoaderTrait, EntityTrait,
    IntoActiveModel, ModelTrait, PaginatorTrait, QueryFilter, QueryOrder, QueryTrait, Value,
};

/// A test result carrying a value.
type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Fails the enclosing test body (or proptest case) with a message.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

/// The `email` normalizer on the ASCII addresses generated here, written out independently
/// of the library: surrounding white space dropped, lower case.
fn normalized_email(s: &str) -> String {
    s.trim().to_lowercase()
}

/// The `digits, last(4)` normalizer, written out independently.
fn last4_digits(s: &str) -> String {
    let digits: Vec<char> = s.chars().filter(char::is_ascii_digit).collect();
    digits[digits.len().saturating_sub(4)..].iter().collect()
}

fn ids<M>(models: &[M], id: impl Fn(&M) -> i32) -> BTreeSet<i32> {
    models.iter().map(id).collect()
}

fn subscriber_ids(models: &[subscriber::Model]) -> BTreeSet<i32> {
    ids(models, |m| m.id)
}

/// A subscriber ActiveModel with `email`, `phone` and `nickname` set, indexes not filled.
fn new_subscriber(
    email: &str,
    phone: Option<&str>,
    nickname: &str,
) -> Result<subscriber::ActiveModel, Error> {
    Ok(subscriber::ActiveModel {
        email: Set(EncryptedString::new(email.to_owned())?),
        phone: Set(phone
            .map(|p| EncryptedString::new(p.to_owned()))
            .transpose()?),
        nickname: Set(nickname.to_owned()),
        ..Default::default()
    })
}

fn new_account(email: &str, blood_type: &str) -> Result<account::ActiveModel, Error> {
    Ok(account::ActiveModel {
        email: Set(EncryptedString::new(email.to_owned())?),
        blood_type: Set(EncryptedString::new(blood_type.to_owned())?),
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Lookups are exact: property test over generated spellings, duplicates and updates.

const LOCAL_PARTS: [&str; 6] = ["ada", "grace", "alan", "edsger", "barbara", "ken"];
const DOMAINS: [&str; 2] = ["example.org", "clinic.test"];
const PADDING: [&str; 5] = ["", " ", "\t", "  ", "\n "];
const LAST4: [&str; 4] = ["0199", "4242", "7000", "1234"];
/// Queried too, written never.
const ABSENT_EMAIL: &str = "nobody@example.org";
const ABSENT_LAST4: &str = "5555";

/// One subscriber as written: the spellings a user typed.
#[derive(Clone, Debug)]
struct Written {
    email: String,
    phone: Option<String>,
}

/// An address from a small pool (so cases hold several spellings of one address), with
/// random letter case and surrounding white space.
fn email_spelling() -> impl Strategy<Value = String> {
    (select(&LOCAL_PARTS[..]), select(&DOMAINS[..])).prop_flat_map(|(local, domain)| {
        let address = format!("{local}@{domain}");
        let len = address.len();
        (
            Just(address),
            prop::collection::vec(any::<bool>(), len),
            select(&PADDING[..]),
            select(&PADDING[..]),
        )
            .prop_map(|(address, upper, left, right)| {
                let body: String = address
                    .chars()
                    .zip(upper)
                    .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                    .collect();
                format!("{left}{body}{right}")
            })
    })
}

/// A phone number ending in one of a few 4-digit groups, in one of three layouts.
fn phone_spelling() -> impl Strategy<Value = String> {
    (0u16..1000, select(&LAST4[..]), 0u8..3).prop_map(|(area, last, layout)| match layout {
        0 => format!("+1 555 {area:03} {last}"),
        1 => format!("({area:03}) 010-{last}"),
        _ => format!("{area:03}.010.{last}"),
    })
}

#[derive(Clone, Debug)]
struct LookupCase {
    records: Vec<Written>,
    /// (row to change, its new e-mail, through `before_save` or through an explicit
    /// `fill_blind_indexes` + `Entity::update`).
    updates: Vec<(Index, String, bool)>,
}

fn lookup_case() -> impl Strategy<Value = LookupCase> {
    let record = (email_spelling(), prop::option::of(phone_spelling()))
        .prop_map(|(email, phone)| Written { email, phone });
    (
        prop::collection::vec(record, 1..12),
        prop::collection::vec((any::<Index>(), email_spelling(), any::<bool>()), 0..4),
    )
        .prop_map(|(records, updates)| LookupCase { records, updates })
}

/// How often a truncated index returned more candidates than matches, over the run.
#[derive(Default)]
struct FalsePositives {
    email: AtomicUsize,
    phone: AtomicUsize,
}

/// Writes the case's rows into an emptied table, checks every lookup, applies the updates
/// and checks again.
async fn check_lookup_case(
    conn: &DatabaseConnection,
    case: &LookupCase,
    seen: &FalsePositives,
) -> TestResult {
    subscriber::Entity::delete_many().exec(conn).await?;
    let mut written: BTreeMap<i32, Written> = BTreeMap::new();
    for (n, record) in case.records.iter().enumerate() {
        let model = new_subscriber(&record.email, record.phone.as_deref(), &format!("n{n}"))?
            .insert(conn)
            .await?;
        written.insert(model.id, record.clone());
    }
    check_lookups(conn, &written, seen).await?;

    let row_ids: Vec<i32> = written.keys().copied().collect();
    for (index, email, through_hook) in &case.updates {
        let id = row_ids[index.index(row_ids.len())];
        if *through_hook {
            let mut active = subscriber::Entity::find_by_id(id)
                .one(conn)
                .await?
                .ok_or("row to update not found")?
                .into_active_model();
            active.email = Set(EncryptedString::new(email.clone())?);
            active.update(conn).await?;
        } else {
            // Only the primary key and the e-mail: a single-field index needs no other input.
            let mut active = subscriber::ActiveModel {
                id: Unchanged(id),
                email: Set(EncryptedString::new(email.clone())?),
                ..Default::default()
            };
            active.fill_blind_indexes()?;
            subscriber::Entity::update(active).exec(conn).await?;
        }
        if let Some(record) = written.get_mut(&id) {
            record.email = email.clone();
        }
    }
    if !case.updates.is_empty() {
        check_lookups(conn, &written, seen).await?;
    }
    Ok(())
}

async fn check_lookups(
    conn: &DatabaseConnection,
    written: &BTreeMap<i32, Written>,
    seen: &FalsePositives,
) -> TestResult {
    let mut addresses: BTreeSet<String> = written
        .values()
        .map(|w| normalized_email(&w.email))
        .collect();
    addresses.insert(ABSENT_EMAIL.to_owned());
    for address in &addresses {
        // Queried in a spelling of its own: normalization applies to the query too.
        let query = format!(" {}\t", address.to_uppercase());
        let expected: BTreeSet<i32> = written
            .iter()
            .filter(|(_, w)| normalized_email(&w.email) == *address)
            .map(|(id, _)| *id)
            .collect();

        let exact = subscriber::Entity::find_all_by_email_bidx(conn, &query).await?;
        ensure!(
            subscriber_ids(&exact) == expected,
            "email_bidx {query:?}: found {:?}, expected {expected:?}",
            subscriber_ids(&exact)
        );
        // Rows come back as written, in the user's spelling.
        for model in &exact {
            let typed = &written[&model.id].email;
            ensure!(model.email.expose() == typed, "row {} reads back", model.id);
        }
        // At 256 bits the raw candidates are the matches.
        let full = subscriber::Entity::find_by_email_bidx(&query)?
            .all(conn)
            .await?;
        ensure!(
            subscriber_ids(&full) == expected,
            "email_bidx candidates {query:?}: {:?}, expected {expected:?}",
            subscriber_ids(&full)
        );

        // At 2 bits the candidates are a superset; the decrypting filter makes it exact.
        let exact_tiny = subscriber::Entity::find_all_by_email_tiny_bidx(conn, &query).await?;
        ensure!(
            subscriber_ids(&exact_tiny) == expected,
            "email_tiny_bidx {query:?}: found {:?}, expected {expected:?}",
            subscriber_ids(&exact_tiny)
        );
        let candidates = subscriber::Entity::find_by_email_tiny_bidx(&query)?
            .all(conn)
            .await?;
        let candidates = subscriber_ids(&candidates);
        ensure!(
            candidates.is_superset(&expected),
            "email_tiny_bidx candidates {candidates:?} miss some of {expected:?}"
        );
        if candidates.len() > expected.len() {
            seen.email.fetch_add(1, Ordering::Relaxed);
        }
    }

    for last4 in LAST4.iter().chain([&ABSENT_LAST4]) {
        let query = format!("ext. {last4}");
        let expected: BTreeSet<i32> = written
            .iter()
            .filter(|(_, w)| w.phone.as_deref().map(last4_digits).as_deref() == Some(*last4))
            .map(|(id, _)| *id)
            .collect();
        let exact = subscriber::Entity::find_all_by_phone_last4_bidx(conn, &query).await?;
        ensure!(
            subscriber_ids(&exact) == expected,
            "phone_last4_bidx {query:?}: found {:?}, expected {expected:?}",
            subscriber_ids(&exact)
        );
        let candidates = subscriber::Entity::find_by_phone_last4_bidx(&query)?
            .all(conn)
            .await?;
        let candidates = subscriber_ids(&candidates);
        ensure!(
            candidates.is_superset(&expected),
            "phone_last4_bidx candidates {candidates:?} miss some of {expected:?}"
        );
        if candidates.len() > expected.len() {
            seen.phone.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

backend_tests!(
    /// Property: `find_all_by_<index>` returns exactly the rows whose normalized value equals
    /// the query's, for full-width and 2-/4-bit indexes, before and after updates; the raw
    /// candidates of a truncated index are a superset, and sometimes a strict one.
    lookups_return_exactly_the_matching_rows,
    |db: &TestDb| async move {
        let seen = Arc::new(FalsePositives::default());
        // One fixed case first: every address of the pool, so (12 addresses plus the absent
        // one in 4 buckets) the 2-bit index must put two queried addresses together.
        let every_address = LookupCase {
            records: LOCAL_PARTS
                .iter()
                .flat_map(|l| DOMAINS.iter().map(move |d| format!("{l}@{d}")))
                .zip(LAST4.iter().cycle())
                .map(|(email, last)| Written {
                    email,
                    phone: Some(format!("555 010 {last}")),
                })
                .collect(),
            updates: Vec::new(),
        };
        check_lookup_case(&db.conn, &every_address, &seen).await?;
        ensure!(
            seen.email.load(Ordering::Relaxed) > 0,
            "12 addresses in 4 buckets and no false positive: is email_tiny_bidx truncated?"
        );

        let conn = db.conn.clone();
        let runtime = tokio::runtime::Handle::current();
        let counters = Arc::clone(&seen);
        // proptest drives the cases synchronously; each case runs on this test's runtime from
        // a blocking thread (as in at_rest.rs).
        let outcome = tokio::task::spawn_blocking(move || {
            let mut runner = TestRunner::new(Config {
                cases: 12,
                failure_persistence: None,
                ..Config::default()
            });
            runner
                .run(&lookup_case(), |case| {
                    runtime
                        .block_on(check_lookup_case(&conn, &case, &counters))
                        .map_err(|e| TestCaseError::fail(e.to_string()))
                })
                .map_err(|e| e.to_string())
        })
        .await?;
        outcome?;
        eprintln!(
            "{}: truncated-index lookups with false positives: {} (email, 2 bits), {} (phone, 4 bits)",
            db.backend,
            seen.email.load(Ordering::Relaxed),
            seen.phone.load(Ordering::Relaxed)
        );
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 2. A unique index under concurrent writers.

backend_tests!(
    /// Eight tasks insert spellings of one address at once: the UNIQUE constraint on the
    /// blind index keeps one row, and each of the seven others gets a typed `Duplicate`.
    concurrent_twins_leave_one_row,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let spellings = [
            "ada@example.org",
            "Ada@Example.org",
            " ada@example.org",
            "ADA@EXAMPLE.ORG\t",
            "ada@EXAMPLE.org ",
            "  Ada@example.ORG",
            "aDa@eXample.org",
            "\nada@example.org\n",
        ];
        let mut tasks = Vec::new();
        for spelling in spellings {
            let active = new_account(spelling, "O+")?;
            let conn = db.conn.clone();
            // `before_save` (active_model_behavior) fills the index inside each task, from the
            // process-wide keyring (a spawned task does not inherit a scope).
            tasks.push(tokio::spawn(async move { active.insert(&conn).await }));
        }
        let mut won = Vec::new();
        let mut lost = Vec::new();
        for (task, spelling) in tasks.into_iter().zip(spellings) {
            match task.await? {
                Ok(model) => won.push((model, spelling)),
                Err(err) => lost.push(err),
            }
        }
        assert_eq!(won.len(), 1, "rows written; errors: {lost:?}");
        assert_eq!(lost.len(), 7);
        for err in &lost {
            assert_eq!(
                account::Entity::unique_violation(err),
                Some(Error::Duplicate {
                    table: "bi_accounts",
                    index: "email_bidx"
                }),
                "{err}"
            );
        }
        assert_eq!(account::Entity::find().count(conn).await?, 1);
        let (winner, spelling) = &won[0];
        let found = account::Entity::find_all_by_email_bidx(conn, "ADA@example.org").await?;
        assert_eq!(found, vec![winner.clone()]);
        // The index normalizes; the envelope keeps what was typed.
        assert_eq!(found[0].email.expose(), spelling);

        // An update onto a taken address is refused the same way, and changes nothing.
        let grace = new_account("grace@example.org", "A+")?.insert(conn).await?;
        let mut active = grace.clone().into_active_model();
        active.email = Set(EncryptedString::new(" Ada@Example.ORG ".into())?);
        let err = active
            .update(conn)
            .await
            .err()
            .ok_or("a second row with ada's address was accepted")?;
        assert_eq!(
            account::Entity::unique_violation(&err),
            Some(Error::Duplicate {
                table: "bi_accounts",
                index: "email_bidx"
            }),
            "{err}"
        );
        let reloaded = account::Entity::find_by_id(grace.id)
            .one(conn)
            .await?
            .ok_or("grace vanished")?;
        assert_eq!(reloaded, grace);
        // Not every error is a duplicate.
        assert_eq!(
            account::Entity::unique_violation(&sea_orm::DbErr::RecordNotUpdated),
            None
        );
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 3. Write paths: bulk writes skip `before_save`; single-row updates recompute what changed.

const BULK: [(&str, &str); 3] = [
    ("ada@example.org", "+1 555 010 0199"),
    ("Grace@Example.org", "555-010-4242"),
    (" alan@example.org ", "(555) 010 7000"),
];

backend_tests!(
    /// `insert_many` and `update_many` run no `ActiveModelBehavior`: they keep indexes right
    /// only when `fill_blind_indexes` is called on each ActiveModel. Without it an insert
    /// leaves the NOT NULL index columns unset (refused) and an update leaves them stale.
    bulk_writes_need_fill_blind_indexes,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let bare = BULK
            .iter()
            .map(|(email, phone)| new_subscriber(email, Some(phone), "bulk"))
            .collect::<Result<Vec<_>, _>>()?;
        assert!(bare[0].email_bidx.is_not_set());
        let err = subscriber::Entity::insert_many(bare)
            .exec(conn)
            .await
            .err()
            .ok_or("insert_many without index values was accepted")?;
        assert!(err.to_string().contains("bidx"), "{err}");
        assert_eq!(subscriber::Entity::find().count(conn).await?, 0);

        let mut filled = Vec::new();
        for (email, phone) in BULK {
            let mut active = new_subscriber(email, Some(phone), "bulk")?;
            active.fill_blind_indexes()?;
            filled.push(active);
        }
        assert!(filled[0].email_bidx.is_set() && filled[0].phone_last4_bidx.is_set());
        subscriber::Entity::insert_many(filled).exec(conn).await?;

        let keyring = keyring::current()?;
        let mut by_address = BTreeMap::new();
        for (email, phone) in BULK {
            let address = normalized_email(email);
            let found = subscriber::Entity::find_one_by_email_bidx(conn, address.to_uppercase())
                .await?
                .ok_or_else(|| format!("{address} not found after insert_many"))?;
            assert_eq!(found.email.expose(), email);
            let by_phone =
                subscriber::Entity::find_all_by_phone_last4_bidx(conn, last4_digits(phone)).await?;
            assert!(subscriber_ids(&by_phone).contains(&found.id), "{phone}");
            // What is stored is the index value of the normalized address under the active key.
            let computed = subscriber::Entity::email_bidx_index()
                .compute(&keyring, &[Some(IndexInput::Text(&address))])?;
            assert_eq!(
                raw::get_bytes(conn, "bi_subscribers", "email_bidx", found.id).await?,
                computed
            );
            by_address.insert(address, found);
        }
        let ada = &by_address["ada@example.org"];
        let grace = &by_address["grace@example.org"];
        let pair = [ada.id, grace.id];
        let stored_before = raw::get_bytes(conn, "bi_subscribers", "email_bidx", ada.id).await?;

        // update_many without fill: the e-mails change, the indexes keep the old values.
        let mut change = subscriber::ActiveModel {
            email: Set(EncryptedString::new("Shared@Example.org".into())?),
            ..Default::default()
        };
        subscriber::Entity::update_many()
            .set(change.clone())
            .filter(subscriber::Column::Id.is_in(pair))
            .exec(conn)
            .await?;
        assert_eq!(
            raw::get_bytes(conn, "bi_subscribers", "email_bidx", ada.id).await?,
            stored_before,
            "update_many recomputed an index it cannot see"
        );
        // Stale: found by neither address. The old value still selects ada as a candidate,
        // which the decrypting filter then drops.
        assert!(
            subscriber::Entity::find_all_by_email_bidx(conn, "shared@example.org")
                .await?
                .is_empty()
        );
        let stale = subscriber::Entity::find_by_email_bidx("ada@example.org")?
            .all(conn)
            .await?;
        assert_eq!(subscriber_ids(&stale), BTreeSet::from([ada.id]));
        assert_eq!(stale[0].email.expose(), "Shared@Example.org");
        assert!(
            subscriber::Entity::find_all_by_email_bidx(conn, "ada@example.org")
                .await?
                .is_empty()
        );

        // update_many with fill: both rows are found by the new address, by every index.
        change.fill_blind_indexes()?;
        subscriber::Entity::update_many()
            .set(change)
            .filter(subscriber::Column::Id.is_in(pair))
            .exec(conn)
            .await?;
        let shared = subscriber::Entity::find_all_by_email_bidx(conn, " shared@EXAMPLE.org").await?;
        assert_eq!(subscriber_ids(&shared), BTreeSet::from(pair));
        let shared_tiny =
            subscriber::Entity::find_all_by_email_tiny_bidx(conn, "shared@example.org").await?;
        assert_eq!(subscriber_ids(&shared_tiny), BTreeSet::from(pair));
        // The row update_many did not touch is as it was.
        let alan = &by_address["alan@example.org"];
        assert_eq!(
            subscriber::Entity::find_one_by_email_bidx(conn, "alan@example.org").await?,
            Some(alan.clone())
        );
        Ok(())
    }
);

backend_tests!(
    /// `ActiveModel::update` (through `before_save`) recomputes an index whose input is
    /// `Set`; an update touching only an unrelated field leaves it byte for byte; the bare
    /// `Entity::update` leaves it stale unless `fill_blind_indexes` is called.
    single_row_updates_recompute_what_changed,
    |db: &TestDb| async move {
        let conn = &db.conn;
        const TABLE: &str = "bi_subscribers";
        let index_columns = ["email_bidx", "email_tiny_bidx", "phone_last4_bidx"];
        let snapshot = async |id: i32| -> Result<Vec<Option<Vec<u8>>>, sea_orm::DbErr> {
            let mut out = Vec::new();
            for column in index_columns {
                out.push(raw::get_bytes(conn, TABLE, column, id).await?);
            }
            Ok(out)
        };
        let model = new_subscriber("ada@example.org", Some("+1 555 010 0199"), "ada")?
            .insert(conn)
            .await?;
        let id = model.id;
        let original = snapshot(id).await?;
        assert!(original.iter().all(Option::is_some));

        // A partial ActiveModel setting only the nickname: no input is Set, nothing recomputed.
        let updated = subscriber::ActiveModel {
            id: Unchanged(id),
            nickname: Set("countess".into()),
            ..Default::default()
        }
        .update(conn)
        .await?;
        assert_eq!(updated.nickname, "countess");
        assert_eq!(snapshot(id).await?, original);
        let found = subscriber::Entity::find_one_by_email_bidx(conn, "ada@example.org")
            .await?
            .ok_or("lost after a nickname change")?;
        assert_eq!(found.nickname, "countess");

        // From the loaded row: the inputs are Unchanged, so the indexes are kept as they are.
        let mut active = found.into_active_model();
        active.nickname = Set("ada again".into());
        let updated = active.update(conn).await?;
        assert_eq!(snapshot(id).await?, original);

        // The same address in another spelling: a new envelope, the same index values.
        let envelope = raw::get_bytes(conn, TABLE, "email", id).await?;
        let mut active = updated.into_active_model();
        active.email = Set(EncryptedString::new(" ADA@Example.org".into())?);
        let updated = active.update(conn).await?;
        assert_ne!(raw::get_bytes(conn, TABLE, "email", id).await?, envelope);
        assert_eq!(snapshot(id).await?, original);

        // A new address through before_save: recomputed; the old one no longer finds the row.
        let mut active = updated.into_active_model();
        active.email = Set(EncryptedString::new("lovelace@example.org".into())?);
        let updated = active.update(conn).await?;
        let recomputed = snapshot(id).await?;
        assert_ne!(recomputed[0], original[0]);
        assert_eq!(recomputed[2], original[2], "the phone index has not changed");
        assert_eq!(updated.email_bidx, recomputed[0].clone().unwrap_or_default());
        let ids_of = async |address: &str| -> Result<BTreeSet<i32>, sea_orm::DbErr> {
            Ok(subscriber_ids(
                &subscriber::Entity::find_all_by_email_bidx(conn, address).await?,
            ))
        };
        assert_eq!(ids_of("Lovelace@example.org").await?, BTreeSet::from([id]));
        assert!(ids_of("ada@example.org").await?.is_empty());

        // The bare Entity::update runs no hook: the index stays at the previous address.
        let mut active = updated.into_active_model();
        active.email = Set(EncryptedString::new("byron@example.org".into())?);
        subscriber::Entity::update(active.clone())
            .exec(conn)
            .await?;
        assert_eq!(snapshot(id).await?, recomputed);
        assert!(ids_of("byron@example.org").await?.is_empty());
        assert!(ids_of("lovelace@example.org").await?.is_empty());
        // ... unless fill_blind_indexes is called first.
        active.fill_blind_indexes()?;
        subscriber::Entity::update(active).exec(conn).await?;
        assert_eq!(ids_of("byron@example.org").await?, BTreeSet::from([id]));

        // Setting the optional phone to NULL sets its index to NULL.
        let mut active = subscriber::ActiveModel {
            id: Unchanged(id),
            phone: Set(None),
            ..Default::default()
        };
        active.fill_blind_indexes()?;
        assert_eq!(active.phone_last4_bidx, Set(None));
        active.update(conn).await?;
        assert_eq!(raw::get_bytes(conn, TABLE, "phone_last4_bidx", id).await?, None);
        assert!(
            subscriber::Entity::find_all_by_phone_last4_bidx(conn, "0199")
                .await?
                .is_empty()
        );
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 4. Compound indexes.

fn date(y: i32, m: u32, d: u32) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| format!("bad date {y}-{m}-{d}"))
}

backend_tests!(
    /// `name_dob_bidx` hashes (casefolded last name, date of birth): lookups need both and
    /// match only both; an ActiveModel that sets one input without the other cannot be
    /// indexed and says so with a typed error.
    compound_index_over_name_and_birth_date,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let leap = date(1980, 2, 29)?;
        let next = date(1980, 3, 1)?;
        let rows = [
            ("Müller", leap, "north"),
            (" MÜLLER ", leap, "south"),
            ("Müller", next, "east"),
            ("Mueller", leap, "west"),
            ("Straße", leap, "icu"),
            ("STRASSE", leap, "er"),
        ];
        let mut id = Vec::new();
        for (last_name, born, ward) in rows {
            let model = person::ActiveModel {
                last_name: Set(EncryptedString::new(last_name.into())?),
                date_of_birth: Set(Encrypted::new(born)?),
                ward: Set(ward.into()),
                ..Default::default()
            }
            .insert(conn)
            .await?;
            id.push(model.id);
        }
        let lookup = async |last_name: &str, born: NaiveDate| -> Res<BTreeSet<i32>> {
            let found = person::Entity::find_all_by_name_dob_bidx(conn, last_name, born).await?;
            Ok(ids(&found, |m| m.id))
        };
        assert_eq!(lookup("müller", leap).await?, BTreeSet::from([id[0], id[1]]));
        assert_eq!(lookup("MÜLLER", next).await?, BTreeSet::from([id[2]]));
        assert_eq!(lookup("mueller", leap).await?, BTreeSet::from([id[3]]));
        assert_eq!(lookup("strasse", leap).await?, BTreeSet::from([id[4], id[5]]));
        assert!(lookup("Müller", date(1980, 2, 28)?).await?.is_empty());
        assert!(lookup("Schmidt", leap).await?.is_empty());

        let first = person::Entity::find_by_id(id[0])
            .one(conn)
            .await?
            .ok_or("row 0")?;
        assert!(first.matches_name_dob_bidx("  müller", leap)?);
        assert!(!first.matches_name_dob_bidx("müller", next)?);

        // One input Set, the other NotSet: the index cannot be recomputed.
        let expect_missing = |result: Result<(), Error>, missing: &str| -> TestResult {
            match result {
                Err(Error::BlindIndex {
                    table: "bi_people",
                    index: "name_dob_bidx",
                    problem,
                }) => {
                    ensure!(problem.contains(missing), "{problem}");
                    Ok(())
                }
                other => Err(format!("expected Error::BlindIndex, got {other:?}").into()),
            }
        };
        let only_name = person::ActiveModel {
            id: Unchanged(id[0]),
            last_name: Set(EncryptedString::new("Schmidt".into())?),
            ..Default::default()
        };
        expect_missing(only_name.clone().fill_blind_indexes(), "date_of_birth")?;
        let only_date = person::ActiveModel {
            id: Unchanged(id[0]),
            date_of_birth: Set(Encrypted::new(next)?),
            ..Default::default()
        };
        expect_missing(only_date.clone().fill_blind_indexes(), "last_name")?;
        // Through before_save the update fails with the same error, and writes nothing.
        let err = only_name
            .update(conn)
            .await
            .err()
            .ok_or("an update that cannot be indexed was written")?;
        match Error::from_db_err(&err) {
            Some(Error::BlindIndex { index, .. }) => assert_eq!(*index, "name_dob_bidx"),
            other => return Err(format!("expected Error::BlindIndex, got {other:?}: {err}").into()),
        }
        assert_eq!(
            person::Entity::find_by_id(id[0]).one(conn).await?.as_ref(),
            Some(&first)
        );

        // From the loaded row the other input is Unchanged, and the index follows the change.
        let mut active = first.clone().into_active_model();
        active.last_name = Set(EncryptedString::new("Schmidt".into())?);
        active.update(conn).await?;
        assert_eq!(lookup("schmidt", leap).await?, BTreeSet::from([id[0]]));
        assert_eq!(lookup("müller", leap).await?, BTreeSet::from([id[1]]));

        // Neither input set: nothing to recompute, no error, the stored value is kept.
        let before = raw::get_bytes(conn, "bi_people", "name_dob_bidx", id[1]).await?;
        person::ActiveModel {
            id: Unchanged(id[1]),
            ward: Set("maternity".into()),
            ..Default::default()
        }
        .update(conn)
        .await?;
        assert_eq!(
            raw::get_bytes(conn, "bi_people", "name_dob_bidx", id[1]).await?,
            before
        );
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 5. Index-key rotation.

/// Ids of `bi_accounts` rows whose `column` holds a value of blind-index key `version`: the
/// range scan a backfill uses to find rows left to recompute.
async fn accounts_of_version(
    conn: &DatabaseConnection,
    column: account::Column,
    version: u32,
) -> Res<BTreeSet<i32>> {
    let (start, end) = BlindIndex::version_range(KeyId(version)).ok_or("version out of range")?;
    let rows = account::Entity::find()
        .filter(column.gte(start))
        .filter(column.lt(end))
        .order_by_asc(account::Column::Id)
        .all(conn)
        .await?;
    Ok(ids(&rows, |m| m.id))
}

backend_tests!(
    /// Rotating the blind-index key: with keys 1 and 2 loaded (2 active) new rows get version
    /// byte 2 and lookups find rows of both versions; once key 1 is removed its rows are not
    /// found until recomputed, and then they are.
    index_key_rotation,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let encryption_key = *generate_key();
        let (key1, key2) = (*generate_key(), *generate_key());
        let mut old = Keyring::new(KeyId(1), encryption_key);
        old.add_blind_index_key(KeyId(1), key1)?;
        let mut rotating = Keyring::new(KeyId(1), encryption_key);
        rotating.add_blind_index_key(KeyId(1), key1)?;
        rotating.add_blind_index_key(KeyId(2), key2)?;
        rotating.promote_blind_index_key(KeyId(2))?;
        let mut rotated = rotating.clone();
        rotated.remove_blind_index_key(KeyId(1))?;
        let email_byte = async |id: i32| -> Res<u8> {
            let value = raw::get_bytes(conn, "bi_accounts", "email_bidx", id)
                .await?
                .ok_or("NULL index")?;
            Ok(value[0])
        };

        let (ada, grace) = keyring::scope(Arc::new(old), async {
            let ada = new_account("ada@example.org", "O+")?.insert(conn).await?;
            let grace = new_account("grace@example.org", "O+")?.insert(conn).await?;
            Res::Ok((ada, grace))
        })
        .await?;
        assert_eq!(email_byte(ada.id).await?, 1);

        let rotating = Arc::new(rotating);
        let alan = keyring::scope(Arc::clone(&rotating), async {
            let alan = new_account("alan@example.org", "O+")?.insert(conn).await?;
            assert_eq!(email_byte(alan.id).await?, 2);
            for (address, row) in [
                ("ADA@example.org", &ada),
                ("grace@example.org", &grace),
                ("alan@example.org ", &alan),
            ] {
                let found = account::Entity::find_one_by_email_bidx(conn, address).await?;
                assert_eq!(found.as_ref(), Some(row), "{address} during rotation");
            }
            let o_pos = account::Entity::find_all_by_blood_type_bidx(conn, "o+").await?;
            assert_eq!(
                ids(&o_pos, |m| m.id),
                BTreeSet::from([ada.id, grace.id, alan.id])
            );
            assert_eq!(
                accounts_of_version(conn, account::Column::EmailBidx, 1).await?,
                BTreeSet::from([ada.id, grace.id])
            );

            // The caveat (FORMAT.md, "Versions and rotation"): UNIQUE compares values of one
            // version, so a twin of a row not yet recomputed gets in...
            let twin = new_account(" Ada@Example.org", "A+")?.insert(conn).await?;
            let both = account::Entity::find_all_by_email_bidx(conn, "ada@example.org").await?;
            assert_eq!(ids(&both, |m| m.id), BTreeSet::from([ada.id, twin.id]));
            // ... and surfaces as a Duplicate when that row is recomputed.
            let mut active = ada.clone().into_active_model();
            active.email = Set(ada.email.clone());
            let err = active
                .update(conn)
                .await
                .err()
                .ok_or("recomputing next to a twin was accepted")?;
            assert!(matches!(
                account::Entity::unique_violation(&err),
                Some(Error::Duplicate {
                    index: "email_bidx",
                    ..
                })
            ));
            twin.delete(conn).await?;
            Res::Ok(alan)
        })
        .await?;

        keyring::scope(Arc::new(rotated), async {
            // Key 1 is gone: its rows are not found any more; key-2 rows are.
            for address in ["ada@example.org", "grace@example.org"] {
                assert_eq!(
                    account::Entity::find_one_by_email_bidx(conn, address).await?,
                    None,
                    "{address} found without its key"
                );
            }
            assert_eq!(
                account::Entity::find_one_by_email_bidx(conn, "alan@example.org").await?,
                Some(alan.clone())
            );
            let o_pos = account::Entity::find_all_by_blood_type_bidx(conn, "O+").await?;
            assert_eq!(ids(&o_pos, |m| m.id), BTreeSet::from([alan.id]));

            // Recompute: load the rows of version 1, set their fields again, fill, save.
            let stale = accounts_of_version(conn, account::Column::EmailBidx, 1).await?;
            assert_eq!(stale, BTreeSet::from([ada.id, grace.id]));
            for id in stale {
                let model = account::Entity::find_by_id(id)
                    .one(conn)
                    .await?
                    .ok_or("stale row")?;
                let mut active = model.clone().into_active_model();
                active.email = Set(EncryptedString::new(model.email.expose().clone())?);
                active.blood_type = Set(EncryptedString::new(model.blood_type.expose().clone())?);
                active.fill_blind_indexes()?;
                active.save(conn).await?;
            }
            for column in [account::Column::EmailBidx, account::Column::BloodTypeBidx] {
                assert!(accounts_of_version(conn, column, 1).await?.is_empty());
            }
            assert_eq!(email_byte(ada.id).await?, 2);
            for (address, row) in [("ada@example.org", &ada), ("grace@example.org", &grace)] {
                let found = account::Entity::find_one_by_email_bidx(conn, address)
                    .await?
                    .ok_or_else(|| format!("{address} not found after recompute"))?;
                assert_eq!(found.id, row.id);
                assert_eq!(found.email, row.email);
            }
            let o_pos = account::Entity::find_all_by_blood_type_bidx(conn, "O+").await?;
            assert_eq!(
                ids(&o_pos, |m| m.id),
                BTreeSet::from([ada.id, grace.id, alan.id])
            );
            Res::Ok(())
        })
        .await?;
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 6. Leakage report.

backend_tests!(
    /// On a real table: a 4-valued blood-type index is flagged, a unique e-mail index is not
    /// (every value its own group).
    leakage_report_flags_low_cardinality,
    |db: &TestDb| async move {
        let conn = &db.conn;
        const ROWS: usize = 200;
        // 40% O+, 30% A+, 20% B+, 10% AB-, in assorted spellings.
        let blood = |i: usize| match i % 10 {
            0..=3 => ["O+", " o+"][i % 2],
            4..=6 => "A+",
            7 | 8 => ["B+", "b+ "][i % 2],
            _ => "AB-",
        };
        let mut batch = Vec::new();
        for i in 0..ROWS {
            let mut active = new_account(&format!("patient{i}@example.org"), blood(i))?;
            active.fill_blind_indexes()?;
            batch.push(active);
            if batch.len() == 50 {
                account::Entity::insert_many(std::mem::take(&mut batch))
                    .exec(conn)
                    .await?;
            }
        }

        let blood_type = leakage_report(conn, "bi_accounts", "blood_type_bidx").await?;
        assert_eq!(
            (blood_type.rows, blood_type.indexed, blood_type.distinct),
            (ROWS as u64, ROWS as u64, 4)
        );
        assert_eq!(blood_type.largest_group, 80);
        assert_eq!(blood_type.singletons, 0);
        // H(0.4, 0.3, 0.2, 0.1)
        assert!((blood_type.entropy_bits - 1.846).abs() < 0.01, "{blood_type}");
        assert!(
            blood_type
                .warnings
                .iter()
                .any(|w| w.contains("low cardinality")),
            "{blood_type}"
        );
        assert!(
            blood_type.warnings.iter().any(|w| w.contains("skewed")),
            "{blood_type}"
        );

        let email = leakage_report(conn, "bi_accounts", "email_bidx").await?;
        assert_eq!(email.rows, ROWS as u64);
        assert_eq!(email.distinct, email.rows);
        assert_eq!(email.singletons, email.rows);
        assert_eq!(email.largest_group, 1);
        assert!(email.warnings.is_empty(), "{email}");
        assert!(
            (email.entropy_bits - (ROWS as f64).log2()).abs() < 1e-9,
            "{email}"
        );
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 7. No plaintext in lookup SQL.

backend_tests!(
    /// The statements of `find_by_<index>` (and of an insert) carry index values and
    /// envelopes only: neither the query's spelling nor its normalized form appears in the
    /// SQL or its bound values.
    lookup_sql_carries_no_plaintext,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let backend = db.db_backend();
        let written = "Some.Plaintext@Example.org";
        let query = "  SOME.plaintext@example.ORG ";
        let normalized = "some.plaintext@example.org";
        let phone = "+1 555 010 0199";
        let text_needles = [
            written,
            query.trim(),
            normalized,
            "plaintext",
            "5550100199",
            "555 010",
        ];
        let check = |what: &str, statement: &sea_orm::Statement| -> TestResult {
            let inlined = statement.to_string().to_lowercase();
            let sql = statement.sql.to_lowercase();
            for needle in text_needles {
                let needle = needle.to_lowercase();
                ensure!(!sql.contains(&needle), "{what}: {needle:?} in {sql}");
                ensure!(!inlined.contains(&needle), "{what}: {needle:?} in {inlined}");
            }
            let values = statement.values.iter().flat_map(|v| v.0.iter());
            for value in values {
                let bytes = match value {
                    Value::Bytes(Some(b)) => b.clone(),
                    Value::String(Some(s)) => s.as_bytes().to_vec(),
                    _ => continue,
                };
                for needle in text_needles.iter().chain(&["0199"]) {
                    ensure!(
                        !raw::contains(&bytes, needle.as_bytes())
                            && !raw::contains(&bytes, needle.to_lowercase().as_bytes()),
                        "{what}: a bound value contains {needle:?}"
                    );
                }
            }
            Ok(())
        };

        let mut insert = new_subscriber(written, Some(phone), "plain")?;
        insert.fill_blind_indexes()?;
        check(
            "insert",
            &subscriber::Entity::insert(insert.clone()).build(backend),
        )?;
        let id = insert.insert(conn).await?.id;

        let lookups = [
            (
                "email_bidx",
                subscriber::Entity::find_by_email_bidx(query)?,
            ),
            (
                "email_tiny_bidx",
                subscriber::Entity::find_by_email_tiny_bidx(query)?,
            ),
            (
                "phone_last4_bidx",
                subscriber::Entity::find_by_phone_last4_bidx("call me at 0199")?,
            ),
        ];
        for (column, select) in lookups {
            // Each backend's dialect; the one under test is also run below.
            for dialect in [DbBackend::Sqlite, DbBackend::Postgres, DbBackend::MySql] {
                check(column, &select.clone().build(dialect))?;
            }
            let statement = select.clone().build(backend);
            // It is the real lookup: it binds the stored index value and finds the row.
            let stored = raw::get_bytes(conn, "bi_subscribers", column, id).await?;
            let bound: Vec<&Value> = statement.values.iter().flat_map(|v| v.0.iter()).collect();
            ensure!(
                bound.contains(&&Value::Bytes(stored)),
                "{column}: the stored value is not among {bound:?}"
            );
            let found = select.all(conn).await?;
            ensure!(
                subscriber_ids(&found).contains(&id),
                "{column}: row not found"
            );
        }
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 8. SeaORM 2's `#[sea_orm::model]` entity format.

backend_tests!(
    /// `DeriveEncrypted` on an entity in the `#[sea_orm::model]` format (relations as fields,
    /// a generated `ModelEx`): insert, find by blind index, uniqueness, the entity loader with
    /// the index condition as a filter, and a nested insert through `ActiveModelEx`.
    sea_orm_model_format,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let icu = ward::ActiveModel {
            name: Set("ICU".into()),
            ..Default::default()
        }
        .insert(conn)
        .await?;
        let mut badges = Vec::new();
        for badge in ["N-0042", "N-0077"] {
            let nurse = nurse::ActiveModel {
                ward_id: Set(icu.id),
                badge: Set(EncryptedString::new(badge.into())?),
                ..Default::default()
            }
            .insert(conn)
            .await?;
            assert_eq!(nurse.badge_bidx.len(), 33, "filled by before_save");
            badges.push(nurse);
        }

        let found = nurse::Entity::find_one_by_badge_bidx(conn, " n-0042 ").await?;
        assert_eq!(found.as_ref(), Some(&badges[0]));
        assert_eq!(
            nurse::Entity::find_all_by_badge_bidx(conn, "N-0077").await?,
            vec![badges[1].clone()]
        );
        assert!(nurse::Entity::find_one_by_badge_bidx(conn, "N-0043").await?.is_none());

        // The unique key (`unique_key`, see the entity) refuses a twin, recognized as such.
        let err = nurse::ActiveModel {
            ward_id: Set(icu.id),
            badge: Set(EncryptedString::new("n-0042".into())?),
            ..Default::default()
        }
        .insert(conn)
        .await
        .err()
        .ok_or("a second N-0042 was accepted")?;
        assert_eq!(
            nurse::Entity::unique_violation(&err),
            Some(Error::Duplicate {
                table: "bi_nurses",
                index: "badge_bidx"
            }),
            "{err}"
        );

        // The entity loader decrypts into ModelEx and takes the index condition as a filter.
        let ward = ward::Entity::load()
            .filter_by_id(icu.id)
            .with(nurse::Entity)
            .one(conn)
            .await?
            .ok_or("ward not loaded")?;
        let mut loaded: Vec<String> = ward.nurses.iter().map(|n| n.badge.expose().clone()).collect();
        loaded.sort();
        assert_eq!(loaded, ["N-0042", "N-0077"]);
        let nurse = nurse::Entity::load()
            .filter(nurse::Entity::badge_bidx_condition("n-0077")?)
            .with(ward::Entity)
            .one(conn)
            .await?
            .ok_or("nurse not loaded")?;
        assert_eq!(nurse.id, badges[1].id);
        assert_eq!(nurse.ward.as_ref().map(|w| w.name.as_str()), Some("ICU"));

        // A nested insert through ActiveModelEx runs the nurse's before_save too.
        let maternity = ward::ActiveModel::builder()
            .set_name("Maternity")
            .add_nurse(
                nurse::ActiveModel::builder()
                    .set_badge(EncryptedString::new("M-0001".into())?),
            )
            .save(conn)
            .await?;
        let midwife = nurse::Entity::find_one_by_badge_bidx(conn, "m-0001")
            .await?
            .ok_or("nested nurse not found by badge")?;
        assert_eq!(Unchanged(midwife.ward_id), maternity.id);
        Ok(())
    }
);
