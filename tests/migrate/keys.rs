//! Random data keys 1 and 2 and blind-index keys 1 and 2, and keyrings holding exactly the
//! ones a rotation test names.

use encrypted_columns::keyring::{KEY_LEN, generate_key};
use encrypted_columns::{KeyId, Keyring};

use crate::support::Res;

type Key = [u8; KEY_LEN];

/// Data keys 1 and 2 and blind-index keys 1 and 2, random.
pub struct Keys {
    data: [Key; 2],
    blind: [Key; 2],
}

impl Keys {
    pub fn generate() -> Keys {
        Keys {
            data: [*generate_key(), *generate_key()],
            blind: [*generate_key(), *generate_key()],
        }
    }

    /// A keyring holding exactly data key `data` and blind-index key `blind` (1 or 2), both
    /// active.
    pub fn ring(&self, data: u32, blind: u32) -> Res<Keyring> {
        let mut ring = Keyring::new(KeyId(data), self.data[data as usize - 1]);
        ring.add_blind_index_key(KeyId(blind), self.blind[blind as usize - 1])?;
        Ok(ring)
    }

    /// The keyring a rotation to data key `data` and blind-index key `blind` runs under: the
    /// keys 1, and each key 2 asked for added and promoted.
    pub fn rotating_to(&self, data: u32, blind: u32) -> Res<Keyring> {
        let mut ring = self.ring(1, 1)?;
        if data == 2 {
            ring.add_key(KeyId(2), self.data[1])?;
            ring.promote(KeyId(2))?;
        }
        if blind == 2 {
            ring.add_blind_index_key(KeyId(2), self.blind[1])?;
            ring.promote_blind_index_key(KeyId(2))?;
        }
        Ok(ring)
    }
}
