//! Delayed sets on Redis: sorted sets of encoded entries scored by due time
//! (ms of the server's `TIME`), promoted into a task stream by one script.

use std::sync::LazyLock;
use std::time::Duration;

use crewq_core::{
    AddedOnce, DelayOnce, DelayedOnce, Promoted, Result, StreamEntry, promoted_fields,
    validate_delay_once,
};

use crate::config::ceil_millis;
use crate::once::added_once;
use redis::{Script, Value};

use crate::RedisBroker;
use crate::error::Op;
use crate::parse;

/// `KEYS[1]` the delayed set, `KEYS[2]` the stream; `ARGV[1]` the most
/// members to move. Replies `{ids, members, wait}`: the appended ids and
/// the members they came from, in due order, and the ms until the earliest
/// member left is due, `-1` for none.
///
/// Each member is appended and then removed before the next: a script
/// that stops on an error (an `OOM`, a key of another type) has moved the
/// ones before exactly once and left the rest. Being one script, no other
/// promote runs between a member's read and its removal, so racing workers
/// never append it twice. A member not in [`crewq_core::encode_member`]'s
/// form (a peer wrote it) is appended whole as the `data` field, as
/// [`crewq_core::promoted_fields`] does on the memory backend.
const PROMOTE_LUA: &str = r"
local set, stream, limit = KEYS[1], KEYS[2], tonumber(ARGV[1])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local function fields_of(member)
  local parts, at, n = {}, 1, #member
  while at <= n do
    local colon = string.find(member, ':', at, true)
    if not colon then return nil end
    local digits = string.sub(member, at, colon - 1)
    if not string.match(digits, '^%d+$') then return nil end
    local len = tonumber(digits)
    if colon + len > n then return nil end
    parts[#parts + 1] = string.sub(member, colon + 1, colon + len)
    at = colon + len + 1
  end
  if #parts < 3 or #parts % 2 == 0 then return nil end
  table.remove(parts, 1)
  return parts
end
local ids = {}
local due = redis.call('ZRANGEBYSCORE', set, '-inf', string.format('%.0f', now), 'LIMIT', 0, limit)
for _, member in ipairs(due) do
  local fields = fields_of(member) or {'data', member}
  ids[#ids + 1] = redis.call('XADD', stream, '*', unpack(fields))
  redis.call('ZREM', set, member)
end
local wait = -1
local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
if first[2] then wait = math.max(0, tonumber(first[2]) - now) end
return {ids, due, wait}
";

static PROMOTE: LazyLock<Script> = LazyLock::new(|| Script::new(PROMOTE_LUA));

/// `KEYS[1]` the delayed set, `KEYS[2]` the marker; `ARGV`: the delay in
/// ms, the window in ms, the member. Replies as the append-once script
/// (`once.rs`) does, `{1, '0-0'}` when scheduled (the marker records
/// `0-0`: no entry yet) or `{0, id}` with the id the marker recorded, so
/// [`added_once`] reads both.
const DELAY_ONCE_LUA: &str = r"
local seen = redis.call('GET', KEYS[2])
if seen then return {0, seen} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[1])), ARGV[3])
redis.call('SET', KEYS[2], '0-0', 'PX', ARGV[2])
return {1, '0-0'}
";

impl RedisBroker {
    /// [`Broker::promote`](crewq_core::Broker::promote) in one script call.
    pub(crate) async fn promote_in_script(
        &self,
        set: &str,
        stream: &str,
        count: usize,
    ) -> Result<Promoted> {
        let op = Op::new("promote", stream);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(PROMOTE.get_hash())
            .arg(2)
            .arg(set)
            .arg(stream)
            .arg(count);
        let reply = self.eval_loaded(&cmd, PROMOTE_LUA, op).await?;
        promoted(reply).map_err(|shape| op.protocol(shape))
    }

    /// [`Broker::delay_once`](crewq_core::Broker::delay_once): one script
    /// call per valid entry, all in one pipeline (through `WAIT` when
    /// appends wait for replicas: a schedule is a dispatch).
    pub(crate) async fn delay_once_pipelined(
        &self,
        entries: Vec<DelayOnce>,
    ) -> Result<Vec<Result<DelayedOnce>>> {
        let mut results: Vec<Option<Result<DelayedOnce>>> = Vec::with_capacity(entries.len());
        let mut sent = Vec::new();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (index, once) in entries.iter().enumerate() {
            if let Err(err) = validate_delay_once(once) {
                results.push(Some(Err(err)));
                continue;
            }
            results.push(None);
            sent.push(index);
            // Sent whole (EVAL), as the append-once script is: a short
            // script, and a dispatch never meets an empty script cache.
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(DELAY_ONCE_LUA)
                .arg(2)
                .arg(&once.delay.set)
                .arg(&once.marker)
                .arg(once.delay.after_ms())
                .arg(ceil_millis(once.window))
                .arg(&once.delay.member()[..]);
            pipe.add_command(cmd);
        }
        if let Some(&first) = sent.first() {
            let op = Op::new("delay_once", &entries[first].delay.set);
            let replies = self.query_appends(&pipe, op).await?;
            if replies.len() != sent.len() {
                return Err(op.protocol(format_args!(
                    "{} replies to {} scripts",
                    replies.len(),
                    sent.len()
                )));
            }
            for (index, reply) in sent.into_iter().zip(replies) {
                let op = Op::new("delay_once", &entries[index].delay.set);
                results[index] = Some(added_once(reply, op).map(|added| match added {
                    AddedOnce::Added(_) => DelayedOnce::Scheduled,
                    AddedOnce::Duplicate(id) => DelayedOnce::Duplicate(id),
                }));
            }
        }
        results
            .into_iter()
            .map(|result| {
                result.ok_or_else(|| {
                    crewq_core::Error::Protocol("a schedule-once got no reply".to_owned())
                })
            })
            .collect()
    }

    /// [`Broker::delayed_len`](crewq_core::Broker::delayed_len): `ZCARD`.
    pub(crate) async fn zcard(&self, set: &str) -> Result<u64> {
        let mut cmd = redis::cmd("ZCARD");
        cmd.arg(set);
        let op = Op::new("ZCARD", set);
        let reply = self.query(&cmd, op).await?;
        parse::uint(reply).map_err(|shape| op.protocol(shape))
    }
}

/// The script's `{ids, members, wait}`.
fn promoted(reply: Value) -> parse::Parsed<Promoted> {
    let mut parts = parse::array(reply)?.into_iter();
    let (Some(ids), Some(members), Some(wait)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(parse::Shape("expected {ids, members, wait}".to_owned()));
    };
    let ids = parse::ids(ids)?;
    let members = parse::array(members)?;
    if members.len() != ids.len() {
        return Err(parse::Shape(format!(
            "{} ids for {} members",
            ids.len(),
            members.len()
        )));
    }
    let mut entries = Vec::with_capacity(ids.len());
    for (id, member) in ids.into_iter().zip(members) {
        let member = parse::bytes(member)?;
        entries.push(StreamEntry {
            id,
            fields: promoted_fields(&member),
        });
    }
    let next_due_in = match wait {
        Value::Int(n) if n < 0 => None,
        other => Some(Duration::from_millis(parse::uint(other)?)),
    };
    Ok(Promoted {
        entries,
        next_due_in,
    })
}
