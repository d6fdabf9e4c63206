//! `cargo bench --bench normalize`: validate-and-map per vendor on one core (criterion).

use std::path::PathBuf;

use callgate::{
    canonical::Vendor,
    vendors::{self, Origin},
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)).unwrap()
}

fn bench(c: &mut Criterion) {
    vendors::init().unwrap();
    let cases = [
        (Vendor::Oneinbox, "oneinbox/doc-call.ended.json"),
        (Vendor::Vox, "vox/doc-call_ended.json"),
        (Vendor::Salpre, "salpre/doc-call_ended.json"),
        (Vendor::Utel, "utel/synthetic-call_saved-answered.json"),
    ];
    let mut group = c.benchmark_group("validate_and_map");
    for (vendor, path) in cases {
        let body = fixture(path);
        let origin = Origin { source: vendor.as_str(), vendor, phone_region: "KR".parse().ok() };
        let now = chrono::Utc::now();
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{vendor} ({} B)", body.len()), |b| {
            b.iter(|| vendors::normalize(&origin, std::hint::black_box(&body), now).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
