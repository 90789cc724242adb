//! Stream entries of tasks and results: one field `data` holding the JSON,
//! a size limit, and the errors a worker acts on for poison entries.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::model::Task;
use super::result::TaskResult;
use crate::Fields;

/// The field of a task or result entry that holds its JSON (the seed's
/// `task_to_stream`).
pub const DATA_FIELD: &str = "data";

/// Why a stream entry could not be encoded or decoded.
///
/// When decoding, each kind marks a poison entry: retrying cannot help, so a
/// worker dead-letters it at once with reason `poison:<kind>` (see
/// [`WireError::kind`] and [`DeadLetterReason`](crate::DeadLetterReason)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The entry has no such field (`data` for tasks and results, `task` for
    /// dead letters).
    #[error("entry has no `{field}` field")]
    MissingData {
        /// The field looked for.
        field: &'static str,
    },
    /// The field is not JSON at all (or not UTF-8).
    #[error("`{field}` is not valid JSON: {source}")]
    InvalidJson {
        /// The field.
        field: &'static str,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// JSON, but not a task the seed would accept: a required field missing,
    /// a wrong type, a priority outside `0..=10`, a payload that is not an
    /// object ...
    #[error("invalid task: {message}")]
    InvalidTask {
        /// What is wrong.
        message: String,
    },
    /// JSON, but not a task result the seed would accept.
    #[error("invalid task result: {message}")]
    InvalidResult {
        /// What is wrong.
        message: String,
    },
    /// A dead-letter entry whose fields cannot be read.
    #[error("invalid dead letter: {message}")]
    InvalidDeadLetter {
        /// What is wrong.
        message: String,
    },
    /// The JSON is larger than the codec's limit.
    #[error("entry data is {size} bytes, over the limit of {limit} bytes")]
    Oversized {
        /// The size of the JSON in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

/// The kind of a [`WireError`], as plain data: for matching, counting and the
/// `poison:<kind>` reason of a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum WireErrorKind {
    /// [`WireError::MissingData`].
    MissingData,
    /// [`WireError::InvalidJson`].
    InvalidJson,
    /// [`WireError::InvalidTask`].
    InvalidTask,
    /// [`WireError::InvalidResult`].
    InvalidResult,
    /// [`WireError::InvalidDeadLetter`].
    InvalidDeadLetter,
    /// [`WireError::Oversized`].
    Oversized,
}

impl WireErrorKind {
    const ALL: [WireErrorKind; 6] = [
        WireErrorKind::MissingData,
        WireErrorKind::InvalidJson,
        WireErrorKind::InvalidTask,
        WireErrorKind::InvalidResult,
        WireErrorKind::InvalidDeadLetter,
        WireErrorKind::Oversized,
    ];

    /// `missing_data`, `invalid_json`, `invalid_task`, `invalid_result`,
    /// `invalid_dead_letter` or `oversized`.
    pub const fn as_str(self) -> &'static str {
        match self {
            WireErrorKind::MissingData => "missing_data",
            WireErrorKind::InvalidJson => "invalid_json",
            WireErrorKind::InvalidTask => "invalid_task",
            WireErrorKind::InvalidResult => "invalid_result",
            WireErrorKind::InvalidDeadLetter => "invalid_dead_letter",
            WireErrorKind::Oversized => "oversized",
        }
    }
}

impl fmt::Display for WireErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WireErrorKind {
    type Err = ();
    /// The inverse of [`WireErrorKind::as_str`].
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or(())
    }
}

impl WireError {
    /// The kind, as plain data.
    pub fn kind(&self) -> WireErrorKind {
        match self {
            WireError::MissingData { .. } => WireErrorKind::MissingData,
            WireError::InvalidJson { .. } => WireErrorKind::InvalidJson,
            WireError::InvalidTask { .. } => WireErrorKind::InvalidTask,
            WireError::InvalidResult { .. } => WireErrorKind::InvalidResult,
            WireError::InvalidDeadLetter { .. } => WireErrorKind::InvalidDeadLetter,
            WireError::Oversized { .. } => WireErrorKind::Oversized,
        }
    }
}

/// Encodes and decodes task and result entries, with a size limit.
///
/// The limit applies to the JSON in `data`, on encode (a producer learns at
/// once that its task is too large) and on decode (a worker treats an
/// oversized entry from another producer as poison instead of parsing it).
/// The default is [`WireCodec::DEFAULT_MAX_BYTES`], 512 KiB.
///
/// ```
/// use crewq_core::{Task, WireCodec, WireErrorKind};
/// use serde_json::json;
///
/// let codec = WireCodec::with_max_bytes(256);
/// let task = Task::new("research", "analyze", json!({"text": "x".repeat(300)})).build()?;
/// let err = codec.encode_task(&task).unwrap_err();
/// assert_eq!(err.kind(), WireErrorKind::Oversized);
/// # Ok::<(), crewq_core::TaskBuildError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WireCodec {
    max_bytes: usize,
}

