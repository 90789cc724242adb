//! `xadd_once`: appends guarded by a marker key, as one Lua script each,
//! pipelined.
//!
//! The check of the marker, the `XADD` and the setting of the marker must not
//! be separated by another client's append, so each entry is one script. A
//! batch goes as one pipeline of `EVAL`s: redis-rs's `Script` cannot join a
//! pipeline, and Redis caches the compiled script by its hash either way.

use crewq_core::{AddedOnce, OnceEntry, Result, validate_once_entry};
use redis::{Cmd, Value, cmd};

use crate::RedisBroker;
use crate::config::ceil_millis;
use crate::error::{Op, from_server_error};
use crate::{commands, parse};

/// `KEYS[1]` the stream, `KEYS[2]` the marker; `ARGV[1]` the window in ms,
/// `ARGV[2..]` the `XADD` arguments after the key. Replies `{1, id}` when
/// appended, `{0, id}` with the recorded id when the marker was set.
const XADD_ONCE_LUA: &str = r"
local seen = redis.call('GET', KEYS[2])
if seen then return {0, seen} end
local id = redis.call('XADD', KEYS[1], unpack(ARGV, 2))
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
return {1, id}
";

/// Marks a reply as "appended now".
const APPENDED: i64 = 1;

fn xadd_once_cmd(once: &OnceEntry) -> Cmd {
    let mut c = cmd("EVAL");
    c.arg(XADD_ONCE_LUA)
        .arg(2)
        .arg(&once.entry.stream)
        .arg(&once.marker)
        .arg(ceil_millis(once.window))
        .arg(commands::xadd_args(&once.entry));
    c
}

impl RedisBroker {
    /// [`Broker::xadd_once`](crewq_core::Broker::xadd_once): one script per
    /// valid entry, all in one pipeline.
    pub(crate) async fn add_once_pipelined(
        &self,
        entries: Vec<OnceEntry>,
    ) -> Result<Vec<Result<AddedOnce>>> {
        let replies = self
            .pipelined_per_entry(&entries, once_op, validate_once_entry, xadd_once_cmd)
            .await?;
        Ok(entries
            .iter()
            .zip(replies)
            .map(|(once, reply)| reply.and_then(|reply| added_once(reply, once_op(once))))
            .collect())
    }
}

/// What a failed append-once is reported as.
fn once_op(once: &OnceEntry) -> Op<'_> {
    Op::new("xadd_once", &once.entry.stream)
}

/// Reads one script reply: `{1, id}`, `{0, id}` or an error.
fn added_once(reply: Value, op: Op<'_>) -> Result<AddedOnce> {
    if let Value::ServerError(err) = reply {
        return Err(op.error(from_server_error(err)));
    }
    let parts = parse::array_or_nil(reply).map_err(|shape| op.protocol(shape))?;
    let [flag, id] = <[Value; 2]>::try_from(parts)
        .map_err(|parts| op.protocol(format_args!("expected [flag, id], got {parts:?}")))?;
    let id = parse::id(id).map_err(|shape| op.protocol(shape))?;
    match flag {
        Value::Int(APPENDED) => Ok(AddedOnce::Added(id)),
        Value::Int(_) => Ok(AddedOnce::Duplicate(id)),
        other => Err(op.protocol(format_args!("expected a flag, got {other:?}"))),
    }
}
