//! [`Broker::read_lanes`](crewq_core::Broker::read_lanes) on Redis: one
//! script looks at every lane and reads from the one
//! [`next_lane`](crewq_core::lanes::next_lane) would pick, entry by entry,
//! so no read of a peer comes between the choice and the take.

use std::sync::LazyLock;

use crewq_core::lanes::validate_read_lanes;
use crewq_core::{LanesRead, ReadLanes, Result};
use redis::{Script, Value};

use crate::RedisBroker;
use crate::error::Op;
use crate::parse;

/// `KEYS` the lanes' streams, then their delayed sets (a lane without one
/// names its stream again); `ARGV` the group, the consumer, the count, the
/// starvation bound in ms, then each lane's priority, then per lane `1` to
/// create a missing group (at `0`) or `0`. Replies `{now, taken,
/// no_group, left, present}`: the server's `TIME` in ms; `{lane, id,
/// fields}` per entry taken, lanes counted from 0; the lanes that exist
/// without the group; the lanes with unread entries left; the lanes whose
/// stream or delayed set exists.
///
/// The rule is [`next_lane`](crewq_core::lanes::next_lane)'s: the oldest
/// starving head (ties: the higher priority, then the earlier lane), else
/// the head of the highest-priority lane (ties: the earlier lane). When no
/// head starves, every entry up to the count comes from that one lane
/// (nothing else changes within the script: the same lane wins again until
/// it runs dry), so that case is one `XREADGROUP`.
const READ_LANES_LUA: &str = r"
local group, consumer = ARGV[1], ARGV[2]
local count, starvation = tonumber(ARGV[3]), tonumber(ARGV[4])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local n = #KEYS / 2
local prio, last, head, no_group, present = {}, {}, {}, {}, {}
local function ms_of(id) return tonumber(string.match(id, '^(%d+)')) end
local function head_of(i)
  local r = redis.call('XRANGE', KEYS[i], '(' .. last[i], '+', 'COUNT', 1)
  if r[1] then return ms_of(r[1][1]) end
  return nil
end
for i = 1, n do
  prio[i] = tonumber(ARGV[4 + i])
  local exists = redis.call('EXISTS', KEYS[i]) == 1
  if exists or redis.call('EXISTS', KEYS[n + i]) == 1 then present[#present + 1] = i - 1 end
  if exists then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[i])) do
      local name, id
      for k = 1, #g, 2 do
        if g[k] == 'name' then name = g[k + 1] elseif g[k] == 'last-delivered-id' then id = g[k + 1] end
      end
      if name == group then last[i] = id end
    end
    if not last[i] and ARGV[4 + n + i] == '1' then
      redis.call('XGROUP', 'CREATE', KEYS[i], group, '0')
      last[i] = '0-0'
    end
    if last[i] then head[i] = head_of(i) else no_group[#no_group + 1] = i - 1 end
  end
end
local taken = {}
while #taken < count do
  local best, best_ms, best_prio = nil, nil, nil
  for i = 1, n do
    local ms = head[i]
    if ms and now - ms >= starvation then
      if best == nil or ms < best_ms or (ms == best_ms and prio[i] > best_prio) then
        best, best_ms, best_prio = i, ms, prio[i]
      end
    end
  end
  local want = 1
  if best == nil then
    for i = 1, n do
      if head[i] and (best == nil or prio[i] > best_prio) then best, best_prio = i, prio[i] end
    end
    want = count - #taken
  end
  if best == nil then break end
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want, 'STREAMS', KEYS[best], '>')
  local got = reply and reply[1] and reply[1][2] or {}
  for _, entry in ipairs(got) do
    taken[#taken + 1] = {best - 1, entry[1], entry[2]}
    last[best] = entry[1]
  end
  if #got == 0 then head[best] = nil else head[best] = head_of(best) end
end
local left = {}
for i = 1, n do if head[i] then left[#left + 1] = i - 1 end end
return {now, taken, no_group, left, present}
";

static READ_LANES: LazyLock<Script> = LazyLock::new(|| Script::new(READ_LANES_LUA));

impl RedisBroker {
    /// [`Broker::read_lanes`](crewq_core::Broker::read_lanes) in one
    /// script call.
    pub(crate) async fn read_lanes_in_script(&self, read: &ReadLanes) -> Result<LanesRead> {
        validate_read_lanes(read)?;
        let op = Op::group("read_lanes", &read.lanes[0].stream, &read.group);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(READ_LANES.get_hash()).arg(read.lanes.len() * 2);
        for lane in &read.lanes {
            cmd.arg(&lane.stream);
        }
        for lane in &read.lanes {
            cmd.arg(lane.delayed.as_ref().unwrap_or(&lane.stream));
        }
        cmd.arg(&read.group)
            .arg(&read.consumer)
            .arg(read.count)
            .arg(u64::try_from(read.starvation.as_millis()).unwrap_or(u64::MAX));
        for lane in &read.lanes {
            cmd.arg(lane.priority);
        }
        for lane in &read.lanes {
            cmd.arg(u8::from(lane.create_group));
        }
        let reply = self.eval_loaded(&cmd, READ_LANES_LUA, op).await?;
        lanes_read(reply, read.lanes.len()).map_err(|shape| op.protocol(shape))
    }
}

fn lane_index(value: Value, lanes: usize) -> parse::Parsed<usize> {
    let index = usize::try_from(parse::uint(value)?).unwrap_or(usize::MAX);
    if index >= lanes {
        return Err(parse::Shape(format!("lane {index} of {lanes}")));
    }
    Ok(index)
}

fn lanes_read(reply: Value, lanes: usize) -> parse::Parsed<LanesRead> {
    let mut parts = parse::array(reply)?.into_iter();
    let (Some(now), Some(taken), Some(no_group), Some(left), Some(present), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(parse::Shape(
            "expected {now, taken, no_group, left, present}".to_owned(),
        ));
    };
    let mut entries = Vec::new();
    for item in parse::array_or_nil(taken)? {
        let mut fields = parse::array(item)?.into_iter();
        let (Some(index), Some(id), Some(entry_fields), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(parse::Shape("expected {lane, id, fields}".to_owned()));
        };
        let index = lane_index(index, lanes)?;
        let entry = parse::delivered(Value::Array(vec![id, entry_fields]))?;
        entries.push((index, entry));
    }
    let indices = |value: Value| -> parse::Parsed<Vec<usize>> {
        parse::array_or_nil(value)?
            .into_iter()
            .map(|v| lane_index(v, lanes))
            .collect()
    };
    Ok(LanesRead {
        entries,
        no_group: indices(no_group)?,
        left: indices(left)?,
        present: indices(present)?,
        now_ms: parse::uint(now)?,
    })
}