impl Default for WireCodec {
    fn default() -> Self {
        WireCodec::with_max_bytes(Self::DEFAULT_MAX_BYTES)
    }
}

impl WireCodec {
    /// 512 KiB: far above any sane task, far below Redis's 512 MB value cap,
    /// and small enough that one stray entry cannot stall a worker.
    pub const DEFAULT_MAX_BYTES: usize = 512 * 1024;

    /// A codec whose entries' JSON may be at most `max_bytes` long.
    pub const fn with_max_bytes(max_bytes: usize) -> Self {
        WireCodec { max_bytes }
    }

    /// The limit in bytes.
    pub const fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// A task's entry fields: `data` = its JSON.
    ///
    /// # Errors
    ///
    /// [`WireError::InvalidTask`] when the payload does not serialize as a
    /// JSON object; [`WireError::Oversized`] over the limit.
    pub fn encode_task<P: Serialize>(&self, task: &Task<P>) -> Result<Fields, WireError> {
        let json = serde_json::to_vec(task).map_err(|e| WireError::InvalidTask {
            message: e.to_string(),
        })?;
        self.data_fields(json)
    }

    /// The task in an entry's fields, checked as the seed checks it.
    ///
    /// # Errors
    ///
    /// [`WireError::MissingData`] without `data`, [`WireError::Oversized`]
    /// over the limit, [`WireError::InvalidJson`] when `data` is not JSON,
    /// [`WireError::InvalidTask`] when it is JSON but not a valid task.
    pub fn decode_task<P: DeserializeOwned>(&self, fields: &Fields) -> Result<Task<P>, WireError> {
        let data = self.data(fields)?;
        decode_json(DATA_FIELD, data, |message| WireError::InvalidTask {
            message,
        })
    }

    /// A result's entry fields: `data` = its JSON.
    ///
    /// # Errors
    ///
    /// [`WireError::InvalidResult`] when `output` is not an object;
    /// [`WireError::Oversized`] over the limit.
    pub fn encode_result(&self, result: &TaskResult) -> Result<Fields, WireError> {
        let json = serde_json::to_vec(result).map_err(|e| WireError::InvalidResult {
            message: e.to_string(),
        })?;
        self.data_fields(json)
    }

    /// The result in an entry's fields.
    ///
    /// # Errors
    ///
    /// As [`decode_task`](Self::decode_task), with
    /// [`WireError::InvalidResult`] for JSON that is not a valid result.
    pub fn decode_result(&self, fields: &Fields) -> Result<TaskResult, WireError> {
        let data = self.data(fields)?;
        decode_json(DATA_FIELD, data, |message| WireError::InvalidResult {
            message,
        })
    }

    fn data_fields(&self, json: Vec<u8>) -> Result<Fields, WireError> {
        self.check_size(json.len())?;
        Ok(Fields::new().with(DATA_FIELD, Bytes::from(json)))
    }

    fn data<'f>(&self, fields: &'f Fields) -> Result<&'f [u8], WireError> {
        let data = fields
            .get(DATA_FIELD)
            .ok_or(WireError::MissingData { field: DATA_FIELD })?;
        self.check_size(data.len())?;
        Ok(data)
    }

    fn check_size(&self, size: usize) -> Result<(), WireError> {
        if size > self.max_bytes {
            return Err(WireError::Oversized {
                size,
                limit: self.max_bytes,
            });
        }
        Ok(())
    }
}

/// Parses `data`, telling malformed JSON (syntax, end of input, bad UTF-8)
/// from well-formed JSON of the wrong shape.
pub(crate) fn decode_json<T: DeserializeOwned>(
    field: &'static str,
    data: &[u8],
    invalid: impl FnOnce(String) -> WireError,
) -> Result<T, WireError> {
    serde_json::from_slice(data).map_err(|e| match e.classify() {
        Category::Data => invalid(e.to_string()),
        Category::Syntax | Category::Eof | Category::Io => {
            WireError::InvalidJson { field, source: e }
        }
    })
}

/// [`WireCodec::encode_task`] with the default limit.
///
/// # Errors
///
/// As [`WireCodec::encode_task`].
pub fn task_to_fields<P: Serialize>(task: &Task<P>) -> Result<Fields, WireError> {
    WireCodec::default().encode_task(task)
}

/// [`WireCodec::decode_task`] with the default limit.
///
/// # Errors
///
/// As [`WireCodec::decode_task`].
pub fn task_from_fields<P: DeserializeOwned>(fields: &Fields) -> Result<Task<P>, WireError> {
    WireCodec::default().decode_task(fields)
}

/// [`WireCodec::encode_result`] with the default limit.
///
/// # Errors
///
/// As [`WireCodec::encode_result`].
pub fn result_to_fields(result: &TaskResult) -> Result<Fields, WireError> {
    WireCodec::default().encode_result(result)
}

/// [`WireCodec::decode_result`] with the default limit.
///
/// # Errors
///
/// As [`WireCodec::decode_result`].
pub fn result_from_fields(fields: &Fields) -> Result<TaskResult, WireError> {
    WireCodec::default().decode_result(fields)
}

