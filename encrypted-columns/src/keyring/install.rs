//! Installation: the process-wide keyring and task-scoped overrides.
//!
//! SeaORM's `Into<Value>` and `TryGetable` get no connection or context, so the keyring they
//! use must be reachable without arguments.
//!
//! # Multi-tenant use
//! A [`scope`] is a tokio task-local: it covers the future it wraps and nothing else. A task
//! started with `tokio::spawn` (or `spawn_blocking`, or a `JoinSet`) inside a scope runs
//! *outside* it, and [`current`] there silently falls back to the installed keyring. Two
//! defences, meant to be used together:
//! * [`spawn_scoped`], [`spawn_blocking_scoped`] and [`in_current_scope`] carry the caller's
//!   scope into the work they start;
//! * [`require_scope`], called once at start-up, makes every [`current`] outside a scope fail
//!   with [`Error::ScopeRequired`] instead of using the installed keyring, so a forgotten
//!   scope is an error, never a value sealed or looked up under another tenant's key.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use super::ring::Keyring;
use crate::error::{Error, Result};

static GLOBAL: RwLock<Option<Arc<Keyring>>> = RwLock::new(None);

/// Set by [`require_scope`]; never cleared.
static SCOPE_REQUIRED: AtomicBool = AtomicBool::new(false);

tokio::task_local! {
    static SCOPED: Arc<Keyring>;
}

/// Installs `keyring` for the whole process, replacing any earlier one (which is returned).
///
/// ```
/// use encrypted_columns::{keyring, Keyring};
/// keyring::install(Keyring::generate());
/// assert!(keyring::current().is_ok());
/// ```
pub fn install(keyring: impl Into<Arc<Keyring>>) -> Option<Arc<Keyring>> {
    let mut global = GLOBAL.write().unwrap_or_else(|p| p.into_inner());
    global.replace(keyring.into())
}

/// Removes the process-wide keyring, returning it.
pub fn uninstall() -> Option<Arc<Keyring>> {
    GLOBAL.write().unwrap_or_else(|p| p.into_inner()).take()
}

/// The keyring in force here: the task's [`scope`] if any, else the installed one.
///
/// After [`require_scope`], outside a scope this is [`Error::ScopeRequired`] (even when a
/// keyring is installed). Every keyring-less call of the crate goes through here: sealing
/// ([`Encrypted::new`](crate::Encrypted::new)), opening (`TryGetable`,
/// [`Encrypted::from_envelope`](crate::Encrypted::from_envelope)), blind-index conditions,
/// lookups and `fill_blind_indexes` in derived code, and the `migrate` steps.
pub fn current() -> Result<Arc<Keyring>> {
    resolve(SCOPE_REQUIRED.load(Ordering::Acquire))
}

/// [`current`], with the [`require_scope`] flag passed in (so it can be unit-tested without
/// setting the process-wide flag).
fn resolve(scope_required: bool) -> Result<Arc<Keyring>> {
    if let Ok(scoped) = SCOPED.try_with(Arc::clone) {
        return Ok(scoped);
    }
    if scope_required {
        return Err(Error::ScopeRequired);
    }
    GLOBAL
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or(Error::NoKeyring)
}

/// From now on, for the rest of the process, [`current`] outside a [`scope`] fails with
/// [`Error::ScopeRequired`] instead of using the installed keyring: sealing, opening and
/// blind-index lookups that are not inside a tenant's scope fail closed.
///
/// Call it once at start-up in a multi-tenant process, where the installed keyring (if any)
/// must never stand in for a tenant's. The installed keyring stays installed (`install`
/// returns the old one, as before) but is no longer used implicitly; code that wants it on
/// purpose passes it explicitly (`Encrypted::new_with`) or runs in `scope(installed, …)`.
///
/// It is one-way, on purpose: a fail-closed switch that a library, a test helper or a
/// forgotten code path could turn back off would guarantee nothing. Tests of the unscoped
/// fallback therefore belong in a test binary that never calls this.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use encrypted_columns::{keyring, Error, KeyId, Keyring};
/// keyring::install(Keyring::generate()); // key 1, installed process-wide
/// keyring::require_scope();
/// assert_eq!(keyring::current().err(), Some(Error::ScopeRequired));
///
/// let tenant = Arc::new(Keyring::new(KeyId(7), [7u8; 32]));
/// let id = keyring::scope(tenant, async { keyring::current().unwrap().active_key_id() }).await;
/// assert_eq!(id, KeyId(7));
/// # }
/// ```
pub fn require_scope() {
    SCOPE_REQUIRED.store(true, Ordering::Release);
}

/// Whether [`require_scope`] has been called in this process.
pub fn scope_required() -> bool {
    SCOPE_REQUIRED.load(Ordering::Acquire)
}

/// Runs `future` with `keyring` in force for it (and only it), e.g. per tenant or per test.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use encrypted_columns::{keyring, Keyring, KeyId};
/// let tenant = Arc::new(Keyring::new(KeyId(42), [1u8; 32]));
/// let id = keyring::scope(tenant, async { keyring::current().unwrap().active_key_id() }).await;
/// assert_eq!(id, KeyId(42));
/// # }
/// ```
pub async fn scope<F: Future>(keyring: Arc<Keyring>, future: F) -> F::Output {
    SCOPED.scope(keyring, future).await
}

/// Runs `f` with `keyring` in force, synchronously.
pub fn scope_sync<R>(keyring: Arc<Keyring>, f: impl FnOnce() -> R) -> R {
    SCOPED.sync_scope(keyring, f)
}

