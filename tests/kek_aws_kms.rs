//! The AWS KMS KEK provider (`encrypted_columns::kek::aws_kms`) against moto_server.
//!
//! Runs when `TEST_MOTO_SERVER` names the `moto_server` executable (`.ci/run` installs moto
//! with `scripts/moto.sh` and sets it); otherwise each test prints "skipped: …" and passes.
//!
//! Each test starts its own moto_server on a free 127.0.0.1 port, in a working directory of its
//! own under Cargo's target tmp dir, and kills it when the test ends (the [`Moto`] guard), so
//! tests share no keys and run in parallel. Keys are made through the SDK (`CreateKey`).
//!
//! Where moto differs from AWS (checked against moto 5.2): a ciphertext of another KMS key,
//! decrypted with `KeyId` pinned, is `AccessDeniedException` in moto and
//! `IncorrectKeyException` in AWS, so those tests accept either refusal; and moto does not
//! enforce `DisableKey` (Encrypt, Decrypt and GenerateDataKey still succeed), so the mapping of
//! `DisabledException` is covered by the provider's unit tests, not here; and moto's ReEncrypt
//! ignores `SourceKeyId`, so pinning the source key on rewrap is not tested here either.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use encrypted_columns::kek::aws_kms::{AwsKmsConfig, AwsKmsKek};
use encrypted_columns::kek::{
    KekError, KekFuture, KeyEncryptionKey, StaticKek, WrapContext, WrappedKey,
};
use zeroize::Zeroizing;

const MOTO_VAR: &str = "TEST_MOTO_SERVER";
const REGION: &str = "us-east-1";
const ACCESS_KEY_ID: &str = "AKIAEXAMPLEKEYID0001";
const SECRET: &str = "test-secret-access-key-do-not-print";
/// The bound configured for every call in these tests.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);
/// Scheduling slack on top of [`OPERATION_TIMEOUT`] on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(2);
const ROOT_KEY: [u8; 32] = [0xa7; 32];

/// A moto_server process of one test, killed (and its directory removed) on drop.
struct Moto {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Moto {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A KEK for `key_id` on this server with the test credentials.
    fn kek(&self, key_id: &str) -> AwsKmsKek {
        AwsKmsKek::new(self.config(key_id)).expect("build the KMS client")
    }

    fn config(&self, key_id: &str) -> AwsKmsConfig {
        AwsKmsConfig::new(key_id, REGION)
            .endpoint_url(self.url())
            .static_credentials(ACCESS_KEY_ID, SECRET, None)
            .operation_timeout(OPERATION_TIMEOUT)
            .connect_timeout(Duration::from_secs(1))
    }

    /// A new symmetric KMS key (CreateKey), and a KEK for it.
    async fn new_key(&self) -> AwsKmsKek {
        let admin = self.kek("admin");
        let out = admin
            .client()
            .create_key()
            .description("encrypted-columns test KEK")
            .send()
            .await
            .expect("CreateKey");
        let id = out
            .key_metadata()
            .expect("key metadata")
            .key_id()
            .to_owned();
        self.kek(&id)
    }

    /// Sends `signal` (e.g. `-STOP`) to the server process.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal}");
    }
}

