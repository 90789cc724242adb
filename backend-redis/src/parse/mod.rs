//! Reads Redis replies (`redis::Value`, RESP2 or RESP3) into crewq's types.
//!
//! Every function takes the reply by value so that field names and values
//! move into [`Bytes`] without a copy. A reply of an unexpected shape is a
//! [`Shape`] describing what was expected and what came, never a panic; the
//! caller turns it into [`Error::Protocol`](crewq_core::Error::Protocol)
//! with the command's name.

use std::fmt;
use std::time::Duration;

use crewq_core::{
    AutoClaimed, Bytes, DeliveredEntry, Fields, PendingEntry, PendingSummary, StreamEntry, StreamId,
};
use redis::Value;

mod info;
pub(crate) use info::{info_consumers, info_groups, info_stream};

/// A reply that does not have the shape its command promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape(pub String);

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The result of reading one reply.
pub(crate) type Parsed<T> = Result<T, Shape>;

fn unexpected<T>(expected: &str, got: &Value) -> Parsed<T> {
    Err(Shape(format!("expected {expected}, got {}", describe(got))))
}

/// A short description of a value, without its (maybe large) contents.
fn describe(value: &Value) -> String {
    match value {
        Value::Nil => "nil".to_owned(),
        Value::Int(n) => format!("integer {n}"),
        Value::BulkString(b) => format!("a bulk string of {} bytes", b.len()),
        Value::Array(items) => format!("an array of {}", items.len()),
        Value::SimpleString(s) => format!("simple string {:?}", truncate(s)),
        Value::Okay => "OK".to_owned(),
        Value::Map(pairs) => format!("a map of {}", pairs.len()),
        Value::Set(items) => format!("a set of {}", items.len()),
        Value::ServerError(err) => format!("error reply {err}"),
        other => format!("{:?}", truncate(&format!("{other:?}"))),
    }
}

fn truncate(text: &str) -> &str {
    let end = text
        .char_indices()
        .nth(40)
        .map_or(text.len(), |(index, _)| index);
    &text[..end]
}

/// Drops RESP3 attributes, which only annotate the data they carry.
fn data(value: Value) -> Value {
    match value {
        Value::Attribute { data, .. } => *data,
        other => other,
    }
}

/// An array (or RESP3 set) of values.
pub(crate) fn array(value: Value) -> Parsed<Vec<Value>> {
    match data(value) {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => unexpected("an array", &other),
    }
}

/// A nil-able array: nil reads as empty.
pub(crate) fn array_or_nil(value: Value) -> Parsed<Vec<Value>> {
    match data(value) {
        Value::Nil => Ok(Vec::new()),
        other => array(other),
    }
}

/// Key-value pairs: a flat RESP2 array `[k, v, k, v ...]` or a RESP3 map.
fn pairs(value: Value) -> Parsed<Vec<(Value, Value)>> {
    match data(value) {
        Value::Map(pairs) => Ok(pairs),
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(Shape(format!(
                    "expected name-value pairs, got an odd array of {}",
                    items.len()
                )));
            }
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(key), Some(value)) = (items.next(), items.next()) {
                out.push((key, value));
            }
            Ok(out)
        }
        other => unexpected("name-value pairs", &other),
    }
}

/// Binary-safe text as [`Bytes`], without copying a bulk string.
pub(crate) fn bytes(value: Value) -> Parsed<Bytes> {
    match data(value) {
        Value::BulkString(b) => Ok(Bytes::from(b)),
        Value::SimpleString(s) => Ok(Bytes::from(s)),
        Value::VerbatimString { text, .. } => Ok(Bytes::from(text)),
        other => unexpected("a string", &other),
    }
}

/// UTF-8 text.
pub(crate) fn string(value: Value) -> Parsed<String> {
    match data(value) {
        Value::BulkString(b) => {
            String::from_utf8(b).map_err(|_| Shape("expected UTF-8 text".to_owned()))
        }
        Value::SimpleString(s) => Ok(s),
        Value::VerbatimString { text, .. } => Ok(text),
        other => unexpected("a string", &other),
    }
}

/// A non-negative integer, sent as an integer or (in some replies, such as
/// `XPENDING`'s per-consumer counts) as decimal text.
pub(crate) fn uint(value: Value) -> Parsed<u64> {
    match data(value) {
        Value::Int(n) => u64::try_from(n).map_err(|_| Shape(format!("expected a count, got {n}"))),
        Value::BulkString(b) => std::str::from_utf8(&b)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| Shape("expected a decimal count".to_owned())),
        Value::SimpleString(s) => s
            .parse()
            .map_err(|_| Shape(format!("expected a decimal count, got {:?}", truncate(&s)))),
        other => unexpected("an integer", &other),
    }
}

/// A nil-able integer (`entries-read`, `lag`).
fn opt_uint(value: Value) -> Parsed<Option<u64>> {
    match data(value) {
        Value::Nil => Ok(None),
        other => uint(other).map(Some),
    }
}

