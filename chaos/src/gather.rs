//! Reading a [`Snapshot`] from Redis itself, and the handlers' run logs.
//!
//! Everything is read with plain commands (`XRANGE`, `XINFO GROUPS`,
//! `XPENDING`) on a connection of the runner's own, straight to the private
//! server: never through the proxy, never through crewq's code, so a crewq
//! bug cannot hide itself from the accounting.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crewq_core::StreamId;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamInfoGroupsReply, StreamRangeReply};
use redis::{AsyncConnectionConfig, Value};

use crate::accounting::{DeadLetterRow, ResultRow, Snapshot, TaskEntry};

/// Entries per `XRANGE`/`XPENDING` page.
const PAGE: usize = 5_000;

/// The keys of the one agent type the suite runs.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The task stream.
    pub tasks: String,
    /// The results stream.
    pub results: String,
    /// The dead-letter stream.
    pub dlq: String,
    /// The workers' group.
    pub group: String,
}

/// A connection to the private server for the accounting.
pub async fn connect(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Every entry of `stream`, page by page.
async fn range(
    conn: &mut MultiplexedConnection,
    stream: &str,
) -> redis::RedisResult<Vec<redis::streams::StreamId>> {
    let mut all = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let page: StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await?;
        let n = page.ids.len();
        if let Some(last) = page.ids.last() {
            start = format!("({}", last.id);
        }
        all.extend(page.ids);
        if n < PAGE {
            return Ok(all);
        }
    }
}

fn bytes(map: &std::collections::HashMap<String, Value>, field: &str) -> Option<Vec<u8>> {
    map.get(field)
        .and_then(|v| redis::from_redis_value_ref::<Vec<u8>>(v).ok())
}

fn json_str(data: &[u8], field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    value.get(field)?.as_str().map(str::to_owned)
}

fn parse_id(text: &str) -> Option<StreamId> {
    text.parse().ok()
}

/// The group's last-delivered id, `None` without the group or the stream.
pub async fn last_delivered(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
) -> redis::RedisResult<Option<StreamId>> {
    let groups: redis::RedisResult<StreamInfoGroupsReply> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&keys.tasks)
        .query_async(conn)
        .await;
    match groups {
        Ok(groups) => Ok(groups
            .groups
            .iter()
            .find(|g| g.name == keys.group)
            .and_then(|g| parse_id(&g.last_delivered_id))),
        // No such key.
        Err(err) if err.code() == Some("ERR") => Ok(None),
        Err(err) => Err(err),
    }
}

/// Every id in the group's pending list.
async fn pending(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
) -> redis::RedisResult<Vec<StreamId>> {
    let mut all = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let rows: redis::RedisResult<Vec<(String, String, u64, u64)>> = redis::cmd("XPENDING")
            .arg(&keys.tasks)
            .arg(&keys.group)
            .arg(&start)
            .arg("+")
            .arg(PAGE)
            .query_async(conn)
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(err) if matches!(err.code(), Some("NOGROUP")) => return Ok(all),
            Err(err) => return Err(err),
        };
        let n = rows.len();
        if let Some((last, ..)) = rows.last() {
            start = format!("({last}");
        }
        all.extend(rows.iter().filter_map(|(id, ..)| parse_id(id)));
        if n < PAGE {
            return Ok(all);
        }
    }
}

/// Whether the group has nothing pending and nothing unread: the crew has
/// nothing left to do (a task waiting for its retry is pending or unread).
pub async fn quiescent(conn: &mut MultiplexedConnection, keys: &Keys) -> redis::RedisResult<bool> {
    let Some(last) = last_delivered(conn, keys).await? else {
        return Ok(false);
    };
    let summary: Value = redis::cmd("XPENDING")
        .arg(&keys.tasks)
        .arg(&keys.group)
        .query_async(conn)
        .await?;
    let pending = match summary {
        Value::Array(items) => items
            .first()
            .and_then(|v| redis::from_redis_value_ref::<u64>(v).ok())
            .unwrap_or(1),
        _ => 1,
    };
    let unread: StreamRangeReply = redis::cmd("XRANGE")
        .arg(&keys.tasks)
        .arg(format!("({last}"))
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(pending == 0 && unread.ids.is_empty())
}

