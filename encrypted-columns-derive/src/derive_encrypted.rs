//! `#[derive(DeriveEncrypted)]`: column-context markers, blind-index specs, upkeep and lookup
//! helpers for a SeaORM `Model`.

use std::collections::HashSet;

use heck::ToUpperCamelCase;
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::{Data, DeriveInput, Fields, GenericArgument, Ident, LitStr, PathArguments, Type};

use crate::attributes::{IndexDef, PartDef, parse_field_attrs, parse_struct_attrs};

const ENCRYPTED_TYPES: [&str; 4] = [
    "Encrypted",
    "EncryptedString",
    "EncryptedBytes",
    "EncryptedJson",
];

/// What we know about one field of the model.
struct FieldInfo {
    ident: Ident,
    ty: Type,
    /// `T` when the field is `Option<T>`.
    inner: Type,
    optional: bool,
    /// `Some(marker)` for an encrypted field.
    marker: Option<Type>,
    logical: LitStr,
    /// `#[sea_orm(unique)]` on the field.
    sea_orm_unique: Option<proc_macro2::Span>,
}

pub fn expand(input: DeriveInput) -> syn::Result<TokenStream> {
    // `#[sea_orm::model]` copies the derives of `Model` onto `ModelEx` (the model with its
    // relations). Everything is generated once, for `Model`.
    if input.ident.to_string().ends_with("Ex") {
        return Ok(TokenStream::new());
    }
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "DeriveEncrypted goes on the `Model` struct of a SeaORM entity",
        ));
    };
    let Fields::Named(named) = &data.fields else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "DeriveEncrypted needs a struct with named fields (a SeaORM `Model`)",
        ));
    };
    let attrs = parse_struct_attrs(&input.attrs)?;
    let table = attrs
        .table
        .clone()
        .or_else(|| attrs.sea_orm_table.clone())
        .ok_or_else(|| {
            syn::Error::new_spanned(
                &input.ident,
                "no table name: add `#[sea_orm(table_name = \"..\")]` or \
                 `#[encrypted(table = \"..\")]` (the logical table bound into every envelope)",
            )
        })?;

    let mut fields = Vec::new();
    let mut indexes: Vec<(IndexDef, Option<Ident>)> = Vec::new();
    for field in &named.named {
        let Some(ident) = field.ident.clone() else {
            continue;
        };
        let fattrs = parse_field_attrs(&field.attrs)?;
        let (inner, optional) = match option_inner(&field.ty) {
            Some(inner) => (inner.clone(), true),
            None => (field.ty.clone(), false),
        };
        let marker = encrypted_marker(&inner).cloned();
        let logical = fattrs
            .column
            .clone()
            .unwrap_or_else(|| LitStr::new(&unraw(&ident), ident.span()));
        if marker.is_none()
            && let Some(span) = fattrs.span
        {
            return Err(syn::Error::new(
                span,
                format!(
                    "`{ident}` is not an encrypted field: #[encrypted(..)] applies to \
                     Encrypted<T, _>, EncryptedString<_>, EncryptedBytes<_> or \
                     EncryptedJson<T, _> fields (optionally in Option<..>); to encrypt it, \
                     declare it e.g. `EncryptedString<ctx::{}>`, or keep it plaintext and \
                     index it in the database (no blind index needed)",
                    unraw(&ident).to_upper_camel_case()
                ),
            ));
        }
        for mut index in fattrs.indexes {
            for part in &mut index.parts {
                part.field = Some(LitStr::new(&unraw(&ident), index.span));
            }
            indexes.push((index, Some(ident.clone())));
        }
        fields.push(FieldInfo {
            ident,
            ty: field.ty.clone(),
            inner,
            optional,
            marker,
            logical,
            sea_orm_unique: fattrs.sea_orm_unique,
        });
    }
    for index in attrs.compound {
        indexes.push((index, None));
    }

    let markers = markers(&fields, &table)?;
    let resolved = resolve_indexes(&fields, indexes, attrs.model_ex)?;
    let helpers = index_helpers(&table, &resolved);
    let behavior = if attrs.active_model_behavior {
        quote! {
            #[automatically_derived]
            #[::sea_orm::prelude::async_trait::async_trait]
            impl ::sea_orm::ActiveModelBehavior for ActiveModel {
                async fn before_save<C>(self, _db: &C, _insert: bool) -> ::std::result::Result<Self, ::sea_orm::DbErr>
                where
                    C: ::sea_orm::ConnectionTrait,
                {
                    self.with_blind_indexes()
                }
            }
        }
    } else {
        quote!()
    };
    Ok(quote! {
        #markers
        #helpers
        #behavior
    })
}

