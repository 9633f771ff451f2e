//! Installation: the process-wide keyring and task-scoped overrides.
//!
//! SeaORM's `Into<Value>` and `TryGetable` get no connection or context, so the keyring they
//! use must be reachable without arguments.

use std::future::Future;
use std::sync::{Arc, RwLock};

use super::ring::Keyring;
use crate::error::{Error, Result};

static GLOBAL: RwLock<Option<Arc<Keyring>>> = RwLock::new(None);

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
pub fn current() -> Result<Arc<Keyring>> {
    if let Ok(scoped) = SCOPED.try_with(Arc::clone) {
        return Ok(scoped);
    }
    GLOBAL
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or(Error::NoKeyring)
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
}