/// A stream id.
pub(crate) fn id(value: Value) -> Parsed<StreamId> {
    let text = string(value)?;
    text.parse()
        .map_err(|_| Shape(format!("expected a stream id, got {:?}", truncate(&text))))
}

/// A nil-able stream id.
fn opt_id(value: Value) -> Parsed<Option<StreamId>> {
    match data(value) {
        Value::Nil => Ok(None),
        other => id(other).map(Some),
    }
}

/// A list of stream ids (`XCLAIM ... JUSTID`, `XAUTOCLAIM`'s deleted ids).
pub(crate) fn ids(value: Value) -> Parsed<Vec<StreamId>> {
    array_or_nil(value)?.into_iter().map(id).collect()
}

/// An entry's field-value pairs; nil (a deleted entry) is `None`.
fn fields(value: Value) -> Parsed<Option<Fields>> {
    match data(value) {
        Value::Nil => Ok(None),
        other => {
            let mut fields = Fields::new();
            for (name, value) in pairs(other)? {
                fields.push(bytes(name)?, bytes(value)?);
            }
            Ok(Some(fields))
        }
    }
}

/// One `[id, [field, value ...]]` entry, its fields `None` when deleted.
pub(crate) fn delivered(value: Value) -> Parsed<DeliveredEntry> {
    let mut parts = array(value)?.into_iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(entry_id), Some(entry_fields), None) => Ok(DeliveredEntry {
            id: id(entry_id)?,
            fields: fields(entry_fields)?,
        }),
        _ => Err(Shape("expected an [id, fields] entry".to_owned())),
    }
}

/// One entry that must still exist.
fn entry(value: Value) -> Parsed<StreamEntry> {
    let delivered = delivered(value)?;
    match delivered.fields {
        Some(fields) => Ok(StreamEntry {
            id: delivered.id,
            fields,
        }),
        None => Err(Shape(format!("entry {} came without fields", delivered.id))),
    }
}

/// A nil-able entry (`first-entry`, `last-entry`).
fn opt_entry(value: Value) -> Parsed<Option<StreamEntry>> {
    match data(value) {
        Value::Nil => Ok(None),
        other => entry(other).map(Some),
    }
}

/// An `XRANGE` reply.
pub(crate) fn entries(value: Value) -> Parsed<Vec<StreamEntry>> {
    array_or_nil(value)?.into_iter().map(entry).collect()
}

/// Entries of a claim: deleted entries (nil, or an id with nil fields, as
/// Redis before 7.0 replied) are left out, as Redis 7 leaves them out.
pub(crate) fn claimed(value: Value) -> Parsed<Vec<StreamEntry>> {
    let mut out = Vec::new();
    for item in array_or_nil(value)? {
        if matches!(item, Value::Nil) {
            continue;
        }
        let delivered = delivered(item)?;
        if let Some(fields) = delivered.fields {
            out.push(StreamEntry {
                id: delivered.id,
                fields,
            });
        }
    }
    Ok(out)
}

/// An `XREADGROUP` reply on one stream: nil when nothing was read, else
/// `[[stream, entries]]` (RESP2) or `{stream: entries}` (RESP3).
pub(crate) fn read_group(value: Value) -> Parsed<Vec<DeliveredEntry>> {
    let streams: Vec<Value> = match data(value) {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
        other => array(other)?
            .into_iter()
            .map(|item| {
                let mut parts = array(item)?.into_iter();
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(_name), Some(entries), None) => Ok(entries),
                    _ => Err(Shape("expected a [stream, entries] pair".to_owned())),
                }
            })
            .collect::<Parsed<_>>()?,
    };
    let mut out = Vec::new();
    for entries in streams {
        for item in array_or_nil(entries)? {
            out.push(delivered(item)?);
        }
    }
    Ok(out)
}

/// The summary form of `XPENDING`: `[count, min, max, [[name, count] ...]]`,
/// `[0, nil, nil, nil]` when nothing is pending.
pub(crate) fn pending_summary(value: Value) -> Parsed<PendingSummary> {
    let mut parts = array(value)?.into_iter();
    let (Some(count), Some(min_id), Some(max_id), Some(consumers), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(Shape("expected [count, min, max, consumers]".to_owned()));
    };
    let mut per_consumer = Vec::new();
    for row in array_or_nil(consumers)? {
        let mut row = array(row)?.into_iter();
        match (row.next(), row.next(), row.next()) {
            (Some(name), Some(count), None) => per_consumer.push((string(name)?, uint(count)?)),
            _ => return Err(Shape("expected a [consumer, count] row".to_owned())),
        }
    }
    per_consumer.sort();
    Ok(PendingSummary {
        count: uint(count)?,
        min_id: opt_id(min_id)?,
        max_id: opt_id(max_id)?,
        consumers: per_consumer,
    })
}

