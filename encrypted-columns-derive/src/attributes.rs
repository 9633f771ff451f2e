//! Parsing of `#[encrypted(..)]` (and the one `#[sea_orm(..)]` key we read, `table_name`).
//! Every user mistake becomes a `syn::Error` spanned on the offending token.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Attribute, Ident, LitInt, LitStr, Path};

/// Struct-level settings.
#[derive(Default)]
pub struct StructAttrs {
    pub table: Option<LitStr>,
    pub sea_orm_table: Option<LitStr>,
    pub active_model_behavior: bool,
    pub compound: Vec<IndexDef>,
    /// `#[sea_orm(model_ex)]`, added by `#[sea_orm::model]` (SeaORM 2's entity format).
    pub model_ex: bool,
}

/// Field-level settings.
#[derive(Default)]
pub struct FieldAttrs {
    pub column: Option<LitStr>,
    pub indexes: Vec<IndexDef>,
    /// Span of the first `#[encrypted]` attribute, for errors about the field as a whole.
    pub span: Option<Span>,
    /// Span of a `#[sea_orm(unique)]` on the field.
    pub sea_orm_unique: Option<Span>,
}

/// One blind index, single-field or compound.
pub struct IndexDef {
    pub name: LitStr,
    pub parts: Vec<PartDef>,
    pub bits: Option<LitInt>,
    pub unique: bool,
    /// `scope(col, ..)`: plain fields that scope the UNIQUE constraint (e.g. the tenant).
    pub scope: Vec<Ident>,
    pub span: Span,
}

/// One input of an index: a field and its normalizers.
pub struct PartDef {
    /// The source field; `None` for a field-level index until the caller fills it in.
    pub field: Option<LitStr>,
    pub transforms: Vec<TokenStream>,
    pub transform_fn: Option<Path>,
}

pub fn parse_struct_attrs(attrs: &[Attribute]) -> syn::Result<StructAttrs> {
    let mut out = StructAttrs::default();
    for attr in attrs {
        if attr.path().is_ident("sea_orm") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("table_name") {
                    out.sea_orm_table = Some(meta.value()?.parse()?);
                    Ok(())
                } else if meta.path.is_ident("model_ex") {
                    out.model_ex = true;
                    skip_meta(&meta)
                } else {
                    skip_meta(&meta)
                }
            })?;
        } else if attr.path().is_ident("encrypted") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("table") {
                    out.table = Some(meta.value()?.parse()?);
                } else if meta.path.is_ident("active_model_behavior") {
                    out.active_model_behavior = true;
                } else if meta.path.is_ident("compound_index") {
                    out.compound.push(parse_index(&meta, true)?);
                } else if meta.path.is_ident("blind_index") {
                    return Err(meta.error(
                        "`blind_index` goes on the encrypted field it indexes; for an index \
                         over several fields use `compound_index(name = \"..\", field = \"a\", \
                         field = \"b\")` here",
                    ));
                } else {
                    return Err(meta.error(
                        "unknown key in struct-level #[encrypted(..)]; expected `table`, \
                         `compound_index` or `active_model_behavior`",
                    ));
                }
                Ok(())
            })?;
        }
    }
    Ok(out)
}

pub fn parse_field_attrs(attrs: &[Attribute]) -> syn::Result<FieldAttrs> {
    let mut out = FieldAttrs::default();
    // Only `unique` is read; SeaORM validates its own attribute, so a shape we cannot parse
    // is left to it rather than reported here.
    for attr in attrs.iter().filter(|a| a.path().is_ident("sea_orm")) {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("unique") && !meta.input.peek(syn::Token![=]) {
                out.sea_orm_unique = Some(attr_span(attr));
            }
            skip_meta(&meta)
        });
    }
    for attr in attrs.iter().filter(|a| a.path().is_ident("encrypted")) {
        out.span.get_or_insert_with(|| attr_span(attr));
        if matches!(attr.meta, syn::Meta::Path(_)) {
            continue; // bare #[encrypted]: nothing to configure
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("column") {
                out.column = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("blind_index") {
                out.indexes.push(parse_index(&meta, false)?);
            } else if meta.path.is_ident("compound_index") {
                return Err(meta.error(
                    "`compound_index` goes on the struct (it spans several fields); on a field \
                     use `blind_index(..)`",
                ));
            } else {
                return Err(meta.error(
                    "unknown key in field-level #[encrypted(..)]; expected `blind_index(..)` or \
                     `column = \"..\"`",
                ));
            }
            Ok(())
        })?;
    }
    Ok(out)
}

