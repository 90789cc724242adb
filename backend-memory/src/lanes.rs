//! [`Broker::read_lanes`](crewq_core::Broker::read_lanes) on the memory
//! broker: every lane looked at and read under the one lock, so the choice
//! is atomic, as the Redis script's is.

use std::ops::Bound;

use crewq_core::lanes::{next_lane, validate_read_lanes};
use crewq_core::{LanesRead, ReadLanes, Result, StreamId};

use crate::MemoryBroker;
use crate::group::{Group, duration_ms};

impl MemoryBroker {
    pub(crate) fn read_lanes_locked(&self, read: &ReadLanes) -> Result<LanesRead> {
        validate_read_lanes(read)?;
        let now_ms = self.now_ms();
        let starvation_ms = duration_ms(read.starvation);
        self.with_state(|state| {
            let delayed = &state.delayed;
            let keys = &mut state.streams;
            let mut out = LanesRead {
                now_ms,
                ..LanesRead::default()
            };
            // Each lane's oldest unread entry: (priority, its time), or None.
            let head = |keys: &std::collections::BTreeMap<String, crate::Key>, i: usize| {
                let lane = &read.lanes[i];
                let key = keys.get(&lane.stream)?;
                let group = key.groups.get(&read.group)?;
                let after = (Bound::Excluded(group.last_delivered), Bound::Unbounded);
                key.stream.range(after, Some(1)).first().map(|e| e.id.ms)
            };
            let mut heads: Vec<(u8, Option<u64>)> = Vec::with_capacity(read.lanes.len());
            for (i, lane) in read.lanes.iter().enumerate() {
                let scheduled = lane
                    .delayed
                    .as_ref()
                    .is_some_and(|set| delayed.get(set).is_some_and(|m| m.len() > 0));
                if keys.contains_key(&lane.stream) || scheduled {
                    out.present.push(i);
                }
                if let Some(key) = keys.get_mut(&lane.stream)
                    && !key.groups.contains_key(&read.group)
                {
                    if lane.create_group {
                        key.groups
                            .insert(read.group.clone(), Group::new(StreamId::ZERO));
                    } else {
                        out.no_group.push(i);
                    }
                }
                heads.push((lane.priority, head(keys, i)));
            }
            while out.entries.len() < read.count {
                let Some(i) = next_lane(&heads, now_ms, starvation_ms) else {
                    break;
                };
                let lane = &read.lanes[i];
                let Some(key) = keys.get_mut(&lane.stream) else {
                    break;
                };
                let Some(group) = key.groups.get_mut(&read.group) else {
                    break;
                };
                let taken = group.read_new(&key.stream, &read.consumer, 1, now_ms);
                if taken.is_empty() {
                    heads[i].1 = None;
                    continue;
                }
                out.entries
                    .extend(taken.into_iter().map(|entry| (i, entry)));
                heads[i].1 = head(keys, i);
            }
            out.left = heads
                .iter()
                .enumerate()
                .filter(|(_, (_, head))| head.is_some())
                .map(|(i, _)| i)
                .collect();
            Ok(out)
        })
    }
}