/// Starts a moto_server for `test`, or `None` (after printing "skipped") when
/// `TEST_MOTO_SERVER` is unset. `env` is added to the server's environment.
fn moto_with(test: &str, env: &[(&str, &str)]) -> Option<Moto> {
    let Ok(program) = std::env::var(MOTO_VAR) else {
        eprintln!("skipped: {MOTO_VAR} not set ({test})");
        return None;
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kek_aws_kms-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the server's directory");
    // The port is free when probed; another process may take it before moto binds, so a
    // server that exits at start is retried on a new port.
    for _ in 0..3 {
        let port = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("probe a free port")
            .port();
        let log = std::fs::File::create(dir.join("moto.log")).expect("create moto.log");
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(&dir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let mut moto = Moto {
            child,
            port,
            dir: dir.clone(),
        };
        // Start-up (a Python import of moto) takes seconds; a minute means it is broken.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if moto.child.try_wait().expect("poll moto_server").is_some() {
                break;
            }
            if TcpStream::connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Keep the directory (and its log) for the next attempt; drop only the process.
        let _ = moto.child.kill();
        let _ = moto.child.wait();
        moto.dir = dir.join("nothing-to-remove");
    }
    let log = std::fs::read_to_string(dir.join("moto.log")).unwrap_or_default();
    panic!("moto_server did not start on 127.0.0.1 ({test}):\n{log}");
}

fn moto(test: &str) -> Option<Moto> {
    moto_with(test, &[])
}

fn ctx() -> WrapContext {
    WrapContext::new(1, "encryption", "clinic")
}

/// The texts a leaked key would appear as.
fn key_forms(key: &[u8]) -> Vec<String> {
    use base64::Engine as _;
    vec![
        hex::encode(key),
        hex::encode_upper(key),
        base64::engine::general_purpose::STANDARD.encode(key),
        format!("{key:?}"),
    ]
}

fn assert_no_secrets(text: &str, key: &[u8]) {
    for form in key_forms(key) {
        assert!(!text.contains(&form), "key bytes in {text:?}");
    }
    assert!(!text.contains(SECRET), "the secret access key in {text:?}");
}

fn assert_names_kek(err: &KekError, kek: &AwsKmsKek) {
    assert_eq!(err.provider(), "aws-kms");
    assert_eq!(err.kek_id(), kek.kek_id());
    let text = err.to_string();
    assert!(
        text.contains("aws-kms") && text.contains(kek.kek_id()),
        "{text}"
    );
}

#[tokio::test]
async fn wrap_then_unwrap_round_trips() {
    let Some(moto) = moto("round_trip") else {
        return;
    };
    let kek = moto.new_key().await;
    assert_eq!(kek.provider(), "aws-kms");
    let kek: Arc<dyn KeyEncryptionKey> = Arc::new(kek);
    let wrapped = kek.wrap_key(&ROOT_KEY, &ctx()).await.unwrap();
    assert!(!wrapped.as_bytes().windows(8).any(|w| w == &ROOT_KEY[..8]));
    assert_eq!(*kek.unwrap_key(&wrapped, &ctx()).await.unwrap(), ROOT_KEY);
    // Through the stored (base64) form.
    let stored = WrappedKey::from_base64(&wrapped.to_string()).unwrap();
    assert_eq!(*kek.unwrap_key(&stored, &ctx()).await.unwrap(), ROOT_KEY);
    // An empty subject (the `From<KeyId>` context) round-trips too.
    let bare = WrapContext::new(2, "encryption", "");
    let wrapped = kek.wrap_key(&ROOT_KEY, &bare).await.unwrap();
    assert_eq!(*kek.unwrap_key(&wrapped, &bare).await.unwrap(), ROOT_KEY);
}

#[tokio::test]
async fn generate_key_returns_a_fresh_key_and_its_wrapping() {
    let Some(moto) = moto("generate_key") else {
        return;
    };
    let kek = moto.new_key().await;
    let (key, wrapped) = kek.generate_key(&ctx()).await.unwrap();
    assert_ne!(*key, [0u8; 32]);
    assert_eq!(*kek.unwrap_key(&wrapped, &ctx()).await.unwrap(), *key);
    let (other, _) = kek.generate_key(&ctx()).await.unwrap();
    assert_ne!(*other, *key);
    // Bound to its context like a wrapped key.
    let err = kek
        .unwrap_key(&wrapped, &WrapContext::new(1, "encryption", "other"))
        .await
        .unwrap_err();
    assert!(matches!(err, KekError::Unwrap { .. }), "{err}");
}

#[tokio::test]
async fn another_context_does_not_unwrap() {
    let Some(moto) = moto("context") else {
        return;
    };
    let kek = moto.new_key().await;
    let wrapped = kek.wrap_key(&ROOT_KEY, &ctx()).await.unwrap();
    for other in [
        WrapContext::new(2, "encryption", "clinic"),
        WrapContext::new(1, "blind-index", "clinic"),
        WrapContext::new(1, "encryption", "other"),
        WrapContext::new(1, "encryption", ""),
    ] {
        let err = kek.unwrap_key(&wrapped, &other).await.unwrap_err();
        assert!(matches!(err, KekError::Unwrap { .. }), "{other:?}: {err}");
        assert_names_kek(&err, &kek);
    }
    assert_eq!(*kek.unwrap_key(&wrapped, &ctx()).await.unwrap(), ROOT_KEY);
}

#[tokio::test]
async fn tampered_or_truncated_wrapped_keys_do_not_unwrap() {
    let Some(moto) = moto("tampered") else {
        return;
    };
    let kek = moto.new_key().await;
    let wrapped = kek.wrap_key(&ROOT_KEY, &ctx()).await.unwrap();
    let bytes = wrapped.as_bytes();
    // moto's blob starts with the key's id (36 characters; AWS's blob names the key too): a
    // change there is a reference to another key, refused below, not a failed authentication.
    let authenticated = 36..bytes.len();
    assert!(
        bytes.len() > authenticated.start + 32,
        "{} bytes",
        bytes.len()
    );
    for i in authenticated {
        let mut tampered = bytes.to_vec();
        tampered[i] ^= 0x01;
        let err = kek
            .unwrap_key(&WrappedKey::from_bytes(tampered), &ctx())
            .await
            .unwrap_err();
        assert!(matches!(err, KekError::Unwrap { .. }), "byte {i}: {err}");
    }
    let mut renamed = bytes.to_vec();
    renamed[0] ^= 0x01;
    let err = kek
        .unwrap_key(&WrappedKey::from_bytes(renamed), &ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(err, KekError::Unwrap { .. } | KekError::Denied { .. }),
        "{err}"
    );
    for len in [0, 10, bytes.len() - 1] {
        let short = WrappedKey::from_bytes(&bytes[..len]);
        let err = kek.unwrap_key(&short, &ctx()).await.unwrap_err();
        assert!(
            matches!(err, KekError::Unwrap { .. } | KekError::Denied { .. }),
            "{len} bytes: {err}"
        );
    }
}

#[tokio::test]
async fn a_wrapped_key_of_another_kms_key_is_refused() {
    let Some(moto) = moto("other_key") else {
        return;
    };
    let a = moto.new_key().await;
    let b = moto.new_key().await;
    let wrapped = a.wrap_key(&ROOT_KEY, &ctx()).await.unwrap();
    // `KeyId` is pinned on Decrypt: B's KEK does not decrypt A's blob although the caller's
    // credentials could use A (AWS: IncorrectKeyException; moto: AccessDeniedException).
    let err = b.unwrap_key(&wrapped, &ctx()).await.unwrap_err();
    assert!(
        matches!(err, KekError::Unwrap { .. } | KekError::Denied { .. }),
        "{err}"
    );
    assert_names_kek(&err, &b);
    assert_eq!(*a.unwrap_key(&wrapped, &ctx()).await.unwrap(), ROOT_KEY);
}

#[tokio::test]
async fn an_unknown_key_is_unknown_kek() {
    let Some(moto) = moto("unknown_key") else {
        return;
    };
    for id in [
        "0b1f1a9e-7d2c-4c1e-9a55-3f1d2b8e6c40",
        "alias/no-such-alias",
    ] {
        let kek = moto.kek(id);
        let err = kek.wrap_key(&ROOT_KEY, &ctx()).await.unwrap_err();
        assert!(matches!(err, KekError::UnknownKek { .. }), "{id}: {err}");
        assert_names_kek(&err, &kek);
        let err = kek.generate_key(&ctx()).await.unwrap_err();
        assert!(matches!(err, KekError::UnknownKek { .. }), "{id}: {err}");
    }
}

#[tokio::test]
async fn credentials_the_server_does_not_know_are_a_login_error() {
    // With INITIAL_NO_AUTH_ACTION_COUNT=1 moto authenticates every request after the first
    // against its IAM users, of which there are none: CreateKey passes, then any access key
    // is rejected (InvalidClientTokenId), as AWS rejects an unknown one.
    let Some(moto) = moto_with("credentials", &[("INITIAL_NO_AUTH_ACTION_COUNT", "1")]) else {
        return;
    };
    let kek = moto.new_key().await;
    let err = kek.wrap_key(&ROOT_KEY, &ctx()).await.unwrap_err();
    assert!(matches!(err, KekError::Login { .. }), "{err}");
    assert_names_kek(&err, &kek);
    assert_no_secrets(&err.to_string(), &ROOT_KEY);
    assert_no_secrets(&format!("{err:?}"), &ROOT_KEY);
}

#[tokio::test]
async fn a_stopped_or_hung_server_is_unreachable_within_the_bound() {
    let Some(mut moto) = moto("stopped") else {
        return;
    };
    let kek = moto.new_key().await;
    let wrapped = kek.wrap_key(&ROOT_KEY, &ctx()).await.unwrap();

    // Hung: the kernel still accepts connections but nothing answers.
    moto.signal("-STOP");
    let started = Instant::now();
    let err = kek.unwrap_key(&wrapped, &ctx()).await.unwrap_err();
    let hung_for = started.elapsed();
    moto.signal("-CONT");
    eprintln!("hung server: {err} after {hung_for:?}");
    assert!(matches!(err, KekError::Unreachable { .. }), "{err}");
    assert!(hung_for < OPERATION_TIMEOUT + SLACK, "took {hung_for:?}");
    assert_names_kek(&err, &kek);
    // Back again once it answers.
    assert_eq!(*kek.unwrap_key(&wrapped, &ctx()).await.unwrap(), ROOT_KEY);

    // Stopped: connections are refused.
    moto.child.kill().expect("kill moto_server");
    moto.child.wait().expect("reap moto_server");
    let started = Instant::now();
    let err = kek.unwrap_key(&wrapped, &ctx()).await.unwrap_err();
    let stopped_for = started.elapsed();
    eprintln!("stopped server: {err} after {stopped_for:?}");
    assert!(matches!(err, KekError::Unreachable { .. }), "{err}");
    assert!(
        stopped_for < OPERATION_TIMEOUT + SLACK,
        "took {stopped_for:?}"
    );
    assert_names_kek(&err, &kek);
    assert_no_secrets(&err.to_string(), &ROOT_KEY);
    let err = kek.wrap_key(&ROOT_KEY, &ctx()).await.unwrap_err();
    assert!(matches!(err, KekError::Unreachable { .. }), "{err}");
}

/// Forwards to an inner KEK and counts the keys it is asked to wrap: a rewrap that goes
/// through this process's memory calls `wrap_key` on the destination, `ReEncrypt` does not.
#[derive(Debug)]
struct CountingWraps<K> {
    inner: K,
    wraps: AtomicUsize,
}

impl<K: KeyEncryptionKey> KeyEncryptionKey for CountingWraps<K> {
    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn kek_id(&self) -> &str {
        self.inner.kek_id()
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        self.inner.as_any()
    }

    fn wrap_key<'a>(
        &'a self,
        key: &'a [u8; 32],
        context: &'a WrapContext,
    ) -> KekFuture<'a, WrappedKey> {
        self.wraps.fetch_add(1, Ordering::SeqCst);
        self.inner.wrap_key(key, context)
    }

    fn unwrap_key<'a>(
        &'a self,
        wrapped: &'a WrappedKey,
        context: &'a WrapContext,
    ) -> KekFuture<'a, Zeroizing<[u8; 32]>> {
        self.inner.unwrap_key(wrapped, context)
    }
}

