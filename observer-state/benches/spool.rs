//! What the durable record costs per registry event: the attempt the event
//! left, as JSON, framed and appended to the spool (page cache; no fsync),
//! and what one fsync of a second's worth of records costs, on this disk.
//! Run by `cargo xtask bench`; numbers go to docs/PERFORMANCE.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use observer_report::{Attempt, fixtures};
use observer_state::{
    record::attempt_record_bytes,
    spool::{Limits, SpoolWriter},
};

fn attempt() -> Attempt {
    let mut attempt = fixtures::attempt("upgrade", "machine-config-daemon", "quay.io", 10);
    attempt.process.cmdline = Some(
        [
            "skopeo",
            "inspect",
            "--authfile",
            "/var/lib/kubelet/config.json",
            "docker://quay.io/openshift-release-dev/ocp-release@sha256:0123456789abcdef",
        ]
        .map(String::from)
        .to_vec(),
    );
    attempt
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (mut writer, _) =
        SpoolWriter::open(dir.path(), "bench-node", Limits::default()).expect("opening the spool");
    let attempt = attempt();
    let bytes = attempt_record_bytes(&attempt, Some(1 << 20)).len() as u64;
    let mut group = c.benchmark_group("spool");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("serialize+append one attempt", |b| {
        b.iter(|| {
            let json = attempt_record_bytes(black_box(&attempt), Some(1 << 20));
            writer.append(&json).unwrap()
        })
    });
    group.finish();
    let mut group = c.benchmark_group("spool");
    group.sample_size(20);
    group.bench_function("append 1000 attempts + fsync", |b| {
        let json = attempt_record_bytes(&attempt, Some(1 << 20));
        b.iter(|| {
            for _ in 0..1000 {
                writer.append(&json).unwrap();
            }
            writer.sync().unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
