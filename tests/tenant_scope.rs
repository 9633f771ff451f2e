//! Multi-tenant keyring scopes (issue 12): a `keyring::scope` does not reach the tasks that
//! `tokio::spawn` starts, so without help a value sealed there silently uses the installed
//! keyring. `keyring::spawn_scoped` carries the scope; `keyring::require_scope` makes sealing,
//! opening and blind-index lookups outside a scope fail with `Error::ScopeRequired`.
//!
//! `require_scope` is process-wide and one-way, so this binary is on its own and holds one
//! test, whose steps run in order: first the unscoped fallback as it is without
//! `require_scope` (the bug, documented), then everything after `require_scope`. The
//! installed keyring is the suite's usual one: key 1 (`init_keyring`).

use std::sync::Arc;

use encrypted_columns::keyring::{self, generate_key};
use encrypted_columns::{EncryptedString, Error, KeyId, Keyring};
use encrypted_columns_tests::entities::patient::PatientEmail;
use encrypted_columns_tests::entities::subscriber;
use encrypted_columns_tests::{Backend, TestDb, TestResult, init_keyring, run_test};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, DbErr, EntityTrait, PaginatorTrait};

/// Fails the enclosing step with a message.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

const ADDRESS: &str = "ada@example.org";

/// Tenant 7's keyring: encryption key 7 and a blind-index key of its own.
fn tenant_seven() -> Arc<Keyring> {
    let mut ring = Keyring::new(KeyId(7), *generate_key());
    ring.add_blind_index_key(KeyId(7), *generate_key())
        .expect("a fresh blind-index key");
    Arc::new(ring)
}

/// Seals `ADDRESS` with the keyring in force where it runs; returns the key id it used.
fn seal() -> Result<KeyId, Error> {
    EncryptedString::<PatientEmail>::new(ADDRESS.to_owned()).map(|v| v.key_id())
}

/// This crate's error inside a `DbErr`, if that is what failed.
fn lib_error(err: &DbErr) -> Option<Error> {
    Error::from_db_err(err).cloned()
}

/// A subscriber with `ADDRESS`, sealed with the keyring in force; indexes not filled.
fn new_subscriber() -> Result<subscriber::ActiveModel, Error> {
    Ok(subscriber::ActiveModel {
        email: Set(EncryptedString::new(ADDRESS.to_owned())?),
        phone: Set(None),
        nickname: Set("ada".to_owned()),
        ..Default::default()
    })
}

#[test]
fn tenant_scopes_in_order() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        init_keyring();
        step(
            "unscoped fallback: tokio::spawn seals with the installed key 1",
            unscoped_fallback_is_the_bug(),
        )
        .await;
        step(
            "spawn_scoped carries the tenant scope",
            spawn_scoped_carries_the_scope(),
        )
        .await;
        for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
            run_test(backend, "tenant_scope::unscoped_db", unscoped_db).await;
            eprintln!("done: unscoped_db on {backend}");
        }

        keyring::require_scope();
        ensure_required();
        step(
            "require_scope: sealing and opening fail closed",
            sealing_fails_closed(),
        )
        .await;
        step(
            "require_scope: spawn_scoped still works",
            spawn_scoped_carries_the_scope(),
        )
        .await;
        for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
            run_test(backend, "tenant_scope::required_db", required_db).await;
            eprintln!("done: required_db on {backend}");
        }
    });
}

async fn step(name: &str, body: impl Future<Output = TestResult>) {
    match body.await {
        Ok(()) => eprintln!("ok: {name}"),
        Err(err) => panic!("{name}: {err}"),
    }
}

fn ensure_required() {
    assert!(keyring::scope_required());
    let message = keyring::current().expect_err("no scope here").to_string();
    assert!(
        message.contains("keyring::scope") && message.contains("spawn_scoped"),
        "{message}"
    );
}

/// The issue as reported: inside tenant 7's scope, a `tokio::spawn`ed task seals with the
/// installed key 1, without any error.
async fn unscoped_fallback_is_the_bug() -> TestResult {
    ensure!(
        !keyring::scope_required(),
        "require_scope must not be set yet"
    );
    let (in_scope, spawned) = keyring::scope(tenant_seven(), async {
        (seal(), tokio::spawn(async { seal() }).await)
    })
    .await;
    ensure!(in_scope == Ok(KeyId(7)), "in the scope: {in_scope:?}");
    ensure!(
        spawned? == Ok(KeyId(1)),
        "a tokio::spawn in the scope used the installed key"
    );
    Ok(())
}

