//! A KEK in AWS KMS, or any endpoint speaking the KMS API (feature `aws-kms`).
//!
//! The KEK is a symmetric KMS key (`SYMMETRIC_DEFAULT`); its material never leaves KMS.
//! Wrapping is KMS `Encrypt` of the 32-byte key, unwrapping is `Decrypt` with `KeyId` pinned to
//! the configured key (a ciphertext made under another KMS key is refused rather than decrypted
//! with whichever key it names), [`generate_key`](KeyEncryptionKey::generate_key) is
//! `GenerateDataKey` (`AES_256`), and [`rewrap_key`](KeyEncryptionKey::rewrap_key) to another
//! [`AwsKmsKek`] of the same client ([`AwsKmsKek::for_key`]) or the same endpoint, region and
//! access key id is `ReEncrypt`, so the key never leaves KMS during KEK rotation.
//!
//! # Context binding
//!
//! Every call carries a KMS *encryption context* built from the [`WrapContext`], one pair per
//! field so that KMS audit logs (CloudTrail) show them and key policies can condition on them:
//!
//! | pair | value |
//! | --- | --- |
//! | `encrypted-columns:key-id` | the key id in decimal, always present |
//! | `encrypted-columns:purpose` | the purpose, left out when empty |
//! | `encrypted-columns:subject` | the subject, left out when empty |
//!
//! Empty values are left out because KMS does not document them as accepted; with the key-id
//! pair always present and the names fixed, the mapping stays one-to-one. Decrypting with any
//! other context fails in KMS (`InvalidCiphertextException`, [`KekError::Unwrap`]).
//!
//! # Wrapped layout
//!
//! A wrapped key is the `CiphertextBlob` KMS returned, stored as is: opaque, its layout KMS's
//! (it names the KMS key and carries the context's authentication). No format byte is added, so
//! `aws kms decrypt --ciphertext-blob` with the same encryption context reads it too.
//!
//! # Failures and time bounds
//!
//! Each call is bounded by [`AwsKmsConfig::operation_timeout`] (all attempts included; default
//! 10 s) with at most [`AwsKmsConfig::max_attempts`] attempts (default 3, short back-off), so a
//! stopped endpoint fails with [`KekError::Unreachable`] within the bound, not after minutes.
//! KMS errors map to [`KekError`] by their code; see [`AwsKmsKek`]. Errors carry the error code
//! and KMS's message, never key bytes or credentials.
//!
//! The key bytes this module owns are in [`Zeroizing`] buffers; the SDK's own request and
//! response buffers (which hold the key in base64 while in flight) are not wiped.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use encrypted_columns::kek::{KeyEncryptionKey, WrapContext};
//! use encrypted_columns::kek::aws_kms::{AwsKmsConfig, AwsKmsKek};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), encrypted_columns::kek::KekError> {
//! // Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN).
//! let config = AwsKmsConfig::new("alias/clinic-kek", "eu-west-1")
//!     .operation_timeout(Duration::from_secs(5));
//! let kek: Arc<dyn KeyEncryptionKey> = Arc::new(AwsKmsKek::new(config)?);
//!
//! let ctx = WrapContext::new(1, "encryption", "clinic");
//! let (root_key, wrapped) = kek.generate_key(&ctx).await?; // store `wrapped.to_string()`
//! assert_eq!(*kek.unwrap_key(&wrapped, &ctx).await?, *root_key); // at start-up
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kms::Client;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{
    BehaviorVersion, Credentials, ProvideCredentials, Region, SharedCredentialsProvider,
};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use zeroize::Zeroizing;

use super::{KekError, KekFuture, KeyEncryptionKey, WRAPPED_KEY_LEN, WrapContext, WrappedKey};

const PROVIDER: &str = "aws-kms";
const CONTEXT_KEY_ID: &str = "encrypted-columns:key-id";
const CONTEXT_PURPOSE: &str = "encrypted-columns:purpose";
const CONTEXT_SUBJECT: &str = "encrypted-columns:subject";

