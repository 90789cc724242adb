//! How much of a stream crewq keeps: [`Retention`], and the [`Trimmer`] that
//! applies it without ever cutting work a consumer group has not finished.
//!
//! # The safe default
//!
//! [`Retention::default`] ([`Retention::Acknowledged`]) never removes an
//! entry that some consumer group on the stream has not yet delivered and
//! acknowledged. Every so often (see [`Acknowledged`]) the [`Trimmer`]
//! computes the stream's *floor*, the smallest id some group still needs
//! (see [`safe_floor`]), and trims below it with `XTRIM MINID ~`. A stream
//! with no group at all keeps what [`Acknowledged::without_group`] says:
//! everything for task streams (the worker's group, once created at the
//! beginning, will read it all), a bounded length for results, a bounded age
//! for dead letters.
//!
//! The cost: the stream keeps every unfinished entry, however many, so a
//! backlog (or a consumer group nobody reads any more) holds memory until it
//! is worked off (or the group is destroyed with `XGROUP DESTROY`); and each
//! check costs one `XINFO GROUPS`, one `XPENDING` per group and one `XTRIM`,
//! once per [`Acknowledged::every_appends`] appends or
//! [`Acknowledged::every`], not once per append.
//!
//! # Cutting by count or age
//!
//! [`Retention::MaxLenEvenUnread`] and [`Retention::MaxAgeEvenUnread`] trim
//! in the same `XADD` regardless of groups: cheaper and strictly bounded,
//! but they remove tasks no worker has read yet, silently. Use them only
//! where losing unread entries is acceptable.

mod floor;
mod trimmer;

use std::time::Duration;

pub use floor::safe_floor;
pub use trimmer::Trimmer;

use crate::{StreamId, Trim};

/// What a stream with no consumer group keeps under
/// [`Retention::Acknowledged`]: no group has read any of it, so no floor
/// exists, and the bound is the only one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WithoutGroup {
    /// Keep everything: a group created later at the beginning reads it
    /// all. Right for task streams.
    KeepAll,
    /// Keep about the newest `n` entries (`MAXLEN ~ n`).
    MaxLen(u64),
    /// Keep about the entries younger than this, measured back from the
    /// stream's newest id (`MINID ~` of its ms part minus the age): the
    /// broker's own clock, so no skew between the trimmer's clock and the
    /// broker's can cut fresh entries.
    MaxAge(Duration),
}

/// How often [`Retention::Acknowledged`] checks a stream, and what a stream
/// without a group keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acknowledged {
    /// Check a stream after this many appends to it (default
    /// [`Acknowledged::EVERY_APPENDS`]).
    pub every_appends: u64,
    /// ... or at the first append this long after its last check (default
    /// [`Acknowledged::EVERY`]). The first append a trimmer sees on a
    /// stream always checks it, so that short-lived producers trim too.
    pub every: Duration,
    /// What a stream with no consumer group keeps.
    pub without_group: WithoutGroup,
}

impl Acknowledged {
    /// The default [`Acknowledged::every_appends`]: 1000.
    pub const EVERY_APPENDS: u64 = 1000;
    /// The default [`Acknowledged::every`]: 10 s.
    pub const EVERY: Duration = Duration::from_secs(10);

    /// Checks every `n` appends (at least 1).
    #[must_use]
    pub fn every_appends(mut self, n: u64) -> Self {
        self.every_appends = n.max(1);
        self
    }

    /// Checks at the first append `interval` after the last check.
    #[must_use]
    pub fn every(mut self, interval: Duration) -> Self {
        self.every = interval;
        self
    }

    /// Keeps this much of a stream with no group.
    #[must_use]
    pub fn without_group(mut self, without_group: WithoutGroup) -> Self {
        self.without_group = without_group;
        self
    }
}

impl Default for Acknowledged {
    fn default() -> Self {
        Acknowledged {
            every_appends: Acknowledged::EVERY_APPENDS,
            every: Acknowledged::EVERY,
            without_group: WithoutGroup::KeepAll,
        }
    }
}

