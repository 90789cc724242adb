//! What every scenario shares: its own redis-server and directory, a crew,
//! a background producer, the drain, and the accounting at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crewq_core::producer::Retention;
use crewq_core::{AgentType, Keyspace, StreamId, Task};
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::accounting::{Snapshot, Tally, classify};
use crate::crew::{Crew, CrewConfig};
use crate::dispatch::{AGENT, Dispatcher};
use crate::gather::{self, Keys};
use crate::server::{RedisServer, find_program};

/// Settings shared by every scenario.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The runner's executable (workers are `<exe> worker`).
    pub exe: PathBuf,
    /// The workers' lease, in ms.
    pub lease_ms: u64,
    /// How long the crew may take, after the faults end, to settle every
    /// task before what is left counts as stuck.
    pub drain: Duration,
    /// Keep each scenario's directory (logs, AOF) instead of deleting it.
    pub keep: bool,
}

/// One scenario's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The figures.
    #[serde(flatten)]
    pub tally: Tally,
    /// Tasks the producer never got acknowledged (not counted as
    /// dispatched).
    pub undispatched: u64,
    /// Worker processes that exited without being told to (then started
    /// again, as a service manager would).
    pub worker_exits: u64,
    /// Whole seconds the scenario took.
    pub seconds: u64,
    /// Whether every figure of [`Tally::failures`] is 0.
    pub passed: bool,
    /// What happened along the way.
    pub notes: Vec<String>,
}

impl Report {
    /// The one-line summary.
    pub fn line(&self) -> String {
        let t = &self.tally;
        format!(
            "{:<16} dispatched={} completed={} dead_lettered={} duplicated={} lost={} stuck={} \
             successes_dead_lettered={} successes_taken_over={} dead_lettered_early={} poison={} \
             (dead_lettered={} completed={}) undispatched={} worker_exits={} {}s {}",
            self.scenario,
            t.dispatched,
            t.completed,
            t.dead_lettered,
            t.duplicated,
            t.lost,
            t.stuck,
            t.successes_dead_lettered,
            t.successes_taken_over,
            t.dead_lettered_early,
            t.poison,
            t.poison_dead_lettered,
            t.poison_completed,
            self.undispatched,
            self.worker_exits,
            self.seconds,
            if self.passed { "PASS" } else { "FAIL" },
        )
    }
}

/// A scenario in progress.
pub struct Run {
    /// The scenario's name (also its task-id prefix).
    pub name: String,
    /// Shared settings.
    pub settings: Settings,
    /// Its own server.
    pub server: RedisServer,
    /// Its key prefix.
    pub prefix: String,
    /// Its keys.
    pub keys: Keys,
    /// Ids of the poison entries written.
    pub poison: BTreeSet<StreamId>,
    /// What happened along the way.
    pub notes: Vec<String>,
    dir: tempfile::TempDir,
    started: Instant,
}

