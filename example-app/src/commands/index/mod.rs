//! `clinic index`: the blind indexes of `patients`, one submodule per subcommand.

mod key_usage;
mod rebuild;
mod report;

// The key-usage counts are public because `clinic keys status` reports them too.
pub use key_usage::{
    audit_mac_usage, blind_index_key_uses, blind_index_usage, retirable_blind_index_keys, uses_of,
};
pub use rebuild::rebuild;
pub use report::report;
