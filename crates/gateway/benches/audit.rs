//! Audit records per second when many requests write at once: 64 concurrent writers, each
//! record synced to disk before its writer goes on. The baseline, measured in the same run, is
//! the simplest durable writer: one blocking task per record that appends its line and calls
//! `fdatasync` under a mutex (one sync per record). `AuditLog` writes every waiting record with
//! one write and one sync (group commit).
//!
//! The folder is `AUDIT_BENCH_DIR` (default: the system's temporary folder); put it on the disk
//! the audit log will live on, since the figure is the disk's sync latency divided by the batch.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway::audit::{AuditLog, Event, Record};

/// Writers at once: requests in flight on a busy gateway.
const WRITERS: usize = 64;

fn record() -> Record {
    Record {
        event: Some(Event::LoginFailure),
        reason: Some("signature_invalid".into()),
        client_ip: Some("192.0.2.10".into()),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) bench".into()),
        path: Some("/saml/acs".into()),
        reference: Some("0a1b2c3d4e5f".into()),
        ..Record::default()
    }
}

fn folder() -> tempfile::TempDir {
    match std::env::var_os("AUDIT_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(PathBuf::from(dir)),
        None => tempfile::tempdir(),
    }
    .expect("a temporary folder for the bench")
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("audit_64_writers");
    group.throughput(Throughput::Elements(WRITERS as u64));
    group.sample_size(20);

    let dir = folder();
    let file = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.path().join("baseline.jsonl"))
            .expect("the baseline file"),
    ));
    group.bench_function("baseline_one_sync_per_record", |b| {
        b.iter(|| {
            let file = file.clone();
            runtime.block_on(async move {
                let writers: Vec<_> = (0..WRITERS)
                    .map(|_| {
                        let file = file.clone();
                        tokio::task::spawn_blocking(move || {
                            let mut line = serde_json::to_vec(&record()).expect("json");
                            line.push(b'\n');
                            let file: std::sync::MutexGuard<'_, File> = file.lock().expect("lock");
                            (&*file).write_all(&line)?;
                            file.sync_data()
                        })
                    })
                    .collect();
                for w in writers {
                    w.await.expect("task").expect("write");
                }
            })
        })
    });

    let log = AuditLog::open(&dir.path().join("audit.jsonl")).expect("the audit log");
    group.bench_function("audit_log_group_commit", |b| {
        b.iter(|| {
            let log = log.clone();
            runtime.block_on(async move {
                let writers: Vec<_> = (0..WRITERS)
                    .map(|_| {
                        let log = log.clone();
                        tokio::spawn(async move { log.record(record()).await })
                    })
                    .collect();
                for w in writers {
                    w.await.expect("task").expect("write");
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
