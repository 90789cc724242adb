//! `consumer_delete_if_idle`: `XINFO CONSUMERS` and `XGROUP DELCONSUMER` as
//! one Lua script.
//!
//! Sent as two commands, a worker that wakes up and reads between them
//! would see its new entries dropped from the pending list by the delete
//! (`DELCONSUMER` takes them with the consumer) and never redelivered. In a
//! script nothing runs between the check and the delete. The script's only
//! key is the stream, so it runs on a Redis Cluster as it is.

use std::sync::LazyLock;
use std::time::Duration;

use crewq_core::{ConsumerPruned, Result};
use redis::{Script, Value};

use crate::RedisBroker;
use crate::config::ceil_millis;
use crate::error::Op;
use crate::parse::{self, Parsed, Shape};

/// `KEYS[1]` the stream; `ARGV`: group, consumer, min-idle (ms). Replies
/// `{'deleted', idle}`, `{'busy', pending}`, `{'active', idle}` or
/// `{'missing'}`, idle in ms.
///
/// The consumer's pending count and idle time are `XINFO CONSUMERS`'s, the
/// same numbers `info_consumers` reports: on Redis 7.0 `idle` is the time
/// since its last read or claim (7.2 also counts reads that found nothing,
/// and adds `inactive`; the script reads `idle` on both). `XINFO CONSUMERS`
/// lists the whole group, which for a crew's handful of workers costs less
/// than a round trip. It also fails as the delete would: `ERR no such key`
/// for a missing key, `NOGROUP` for a missing group.
const DELETE_IF_IDLE_LUA: &str = r"
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local min_idle = tonumber(ARGV[3])
for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local info = {}
  for i = 1, #row, 2 do info[row[i]] = row[i + 1] end
  if info.name == consumer then
    if info.pending > 0 then return {'busy', info.pending} end
    if info.idle < min_idle then return {'active', info.idle} end
    redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
    return {'deleted', info.idle}
  end
end
return {'missing'}
";

static DELETE_IF_IDLE: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE_IF_IDLE_LUA));

impl RedisBroker {
    /// [`Broker::consumer_delete_if_idle`](crewq_core::Broker::consumer_delete_if_idle)
    /// in one script call.
    pub(crate) async fn consumer_delete_if_idle_in_script(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> Result<ConsumerPruned> {
        let op = Op::group("XGROUP DELCONSUMER if idle", stream, group);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(DELETE_IF_IDLE.get_hash())
            .arg(1)
            .arg(stream)
            .arg(group)
            .arg(consumer)
            // Rounded up, so "idle at least" holds at Redis's ms resolution.
            .arg(ceil_millis(min_idle));
        let reply = self.eval_loaded(&cmd, DELETE_IF_IDLE_LUA, op).await?;
        pruned(reply).map_err(|shape| op.protocol(shape))
    }
}

/// The script's reply: an outcome word and, but for `missing`, a number.
fn pruned(value: Value) -> Parsed<ConsumerPruned> {
    let mut parts = parse::array(value)?.into_iter();
    let word = parts
        .next()
        .ok_or_else(|| Shape("expected an outcome, got an empty array".to_owned()))
        .and_then(parse::string)?;
    let mut number = || {
        parts
            .next()
            .ok_or_else(|| Shape(format!("expected a number after '{word}'")))
            .and_then(parse::uint)
    };
    Ok(match word.as_str() {
        "deleted" => ConsumerPruned::Deleted {
            idle: Duration::from_millis(number()?),
        },
        "busy" => ConsumerPruned::Busy { pending: number()? },
        "active" => ConsumerPruned::Active {
            idle: Duration::from_millis(number()?),
        },
        "missing" => ConsumerPruned::Missing,
        other => return Err(Shape(format!("expected an outcome, got '{other}'"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(word: &str, number: Option<i64>) -> Value {
        let mut parts = vec![Value::BulkString(word.as_bytes().to_vec())];
        parts.extend(number.map(Value::Int));
        Value::Array(parts)
    }

    #[test]
    fn every_outcome_reads_back() {
        assert_eq!(
            pruned(reply("deleted", Some(1500))),
            Ok(ConsumerPruned::Deleted {
                idle: Duration::from_millis(1500)
            })
        );
        assert_eq!(
            pruned(reply("busy", Some(3))),
            Ok(ConsumerPruned::Busy { pending: 3 })
        );
        assert_eq!(
            pruned(reply("active", Some(7))),
            Ok(ConsumerPruned::Active {
                idle: Duration::from_millis(7)
            })
        );
        assert_eq!(pruned(reply("missing", None)), Ok(ConsumerPruned::Missing));
    }

    #[test]
    fn odd_replies_are_shape_errors() {
        assert!(pruned(reply("busy", None)).is_err());
        assert!(pruned(reply("gone", Some(1))).is_err());
        assert!(pruned(Value::Array(Vec::new())).is_err());
        assert!(pruned(Value::Int(1)).is_err());
    }
}