/// How much of a stream to keep. See the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Never trim.
    None,
    /// The default: periodically trim only what every consumer group has
    /// delivered and acknowledged (see the [module documentation](self)).
    Acknowledged(Acknowledged),
    /// `MAXLEN` in every append: keep the newest `len` entries, **whether
    /// or not a group has read the others**. A backlog longer than `len`
    /// loses its oldest tasks silently.
    MaxLenEvenUnread {
        /// How many entries to keep.
        len: u64,
        /// `~`: let Redis keep more when that is cheaper (it trims only whole
        /// internal nodes); `false` keeps exactly `len`.
        approximate: bool,
    },
    /// `MINID ~` in every append: drop entries older than this age, by their
    /// ids' ms part, approximately, **whether or not a group has read
    /// them**.
    ///
    /// The cut-off is computed from the appender's [`Clock`](crate::Clock),
    /// and the ids from the broker's: keep the age far above any clock skew
    /// between the two, or an append can trim itself away.
    MaxAgeEvenUnread(Duration),
}

impl Retention {
    /// Task streams' default: [`Retention::Acknowledged`] with the default
    /// schedule, keeping everything of a stream with no group.
    pub const DEFAULT: Retention = Retention::Acknowledged(Acknowledged {
        every_appends: Acknowledged::EVERY_APPENDS,
        every: Acknowledged::EVERY,
        without_group: WithoutGroup::KeepAll,
    });

    /// How many results a results stream without any group keeps under
    /// [`Retention::RESULTS`]: 100,000 (the old `MAXLEN ~` of every stream).
    pub const RESULTS_WITHOUT_GROUP: u64 = 100_000;

    /// Results streams' default: what supervisors' groups have not gathered
    /// is kept; a results stream no supervisor reads keeps about the newest
    /// [`Retention::RESULTS_WITHOUT_GROUP`] results. A supervisor that is
    /// retired for good holds the stream until its group is destroyed.
    pub const RESULTS: Retention = Retention::Acknowledged(Acknowledged {
        every_appends: Acknowledged::EVERY_APPENDS,
        every: Acknowledged::EVERY,
        without_group: WithoutGroup::MaxLen(Retention::RESULTS_WITHOUT_GROUP),
    });

    /// How long a dead-letter stream keeps a dead letter under
    /// [`Retention::DEAD_LETTERS`]: 14 days.
    pub const DEAD_LETTERS_AGE: Duration = Duration::from_secs(14 * 24 * 60 * 60);

    /// Dead-letter streams' default: no group reads them (operators list
    /// and replay them by id), so they are bounded by age: a dead letter is
    /// kept about [`Retention::DEAD_LETTERS_AGE`]. The trade-off: one not
    /// looked at for two weeks is gone, and a flood of dead letters within
    /// that time is kept whole.
    pub const DEAD_LETTERS: Retention = Retention::Acknowledged(Acknowledged {
        every_appends: Acknowledged::EVERY_APPENDS,
        every: Acknowledged::EVERY,
        without_group: WithoutGroup::MaxAge(Retention::DEAD_LETTERS_AGE),
    });

    /// The safe retention with its default schedule: [`Retention::DEFAULT`].
    pub const fn acknowledged() -> Self {
        Retention::DEFAULT
    }

    /// [`Retention::MaxLenEvenUnread`], approximate: cuts unread entries.
    pub const fn unsafe_max_len(len: u64) -> Self {
        Retention::MaxLenEvenUnread {
            len,
            approximate: true,
        }
    }

    /// The trim an append at `now_ms` carries in the same command: only the
    /// `EvenUnread` kinds trim there; [`Retention::Acknowledged`] trims
    /// through a [`Trimmer`] instead.
    pub fn trim(self, now_ms: u64) -> Option<Trim> {
        match self {
            Retention::None | Retention::Acknowledged(_) => None,
            Retention::MaxLenEvenUnread { len, approximate } => {
                let trim = Trim::max_len(len);
                Some(if approximate {
                    trim.approximate()
                } else {
                    trim
                })
            }
            Retention::MaxAgeEvenUnread(age) => Some(age_trim(age, now_ms)),
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention::DEFAULT
    }
}

/// `MINID ~` of `now_ms` minus `age`.
pub(crate) fn age_trim(age: Duration, now_ms: u64) -> Trim {
    let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
    Trim::min_id(StreamId::new(now_ms.saturating_sub(age_ms), 0)).approximate()
}