/// `spawn_scoped`, `spawn_blocking_scoped` and `in_current_scope` seal with tenant 7's key.
async fn spawn_scoped_carries_the_scope() -> TestResult {
    let tenant = tenant_seven();
    let handles = keyring::scope(Arc::clone(&tenant), async {
        (
            keyring::spawn_scoped(async { seal() }),
            keyring::spawn_blocking_scoped(seal),
            tokio::spawn(keyring::in_current_scope(async { seal() })),
            // Nested: a task spawned from a scoped task keeps the scope too.
            keyring::spawn_scoped(async { keyring::spawn_scoped(async { seal() }).await }),
        )
    })
    .await;
    let (spawned, blocking, wrapped, nested) = handles;
    ensure!(spawned.await? == Ok(KeyId(7)), "spawn_scoped");
    ensure!(blocking.await? == Ok(KeyId(7)), "spawn_blocking_scoped");
    ensure!(wrapped.await? == Ok(KeyId(7)), "in_current_scope");
    ensure!(
        nested.await?? == Ok(KeyId(7)),
        "spawn_scoped inside spawn_scoped"
    );
    // And the value opens in the tenant's scope, carried into a task.
    let sealed = keyring::scope(Arc::clone(&tenant), async {
        EncryptedString::<PatientEmail>::new(ADDRESS.to_owned())
    })
    .await?;
    let envelope = sealed.envelope().to_vec();
    let opened = keyring::scope(tenant, async {
        keyring::spawn_scoped(async move {
            EncryptedString::<PatientEmail>::from_envelope(envelope).map(|v| v.expose().clone())
        })
        .await
    })
    .await??;
    ensure!(opened == ADDRESS, "opened in a scoped task");
    Ok(())
}

/// Without `require_scope`, on a database: a row written in tenant 7's scope is not found by
/// a blind-index lookup in a `tokio::spawn`ed task (installed index key), and cannot be read
/// there (key 7 is not installed): wrong, but silent for the lookup.
async fn unscoped_db(db: &TestDb) -> TestResult {
    let tenant = tenant_seven();
    let conn = db.conn.clone();
    keyring::scope(Arc::clone(&tenant), async {
        new_subscriber()?.insert(&conn).await?;
        let plain = tokio::spawn({
            let conn = conn.clone();
            async move { subscriber::Entity::find_all_by_email_bidx(&conn, ADDRESS).await }
        })
        .await?;
        ensure!(
            plain?.is_empty(),
            "an unscoped lookup uses the installed index key"
        );
        let read = tokio::spawn({
            let conn = conn.clone();
            async move { subscriber::Entity::find().all(&conn).await }
        })
        .await?;
        let err = read.expect_err("key 7 is not installed");
        ensure!(
            lib_error(&err) == Some(Error::UnknownKeyId { id: KeyId(7) }),
            "unscoped read: {err}"
        );
        let scoped = keyring::spawn_scoped({
            let conn = conn.clone();
            async move { subscriber::Entity::find_all_by_email_bidx(&conn, ADDRESS).await }
        })
        .await??;
        ensure!(scoped.len() == 1, "a scoped lookup finds the row");
        ensure!(
            scoped[0].email.key_id() == KeyId(7),
            "sealed with the tenant's key"
        );
        Ok(())
    })
    .await
}

