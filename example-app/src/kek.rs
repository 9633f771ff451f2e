//! The clinic's key-encryption key, chosen by environment: which provider wraps the clinic's
//! keys in the key store. All provider construction is here; a new provider (e.g. a cloud
//! KMS) is one more arm of [`Settings`] and [`connect`].
//!
//! | variable | meaning |
//! |---|---|
//! | `CLINIC_KEK` | `env` (default: keys come from `ENCRYPTED_COLUMNS_*`, checked against the store), `static`, `pkcs11` |
//! | `CLINIC_KEK_STATIC` | `static`: base64 of the 32-byte KEK (tests and development) |
//! | `CLINIC_PKCS11_MODULE` | `pkcs11`: path of the token's PKCS#11 module |
//! | `CLINIC_PKCS11_TOKEN` | `pkcs11`: token label |
//! | `CLINIC_PKCS11_PIN` | `pkcs11`: user PIN |
//! | `CLINIC_PKCS11_KEY` | `pkcs11`: the KEK's label in the token |
//! | `CLINIC_AWS_KMS_KEY` | `aws-kms` (feature `aws-kms`): KMS key id, key ARN or `alias/…` |
//! | `CLINIC_AWS_KMS_REGION` | `aws-kms`: the region (default: `AWS_REGION`) |
//! | `CLINIC_AWS_KMS_ENDPOINT` | `aws-kms`: optional endpoint URL (a VPC endpoint, or a local KMS-compatible server) |
//! | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` | `aws-kms`: credentials |
//!
//! Errors name the variable, never its value.

use std::sync::Arc;

use base64::Engine as _;
use encrypted_columns::KeyId;
use encrypted_columns::kek::pkcs11::{Pkcs11Config, Pkcs11Kek};
use encrypted_columns::kek::{KeyEncryptionKey, StaticKek, WRAPPED_KEY_LEN};
use encrypted_columns::keyring::{KeyPurpose, check_value};
use encrypted_columns::zeroize::Zeroizing;

/// Selects the provider.
pub const CLINIC_KEK: &str = "CLINIC_KEK";
/// The static KEK's base64.
pub const CLINIC_KEK_STATIC: &str = "CLINIC_KEK_STATIC";
/// The PKCS#11 module path.
pub const CLINIC_PKCS11_MODULE: &str = "CLINIC_PKCS11_MODULE";
/// The PKCS#11 token label.
pub const CLINIC_PKCS11_TOKEN: &str = "CLINIC_PKCS11_TOKEN";
/// The PKCS#11 user PIN.
pub const CLINIC_PKCS11_PIN: &str = "CLINIC_PKCS11_PIN";
/// The PKCS#11 KEK label.
pub const CLINIC_PKCS11_KEY: &str = "CLINIC_PKCS11_KEY";

/// The AWS KMS key.
pub const CLINIC_AWS_KMS_KEY: &str = "CLINIC_AWS_KMS_KEY";
/// The AWS region of the KMS key.
#[cfg(feature = "aws-kms")]
pub const CLINIC_AWS_KMS_REGION: &str = "CLINIC_AWS_KMS_REGION";
/// An optional KMS endpoint URL.
#[cfg(feature = "aws-kms")]
pub const CLINIC_AWS_KMS_ENDPOINT: &str = "CLINIC_AWS_KMS_ENDPOINT";

/// A provider's settings, read but not yet connected.
pub enum Settings {
    /// A 32-byte KEK from the variable named `var`.
    Static {
        /// The KEK.
        kek: Zeroizing<[u8; WRAPPED_KEY_LEN]>,
    },
    /// A KEK in a PKCS#11 token.
    Pkcs11(Pkcs11Config),
    /// A KMS key in AWS KMS (or a KMS-compatible endpoint).
    #[cfg(feature = "aws-kms")]
    AwsKms(encrypted_columns::kek::aws_kms::AwsKmsConfig),
}

/// The configured provider's settings, or `None` for `CLINIC_KEK=env` (or unset).
pub fn configured() -> Result<Option<Settings>, String> {
    let choice = std::env::var(CLINIC_KEK).unwrap_or_default();
    settings_for(choice.trim())
}

/// The settings of provider `name` (`env` or empty: none), from its variables.
pub fn settings_for(name: &str) -> Result<Option<Settings>, String> {
    match name {
        "" | "env" => Ok(None),
        "static" => static_from(CLINIC_KEK_STATIC).map(Some),
        "pkcs11" => pkcs11_with_key(&required(CLINIC_PKCS11_KEY)?).map(Some),
        "aws-kms" => aws_kms_with_key(&required(CLINIC_AWS_KMS_KEY)?).map(Some),
        _ => Err(format!(
            "{CLINIC_KEK} must be `env`, `static`, `pkcs11` or `aws-kms`"
        )),
    }
}