fn attr_span(attr: &Attribute) -> Span {
    attr.path()
        .get_ident()
        .map(Ident::span)
        .unwrap_or_else(Span::call_site)
}

fn parse_index(meta: &ParseNestedMeta<'_>, compound: bool) -> syn::Result<IndexDef> {
    let span = meta
        .path
        .get_ident()
        .map(Ident::span)
        .unwrap_or_else(Span::call_site);
    let mut name = None;
    let mut bits = None;
    let mut unique = false;
    let mut scope: Vec<Ident> = Vec::new();
    let mut scope_span = None;
    let mut single = PartDef {
        field: None,
        transforms: Vec::new(),
        transform_fn: None,
    };
    let mut parts = Vec::new();
    meta.parse_nested_meta(|inner| {
        let key = inner
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        match key.as_str() {
            "name" => name = Some(inner.value()?.parse::<LitStr>()?),
            "bits" => bits = Some(inner.value()?.parse::<LitInt>()?),
            "unique" => unique = true,
            "scope" => {
                scope_span.get_or_insert(inner.path.span());
                inner.parse_nested_meta(|column| match column.path.get_ident() {
                    Some(ident) if !column.input.peek(syn::Token![=]) => {
                        scope.push(ident.clone());
                        Ok(())
                    }
                    _ => Err(column.error(
                        "`scope(..)` lists plain fields of this struct, e.g. `scope(tenant_id)`",
                    )),
                })?;
            }
            "transform" | "normalize" if !compound => {
                let lit: LitStr = inner.value()?.parse()?;
                single.transforms.extend(parse_pipeline(&lit)?);
            }
            "transform_fn" if !compound => {
                let lit: LitStr = inner.value()?.parse()?;
                single.transform_fn = Some(lit.parse()?);
            }
            "field" if compound => {
                if inner.input.peek(syn::Token![=]) {
                    parts.push(PartDef {
                        field: Some(inner.value()?.parse()?),
                        transforms: Vec::new(),
                        transform_fn: None,
                    });
                } else {
                    parts.push(parse_part(&inner)?);
                }
            }
            _ => {
                let expected = if compound {
                    "`name`, `field = \"..\"` or `field(name = \"..\", transform = \"..\")`, \
                     `bits`, `unique`, `scope(..)`"
                } else {
                    "`name`, `transform` (or `normalize`), `transform_fn`, `bits`, `unique`, \
                     `scope(..)`"
                };
                return Err(inner.error(format!("unknown blind-index key; expected {expected}")));
            }
        }
        Ok(())
    })?;
    let name = name.ok_or_else(|| {
        syn::Error::new(
            span,
            "a blind index needs `name = \"..\"`: the companion column (a field of this struct) \
             that stores it",
        )
    })?;
    if let Some(scope_span) = scope_span {
        if !unique {
            return Err(syn::Error::new(
                scope_span,
                "`scope(..)` scopes a UNIQUE constraint (one value per tenant instead of one per \
                 table): add `unique`, or drop `scope(..)` (a non-unique index needs no scope; \
                 filter lookups with `find_all_by_<index>_where`)",
            ));
        }
        if scope.is_empty() {
            return Err(syn::Error::new(
                scope_span,
                "`scope(..)` needs at least one field, e.g. `scope(tenant_id)`",
            ));
        }
    }
    if compound {
        if parts.len() < 2 {
            return Err(syn::Error::new(
                span,
                "a compound index needs at least two `field`s; for one field put \
                 `blind_index(..)` on that field",
            ));
        }
    } else {
        parts.push(single);
    }
    if let Some(bits) = &bits {
        let n: u16 = bits.base10_parse().map_err(|_| {
            syn::Error::new(bits.span(), "bits must be a whole number from 1 to 256")
        })?;
        if n == 0 || n > 256 {
            return Err(syn::Error::new(
                bits.span(),
                "bits must be from 1 to 256 (256 keeps the whole HMAC-SHA256)",
            ));
        }
        if unique && n != 256 {
            return Err(syn::Error::new(
                bits.span(),
                "a unique index must keep all 256 bits: truncated values collide and would \
                 reject legitimate rows; drop `bits` or drop `unique`",
            ));
        }
    }
    Ok(IndexDef {
        name,
        parts,
        bits,
        unique,
        scope,
        span,
    })
}

