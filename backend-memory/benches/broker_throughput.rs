//! Throughput of the memory backend's hot path: xadd + read_group + ack.
//!
//! Two variants over a stream of N entries (default 200 000), each run on a
//! fresh `MemoryBroker` with one group and one consumer:
//! - per entry: `xadd`, `read_group` COUNT 1, `ack` of that one id;
//! - batched: `xadd_many` of 100, `read_group` COUNT 100, one `ack` of 100 ids.
//!
//! Each variant runs once to warm up, then several times (default 5); every
//! run and the median are printed as plain text, in entries per second.
//! Nothing is asserted about time; the bench only checks that every entry was
//! delivered and acked once.
//!
//! The runtime is tokio `current_thread`: the memory broker does no I/O and
//! never yields on this path, so one thread measures the broker itself rather
//! than the scheduler.
//!
//! ```text
//! cargo bench -p crewq-memory --bench broker_throughput
//! cargo bench -p crewq-memory --bench broker_throughput -- --entries 1000000 --runs 7
//! cargo bench -p crewq-memory --bench broker_throughput -- --quick   # smoke: 2 000 entries, 1 run
//! ```
//!
//! `CREWQ_BENCH_ENTRIES` and `CREWQ_BENCH_RUNS` set the same as the flags;
//! `--out FILE` also appends the two median lines to FILE.

#![allow(
    clippy::print_stdout,
    reason = "a harness = false bench reports its figures on stdout"
)]

use std::error::Error;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::time::{Duration, Instant};

use crewq_core::{Broker, Fields, GroupStart, NewEntry, ReadGroup, StreamId};
use crewq_memory::MemoryBroker;

const STREAM: &str = "agent:tasks:bench";
const GROUP: &str = "bench";
const CONSUMER: &str = "worker-1";
const BATCH: usize = 100;
/// A task about the size crewq's producer writes.
const PAYLOAD: &str = r#"{"task_id":"6f1c2e9a-0b7d-4c3e-9a51-2f0d8e7b4c11","agent_type":"bench","action":"summarise","payload":{"doc":"d-1"},"priority":0,"max_retries":3,"created_at":1704067200.0,"trace_id":"t-1"}"#;

type BenchResult<T> = Result<T, Box<dyn Error>>;

struct Options {
    entries: usize,
    runs: usize,
    out: Option<String>,
}

impl Options {
    /// Flags win over the environment. `cargo bench` itself passes
    /// `--bench`, and filters may follow; anything unknown is ignored.
    fn parse() -> BenchResult<Options> {
        let env = |name: &str| std::env::var(name).ok().map(|v| v.parse::<usize>());
        let mut options = Options {
            entries: env("CREWQ_BENCH_ENTRIES").transpose()?.unwrap_or(200_000),
            runs: env("CREWQ_BENCH_RUNS").transpose()?.unwrap_or(5),
            out: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--entries" | "-n" => options.entries = value()?.parse()?,
                "--runs" => options.runs = value()?.parse()?,
                "--out" => options.out = Some(value()?),
                "--quick" => {
                    options.entries = 2_000;
                    options.runs = 1;
                }
                _ => {}
            }
        }
        if options.entries == 0 || options.runs == 0 {
            return Err("--entries and --runs must be positive".into());
        }
        Ok(options)
    }
}

#[derive(Clone, Copy)]
enum Variant {
    PerEntry,
    Batched,
}

impl Variant {
    fn describe(self) -> &'static str {
        match self {
            Variant::PerEntry => "per-entry (xadd, read COUNT 1, ack 1)",
            Variant::Batched => "batched (xadd_many 100, read COUNT 100, ack 100)",
        }
    }

    /// One run over `entries` entries on a fresh broker; returns its duration.
    async fn run(self, entries: usize) -> BenchResult<Duration> {
        let broker = MemoryBroker::new();
        broker
            .group_create(STREAM, GROUP, GroupStart::BEGINNING, true)
            .await?;
        let batch = match self {
            Variant::PerEntry => 1,
            Variant::Batched => BATCH,
        };
        let read = ReadGroup::new(STREAM, GROUP, CONSUMER).count(batch);
        let entry = || NewEntry::new(STREAM, Fields::new().with("data", PAYLOAD));
        let mut done = 0;
        let started = Instant::now();
        while done < entries {
            let n = batch.min(entries - done);
            if n == 1 {
                broker.xadd(entry()).await?;
            } else {
                for reply in broker.xadd_many((0..n).map(|_| entry()).collect()).await? {
                    reply?;
                }
            }
            let delivered = broker.read_group(&read).await?;
            let ids: Vec<StreamId> = delivered.iter().map(|e| e.id).collect();
            let acked = broker.ack(STREAM, GROUP, &ids).await?;
            if ids.len() != n || acked != n as u64 {
                return Err(format!(
                    "expected {n} entries delivered and acked, got {} delivered, {acked} acked",
                    ids.len()
                )
                .into());
            }
            done += n;
        }
        let elapsed = started.elapsed();
        if broker.xlen(STREAM).await? != entries as u64 {
            return Err("the stream lost entries".into());
        }
        Ok(elapsed)
    }
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn main() -> BenchResult<()> {
    let options = Options::parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "broker_throughput: crewq-memory, tokio current_thread, {} entries, {} runs per variant",
        options.entries, options.runs
    );
    let mut summary = Vec::new();
    for variant in [Variant::PerEntry, Variant::Batched] {
        // One uncounted run first: allocator and caches settle, and the
        // first counted run is not the odd one out.
        let warm_up = runtime.block_on(variant.run(options.entries))?;
        println!(
            "  {:<50} warm-up: {:>10.0} entries/s (not counted)",
            variant.describe(),
            options.entries as f64 / warm_up.as_secs_f64()
        );
        let mut rates = Vec::with_capacity(options.runs);
        for run in 1..=options.runs {
            let elapsed = runtime.block_on(variant.run(options.entries))?;
            let rate = options.entries as f64 / elapsed.as_secs_f64();
            println!(
                "  {:<50} run {run}: {rate:>12.0} entries/s ({:.3} s)",
                variant.describe(),
                elapsed.as_secs_f64()
            );
            rates.push(rate);
        }
        let line = format!(
            "{:<52} median: {:>12.0} entries/s ({} entries, {} runs)",
            variant.describe(),
            median(rates),
            options.entries,
            options.runs
        );
        println!("{line}");
        summary.push(line);
    }
    if let Some(path) = options.out {
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        for line in summary {
            writeln!(file, "{line}")?;
        }
    }
    Ok(())
}
