//! The ownership-guarded steps, `settle` and `renew`, as Lua scripts.
//!
//! `MULTI` cannot make a write depend on a read, and "acknowledge only if
//! this consumer still owns the entry" is exactly that. A script runs
//! atomically on the server, so no other consumer's claim can fall between
//! the ownership check and the writes. redis-rs sends each script by its
//! SHA1 (`EVALSHA`) and loads it once on `NOSCRIPT`.
//!
//! A settle's items succeed or fail alone: each item's appends run under
//! `redis.pcall`, and a large settle goes as several script calls.
//!
//! Every key a script touches is passed in `KEYS`, so on Redis Cluster the
//! task stream and the streams written to must share a hash slot (crewq's
//! cluster keyspace uses hash tags for that).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::LazyLock;

use crewq_core::{Result, Settle, Settled, StreamId, validate_settle};
use redis::{Script, Value};

use crate::RedisBroker;
use crate::error::{Op, from_server_error};
use crate::{commands, parse};

/// `KEYS[1]` the stream, `KEYS[2..]` the streams written to.
/// `ARGV`: group, consumer, the smallest and largest item id and a row
/// limit for the ownership read, then per item its id, number of appends
/// and number of delays, per append the index of its key, its argument count
/// and the `XADD` arguments after the key, and per delay the index of its
/// set, its delay in ms and its member (added with `ZADD`, scored by the
/// server's `TIME` plus the delay). Replies per item: the appended ids, false
/// (nil) when the consumer does not own the item, or the error of its
/// failed append.
///
/// Ownership is read once for the batch: the consumer's pending entries
/// between the smallest and the largest id. When that read was cut short by
/// its limit (the consumer holds many other entries in between), the items
/// it did not list are looked up one by one, so the answer is exact either
/// way.
///
/// Each item succeeds or fails alone: its appends run under `redis.pcall`,
/// and the first that fails (a key of another type, `OOM`, an exhausted
/// stream) stops that item, which is then not acknowledged. Every outcome
/// is written before any acknowledgement, and the items written whole are
/// acknowledged together by one `XACK` at the end: Redis does not roll a
/// script back, so an entry is never acknowledged without its outcome. No
/// other client runs between the ownership read and the `XACK`: the script
/// is atomic.
const SETTLE_LUA: &str = r"
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local limit = tonumber(ARGV[5])
-- Also fails with NOGROUP for a missing key or group.
local rows = redis.call('XPENDING', stream, group, ARGV[3], ARGV[4], limit, consumer)
local listed, complete = {}, #rows < limit
for _, row in ipairs(rows) do listed[row[1]] = true end
local out, owned, settled, at = {}, {}, {}, 6
-- Due times are the server's: TIME, in ms, the clock promote compares with;
-- read at the first delay (most settles have none).
local now
while at <= #ARGV do
  local id, appends, delays = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  at = at + 3
  -- An id settled earlier in this call is no longer owned (its ack waits
  -- for the end of the script, but its outcome is written): as if acked.
  local mine = not settled[id] and (listed[id]
    or (not complete and #redis.call('XPENDING', stream, group, id, id, 1, consumer) > 0))
  local ids, failure = {}, nil
  for _ = 1, appends do
    local key, argc = KEYS[tonumber(ARGV[at])], tonumber(ARGV[at + 1])
    if mine and not failure then
      local added = redis.pcall('XADD', key, unpack(ARGV, at + 2, at + 1 + argc))
      if type(added) == 'table' and added.err then
        failure = added
      else
        ids[#ids + 1] = added
      end
    end
    at = at + 2 + argc
  end
  for _ = 1, delays do
    if mine and not failure then
      if not now then
        local time = redis.call('TIME')
        now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
      end
      local due = string.format('%.0f', now + tonumber(ARGV[at + 1]))
      local added = redis.pcall('ZADD', KEYS[tonumber(ARGV[at])], due, ARGV[at + 2])
      if type(added) == 'table' and added.err then failure = added end
    end
    at = at + 3
  end
  if not mine then
    out[#out + 1] = false
  elseif failure then
    out[#out + 1] = failure
  else
    settled[id] = true
    owned[#owned + 1] = id
    out[#out + 1] = ids
  end
end
if #owned > 0 then
  redis.call('XACK', stream, group, unpack(owned))
end
return out
";

/// `KEYS[1]` the stream; `ARGV`: group, consumer, then the ids. Replies with
/// the ids renewed.
const RENEW_LUA: &str = r"
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
redis.call('XPENDING', stream, group) -- NOGROUP for a missing key or group
local renewed = {}
for i = 3, #ARGV do
  -- An entry deleted from the stream is left pending, unrenewed: XCLAIM
  -- would drop it from the pending list, and its attempt's outcome with it.
  if #redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1, consumer) > 0
    and #redis.call('XRANGE', stream, ARGV[i], ARGV[i], 'COUNT', 1) > 0 then
    local claimed = redis.call('XCLAIM', stream, group, consumer, 0, ARGV[i], 'JUSTID')
    if claimed[1] then renewed[#renewed + 1] = claimed[1] end
  end
end
return renewed
";

/// Rows the batch's ownership read may return beyond twice the items.
const OWNERSHIP_SLACK: usize = 16;

/// Items per settle script call: a script holds the whole server while it
/// runs, so a large batch goes as several calls (in one pipeline), each
/// atomic for its items.
const SETTLE_CHUNK: usize = 128;

/// The error code of a script missing from the server's cache.
const NOSCRIPT: &str = "NOSCRIPT";

static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE_LUA));

static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW_LUA));

impl RedisBroker {
    /// [`Broker::settle`](crewq_core::Broker::settle): one script call per
    /// chunk of at most [`SETTLE_CHUNK`] items, all in one pipeline.
    pub(crate) async fn settle_in_script(&self, settle: Settle) -> Result<Vec<Settled>> {
        validate_settle(&settle)?;
        let op = Op::group("settle", &settle.stream, &settle.group);
        let mut chunks: Vec<Range<usize>> = (0..settle.items.len())
            .step_by(SETTLE_CHUNK)
            .map(|start| start..(start + SETTLE_CHUNK).min(settle.items.len()))
            .collect();
        if chunks.is_empty() {
            // Still one call, so a missing group fails as it would.
            chunks.push(Range { start: 0, end: 0 });
        }
        self.settle_chunks(&settle, &chunks, op).await
    }

    /// Sends one script call per chunk in a pipeline, re-sending those that
    /// found the script missing, and reads the outcomes in item order.
    ///
    /// A chunk whose call failed as a whole applied nothing: when every
    /// chunk failed the call fails with the first error (`NOGROUP` ...);
    /// otherwise that chunk's items are [`Settled::Failed`] while the
    /// others keep what was applied.
    async fn settle_chunks(
        &self,
        settle: &Settle,
        chunks: &[Range<usize>],
        op: Op<'_>,
    ) -> Result<Vec<Settled>> {
        let send = |which: &[usize]| {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &chunk in which {
                pipe.add_command(settle_cmd(settle, chunks[chunk].clone()));
            }
            pipe
        };
        let all: Vec<usize> = (0..chunks.len()).collect();
        let mut replies = self.query_pipe(&send(&all), op).await?;
        let missing: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&chunk| matches!(replies.get(chunk), Some(Value::ServerError(err)) if err.code() == NOSCRIPT))
            .collect();
        if !missing.is_empty() {
            // A restart or `SCRIPT FLUSH` emptied the script cache; the
            // chunks that found it missing ran nothing.
            tracing::debug!(url = %self.redacted_url(), "settle script not loaded; loading it");
            self.load_script(SETTLE_LUA, op).await?;
            let again = self.query_pipe(&send(&missing), op).await?;
            for (chunk, reply) in missing.into_iter().zip(again) {
                if let Some(slot) = replies.get_mut(chunk) {
                    *slot = reply;
                }
            }
        }
        if replies.len() != chunks.len() {
            return Err(op.protocol(format_args!(
                "{} replies to {} script calls",
                replies.len(),
                chunks.len()
            )));
        }
        if let Some(Value::ServerError(err)) = replies.first()
            && replies.iter().all(|r| matches!(r, Value::ServerError(_)))
        {
            return Err(op.error(from_server_error(err.clone())));
        }
        let mut outcomes = Vec::with_capacity(settle.items.len());
        for (chunk, reply) in chunks.iter().zip(replies) {
            match reply {
                Value::ServerError(err) => {
                    let why = server_text(&err);
                    tracing::warn!(error = %why, "a settle script call failed; its items stay pending");
                    outcomes.extend(chunk.clone().map(|_| Settled::Failed(why.clone())));
                }
                reply => {
                    let items = parse::array_or_nil(reply).map_err(|shape| op.protocol(shape))?;
                    if items.len() != chunk.len() {
                        return Err(op.protocol(format_args!(
                            "{} outcomes for {} items",
                            items.len(),
                            chunk.len()
                        )));
                    }
                    for item in items {
                        outcomes.push(settled(item).map_err(|shape| op.protocol(shape))?);
                    }
                }
            }
        }
        Ok(outcomes)
    }

    /// Loads a script's `source` into the server's script cache.
    async fn load_script(&self, source: &str, op: Op<'_>) -> Result<()> {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(source);
        self.send(&cmd, op)
            .await?
            .map(drop)
            .map_err(|err| op.error(err))
    }

    /// Sends an `EVALSHA`; on `NOSCRIPT` (a restart or `SCRIPT FLUSH`
    /// emptied the script cache, and nothing ran) loads the script and sends
    /// it once more, so callers never see the cache was empty.
    pub(crate) async fn eval_loaded(
        &self,
        cmd: &redis::Cmd,
        source: &str,
        op: Op<'_>,
    ) -> Result<Value> {
        match self.send(cmd, op).await? {
            Err(err) if err.code() == Some(NOSCRIPT) => {
                tracing::debug!(url = %self.redacted_url(), "script not loaded; loading it");
                self.load_script(source, op).await?;
                self.send(cmd, op).await?.map_err(|err| op.error(err))
            }
            reply => reply.map_err(|err| op.error(err)),
        }
    }

    /// Like [`eval_loaded`](Self::eval_loaded), for a script whose reply
    /// holds errors of its own (a step that failed alone): sent as a
    /// pipeline that keeps them in place, where a plain command would turn
    /// the whole reply into its first error. An error reply of the script
    /// itself is the call's error.
    pub(crate) async fn eval_keeping_errors(
        &self,
        cmd: &redis::Cmd,
        source: &str,
        op: Op<'_>,
    ) -> Result<Value> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors().add_command(cmd.clone());
        let mut reply = self.query_pipe(&pipe, op).await?.pop();
        if matches!(&reply, Some(Value::ServerError(err)) if err.code() == NOSCRIPT) {
            tracing::debug!(url = %self.redacted_url(), "script not loaded; loading it");
            self.load_script(source, op).await?;
            reply = self.query_pipe(&pipe, op).await?.pop();
        }
        match reply {
            Some(Value::ServerError(err)) => Err(op.error(from_server_error(err))),
            Some(value) => Ok(value),
            None => Err(op.protocol("no reply to a script call")),
        }
    }

    /// [`Broker::renew`](crewq_core::Broker::renew) in one script call.
    pub(crate) async fn renew_in_script(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[StreamId],
    ) -> Result<Vec<StreamId>> {
        let op = Op::group("renew", stream, group);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(RENEW.get_hash())
            .arg(1)
            .arg(stream)
            .arg(group)
            .arg(consumer);
        let mut id = IdText::new();
        for &entry in ids {
            cmd.arg(id.format(entry));
        }
        let reply = self.eval_loaded(&cmd, RENEW_LUA, op).await?;
        parse::ids(reply).map_err(|shape| op.protocol(shape))
    }
}

/// The `EVALSHA` of the settle script for `settle`'s items in `chunk`.
///
/// Built here rather than by redis-rs's `ScriptInvocation`, which copies
/// every argument once more: a batch carries every result's JSON.
fn settle_cmd(settle: &Settle, chunk: Range<usize>) -> redis::Cmd {
    let items = settle.items.get(chunk).unwrap_or_default();
    // Each stream written to is passed once, in KEYS, by its index.
    let mut keys: Vec<&str> = vec![&settle.stream];
    let mut key_index: BTreeMap<&str, usize> = BTreeMap::new();
    let written = items.iter().flat_map(|item| {
        let appends = item.appends.iter().map(|entry| entry.stream.as_str());
        appends.chain(item.delays.iter().map(|delay| delay.set.as_str()))
    });
    for key in written {
        if let std::collections::btree_map::Entry::Vacant(slot) = key_index.entry(key) {
            keys.push(key);
            slot.insert(keys.len());
        }
    }
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(SETTLE.get_hash()).arg(keys.len()).arg(&keys[..]);
    cmd.arg(&settle.group).arg(&settle.consumer);
    let mut id = IdText::new();
    // The ownership read's range and limit: room for every item and as
    // many of the consumer's other entries in between.
    let first = items.iter().map(|item| item.id).min();
    let last = items.iter().map(|item| item.id).max();
    cmd.arg(id.format(first.unwrap_or(StreamId::ZERO)));
    cmd.arg(id.format(last.unwrap_or(StreamId::ZERO)));
    cmd.arg(2 * items.len() + OWNERSHIP_SLACK);
    for item in items {
        cmd.arg(id.format(item.id))
            .arg(item.appends.len())
            .arg(item.delays.len());
        for entry in &item.appends {
            cmd.arg(key_index.get(entry.stream.as_str()).copied().unwrap_or(0))
                .arg(commands::xadd_arg_count(entry));
            commands::push_xadd_args(&mut cmd, entry);
        }
        for delay in &item.delays {
            cmd.arg(key_index.get(delay.set.as_str()).copied().unwrap_or(0))
                .arg(delay.after_ms())
                .arg(&delay.member()[..]);
        }
    }
    cmd
}

/// An error reply as Redis wrote it: `CODE detail`.
fn server_text(err: &redis::ServerError) -> String {
    match err.details() {
        Some(detail) => format!("{} {detail}", err.code()),
        None => err.code().to_owned(),
    }
}

/// A stream id as text, formatted without a heap allocation per id.
struct IdText {
    buf: [u8; 41],
    len: usize,
}

impl IdText {
    fn new() -> Self {
        IdText {
            buf: [0; 41],
            len: 0,
        }
    }

    /// `id` as `<ms>-<seq>` bytes, valid until the next call.
    fn format(&mut self, id: StreamId) -> &[u8] {
        use std::io::Write as _;
        let mut cursor = std::io::Cursor::new(&mut self.buf[..]);
        // Two u64s and a dash fit in 41 bytes: the write cannot fail.
        let _ = write!(cursor, "{}-{}", id.ms, id.seq);
        self.len = usize::try_from(cursor.position()).unwrap_or(0);
        &self.buf[..self.len]
    }
}

/// One item's outcome: nil when not owned, the error of its failed
/// append, else the appended ids.
fn settled(value: Value) -> parse::Parsed<Settled> {
    match value {
        Value::Nil | Value::Boolean(false) => Ok(Settled::NotOwned),
        Value::ServerError(err) => Ok(Settled::Failed(server_text(&err))),
        other => parse::ids(other).map(Settled::Done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_format_as_redis_writes_them() {
        let mut text = IdText::new();
        assert_eq!(
            text.format(StreamId::new(1_526_919_030_474, 55)),
            b"1526919030474-55"
        );
        assert_eq!(
            text.format(StreamId::MAX),
            StreamId::MAX.to_string().as_bytes()
        );
        assert_eq!(text.format(StreamId::ZERO), b"0-0");
    }
}
