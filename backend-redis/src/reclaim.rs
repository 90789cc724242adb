//! `autoclaim_recorded`: `XAUTOCLAIM` and the records of the deleted ids it
//! reports, as one Lua script.
//!
//! `XAUTOCLAIM` removes a deleted entry from the pending list as it reports
//! it; if the caller wrote the record afterwards, a crash or a lost reply in
//! between would leave no trace of the entry. In a script, nothing runs
//! between the claim and the records. The records' markers are named in the
//! script from their ids, so they are not in `KEYS`: on Redis Cluster they
//! must hash to the stream's slot, as crewq's cluster keyspace makes its
//! dead-letter keys do.

use std::sync::LazyLock;

use crewq_core::{
    AutoClaim, AutoClaimedRecorded, DeletedRecord, Error, Result, validate_autoclaim_recorded,
};
use redis::{Script, Value};

use crate::RedisBroker;
use crate::config::ceil_millis;
use crate::error::{Op, from_server_error};
use crate::once::added_once;
use crate::{commands, parse};

/// `KEYS[1]` the claimed stream, `KEYS[2]` the stream records go to.
/// `ARGV`: group, consumer, min-idle (ms), start, count, the markers'
/// prefix, their window (ms), the index among the `XADD` arguments of the
/// value that holds the id, then those arguments (after the key).
///
/// A record stream of another type fails the call before anything is
/// claimed (the entries stay pending). Otherwise each record succeeds or
/// fails alone (`redis.pcall`), its error in its place in the reply:
/// `{claim reply, {{1, id} appended | {0, id} marker set | error, ...}}`.
const AUTOCLAIM_RECORDED_LUA: &str = r"
local kind = redis.call('TYPE', KEYS[2]).ok
if kind ~= 'none' and kind ~= 'stream' then
  return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
end
local claim = redis.pcall('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local function failed(reply) return type(reply) == 'table' and reply.err end
if failed(claim) then return claim end
local args, slot, records = {unpack(ARGV, 9)}, tonumber(ARGV[8]), {}
for i, id in ipairs(claim[3] or {}) do
  local marker = ARGV[6] .. id
  local seen = redis.pcall('GET', marker)
  if failed(seen) then
    records[i] = seen
  elseif seen then
    records[i] = {0, seen}
  else
    args[slot] = id
    local new = redis.pcall('XADD', KEYS[2], unpack(args))
    if failed(new) then
      records[i] = new
    else
      local set = redis.pcall('SET', marker, new, 'PX', ARGV[7])
      records[i] = failed(set) and set or {1, new}
    end
  end
end
return {claim, records}
";

static AUTOCLAIM_RECORDED: LazyLock<Script> = LazyLock::new(|| Script::new(AUTOCLAIM_RECORDED_LUA));

impl RedisBroker {
    /// [`Broker::autoclaim_recorded`](crewq_core::Broker::autoclaim_recorded)
    /// in one script call.
    pub(crate) async fn autoclaim_recorded_in_script(
        &self,
        claim: &AutoClaim,
        record: &DeletedRecord,
    ) -> Result<AutoClaimedRecorded> {
        validate_autoclaim_recorded(claim, record)?;
        let op = Op::group("XAUTOCLAIM", &claim.stream, &claim.group);
        let slot = record
            .id_slot()
            .ok_or_else(|| Error::InvalidArgument("a record without its id field".into()))?;
        // The id's value comes after the trim, the id and the fields before it.
        let fields_at = commands::xadd_arg_count(&record.entry) - 2 * record.entry.fields.len();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(AUTOCLAIM_RECORDED.get_hash())
            .arg(2)
            .arg(&claim.stream)
            .arg(&record.entry.stream)
            .arg(&claim.group)
            .arg(&claim.consumer)
            .arg(ceil_millis(claim.min_idle))
            .arg(claim.start.to_string())
            .arg(claim.count)
            .arg(&record.marker_prefix)
            .arg(ceil_millis(record.window))
            // Lua counts from 1.
            .arg(fields_at + 2 * slot + 2);
        commands::push_xadd_args(&mut cmd, &record.entry);
        let reply = self
            .eval_keeping_errors(&cmd, AUTOCLAIM_RECORDED_LUA, op)
            .await?;
        let parts = parse::array_or_nil(reply).map_err(|shape| op.protocol(shape))?;
        let [claimed, records] = <[Value; 2]>::try_from(parts).map_err(|parts| {
            op.protocol(format_args!("expected [claim, records], got {parts:?}"))
        })?;
        let claimed = parse::autoclaim(claimed).map_err(|shape| op.protocol(shape))?;
        let records = parse::array_or_nil(records).map_err(|shape| op.protocol(shape))?;
        if records.len() != claimed.deleted.len() {
            return Err(op.protocol(format_args!(
                "{} records for {} deleted ids",
                records.len(),
                claimed.deleted.len()
            )));
        }
        let record_op = Op::new("XADD", &record.entry.stream);
        let records = records
            .into_iter()
            .map(|reply| match reply {
                Value::ServerError(err) => Err(record_op.error(from_server_error(err))),
                reply => added_once(reply, record_op),
            })
            .collect();
        Ok(AutoClaimedRecorded {
            claim: claimed,
            records,
        })
    }
}
