//! Tenant keyrings: one tenant's data key, and blind-index root keys derived for that tenant
//! from the master's, so the same plaintext gets different index values in different tenants
//! (FORMAT.md §3, "Tenant blind-index root keys").

use std::collections::BTreeMap;

use super::material::{KEY_LEN, LABEL_TENANT_BLIND_INDEX_KEY, RootKey};
use super::ring::Keyring;
use crate::error::{Error, Result};
use crate::key_id::KeyId;

impl Keyring {
    /// A keyring for tenant `tenant`: its only encryption key is `key` (active, as `id`), and
    /// each of its blind-index root keys is derived from this keyring's blind-index root key
    /// of the same id with HKDF-SHA256, label `"tenant-blind-index-key"` and the tenant id
    /// (FORMAT.md §3). The active blind-index key id is this keyring's.
    ///
    /// Use it instead of [`with_data_key`](Keyring::with_data_key) when tenants must not
    /// share index values: an e-mail registered in two tenants then has two unrelated index
    /// values, so one tenant's lookup never lands on another tenant's row (short of a
    /// collision of a truncated index, which the lookup's tenant filter removes in SQL), and
    /// nothing in the index links the two rows. Only the master blind-index keys need
    /// storing: a tenant's are derived again from them and the tenant id, which must be
    /// stable (a primary key or slug that is never reused) and 1 to 65,535 bytes of UTF-8.
    /// Rotating a master blind-index key rotates every tenant's.
    ///
    /// Give each tenant's data keys ids that no other tenant uses (e.g. derived from the
    /// tenant id): a lookup recognises a row of another tenant by a key id its keyring does
    /// not hold, and fails with [`Error::LookupKeyMissing`] without naming it, where a shared
    /// id would instead fail to authenticate ([`Error::Decrypt`]).
    ///
    /// Fails with [`Error::KeyConfig`] if `tenant` is empty or longer than 65,535 bytes. A
    /// master without blind-index keys gives a tenant without them (lookups then fail with
    /// [`Error::NoBlindIndexKey`]).
    ///
    /// ```
    /// use encrypted_columns::blind_index::{BlindIndex, IndexInput, Pipeline};
    /// use encrypted_columns::{KeyId, Keyring};
    ///
    /// let master = Keyring::generate();
    /// let acme = master.for_tenant("acme", KeyId(1_000_001), [3u8; 32])?;
    /// let globex = master.for_tenant("globex", KeyId(1_000_002), [4u8; 32])?;
    /// assert_eq!(acme.active_key_id(), KeyId(1_000_001));
    /// assert_eq!(acme.active_blind_index_key_id(), master.active_blind_index_key_id());
    ///
    /// let email = BlindIndex::new("accounts", "email_bidx").field(Pipeline::parse("email")?);
    /// let ada = [Some(IndexInput::Text("ada@example.org"))];
    /// assert_ne!(email.compute(&acme, &ada)?, email.compute(&globex, &ada)?);
    /// // Derived again from the master and the tenant id: the same keys every time.
    /// let again = master.for_tenant("acme", KeyId(1_000_001), [3u8; 32])?;
    /// assert_eq!(email.compute(&acme, &ada)?, email.compute(&again, &ada)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_tenant(&self, tenant: &str, id: KeyId, key: [u8; KEY_LEN]) -> Result<Keyring> {
        check_tenant_id(tenant)?;
        let mut ring = Keyring::new(id, key);
        ring.blind_index_keys = self
            .blind_index_keys
            .iter()
            .map(|(version, root)| {
                let derived = root.derive(LABEL_TENANT_BLIND_INDEX_KEY, &[tenant]);
                (*version, RootKey(derived))
            })
            .collect::<BTreeMap<_, _>>();
        ring.active_blind_index = self.active_blind_index;
        Ok(ring)
    }
}

/// Tenant ids are `lp` names in the derivation (FORMAT.md §1): 1 to 65,535 bytes.
fn check_tenant_id(tenant: &str) -> Result<()> {
    if tenant.is_empty() || tenant.len() > usize::from(u16::MAX) {
        return Err(Error::key_config(
            "Keyring::for_tenant",
            format!(
                "the tenant id is {} bytes; it must be 1 to 65,535 bytes",
                tenant.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> Keyring {
        let mut ring = Keyring::new(KeyId(1), [1; 32]);
        ring.add_blind_index_key(KeyId(1), [2; 32]).unwrap();
        ring.add_blind_index_key(KeyId(2), [3; 32]).unwrap();
        ring.promote_blind_index_key(KeyId(2)).unwrap();
        ring
    }

    #[test]
    fn tenant_keys_differ_per_tenant_and_from_the_master() {
        let master = master();
        let a = master.for_tenant("a", KeyId(10), [4; 32]).unwrap();
        let b = master.for_tenant("b", KeyId(11), [4; 32]).unwrap();
        assert_eq!(
            a.blind_index_key_ids().collect::<Vec<_>>(),
            [KeyId(1), KeyId(2)]
        );
        assert_eq!(a.active_blind_index_key_id(), Some(KeyId(2)));
        assert_eq!(a.key_ids().collect::<Vec<_>>(), [KeyId(10)]);
        for version in [KeyId(1), KeyId(2)] {
            let of = |ring: &Keyring| ring.blind_index_key(version, "t", "i").unwrap();
            assert_ne!(*of(&a), *of(&b));
            assert_ne!(*of(&a), *of(&master));
        }
    }

    #[test]
    fn bad_tenant_ids_are_refused() {
        let master = master();
        assert!(matches!(
            master.for_tenant("", KeyId(1), [0; 32]),
            Err(Error::KeyConfig { .. })
        ));
        let long = "x".repeat(65_536);
        assert!(master.for_tenant(&long, KeyId(1), [0; 32]).is_err());
        assert!(master.for_tenant(&long[1..], KeyId(1), [0; 32]).is_ok());
    }
}