/// A static KEK from the variable `var` (base64 of 32 bytes).
pub fn static_from(var: &str) -> Result<Settings, String> {
    let text = Zeroizing::new(required(var)?);
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| format!("{var} is not valid base64"))?,
    );
    let kek: [u8; WRAPPED_KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "{var} must be the base64 of exactly 32 bytes, e.g. `head -c 32 /dev/urandom | base64`"
        )
    })?;
    Ok(Settings::Static {
        kek: Zeroizing::new(kek),
    })
}

/// The PKCS#11 KEK labelled `key` in the token of `CLINIC_PKCS11_MODULE`/`_TOKEN`/`_PIN`.
pub fn pkcs11_with_key(key: &str) -> Result<Settings, String> {
    let module = required(CLINIC_PKCS11_MODULE)?;
    let token = required(CLINIC_PKCS11_TOKEN)?;
    let pin = Zeroizing::new(required(CLINIC_PKCS11_PIN)?);
    Ok(Settings::Pkcs11(Pkcs11Config::new(
        module,
        token,
        key,
        pin.as_str(),
    )))
}

/// The AWS KMS key `key` (id, ARN or alias), in `CLINIC_AWS_KMS_REGION` (or `AWS_REGION`), at
/// `CLINIC_AWS_KMS_ENDPOINT` if set, with the standard AWS credential variables.
#[cfg(feature = "aws-kms")]
pub fn aws_kms_with_key(key: &str) -> Result<Settings, String> {
    use encrypted_columns::kek::aws_kms::AwsKmsConfig;
    let region = required(CLINIC_AWS_KMS_REGION)
        .or_else(|_| required("AWS_REGION"))
        .map_err(|_| format!("{CLINIC_AWS_KMS_REGION} (or AWS_REGION) is not set"))?;
    let mut config = AwsKmsConfig::new(key, region.trim());
    if let Ok(endpoint) = required(CLINIC_AWS_KMS_ENDPOINT) {
        config = config.endpoint_url(endpoint.trim());
    }
    Ok(Settings::AwsKms(config))
}

/// Without the `aws-kms` feature: a one-line refusal saying how to build it in.
#[cfg(not(feature = "aws-kms"))]
pub fn aws_kms_with_key(_key: &str) -> Result<Settings, String> {
    Err(format!(
        "this clinic was built without AWS KMS support: rebuild it with `cargo build -p \
         example-app --features aws-kms` to use {CLINIC_KEK}=aws-kms"
    ))
}

fn required(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        Ok(_) | Err(std::env::VarError::NotPresent) => Err(format!("{var} is not set")),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{var} is not valid UTF-8")),
    }
}

/// The provider for `settings`, connected (a PKCS#11 login happens here).
pub async fn connect(settings: Settings) -> Result<Arc<dyn KeyEncryptionKey>, String> {
    match settings {
        Settings::Static { kek, .. } => Ok(Arc::new(StaticKek::new(static_kek_id(&kek), &kek))),
        Settings::Pkcs11(config) => {
            // The KEK is provisioned with the token's tools (or once by `clinic keys init`,
            // which generates it if missing), never silently by every command.
            let kek = Pkcs11Kek::connect(config)
                .await
                .map_err(|e| format!("cannot open the KEK: {e}"))?;
            Ok(Arc::new(kek))
        }
        #[cfg(feature = "aws-kms")]
        Settings::AwsKms(config) => {
            // No request is sent here: an unknown key or an unreachable endpoint shows at the
            // first wrap or unwrap, as a one-line KekError naming the provider and key.
            let kek = encrypted_columns::kek::aws_kms::AwsKmsKek::new(config)
                .map_err(|e| format!("cannot open the KEK: {e}"))?;
            Ok(Arc::new(kek))
        }
    }
}

/// Like [`connect`], generating a missing PKCS#11 KEK in the token (`clinic keys init` and
/// `clinic keys rewrap --to-pkcs11-key`, which provision).
pub async fn connect_provisioning(settings: Settings) -> Result<Arc<dyn KeyEncryptionKey>, String> {
    match settings {
        Settings::Pkcs11(config) => {
            connect(Settings::Pkcs11(config.generate_if_missing(true))).await
        }
        other => connect(other).await,
    }
}

/// The configured provider, connected, or `None` for environment keys.
pub async fn from_env() -> Result<Option<Arc<dyn KeyEncryptionKey>>, String> {
    match configured()? {
        None => Ok(None),
        Some(settings) => connect(settings).await.map(Some),
    }
}

/// A static KEK's id: `static:` and a public fingerprint of the KEK (the first 8 bytes of its
/// FORMAT.md §10 check value as key 0), so the same KEK has the same id however it is passed,
/// and status output can say which KEK wraps the keys without showing it.
fn static_kek_id(kek: &Zeroizing<[u8; WRAPPED_KEY_LEN]>) -> String {
    let kcv = check_value(KeyPurpose::Subject, KeyId(0), kek);
    format!("static:{}", &kcv.to_string()[..16])
}