impl Run {
    /// A fresh directory and server (`aof`: `appendonly yes`,
    /// `appendfsync always`).
    ///
    /// # Errors
    ///
    /// When the server does not start.
    pub fn new(name: &str, settings: &Settings, aof: bool) -> Result<Run, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("crewq-chaos-{name}-"))
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let server = RedisServer::start(&dir.path().join("redis"), aof)?;
        let prefix = format!("chaos-{name}");
        let agent = AgentType::new(AGENT).map_err(|e| e.to_string())?;
        let keyspace = Keyspace::default()
            .with_prefix(prefix.as_str())
            .map_err(|e| e.to_string())?;
        let agent_keys = keyspace.keys(&agent);
        Ok(Run {
            name: name.to_owned(),
            settings: settings.clone(),
            server,
            prefix,
            keys: Keys {
                tasks: agent_keys.tasks,
                results: agent_keys.results,
                dlq: agent_keys.dlq,
                group: agent_keys.group,
            },
            poison: BTreeSet::new(),
            notes: Vec::new(),
            dir,
            started: Instant::now(),
        })
    }

    /// A crew of workers connecting to `url` (the server's or a proxy's).
    ///
    /// # Errors
    ///
    /// When its directories cannot be made.
    pub fn crew(&self, url: &str, concurrency: usize) -> Result<Crew, String> {
        Crew::new(CrewConfig {
            exe: self.settings.exe.clone(),
            url: url.to_owned(),
            prefix: self.prefix.clone(),
            lease_ms: self.settings.lease_ms,
            concurrency,
            dir: self.dir.path().join("crew"),
        })
        .map_err(|e| format!("crew dir: {e}"))
    }

    /// A producer straight to the server.
    ///
    /// # Errors
    ///
    /// When Redis cannot be reached.
    pub async fn dispatcher(&self, retention: Option<Retention>) -> Result<Dispatcher, String> {
        Dispatcher::connect(
            &self.server.url(),
            &self.prefix,
            retention,
            Duration::from_secs(30),
        )
        .await
    }

    /// Seconds since the scenario started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Appends an entry behind crewq's back with `redis-cli XADD`, and
    /// remembers it as poison.
    ///
    /// # Errors
    ///
    /// When redis-cli is missing or fails.
    pub fn xadd_poison(&mut self, fields: &[(&str, &str)]) -> Result<StreamId, String> {
        let cli = find_program("redis-cli").ok_or("redis-cli not found")?;
        let mut command = Command::new(cli);
        command
            .args(["-h", "127.0.0.1", "-p", &self.server.port().to_string()])
            .args(["XADD", &self.keys.tasks, "*"]);
        for (name, value) in fields {
            command.args([*name, *value]);
        }
        let out = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let id: StreamId = text
            .trim()
            .parse()
            .map_err(|_| format!("redis-cli XADD replied {text:?}"))?;
        self.poison.insert(id);
        Ok(id)
    }

    /// Lets the crew drain (restarting workers that exit), stops it
    /// gracefully, and accounts for every task from Redis.
    ///
    /// # Errors
    ///
    /// When Redis cannot be read at the end.
    pub async fn finish(
        mut self,
        mut crew: Crew,
        acked: BTreeMap<String, u32>,
        undispatched: usize,
    ) -> Result<Report, String> {
        let url = self.server.url();
        let drain_start = Instant::now();
        let deadline = drain_start + self.settings.drain;
        let mut calm = 0;
        let mut conn = None;
        while Instant::now() < deadline {
            restart_exited(&mut crew, &mut self.notes);
            if conn.is_none() {
                conn = gather::connect(&url).await.ok();
            }
            let quiet = match conn.as_mut() {
                Some(c) => gather::quiescent(c, &self.keys).await,
                None => Ok(false),
            };
            match quiet {
                Ok(true) => calm += 1,
                Ok(false) => calm = 0,
                Err(_) => {
                    calm = 0;
                    conn = None;
                }
            }
            if calm >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if calm < 2 {
            self.notes.push(format!(
                "not drained within {}s",
                self.settings.drain.as_secs()
            ));
        } else {
            // How long the crew needed after the faults: a recovery time.
            self.notes.push(format!(
                "drained {:.1}s after the faults ended",
                drain_start.elapsed().as_secs_f64()
            ));
        }
        let killed = crew.stop_all(Duration::from_secs(15));
        if killed > 0 {
            self.notes
                .push(format!("{killed} worker(s) ignored SIGTERM for 15s"));
        }
        let worker_exits = crew.exits().len() as u64;
        let mut snap = Snapshot {
            dispatched: acked,
            poison: self.poison.clone(),
            ..Snapshot::default()
        };
        let mut conn = gather::connect(&url)
            .await
            .map_err(|e| format!("accounting connection: {e}"))?;
        gather::read_redis(&mut conn, &self.keys, &mut snap)
            .await
            .map_err(|e| format!("reading Redis: {e}"))?;
        gather::read_run_logs(&crew.runs_dir(), &mut snap)
            .map_err(|e| format!("reading run logs: {e}"))?;
        let tally = classify(&snap);
        self.notes.extend(reasons(&snap));
        let passed = tally.failures().is_empty();
        if self.settings.keep {
            let kept = self.dir.keep();
            self.notes.push(format!("kept {}", kept.display()));
        }
        Ok(Report {
            scenario: self.name.clone(),
            tally,
            undispatched: undispatched as u64,
            worker_exits,
            seconds: self.started.elapsed().as_secs(),
            passed,
            notes: self.notes,
        })
    }
}

/// How many dead letters each `reason` has, for tasks and for poison.
fn reasons(snap: &Snapshot) -> Vec<String> {
    let mut tasks: BTreeMap<&str, u64> = BTreeMap::new();
    let mut poison: BTreeMap<&str, u64> = BTreeMap::new();
    for row in &snap.dead_letters {
        let of_poison = row.entry_id.is_some_and(|id| snap.poison.contains(&id));
        let counts = if of_poison { &mut poison } else { &mut tasks };
        *counts.entry(row.reason.as_str()).or_default() += 1;
    }
    let show = |what: &str, counts: &BTreeMap<&str, u64>| {
        let parts: Vec<String> = counts.iter().map(|(r, n)| format!("{r}={n}")).collect();
        format!("dead letters of {what} by reason: {}", parts.join(" "))
    };
    let mut notes = vec![show("tasks", &tasks)];
    if !snap.poison.is_empty() {
        notes.push(show("poison", &poison));
    }
    notes
}

/// Starts again every worker that exited by itself, noting it.
pub fn restart_exited(crew: &mut Crew, notes: &mut Vec<String>) {
    for consumer in crew.reap() {
        let code = crew
            .exits()
            .last()
            .and_then(|e| e.code)
            .map_or("a signal".to_owned(), |c| format!("code {c}"));
        notes.push(format!("worker {consumer} exited by itself ({code})"));
        if let Err(err) = crew.spawn(&consumer) {
            notes.push(format!("restarting {consumer}: {err}"));
        }
    }
}

/// Dispatches `tasks` in the background, `batch` at a time, `pace` apart;
/// yields the acknowledged ids and how many stayed unacknowledged.
pub fn dispatch_in_background(
    mut dispatcher: Dispatcher,
    tasks: Vec<Task<Value>>,
    batch: usize,
    pace: Duration,
    give_up: Duration,
) -> JoinHandle<(BTreeMap<String, u32>, usize)> {
    tokio::spawn(async move {
        let deadline = Instant::now() + give_up;
        let mut undispatched = 0;
        for chunk in tasks.chunks(batch.max(1)) {
            undispatched += dispatcher.dispatch(chunk, deadline).await;
            tokio::time::sleep(pace).await;
        }
        (dispatcher.acked, undispatched)
    })
}

/// The background producer's result.
///
/// # Errors
///
/// When the producer task panicked.
pub async fn dispatched(
    handle: JoinHandle<(BTreeMap<String, u32>, usize)>,
) -> Result<(BTreeMap<String, u32>, usize), String> {
    handle.await.map_err(|e| format!("producer task: {e}"))
}