impl<P: Serialize> Task<P> {
    /// The task's entry fields, with the default limit ([`task_to_fields`]).
    ///
    /// # Errors
    ///
    /// As [`WireCodec::encode_task`].
    pub fn to_fields(&self) -> Result<Fields, WireError> {
        task_to_fields(self)
    }
}

impl<P: DeserializeOwned> Task<P> {
    /// The task in an entry's fields, with the default limit
    /// ([`task_from_fields`]).
    ///
    /// # Errors
    ///
    /// As [`WireCodec::decode_task`].
    pub fn from_fields(fields: &Fields) -> Result<Self, WireError> {
        task_from_fields(fields)
    }
}

impl TaskResult {
    /// The result's entry fields, with the default limit.
    ///
    /// # Errors
    ///
    /// As [`WireCodec::encode_result`].
    pub fn to_fields(&self) -> Result<Fields, WireError> {
        result_to_fields(self)
    }

    /// The result in an entry's fields, with the default limit.
    ///
    /// # Errors
    ///
    /// As [`WireCodec::decode_result`].
    pub fn from_fields(fields: &Fields) -> Result<Self, WireError> {
        result_from_fields(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn data(json: &str) -> Fields {
        Fields::new().with(DATA_FIELD, json.to_owned())
    }

    fn task_kind(fields: &Fields) -> Option<WireErrorKind> {
        task_from_fields::<Value>(fields).err().map(|e| e.kind())
    }

    #[test]
    fn poison_entries_get_the_kind_a_worker_acts_on() {
        let ok = r#"{"task_id":"t","agent_type":"a","action":"x"}"#;
        assert_eq!(task_kind(&data(ok)), None);
        assert_eq!(
            task_kind(&Fields::new().with("other", ok)),
            Some(WireErrorKind::MissingData)
        );
        assert_eq!(
            task_kind(&data("{not json")),
            Some(WireErrorKind::InvalidJson)
        );
        assert_eq!(
            task_kind(&data(r#"{"task_id":"#)),
            Some(WireErrorKind::InvalidJson)
        );
        assert_eq!(task_kind(&data("")), Some(WireErrorKind::InvalidJson));
        let not_utf8 = Fields::new().with(DATA_FIELD, &b"{\"task_id\":\"\xff\"}"[..]);
        assert_eq!(task_kind(&not_utf8), Some(WireErrorKind::InvalidJson));
        assert_eq!(
            task_kind(&data(r#"{"agent_type":"a","action":"x"}"#)),
            Some(WireErrorKind::InvalidTask)
        );
        assert_eq!(
            task_kind(&data(
                r#"{"task_id":"t","agent_type":"a","action":"x","priority":11}"#
            )),
            Some(WireErrorKind::InvalidTask)
        );
        assert_eq!(task_kind(&data("[1,2]")), Some(WireErrorKind::InvalidTask));
    }

    #[test]
    fn the_size_limit_applies_on_encode_and_decode() {
        let task = Task::new("a", "x", json!({"s": "y".repeat(600 * 1024)}))
            .build()
            .expect("ok");
        let err = task_to_fields(&task).expect_err("too large");
        let WireError::Oversized { size, limit } = err else {
            panic!("{err}");
        };
        assert_eq!(limit, 524_288);
        assert!(size > limit);
        assert!(err_text(size, limit).contains("over the limit of 524288 bytes"));

        let big = WireCodec::with_max_bytes(1 << 20)
            .encode_task(&task)
            .expect("fits 1 MiB");
        let err = WireCodec::default()
            .decode_task::<Value>(&big)
            .expect_err("too large");
        assert_eq!(err.kind(), WireErrorKind::Oversized);
        let exact = WireCodec::with_max_bytes(big.byte_len() - DATA_FIELD.len());
        assert!(
            exact.decode_task::<Value>(&big).is_ok(),
            "the limit is inclusive"
        );
    }

    fn err_text(size: usize, limit: usize) -> String {
        WireError::Oversized { size, limit }.to_string()
    }

    #[test]
    fn results_round_trip_and_report_their_own_kind() {
        let task = Task::new("a", "x", json!({})).build().expect("ok");
        let result = TaskResult::success(&task, json!({"n": 1}));
        let fields = result.to_fields().expect("ok");
        assert_eq!(TaskResult::from_fields(&fields).expect("ok"), result);
        let err = result_from_fields(&data(r#"{"task_id":"t","agent_type":"a","status":"done"}"#))
            .expect_err("status");
        assert_eq!(err.kind(), WireErrorKind::InvalidResult);
        let err = TaskResult::success(&task, json!([1]))
            .to_fields()
            .expect_err("output");
        assert_eq!(err.kind(), WireErrorKind::InvalidResult);
    }

    #[test]
    fn kinds_read_back_from_their_text() {
        for kind in WireErrorKind::ALL {
            assert_eq!(kind.as_str().parse::<WireErrorKind>(), Ok(kind));
        }
        assert_eq!("poison".parse::<WireErrorKind>(), Err(()));
    }
}