/// Where credentials come from.
#[derive(Clone)]
enum CredentialSource {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`, read by
    /// [`AwsKmsKek::new`].
    Environment,
    /// Given in the configuration.
    Static {
        access_key_id: String,
        secret_access_key: Zeroizing<String>,
        session_token: Option<Zeroizing<String>>,
    },
    /// A provider from the application (e.g. `aws-config`'s default chain).
    Provider(SharedCredentialsProvider),
}

/// Which KMS key, where, with which credentials and time bounds.
#[derive(Clone)]
pub struct AwsKmsConfig {
    key_id: String,
    region: String,
    endpoint_url: Option<String>,
    credentials: CredentialSource,
    operation_timeout: Duration,
    connect_timeout: Duration,
    max_attempts: u32,
}

impl AwsKmsConfig {
    /// The KMS key `key_id` (a key id, key ARN, alias name `alias/…` or alias ARN) in `region`
    /// (e.g. `"eu-west-1"`), on AWS's regional endpoint, with credentials from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`).
    pub fn new(key_id: impl Into<String>, region: impl Into<String>) -> Self {
        AwsKmsConfig {
            key_id: key_id.into(),
            region: region.into(),
            endpoint_url: None,
            credentials: CredentialSource::Environment,
            operation_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            max_attempts: 3,
        }
    }

    /// Sends requests to `url` instead of AWS's regional endpoint: a VPC endpoint, a FIPS
    /// endpoint, or a local KMS-compatible server (`http://127.0.0.1:…` in tests).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Uses these credentials instead of the environment's. The secret (and session token) are
    /// wiped on drop and never shown by `Debug` or in errors.
    pub fn static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        self.credentials = CredentialSource::Static {
            access_key_id: access_key_id.into(),
            secret_access_key: Zeroizing::new(secret_access_key.into()),
            session_token: session_token.map(Zeroizing::new),
        };
        self
    }

    /// Uses an application-supplied credentials provider, e.g. the default chain of the
    /// `aws-config` crate (profiles, IMDS, ECS, web identity), which this crate does not
    /// depend on to keep its build small.
    pub fn credentials_provider(mut self, provider: impl ProvideCredentials + 'static) -> Self {
        self.credentials = CredentialSource::Provider(SharedCredentialsProvider::new(provider));
        self
    }

    /// The most one KEK call may take, all attempts and back-off included (default 10 s).
    /// Past it the call fails with [`KekError::Unreachable`].
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// The most opening one connection may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Attempts per call, first one included (default 3; at least 1). Only transient failures
    /// (connection errors, throttling, KMS internal errors) are retried.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The KEK id in status output and errors: the configured key id, ARN or alias.
    pub fn kek_id(&self) -> &str {
        &self.key_id
    }
}

impl fmt::Debug for AwsKmsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = match &self.credentials {
            CredentialSource::Environment => "environment".to_owned(),
            CredentialSource::Static { access_key_id, .. } => {
                format!("static (access key id {access_key_id}, secret redacted)")
            }
            CredentialSource::Provider(_) => "provider".to_owned(),
        };
        f.debug_struct("AwsKmsConfig")
            .field("key_id", &self.key_id)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("credentials", &credentials)
            .field("operation_timeout", &self.operation_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// A key-encryption key in AWS KMS. See the [module docs](self).
///
/// Cheap to clone (the SDK client is shared). Errors:
///
/// | KMS says | [`KekError`] |
/// | --- | --- |
/// | connection refused, DNS failure, timeout, `KMSInternalException`, `DependencyTimeoutException`, `KeyUnavailableException`, throttling | [`Unreachable`](KekError::Unreachable) |
/// | `NotFoundException` | [`UnknownKek`](KekError::UnknownKek) |
/// | `InvalidCiphertextException`, `IncorrectKeyException` (wrong context, modified blob, another key) | [`Unwrap`](KekError::Unwrap) |
/// | `AccessDeniedException`, `DisabledException`, `KMSInvalidStateException`, `InvalidKeyUsageException`, other refusals | [`Denied`](KekError::Denied) |
/// | `UnrecognizedClientException`, `InvalidClientTokenId`, signature and expired-token errors, HTTP 401/403 without an error code | [`Login`](KekError::Login) |
/// | no credentials, an empty key id or region, a request the SDK cannot build or send as configured | [`Config`](KekError::Config) |
#[derive(Clone)]
pub struct AwsKmsKek {
    inner: Arc<Inner>,
}

struct Inner {
    /// The configured key id.
    kek_id: String,
    client: Arc<SharedClient>,
}

/// One SDK client and what it talks to, shared by the KEKs of [`AwsKmsKek::for_key`].
struct SharedClient {
    client: Client,
    region: String,
    endpoint_url: Option<String>,
    /// The access key id of static or environment credentials; `None` for a provider's, which
    /// may change identity.
    access_key_id: Option<String>,
}

impl fmt::Debug for AwsKmsKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsKek")
            .field("kek_id", &self.inner.kek_id)
            .field("region", &self.inner.client.region)
            .field("endpoint_url", &self.inner.client.endpoint_url)
            .finish_non_exhaustive()
    }
}