/// After `require_scope`, with a key-1 keyring installed: sealing outside any scope, in a
/// `tokio::spawn`ed task or a `spawn_blocking` closure fails with `ScopeRequired`, and so
/// does opening.
async fn sealing_fails_closed() -> TestResult {
    let tenant = tenant_seven();
    ensure!(seal() == Err(Error::ScopeRequired), "outside any scope");
    let (in_scope, in_sync_scope, spawned, blocking) = keyring::scope(Arc::clone(&tenant), async {
        (
            seal(),
            keyring::scope_sync(tenant_seven(), seal),
            tokio::spawn(async { seal() }).await,
            tokio::task::spawn_blocking(seal).await,
        )
    })
    .await;
    ensure!(in_scope == Ok(KeyId(7)), "in the scope: {in_scope:?}");
    ensure!(
        in_sync_scope == Ok(KeyId(7)),
        "in scope_sync: {in_sync_scope:?}"
    );
    let spawned = spawned?;
    ensure!(
        spawned == Err(Error::ScopeRequired),
        "tokio::spawn: {spawned:?}"
    );
    let blocking = blocking?;
    ensure!(
        blocking == Err(Error::ScopeRequired),
        "spawn_blocking: {blocking:?}"
    );

    let sealed = keyring::scope(Arc::clone(&tenant), async {
        EncryptedString::<PatientEmail>::new(ADDRESS.to_owned())
    })
    .await?;
    let opened = EncryptedString::<PatientEmail>::from_envelope(sealed.envelope().to_vec());
    ensure!(
        opened.err() == Some(Error::ScopeRequired),
        "opening outside a scope"
    );
    let reseal = sealed.reseal();
    ensure!(
        reseal.err() == Some(Error::ScopeRequired),
        "resealing outside a scope"
    );
    Ok(())
}

/// After `require_scope`, on a database: reads, blind-index conditions and lookups, and the
/// index filling of an insert all fail with `ScopeRequired` outside a scope; nothing is
/// written. In the scope, and in `spawn_scoped` tasks, they work.
async fn required_db(db: &TestDb) -> TestResult {
    let tenant = tenant_seven();
    let conn = db.conn.clone();
    keyring::scope(Arc::clone(&tenant), async {
        new_subscriber()?.insert(&conn).await?;
        TestResult::Ok(())
    })
    .await?;

    // Outside any scope.
    let read = subscriber::Entity::find().all(&conn).await;
    let err = read.expect_err("reading outside a scope");
    ensure!(lib_error(&err) == Some(Error::ScopeRequired), "read: {err}");
    let condition = subscriber::Entity::email_bidx_condition(ADDRESS);
    ensure!(
        condition.err() == Some(Error::ScopeRequired),
        "blind-index condition"
    );
    let find = subscriber::Entity::find_by_email_bidx(ADDRESS);
    ensure!(
        find.err() == Some(Error::ScopeRequired),
        "find_by_email_bidx"
    );
    let lookup = subscriber::Entity::find_one_by_email_bidx(&conn, ADDRESS).await;
    let err = lookup.expect_err("lookup outside a scope");
    ensure!(
        lib_error(&err) == Some(Error::ScopeRequired),
        "find_one_by: {err}"
    );
    // An insert whose value was sealed in the scope: `before_save` fills the blind indexes,
    // which needs the keyring, outside the scope.
    let model = keyring::scope(Arc::clone(&tenant), async { new_subscriber() }).await?;
    let insert = model.insert(&conn).await;
    let err = insert.expect_err("filling indexes outside a scope");
    ensure!(
        lib_error(&err) == Some(Error::ScopeRequired),
        "insert: {err}"
    );
    ensure!(
        subscriber::Entity::find().count(&conn).await? == 1,
        "nothing was written"
    );

    // In tasks spawned from the tenant's scope.
    keyring::scope(Arc::clone(&tenant), async {
        let plain = tokio::spawn({
            let conn = conn.clone();
            async move { subscriber::Entity::find_all_by_email_bidx(&conn, ADDRESS).await }
        })
        .await?;
        let err = plain.expect_err("a tokio::spawn lookup");
        ensure!(
            lib_error(&err) == Some(Error::ScopeRequired),
            "tokio::spawn lookup: {err}"
        );
        let scoped = keyring::spawn_scoped({
            let conn = conn.clone();
            async move { subscriber::Entity::find_all_by_email_bidx(&conn, ADDRESS).await }
        })
        .await??;
        ensure!(
            scoped.len() == 1,
            "spawn_scoped lookup: {} rows",
            scoped.len()
        );
        ensure!(scoped[0].email.expose() == ADDRESS, "spawn_scoped read");
        ensure!(
            scoped[0].email.key_id() == KeyId(7),
            "sealed with the tenant's key"
        );
        Ok(())
    })
    .await
}
