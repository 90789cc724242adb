//! Reading the results streams in the supervisor's consumer group: its own
//! pending entries first, then new ones, each result routed to the workflow
//! that awaits it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::Inner;
use super::registry::{self, Received};
use crate::{Broker, DeliveredEntry, Error, GroupStart, ReadGroup, StreamId};

/// What the one reader of a supervisor remembers between rounds.
#[derive(Debug, Default)]
pub(super) struct ReaderState {
    /// Streams whose pending list this supervisor has drained since it
    /// started. A stream leaves the set while a read of new entries is in
    /// flight, and comes back only when the read returned: if that read is
    /// cancelled or fails after the server delivered entries, they are in
    /// the pending list unseen, and the next round drains it again (what was
    /// already routed is held, so it is not routed twice).
    drained: BTreeSet<String>,
    /// The largest id read from each stream since it started. Entries a
    /// lost read delivered are new ones, after every id read before, so
    /// draining again after a failed read starts here.
    read_up_to: BTreeMap<String, StreamId>,
}

impl ReaderState {
    /// Notes that `stream` was read up to `last`.
    fn saw(&mut self, stream: &str, last: Option<StreamId>) {
        if let Some(last) = last {
            let up_to = self.read_up_to.entry(stream.to_owned()).or_insert(last);
            *up_to = (*up_to).max(last);
        }
    }
}

impl<B: Broker> Inner<B> {
    /// Creates the supervisor's group on `stream` unless this supervisor
    /// already knows it exists.
    pub(super) async fn ensure_group(&self, stream: &str, start: GroupStart) -> Result<(), Error> {
        if registry::lock(&self.known_groups).contains(stream) {
            return Ok(());
        }
        let start = if registry::lock(&self.vanished_groups).contains(stream) {
            GroupStart::BEGINNING
        } else {
            start
        };
        match self
            .producer
            .broker()
            .group_create(stream, &self.group, start, true)
            .await
        {
            Ok(()) => {
                tracing::debug!(stream, group = %self.group, ?start, "created the supervisor's group");
            }
            // Created by an earlier run of this supervisor: it remembers
            // where that run stopped reading, which is what a restart needs.
            Err(Error::GroupExists { .. }) => {}
            Err(err) => return Err(err),
        }
        registry::lock(&self.known_groups).insert(stream.to_owned());
        registry::lock(&self.vanished_groups).remove(stream);
        Ok(())
    }

    /// Notes that this supervisor's group on `stream` is gone (a `NOGROUP`
    /// reply), so that the next round creates it again, at the start.
    fn group_vanished(&self, stream: &str) {
        tracing::warn!(stream, group = %self.group, "the supervisor's group is gone; creating it again");
        registry::lock(&self.known_groups).remove(stream);
        registry::lock(&self.vanished_groups).insert(stream.to_owned());
    }

    /// One round: drains the pending lists not drained yet, then reads new
    /// entries, waiting up to `block` when there are none, and routes
    /// everything read.
    pub(super) async fn read_round(
        &self,
        state: &mut ReaderState,
        streams: &BTreeSet<String>,
        block: Duration,
    ) -> Result<(), Error> {
        for stream in streams {
            // At `0`, not `$`: a gather may find the group missing although
            // results of its tasks are already in the stream (resuming under
            // a group that was destroyed, or gathering tasks this supervisor
            // did not fan out), and those must be read.
            self.ensure_group(stream, GroupStart::BEGINNING).await?;
            if !state.drained.contains(stream) {
                let after = state
                    .read_up_to
                    .get(stream)
                    .copied()
                    .unwrap_or(StreamId::ZERO);
                let last = match self.drain_pending(stream, after).await {
                    Ok(last) => last,
                    // The group went away (deleted by hand, or forgotten
                    // by a broker restored from an older state): forget
                    // it, so the next round creates it again and drains.
                    Err(Error::NoGroup { .. }) => {
                        self.group_vanished(stream);
                        continue;
                    }
                    Err(err) => return Err(err),
                };
                state.saw(stream, last);
                state.drained.insert(stream.clone());
            }
        }
        self.expire_workflows().await;
        self.expire_unclaimed().await;

        for stream in streams {
            state.drained.remove(stream);
        }
        // A read that failed may still have delivered entries (a reply lost
        // after the server ran it): its streams stay undrained, and the next
        // round reads their pending lists first.
        let read = self.read_new(streams, block).await?;
        for stream in streams {
            state.drained.insert(stream.clone());
        }
        for (stream, entries) in read {
            state.saw(&stream, entries.last().map(|e| e.id));
            self.route(&stream, entries, false).await;
        }
        Ok(())
    }

    /// Reads new entries of every stream. One stream is read with `BLOCK`.
    /// Several are first read without; only when all are empty does it block
    /// on each at once and wait for every read to return. Racing the reads
    /// instead would drop the losers, and a dropped `XREADGROUP` may already
    /// have moved entries into the pending list unseen.
    async fn read_new(
        &self,
        streams: &BTreeSet<String>,
        block: Duration,
    ) -> Result<Vec<(String, Vec<DeliveredEntry>)>, Error> {
        if streams.len() > 1 {
            let sweep = self.read_each(streams, None).await?;
            if sweep.iter().any(|(_, entries)| !entries.is_empty()) {
                return Ok(sweep);
            }
        }
        self.read_each(streams, Some(block)).await
    }