impl AwsKmsKek {
    /// Builds the KMS client. No request is sent: an unknown key, missing permissions or an
    /// unreachable endpoint show at the first call.
    ///
    /// Errors: [`KekError::Config`] when credentials come from the environment and
    /// `AWS_ACCESS_KEY_ID` or `AWS_SECRET_ACCESS_KEY` is unset, or the key id or region is
    /// empty.
    pub fn new(config: AwsKmsConfig) -> Result<Self, KekError> {
        let config_error = |reason: &str| KekError::Config {
            provider: PROVIDER.into(),
            kek_id: config.key_id.clone(),
            reason: reason.into(),
        };
        if config.key_id.is_empty() {
            return Err(config_error("the KMS key id is empty"));
        }
        if config.region.is_empty() {
            return Err(config_error("the region is empty"));
        }
        let mut access_key_id = None;
        let credentials = match &config.credentials {
            CredentialSource::Environment => {
                let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
                let (Some(id), Some(secret)) =
                    (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
                else {
                    return Err(config_error(
                        "AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is not set",
                    ));
                };
                let secret = Zeroizing::new(secret);
                let token = var("AWS_SESSION_TOKEN").map(Zeroizing::new);
                let provider = static_provider(&id, &secret, token.as_ref());
                access_key_id = Some(id);
                provider
            }
            CredentialSource::Static {
                access_key_id: id,
                secret_access_key,
                session_token,
            } => {
                access_key_id = Some(id.clone());
                static_provider(id, secret_access_key, session_token.as_ref())
            }
            CredentialSource::Provider(provider) => provider.clone(),
        };
        // hyper + rustls on ring: HTTPS to AWS with the system's roots, plain HTTP to a local
        // endpoint; no aws-lc-rs C build.
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut builder = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .http_client(http_client)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .operation_timeout(config.operation_timeout)
                    .build(),
            )
            // Short back-off: a KEK call sits on a start-up or cache-miss path, where waiting
            // the SDK's default 20 s maximum between attempts helps nobody.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts)
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(1)),
            );
        if let Some(url) = &config.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        let client = Arc::new(SharedClient {
            client: Client::from_conf(builder.build()),
            region: config.region.clone(),
            endpoint_url: config.endpoint_url.clone(),
            access_key_id,
        });
        Ok(AwsKmsKek::register(config.key_id.clone(), client))
    }

    /// Another KMS key through this KEK's client: same endpoint, region, credentials and time
    /// bounds. A rewrap between the two is always a `ReEncrypt` (see
    /// [`rewrap_key`](KeyEncryptionKey::rewrap_key)).
    ///
    /// Errors: [`KekError::Config`] when `key_id` is empty.
    pub fn for_key(&self, key_id: impl Into<String>) -> Result<AwsKmsKek, KekError> {
        let key_id = key_id.into();
        if key_id.is_empty() {
            return Err(KekError::Config {
                provider: PROVIDER.into(),
                kek_id: key_id,
                reason: "the KMS key id is empty".into(),
            });
        }
        Ok(AwsKmsKek::register(key_id, Arc::clone(&self.inner.client)))
    }

    fn register(kek_id: String, client: Arc<SharedClient>) -> AwsKmsKek {
        AwsKmsKek {
            inner: Arc::new(Inner { kek_id, client }),
        }
    }

    /// The SDK client this KEK uses, for administration next to it (creating or describing
    /// keys, aliases, grants).
    pub fn client(&self) -> &Client {
        &self.inner.client.client
    }

    /// `to` as an [`AwsKmsKek`] that a `ReEncrypt` sent by this KEK's client reaches as `to`
    /// itself would: it shares this KEK's client ([`for_key`](Self::for_key)), or it has the
    /// same endpoint, region and static or environment access key id (the same principal, so
    /// an alias or bare key id resolves in the same account).
    ///
    /// Recognised by type through [`KeyEncryptionKey::as_any`], not by
    /// [`provider`](KeyEncryptionKey::provider) (which any type may claim).
    fn same_endpoint_kek(&self, to: &dyn KeyEncryptionKey) -> Option<Arc<Inner>> {
        let target = &to.as_any()?.downcast_ref::<AwsKmsKek>()?.inner;
        let (ours, theirs) = (&self.inner.client, &target.client);
        let same_principal = ours.region == theirs.region
            && ours.endpoint_url == theirs.endpoint_url
            && ours.access_key_id.is_some()
            && ours.access_key_id == theirs.access_key_id;
        (Arc::ptr_eq(ours, theirs) || same_principal).then(|| Arc::clone(target))
    }
}

