//! Shared rate limits per agent type: at most N handler starts in any
//! window of a given length and at most M handlers running, across every
//! worker of the agent type, and a pause a handler asks for when its
//! upstream says "slow down" (an HTTP 429).
//!
//! The budget lives in the broker, so ten workers share one: each start
//! takes a *permit* in one atomic step ([`Broker::rate_acquire`], a Lua
//! script on Redis judged by the server's `TIME`). A permit is two records:
//!
//! - a **start**, kept in a sliding log (a sorted set scored by the grant's
//!   time) for one window: a grant is refused while the log holds N starts
//!   newer than `now - window`, so *every* window of that length, not only
//!   aligned one-second buckets, holds at most N grants;
//! - a **running** record, scored by its expiry (`now + lease`): a grant is
//!   refused while M unexpired ones are held. The worker renews it with
//!   its task's lease ([`Broker::rate_renew`]) and releases it when the
//!   run ends ([`Broker::rate_release`]); a crashed worker's permits expire
//!   with its lease, as its entries do, so the room comes back.
//!
//! What the broker guarantees is about permits: at most N granted in any
//! window, at most M unexpired at any instant. A worker that stalls past
//! its lease (a zombie) still runs a handler whose permit has expired, as
//! it still runs a task a peer has reclaimed: such runs are outside the M.
//! And a broker rolled back (an AOF restart, a failover to a lagging
//! replica) forgets the grants it lost, as it forgets acknowledgements.
//!
//! [`Broker::rate_acquire`]: crate::Broker::rate_acquire
//! [`Broker::rate_renew`]: crate::Broker::rate_renew
//! [`Broker::rate_release`]: crate::Broker::rate_release

use std::fmt;
use std::time::Duration;

/// A shared rate limit of one agent type: at most `starts.0` handler
/// starts in any window of `starts.1`, at most `running` handlers at once.
/// `None` is no limit of that kind; a limit with neither still makes the
/// worker honour a slow-down's pause.
///
/// ```
/// use std::time::Duration;
/// use crewq_core::RateLimit;
/// let limit = RateLimit::new().starts(10, Duration::from_secs(1)).running(4);
/// assert!(limit.validate().is_ok());
/// assert_eq!(limit.to_string(), "10/1000ms, 4 running");
/// assert!(RateLimit::new().starts(0, Duration::from_secs(1)).validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// At most this many starts in any window of this length.
    pub starts: Option<(u32, Duration)>,
    /// At most this many running at once.
    pub running: Option<u32>,
}

impl RateLimit {
    /// No limit yet: honours slow-downs only.
    pub fn new() -> Self {
        RateLimit::default()
    }

    /// At most `n` starts in any window of length `per`.
    #[must_use]
    pub fn starts(mut self, n: u32, per: Duration) -> Self {
        self.starts = Some((n, per));
        self
    }

    /// At most `m` handlers running at once.
    #[must_use]
    pub fn running(mut self, m: u32) -> Self {
        self.running = Some(m);
        self
    }

    /// The window in whole ms, rounded up (a window never shrinks).
    pub fn window_ms(&self) -> Option<u64> {
        self.starts.map(|(_, per)| ceil_ms(per))
    }

    /// Checks the limit can be kept.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a count
    /// of 0 (nothing would ever start) or a window shorter than 1 ms.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(crate::Error::InvalidArgument(format!("rate limit: {m}")));
        if let Some((n, per)) = self.starts {
            if n == 0 {
                return bad("at least 1 start per window, or nothing ever starts");
            }
            if per < Duration::from_millis(1) {
                return bad("the window must be at least 1 ms");
            }
        }
        if self.running == Some(0) {
            return bad("at least 1 running, or nothing ever starts");
        }
        Ok(())
    }

    /// The limit as the broker records it for the monitor:
    /// `<n> <window ms> <m>`, `-` for a kind not limited.
    pub fn encode(&self) -> String {
        let (n, w) = match self.starts {
            Some((n, _)) => (n.to_string(), self.window_ms().unwrap_or(0).to_string()),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let m = self
            .running
            .map_or_else(|| "-".to_owned(), |m| m.to_string());
        format!("{n} {w} {m}")
    }

    /// The limit [`RateLimit::encode`] wrote; `None` for anything else.
    ///
    /// ```
    /// use std::time::Duration;
    /// use crewq_core::RateLimit;
    /// let limit = RateLimit::new().starts(3, Duration::from_millis(250));
    /// assert_eq!(RateLimit::decode(&limit.encode()), Some(limit));
    /// assert_eq!(RateLimit::decode("junk"), None);
    /// ```
    pub fn decode(text: &str) -> Option<RateLimit> {
        let mut parts = text.split(' ');
        let (n, w, m) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let starts = match (n, w) {
            ("-", "-") => None,
            (n, w) => Some((n.parse().ok()?, Duration::from_millis(w.parse().ok()?))),
        };
        let running = match m {
            "-" => None,
            m => Some(m.parse().ok()?),
        };
        Some(RateLimit { starts, running })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some((n, _)) = self.starts {
            parts.push(format!("{n}/{}ms", self.window_ms().unwrap_or(0)));
        }
        if let Some(m) = self.running {
            parts.push(format!("{m} running"));
        }
        if parts.is_empty() {
            return f.write_str("pauses only");
        }
        f.write_str(&parts.join(", "))
    }
}