fn unraw(ident: &Ident) -> String {
    let s = ident.to_string();
    s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
}

fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    match &last.arguments {
        PathArguments::AngleBracketed(args) if args.args.len() == 1 => match args.args.first()? {
            GenericArgument::Type(inner) => Some(inner),
            _ => None,
        },
        _ => None,
    }
}

/// The column-context marker of an encrypted type: its last type argument.
fn encrypted_marker(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if !ENCRYPTED_TYPES.iter().any(|name| last.ident == name) {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args.iter().rev().find_map(|arg| match arg {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

fn is_vec_u8(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    if last.ident != "Vec" {
        return false;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    matches!(args.args.first(), Some(GenericArgument::Type(Type::Path(p))) if p.path.is_ident("u8"))
}

/// `pub mod ctx { pub struct Email; .. }` for every field sealed with a `ctx::…` marker, and
/// a check that each field names its own marker (a copy-pasted marker would bind the field
/// to another column's key).
fn markers(fields: &[FieldInfo], table: &LitStr) -> syn::Result<TokenStream> {
    let mut items = Vec::new();
    for field in fields {
        let Some(Type::Path(marker)) = &field.marker else {
            continue;
        };
        let segments: Vec<_> = marker.path.segments.iter().collect();
        if segments.len() != 2 || segments[0].ident != "ctx" {
            continue; // the user's own marker (e.g. from `column_context!`)
        }
        let expected = format_ident!("{}", unraw(&field.ident).to_upper_camel_case());
        if segments[1].ident != expected {
            return Err(syn::Error::new_spanned(
                marker,
                format!(
                    "field `{}` is sealed with marker `ctx::{}`, which belongs to another field; \
                     use `ctx::{expected}` (each field gets its own key and associated data)",
                    field.ident, segments[1].ident
                ),
            ));
        }
        let logical = &field.logical;
        let doc = format!(
            "Column context of `{}.{}`: its subkey and associated data.",
            table.value(),
            logical.value()
        );
        items.push(quote! {
            #[doc = #doc]
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
            pub struct #expected;

            #[automatically_derived]
            impl ::encrypted_columns::ColumnContext for #expected {
                const TABLE: &'static str = #table;
                const COLUMN: &'static str = #logical;
            }
        });
    }
    if items.is_empty() {
        return Ok(quote!());
    }
    Ok(quote! {
        /// Column-context markers of this entity's encrypted fields (generated by
        /// `DeriveEncrypted`).
        pub mod ctx {
            #(#items)*
        }
    })
}

/// An index with its fields looked up.
struct Resolved<'a> {
    def: IndexDef,
    target: &'a FieldInfo,
    parts: Vec<(&'a FieldInfo, PartDef)>,
    /// The plain fields of `scope(..)`, in order.
    scope: Vec<&'a FieldInfo>,
}

fn resolve_indexes(
    fields: &[FieldInfo],
    indexes: Vec<(IndexDef, Option<Ident>)>,
    model_ex: bool,
) -> syn::Result<Vec<Resolved<'_>>> {
    let by_name = |name: &str| fields.iter().find(|f| unraw(&f.ident) == name);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (mut def, _) in indexes {
        let name = def.name.value();
        if !seen.insert(name.clone()) {
            return Err(syn::Error::new(
                def.name.span(),
                format!("blind index `{name}` is declared twice"),
            ));
        }
        let target = by_name(&name).ok_or_else(|| {
            syn::Error::new(
                def.name.span(),
                format!(
                    "no field `{name}` to store this blind index: add `pub {name}: Vec<u8>` \
                     (`Option<Vec<u8>>` if the indexed field is optional) and its column"
                ),
            )
        })?;
        // `#[sea_orm::model]` generates `Entity::find_by_<col>(v: impl Into<Vec<u8>>)` for every
        // `#[sea_orm(unique)]` column: it clashes with our `find_by_<index>` (a bare
        // "duplicate definitions" error), and as `&str: Into<Vec<u8>>` it would accept a
        // plaintext and send it to the database. Say so, and how to keep the constraint.
        if let (true, Some(span)) = (model_ex, target.sea_orm_unique) {
            return Err(syn::Error::new(
                span,
                format!(
                    "`{name}` cannot be `#[sea_orm(unique)]` in a `#[sea_orm::model]` entity: \
                     SeaORM then generates its own `Entity::find_by_{name}` over raw index \
                     bytes, which clashes with the blind-index lookup; write \
                     `#[sea_orm(unique_key = \"{name}_key\")]` instead (a unique index whose \
                     name contains the column, so `unique_violation` still recognises it), \
                     or create the unique index in a migration"
                ),
            ));
        }
        if !is_vec_u8(&target.inner) {
            return Err(syn::Error::new_spanned(
                &target.ty,
                format!(
                    "blind index column `{name}` must be `Vec<u8>` or `Option<Vec<u8>>` (a \
                     binary column holding the index value)"
                ),
            ));
        }
        let mut parts = Vec::new();
        let mut any_optional = false;
        for part in std::mem::take(&mut def.parts) {
            let Some(field_name) = part.field.clone() else {
                continue;
            };
            let source = by_name(&field_name.value()).ok_or_else(|| {
                syn::Error::new(
                    field_name.span(),
                    format!(
                        "compound index `{name}` names `{}`, which is not a field of this struct",
                        field_name.value()
                    ),
                )
            })?;
            if source.marker.is_none() {
                return Err(syn::Error::new(
                    field_name.span(),
                    format!(
                        "`{}` is not encrypted; blind indexes are for encrypted fields (a \
                         plaintext column can be indexed by the database directly)",
                        source.ident
                    ),
                ));
            }
            any_optional |= source.optional;
            parts.push((source, part));
        }
        if any_optional && !target.optional {
            return Err(syn::Error::new_spanned(
                &target.ty,
                format!(
                    "`{name}` must be `Option<Vec<u8>>`: an indexed field is optional, and a NULL \
                     field gives a NULL index value"
                ),
            ));
        }
        let scope = resolve_scope(fields, &def, target)?;
        out.push(Resolved {
            def,
            target,
            parts,
            scope,
        });
    }
    Ok(out)
}

/// The fields of an index's `scope(..)`: plain columns of this struct, not its own column,
/// and the index column not `#[sea_orm(unique)]` (which would keep it unique table-wide).
fn resolve_scope<'a>(
    fields: &'a [FieldInfo],
    def: &IndexDef,
    target: &FieldInfo,
) -> syn::Result<Vec<&'a FieldInfo>> {
    let name = def.name.value();
    if let (false, Some(span)) = (def.scope.is_empty(), target.sea_orm_unique) {
        return Err(syn::Error::new(
            span,
            format!(
                "`{name}` is unique per `scope(..)`: drop `#[sea_orm(unique)]`, which would make \
                 it unique across the whole table; create the composite index with \
                 `Entity::scoped_unique_indexes()` (or `migrate::schema::add_blind_index_column`)"
            ),
        ));
    }
    let mut out = Vec::new();
    for column in &def.scope {
        let wanted = unraw(column);
        let field = fields
            .iter()
            .find(|f| unraw(&f.ident) == wanted)
            .ok_or_else(|| {
                syn::Error::new(
                    column.span(),
                    format!("`scope({wanted})`: `{wanted}` is not a field of this struct"),
                )
            })?;
        if field.marker.is_some() || wanted == name {
            return Err(syn::Error::new(
                column.span(),
                format!(
                    "`scope({wanted})`: a scope column must be a plain (unencrypted) column such \
                     as a tenant id, compared as stored"
                ),
            ));
        }
        if out.iter().any(|f: &&FieldInfo| f.ident == field.ident) {
            return Err(syn::Error::new(
                column.span(),
                format!("`scope(..)` lists `{wanted}` twice"),
            ));
        }
        out.push(field);
    }
    Ok(out)
}

fn index_helpers(table: &LitStr, indexes: &[Resolved<'_>]) -> TokenStream {
    let ec = quote!(::encrypted_columns);
    let bi = quote!(::encrypted_columns::blind_index);
    let mut entity_items = Vec::new();
    let mut model_items = Vec::new();
    let mut fill_steps = Vec::new();
    let mut spec_fns = Vec::new();
    let mut unique_columns = Vec::new();
    let mut scoped_uniques = Vec::new();

    for index in indexes {
        let name = &index.def.name;
        let name_str = name.value();
        let target = &index.target.ident;
        let spec_fn = format_ident!("{}_index", name_str);
        let find_fn = format_ident!("find_by_{}", name_str);
        let find_all_fn = format_ident!("find_all_by_{}", name_str);
        let find_one_fn = format_ident!("find_one_by_{}", name_str);
        let condition_fn = format_ident!("{}_condition", name_str);
        let find_all_where_fn = format_ident!("find_all_by_{}_where", name_str);
        let find_one_where_fn = format_ident!("find_one_by_{}_where", name_str);
        let matches_fn = format_ident!("matches_{}", name_str);
        let column_variant = format_ident!("{}", name_str.to_upper_camel_case());
        let span = index.def.span;

        let pipelines = index.parts.iter().map(|(_, part)| {
            let steps = &part.transforms;
            let custom = part.transform_fn.as_ref().map(|path| {
                let label = quote!(#path).to_string().replace(' ', "");
                quote!(, #bi::Transform::custom(#label, #path))
            });
            quote!(#bi::Pipeline::new([#(#steps),* #custom]))
        });
        let bits = index.def.bits.as_ref().map(|b| quote!(.bits(#b)));
        let unique = index.def.unique.then(|| quote!(.unique()));
        if index.def.unique {
            unique_columns.push(name_str.clone());
        }
        // Scope columns by their SeaORM column name, which `#[sea_orm(column_name)]` may rename.
        let scope_variants = index
            .scope
            .iter()
            .map(|f| format_ident!("{}", unraw(&f.ident).to_upper_camel_case()));
        let scope = quote!(#(.scoped_by(::sea_orm::IdenStatic::as_str(&Column::#scope_variants)))*);
        if !index.scope.is_empty() {
            scoped_uniques.push(quote! {
                if let ::std::option::Option::Some(statement) = #ec::schema::unique_index(
                    ::sea_orm::EntityName::table_name(&Entity),
                    ::sea_orm::IdenStatic::as_str(&Column::#column_variant),
                    Self::#spec_fn(),
                ) {
                    statements.push(statement);
                }
            });
        }
        let doc_spec = format!("The definition of blind index `{name_str}`.");
        spec_fns.push(quote_spanned! {span=>
            #[doc = #doc_spec]
            pub fn #spec_fn() -> &'static #bi::BlindIndex {
                static INDEX: ::std::sync::LazyLock<#bi::BlindIndex> = ::std::sync::LazyLock::new(|| {
                    #bi::BlindIndex::new(#table, #name) #(.field(#pipelines))* #bits #unique #scope
                });
                &INDEX
            }
        });

        // Lookup arguments, typed by each field's plaintext type.
        let arg_idents: Vec<Ident> = index
            .parts
            .iter()
            .map(|(f, _)| format_ident!("{}", unraw(&f.ident)))
            .collect();
        let arg_decls = index.parts.iter().zip(&arg_idents).map(|((f, _), arg)| {
            let inner = &f.inner;
            quote!(#arg: impl #bi::IndexArg<<#inner as #ec::EncryptedField>::Plain>)
        });
        let arg_decls2 = arg_decls.clone().collect::<Vec<_>>();
        let wanted = arg_idents
            .iter()
            .map(|a| quote!(#bi::IndexArg::index_input(&#a)?));
        let wanted2 = wanted.clone().collect::<Vec<_>>();
        let arg_refs = arg_idents.iter().map(|a| quote!(&#a)).collect::<Vec<_>>();

        let doc_find = format!(
            "Rows whose `{name_str}` matches, as a normal `Select` to add filters to. With a \
             truncated index some rows may be false positives: `{find_all_fn}` filters them."
        );
        let doc_find_all = "Every row whose indexed field(s) normalize to the same value as the \
                            arguments (blind-index lookup, false positives removed by \
                            decrypting and comparing).";
        let doc_find_all_where = format!(
            "Like `{find_all_fn}`, with `filter` (e.g. `Column::TenantId.eq(tenant)`, or a \
             `Condition`) ANDed with the blind-index condition in SQL; false positives are \
             removed by decrypting and comparing, as there.\n\n\
             A matched row sealed under a key that the keyring in force does not hold fails the \
             lookup with `Error::LookupKeyMissing`, which does not name the key id: such a row \
             means the filter let another tenant's rows through (naming its key would reveal \
             that the value exists there) or this tenant's keyring lacks one of its keys (and \
             answering \"no match\" would hide one of its rows)."
        );
        entity_items.push(quote! {
            #[doc = #doc_find]
            pub fn #find_fn(#(#arg_decls),*) -> ::std::result::Result<::sea_orm::Select<Entity>, #ec::Error> {
                let condition = Self::#condition_fn(#(#arg_refs),*)?;
                Ok(::sea_orm::QueryFilter::filter(<Entity as ::sea_orm::EntityTrait>::find(), condition))
            }

            #[doc = concat!("The condition behind `", stringify!(#find_fn), "`, to combine with other filters.")]
            pub fn #condition_fn(#(#arg_decls2),*) -> ::std::result::Result<::sea_orm::Condition, #ec::Error> {
                let keyring = #ec::keyring::current()?;
                Self::#spec_fn().condition(&keyring, Column::#column_variant, &[#(#wanted),*])
            }

            #[doc = #doc_find_all]
            pub async fn #find_all_fn<C: ::sea_orm::ConnectionTrait>(db: &C, #(#arg_decls2),*) -> ::std::result::Result<::std::vec::Vec<Model>, ::sea_orm::DbErr> {
                let candidates = Self::#find_fn(#(#arg_refs),*)?.all(db).await?;
                let mut found = ::std::vec::Vec::with_capacity(candidates.len());
                for row in candidates {
                    if row.#matches_fn(#(#arg_refs),*)? {
                        found.push(row);
                    }
                }
                Ok(found)
            }

            #[doc = concat!("The first row `", stringify!(#find_all_fn), "` would return.")]
            pub async fn #find_one_fn<C: ::sea_orm::ConnectionTrait>(db: &C, #(#arg_decls2),*) -> ::std::result::Result<::std::option::Option<Model>, ::sea_orm::DbErr> {
                Ok(Self::#find_all_fn(db, #(#arg_refs),*).await?.into_iter().next())
            }

            #[doc = #doc_find_all_where]
            // The filter comes on top of one argument per indexed field.
            #[allow(clippy::too_many_arguments)]
            pub async fn #find_all_where_fn<C: ::sea_orm::ConnectionTrait>(db: &C, filter: impl ::sea_orm::sea_query::IntoCondition, #(#arg_decls2),*) -> ::std::result::Result<::std::vec::Vec<Model>, ::sea_orm::DbErr> {
                let condition = Self::#condition_fn(#(#arg_refs),*)?
                    .add(::sea_orm::sea_query::IntoCondition::into_condition(filter));
                let candidates = ::sea_orm::QueryFilter::filter(<Entity as ::sea_orm::EntityTrait>::find(), condition)
                    .all(db)
                    .await
                    .map_err(|err| #ec::__private::lookup_error(Self::#spec_fn(), err))?;
                let mut found = ::std::vec::Vec::with_capacity(candidates.len());
                for row in candidates {
                    if row.#matches_fn(#(#arg_refs),*)? {
                        found.push(row);
                    }
                }
                Ok(found)
            }

            #[doc = concat!("The first row `", stringify!(#find_all_where_fn), "` would return.")]
            #[allow(clippy::too_many_arguments)]
            pub async fn #find_one_where_fn<C: ::sea_orm::ConnectionTrait>(db: &C, filter: impl ::sea_orm::sea_query::IntoCondition, #(#arg_decls2),*) -> ::std::result::Result<::std::option::Option<Model>, ::sea_orm::DbErr> {
                Ok(Self::#find_all_where_fn(db, filter, #(#arg_refs),*).await?.into_iter().next())
            }
        });

        // The row's own inputs, from its decrypted fields.
        let stored_inputs = index.parts.iter().map(|(f, _)| {
            let ident = &f.ident;
            if f.optional {
                quote!(match &self.#ident {
                    Some(v) => #ec::__private::field_input(v)?,
                    None => return Ok(false),
                })
            } else {
                quote!(#ec::__private::field_input(&self.#ident)?)
            }
        });
        let doc_matches = format!(
            "Whether this row's fields match the arguments under `{name_str}`'s normalization."
        );
        model_items.push(quote! {
            #[doc = #doc_matches]
            pub fn #matches_fn(&self, #(#arg_decls2),*) -> ::std::result::Result<bool, #ec::Error> {
                let stored = [#(#stored_inputs),*];
                Entity::#spec_fn().matches(&stored, &[#(#wanted2),*])
            }
        });

        // fill_blind_indexes: recompute when any input is Set; all inputs must be present.
        let field_idents: Vec<&Ident> = index.parts.iter().map(|(f, _)| &f.ident).collect();
        let field_names: Vec<String> = field_idents.iter().map(|i| unraw(i)).collect();
        let gather = index.parts.iter().zip(&field_names).map(|((f, _), fname)| {
            let ident = &f.ident;
            let value = if f.optional {
                quote!(match v { Some(v) => Some(#ec::__private::field_input(v)?), None => None })
            } else {
                quote!(Some(#ec::__private::field_input(v)?))
            };
            quote! {
                match &self.#ident {
                    ::sea_orm::ActiveValue::Set(v) | ::sea_orm::ActiveValue::Unchanged(v) => #value,
                    ::sea_orm::ActiveValue::NotSet => {
                        return Err(#ec::__private::missing_input(Entity::#spec_fn(), #fname));
                    }
                }
            }
        });
        let store = if index.target.optional {
            quote!(self.#target = ::sea_orm::ActiveValue::Set(value);)
        } else {
            quote!(self.#target = ::sea_orm::ActiveValue::Set(#ec::__private::required(Entity::#spec_fn(), value)?);)
        };
        fill_steps.push(quote! {
            if #(matches!(self.#field_idents, ::sea_orm::ActiveValue::Set(_)))||* {
                let keyring = #ec::keyring::current()?;
                let value = {
                    let inputs = [#(#gather),*];
                    Entity::#spec_fn().compute(&keyring, &inputs)?
                };
                #store
            }
        });
    }

    let spec_names: Vec<Ident> = indexes
        .iter()
        .map(|i| format_ident!("{}_index", i.def.name.value()))
        .collect();
    let unique_lits = unique_columns
        .iter()
        .map(|c| LitStr::new(c, proc_macro2::Span::call_site()));

    quote! {
        #[automatically_derived]
        impl Entity {
            #(#spec_fns)*

            /// Every blind index of this entity (for leakage reports and index-key rotation).
            pub fn blind_indexes() -> ::std::vec::Vec<&'static #bi::BlindIndex> {
                vec![#(Self::#spec_names()),*]
            }

            /// If `err` is a UNIQUE violation on one of this entity's unique blind indexes,
            /// the typed [`Error::Duplicate`](::encrypted_columns::Error::Duplicate) naming it.
            pub fn unique_violation(err: &::sea_orm::DbErr) -> ::std::option::Option<#ec::Error> {
                #bi::unique_violation(err, #table, &[#(#unique_lits),*])
            }

            /// The composite UNIQUE indexes of this entity's blind indexes declared
            /// `unique, scope(..)`: over the scope columns then the index column, named
            /// `{table}_{column}` ([`schema::unique_index`](::encrypted_columns::schema::unique_index)).
            /// Run them after creating the table from the entity (SeaORM's `Schema` does not
            /// know them); empty if no index is scoped.
            pub fn scoped_unique_indexes() -> ::std::vec::Vec<::sea_orm::sea_query::IndexCreateStatement> {
                #[allow(unused_mut)]
                let mut statements = ::std::vec::Vec::new();
                #(#scoped_uniques)*
                statements
            }

            #(#entity_items)*
        }

        #[automatically_derived]
        impl Model {
            #(#model_items)*
        }

        #[automatically_derived]
        impl ActiveModel {
            /// Recomputes every blind index whose input fields are `Set`. Call it on paths that
            /// skip `ActiveModelBehavior` (`insert_many`, `update_many`), or use
            /// [`with_blind_indexes`](Self::with_blind_indexes) in your `before_save`.
            ///
            /// Fails if a compound index has some inputs `Set` and others `NotSet`: load the
            /// row (or set every input) so the index can be recomputed.
            pub fn fill_blind_indexes(&mut self) -> ::std::result::Result<(), #ec::Error> {
                #(#fill_steps)*
                Ok(())
            }

            /// [`fill_blind_indexes`](Self::fill_blind_indexes) for `before_save`:
            /// `async fn before_save(self, ..) -> Result<Self, DbErr> { self.with_blind_indexes() }`.
            pub fn with_blind_indexes(mut self) -> ::std::result::Result<Self, ::sea_orm::DbErr> {
                self.fill_blind_indexes()?;
                Ok(self)
            }
        }
    }
}
