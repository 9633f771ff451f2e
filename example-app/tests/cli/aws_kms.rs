//! The clinic with `CLINIC_KEK=aws-kms` against a moto_server of each test's own (PyPI
//! `moto[server]`; `.ci/run` installs it and sets `TEST_MOTO_SERVER`): the whole life is in
//! `providers.rs`; here, a KMS that goes away fails each command in one line.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use encrypted_columns::kek::aws_kms::{AwsKmsConfig, AwsKmsKek};

use crate::support::*;

const REGION: &str = "us-east-1";
const ACCESS_KEY_ID: &str = "AKIAEXAMPLECLINIC001";
const SECRET: &str = "clinic-test-secret-never-printed";

/// A moto_server process, killed (and its directory removed) on drop.
pub struct Moto {
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
    /// Starts one on a free port, or `None` (printing why) when `TEST_MOTO_SERVER` is unset.
    pub fn start(tag: &str) -> Option<Moto> {
        let Ok(program) = std::env::var("TEST_MOTO_SERVER") else {
            eprintln!("skipped: TEST_MOTO_SERVER not set ({tag})");
            return None;
        };
        let dir = fresh_dir(tag);
        for _ in 0..3 {
            let port = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("probe a free port")
                .port();
            let child = Command::new(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {program}: {e}"));
            let mut moto = Moto {
                child,
                port,
                dir: dir.clone(),
            };
            // Start-up is a Python import of moto: seconds; a minute means it is broken.
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
            let _ = moto.child.kill();
            let _ = moto.child.wait();
            moto.dir = dir.join("retry");
        }
        panic!("moto_server did not start on 127.0.0.1 ({tag})");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new symmetric KMS key (CreateKey), by id.
    pub fn create_key(&self) -> String {
        let admin = AwsKmsKek::new(
            AwsKmsConfig::new("admin", REGION)
                .endpoint_url(self.url())
                .static_credentials(ACCESS_KEY_ID, SECRET, None),
        )
        .expect("KMS client");
        block_on(async {
            admin
                .client()
                .create_key()
                .send()
                .await
                .expect("CreateKey")
                .key_metadata()
                .expect("metadata")
                .key_id()
                .to_owned()
        })
    }

    /// The clinic's settings for this server (all but `CLINIC_KEK` and the key).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_owned()),
            ("CLINIC_AWS_KMS_REGION", REGION.to_owned()),
            ("CLINIC_AWS_KMS_ENDPOINT", self.url()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// With the KMS stopped, a command that needs a key fails in one line naming the provider
/// and key, and says the provider is unreachable; no panic, no secret.
#[test]
fn aws_kms_down_is_one_line_naming_the_provider() {
    let Some(moto) = Moto::start("kms-down") else {
        return;
    };
    let key = moto.create_key();
    let mut env = moto.env();
    env.push(("CLINIC_KEK".to_owned(), "aws-kms".to_owned()));
    env.push(("CLINIC_AWS_KMS_KEY".to_owned(), key.clone()));
    let session = Session::with_keys("kms-down-db", env);
    session.ok(&["init"]);
    session.ok(&["keys", "init"]);
    session.add_patient("Ada", "Doe", "ada@example.org", &[]);
    drop(moto);
    let out = session.run(&["patient", "list"]);
    assert_one_line_failure(&out, "aws-kms");
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&key), "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");
    assert!(
        !stderr.contains(SECRET) && !stderr.contains("panicked"),
        "{stderr}"
    );
}
