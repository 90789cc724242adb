//! The six scenarios. Each starts its own server and crew, injects its
//! faults while tasks flow, restores health, then drains and accounts (see
//! [`Run::finish`]). Fault timings are fixed or drawn from [`mix`], so two
//! runs inject the same faults (the machine's timing still varies).

use std::net::SocketAddr;
use std::time::Duration;

use crewq_core::Task;
use crewq_core::producer::Retention;
use serde_json::{Value, json};

use crate::dispatch::{AGENT, task};
use crate::harness::{Report, Run, Settings, dispatch_in_background, dispatched, restart_exited};
use crate::proxy::{Mode as Link, Proxy};
use crate::worker::{Mode, Plan, mix};

/// The scenarios, by name, in the order `all` runs them.
pub const NAMES: [&str; 6] = [
    "kill-workers",
    "redis-restart",
    "proxy",
    "poison",
    "backlog",
    "redis-outage",
];

/// What the scenarios can be asked to change.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Tasks of the backlog scenario (default: twice the producer's
    /// default retention).
    pub backlog: u64,
    /// A `MAXLEN ~` retention for the backlog scenario instead of the
    /// producer's default (for quick runs at a smaller scale).
    pub backlog_retention: Option<u64>,
    /// How long Redis stays down in the outage scenario.
    pub outage: Duration,
}

/// Runs the scenario `name`.
///
/// # Errors
///
/// An unknown name, or a scenario that could not be set up.
pub async fn run(name: &str, settings: &Settings, sizes: &Sizes) -> Result<Report, String> {
    match name {
        "kill-workers" => kill_workers(settings).await,
        "redis-restart" => redis_restart(settings).await,
        "proxy" => proxy(settings).await,
        "poison" => poison(settings).await,
        "backlog" => backlog(settings, sizes).await,
        "redis-outage" => redis_outage(settings, sizes).await,
        _ => Err(format!("no scenario {name:?}; known: {}", NAMES.join(", "))),
    }
}

fn tasks(run: &Run, count: u64, min_ms: u64, max_ms: u64) -> Result<Vec<Task<Value>>, String> {
    (0..count)
        .map(|n| task(&run.name, n, min_ms, max_ms))
        .collect()
}