fn static_provider(
    access_key_id: &str,
    secret: &Zeroizing<String>,
    token: Option<&Zeroizing<String>>,
) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new(
        access_key_id,
        secret.as_str(),
        token.map(|t| t.as_str().to_owned()),
        None,
        "encrypted-columns",
    ))
}

/// The KMS encryption context for `context` (see the module docs).
fn encryption_context(context: &WrapContext) -> HashMap<String, String> {
    let mut pairs = HashMap::with_capacity(3);
    pairs.insert(CONTEXT_KEY_ID.to_owned(), context.key_id().to_string());
    for (name, value) in [
        (CONTEXT_PURPOSE, context.purpose()),
        (CONTEXT_SUBJECT, context.subject()),
    ] {
        if !value.is_empty() {
            pairs.insert(name.to_owned(), value.to_owned());
        }
    }
    pairs
}

/// What a KMS error means for the caller, from its error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unreachable,
    Login,
    UnknownKek,
    Denied,
    Unwrap,
}

fn kind_of_code(code: &str) -> Kind {
    match code {
        "NotFoundException" => Kind::UnknownKek,
        "InvalidCiphertextException" | "IncorrectKeyException" => Kind::Unwrap,
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException" => Kind::Login,
        "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "ThrottlingException"
        | "ServiceUnavailableException"
        | "InternalFailure" => Kind::Unreachable,
        // AccessDeniedException, DisabledException, KMSInvalidStateException,
        // InvalidKeyUsageException, ValidationException, and anything new: a refusal.
        _ => Kind::Denied,
    }
}

fn error_of_kind(kind: Kind, kek_id: &str, reason: String) -> KekError {
    let provider = PROVIDER.to_owned();
    let kek_id = kek_id.to_owned();
    match kind {
        Kind::Unreachable => KekError::Unreachable {
            provider,
            kek_id,
            reason,
        },
        Kind::Login => KekError::Login {
            provider,
            kek_id,
            reason,
        },
        Kind::UnknownKek => KekError::UnknownKek { provider, kek_id },
        Kind::Denied => KekError::Denied {
            provider,
            kek_id,
            reason,
        },
        Kind::Unwrap => KekError::Unwrap { provider, kek_id },
    }
}

