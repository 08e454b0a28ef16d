//! The in-process engine (no network, no store): keygen, signing and share
//! refresh for 2-of-3 and 3-of-5, all parties in one thread, for each key
//! type. This is what the cryptography alone costs; `thresig bench` measures
//! the same operations end to end over mTLS gRPC and reports the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, Criterion};
use thresig::domain::{DerivationPath, Digest32, KeyType};
use thresig::protocol::inproc::run;
use thresig::protocol::keygen::KeygenOutput;
use thresig::protocol::{scheme, KeyShare};

fn keygen(kt: KeyType, t: u8, n: u8) -> Vec<KeygenOutput> {
    let parties = (1..=n)
        .map(|i| scheme::keygen(kt, t, n, i, &[1u8; 32]).unwrap())
        .collect();
    run(parties, None).into_iter().map(|r| r.unwrap()).collect()
}

fn copy(s: &KeyShare) -> KeyShare {
    KeyShare::decode(s.key_type(), &s.encode().unwrap()).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    for kt in KeyType::ALL {
        for (t, n) in [(2u8, 3u8), (3, 5)] {
            g.bench_function(format!("{kt} keygen {t}-of-{n} (all parties)"), |b| {
                b.iter(|| keygen(kt, t, n))
            });
            let outs = keygen(kt, t, n);
            let signers: Vec<u8> = (1..=t).collect();
            g.bench_function(format!("{kt} sign {t}-of-{n} (all parties)"), |b| {
                b.iter(|| {
                    let parties = signers
                        .iter()
                        .map(|&i| {
                            scheme::sign(
                                &outs[(i - 1) as usize].share,
                                &DerivationPath::default(),
                                &signers,
                                Digest32([5; 32]),
                                b"bench",
                            )
                            .unwrap()
                        })
                        .collect();
                    for r in run(parties, None) {
                        r.unwrap();
                    }
                })
            });
            g.bench_function(format!("{kt} refresh {t}-of-{n} (all parties)"), |b| {
                b.iter(|| {
                    let parties = outs
                        .iter()
                        .map(|o| scheme::refresh(copy(&o.share), &o.package, b"bench").unwrap())
                        .collect();
                    for r in run(parties, None) {
                        r.unwrap();
                    }
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
