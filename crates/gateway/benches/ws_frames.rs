//! What reading a WebSocket client's frame headers costs the gateway per message: the parse
//! behind the idle timeout's activity mark ([`gateway::ws_activity`]), run on every byte a
//! client sends. Fed just under one read's worth (32 KiB) of masked binary frames of 64 bytes, and two
//! of 64 KiB, whole and in reads that cut frames anywhere. The baseline, measured in the same
//! run, is a sum of the same bytes: touching each 8-byte word once.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway::ws_activity::ClientFrames;

/// `count` masked binary frames with `len`-byte payloads, as a browser sends them.
fn frames(len: usize, count: usize) -> Vec<u8> {
    let mut one = vec![0x82];
    match len {
        0..=125 => one.push(0x80 | len as u8),
        126..=65535 => {
            one.push(0x80 | 126);
            one.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            one.push(0x80 | 127);
            one.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    one.extend_from_slice(&[0x37, 0xfa, 0x21, 0x3d]);
    one.extend((0..len).map(|i| (i * 31 % 251) as u8));
    one.repeat(count)
}

fn parse(c: &mut Criterion) {
    const READ: usize = 32 * 1024;
    // Whole frames only (468 of 70 bytes, just under 32 KiB), so that every iteration starts
    // where the parser stands: at a frame boundary.
    let small = frames(64, READ / 70);
    let small = &small[..];
    let large = frames(64 * 1024, 2);
    let mut group = c.benchmark_group("ws_frames");
    group.throughput(Throughput::Bytes(small.len() as u64));
    group.bench_function("baseline: sum of the 32 KiB", |b| {
        b.iter(|| {
            black_box(small)
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
                .fold(0u64, u64::wrapping_add)
        })
    });
    let mut parser = ClientFrames::default();
    group.bench_function("64 B messages, 32 KiB whole", |b| {
        b.iter(|| parser.feed(black_box(small)))
    });
    // Reads of 1,000 bytes: most end inside a frame header or a payload.
    let mut parser = ClientFrames::default();
    group.bench_function("64 B messages, 32 KiB in reads of 1,000 B", |b| {
        b.iter(|| {
            black_box(small)
                .chunks(1000)
                .fold(false, |seen, read| parser.feed(read) | seen)
        })
    });
    group.finish();
    let mut group = c.benchmark_group("ws_frames_large");
    group.throughput(Throughput::Bytes(large.len() as u64));
    let mut parser = ClientFrames::default();
    group.bench_function("two 64 KiB messages, 32 KiB reads", |b| {
        b.iter(|| {
            black_box(&large[..])
                .chunks(READ)
                .fold(false, |seen, read| parser.feed(read) | seen)
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