/// Maps an SDK failure of any KMS operation. Requests carry the key in their body, but neither
/// a service error (code and message from KMS) nor a transport error holds the request.
fn map_error<E>(kek_id: &str, error: &SdkError<E, HttpResponse>) -> KekError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let Some(code) = err.code() else {
                return uncoded_error(kek_id, service.raw().status().as_u16());
            };
            let reason = match err.message() {
                Some(message) => format!("{code}: {message}"),
                None => code.to_owned(),
            };
            error_of_kind(kind_of_code(code), kek_id, reason)
        }
        SdkError::TimeoutError(_) => error_of_kind(
            Kind::Unreachable,
            kek_id,
            "no answer within the operation timeout".into(),
        ),
        // The request could not be sent because of how it was configured (e.g. the endpoint
        // URL), not because of the network.
        SdkError::DispatchFailure(failure) if failure.is_user() => KekError::Config {
            provider: PROVIDER.into(),
            kek_id: kek_id.into(),
            reason: causes(error),
        },
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            error_of_kind(Kind::Unreachable, kek_id, causes(error))
        }
        // ConstructionFailure (no credentials, an invalid endpoint URL) and future variants.
        _ => KekError::Config {
            provider: PROVIDER.into(),
            kek_id: kek_id.into(),
            reason: causes(error),
        },
    }
}

/// `error` and its sources, each by its `Display`, joined by ": " (the SDK's
/// `DisplayErrorContext` appends a `Debug` dump of the whole chain, too long for a reason).
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An error answer without a KMS error code (no JSON `__type`, no `x-amzn-ErrorType`), by HTTP
/// status. KMS itself always names its errors; what refuses a request before KMS sees it is
/// the authentication layer (AWS: UnrecognizedClientException; moto: an XML
/// `InvalidClientTokenId`, which the JSON-protocol SDK cannot read), a proxy, or a load
/// balancer.
fn uncoded_error(kek_id: &str, status: u16) -> KekError {
    let reason = format!("HTTP {status} without a KMS error code");
    let kind = match status {
        401 | 403 => Kind::Login,
        500.. => Kind::Unreachable,
        _ => Kind::Denied,
    };
    error_of_kind(kind, kek_id, reason)
}