    async fn read_each(
        &self,
        streams: &BTreeSet<String>,
        block: Option<Duration>,
    ) -> Result<Vec<(String, Vec<DeliveredEntry>)>, Error> {
        let reads = streams.iter().map(|stream| async move {
            let mut read =
                ReadGroup::new(stream.as_str(), &self.group, &self.name).count(self.options.batch);
            if let Some(block) = block {
                read = read.block(block);
            }
            match self.producer.broker().read_group(&read).await {
                Ok(entries) => Ok((stream.clone(), entries)),
                // The group went away with its stream (deleted by hand):
                // forget it, so the next round creates it again.
                Err(Error::NoGroup { .. }) => {
                    self.group_vanished(stream);
                    Ok((stream.clone(), Vec::new()))
                }
                Err(err) => Err(err),
            }
        });
        futures::future::join_all(reads).await.into_iter().collect()
    }

    /// Reads this supervisor's own pending entries of `stream` after
    /// `after` (results read before a crash, or by a read whose reply was
    /// lost, and never acknowledged) and routes them. Returns the last id
    /// read, if any.
    async fn drain_pending(
        &self,
        stream: &str,
        mut after: StreamId,
    ) -> Result<Option<StreamId>, Error> {
        let mut last_read = None;
        loop {
            let read = ReadGroup::new(stream, &self.group, &self.name)
                .pending_after(after)
                .count(self.options.batch);
            let entries = self.producer.broker().read_group(&read).await?;
            let Some(last) = entries.last() else {
                return Ok(last_read);
            };
            after = last.id;
            last_read = Some(last.id);
            tracing::debug!(
                stream,
                entries = entries.len(),
                "draining the supervisor's pending results"
            );
            self.route(stream, entries, true).await;
        }
    }

    /// Routes entries read from `stream` and acknowledges those no workflow
    /// of this supervisor awaits.
    async fn route(&self, stream: &str, entries: Vec<DeliveredEntry>, from_pending: bool) {
        let now = Instant::now();
        let mut done = Vec::new();
        for entry in entries {
            let Some(fields) = entry.fields else {
                // Trimmed or deleted after it was read: nothing to record.
                tracing::warn!(stream, id = %entry.id, "a pending result was deleted from its stream");
                done.push(entry.id);
                continue;
            };
            let result = match self.options.codec.decode_result(&fields) {
                Ok(result) => result,
                Err(err) => {
                    // Never acknowledged: left pending, it is what a
                    // supervisor with a codec that reads it gathers.
                    if registry::lock(&self.registry).undecodable(stream, entry.id) {
                        tracing::warn!(stream, id = %entry.id, error = %err, group = %self.group, "cannot decode a result; leaving it pending, unacknowledged");
                    }
                    continue;
                }
            };
            let received = Received {
                stream: stream.to_owned(),
                id: entry.id,
                result,
            };
            if let Some(other) = registry::lock(&self.registry).route(received, from_pending, now) {
                done.push(other.id);
            }
        }
        if !done.is_empty() {
            tracing::trace!(
                stream,
                entries = done.len(),
                "acknowledging results of other workflows"
            );
            self.ack_or_warn(stream, &done).await;
        }
    }

    /// Acknowledges the unclaimed results no workflow resumed within the
    /// grace period.
    async fn expire_unclaimed(&self) {
        let Some(cutoff) = Instant::now().checked_sub(self.options.unclaimed_grace) else {
            return;
        };
        let expired = registry::lock(&self.registry).expire_unclaimed(cutoff);
        if !expired.is_empty() {
            tracing::info!(
                entries = expired.len(),
                "acknowledging pending results no workflow resumed"
            );
            self.ack_all(&expired).await;
        }
    }

    /// Acknowledges `entries`, stream by stream.
    pub(super) async fn ack_all(&self, entries: &[Received]) {
        let mut by_stream: BTreeMap<&str, Vec<StreamId>> = BTreeMap::new();
        for received in entries {
            by_stream
                .entry(received.stream.as_str())
                .or_default()
                .push(received.id);
        }
        for (stream, ids) in by_stream {
            self.ack_or_warn(stream, &ids).await;
        }
    }

    /// An acknowledgement that fails leaves the entries in this supervisor's
    /// pending list: a restart reads them again, and releases them after the
    /// grace period if no workflow claims them. Nothing is lost, so the
    /// failure is reported and not returned.
    ///
    /// Acknowledged results are what lets the results stream be trimmed:
    /// each acknowledgement counts towards this supervisor's next check of
    /// its retention.
    async fn ack_or_warn(&self, stream: &str, ids: &[StreamId]) {
        let broker = self.producer.broker();
        match broker.ack(stream, &self.group, ids).await {
            Ok(acked) => {
                let now_ms = self.producer.now_ms();
                self.trimmer.appended(broker, stream, acked, now_ms).await;
            }
            Err(err) => {
                tracing::warn!(stream, group = %self.group, entries = ids.len(), error = %err, "acknowledging results failed");
            }
        }
    }
}
