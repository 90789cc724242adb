//! What the operator commands' tests share: running `crewq` against a
//! private Redis under a prefix of the test's own, and setting streams up
//! through the library.

#![allow(dead_code, reason = "each test file uses part of it")]

pub mod interpose;
pub mod prometheus;
pub mod served;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crewq_core::{
    AgentType, Broker, DeadLetter, DeadLetterReason, Fields, GroupStart, Keyspace, NewEntry,
    ReadGroup, StreamId,
};
use crewq_tests::redis_server::TestRedis;
use serde_json::Value;

/// A private Redis and a prefix of this test's own.
pub struct Crew {
    pub server: TestRedis,
    pub prefix: String,
}

impl Crew {
    pub fn start() -> Crew {
        let server = TestRedis::start();
        let prefix = server.unique_prefix();
        Crew { server, prefix }
    }

    /// The keys as the commands name them with `--key-prefix`.
    pub fn keyspace(&self) -> Keyspace {
        Keyspace::default()
            .with_prefix(&self.prefix)
            .expect("valid prefix")
    }

    /// `crewq <command> --redis URL --key-prefix P <args>`.
    pub fn run(&self, command: &[&str], args: &[&str]) -> Output {
        self.run_with_stdin(command, args, None)
    }

    pub fn run_with_stdin(&self, command: &[&str], args: &[&str], stdin: Option<&str>) -> Output {
        self.run_at(self.server.url(), command, args, stdin)
    }

    /// As [`Crew::run_with_stdin`], on `--redis url` (a proxy in front of
    /// the server).
    pub fn run_at(
        &self,
        url: &str,
        command: &[&str],
        args: &[&str],
        stdin: Option<&str>,
    ) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crewq"))
            .args(command)
            .args(["--redis", url, "--key-prefix", &self.prefix])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run crewq");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(input);
        child.wait_with_output().expect("crewq ran")
    }

    /// As [`Crew::run`], which must succeed; its stdout as JSON.
    pub fn json(&self, command: &[&str], args: &[&str]) -> Value {
        self.json_at(self.server.url(), command, args)
    }

    /// As [`Crew::json`], on `--redis url`.
    pub fn json_at(&self, url: &str, command: &[&str], args: &[&str]) -> Value {
        let output = self.run_at(url, command, &[args, &["--json"]].concat(), None);
        succeeded(&output);
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
    }

    /// As [`Crew::run`], which must succeed; its stdout as text.
    pub fn text(&self, command: &[&str], args: &[&str]) -> String {
        let output = self.run(command, args);
        succeeded(&output);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Appends `count` tasks of `agent` and creates its group.
    pub async fn tasks(&self, agent: &str, count: usize) -> Vec<StreamId> {
        let broker = self.server.broker().await;
        let agent = AgentType::new(agent).expect("agent type");
        let keyspace = self.keyspace();
        let (stream, group) = (keyspace.tasks(&agent), keyspace.group(&agent));
        broker
            .group_create(&stream, &group, GroupStart::BEGINNING, true)
            .await
            .expect("group");
        let mut ids = Vec::new();
        for n in 0..count {
            let task = format!(
                r#"{{"task_id":"t-{n}","agent_type":"{agent}","action":"analyze","payload":{{}},"priority":0,"max_retries":3,"created_at":"2026-01-01T00:00:00","trace_id":"wf-1"}}"#
            );
            let entry = NewEntry::new(&stream, Fields::new().with("data", task));
            ids.push(broker.xadd(entry).await.expect("xadd"));
        }
        ids
    }

    /// `consumer` reads `count` of `agent`'s tasks (and holds them).
    pub async fn read(&self, agent: &str, consumer: &str, count: usize) {
        let broker = self.server.broker().await;
        let agent = AgentType::new(agent).expect("agent type");
        let keyspace = self.keyspace();
        let (stream, group) = (keyspace.tasks(&agent), keyspace.group(&agent));
        broker
            .read_group(&ReadGroup::new(&stream, &group, consumer).count(count))
            .await
            .expect("read");
    }

    /// A dead letter of `agent` with `task_id`, `trace` and `reason`; a
    /// poison reason gets a task that is JSON but not a valid task.
    pub async fn dead_letter(
        &self,
        agent: &str,
        task_id: &str,
        trace: &str,
        reason: DeadLetterReason,
    ) -> StreamId {
        let broker = self.server.broker().await;
        let agent_type = AgentType::new(agent).expect("agent type");
        let task = if matches!(reason, DeadLetterReason::Poison(_)) {
            format!(r#"{{"task_id":"{task_id}","trace_id":"{trace}"}}"#)
        } else {
            format!(
                r#"{{"task_id":"{task_id}","agent_type":"{agent}","action":"analyze","payload":{{}},"priority":0,"max_retries":3,"created_at":"2026-01-01T00:00:00","trace_id":"{trace}"}}"#
            )
        };
        let letter = DeadLetter::new(task.into_bytes(), "boom", 3).reason(reason);
        broker
            .xadd(NewEntry::new(
                self.keyspace().dlq(&agent_type),
                letter.to_fields(),
            ))
            .await
            .expect("xadd")
    }

    pub async fn xlen(&self, key: &str) -> u64 {
        self.server.broker().await.xlen(key).await.expect("xlen")
    }
}

/// Runs crewq with `args` after closing the read end of its stdout, as a
/// reader that stopped (`| head -2`) leaves it: every write finds the pipe
/// broken.
pub fn into_a_closed_pipe(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crewq"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run crewq");
    drop(child.stdout.take());
    child.wait_with_output().expect("crewq ran")
}

pub fn succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "crewq failed ({:?}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn agent(name: &str) -> AgentType {
    AgentType::new(name).expect("agent type")
}
