//! Shared rate limits on Redis (see `crewq_core::ratelimit`): a sliding log
//! of starts and the running permits as sorted sets, a pause as a string
//! with an expiry, each step one script judged by the server's `TIME`, so
//! workers whose clocks disagree share one budget exactly.

use std::sync::LazyLock;
use std::time::Duration;

use crewq_core::{
    RateAcquire, RateGrant, RateKeys, RateLimit, RateState, Result, validate_rate_acquire,
};
use redis::{Script, Value};

use crate::RedisBroker;
use crate::config::ceil_millis;
use crate::error::Op;
use crate::parse;

/// The server's time in ms, and a score formatter that never writes
/// `1e+12` (Lua's `tostring` of a large number may).
const PRELUDE: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local function ms(x) return string.format('%.0f', x) end
";

/// `KEYS` starts, running, paused, limit; `ARGV` the start count (`-1`: no
/// limit), the window in ms (`-1`), the running limit (`-1`), the lease in
/// ms, the limit's encoding, then the permits. Replies `{granted, now,
/// retry_in}` (`-1`: no time known).
///
/// The log of starts holds grants newer than `now - window` only, so a
/// grant is refused exactly while some window of the limit's length ending
/// now holds `n` grants: no window ever holds more (a sliding log, not a
/// bucket). The log expires a window after its newest start; the running
/// set keeps expired members until the next call trims them.
const ACQUIRE_BODY: &str = r"
local starts, running, paused = KEYS[1], KEYS[2], KEYS[3]
local n, window, m, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('SET', KEYS[4], ARGV[5])
local want = #ARGV - 5
if window >= 0 then redis.call('ZREMRANGEBYSCORE', starts, '-inf', ms(now - window)) end
redis.call('ZREMRANGEBYSCORE', running, '-inf', ms(now))
local pause_end = tonumber(redis.call('GET', paused) or '0') or 0
if pause_end > now then return {0, now, pause_end - now} end
local room = want
if n >= 0 then room = math.min(room, math.max(0, n - redis.call('ZCARD', starts))) end
if m >= 0 then room = math.min(room, math.max(0, m - redis.call('ZCARD', running))) end
for i = 1, room do
  local permit = ARGV[5 + i]
  if window >= 0 then redis.call('ZADD', starts, ms(now), permit) end
  redis.call('ZADD', running, ms(now + lease), permit)
end
if room > 0 and window >= 0 then redis.call('PEXPIRE', starts, ms(window)) end
local wait = -1
if room < want and n >= 0 and window >= 0 and redis.call('ZCARD', starts) >= n then
  local first = redis.call('ZRANGE', starts, 0, 0, 'WITHSCORES')
  if first[2] then wait = math.max(0, tonumber(first[2]) + window - now) end
end
return {room, now, wait}
";