/// The broker keys of one agent type's rate limit (in the task stream's
/// hash slot in the cluster layout: one script touches them all).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateKeys {
    /// The sliding log of starts: a sorted set scored by grant time.
    pub starts: String,
    /// The running permits: a sorted set scored by expiry.
    pub running: String,
    /// Paused until (ms of the broker's clock), a string with an expiry.
    pub paused: String,
    /// The limit last used ([`RateLimit::encode`]), for the monitor.
    pub limit: String,
}

/// A request for up to `permits.len()` permits: the first ones the room
/// allows are granted, each recorded as a start and as running until
/// `lease` from now.
///
/// The caller names the permits: each must be unique across every holder
/// of the agent type (a worker takes its consumer name and a counter), or
/// two grants would merge into one record and the log would count one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateAcquire {
    /// Where the budget is.
    pub keys: RateKeys,
    /// The limit to keep, recorded for the monitor too.
    pub limit: RateLimit,
    /// The permits wanted, in order.
    pub permits: Vec<String>,
    /// How long a running permit lives unless renewed.
    pub lease: Duration,
}

/// What a [`Broker::rate_acquire`](crate::Broker::rate_acquire) granted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateGrant {
    /// How many of the permits asked for were granted: the first ones.
    pub granted: usize,
    /// The broker's time of the grant, in ms.
    pub at_ms: u64,
    /// When fewer were granted than asked: how long until asking again can
    /// grant more, as far as the broker knows (the pause's end, or the
    /// oldest start in the window leaving it). `None` when the running
    /// permits alone are short: room comes back as runs end.
    pub retry_in: Option<Duration>,
}

/// One agent type's rate limit as the broker holds it: what
/// [`Broker::rate_state`](crate::Broker::rate_state) reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    /// The limit workers last acquired with; `None` if none has.
    pub limit: Option<RateLimit>,
    /// Unexpired running permits.
    pub running: u64,
    /// Starts in the window ending now (0 without a start limit).
    pub starts_in_window: u64,
    /// How long the agent type stays paused; `None` if it is not.
    pub paused_for: Option<Duration>,
}

/// Checks what every backend rejects before an acquire.
///
/// # Errors
///
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a limit
/// [`RateLimit::validate`] refuses, a lease under 1 ms, or an empty permit
/// name.
pub fn validate_rate_acquire(acquire: &RateAcquire) -> crate::Result<()> {
    acquire.limit.validate()?;
    if acquire.lease < Duration::from_millis(1) {
        return Err(crate::Error::InvalidArgument(
            "a rate permit's lease must be at least 1 ms".to_owned(),
        ));
    }
    if acquire.permits.iter().any(String::is_empty) {
        return Err(crate::Error::InvalidArgument(
            "a rate permit needs a name".to_owned(),
        ));
    }
    Ok(())
}

/// `d` in whole ms, rounded up.
pub(crate) fn ceil_ms(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip_through_their_encoding() {
        for limit in [
            RateLimit::new(),
            RateLimit::new().running(3),
            RateLimit::new().starts(7, Duration::from_secs(2)),
            RateLimit::new()
                .starts(1, Duration::from_millis(10))
                .running(1),
        ] {
            assert_eq!(RateLimit::decode(&limit.encode()), Some(limit), "{limit}");
        }
        for bad in ["", "1 2", "1 2 3 4", "x 2 3", "1 - 3"] {
            assert_eq!(RateLimit::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn limits_that_cannot_be_kept_are_refused() {
        assert!(RateLimit::new().running(0).validate().is_err());
        assert!(
            RateLimit::new()
                .starts(1, Duration::from_micros(10))
                .validate()
                .is_err()
        );
        assert!(RateLimit::new().validate().is_ok());
        assert_eq!(
            RateLimit::new()
                .starts(1, Duration::from_micros(1500))
                .window_ms(),
            Some(2)
        );
    }
}
