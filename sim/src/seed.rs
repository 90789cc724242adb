//! One root seed, many independent generators.
//!
//! Every random choice of a run comes from the run's one seed, through a
//! generator of its own per purpose and index: the fault plan, each worker's
//! back-off jitter, each broker handle's faults. ChaCha's streams keep them
//! independent, so adding a worker or switching latency on does not
//! reshuffle the fault schedule of the others.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// The generator of a simulation: ChaCha12, seedable and with streams.
pub type SimRng = ChaCha12Rng;

/// What a generator is for; with an index, it names one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum Purpose {
    /// The fault plan drawn for a seed (and, in swarm mode, its rates).
    Plan = 1,
    /// A worker incarnation's back-off jitter.
    Worker = 2,
    /// A broker handle's faults (a worker incarnation, the producer, the
    /// supervisor).
    Broker = 3,
    /// The agent types' shared rate limits.
    RateLimit = 4,
    /// The handlers' slow-downs (an upstream's 429), drawn apart so that
    /// adding them reshuffles no other fault.
    SlowDown = 5,
}

/// The generator for `purpose` and `index` of `seed`.
pub(crate) fn rng(seed: u64, purpose: Purpose, index: u64) -> SimRng {
    let mut rng = SimRng::seed_from_u64(seed);
    // 16 bits of purpose above 48 of index: distinct streams for any index
    // a run can reach.
    rng.set_stream(((purpose as u64) << 48) | (index & ((1 << 48) - 1)));
    rng
}

/// A seed for a component that takes a `u64` (a worker, a `FaultyBroker`).
pub(crate) fn derive(seed: u64, purpose: Purpose, index: u64) -> u64 {
    rng(seed, purpose, index).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_purpose_and_index_and_repeat() {
        let a = derive(7, Purpose::Worker, 0);
        assert_eq!(a, derive(7, Purpose::Worker, 0));
        assert_ne!(a, derive(7, Purpose::Worker, 1));
        assert_ne!(a, derive(7, Purpose::Broker, 0));
        assert_ne!(a, derive(8, Purpose::Worker, 0));
    }
}
