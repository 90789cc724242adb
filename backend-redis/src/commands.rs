//! Builds the Redis commands behind each `Broker` method.
//!
//! Pure functions from crewq's request types to [`redis::Cmd`], so that
//! what goes on the wire can be read (and tested) apart from the I/O.

use std::ops::Bound;
use std::time::Duration;

use crewq_core::{
    AddId, GroupStart, IdRange, NewEntry, PendingQuery, ReadFrom, ReadGroup, StreamId, Trim,
    TrimStrategy,
};
use redis::{Cmd, cmd};

use crate::config::{block_millis, ceil_millis};

/// `XREADGROUP`'s id for "entries never delivered to the group".
const NEW_ENTRIES: &str = ">";
/// `XGROUP CREATE`'s id for "after the current last entry".
const LATEST: &str = "$";
/// `XADD`'s id for "choose one".
const AUTO_ID: &str = "*";
/// Range ends meaning "no bound".
const RANGE_MIN: &str = "-";
const RANGE_MAX: &str = "+";
/// Marks an exclusive range end.
const EXCLUSIVE: &str = "(";
/// Trim operators.
const EXACT: &str = "=";
const APPROXIMATE: &str = "~";

/// Range ends as Redis takes them: `-`, `+`, `id` or `(id`.
///
/// Exclusive ends go to Redis as they are, so that an impossible one (`(`
/// on the largest id as a start, `(0-0` as an end) fails as Redis fails it
/// (`ERR invalid start ID for the interval`, before looking at the key).
pub(crate) fn range_args(range: &IdRange) -> (String, String) {
    let end = |bound: Bound<StreamId>, unbounded: &str| match bound {
        Bound::Unbounded => unbounded.to_owned(),
        Bound::Included(id) => id.to_string(),
        Bound::Excluded(id) => format!("{EXCLUSIVE}{id}"),
    };
    (end(range.0, RANGE_MIN), end(range.1, RANGE_MAX))
}

/// Appends a trim's arguments (`MAXLEN|MINID =|~ threshold`).
fn push_trim(cmd: &mut Cmd, trim: &Trim) {
    let operator = if trim.approximate { APPROXIMATE } else { EXACT };
    match trim.strategy {
        TrimStrategy::MaxLen(n) => cmd.arg("MAXLEN").arg(operator).arg(n),
        TrimStrategy::MinId(id) => cmd.arg("MINID").arg(operator).arg(id.to_string()),
    };
}

/// `XADD key [trim] id field value ...`.
pub(crate) fn xadd(entry: &NewEntry) -> Cmd {
    let mut c = cmd("XADD");
    c.arg(&entry.stream);
    push_xadd_args(&mut c, entry);
    c
}

/// `XADD`'s arguments after the key: `[trim] id field value ...`.
pub(crate) fn push_xadd_args(c: &mut Cmd, entry: &NewEntry) {
    if let Some(trim) = &entry.trim {
        push_trim(c, trim);
    }
    match entry.id {
        AddId::Auto => c.arg(AUTO_ID),
        AddId::Explicit(id) => c.arg(id.to_string()),
    };
    for (name, value) in entry.fields.iter() {
        c.arg(name.as_ref()).arg(value.as_ref());
    }
}

/// How many arguments [`push_xadd_args`] adds for `entry`.
pub(crate) fn xadd_arg_count(entry: &NewEntry) -> usize {
    // A trim is 3 arguments, the id 1, each field a name and a value.
    usize::from(entry.trim.is_some()) * 3 + 1 + 2 * entry.fields.len()
}

/// `XLEN key`.
pub(crate) fn xlen(stream: &str) -> Cmd {
    let mut c = cmd("XLEN");
    c.arg(stream);
    c
}

/// `XRANGE key start end [COUNT n]`.
pub(crate) fn xrange(stream: &str, (start, end): (String, String), count: Option<usize>) -> Cmd {
    let mut c = cmd("XRANGE");
    c.arg(stream).arg(start).arg(end);
    if let Some(count) = count {
        c.arg("COUNT").arg(count);
    }
    c
}