/// The scoped keyring of the caller, if it runs inside a [`scope`] or [`scope_sync`].
fn scoped() -> Option<Arc<Keyring>> {
    SCOPED.try_with(Arc::clone).ok()
}

/// `tokio::spawn`, with the caller's [`scope`] carried into the new task.
///
/// A scope is task-local, so a task started with plain `tokio::spawn` inside one runs without
/// it: there [`current`] is the installed keyring (another tenant's key, or the process
/// default) or, after [`require_scope`], an error. `spawn_scoped` captures the caller's
/// scoped keyring when it is called and runs `future` inside that scope. Outside any scope it
/// is exactly `tokio::spawn`. Like `tokio::spawn`, it must be called from within a tokio
/// runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use encrypted_columns::{keyring, KeyId, Keyring};
/// keyring::install(Keyring::generate()); // the process default: key 1
/// let tenant = Arc::new(Keyring::new(KeyId(7), [7u8; 32]));
///
/// let (plain, scoped) = keyring::scope(tenant, async {
///     let key_in_task = || keyring::current().unwrap().active_key_id();
///     let plain = tokio::spawn(async move { key_in_task() }).await.unwrap();
///     let scoped = keyring::spawn_scoped(async move { key_in_task() }).await.unwrap();
///     (plain, scoped)
/// })
/// .await;
/// assert_eq!(plain, KeyId(1)); // tokio::spawn left the tenant's scope behind
/// assert_eq!(scoped, KeyId(7)); // spawn_scoped carried it
/// # }
/// ```
#[track_caller]
pub fn spawn_scoped<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(in_current_scope(future))
}

/// `tokio::task::spawn_blocking`, with the caller's [`scope`] carried into the closure (see
/// [`spawn_scoped`]). Outside any scope it is exactly `spawn_blocking`.
#[track_caller]
pub fn spawn_blocking_scoped<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let keyring = scoped();
    tokio::task::spawn_blocking(move || match keyring {
        Some(keyring) => scope_sync(keyring, f),
        None => f(),
    })
}

/// Wraps `future` in the caller's [`scope`], captured now (when this is called, not when the
/// future is first polled): for spawners other than [`spawn_scoped`], such as
/// `JoinSet::spawn` or `tokio::task::spawn_local`. Outside any scope the future runs as is.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use encrypted_columns::{keyring, KeyId, Keyring};
/// let tenant = Arc::new(Keyring::new(KeyId(7), [7u8; 32]));
/// let mut tasks = tokio::task::JoinSet::new();
/// keyring::scope(tenant, async {
///     tasks.spawn(keyring::in_current_scope(async {
///         keyring::current().map(|k| k.active_key_id())
///     }));
/// })
/// .await;
/// assert_eq!(tasks.join_next().await.unwrap().unwrap(), Ok(KeyId(7)));
/// # }
/// ```
pub fn in_current_scope<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let keyring = scoped();
    async move {
        match keyring {
            Some(keyring) => SCOPED.scope(keyring, future).await,
            None => future.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::KeyId;

    #[test]
    fn scope_overrides_global_only_inside() {
        let scoped = Arc::new(Keyring::new(KeyId(99), [5u8; 32]));
        let inside = scope_sync(Arc::clone(&scoped), || current().map(|k| k.active_key_id()));
        assert_eq!(inside, Ok(KeyId(99)));
        let outside = current().map(|k| k.active_key_id());
        assert_ne!(outside, Ok(KeyId(99)));
    }

    // `require_scope` is process-wide and one-way, so these tests use `resolve` with the flag
    // passed in; tests/tenant_scope.rs sets the real flag in a binary of its own.
    #[test]
    fn required_scope_fails_closed_outside_and_not_inside() {
        let scoped = Arc::new(Keyring::new(KeyId(7), [7u8; 32]));
        assert_eq!(resolve(true).err(), Some(Error::ScopeRequired));
        let inside = scope_sync(scoped, || resolve(true).map(|k| k.active_key_id()));
        assert_eq!(inside, Ok(KeyId(7)));
        let message = Error::ScopeRequired.to_string();
        assert!(message.contains("keyring::scope"), "{message}");
        assert!(message.contains("spawn_scoped"), "{message}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawned_work_keeps_the_scope_only_when_carried() {
        let tenant = Arc::new(Keyring::new(KeyId(7), [7u8; 32]));
        let scoped_id = || scoped().map(|k| k.active_key_id());
        let (plain, carried, blocking, wrapped) = scope(tenant, async move {
            let plain = tokio::spawn(async move { scoped_id() });
            let carried = spawn_scoped(async move { scoped_id() });
            let blocking = spawn_blocking_scoped(scoped_id);
            let wrapped = tokio::spawn(in_current_scope(async move { scoped_id() }));
            (plain, carried, blocking, wrapped)
        })
        .await;
        // Awaited outside the scope: the tasks kept what they were given when spawned.
        assert_eq!(plain.await.unwrap(), None);
        assert_eq!(carried.await.unwrap(), Some(KeyId(7)));
        assert_eq!(blocking.await.unwrap(), Some(KeyId(7)));
        assert_eq!(wrapped.await.unwrap(), Some(KeyId(7)));
        // Outside any scope they are the plain spawners.
        assert_eq!(
            spawn_scoped(async move { scoped_id() }).await.unwrap(),
            None
        );
        assert_eq!(spawn_blocking_scoped(scoped_id).await.unwrap(), None);
    }
}
