//! The ownership-guarded steps, `settle` and `renew`, as Lua scripts.
//!
//! `MULTI` cannot make a write depend on a read, and "acknowledge only if
//! this consumer still owns the entry" is exactly that. A script runs
//! atomically on the server, so no other consumer's claim can fall between
//! the ownership check and the writes. redis-rs sends each script by its
//! SHA1 (`EVALSHA`) and loads it once on `NOSCRIPT`.
//!
//! Every key a script touches is passed in `KEYS`, so on Redis Cluster the
//! task stream and the streams written to must share a hash slot (crewq's
//! cluster keyspace uses hash tags for that).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use crewq_core::{Result, Settle, Settled, StreamId, validate_settle};
use redis::{Script, Value};

use crate::RedisBroker;
use crate::error::Op;
use crate::{commands, parse};

/// `KEYS[1]` the stream, `KEYS[2..]` the streams written to.
/// `ARGV`: group, consumer, then per item its id and number of appends, and
/// per append the index of its key, its argument count and the `XADD`
/// arguments after the key. Replies per item: the appended ids, or false
/// (nil) when the consumer does not own the item.
const SETTLE_LUA: &str = r"
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
redis.call('XPENDING', stream, group) -- NOGROUP for a missing key or group
local out, at = {}, 3
while at <= #ARGV do
  local id, appends = ARGV[at], tonumber(ARGV[at + 1])
  at = at + 2
  local owned = #redis.call('XPENDING', stream, group, id, id, 1, consumer) > 0
  local ids = {}
  for _ = 1, appends do
    local key, argc = KEYS[tonumber(ARGV[at])], tonumber(ARGV[at + 1])
    if owned then
      ids[#ids + 1] = redis.call('XADD', key, unpack(ARGV, at + 2, at + 1 + argc))
    end
    at = at + 2 + argc
  end
  -- The outcome is written before the ack: Redis does not roll a script
  -- back, and an entry left pending is redelivered, never lost.
  if owned then
    redis.call('XACK', stream, group, id)
    out[#out + 1] = ids
  else
    out[#out + 1] = false
  end
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
  if #redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1, consumer) > 0 then
    local claimed = redis.call('XCLAIM', stream, group, consumer, 0, ARGV[i], 'JUSTID')
    if claimed[1] then renewed[#renewed + 1] = claimed[1] end
  end
end
return renewed
";

static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE_LUA));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW_LUA));

impl RedisBroker {
    /// [`Broker::settle`](crewq_core::Broker::settle) in one script call.
    pub(crate) async fn settle_in_script(&self, settle: Settle) -> Result<Vec<Settled>> {
        validate_settle(&settle)?;
        let op = Op::group("settle", &settle.stream, &settle.group);
        let mut invocation = SETTLE.prepare_invoke();
        invocation.key(&settle.stream);
        // Each stream written to is passed once, in KEYS, by its index.
        let mut key_index: BTreeMap<&str, usize> = BTreeMap::new();
        for entry in settle.items.iter().flat_map(|item| &item.appends) {
            let next = key_index.len() + 2;
            if let std::collections::btree_map::Entry::Vacant(slot) =
                key_index.entry(entry.stream.as_str())
            {
                slot.insert(next);
                invocation.key(&entry.stream);
            }
        }
        invocation.arg(&settle.group).arg(&settle.consumer);
        for item in &settle.items {
            invocation.arg(item.id.to_string()).arg(item.appends.len());
            for entry in &item.appends {
                let args = commands::xadd_args(entry);
                invocation
                    .arg(key_index.get(entry.stream.as_str()).copied().unwrap_or(0))
                    .arg(args.len())
                    .arg(args);
            }
        }
        let mut conn = self.shared_connection();
        let reply: Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|err| op.error(err))?;
        let outcomes = parse::array_or_nil(reply)
            .and_then(|items| {
                items
                    .into_iter()
                    .map(settled)
                    .collect::<parse::Parsed<Vec<_>>>()
            })
            .map_err(|shape| op.protocol(shape))?;
        if outcomes.len() != settle.items.len() {
            return Err(op.protocol(format_args!(
                "{} outcomes for {} items",
                outcomes.len(),
                settle.items.len()
            )));
        }
        Ok(outcomes)
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
        let mut invocation = RENEW.prepare_invoke();
        invocation.key(stream).arg(group).arg(consumer);
        for id in ids {
            invocation.arg(id.to_string());
        }
        let mut conn = self.shared_connection();
        let reply: Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|err| op.error(err))?;
        parse::ids(reply).map_err(|shape| op.protocol(shape))
    }
}

/// One item's outcome: nil when not owned, else the appended ids.
fn settled(value: Value) -> parse::Parsed<Settled> {
    match value {
        Value::Nil | Value::Boolean(false) => Ok(Settled::NotOwned),
        other => parse::ids(other).map(Settled::Done),
    }
}
