//! The user-space pipeline on recorded events: decode, join, classify,
//! attribute, record, on one core, as `Pipeline::handle` runs them in the
//! agent. Target (issue "capture and attribution"): at least 1 M events/s.
//!
//! The batch mirrors a busy node: most events are connects and state
//! changes of connections to hosts that are not registries and DNS queries
//! for other names; one in ten is a registry query (classified, attributed
//! to this process through /proc once, then cached, recorded, and printed
//! to a sink).

use std::{hint::black_box, sync::Arc, time::SystemTime};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
    serialize::binary::BinEncodable,
};
use observer_common::{
    AF_INET, COMM_LEN, ConnectEvent, DIRECTION_EGRESS, DNS_CAPTURE_LEN, DnsPacketEvent,
    EventHeader, EventKind, OP_CONNECT, SockStateEvent, TCP_ESTABLISHED, TCP_SYN_SENT,
    record_bytes,
};
use registry_observer::{
    clock::{self, Clock},
    outputs::{Live, console::Console, events_log::EventsLog, metrics::Metrics},
    pipeline::{
        Pipeline, PipelineStats,
        attribute::Attributor,
        classify::{AddressBook, Catalog, Classifier},
        connections::{Connections, MAX_CONNECTIONS},
        input::Input,
        phase::{PhaseName, PhaseTimeline},
        record::Recorder,
        verdict::Policy,
    },
};

const BATCH: usize = 10_000;

fn header(kind: EventKind, boot_ns: u64) -> EventHeader {
    let mut comm = [0u8; COMM_LEN];
    comm[..5].copy_from_slice(b"bench");
    EventHeader {
        kind: kind as u32,
        tgid: std::process::id(),
        tid: std::process::id(),
        uid: 0,
        boot_ns,
        cgroup_id: 1,
        comm,
    }
}

fn query(name: &str, boot_ns: u64) -> Bytes {
    let mut message = Message::new(7, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let wire = message.to_bytes().unwrap();
    let mut payload = [0u8; DNS_CAPTURE_LEN];
    payload[..wire.len()].copy_from_slice(&wire);
    let mut server = [0u8; 16];
    server[..4].copy_from_slice(&[10, 0, 0, 53]);
    let event = DnsPacketEvent {
        header: header(EventKind::DnsPacket, boot_ns),
        direction: DIRECTION_EGRESS,
        family: AF_INET,
        wire_len: wire.len() as u32,
        captured_len: wire.len() as u32,
        src_port: 40000,
        dst_port: 53,
        src_addr: [0; 16],
        dst_addr: server,
        payload,
    };
    Bytes::copy_from_slice(record_bytes(&event))
}

fn events() -> Vec<Bytes> {
    let now = clock::boot_ns();
    (0..BATCH)
        .map(|i| {
            let boot_ns = now + i as u64;
            let cookie = i as u64 + 1;
            match i % 10 {
                0..=3 => {
                    let mut addr = [0u8; 16];
                    addr[..4].copy_from_slice(&[10, 1, (i >> 8) as u8, i as u8]);
                    Bytes::copy_from_slice(record_bytes(&ConnectEvent {
                        header: header(EventKind::Connect, boot_ns),
                        family: AF_INET,
                        port: 443,
                        protocol: 6,
                        addr,
                        cookie,
                        op: OP_CONNECT,
                        _pad: 0,
                    }))
                }
                4..=6 => Bytes::copy_from_slice(record_bytes(&SockStateEvent {
                    header: header(EventKind::SockState, boot_ns),
                    cookie: cookie - 4,
                    old_state: TCP_SYN_SENT,
                    new_state: TCP_ESTABLISHED,
                    sk_err: 0,
                })),
                7 | 8 => query(&format!("host{}.example.org.", i % 500), boot_ns),
                _ => query("quay.io.", boot_ns),
            }
        })
        .collect()
}

/// The agent's own outputs, writing the live lines nowhere: their cost
/// (formatting, metrics) is part of the pipeline's.
fn pipeline() -> Pipeline<Live> {
    Pipeline {
        connections: Connections::new(MAX_CONNECTIONS),
        classifier: Classifier::new(Catalog::builtin(), AddressBook::new(4096, 600_000_000_000)),
        attributor: Attributor::new("/proc".into(), "/nonexistent".into()),
        recorder: Recorder::default(),
        scope: None,
        clock: Clock::now(),
        phases: PhaseTimeline::starting(&PhaseName::parse("boot").unwrap(), SystemTime::now()),
        policy: Policy::default(),
        registries_conf: None,
        outputs: Live {
            console: Console::new(Box::new(std::io::sink())),
            metrics: Arc::new(Metrics::new()),
            events_log: EventsLog::disabled(),
            durable: None,
            phase_changed: None,
        },
        stats: PipelineStats::default(),
    }
}

fn bench(c: &mut Criterion) {
    let events = events();
    let mut pipeline = pipeline();
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("decode+join+classify+attribute+record", |b| {
        b.iter(|| {
            for event in &events {
                pipeline.handle(Input::Kernel(event.clone()));
            }
        })
    });
    group.finish();
    black_box(pipeline.recorder.attempts().len());
}

criterion_group!(benches, bench);
criterion_main!(benches);
