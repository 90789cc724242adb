//! `xadd_once`: appends guarded by a marker key, many to one script call.
//!
//! The check of the marker, the `XADD` and the setting of the marker must not
//! be separated by another client's append, so they run in a script. One
//! script call takes a run of consecutive entries to the same stream (up to
//! [`CHUNK`]), and the calls of a batch go in one pipeline: a script's start
//! costs the server more than the three commands it runs per entry, so it is
//! paid once per chunk. Every key is in `KEYS` (on Redis Cluster a stream and
//! its markers share a slot: crewq's cluster keyspace hash-tags both).

use crewq_core::{AddedOnce, OnceEntry, Result, validate_once_entry};
use redis::{Cmd, Value, cmd};

use crate::RedisBroker;
use crate::config::ceil_millis;
use crate::error::{Op, from_server_error};
use crate::{commands, parse};

/// Entries per script call: enough to pay the script's start once for many,
/// few enough that one call does not hold the server up for long.
const CHUNK: usize = 128;

/// `KEYS[1]` the stream, `KEYS[2..]` one marker per entry; `ARGV[1]` `1` to
/// re-write the marker of a duplicate (see [`xadd_once_cmd`]), then per
/// entry: the window in ms, the number of `XADD` arguments and those
/// arguments (after the key). Replies per entry `{1, id}` when appended,
/// `{0, id}` with the recorded id when the marker was set, or the error of
/// its own command (each entry succeeds or fails alone, as separate
/// commands would).
const XADD_ONCE_LUA: &str = r"
local out, touch, at = {}, ARGV[1] == '1', 2
local function failed(reply) return type(reply) == 'table' and reply.err end
for i = 2, #KEYS do
  local window, argc = ARGV[at], tonumber(ARGV[at + 1])
  local seen = redis.pcall('GET', KEYS[i])
  if failed(seen) then
    out[#out + 1] = seen
  elseif seen then
    if touch then redis.pcall('SET', KEYS[i], seen, 'KEEPTTL') end
    out[#out + 1] = {0, seen}
  else
    local id = redis.pcall('XADD', KEYS[1], unpack(ARGV, at + 2, at + 1 + argc))
    if failed(id) then
      out[#out + 1] = id
    else
      local set = redis.pcall('SET', KEYS[i], id, 'PX', window)
      out[#out + 1] = failed(set) and set or {1, id}
    end
  end
  at = at + 2 + argc
end
return out
";

/// Marks a reply as "appended now".
const APPENDED: i64 = 1;

/// One script call for `chunk`'s entries (all to the same stream).
///
/// With `touch` (when appends wait for replicas), a duplicate's marker is
/// written again, unchanged: `WAIT` counts replicas up to the connection's
/// last write, and a retry that appends nothing would otherwise have no
/// write of its own, so its `WAIT` could pass on a new connection while the
/// first try's append is still not replicated. The re-written marker comes
/// after that append in the replication stream.
fn xadd_once_cmd(entries: &[OnceEntry], chunk: &[usize], touch: bool) -> Cmd {
    let mut c = cmd("EVAL");
    c.arg(XADD_ONCE_LUA).arg(1 + chunk.len());
    c.arg(&entries[chunk[0]].entry.stream);
    for &index in chunk {
        c.arg(&entries[index].marker);
    }
    c.arg(if touch { "1" } else { "0" });
    for &index in chunk {
        let once = &entries[index];
        c.arg(ceil_millis(once.window))
            .arg(commands::xadd_arg_count(&once.entry));
        commands::push_xadd_args(&mut c, &once.entry);
    }
    c
}

impl RedisBroker {
    /// [`Broker::xadd_once`](crewq_core::Broker::xadd_once): one script per
    /// run of valid entries to the same stream, all in one pipeline.
    pub(crate) async fn add_once_pipelined(
        &self,
        entries: Vec<OnceEntry>,
    ) -> Result<Vec<Result<AddedOnce>>> {
        let mut results: Vec<Option<Result<AddedOnce>>> = Vec::with_capacity(entries.len());
        let mut chunks: Vec<Vec<usize>> = Vec::new();
        for (index, once) in entries.iter().enumerate() {
            if let Err(err) = validate_once_entry(once) {
                results.push(Some(Err(err)));
                continue;
            }
            results.push(None);
            match chunks.last_mut() {
                Some(chunk)
                    if chunk.len() < CHUNK
                        && entries[chunk[0]].entry.stream == once.entry.stream =>
                {
                    chunk.push(index);
                }
                _ => chunks.push(vec![index]),
            }
        }
        if let Some(first) = chunks.first() {
            let op = once_op(&entries[first[0]]);
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            let touch = self.waits_for_replicas();
            for chunk in &chunks {
                pipe.add_command(xadd_once_cmd(&entries, chunk, touch));
            }
            let replies = self.query_appends(&pipe, op).await?;
            if replies.len() != chunks.len() {
                return Err(op.protocol(format_args!(
                    "{} replies to {} scripts",
                    replies.len(),
                    chunks.len()
                )));
            }
            for (chunk, reply) in chunks.iter().zip(replies) {
                let op = once_op(&entries[chunk[0]]);
                let replies = match reply {
                    // The script did not run (out of memory, busy ...):
                    // nothing of this chunk was applied.
                    Value::ServerError(err) => vec![Value::ServerError(err); chunk.len()],
                    other => parse::array_or_nil(other).map_err(|shape| op.protocol(shape))?,
                };
                if replies.len() != chunk.len() {
                    return Err(op.protocol(format_args!(
                        "{} replies to {} entries",
                        replies.len(),
                        chunk.len()
                    )));
                }
                for (&index, reply) in chunk.iter().zip(replies) {
                    results[index] = Some(added_once(reply, once_op(&entries[index])));
                }
            }
        }
        results
            .into_iter()
            .map(|result| {
                result.ok_or_else(|| {
                    crewq_core::Error::Protocol("an append-once got no reply".to_owned())
                })
            })
            .collect()
    }
}

/// What a failed append-once is reported as.
fn once_op(once: &OnceEntry) -> Op<'_> {
    Op::new("xadd_once", &once.entry.stream)
}

/// Reads one script reply: `{1, id}`, `{0, id}` or an error.
pub(crate) fn added_once(reply: Value, op: Op<'_>) -> Result<AddedOnce> {
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
