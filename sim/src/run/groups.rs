//! Injected destructions of a worker group (issue 9, a group destroyed
//! mid-run): an operator's `XGROUP DESTROY` under a running crew. The
//! workers must make the group again where nothing it still needed is lost;
//! what they had finished may run again, which the checker reports apart.

use crewq_core::{AgentKeys, Broker};

use crate::history::{Event, Recorder};
use crate::recorder::RecordingBroker;

/// Destroys `keys`' worker group, without faults, and records it in the
/// history. Returns whether there was a group to destroy.
pub(crate) async fn destroy<B: Broker>(
    broker: &RecordingBroker<B>,
    keys: &AgentKeys,
    recorder: &Recorder,
) -> bool {
    let destroyed = broker
        .group_destroy(&keys.tasks, &keys.group)
        .await
        .unwrap_or(false);
    if destroyed {
        recorder.record(Event::GroupDestroyed {
            stream: keys.tasks.clone(),
        });
    }
    destroyed
}