/// `XDEL key id ...` (at least one id).
pub(crate) fn xdel(stream: &str, ids: &[StreamId]) -> Cmd {
    let mut c = cmd("XDEL");
    c.arg(stream);
    push_ids(&mut c, ids);
    c
}

/// `XTRIM key MAXLEN|MINID =|~ threshold`.
pub(crate) fn xtrim(stream: &str, trim: &Trim) -> Cmd {
    let mut c = cmd("XTRIM");
    c.arg(stream);
    push_trim(&mut c, trim);
    c
}

/// `XGROUP CREATE key group id|$ [MKSTREAM]`.
pub(crate) fn group_create(stream: &str, group: &str, start: GroupStart, mkstream: bool) -> Cmd {
    let mut c = cmd("XGROUP");
    c.arg("CREATE").arg(stream).arg(group);
    match start {
        GroupStart::After(id) => c.arg(id.to_string()),
        GroupStart::Latest => c.arg(LATEST),
    };
    if mkstream {
        c.arg("MKSTREAM");
    }
    c
}

/// `XGROUP DESTROY key group`.
pub(crate) fn group_destroy(stream: &str, group: &str) -> Cmd {
    let mut c = cmd("XGROUP");
    c.arg("DESTROY").arg(stream).arg(group);
    c
}

/// `XGROUP DELCONSUMER key group consumer`.
pub(crate) fn consumer_delete(stream: &str, group: &str, consumer: &str) -> Cmd {
    let mut c = cmd("XGROUP");
    c.arg("DELCONSUMER").arg(stream).arg(group).arg(consumer);
    c
}

/// `XREADGROUP GROUP g c [COUNT n] [BLOCK ms] STREAMS key id`.
///
/// `block` is sent only for reads of new entries: Redis ignores it for
/// history reads, and leaving it out keeps those plainly non-blocking.
pub(crate) fn read_group(read: &ReadGroup, block: Option<Duration>) -> Cmd {
    let mut c = cmd("XREADGROUP");
    c.arg("GROUP").arg(&read.group).arg(&read.consumer);
    // COUNT 0 means "no limit" to Redis too; leaving it out says so plainly.
    if let Some(count) = read.count.filter(|&n| n > 0) {
        c.arg("COUNT").arg(count);
    }
    if let (Some(block), ReadFrom::New) = (block, read.from) {
        c.arg("BLOCK").arg(block_millis(block));
    }
    c.arg("STREAMS").arg(&read.stream);
    match read.from {
        ReadFrom::New => c.arg(NEW_ENTRIES),
        ReadFrom::PendingAfter(id) => c.arg(id.to_string()),
    };
    c
}

/// `XACK key group id ...` (at least one id).
pub(crate) fn ack(stream: &str, group: &str, ids: &[StreamId]) -> Cmd {
    let mut c = cmd("XACK");
    c.arg(stream).arg(group);
    push_ids(&mut c, ids);
    c
}

/// `XPENDING key group` (the summary form).
pub(crate) fn pending_summary(stream: &str, group: &str) -> Cmd {
    let mut c = cmd("XPENDING");
    c.arg(stream).arg(group);
    c
}

/// `XPENDING key group [IDLE ms] start end count [consumer]`.
pub(crate) fn pending(
    stream: &str,
    group: &str,
    query: &PendingQuery,
    (start, end): (String, String),
) -> Cmd {
    let mut c = cmd("XPENDING");
    c.arg(stream).arg(group);
    if let Some(idle) = query.min_idle {
        c.arg("IDLE").arg(ceil_millis(idle));
    }
    c.arg(start).arg(end).arg(query.count);
    if let Some(consumer) = &query.consumer {
        c.arg(consumer);
    }
    c
}

/// `XCLAIM key group consumer min-idle id ... [JUSTID]` (at least one id).
pub(crate) fn claim(
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
    ids: &[StreamId],
    just_id: bool,
) -> Cmd {
    let mut c = cmd("XCLAIM");
    c.arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(ceil_millis(min_idle));
    push_ids(&mut c, ids);
    if just_id {
        c.arg("JUSTID");
    }
    c
}