/// The extended form of `XPENDING`: rows `[id, consumer, idle_ms, deliveries]`.
pub(crate) fn pending(value: Value) -> Parsed<Vec<PendingEntry>> {
    let mut out = Vec::new();
    for row in array_or_nil(value)? {
        let mut row = array(row)?.into_iter();
        let (Some(entry_id), Some(consumer), Some(idle), Some(deliveries), None) =
            (row.next(), row.next(), row.next(), row.next(), row.next())
        else {
            return Err(Shape(
                "expected an [id, consumer, idle, deliveries] row".to_owned(),
            ));
        };
        out.push(PendingEntry {
            id: id(entry_id)?,
            consumer: string(consumer)?,
            idle: Duration::from_millis(uint(idle)?),
            deliveries: uint(deliveries)?,
        });
    }
    Ok(out)
}

/// `XAUTOCLAIM`: `[cursor, entries, deleted ids]` (the third part since 7.0).
pub(crate) fn autoclaim(value: Value) -> Parsed<AutoClaimed> {
    let mut parts = array(value)?.into_iter();
    let (Some(next), Some(claimed_entries)) = (parts.next(), parts.next()) else {
        return Err(Shape("expected [cursor, entries, deleted]".to_owned()));
    };
    let deleted = match parts.next() {
        Some(deleted) => ids(deleted)?,
        None => Vec::new(),
    };
    Ok(AutoClaimed {
        next: id(next)?,
        claimed: claimed(claimed_entries)?,
        deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn arr(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    #[test]
    fn reads_group_reply_with_deleted_entry() {
        let reply = arr(vec![arr(vec![
            bulk("s"),
            arr(vec![
                arr(vec![bulk("1-1"), Value::Nil]),
                arr(vec![
                    bulk("1-2"),
                    arr(vec![bulk("a"), bulk("1"), bulk("a"), bulk("2")]),
                ]),
            ]),
        ])]);
        let got = read_group(reply).expect("parses");
        assert_eq!(
            got[0],
            DeliveredEntry {
                id: StreamId::new(1, 1),
                fields: None
            }
        );
        let fields = got[1].fields.as_ref().expect("fields");
        let pairs: Vec<_> = fields.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        assert_eq!(pairs.len(), 2, "repeated names are kept");
        assert_eq!(read_group(Value::Nil), Ok(Vec::new()));
    }

    #[test]
    fn reads_resp3_group_reply() {
        let reply = Value::Map(vec![(
            bulk("s"),
            arr(vec![arr(vec![
                bulk("3-0"),
                Value::Map(vec![(bulk("k"), bulk("v"))]),
            ])]),
        )]);
        let got = read_group(reply).expect("parses");
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].fields.as_ref().and_then(|f| f.get_str("k")),
            Some("v")
        );
    }

    #[test]
    fn reads_empty_pending_summary() {
        let reply = arr(vec![Value::Int(0), Value::Nil, Value::Nil, Value::Nil]);
        assert_eq!(pending_summary(reply), Ok(PendingSummary::default()));
    }

    #[test]
    fn reads_pending_summary_with_text_counts() {
        let reply = arr(vec![
            Value::Int(3),
            bulk("1-0"),
            bulk("3-0"),
            arr(vec![
                arr(vec![bulk("b"), bulk("1")]),
                arr(vec![bulk("a"), bulk("2")]),
            ]),
        ]);
        let summary = pending_summary(reply).expect("parses");
        assert_eq!(
            summary.consumers,
            vec![("a".to_owned(), 2), ("b".to_owned(), 1)]
        );
        assert_eq!(summary.max_id, Some(StreamId::new(3, 0)));
    }

    #[test]
    fn unexpected_shapes_are_described_not_panics() {
        for bad in [
            Value::Int(1),
            arr(vec![bulk("only-one")]),
            arr(vec![arr(vec![bulk("s")])]),
            arr(vec![arr(vec![
                bulk("s"),
                arr(vec![arr(vec![bulk("x-y"), Value::Nil])]),
            ])]),
            arr(vec![arr(vec![
                bulk("s"),
                arr(vec![arr(vec![bulk("1-1"), arr(vec![bulk("odd")])])]),
            ])]),
        ] {
            let err = read_group(bad).expect_err("rejected");
            assert!(!err.0.is_empty());
        }
        assert!(uint(Value::Int(-1)).is_err());
        assert!(pending(arr(vec![arr(vec![bulk("1-1")])])).is_err());
    }

    #[test]
    fn claims_leave_out_deleted_entries() {
        let reply = arr(vec![
            Value::Nil,
            arr(vec![bulk("1-1"), Value::Nil]),
            arr(vec![bulk("1-2"), arr(vec![bulk("f"), bulk("v")])]),
        ]);
        let got = claimed(reply).expect("parses");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, StreamId::new(1, 2));
    }
}