/// A 32-byte key from a KMS plaintext blob, wiping the blob's buffer.
fn key_from_blob(
    kek_id: &str,
    blob: Option<Blob>,
) -> Result<Zeroizing<[u8; WRAPPED_KEY_LEN]>, KekError> {
    let bytes = Zeroizing::new(blob.map(Blob::into_inner).unwrap_or_default());
    let mut key = Zeroizing::new([0u8; WRAPPED_KEY_LEN]);
    if bytes.len() != WRAPPED_KEY_LEN {
        return Err(error_of_kind(Kind::Unwrap, kek_id, String::new()));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn missing_ciphertext(kek_id: &str) -> KekError {
    error_of_kind(
        Kind::Unreachable,
        kek_id,
        "KMS answered without a CiphertextBlob".into(),
    )
}

impl KeyEncryptionKey for AwsKmsKek {
    fn provider(&self) -> &str {
        PROVIDER
    }

    fn kek_id(&self) -> &str {
        &self.inner.kek_id
    }

    fn wrap_key<'a>(
        &'a self,
        key: &'a [u8; WRAPPED_KEY_LEN],
        context: &'a WrapContext,
    ) -> KekFuture<'a, WrappedKey> {
        Box::pin(async move {
            let inner = &self.inner;
            let out = inner
                .client
                .client
                .encrypt()
                .key_id(&inner.kek_id)
                .plaintext(Blob::new(key.to_vec()))
                .set_encryption_context(Some(encryption_context(context)))
                .send()
                .await
                .map_err(|e| map_error(&inner.kek_id, &e))?;
            let blob = out
                .ciphertext_blob
                .ok_or_else(|| missing_ciphertext(&inner.kek_id))?;
            Ok(WrappedKey::from_bytes(blob.into_inner()))
        })
    }

    fn unwrap_key<'a>(
        &'a self,
        wrapped: &'a WrappedKey,
        context: &'a WrapContext,
    ) -> KekFuture<'a, Zeroizing<[u8; WRAPPED_KEY_LEN]>> {
        Box::pin(async move {
            let inner = &self.inner;
            let out = inner
                .client
                .client
                .decrypt()
                .key_id(&inner.kek_id)
                .ciphertext_blob(Blob::new(wrapped.as_bytes()))
                .set_encryption_context(Some(encryption_context(context)))
                .send()
                .await
                .map_err(|e| map_error(&inner.kek_id, &e))?;
            key_from_blob(&inner.kek_id, out.plaintext)
        })
    }

    fn generate_key<'a>(
        &'a self,
        context: &'a WrapContext,
    ) -> KekFuture<'a, (Zeroizing<[u8; WRAPPED_KEY_LEN]>, WrappedKey)> {
        Box::pin(async move {
            let inner = &self.inner;
            let out = inner
                .client
                .client
                .generate_data_key()
                .key_id(&inner.kek_id)
                .key_spec(DataKeySpec::Aes256)
                .set_encryption_context(Some(encryption_context(context)))
                .send()
                .await
                .map_err(|e| map_error(&inner.kek_id, &e))?;
            let key = key_from_blob(&inner.kek_id, out.plaintext)?;
            let blob = out
                .ciphertext_blob
                .ok_or_else(|| missing_ciphertext(&inner.kek_id))?;
            Ok((key, WrappedKey::from_bytes(blob.into_inner())))
        })
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    /// `ReEncrypt` inside KMS when `to` is an [`AwsKmsKek`] sharing this KEK's client
    /// ([`for_key`](AwsKmsKek::for_key)) or its endpoint, region and access key id (the key
    /// never reaches this process); otherwise the default (unwrap here, wrap with `to`).
    /// Errors of the re-encryption name this (the source) KEK.
    fn rewrap_key<'a>(
        &'a self,
        wrapped: &'a WrappedKey,
        context: &'a WrapContext,
        to: &'a dyn KeyEncryptionKey,
    ) -> KekFuture<'a, WrappedKey> {
        Box::pin(async move {
            let Some(target) = self.same_endpoint_kek(to) else {
                let key = self.unwrap_key(wrapped, context).await?;
                return to.wrap_key(&key, context).await;
            };
            let inner = &self.inner;
            let pairs = encryption_context(context);
            let out = inner
                .client
                .client
                .re_encrypt()
                .source_key_id(&inner.kek_id)
                .ciphertext_blob(Blob::new(wrapped.as_bytes()))
                .set_source_encryption_context(Some(pairs.clone()))
                .destination_key_id(&target.kek_id)
                .set_destination_encryption_context(Some(pairs))
                .send()
                .await
                .map_err(|e| map_error(&inner.kek_id, &e))?;
            let blob = out
                .ciphertext_blob
                .ok_or_else(|| missing_ciphertext(&inner.kek_id))?;
            Ok(WrappedKey::from_bytes(blob.into_inner()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kek::StaticKek;

    #[test]
    fn kek_aws_kms_context_pairs_are_named_and_omit_empty_values() {
        let pairs = encryption_context(&WrapContext::new(7, "blind-index", "tenant-a"));
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[CONTEXT_KEY_ID], "7");
        assert_eq!(pairs[CONTEXT_PURPOSE], "blind-index");
        assert_eq!(pairs[CONTEXT_SUBJECT], "tenant-a");
        let bare = encryption_context(&WrapContext::new(7, "encryption", ""));
        assert_eq!(bare.len(), 2);
        assert!(!bare.contains_key(CONTEXT_SUBJECT));
    }

    #[test]
    fn kek_aws_kms_error_codes_map_to_kek_errors() {
        for (code, kind) in [
            ("NotFoundException", Kind::UnknownKek),
            ("InvalidCiphertextException", Kind::Unwrap),
            ("IncorrectKeyException", Kind::Unwrap),
            ("AccessDeniedException", Kind::Denied),
            ("DisabledException", Kind::Denied),
            ("KMSInvalidStateException", Kind::Denied),
            ("InvalidKeyUsageException", Kind::Denied),
            ("UnrecognizedClientException", Kind::Login),
            ("InvalidSignatureException", Kind::Login),
            ("InvalidClientTokenId", Kind::Login),
            ("KMSInternalException", Kind::Unreachable),
            ("KeyUnavailableException", Kind::Unreachable),
        ] {
            assert_eq!(kind_of_code(code), kind, "{code}");
        }
        assert!(matches!(uncoded_error("k", 403), KekError::Login { .. }));
        assert!(matches!(
            uncoded_error("k", 503),
            KekError::Unreachable { .. }
        ));
        assert!(matches!(uncoded_error("k", 400), KekError::Denied { .. }));
        let err = error_of_kind(Kind::Denied, "alias/k", "DisabledException: off".into());
        assert!(matches!(err, KekError::Denied { .. }));
        assert_eq!((err.provider(), err.kek_id()), ("aws-kms", "alias/k"));
    }

    #[test]
    fn kek_aws_kms_debug_hides_the_secret_and_an_empty_key_id_is_config() {
        let config = AwsKmsConfig::new("alias/k", "eu-west-1").static_credentials(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI-very-secret",
            Some("session-token-secret".into()),
        );
        let text = format!("{config:?}");
        assert!(
            text.contains("AKIDEXAMPLE") && text.contains("alias/k"),
            "{text}"
        );
        assert!(!text.contains("very-secret") && !text.contains("token-secret"));
        let kek = AwsKmsKek::new(config).unwrap();
        let text = format!("{kek:?}");
        assert!(text.contains("alias/k"), "{text}");
        assert!(!text.contains("very-secret") && !text.contains("AKIDEXAMPLE"));
        assert!(
            AwsKmsKek::new(AwsKmsConfig::new("", "eu-west-1"))
                .is_err_and(|e| matches!(e, KekError::Config { .. }))
        );
    }

    #[test]
    fn kek_aws_kms_recognises_only_its_own_instances_reaching_the_same_key() {
        let config = |key: &str, region: &str, access_key_id: &str| {
            AwsKmsConfig::new(key, region)
                .endpoint_url("http://127.0.0.1:9")
                .static_credentials(access_key_id, "secret", None)
        };
        let a = AwsKmsKek::new(config("key-a", "eu-west-1", "AKID")).unwrap();
        let b = AwsKmsKek::new(config("key-b", "eu-west-1", "AKID")).unwrap();
        assert!(a.same_endpoint_kek(&b).is_some());
        assert!(a.same_endpoint_kek(&a.clone()).is_some());
        for other in [
            config("key-b", "us-east-1", "AKID"),
            config("key-b", "eu-west-1", "AKID-OTHER"),
            config("key-b", "eu-west-1", "AKID").endpoint_url("http://127.0.0.1:10"),
        ] {
            let other = AwsKmsKek::new(other).unwrap();
            assert!(a.same_endpoint_kek(&other).is_none(), "{other:?}");
        }
        // A provider's identity is unknown: only KEKs sharing its client are recognised.
        let provided = AwsKmsKek::new(
            AwsKmsConfig::new("key-p", "eu-west-1")
                .endpoint_url("http://127.0.0.1:9")
                .credentials_provider(Credentials::new("AKID", "secret", None, None, "test")),
        )
        .unwrap();
        assert!(a.same_endpoint_kek(&provided).is_none());
        assert!(provided.same_endpoint_kek(&a).is_none());
        let sibling = provided.for_key("key-q").unwrap();
        assert!(provided.same_endpoint_kek(&sibling).is_some());
        assert!(provided.for_key("").is_err());
        // An equal id on another type is not taken for a KMS KEK.
        assert!(a.same_endpoint_kek(&StaticKek::generate("key-b")).is_none());
    }
}
