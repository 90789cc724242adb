//! Stream entry ids (`<ms>-<seq>`), parsed and ordered as Redis does.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The id of a stream entry: a millisecond time and a sequence number.
///
/// Ids order by `(ms, seq)`, exactly as Redis compares them. `0-0` is the
/// smallest id and is never a valid entry id; it is what Redis uses for "no
/// entry" (an empty stream's last id, a finished `XAUTOCLAIM` cursor).
///
/// ```
/// use crewq_core::StreamId;
/// let id: StreamId = "1700000000000-3".parse()?;
/// assert_eq!(id, StreamId::new(1_700_000_000_000, 3));
/// assert_eq!(id.to_string(), "1700000000000-3");
/// assert!(StreamId::new(5, 0) > StreamId::new(4, 99));
/// // An incomplete id (no sequence) means sequence 0, as in XRANGE.
/// assert_eq!("42".parse::<StreamId>()?, StreamId::new(42, 0));
/// # Ok::<(), crewq_core::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// Milliseconds part (for `*` ids, the server's clock when added).
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// `0-0`: smaller than every entry id.
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };
    /// The largest representable id, `18446744073709551615-18446744073709551615`.
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// Builds an id from its two parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        StreamId { ms, seq }
    }

    /// Whether this is `0-0`.
    pub const fn is_zero(&self) -> bool {
        self.ms == 0 && self.seq == 0
    }

    /// The next id in order, or `None` after [`StreamId::MAX`].
    pub const fn successor(&self) -> Option<StreamId> {
        if self.seq < u64::MAX {
            Some(StreamId::new(self.ms, self.seq + 1))
        } else if self.ms < u64::MAX {
            Some(StreamId::new(self.ms + 1, 0))
        } else {
            None
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({self})")
    }
}

impl FromStr for StreamId {
    type Err = Error;

    /// Parses `<ms>-<seq>` or `<ms>` (sequence 0), rejecting anything else
    /// with [`Error::InvalidId`], as Redis rejects it with
    /// `ERR Invalid stream ID specified as stream command argument`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || Error::InvalidId(s.to_owned());
        let parse = |part: &str| {
            // u64::from_str accepts a leading '+'; Redis does not.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            part.parse::<u64>().map_err(|_| invalid())
        };
        match s.split_once('-') {
            Some((ms, seq)) => Ok(StreamId::new(parse(ms)?, parse(seq)?)),
            None => Ok(StreamId::new(parse(s)?, 0)),
        }
    }
}

impl TryFrom<&str> for StreamId {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        for text in ["0-0", "1-1", "18446744073709551615-18446744073709551615"] {
            let id: StreamId = text.parse().expect("valid id");
            assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn rejects_malformed_ids() {
        for text in [
            "",
            "-",
            "1-",
            "-1",
            "a-1",
            "1-b",
            "+1-1",
            "1-1-1",
            "18446744073709551616-0",
            " 1-1",
        ] {
            assert!(
                matches!(text.parse::<StreamId>(), Err(Error::InvalidId(_))),
                "{text:?} should be rejected"
            );
        }
    }

    #[test]
    fn successor_carries_into_ms() {
        assert_eq!(StreamId::new(1, 1).successor(), Some(StreamId::new(1, 2)));
        assert_eq!(
            StreamId::new(1, u64::MAX).successor(),
            Some(StreamId::new(2, 0))
        );
        assert_eq!(StreamId::MAX.successor(), None);
    }
}
