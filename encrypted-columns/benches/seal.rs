//! Seal/open cost per value size, next to the raw AEADs measured in the same run (the floor).
//!
//! `cargo bench -p encrypted-columns --bench seal`
//!
//! * `aes256gcm/*`: RustCrypto AES-256-GCM with a cached cipher and a fixed nonce — the
//!   cheapest possible, and unsafe to use this way; the floor.
//! * `xaes256gcm/*`: XAES-256-GCM with a cached cipher and a fixed nonce: our AEAD alone.
//! * `seal/*`, `open/*`: the full path of `Encrypted<String, C>` — keyring lookup, cached
//!   per-column cipher, random nonce, envelope, UTF-8 decode.
//! * `blind_index/hmac_sha256`: HMAC-SHA256 of a 30-byte e-mail from a cloned, pre-keyed
//!   state — the floor of a blind index.
//! * `blind_index/email`: `BlindIndex::compute` of the same 30 bytes with the `email`
//!   pipeline, 256 bits: keyring lookup, normalization, length-prefixed message, HMAC,
//!   version byte.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use encrypted_columns::blind_index::{BlindIndex, IndexInput, Pipeline};
use encrypted_columns::{EncryptedString, KeyId, Keyring, column_context, keyring};
use hmac::{Hmac, KeyInit as _, Mac};
use sha2::Sha256;
use std::hint::black_box;
use xaes_256_gcm::Xaes256Gcm;
use xaes_256_gcm::aead::{AeadInOut, KeyInit};
use xaes_256_gcm::aes_gcm::Aes256Gcm;

column_context!(Notes, table = "patients", column = "notes");

const SIZES: [usize; 4] = [50, 1024, 5 * 1024, 64 * 1024];

/// The keyring of every benchmark: encryption key 1 and blind-index key 1.
fn ring() -> Keyring {
    let mut ring = Keyring::new(KeyId(1), [7u8; 32]);
    if let Err(err) = ring.add_blind_index_key(KeyId(1), [9u8; 32]) {
        panic!("blind-index key: {err}");
    }
    ring
}

fn bench(c: &mut Criterion) {
    keyring::install(ring());
    for size in SIZES {
        let text = "a".repeat(size);
        let mut group = c.benchmark_group(format!("{size}B"));
        group.throughput(Throughput::Bytes(size as u64));

        let gcm = Aes256Gcm::new(&[7u8; 32].into());
        let xaes = Xaes256Gcm::new(&[7u8; 32].into());
        let mut buf = text.clone().into_bytes();
        group.bench_function(BenchmarkId::new("aes256gcm", size), |b| {
            b.iter(|| {
                gcm.encrypt_inout_detached(&[0u8; 12].into(), b"", buf.as_mut_slice().into())
                    .map(black_box)
            })
        });
        group.bench_function(BenchmarkId::new("xaes256gcm", size), |b| {
            b.iter(|| {
                xaes.encrypt_inout_detached(&[0u8; 24].into(), b"", buf.as_mut_slice().into())
                    .map(black_box)
            })
        });
        group.bench_function(BenchmarkId::new("seal", size), |b| {
            b.iter(|| EncryptedString::<Notes>::new(black_box(text.clone())))
        });
        let sealed = EncryptedString::<Notes>::new(text.clone()).map(|v| v.envelope().to_vec());
        let sealed = sealed.unwrap_or_default();
        group.bench_function(BenchmarkId::new("open", size), |b| {
            b.iter(|| EncryptedString::<Notes>::from_envelope(black_box(sealed.clone())))
        });
        group.finish();
    }
}

/// A blind index of a 30-byte e-mail next to a bare HMAC-SHA256 of 30 bytes.
fn blind_index(c: &mut Criterion) {
    let ring = ring();
    let email = "user000042@clinics.example.org";
    assert_eq!(email.len(), 30);
    let mut group = c.benchmark_group("blind_index");
    group.throughput(Throughput::Bytes(email.len() as u64));

    let keyed = match Hmac::<Sha256>::new_from_slice(&[9u8; 32]) {
        Ok(mac) => mac,
        Err(err) => panic!("HMAC key: {err}"),
    };
    group.bench_function("hmac_sha256", |b| {
        b.iter(|| {
            let mut mac = keyed.clone();
            mac.update(black_box(email.as_bytes()));
            mac.finalize().into_bytes()
        })
    });

    let pipeline = match Pipeline::parse("email") {
        Ok(pipeline) => pipeline,
        Err(err) => panic!("email pipeline: {err}"),
    };
    let index = BlindIndex::new("patients", "email_bidx").field(pipeline);
    group.bench_function("email", |b| {
        b.iter(|| index.compute(&ring, &[Some(IndexInput::Text(black_box(email)))]))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench, blind_index
}
criterion_main!(benches);