/// `KEYS[1]` running; `ARGV` the lease in ms, then the permits. Replies
/// with the permits extended: only unexpired ones (`XX`: none is added).
const RENEW_BODY: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms(now))
local lease, out = tonumber(ARGV[1]), {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', ms(now + lease), ARGV[i])
    out[#out + 1] = ARGV[i]
  end
end
return out
";

/// `KEYS` running, starts; `ARGV` how many finished permits come first,
/// then the finished and the unused permits. Replies with the running
/// permits dropped (expired ones are trimmed first and not counted).
const RELEASE_BODY: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms(now))
local finished, dropped = tonumber(ARGV[1]), 0
for i = 2, #ARGV do dropped = dropped + redis.call('ZREM', KEYS[1], ARGV[i]) end
for i = 2 + finished, #ARGV do redis.call('ZREM', KEYS[2], ARGV[i]) end
return dropped
";

/// `KEYS[1]` paused; `ARGV[1]` the pause in ms. The later end wins.
/// Replies with the pause left in ms.
const PAUSE_BODY: &str = r"
local pause_end = now + tonumber(ARGV[1])
local old = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if old > pause_end then pause_end = old end
if pause_end > now then redis.call('SET', KEYS[1], ms(pause_end), 'PX', ms(pause_end - now)) end
return pause_end - now
";

/// `KEYS` starts, running, paused, limit. Replies `{limit, starts in the
/// window, running, pause left}` (`''`, `-1` for none); reads only.
const STATE_BODY: &str = r"
local limit = redis.call('GET', KEYS[4])
local starts = 0
if limit then
  local window = string.match(limit, '^%S+ (%d+) ')
  if window then starts = redis.call('ZCOUNT', KEYS[1], '(' .. ms(now - tonumber(window)), '+inf') end
end
local running = redis.call('ZCOUNT', KEYS[2], '(' .. ms(now), '+inf')
local pause_end = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
local paused = -1
if pause_end > now then paused = pause_end - now end
return {limit or '', starts, running, paused}
";

/// A script: the prelude, then its body.
struct Lua {
    source: String,
    script: Script,
}

impl Lua {
    fn new(body: &str) -> Self {
        let source = format!("{PRELUDE}{body}");
        let script = Script::new(&source);
        Lua { source, script }
    }
}

static ACQUIRE: LazyLock<Lua> = LazyLock::new(|| Lua::new(ACQUIRE_BODY));
static RENEW: LazyLock<Lua> = LazyLock::new(|| Lua::new(RENEW_BODY));
static RELEASE: LazyLock<Lua> = LazyLock::new(|| Lua::new(RELEASE_BODY));
static PAUSE: LazyLock<Lua> = LazyLock::new(|| Lua::new(PAUSE_BODY));
static STATE: LazyLock<Lua> = LazyLock::new(|| Lua::new(STATE_BODY));

/// `-1` for a limit not set, as the scripts read it.
fn or_none(value: Option<u64>) -> i64 {
    value.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

impl RedisBroker {
    /// Runs `lua` with `keys` and `args` (`EVALSHA`, loading it if needed).
    async fn run_rate(
        &self,
        lua: &Lua,
        keys: &[&str],
        args: impl FnOnce(&mut redis::Cmd),
        op: Op<'_>,
    ) -> Result<Value> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(lua.script.get_hash()).arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        args(&mut cmd);
        self.eval_loaded(&cmd, &lua.source, op).await
    }

    /// [`Broker::rate_acquire`](crewq_core::Broker::rate_acquire).
    pub(crate) async fn rate_acquire_in_script(&self, acquire: RateAcquire) -> Result<RateGrant> {
        validate_rate_acquire(&acquire)?;
        let RateAcquire {
            keys,
            limit,
            permits,
            lease,
        } = acquire;
        let op = Op::new("rate_acquire", &keys.starts);
        let all = [&*keys.starts, &keys.running, &keys.paused, &keys.limit];
        let reply = self
            .run_rate(
                &ACQUIRE,
                &all,
                |cmd| {
                    cmd.arg(or_none(limit.starts.map(|(n, _)| u64::from(n))))
                        .arg(or_none(limit.window_ms()))
                        .arg(or_none(limit.running.map(u64::from)))
                        .arg(ceil_millis(lease))
                        .arg(limit.encode());
                    for permit in &permits {
                        cmd.arg(permit);
                    }
                },
                op,
            )
            .await?;
        grant(reply, permits.len()).map_err(|shape| op.protocol(shape))
    }

    /// [`Broker::rate_renew`](crewq_core::Broker::rate_renew).
    pub(crate) async fn rate_renew_in_script(
        &self,
        keys: &RateKeys,
        permits: &[String],
        lease: Duration,
    ) -> Result<Vec<String>> {
        if permits.is_empty() {
            return Ok(Vec::new());
        }
        let op = Op::new("rate_renew", &keys.running);
        let reply = self
            .run_rate(
                &RENEW,
                &[&keys.running],
                |cmd| {
                    cmd.arg(ceil_millis(lease)).arg(permits);
                },
                op,
            )
            .await?;
        let strings = || -> parse::Parsed<Vec<String>> {
            parse::array(reply)?
                .into_iter()
                .map(parse::string)
                .collect()
        };
        strings().map_err(|shape| op.protocol(shape))
    }

    /// [`Broker::rate_release`](crewq_core::Broker::rate_release).
    pub(crate) async fn rate_release_in_script(
        &self,
        keys: &RateKeys,
        finished: &[String],
        unused: &[String],
    ) -> Result<u64> {
        if finished.is_empty() && unused.is_empty() {
            return Ok(0);
        }
        let op = Op::new("rate_release", &keys.running);
        let reply = self
            .run_rate(
                &RELEASE,
                &[&keys.running, &keys.starts],
                |cmd| {
                    cmd.arg(finished.len()).arg(finished).arg(unused);
                },
                op,
            )
            .await?;
        parse::uint(reply).map_err(|shape| op.protocol(shape))
    }

    /// [`Broker::rate_pause`](crewq_core::Broker::rate_pause).
    pub(crate) async fn rate_pause_in_script(
        &self,
        keys: &RateKeys,
        pause: Duration,
    ) -> Result<Duration> {
        let op = Op::new("rate_pause", &keys.paused);
        let reply = self
            .run_rate(
                &PAUSE,
                &[&keys.paused],
                |cmd| {
                    cmd.arg(ceil_millis(pause));
                },
                op,
            )
            .await?;
        let left = parse::uint(reply).map_err(|shape| op.protocol(shape))?;
        Ok(Duration::from_millis(left))
    }

    /// [`Broker::rate_state`](crewq_core::Broker::rate_state).
    pub(crate) async fn rate_state_in_script(&self, keys: &RateKeys) -> Result<RateState> {
        let op = Op::new("rate_state", &keys.starts);
        let all = [&*keys.starts, &keys.running, &keys.paused, &keys.limit];
        let reply = self.run_rate(&STATE, &all, |_| {}, op).await?;
        state(reply).map_err(|shape| op.protocol(shape))
    }
}

/// A count the scripts reply with, or `None` for `-1`.
fn maybe(value: Value) -> parse::Parsed<Option<u64>> {
    match value {
        Value::Int(n) if n < 0 => Ok(None),
        other => parse::uint(other).map(Some),
    }
}

/// The acquire script's `{granted, now, retry_in}`.
fn grant(reply: Value, asked: usize) -> parse::Parsed<RateGrant> {
    let mut parts = parse::array(reply)?.into_iter();
    let (Some(granted), Some(now), Some(wait)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(parse::Shape("expected {granted, now, retry_in}".to_owned()));
    };
    let granted = usize::try_from(parse::uint(granted)?).unwrap_or(usize::MAX);
    if granted > asked {
        return Err(parse::Shape(format!("{granted} granted of {asked} asked")));
    }
    Ok(RateGrant {
        granted,
        at_ms: parse::uint(now)?,
        retry_in: maybe(wait)?.map(Duration::from_millis),
    })
}

/// The state script's `{limit, starts, running, paused}`.
fn state(reply: Value) -> parse::Parsed<RateState> {
    let mut parts = parse::array(reply)?.into_iter();
    let (Some(limit), Some(starts), Some(running), Some(paused)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(parse::Shape(
            "expected {limit, starts, running, paused}".to_owned(),
        ));
    };
    Ok(RateState {
        limit: RateLimit::decode(&parse::string(limit)?),
        starts_in_window: parse::uint(starts)?,
        running: parse::uint(running)?,
        paused_for: maybe(paused)?.map(Duration::from_millis),
    })
}
