//! Reads `XINFO STREAM`, `XINFO GROUPS` and `XINFO CONSUMERS` replies: flat
//! name-value arrays in RESP2, maps in RESP3.

use std::time::Duration;

use crewq_core::{ConsumerInfo, GroupInfo, StreamInfo};
use redis::Value;

use super::{Parsed, Shape, array_or_nil, id, opt_entry, opt_uint, pairs, string, uint};

/// The name-value record of an `XINFO` reply, read field by field.
struct Record {
    what: &'static str,
    fields: Vec<(String, Value)>,
}

impl Record {
    fn new(what: &'static str, value: Value) -> Parsed<Self> {
        let fields = pairs(value)?
            .into_iter()
            .map(|(name, value)| Ok((string(name)?, value)))
            .collect::<Parsed<_>>()?;
        Ok(Record { what, fields })
    }

    /// Takes the value of `name`, which must be there.
    fn take(&mut self, name: &str) -> Parsed<Value> {
        match self.fields.iter().position(|(field, _)| field == name) {
            Some(index) => Ok(self.fields.swap_remove(index).1),
            None => Err(Shape(format!("{} reply has no '{name}'", self.what))),
        }
    }

    /// Takes a field and reads it, naming the field on failure.
    fn read<T>(&mut self, name: &str, read: fn(Value) -> Parsed<T>) -> Parsed<T> {
        read(self.take(name)?).map_err(|Shape(why)| Shape(format!("{} '{name}': {why}", self.what)))
    }
}

/// `XINFO STREAM`.
pub(crate) fn info_stream(value: Value) -> Parsed<StreamInfo> {
    let mut record = Record::new("XINFO STREAM", value)?;
    Ok(StreamInfo {
        length: record.read("length", uint)?,
        last_generated_id: record.read("last-generated-id", id)?,
        max_deleted_entry_id: record.read("max-deleted-entry-id", id)?,
        entries_added: record.read("entries-added", uint)?,
        recorded_first_entry_id: record.read("recorded-first-entry-id", id)?,
        groups: record.read("groups", uint)?,
        first_entry: record.read("first-entry", opt_entry)?,
        last_entry: record.read("last-entry", opt_entry)?,
    })
}

/// `XINFO GROUPS`, sorted by name as the contract promises.
pub(crate) fn info_groups(value: Value) -> Parsed<Vec<GroupInfo>> {
    let mut out = array_or_nil(value)?
        .into_iter()
        .map(|group| {
            let mut record = Record::new("XINFO GROUPS", group)?;
            Ok(GroupInfo {
                name: record.read("name", string)?,
                consumers: record.read("consumers", uint)?,
                pending: record.read("pending", uint)?,
                last_delivered_id: record.read("last-delivered-id", id)?,
                entries_read: record.read("entries-read", opt_uint)?,
                lag: record.read("lag", opt_uint)?,
            })
        })
        .collect::<Parsed<Vec<_>>>()?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `XINFO CONSUMERS`, sorted by name as the contract promises.
pub(crate) fn info_consumers(value: Value) -> Parsed<Vec<ConsumerInfo>> {
    let mut out = array_or_nil(value)?
        .into_iter()
        .map(|consumer| {
            let mut record = Record::new("XINFO CONSUMERS", consumer)?;
            Ok(ConsumerInfo {
                name: record.read("name", string)?,
                pending: record.read("pending", uint)?,
                idle: Duration::from_millis(record.read("idle", uint)?),
            })
        })
        .collect::<Parsed<Vec<_>>>()?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
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
    fn reads_info_groups_with_nil_counters_in_either_protocol() {
        let resp2 = arr(vec![arr(vec![
            bulk("name"),
            bulk("g"),
            bulk("consumers"),
            Value::Int(0),
            bulk("pending"),
            Value::Int(0),
            bulk("last-delivered-id"),
            bulk("0-0"),
            bulk("entries-read"),
            Value::Nil,
            bulk("lag"),
            Value::Nil,
        ])]);
        let resp3 = arr(vec![Value::Map(vec![
            (bulk("name"), bulk("g")),
            (bulk("consumers"), Value::Int(0)),
            (bulk("pending"), Value::Int(0)),
            (bulk("last-delivered-id"), bulk("0-0")),
            (bulk("entries-read"), Value::Nil),
            (bulk("lag"), Value::Nil),
        ])]);
        for reply in [resp2, resp3] {
            let groups = info_groups(reply).expect("parses");
            assert_eq!(groups[0].entries_read, None);
            assert_eq!(groups[0].lag, None);
        }
    }

    #[test]
    fn a_missing_field_is_named() {
        let err = info_stream(arr(vec![bulk("length"), Value::Int(1)])).expect_err("rejected");
        assert!(err.0.contains("last-generated-id"), "{err}");
        let err = info_consumers(arr(vec![arr(vec![bulk("name"), Value::Int(3)])]))
            .expect_err("rejected");
        assert!(err.0.contains("'name'"), "{err}");
    }
}