#[tokio::test]
async fn rewrap_between_kms_keys_stays_in_kms() {
    let Some(moto) = moto("rewrap_kms") else {
        return;
    };
    let a = moto.new_key().await;
    let b = CountingWraps {
        inner: moto.new_key().await,
        wraps: AtomicUsize::new(0),
    };
    // A KEK sharing A's client, for a third key.
    let c_id = moto.new_key().await.kek_id().to_owned();
    let c = CountingWraps {
        inner: a.for_key(c_id).unwrap(),
        wraps: AtomicUsize::new(0),
    };
    let (key, wrapped) = a.generate_key(&ctx()).await.unwrap();
    let moved = a.rewrap_key(&wrapped, &ctx(), &b).await.unwrap();
    assert_eq!(
        b.wraps.load(Ordering::SeqCst),
        0,
        "the key went through wrap_key"
    );
    assert_ne!(moved, wrapped);
    assert_eq!(*b.unwrap_key(&moved, &ctx()).await.unwrap(), *key);
    assert!(a.unwrap_key(&moved, &ctx()).await.is_err());
    // The context stays the same: the moved key is still bound to it.
    let err = b
        .unwrap_key(&moved, &WrapContext::new(9, "encryption", "clinic"))
        .await
        .unwrap_err();
    assert!(matches!(err, KekError::Unwrap { .. }), "{err}");
    let moved_again = b.inner.rewrap_key(&moved, &ctx(), &c).await.unwrap();
    assert_eq!(
        c.wraps.load(Ordering::SeqCst),
        0,
        "the key went through wrap_key"
    );
    assert_eq!(*c.unwrap_key(&moved_again, &ctx()).await.unwrap(), *key);
    // A blob that does not decrypt fails naming the source KEK, and nothing is wrapped.
    // (Not a blob of another key: moto's ReEncrypt ignores SourceKeyId, AWS's does not.)
    let mut tampered = wrapped.as_bytes().to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let err = a
        .rewrap_key(&WrappedKey::from_bytes(tampered), &ctx(), &b)
        .await
        .unwrap_err();
    assert!(matches!(err, KekError::Unwrap { .. }), "{err}");
    assert_eq!(err.kek_id(), a.kek_id());
    assert_eq!(b.wraps.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn rewrap_from_kms_to_a_static_kek_and_back() {
    let Some(moto) = moto("rewrap_static") else {
        return;
    };
    let kms = moto.new_key().await;
    let local = CountingWraps {
        inner: StaticKek::generate("local"),
        wraps: AtomicUsize::new(0),
    };
    let wrapped = kms.wrap_key(&ROOT_KEY, &ctx()).await.unwrap();
    let to_local = kms.rewrap_key(&wrapped, &ctx(), &local).await.unwrap();
    assert_eq!(local.wraps.load(Ordering::SeqCst), 1);
    assert_eq!(
        *local.unwrap_key(&to_local, &ctx()).await.unwrap(),
        ROOT_KEY
    );
    let back = local
        .inner
        .rewrap_key(&to_local, &ctx(), &kms)
        .await
        .unwrap();
    assert_eq!(*kms.unwrap_key(&back, &ctx()).await.unwrap(), ROOT_KEY);
}

#[tokio::test]
async fn errors_and_debug_output_hold_no_key_bytes_or_secret() {
    let Some(moto) = moto("no_secrets") else {
        return;
    };
    let config = moto.config("placeholder");
    let kek = moto.new_key().await;
    let (key, wrapped) = kek.generate_key(&ctx()).await.unwrap();
    let mut texts = vec![
        format!("{config:?}"),
        format!("{kek:?}"),
        format!("{wrapped:?}"),
    ];
    let mut tampered = wrapped.as_bytes().to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    let errors = [
        kek.unwrap_key(&wrapped, &WrapContext::new(5, "x", "y"))
            .await
            .unwrap_err(),
        kek.unwrap_key(&WrappedKey::from_bytes(tampered), &ctx())
            .await
            .unwrap_err(),
        moto.kek("alias/none")
            .wrap_key(&key, &ctx())
            .await
            .unwrap_err(),
    ];
    drop(moto);
    let unreachable = kek.wrap_key(&key, &ctx()).await.unwrap_err();
    assert!(
        matches!(unreachable, KekError::Unreachable { .. }),
        "{unreachable}"
    );
    for err in errors.iter().chain([&unreachable]) {
        texts.push(err.to_string());
        texts.push(format!("{err:?}"));
    }
    for text in &texts {
        assert_no_secrets(text, key.as_slice());
        assert!(
            !text.contains(&wrapped.to_string()),
            "the wrapped key in {text:?}"
        );
    }
}

/// MongoDB's lesson, against a real server: subject keys a process has cached keep opening
/// after the KMS is stopped; keys it has not cached fail with a typed `Unreachable` naming the
/// provider and KMS key.
#[tokio::test]
async fn cached_subject_keys_open_while_the_kms_is_stopped() {
    use encrypted_columns::subject_keys::{SubjectKeyError, SubjectKeys, table};
    use encrypted_columns::{Context, Keyring};
    use sea_orm::ConnectionTrait;

    let Some(moto) = moto("cache") else {
        return;
    };
    let kms = moto.new_key().await;
    let kek_id = kms.kek_id().to_owned();
    let kek: Arc<dyn KeyEncryptionKey> = Arc::new(kms);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kek_aws_kms-cache-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let db = sea_orm::Database::connect(format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("sqlite");
    db.execute(&table::create_table_statement("tenant_keys"))
        .await
        .expect("create table");
    let app = Keyring::generate();
    let notes = Context::new("notes", "body");
    let writer = SubjectKeys::new("tenant_keys", Arc::clone(&kek));
    let a = writer.create(&db).await.expect("create a");
    let b = writer.create(&db).await.expect("create b");
    let sealed_a = a.sealing_ring(&app).seal(notes, b"a").expect("seal a");
    let sealed_b = b.sealing_ring(&app).seal(notes, b"b").expect("seal b");

    // Another process's view: it has opened (and cached) subject a only.
    let reader = SubjectKeys::new("tenant_keys", Arc::clone(&kek));
    let opened = reader.keyring(&db, &app, [a.row()]).await.expect("open a");
    assert_eq!(
        opened.ring.open(notes, &sealed_a).expect("a").as_slice(),
        b"a"
    );

    drop(moto); // the KMS is gone
    let mut opened = reader
        .keyring(&db, &app, [a.row(), b.row()])
        .await
        .expect("the database is still there");
    assert_eq!(
        opened
            .ring
            .open(notes, &sealed_a)
            .expect("a from the cache")
            .as_slice(),
        b"a"
    );
    let err = opened.take_error(b.row()).expect_err("b is not cached");
    match &err {
        SubjectKeyError::Kek { source, .. } => {
            assert!(matches!(source, KekError::Unreachable { .. }), "{source}");
            assert_eq!(
                (source.provider(), source.kek_id()),
                ("aws-kms", kek_id.as_str())
            );
        }
        other => panic!("expected a KMS error, got {other}"),
    }
    assert!(opened.ring.open(notes, &sealed_b).is_err());
    let _ = std::fs::remove_file(&path);
}
