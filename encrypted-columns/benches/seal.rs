//! Seal/open cost per value size, next to the raw AEADs measured in the same run (the floor).
//!
//! `cargo bench -p encrypted-columns --bench seal`
//!
//! * `aes256gcm/*`: RustCrypto AES-256-GCM with a cached cipher and a fixed nonce — the
//!   cheapest possible, and unsafe to use this way; the floor.
//! * `xaes256gcm/*`: XAES-256-GCM with a cached cipher and a fixed nonce: our AEAD alone.
//! * `seal/*`: `EncryptedString::new(text)`: keyring lookup, cached per-column cipher,
//!   random nonce, the envelope's allocation, copy and encryption.
//! * `open/*`: `EncryptedString::from_envelope(bytes)`: keyring and cipher lookup, a copy of
//!   the ciphertext, decryption, UTF-8 check.
//! * `drop/*`: dropping an `EncryptedString`: wiping the plaintext, freeing both buffers.
//!
//! `seal` and `open` take their input by value: it is cloned outside the timed section
//! (`iter_batched`) and the result is dropped outside it too, so they time the operation
//! alone; `drop` times what they leave out. (Until issue 6 both timed a clone of the input
//! and the drop of the result as well.)
//! * `paired`: not a criterion benchmark but a table printed at the end: seal and open
//!   against both raw AEADs, interleaved round by round (see [`paired`]); run it alone with
//!   `cargo bench -p encrypted-columns --bench seal -- paired`.
//! * `blind_index/hmac_sha256`: HMAC-SHA256 of a 30-byte e-mail from a cloned, pre-keyed
//!   state — the floor of a blind index.
//! * `blind_index/email`: `BlindIndex::compute` of the same 30 bytes with the `email`
//!   pipeline, 256 bits: keyring lookup, normalization, length-prefixed message, HMAC,
//!   version byte.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group};
use encrypted_columns::blind_index::{BlindIndex, IndexInput, Pipeline};
use encrypted_columns::{EncryptedString, KeyId, Keyring, column_context, keyring};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::hint::black_box;
use std::time::Instant;
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
            b.iter_batched(
                || text.clone(),
                |text| EncryptedString::<Notes>::new(black_box(text)),
                BatchSize::NumIterations(batch_len(size) as u64),
            )
        });
        let value = match EncryptedString::<Notes>::new(text.clone()) {
            Ok(value) => value,
            Err(err) => panic!("seal: {err}"),
        };
        let sealed = value.envelope().to_vec();
        group.bench_function(BenchmarkId::new("open", size), |b| {
            b.iter_batched(
                || sealed.clone(),
                |sealed| EncryptedString::<Notes>::from_envelope(black_box(sealed)),
                BatchSize::NumIterations(batch_len(size) as u64),
            )
        });
        group.bench_function(BenchmarkId::new("drop", size), |b| {
            b.iter_batched(
                || value.clone(),
                drop,
                BatchSize::NumIterations(batch_len(size) as u64),
            )
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

/// Seal and open next to the raw AEADs, interleaved: each round times a batch of each of the
/// four, in a rotating order, so a burst of load from elsewhere on the machine hits all four
/// alike. Prints per-value medians and the medians of the per-round ratios as a Markdown
/// table (the figures BENCHMARKS.md quotes). Criterion measures each benchmark for seconds in
/// turn, and on a shared machine its ratios drift with the load of the moment.
fn paired() {
    const ROUNDS: usize = 101;
    keyring::install(ring());
    println!(
        "\nPaired medians, ns per value ({ROUNDS} interleaved rounds; ratios are medians of \
         per-round ratios):\n"
    );
    println!(
        "| size | AES-256-GCM | XAES-256-GCM | seal | open | seal ÷ AES-GCM | open ÷ AES-GCM \
         | seal ÷ XAES | open ÷ XAES |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for size in SIZES {
        let batch = batch_len(size);
        let text = "a".repeat(size);
        let gcm = Aes256Gcm::new(&[7u8; 32].into());
        let xaes = Xaes256Gcm::new(&[7u8; 32].into());
        let mut buf = text.clone().into_bytes();
        let sealed = match EncryptedString::<Notes>::new(text.clone()) {
            Ok(value) => value.envelope().to_vec(),
            Err(err) => panic!("seal: {err}"),
        };
        // ns per value, per round: AES-GCM, XAES, seal, open.
        let mut ns: [Vec<f64>; 4] = Default::default();
        for round in 0..ROUNDS {
            for k in 0..4 {
                let which = (k + round) % 4;
                let elapsed = match which {
                    0 => {
                        let started = Instant::now();
                        for _ in 0..batch {
                            let tag = gcm.encrypt_inout_detached(
                                &[0u8; 12].into(),
                                b"",
                                buf.as_mut_slice().into(),
                            );
                            black_box(tag.ok());
                        }
                        started.elapsed()
                    }
                    1 => {
                        let started = Instant::now();
                        for _ in 0..batch {
                            let tag = xaes.encrypt_inout_detached(
                                &[0u8; 24].into(),
                                b"",
                                buf.as_mut_slice().into(),
                            );
                            black_box(tag.ok());
                        }
                        started.elapsed()
                    }
                    2 => {
                        let inputs: Vec<String> = (0..batch).map(|_| text.clone()).collect();
                        let mut outputs = Vec::with_capacity(batch);
                        let started = Instant::now();
                        for input in inputs {
                            outputs.push(EncryptedString::<Notes>::new(black_box(input)));
                        }
                        let elapsed = started.elapsed();
                        black_box(&outputs);
                        elapsed
                    }
                    _ => {
                        let inputs: Vec<Vec<u8>> = (0..batch).map(|_| sealed.clone()).collect();
                        let mut outputs = Vec::with_capacity(batch);
                        let started = Instant::now();
                        for input in inputs {
                            outputs.push(EncryptedString::<Notes>::from_envelope(black_box(input)));
                        }
                        let elapsed = started.elapsed();
                        black_box(&outputs);
                        elapsed
                    }
                };
                ns[which].push(elapsed.as_nanos() as f64 / batch as f64);
            }
        }
        let ratio = |a: usize, b: usize| median((0..ROUNDS).map(|r| ns[a][r] / ns[b][r]).collect());
        println!(
            "| {size} B | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.2}× | {:.2}× | {:.2}× |",
            median(ns[0].clone()),
            median(ns[1].clone()),
            median(ns[2].clone()),
            median(ns[3].clone()),
            ratio(2, 0),
            ratio(3, 0),
            ratio(2, 1),
            ratio(3, 1),
        );
    }
}

/// Values per timed batch of `seal`/`open`: about 64 KiB of inputs at most (one value at
/// 64 KiB), so the batch stays in L2 like the raw AEADs' single buffer; large batches would
/// time cache misses on fresh heap memory instead of the operation.
fn batch_len(size: usize) -> usize {
    (64 * 1024 / size).clamp(1, 64)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Whether this run should include [`paired`]: a real `cargo bench` run with no filter, or
/// with a filter naming `paired` (`cargo bench -p encrypted-columns --bench seal -- paired`).
fn wants_paired() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench")
        || args
            .iter()
            .any(|a| a == "--list" || a == "--test" || a.starts_with("--profile-time"))
    {
        return false;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    filters.is_empty() || filters.iter().any(|f| f.contains("paired"))
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench, blind_index
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if wants_paired() {
        paired();
    }
}