async fn pause(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// 1. SIGKILL a worker every 1–2 s for 20 s and start it again at once,
///    every other time under a new consumer name (its pending entries then
///    wait for a peer's reclaim).
async fn kill_workers(settings: &Settings) -> Result<Report, String> {
    let run = Run::new("kill-workers", settings, false)?;
    let mut crew = run.crew(&run.server.url(), 16)?;
    for i in 0..4 {
        crew.spawn(&format!("w{i}"))
            .map_err(|e| format!("spawn: {e}"))?;
    }
    let producer = dispatch_in_background(
        run.dispatcher(None).await?,
        tasks(&run, 3_000, 0, 150)?,
        100,
        Duration::from_millis(250),
        Duration::from_secs(60),
    );
    let mut run = run;
    let mut kills = 0u64;
    while run.elapsed() < Duration::from_secs(20) {
        pause(1_000 + mix("kill-wait", kills) % 1_000).await;
        let index = usize::try_from(mix("kill-who", kills) % 4).unwrap_or(0);
        if let Some(victim) = crew.kill(index) {
            let name = if kills.is_multiple_of(2) {
                victim
            } else {
                format!("w{index}-r{kills}")
            };
            crew.spawn(&name).map_err(|e| format!("spawn: {e}"))?;
        }
        kills += 1;
        restart_exited(&mut crew, &mut run.notes);
    }
    run.notes.push(format!("{kills} SIGKILLs"));
    let (acked, undispatched) = dispatched(producer).await?;
    run.finish(crew, acked, undispatched).await
}

/// 2. SIGKILL redis-server (`appendonly yes`, `appendfsync always`) three
///    times while tasks flow, restarting it on the same port and directory.
async fn redis_restart(settings: &Settings) -> Result<Report, String> {
    let mut run = Run::new("redis-restart", settings, true)?;
    let mut crew = run.crew(&run.server.url(), 16)?;
    for i in 0..3 {
        crew.spawn(&format!("w{i}"))
            .map_err(|e| format!("spawn: {e}"))?;
    }
    let producer = dispatch_in_background(
        run.dispatcher(None).await?,
        tasks(&run, 2_000, 0, 150)?,
        50,
        Duration::from_millis(200),
        Duration::from_secs(90),
    );
    for _ in 0..3 {
        pause(4_000).await;
        run.server.kill();
        pause(1_000).await;
        run.server.restart()?;
        restart_exited(&mut crew, &mut run.notes);
    }
    run.notes.push("3 redis-server SIGKILLs".into());
    let (acked, undispatched) = dispatched(producer).await?;
    run.finish(crew, acked, undispatched).await
}

/// 3. Workers reach Redis through the proxy: 3 s of 100 ms delays, a reset
///    of every connection, 3 s of refused connections (after another
///    reset), then every open connection stalls silently for good.
async fn proxy(settings: &Settings) -> Result<Report, String> {
    let mut run = Run::new("proxy", settings, false)?;
    let upstream = SocketAddr::from(([127, 0, 0, 1], run.server.port()));
    let proxy = Proxy::start(upstream)
        .await
        .map_err(|e| format!("proxy: {e}"))?;
    let mut crew = run.crew(&proxy.url(), 16)?;
    for i in 0..3 {
        crew.spawn(&format!("w{i}"))
            .map_err(|e| format!("spawn: {e}"))?;
    }
    let producer = dispatch_in_background(
        run.dispatcher(None).await?,
        tasks(&run, 2_000, 0, 150)?,
        50,
        // Tasks keep coming until after the stall.
        Duration::from_millis(350),
        Duration::from_secs(60),
    );
    pause(2_000).await;
    proxy.set_mode(Link::Delay(Duration::from_millis(100)));
    pause(3_000).await;
    proxy.set_mode(Link::Pass);
    proxy.reset_open();
    pause(2_000).await;
    proxy.set_mode(Link::Refuse);
    proxy.reset_open();
    pause(3_000).await;
    proxy.set_mode(Link::Pass);
    pause(2_000).await;
    let stalled = proxy.stall_open();
    run.notes
        .push(format!("stalled the {stalled} connections made so far"));
    restart_exited(&mut crew, &mut run.notes);
    let (acked, undispatched) = dispatched(producer).await?;
    let report = run.finish(crew, acked, undispatched).await;
    drop(proxy);
    report
}

/// A task entry's JSON, as a peer might write it.
fn raw_task(task_id: &str, agent_type: &str) -> String {
    json!({
        "task_id": task_id,
        "agent_type": agent_type,
        "action": "chaos",
        "payload": { "mode": "ok" },
    })
    .to_string()
}

/// 4. Poison written with `redis-cli XADD` while valid tasks flow: bad
///    JSON, no `data`, a task missing its fields, a task naming another
///    agent type, an invalid agent type name, `attempts` of 4294967295, and
///    a failing task with `attempts` and `max_retries` both 4294967295
///    (whose next failure overflows the count).
async fn poison(settings: &Settings) -> Result<Report, String> {
    let mut run = Run::new("poison", settings, false)?;
    let mut crew = run.crew(&run.server.url(), 16)?;
    for i in 0..2 {
        crew.spawn(&format!("w{i}"))
            .map_err(|e| format!("spawn: {e}"))?;
    }
    let producer = dispatch_in_background(
        run.dispatcher(None).await?,
        tasks(&run, 1_000, 0, 100)?,
        50,
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    for round in 0..3 {
        let n = |kind: &str| format!("poison-{kind}-{round}");
        let wrong = raw_task(&n("wrong-type"), "elsewhere");
        let bad_name = raw_task(&n("bad-agent-name"), "no such agent");
        let huge = raw_task(&n("huge-attempts"), AGENT);
        // Failing, with a count at the top of u32 and as many retries
        // allowed: the next failure's count is one more than u32 holds.
        let overflow = json!({
            "task_id": n("attempts-overflow"),
            "agent_type": AGENT,
            "action": "chaos",
            "payload": { "mode": "fail" },
            "max_retries": u32::MAX,
        })
        .to_string();
        let entries: [Vec<(&str, &str)>; 7] = [
            vec![(
                "data",
                "{\"task_id\": \"poison-bad-json\", \"agent_type\": ",
            )],
            vec![("note", "an entry without data")],
            vec![("data", "{\"action\": \"chaos\"}")],
            vec![("data", wrong.as_str())],
            vec![("data", bad_name.as_str())],
            vec![("data", huge.as_str()), ("attempts", "4294967295")],
            vec![("data", overflow.as_str()), ("attempts", "4294967295")],
        ];
        for fields in &entries {
            run.xadd_poison(fields)?;
            pause(300).await;
        }
    }
    run.notes
        .push(format!("{} poison entries", run.poison.len()));
    let (acked, undispatched) = dispatched(producer).await?;
    restart_exited(&mut crew, &mut run.notes);
    run.finish(crew, acked, undispatched).await
}

/// 5. A backlog of `sizes.backlog` tasks (twice the producer's default
///    retention) dispatched with the producer's defaults before any worker
///    starts; then two workers drain it.
async fn backlog(settings: &Settings, sizes: &Sizes) -> Result<Report, String> {
    let mut run = Run::new("backlog", settings, false)?;
    let retention = sizes
        .backlog_retention
        .map(|len| Retention::MaxLenEvenUnread {
            len,
            approximate: true,
        });
    match retention {
        Some(_) => run.notes.push(format!(
            "retention MAXLEN ~ {} (not the default)",
            sizes.backlog_retention.unwrap_or_default()
        )),
        None => run.notes.push("the producer's default retention".into()),
    }
    let producer = dispatch_in_background(
        run.dispatcher(retention).await?,
        tasks(&run, sizes.backlog, 0, 0)?,
        1_000,
        Duration::ZERO,
        Duration::from_secs(120),
    );
    let (acked, undispatched) = dispatched(producer).await?;
    run.notes.push(format!(
        "dispatched in {}s before any worker started",
        run.elapsed().as_secs()
    ));
    let mut crew = run.crew(&run.server.url(), 256)?;
    for i in 0..2 {
        crew.spawn(&format!("w{i}"))
            .map_err(|e| format!("spawn: {e}"))?;
    }
    run.finish(crew, acked, undispatched).await
}

/// 6. Redis stopped (SIGTERM; `appendfsync always`) for `sizes.outage`
///    while handlers of 1.5–3.5 s run, then started again. Tasks that always
///    succeed have `max_retries` 0 here.
async fn redis_outage(settings: &Settings, sizes: &Sizes) -> Result<Report, String> {
    let mut run = Run::new("redis-outage", settings, true)?;
    let mut crew = run.crew(&run.server.url(), 32)?;
    for i in 0..3 {
        crew.spawn(&format!("w{i}"))
            .map_err(|e| format!("spawn: {e}"))?;
    }
    // Every task that always succeeds may not be retried: a success lost to
    // the outage then shows as a dead letter, not as a burnt retry.
    let mut wave = tasks(&run, 300, 1_500, 3_500)?;
    for task in &mut wave {
        if Plan::from_payload(&task.payload).mode == Mode::Ok {
            task.max_retries = 0;
        }
    }
    let producer = dispatch_in_background(
        run.dispatcher(None).await?,
        wave,
        300,
        Duration::ZERO,
        Duration::from_secs(30),
    );
    let (acked, undispatched) = dispatched(producer).await?;
    // Every handler of the first wave (1.5-3.5 s) finishes while Redis is
    // down.
    pause(1_000).await;
    run.server.stop();
    run.notes
        .push(format!("redis-server down for {}s", sizes.outage.as_secs()));
    let back = tokio::time::Instant::now() + sizes.outage;
    while tokio::time::Instant::now() < back {
        pause(500).await;
        restart_exited(&mut crew, &mut run.notes);
    }
    run.server.restart()?;
    run.finish(crew, acked, undispatched).await
}
