//! Entries kept aside until they are due: a delayed set per agent type, where
//! a failed attempt's retry waits out its back-off (and a task dispatched for
//! later waits for its time) without holding a worker's slot.
//!
//! A delayed set is a Redis sorted set: each member is one entry, encoded by
//! [`encode_member`], scored by its due time in ms of the **broker's** clock.
//! The broker's clock decides both when a member is due (a settle or a
//! schedule adds the delay to the broker's "now", and
//! [`Broker::promote`](crate::Broker::promote) compares with the broker's
//! "now") so workers whose clocks disagree still agree on what is due, and a
//! promoted entry's stream id (also from the broker's clock) is never older
//! than its due time.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{Fields, StreamEntry};

/// An entry to add to a delayed set: appended to the set's task stream once
/// `after` has passed on the broker's clock.
///
/// `token` makes the member unique (two identical retries of different
/// entries must not merge into one member, as a sorted set would): the
/// settled entry's id for a retry, the task id for a scheduled dispatch.
///
/// ```
/// use std::time::Duration;
/// use crewq_core::{Delay, Fields};
/// let delay = Delay::new("agent:delayed:research", Duration::from_secs(2), "1-0",
///     Fields::new().with("data", "{}"));
/// assert_eq!(delay.after, Duration::from_secs(2));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delay {
    /// The delayed set's key.
    pub set: String,
    /// How long after the write (on the broker's clock) it becomes due.
    pub after: Duration,
    /// What makes the member unique within the set.
    pub token: String,
    /// The fields of the entry appended when promoted.
    pub fields: Fields,
}

impl Delay {
    /// `fields`, due `after` from now in `set`, unique by `token`.
    pub fn new(
        set: impl Into<String>,
        after: Duration,
        token: impl Into<String>,
        fields: Fields,
    ) -> Self {
        Delay {
            set: set.into(),
            after,
            token: token.into(),
            fields,
        }
    }

    /// The delay in whole ms, as the sorted set scores it (rounded up, so
    /// nothing becomes due early).
    pub fn after_ms(&self) -> u64 {
        let ms = self.after.as_millis();
        let up = u128::from(!self.after.subsec_nanos().is_multiple_of(1_000_000));
        u64::try_from(ms + up).unwrap_or(u64::MAX)
    }

    /// This entry as a member of its set.
    pub fn member(&self) -> Bytes {
        encode_member(&self.token, &self.fields)
    }
}

/// What a [`Broker::promote`](crate::Broker::promote) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Promoted {
    /// The entries appended to the task stream, with their ids, in due
    /// order.
    pub entries: Vec<StreamEntry>,
    /// How long until the earliest member left in the set is due (zero if
    /// one is due already, past the call's count); `None` for an empty set.
    pub next_due_in: Option<Duration>,
}

/// A [`Delay`] added at most once per marker within a window, as
/// [`OnceEntry`](crate::OnceEntry) appends: how a task is dispatched for
/// later, idempotent by task id. The marker is the one an immediate
/// dispatch of the same task id sets, so the two exclude each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelayOnce {
    /// The entry to schedule.
    pub delay: Delay,
    /// The key remembering that it was scheduled (on Redis Cluster, in the
    /// delayed set's hash slot).
    pub marker: String,
    /// How long the marker is remembered; at least 1 ms.
    pub window: Duration,
}

impl DelayOnce {
    /// Schedules `delay` unless `marker` was set within `window`.
    pub fn new(delay: Delay, marker: impl Into<String>, window: Duration) -> Self {
        DelayOnce {
            delay,
            marker: marker.into(),
            window,
        }
    }
}

/// What a [`DelayOnce`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelayedOnce {
    /// Added to the delayed set; the marker now records
    /// [`StreamId::ZERO`](crate::StreamId::ZERO): no entry id yet.
    Scheduled,
    /// The marker was set: nothing was added; this is the id it recorded
    /// (`0-0` for a task scheduled, not appended, then).
    Duplicate(crate::StreamId),
}

