//! The keyring: versioned root keys, their loading, per-column subkeys, and the process-wide
//! (or task-scoped) installation that SeaORM's conversion traits read from.
//!
//! # Key hierarchy
//! * **Encryption root keys**, one per [`KeyId`]. Exactly one is *active*: new values are
//!   sealed with it. The others stay decrypt-only until you remove them, so rotation is "add
//!   the new key everywhere, then promote it" (see [`Keyring::add_key`], [`Keyring::promote`]).
//! * **Per-column subkeys**: HKDF-SHA256 of the root key with the logical (table, column) in
//!   `info`, so each column has its own key and a ciphertext copied between columns fails.
//! * **Blind-index root keys**: a separate, versioned set, never used for encryption; per-index
//!   keys derive from them with their own HKDF label ([`Keyring::blind_index_key`]).
//! * **Tenant blind-index root keys** (optional): HKDF of each blind-index root key with the
//!   tenant id, so each tenant's index values are its own ([`Keyring::for_tenant`]).
//!
//! All key bytes live in [`Zeroizing`](zeroize::Zeroizing) buffers and are wiped on drop;
//! `Debug` prints key ids only. `FORMAT.md` documents the derivations byte for byte.
//!
//! # Environment
//! | variable | meaning |
//! |---|---|
//! | `ENCRYPTED_COLUMNS_KEYS` | required: comma-separated `<id>:<base64 of 32 bytes>`, e.g. `1:q83v…=,2:7Xk…=` |
//! | `ENCRYPTED_COLUMNS_ACTIVE_KEY` | id that seals new values; required when more than one key is listed |
//! | `ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS` | optional: blind-index root keys, same format |
//! | `ENCRYPTED_COLUMNS_ACTIVE_BLIND_INDEX_KEY` | active blind-index key id; required when more than one is listed |

// Layout; every import points down this list, none back up:
//   `material` root key bytes, the HKDF derivation, fresh random keys
//   `cache`    per-column ciphers and per-index MACs, and the maps that keep them
//   `ring`     the Keyring: which keys it holds, which are active
//   `check_value` key check values (FORMAT.md §10) of keys and of keyrings
//   `env`      loading a Keyring from the ENCRYPTED_COLUMNS_* variables
//   `tenant`   tenant keyrings: a tenant's data key and blind-index keys derived for it
//   `subkeys`  deriving, on first use, the cipher or MAC that `seal` or `blind_index` asks for
//   `install`  the process-wide keyring and task-scoped overrides
// Nothing here imports `seal` or `blind_index`: they import the keyring.

pub(crate) mod cache;
mod check_value;
mod env;
mod install;
mod material;
mod ring;
mod subkeys;
mod tenant;

pub use crate::key_id::KeyId;
pub use check_value::{CHECK_VALUE_LEN, CheckValue, KeyPurpose, check_value};
pub use env::{ENV_ACTIVE_BLIND_INDEX_KEY, ENV_ACTIVE_KEY, ENV_BLIND_INDEX_KEYS, ENV_KEYS};
pub use install::{
    current, in_current_scope, install, require_scope, scope, scope_required, scope_sync,
    spawn_blocking_scoped, spawn_scoped, uninstall,
};
pub use material::{KEY_LEN, generate_key, generate_key_entry};
pub use ring::Keyring;