/// Reads what Redis holds into `snap` (which already names the dispatched
/// tasks and the poison entries).
pub async fn read_redis(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    snap: &mut Snapshot,
) -> redis::RedisResult<()> {
    snap.entries = range(conn, &keys.tasks)
        .await?
        .into_iter()
        .filter_map(|e| {
            let id = parse_id(&e.id)?;
            let task_id = bytes(&e.map, "data").and_then(|d| json_str(&d, "task_id"));
            Some(TaskEntry { id, task_id })
        })
        .collect();
    snap.last_delivered = last_delivered(conn, keys).await?;
    snap.pending = pending(conn, keys).await?.into_iter().collect();
    snap.results = range(conn, &keys.results)
        .await?
        .into_iter()
        .filter_map(|e| {
            let data = bytes(&e.map, "data")?;
            Some(ResultRow {
                task_id: json_str(&data, "task_id")?,
                success: json_str(&data, "status").as_deref() == Some("success"),
            })
        })
        .collect();
    snap.dead_letters = range(conn, &keys.dlq)
        .await?
        .into_iter()
        .map(|e| DeadLetterRow {
            task_id: bytes(&e.map, "task").and_then(|d| json_str(&d, "task_id")),
            entry_id: bytes(&e.map, "entry_id")
                .and_then(|d| String::from_utf8(d).ok())
                .and_then(|s| parse_id(&s)),
            reason: bytes(&e.map, "reason")
                .and_then(|d| String::from_utf8(d).ok())
                .unwrap_or_default(),
        })
        .collect();
    Ok(())
}

/// Reads the handlers' run logs in `dir` (lines `S <task_id>` for a run
/// that succeeded, `F <task_id>` for one that failed) into `snap`.
pub fn read_run_logs(dir: &Path, snap: &mut Snapshot) -> std::io::Result<()> {
    let mut successes: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for file in std::fs::read_dir(dir)? {
        let text = std::fs::read_to_string(file?.path())?;
        // Only whole lines: a worker killed mid-write leaves at most a torn
        // last line without its newline.
        for line in text.split_inclusive('\n') {
            let Some(line) = line.strip_suffix('\n') else {
                continue;
            };
            if let Some(task) = line.strip_prefix("S ") {
                *successes.entry(task.to_owned()).or_default() += 1;
            } else if let Some(task) = line.strip_prefix("F ") {
                *failures.entry(task.to_owned()).or_default() += 1;
            }
        }
    }
    snap.handler_successes = successes;
    snap.handler_failures = failures;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::classify;
    use crate::server::RedisServer;

    async fn cmd(conn: &mut MultiplexedConnection, args: &[&str]) -> Value {
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.query_async(conn).await.expect("command")
    }

    fn task(id: &str) -> String {
        format!(r#"{{"task_id":"{id}","agent_type":"work","action":"a","payload":{{}}}}"#)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_snapshot_reads_entries_pending_unread_results_and_dead_letters() {
        let dir = tempfile::tempdir().expect("dir");
        let server = RedisServer::start(dir.path(), false).expect("redis-server");
        let mut conn = connect(&server.url()).await.expect("connect");
        let keys = Keys {
            tasks: "p:tasks:work".into(),
            results: "p:results".into(),
            dlq: "p:dlq:work".into(),
            group: "work-workers".into(),
        };
        for id in ["1-0", "2-0", "3-0"] {
            let t = format!("t{}", &id[..1]);
            cmd(&mut conn, &["XADD", &keys.tasks, id, "data", &task(&t)]).await;
        }
        cmd(
            &mut conn,
            &["XGROUP", "CREATE", &keys.tasks, &keys.group, "0"],
        )
        .await;
        let g = keys.group.as_str();
        cmd(
            &mut conn,
            &[
                "XREADGROUP",
                "GROUP",
                g,
                "c",
                "COUNT",
                "2",
                "STREAMS",
                &keys.tasks,
                ">",
            ],
        )
        .await;
        cmd(&mut conn, &["XACK", &keys.tasks, g, "1-0"]).await;
        let ok = r#"{"task_id":"t1","agent_type":"work","status":"success"}"#;
        cmd(&mut conn, &["XADD", &keys.results, "*", "data", ok]).await;
        let letter = [
            "XADD",
            &keys.dlq,
            "*",
            "task",
            &task("t2"),
            "error",
            "e",
            "retries",
            "4",
            "reason",
            "max_retries",
            "entry_id",
            "2-0",
        ];
        cmd(&mut conn, &letter).await;

        let mut snap = Snapshot {
            dispatched: [("t1", 3), ("t2", 3), ("t3", 3)]
                .map(|(t, n)| (t.to_owned(), n))
                .into(),
            ..Snapshot::default()
        };
        read_redis(&mut conn, &keys, &mut snap).await.expect("read");
        assert_eq!(snap.entries.len(), 3);
        assert_eq!(snap.last_delivered, Some(StreamId::new(2, 0)));
        assert_eq!(snap.pending, [StreamId::new(2, 0)].into());
        assert_eq!(snap.results.len(), 1);
        assert_eq!(snap.dead_letters[0].entry_id, Some(StreamId::new(2, 0)));
        assert_eq!(snap.dead_letters[0].task_id.as_deref(), Some("t2"));
        assert!(!quiescent(&mut conn, &keys).await.expect("quiescent"));

        snap.handler_failures.insert("t2".into(), 4);
        let tally = classify(&snap);
        assert_eq!((tally.completed, tally.dead_lettered), (1, 1));
        // t2 is still pending, t3 was never read.
        assert_eq!((tally.stuck, tally.lost), (2, 0));
    }
}
