//! Derive macros for `encrypted-columns`.
//!
//! Reserved for the derives of the blind-index work (column-context markers, blind-index upkeep
//! and lookup helpers, generated from `#[encrypted(..)]` field attributes). Until they land,
//! declare column contexts with `encrypted_columns::column_context!`.
//!
//! Layout to follow: a thin `lib.rs` of entry points, one file per derive, attribute parsing in
//! one place, and `syn::Error::new_spanned` for every user mistake.