/// `XAUTOCLAIM key group consumer min-idle start COUNT n`.
pub(crate) fn autoclaim(
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
    start: StreamId,
    count: usize,
) -> Cmd {
    let mut c = cmd("XAUTOCLAIM");
    c.arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(ceil_millis(min_idle))
        .arg(start.to_string())
        .arg("COUNT")
        .arg(count);
    c
}

/// `XINFO STREAM key`.
pub(crate) fn info_stream(stream: &str) -> Cmd {
    let mut c = cmd("XINFO");
    c.arg("STREAM").arg(stream);
    c
}

/// `XINFO GROUPS key`.
pub(crate) fn info_groups(stream: &str) -> Cmd {
    let mut c = cmd("XINFO");
    c.arg("GROUPS").arg(stream);
    c
}

/// `XINFO CONSUMERS key group`.
pub(crate) fn info_consumers(stream: &str, group: &str) -> Cmd {
    let mut c = cmd("XINFO");
    c.arg("CONSUMERS").arg(stream).arg(group);
    c
}

fn push_ids(c: &mut Cmd, ids: &[StreamId]) {
    for id in ids {
        c.arg(id.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crewq_core::Fields;

    /// The arguments of a command as text.
    fn words(c: &Cmd) -> Vec<String> {
        c.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => "<not a plain argument>".to_owned(),
            })
            .collect()
    }

    #[test]
    fn xadd_puts_trim_before_the_id() {
        let entry = NewEntry::new("s", Fields::new().with("a", "1").with("a", "2"))
            .with_trim(Trim::max_len(10).approximate());
        assert_eq!(
            words(&xadd(&entry)),
            ["XADD", "s", "MAXLEN", "~", "10", "*", "a", "1", "a", "2"]
        );
        let entry = NewEntry::new("s", Fields::new().with("a", "1"))
            .with_id(StreamId::new(5, 1))
            .with_trim(Trim::min_id(StreamId::new(3, 0)));
        assert_eq!(
            words(&xadd(&entry)),
            ["XADD", "s", "MINID", "=", "3-0", "5-1", "a", "1"]
        );
    }

    #[test]
    fn range_ends_are_passed_as_redis_writes_them() {
        let range = (
            Bound::Excluded(StreamId::new(1, 5)),
            Bound::Included(StreamId::new(2, 0)),
        );
        assert_eq!(range_args(&range), ("(1-5".to_owned(), "2-0".to_owned()));
        let range = (
            Bound::Included(StreamId::ZERO),
            Bound::Excluded(StreamId::MAX),
        );
        assert_eq!(
            range_args(&range),
            ("0-0".to_owned(), format!("({}", StreamId::MAX))
        );
        assert_eq!(
            range_args(&crewq_core::ALL_IDS),
            ("-".to_owned(), "+".to_owned())
        );
    }

    #[test]
    fn reads_block_only_for_new_entries_and_never_for_zero_by_accident() {
        let read = ReadGroup::new("s", "g", "c").count(0);
        let sub_ms = Some(Duration::from_micros(10));
        assert_eq!(
            words(&read_group(&read, sub_ms)),
            [
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                "1",
                "STREAMS",
                "s",
                ">"
            ]
        );
        let history = ReadGroup::new("s", "g", "c")
            .count(3)
            .pending_after(StreamId::ZERO);
        assert_eq!(
            words(&read_group(&history, sub_ms)),
            [
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "COUNT",
                "3",
                "STREAMS",
                "s",
                "0-0"
            ]
        );
    }

    #[test]
    fn pending_puts_idle_first_and_consumer_last() {
        let query = PendingQuery::new(10)
            .min_idle(Duration::from_micros(1_500))
            .consumer("c");
        let ends = range_args(&query.range);
        assert_eq!(
            words(&pending("s", "g", &query, ends)),
            ["XPENDING", "s", "g", "IDLE", "2", "-", "+", "10", "c"]
        );
    }
}