/// Checks what every backend rejects before a schedule-once.
///
/// # Errors
///
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an entry
/// without fields or a window under 1 ms.
pub fn validate_delay_once(once: &DelayOnce) -> crate::Result<()> {
    validate_delay(&once.delay)?;
    if once.window < Duration::from_millis(1) {
        return Err(crate::Error::InvalidArgument(format!(
            "a schedule-once window must be at least 1 ms (marker '{}')",
            once.marker
        )));
    }
    Ok(())
}

/// Checks what every backend rejects before adding to a delayed set.
///
/// # Errors
///
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an entry
/// without fields.
pub fn validate_delay(delay: &Delay) -> crate::Result<()> {
    if delay.fields.is_empty() {
        return Err(crate::Error::InvalidArgument(format!(
            "a delayed entry needs at least one field (set '{}')",
            delay.set
        )));
    }
    Ok(())
}

/// Encodes a delayed entry as a sorted-set member: the token, then each
/// name and value, each as `<decimal length>:<bytes>`. Binary-safe, and
/// simple enough for the promote script to read back in Lua.
///
/// ```
/// use crewq_core::{Fields, decode_member, encode_member};
/// let fields = Fields::new().with("data", "{}").with("attempts", "1");
/// let member = encode_member("1-0", &fields);
/// assert_eq!(&member[..], b"3:1-04:data2:{}8:attempts1:1");
/// assert_eq!(decode_member(&member), Some(fields));
/// ```
pub fn encode_member(token: &str, fields: &Fields) -> Bytes {
    let mut out = BytesMut::with_capacity(token.len() + fields.byte_len() + 8 * fields.len() + 8);
    let mut part = |bytes: &[u8]| {
        out.put_slice(bytes.len().to_string().as_bytes());
        out.put_u8(b':');
        out.put_slice(bytes);
    };
    part(token.as_bytes());
    for (name, value) in fields.iter() {
        part(name);
        part(value);
    }
    out.freeze()
}

/// The fields of a member written by [`encode_member`]; `None` for one that
/// is not (a peer wrote it), which promote appends as it is, in one `data`
/// field, so a worker dead-letters it as poison rather than it being lost.
pub fn decode_member(member: &[u8]) -> Option<Fields> {
    let mut parts = Vec::new();
    let mut rest = member;
    while !rest.is_empty() {
        let colon = rest.iter().position(|&b| b == b':')?;
        let digits = &rest[..colon];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let body = rest.get(colon + 1..colon + 1 + len)?;
        parts.push(Bytes::copy_from_slice(body));
        rest = &rest[colon + 1 + len..];
    }
    if parts.len() < 3 || parts.len() % 2 == 0 {
        return None;
    }
    let mut pairs = parts.into_iter().skip(1);
    let mut fields = Fields::new();
    while let (Some(name), Some(value)) = (pairs.next(), pairs.next()) {
        fields.push(name, value);
    }
    Some(fields)
}

/// The fields a member is promoted as: its own, or the whole member in one
/// `data` field when it does not decode.
pub fn promoted_fields(member: &[u8]) -> Fields {
    decode_member(member)
        .unwrap_or_else(|| Fields::new().with(crate::DATA_FIELD, Bytes::copy_from_slice(member)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_binary_fields() {
        let fields = Fields::new()
            .with(&b"a:b"[..], &b"\x00\xff:12:"[..])
            .with("", "x");
        assert_eq!(decode_member(&encode_member("t:1", &fields)), Some(fields));
    }

    #[test]
    fn malformed_members_do_not_decode() {
        for bad in [
            &b""[..],
            b"3:abc",
            b"3:abc4:data",
            b"x:abc4:data1:1",
            b"3:abc4:data9:1",
            b"+3:abc4:data1:1",
        ] {
            assert_eq!(decode_member(bad), None, "{bad:?}");
        }
        assert_eq!(
            promoted_fields(b"junk").get("data").map(|v| &v[..]),
            Some(&b"junk"[..])
        );
    }

    #[test]
    fn delays_round_up_to_whole_ms() {
        let delay = |after| Delay::new("s", after, "t", Fields::new().with("a", "b"));
        assert_eq!(delay(Duration::from_micros(1500)).after_ms(), 2);
        assert_eq!(delay(Duration::from_millis(7)).after_ms(), 7);
        assert_eq!(delay(Duration::ZERO).after_ms(), 0);
    }
}