fn parse_part(meta: &ParseNestedMeta<'_>) -> syn::Result<PartDef> {
    let mut part = PartDef {
        field: None,
        transforms: Vec::new(),
        transform_fn: None,
    };
    meta.parse_nested_meta(|inner| {
        if inner.path.is_ident("name") {
            part.field = Some(inner.value()?.parse()?);
        } else if inner.path.is_ident("transform") || inner.path.is_ident("normalize") {
            let lit: LitStr = inner.value()?.parse()?;
            part.transforms.extend(parse_pipeline(&lit)?);
        } else if inner.path.is_ident("transform_fn") {
            let lit: LitStr = inner.value()?.parse()?;
            part.transform_fn = Some(lit.parse()?);
        } else {
            return Err(inner.error(
                "unknown key in `field(..)`; expected `name`, `transform` or `transform_fn`",
            ));
        }
        Ok(())
    })?;
    if part.field.is_none() {
        return Err(meta.error("`field(..)` needs `name = \"..\"`, the field to index"));
    }
    Ok(part)
}

/// Validates a pipeline string at compile time and turns it into `Transform` constructors.
/// Mirrors `Pipeline::parse` in the library (the two are tested against each other).
fn parse_pipeline(lit: &LitStr) -> syn::Result<Vec<TokenStream>> {
    let spec = lit.value();
    let mut out = Vec::new();
    if spec.trim().is_empty() {
        return Ok(out);
    }
    let t = quote!(::encrypted_columns::blind_index::Transform);
    for raw in spec.split(',') {
        let step = raw.trim();
        let tokens = match step {
            "trim" => quote!(#t::Trim),
            "collapse_spaces" => quote!(#t::CollapseSpaces),
            "lowercase" => quote!(#t::Lowercase),
            "nfc" => quote!(#t::Nfc),
            "nfkc" => quote!(#t::Nfkc),
            "casefold" => quote!(#t::CaseFold),
            "digits" => quote!(#t::DigitsOnly),
            "email" => quote!(#t::Email),
            "email_domain" => quote!(#t::EmailDomain),
            "" => {
                return Err(syn::Error::new(
                    lit.span(),
                    "empty step in the transform list",
                ));
            }
            other => {
                let counted = |name: &str| -> Option<Option<usize>> {
                    let arg = other.strip_prefix(name)?.trim().strip_prefix('(')?;
                    let arg = arg.strip_suffix(')')?.trim();
                    Some(arg.parse::<usize>().ok().filter(|n| *n > 0))
                };
                match (counted("first"), counted("last")) {
                    (Some(Some(n)), _) => quote!(#t::FirstN(#n)),
                    (_, Some(Some(n))) => quote!(#t::LastN(#n)),
                    (Some(None), _) | (_, Some(None)) => {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!("`{other}`: first(N) / last(N) need a whole number above 0"),
                        ));
                    }
                    _ => {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!(
                                "unknown transform `{other}`; known: trim, collapse_spaces, \
                                 lowercase, nfc, nfkc, casefold, digits, email, email_domain, \
                                 first(N), last(N) (or `transform_fn = \"path::to::fn\"`)"
                            ),
                        ));
                    }
                }
            }
        };
        out.push(tokens);
    }
    Ok(out)
}

/// Consumes a `#[sea_orm(..)]` entry we do not care about, whatever its shape.
fn skip_meta(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        content.parse::<TokenStream>()?;
    }
    Ok(())
}
