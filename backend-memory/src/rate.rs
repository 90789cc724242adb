//! Shared rate limits: the sorted sets and strings the Redis backend's
//! scripts keep (`backend-redis/src/rate.rs`), as plain maps, changed under
//! the broker's lock so each call is one atomic step as a script is.

use std::collections::BTreeMap;
use std::time::Duration;

use crewq_core::{RateAcquire, RateGrant, RateKeys, RateLimit, RateState};

/// Every rate-limit key, by name, as Redis keeps them: a log (sorted set)
/// of member -> score, a pause's end, a limit's encoding.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rates {
    logs: BTreeMap<String, BTreeMap<String, u64>>,
    paused_until: BTreeMap<String, u64>,
    limits: BTreeMap<String, String>,
}

impl Rates {
    /// Drops log members scored at or below `floor`
    /// (`ZREMRANGEBYSCORE key -inf floor`), and the log if it empties, as
    /// Redis deletes an empty sorted set.
    fn trim(&mut self, key: &str, floor: u64) {
        if let Some(log) = self.logs.get_mut(key) {
            log.retain(|_, score| *score > floor);
            if log.is_empty() {
                self.logs.remove(key);
            }
        }
    }

    fn len(&self, key: &str) -> usize {
        self.logs.get(key).map_or(0, BTreeMap::len)
    }

    /// The pause left at `now`, dropping one that ended (its key expired).
    fn pause_left(&mut self, key: &str, now: u64) -> Option<u64> {
        match self.paused_until.get(key) {
            Some(&until) if until > now => Some(until - now),
            Some(_) => {
                self.paused_until.remove(key);
                None
            }
            None => None,
        }
    }

    /// Drops what no longer counts at `now`: starts out of the window,
    /// running permits expired.
    fn expire(&mut self, keys: &RateKeys, window: Option<u64>, now: u64) {
        if let Some(window) = window {
            self.trim(&keys.starts, now.saturating_sub(window));
        }
        self.trim(&keys.running, now);
    }

    pub(crate) fn acquire(&mut self, acquire: RateAcquire, now: u64) -> RateGrant {
        let RateAcquire {
            keys,
            limit,
            permits,
            lease,
        } = acquire;
        self.limits.insert(keys.limit.clone(), limit.encode());
        let window = limit.window_ms();
        self.expire(&keys, window, now);
        if let Some(left) = self.pause_left(&keys.paused, now) {
            return RateGrant {
                granted: 0,
                at_ms: now,
                retry_in: Some(Duration::from_millis(left)),
            };
        }
        let mut room = permits.len();
        if let Some((n, _)) = limit.starts {
            room = room.min((n as usize).saturating_sub(self.len(&keys.starts)));
        }
        if let Some(m) = limit.running {
            room = room.min((m as usize).saturating_sub(self.len(&keys.running)));
        }
        let expiry = now.saturating_add(lease_ms(lease));
        for permit in &permits[..room] {
            if window.is_some() {
                self.logs
                    .entry(keys.starts.clone())
                    .or_default()
                    .insert(permit.clone(), now);
            }
            self.logs
                .entry(keys.running.clone())
                .or_default()
                .insert(permit.clone(), expiry);
        }
        let retry_in = if room < permits.len() {
            // When the oldest start leaves the window, if starts are short.
            match (limit.starts, window, self.logs.get(&keys.starts)) {
                (Some((n, _)), Some(window), Some(log)) if log.len() >= n as usize => log
                    .values()
                    .min()
                    .map(|oldest| Duration::from_millis((oldest + window).saturating_sub(now))),
                _ => None,
            }
        } else {
            None
        };
        RateGrant {
            granted: room,
            at_ms: now,
            retry_in,
        }
    }

    pub(crate) fn renew(
        &mut self,
        keys: &RateKeys,
        permits: &[String],
        lease: Duration,
        now: u64,
    ) -> Vec<String> {
        self.trim(&keys.running, now);
        let Some(log) = self.logs.get_mut(&keys.running) else {
            return Vec::new();
        };
        let expiry = now.saturating_add(lease_ms(lease));
        permits
            .iter()
            .filter(|permit| match log.get_mut(*permit) {
                Some(score) => {
                    *score = expiry;
                    true
                }
                None => false,
            })
            .cloned()
            .collect()
    }

    pub(crate) fn release(
        &mut self,
        keys: &RateKeys,
        finished: &[String],
        unused: &[String],
        now: u64,
    ) -> u64 {
        self.trim(&keys.running, now);
        let mut dropped = 0;
        for permit in finished.iter().chain(unused) {
            if let Some(log) = self.logs.get_mut(&keys.running)
                && log.remove(permit).is_some()
            {
                dropped += 1;
            }
        }
        for permit in unused {
            if let Some(log) = self.logs.get_mut(&keys.starts) {
                log.remove(permit);
            }
        }
        for key in [&keys.running, &keys.starts] {
            if self.logs.get(key).is_some_and(BTreeMap::is_empty) {
                self.logs.remove(key);
            }
        }
        dropped
    }

    pub(crate) fn pause(&mut self, keys: &RateKeys, pause: Duration, now: u64) -> Duration {
        let until = now.saturating_add(lease_ms(pause));
        let until = match self.pause_left(&keys.paused, now) {
            Some(left) => until.max(now + left),
            None => until,
        };
        if until > now {
            self.paused_until.insert(keys.paused.clone(), until);
        }
        Duration::from_millis(until - now)
    }

    pub(crate) fn state(&mut self, keys: &RateKeys, now: u64) -> RateState {
        let limit = self
            .limits
            .get(&keys.limit)
            .and_then(|l| RateLimit::decode(l));
        let window = limit.and_then(|l| l.window_ms());
        self.expire(keys, window, now);
        RateState {
            limit,
            running: self.len(&keys.running) as u64,
            starts_in_window: if window.is_some() {
                self.len(&keys.starts) as u64
            } else {
                0
            },
            paused_for: self
                .pause_left(&keys.paused, now)
                .map(Duration::from_millis),
        }
    }
}

/// A lease or pause in whole ms, rounded up, as the Redis backend sends it.
fn lease_ms(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}
