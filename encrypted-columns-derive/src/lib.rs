//! Derive macros for `encrypted-columns`; use them through the re-export
//! `encrypted_columns::DeriveEncrypted` (see its documentation there).
//!
//! A thin entry point per derive; attribute parsing lives in `attributes`, expansion in one
//! file per derive, and every user mistake is a spanned compile error.

mod attributes;
mod derive_encrypted;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Generates column-context markers, blind-index definitions and their upkeep and lookup
/// helpers from `#[encrypted(..)]` attributes on a SeaORM `Model`.
#[proc_macro_derive(DeriveEncrypted, attributes(encrypted))]
pub fn derive_encrypted(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    derive_encrypted::expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
