//! The `Broker` trait: the subset of Redis Streams consumer groups crewq uses.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    AckAndAdd, AckAndAddReply, AddedOnce, AutoClaim, AutoClaimed, AutoClaimedRecorded,
    ConsumerInfo, ConsumerPruned, DelayOnce, DelayedOnce, DeletedRecord, DeliveredEntry, GroupInfo,
    GroupStart, IdRange, LanesRead, NewEntry, OnceEntry, PendingEntry, PendingQuery,
    PendingSummary, Promoted, RateAcquire, RateGrant, RateKeys, RateState, ReadGroup, ReadLanes,
    Result, Settle, Settled, StreamEntry, StreamId, StreamInfo, Trim,
};

/// A store of streams with consumer groups, with Redis Streams semantics.
///
/// Everything in crewq above storage is written against this trait, so the
/// same worker runs on Redis in production and on the in-memory backend in
/// tests and in the simulator. Each method's `# Behavior` list is the
/// contract; every bullet names the conformance case (in
/// `crewq_core::conformance`, feature `conformance`) that holds every backend
/// to it.
///
/// The trait is object safe: use it as `Arc<dyn Broker>` or generically;
/// `Arc<B>`, `Box<B>` and `&B` are brokers too.
///
/// # Errors
///
/// Every method returns [`Error`](crate::Error). Kinds that depend on the
/// data (`NoGroup`, `GroupExists`, `IdTooSmall` ...) are the same on every
/// backend; [`Error::is_transient`](crate::Error::is_transient) ones
/// (connection, time-out, unavailable) come from a real server, and leave the
/// outcome of a write unknown.
///
/// # Left out of Redis
///
/// One stream per blocking read (several only in [`Broker::read_lanes`],
/// which never blocks); no `NOACK`; no `XCLAIM` options (`IDLE`, `TIME`,
/// `RETRYCOUNT`, `FORCE`, `LASTID`); no `XADD NOMKSTREAM`, trim `LIMIT`, or
/// `XGROUP CREATE ENTRIESREAD`; no `XAUTOCLAIM JUSTID`. crewq needs none of
/// them, and each one left out is a behaviour the memory backend need not copy.
#[async_trait]
pub trait Broker: Send + Sync {
    /// Appends one entry (`XADD`), returning its id.
    ///
    /// # Behavior
    ///
    /// - Automatic ids are `<ms>-<seq>` from the broker's clock and strictly
    ///   increase (`xadd_auto_ids_strictly_increase`).
    /// - When the clock has not moved past the last id, the automatic id
    ///   keeps the last id's ms and increments its seq
    ///   (`xadd_auto_id_after_future_explicit_id_increments_seq`).
    /// - An explicit id must be greater than the stream's last id, even one
    ///   since deleted, else `IdTooSmall`; `0-0` is always too small
    ///   (`xadd_explicit_id_must_exceed_top`).
    /// - Entries are stored with their fields in order, names may repeat
    ///   (`xadd_stores_fields_in_order`).
    /// - Entries without fields are rejected with `InvalidArgument` before
    ///   anything is applied (`xadd_rejects_empty_fields`).
    /// - A trim in the same call applies after the append and keeps the
    ///   newest entries; `MAXLEN 0` removes the new entry too, leaving an
    ///   empty stream whose last id is the new one
    ///   (`xadd_with_maxlen_trims_oldest`).
    async fn xadd(&self, entry: NewEntry) -> Result<StreamId>;

    /// Appends many entries, to one or several streams, in one round trip
    /// where the backend can (pipelined on Redis). Not atomic: each entry
    /// succeeds or fails alone, in order.
    ///
    /// # Behavior
    ///
    /// - Returns one result per entry in order; a failing entry does not stop
    ///   the ones after it (`xadd_many_returns_one_result_per_entry`).
    async fn xadd_many(&self, entries: Vec<NewEntry>) -> Result<Vec<Result<StreamId>>>;

    /// Appends entries at most once per marker within a window: for each
    /// entry, if its marker is set nothing is appended and the id the marker
    /// recorded is returned; otherwise the entry is appended and the marker
    /// set to its id, expiring after the window. Each entry is one atomic
    /// step (a Lua script on Redis); many go in one round trip.
    ///
    /// # Behavior
    ///
    /// - A second append with the same marker adds nothing and returns the
    ///   first one's id, also within one call; other markers append
    ///   (`xadd_once_appends_once_per_marker`).
    /// - Once the window has passed, the marker is forgotten and the entry
    ///   is appended again (`xadd_once_forgets_after_the_window`).
    /// - An entry without fields or a window under 1 ms is rejected alone,
    ///   with `InvalidArgument` (`xadd_once_rejects_malformed_entries`).
    async fn xadd_once(&self, entries: Vec<OnceEntry>) -> Result<Vec<Result<AddedOnce>>>;

    /// The number of entries (`XLEN`).
    ///
    /// # Behavior
    ///
    /// - Counts entries present, after deletions and trims; 0 for a missing
    ///   key (`xlen_counts_present_entries`).
    async fn xlen(&self, stream: &str) -> Result<u64>;

    /// Entries in an id range, oldest first (`XRANGE`).
    ///
    /// # Behavior
    ///
    /// - `Included`/`Excluded`/`Unbounded` bounds mean `id`/`(id`/`-`,`+`;
    ///   `count` limits the reply, `Some(0)` gives nothing
    ///   (`xrange_honours_bounds_and_count`).
    /// - A missing key gives an empty list (`xrange_missing_key_is_empty`).
    async fn xrange(
        &self,
        stream: &str,
        range: IdRange,
        count: Option<usize>,
    ) -> Result<Vec<StreamEntry>>;

    /// Deletes entries (`XDEL`), returning how many existed.
    ///
    /// # Behavior
    ///
    /// - Counts only ids that existed; deleting never lowers the stream's
    ///   last id (`xdel_counts_existing_ids_only`).
    async fn xdel(&self, stream: &str, ids: &[StreamId]) -> Result<u64>;

    /// Trims a stream (`XTRIM`), returning how many entries were removed.
    ///
    /// # Behavior
    ///
    /// - `MAXLEN n` keeps exactly the newest `n` (`xtrim_maxlen_keeps_newest`).
    /// - `MINID id` removes the entries with smaller ids
    ///   (`xtrim_minid_removes_smaller_ids`).
    /// - Approximate trims never keep fewer entries than exact ones would
    ///   (`xtrim_approximate_never_overtrims`).
    /// - Trimming never touches a group's pending list; trimmed pending
    ///   entries read back as deleted (`trimming_leaves_pending_entries`).
    async fn xtrim(&self, stream: &str, trim: Trim) -> Result<u64>;

    /// Creates a consumer group (`XGROUP CREATE`).
    ///
    /// # Behavior
    ///
    /// - A group created after `0-0` delivers the whole stream; after
    ///   `Latest` (`$`) only entries added later
    ///   (`group_create_start_decides_what_is_new`).
    /// - A second group of the same name fails with `GroupExists`
    ///   (`group_create_twice_is_busygroup`).
    /// - A missing key fails with `NoSuchKey` unless `mkstream`, which creates
    ///   an empty stream (`group_create_requires_key_unless_mkstream`).
    async fn group_create(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
        mkstream: bool,
    ) -> Result<()>;

    /// Destroys a group and its pending list (`XGROUP DESTROY`), returning
    /// whether it existed.
    ///
    /// # Behavior
    ///
    /// - `true` once, then `false`; its pending entries are gone; a missing
    ///   key fails with `NoSuchKey` (`group_destroy_reports_existence`).
    async fn group_destroy(&self, stream: &str, group: &str) -> Result<bool>;

    /// Deletes a consumer (`XGROUP DELCONSUMER`), returning how many pending
    /// entries it owned. Those entries leave the pending list: they are
    /// never redelivered.
    ///
    /// # Behavior
    ///
    /// - Returns its pending count and drops its entries from the group's
    ///   pending list; an unknown consumer gives 0; a missing key fails with
    ///   `NoSuchKey`, a missing group with `NoGroup`
    ///   (`consumer_delete_drops_its_pending_entries`).
    async fn consumer_delete(&self, stream: &str, group: &str, consumer: &str) -> Result<u64>;

    /// Deletes a consumer only if it holds nothing and has been idle (since
    /// its last read or claim, as [`Broker::info_consumers`] reports) at
    /// least `min_idle`, checking and deleting in one atomic step (a Lua
    /// script on Redis, reading `XINFO CONSUMERS` and sending `XGROUP
    /// DELCONSUMER`). Replies with what it found.
    ///
    /// Use it, not [`Broker::consumer_delete`] after a look at
    /// [`Broker::info_consumers`], to clean up consumers that went away: a
    /// worker that wakes up and reads between the look and the delete would
    /// lose what it read from the pending list, never to be redelivered.
    ///
    /// # Behavior
    ///
    /// - A consumer that holds nothing and has been idle at least `min_idle`
    ///   is deleted, with its idle time in the reply; the group's other
    ///   consumers and their entries are untouched
    ///   (`consumer_delete_if_idle_deletes_an_idle_consumer_holding_nothing`).
    /// - A consumer that holds entries is kept with them, `Busy` with its
    ///   pending count, however long it has been idle
    ///   (`consumer_delete_if_idle_keeps_a_consumer_holding_entries`).
    /// - A consumer that holds nothing but read or claimed less than
    ///   `min_idle` ago is kept, `Active` with its idle time
    ///   (`consumer_delete_if_idle_keeps_a_recently_active_consumer`).
    /// - What counts is the consumer's state at the call, not what an
    ///   earlier look saw: one found idle and empty that then reads is kept
    ///   with what it read, one that only came back is kept too
    ///   (`consumer_delete_if_idle_keeps_a_consumer_that_read_after_it_was_found_idle`).
    /// - An unknown consumer is `Missing`; a missing key fails with
    ///   `NoSuchKey`, a missing group with `NoGroup`
    ///   (`consumer_delete_if_idle_reports_missing_consumers_groups_and_keys`).
    async fn consumer_delete_if_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> Result<ConsumerPruned>;

    /// Reads as a consumer of a group (`XREADGROUP`, one stream).
    ///
    /// # Behavior
    ///
    /// - `New` delivers entries after the group's last-delivered id, each to
    ///   one consumer of the group only; other groups are independent
    ///   (`read_new_delivers_each_entry_once_per_group`).
    /// - `New` puts delivered entries in the pending list, owned by the
    ///   reader, delivery count 1, and advances last-delivered id
    ///   (`read_new_adds_to_pending_with_one_delivery`).
    /// - `count` limits the number of entries; `Some(0)` means no limit
    ///   (`read_honours_count`).
    /// - `PendingAfter(id)` returns only the reader's own pending entries with
    ///   ids greater than `id` (`read_history_returns_own_pending_after_id`).
    /// - Reading history counts a delivery and resets idle time
    ///   (`read_history_counts_a_delivery`).
    /// - History entries deleted from the stream come back with `fields:
    ///   None` and their delivery count unchanged
    ///   (`read_history_returns_deleted_entries_without_fields`).
    /// - History reads never block (`read_history_ignores_block`).
    /// - A missing key or group fails with `NoGroup`
    ///   (`read_missing_group_is_nogroup`).
    /// - `block` waits for new entries and returns empty when it times out
    ///   (`read_block_times_out_empty`).
    /// - A blocked read is woken by an append to its stream
    ///   (`read_block_is_woken_by_append`).
    /// - A history read, or a `New` read that delivers something, creates the
    ///   reader as a consumer of the group if missing and resets its idle
    ///   time; a `New` read that delivers nothing leaves the consumers as they
    ///   were, as in Redis 7.0 (`read_creates_the_consumer`).
    async fn read_group(&self, read: &ReadGroup) -> Result<Vec<DeliveredEntry>>;

    /// Reads new entries across priority lanes in one atomic step (a Lua
    /// script on Redis): entry by entry, the oldest unread entry that has
    /// waited at least [`ReadLanes::starvation`] (by its id's time against
    /// the broker's clock), else the oldest unread entry of the highest
    /// priority lane ([`crate::lanes`], [`crate::lanes::next_lane`]). Each
    /// entry taken is delivered as `XREADGROUP ... >` delivers it. Never
    /// blocks.
    ///
    /// # Behavior
    ///
    /// - Under a backlog, every entry of a higher-priority lane is taken
    ///   before any of a lower one, each lane oldest first, up to `count`
    ///   in all (`read_lanes_takes_the_highest_priority_first`).
    /// - An entry that has waited the starvation bound is taken before every
    ///   younger one, whatever their priorities
    ///   (`read_lanes_takes_a_starving_entry_first`).
    /// - Taken entries are pending for the consumer, as after a group read;
    ///   what is left unread is reported per lane
    ///   (`read_lanes_delivers_as_a_group_read`).
    /// - A lane whose key is missing is skipped; one that exists without the
    ///   group is reported in `no_group`, the others still read; lanes whose
    ///   stream or delayed set exists are reported in `present`
    ///   (`read_lanes_skips_missing_lanes_and_reports_missing_groups`).
    /// - A lane flagged [`Lane::create_group`](crate::Lane::create_group)
    ///   whose stream exists without the group gets it, delivering the whole
    ///   stream, and is read in the same step
    ///   (`read_lanes_creates_the_group_of_a_lane_never_served`).
    /// - A `count` of 0 or no lanes is `InvalidArgument`
    ///   (`read_lanes_rejects_bad_requests`).
    async fn read_lanes(&self, read: &ReadLanes) -> Result<LanesRead>;

    /// Acknowledges entries (`XACK`), returning how many left the pending list.
    ///
    /// # Behavior
    ///
    /// - Counts only ids that were pending, once each, whoever owned them
    ///   (`ack_counts_only_pending_ids`).
    /// - A missing key or group gives 0, not an error
    ///   (`ack_missing_group_is_zero`).
    async fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<u64>;

    /// The summary form of `XPENDING`.
    ///
    /// # Behavior
    ///
    /// - An empty pending list gives count 0 and no ids
    ///   (`pending_summary_of_empty_group`).
    /// - Gives count, smallest and largest id, and a count per consumer
    ///   ordered by name (`pending_summary_counts_per_consumer`).
    /// - A missing key or group fails with `NoGroup`
    ///   (`pending_missing_group_is_nogroup`).
    async fn pending_summary(&self, stream: &str, group: &str) -> Result<PendingSummary>;

    /// The extended form of `XPENDING`, ordered by id.
    ///
    /// # Behavior
    ///
    /// - Honours the id range, count and consumer filter
    ///   (`pending_extended_filters_range_count_consumer`).
    /// - `min_idle` keeps only entries idle at least that long
    ///   (`pending_extended_filters_min_idle`).
    /// - Rows carry owner, idle time and delivery count
    ///   (`pending_extended_reports_owner_idle_and_deliveries`).
    async fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> Result<Vec<PendingEntry>>;

    /// Claims pending entries idle at least `min_idle` (`XCLAIM`), returning
    /// the claimed entries.
    ///
    /// # Behavior
    ///
    /// - Moves ownership to `consumer` (created if missing), counts a
    ///   delivery and resets idle (`claim_moves_ownership_and_counts_a_delivery`).
    /// - Skips entries idle less than `min_idle`
    ///   (`claim_skips_entries_not_idle_enough`).
    /// - Ignores ids that are not pending (`claim_ignores_ids_not_pending`).
    /// - Drops entries deleted from the stream from the pending list and
    ///   does not return them (`claim_drops_deleted_entries`).
    /// - A missing key or group fails with `NoGroup`
    ///   (`claim_missing_group_is_nogroup`).
    async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
    ) -> Result<Vec<StreamEntry>>;

    /// `XCLAIM ... JUSTID`: like [`Broker::claim`] but returns ids only and
    /// does not count a delivery. Claiming one's own entry with `min_idle`
    /// zero refreshes its lease.
    ///
    /// # Behavior
    ///
    /// - Resets idle and keeps the delivery count
    ///   (`claim_ids_resets_idle_without_counting_a_delivery`).
    async fn claim_ids(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
    ) -> Result<Vec<StreamId>>;

    /// `XAUTOCLAIM`: scans the pending list from `start` (inclusive) and
    /// claims entries idle at least `min_idle`, up to `count`.
    ///
    /// # Behavior
    ///
    /// - Claims idle entries in id order, counting a delivery, and returns a
    ///   cursor to continue from, `0-0` at the end
    ///   (`autoclaim_follows_its_cursor_to_the_end`).
    /// - Pending entries deleted from the stream are removed from the
    ///   pending list and reported; they count towards `count`
    ///   (`autoclaim_reports_and_removes_deleted_entries`).
    /// - Scans at most `count * 10` pending entries per call
    ///   (`autoclaim_scans_at_most_ten_times_count`).
    /// - A missing key or group fails with `NoGroup`
    ///   (`autoclaim_missing_group_is_nogroup`).
    /// - A `count` of 0 or above Redis 7.0's bound (`LONG_MAX / 16`) fails
    ///   with `InvalidArgument` and Redis's text, `ERR COUNT must be > 0`
    ///   (`autoclaim_rejects_count_out_of_range`).
    async fn autoclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: StreamId,
        count: usize,
    ) -> Result<AutoClaimed>;

    /// [`Broker::autoclaim`] that records, in the same atomic step (one
    /// script on Redis), each pending entry it finds deleted from the stream:
    /// per deleted id it appends `record`'s entry with the id in
    /// `record.id_field`, at most once per id within `record.window`, as
    /// [`Broker::xadd_once`] does. The pending list forgets a deleted entry
    /// the moment it is reported, so a record written afterwards by the
    /// caller is lost to a crash or a lost reply in between; this one is not.
    ///
    /// # Behavior
    ///
    /// - Claims as [`Broker::autoclaim`] does, and appends one record per
    ///   deleted id, in order, each holding its id; the reply carries each
    ///   record's id (`autoclaim_recorded_claims_and_records_deleted_entries`).
    /// - A record whose marker is still set is not appended again: its id
    ///   is reported as a duplicate, so a retried call writes nothing twice
    ///   (`autoclaim_recorded_records_each_id_once`).
    /// - A call that finds nothing deleted appends nothing
    ///   (`autoclaim_recorded_appends_nothing_without_deletions`).
    /// - A `count` out of range, or a record with an explicit id, without
    ///   fields or with a window under 1 ms, fails with `InvalidArgument`
    ///   before anything applies; a missing key or group with `NoGroup`
    ///   (`autoclaim_recorded_rejects_bad_calls_whole`).
    async fn autoclaim_recorded(
        &self,
        claim: &AutoClaim,
        record: &DeletedRecord,
    ) -> Result<AutoClaimedRecorded>;

    /// `XINFO STREAM`.
    ///
    /// # Behavior
    ///
    /// - Reports length, last generated id, max deleted id, entries added,
    ///   first id, group count, first and last entries
    ///   (`info_stream_reports_counters_and_edges`).
    /// - A missing key fails with `NoSuchKey`
    ///   (`info_missing_key_fails`).
    async fn info_stream(&self, stream: &str) -> Result<StreamInfo>;

    /// `XINFO GROUPS`, ordered by group name. A missing key fails with
    /// `NoSuchKey`, as for [`Broker::info_stream`].
    ///
    /// # Behavior
    ///
    /// - Reports consumers, pending, last-delivered id, entries read and lag
    ///   as reads and acks happen (`info_groups_tracks_reads_and_lag`).
    /// - Lag is unknown (`None`) while an entry deleted with `XDEL` lies in
    ///   the unread part of the stream, and known again once the group has
    ///   read the stream's last entry (`info_groups_lag_with_deletions`).
    async fn info_groups(&self, stream: &str) -> Result<Vec<GroupInfo>>;

    /// `XINFO CONSUMERS`, ordered by consumer name.
    ///
    /// # Behavior
    ///
    /// - Reports each consumer's pending count and idle time since its last
    ///   read or claim (`info_consumers_reports_pending_and_idle`).
    /// - A missing key fails with `NoSuchKey`, a missing group with `NoGroup`
    ///   (`info_consumers_missing_group_is_nogroup`).
    async fn info_consumers(&self, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>>;

    /// Appends, acknowledges and deletes as one atomic step (`MULTI`/`EXEC`
    /// on Redis).
    ///
    /// # Behavior
    ///
    /// - Applies every ack and every append, and replies with each ack's
    ///   count and each append's id (`ack_and_add_applies_both`).
    /// - Deletes entries in the same step and replies with each deletion's
    ///   count, as for a dead letter replayed to its stream
    ///   (`ack_and_add_deletes_in_the_same_step`).
    /// - An ack of a missing group counts 0 and the appends still happen,
    ///   as `XACK` inside `MULTI` does (`ack_and_add_reports_each_ack`).
    /// - A malformed step (an explicit id, an entry without fields) fails
    ///   with `InvalidArgument` and applies nothing
    ///   (`ack_and_add_rejects_malformed_steps_whole`).
    async fn ack_and_add(&self, step: AckAndAdd) -> Result<AckAndAddReply>;

    /// Settles entries only while the consumer still owns them: for each
    /// item, if its id is pending for `consumer`, writes its appends and then
    /// acknowledges it; otherwise writes nothing for it. Each item is one
    /// atomic step (a Lua script on Redis, since `MULTI` cannot make a write
    /// conditional) and succeeds or fails alone.
    ///
    /// Appends come before the acknowledgement: should an item's write fail
    /// (which Redis does not roll back), that entry stays pending and is
    /// reported [`Settled::Failed`], rather than acknowledged with its
    /// outcome missing.
    ///
    /// # Behavior
    ///
    /// - An owned item gets its appends, in order, and leaves the pending
    ///   list; the reply carries the appended ids (`settle_writes_and_acks_owned_entries`).
    /// - An item claimed by another consumer is left pending under that
    ///   consumer and nothing is appended for it; other items still settle
    ///   (`settle_skips_entries_another_consumer_claimed`).
    /// - An item no longer pending (already acknowledged) is `NotOwned` and
    ///   appends nothing (`settle_skips_entries_no_longer_pending`).
    /// - An explicit id or an append without fields fails with
    ///   `InvalidArgument` before anything is applied
    ///   (`settle_rejects_malformed_steps_whole`).
    /// - A missing key or group fails with `NoGroup`
    ///   (`settle_missing_group_is_nogroup`).
    /// - An item whose append fails (a key of another type, an exhausted
    ///   stream, `OOM`) is `Failed` with the server's text and stays
    ///   pending; its earlier appends stay written, and the other items
    ///   settle as usual (`settle_fails_an_item_alone`).
    /// - Batches of any size settle exactly, item by item; Redis sends them
    ///   in chunks of at most 128 items per script call, each chunk atomic
    ///   (`settle_settles_large_batches_exactly`).
    /// - An owned item's delays join their delayed sets, due their delay
    ///   after the broker's now, in the same step as its acknowledgement; a
    ///   not-owned item adds none (`settle_schedules_delays_of_owned_items`).
    async fn settle(&self, settle: Settle) -> Result<Vec<Settled>>;

    /// Renews the lease of entries `consumer` still owns: like
    /// [`Broker::claim_ids`] with zero `min_idle`, but only for ids pending
    /// for `consumer`, so it never takes back an entry another consumer has
    /// reclaimed. Returns the ids renewed.
    ///
    /// # Behavior
    ///
    /// - Resets the idle time of the consumer's own entries without counting
    ///   a delivery (`renew_resets_idle_of_own_entries`).
    /// - Leaves entries of other consumers, ids not pending, and entries
    ///   deleted from the stream out of the reply, with owners unchanged
    ///   (`renew_never_takes_entries_of_others`).
    /// - An entry of the consumer's deleted from the stream is not renewed
    ///   and stays pending for it, where `XCLAIM` would drop it from the
    ///   pending list, so its attempt can still settle an outcome
    ///   (`renew_leaves_deleted_entries_pending`).
    async fn renew(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[StreamId],
    ) -> Result<Vec<StreamId>>;

    /// Moves up to `count` members of the delayed set `set` that are due on
    /// the broker's clock into `stream`, earliest first, as one atomic step
    /// (a Lua script on Redis, reading the server's `TIME`): each is
    /// appended and removed together, so however many workers call it at
    /// once, each member is appended exactly once, and a crash (of the
    /// caller or of the step) loses none.
    ///
    /// # Behavior
    ///
    /// - Appends the due members in due order with their fields, removes
    ///   them from the set, leaves the others, and replies with the entries
    ///   appended and when the next is due
    ///   (`promote_moves_due_members_in_due_order`).
    /// - Due is decided by the broker's clock alone: a member with a zero
    ///   delay is due at once, one with a long delay is not, whatever the
    ///   caller's clock says (`promote_goes_by_the_brokers_clock`).
    /// - Many promotes racing append each member once
    ///   (`promote_racing_appends_each_member_once`).
    /// - `count` limits the members moved; a missing set moves nothing and
    ///   has no next due time (`promote_honours_count_and_missing_sets`).
    ///
    /// A member a peer wrote in another encoding than
    /// [`encode_member`](crate::encode_member)'s is appended whole as the
    /// `data` field ([`promoted_fields`](crate::promoted_fields)), so a
    /// worker dead-letters it rather than it being lost or stuck at the
    /// head of the set. (No conformance case: no Broker call writes one.)
    async fn promote(&self, set: &str, stream: &str, count: usize) -> Result<Promoted>;

    /// Adds entries to delayed sets at most once per marker within a window:
    /// for each, if its marker is set nothing is added and the id the
    /// marker recorded is returned; otherwise the entry joins its set, due
    /// its delay after the broker's now, and the marker is set (recording
    /// `0-0`), expiring after the window. Each entry is one atomic step (a
    /// Lua script on Redis). The markers are those of
    /// [`Broker::xadd_once`], so a task id dispatched now and one dispatched
    /// for later exclude each other.
    ///
    /// # Behavior
    ///
    /// - A second schedule with the same marker adds nothing, also within
    ///   one call; an append-once with that marker then finds it set
    ///   (`delay_once_schedules_once_per_marker`).
    /// - A marker set by an append-once makes the schedule a duplicate of
    ///   that entry (`delay_once_respects_append_markers`).
    /// - An entry without fields or a window under 1 ms is rejected alone,
    ///   with `InvalidArgument` (`delay_once_rejects_malformed_entries`).
    async fn delay_once(&self, entries: Vec<DelayOnce>) -> Result<Vec<Result<DelayedOnce>>>;

    /// How many members the delayed set `set` holds (`ZCARD`), due or not.
    ///
    /// # Behavior
    ///
    /// - Counts members added by settles and not yet promoted; 0 for a
    ///   missing set (`delayed_len_counts_waiting_members`).
    async fn delayed_len(&self, set: &str) -> Result<u64>;

    /// Grants up to `acquire.permits.len()` permits of a shared rate limit
    /// (see [`crate::ratelimit`]) in one atomic step (a Lua script on
    /// Redis, judged by the server's `TIME`): drops starts older than the
    /// window and expired running permits, grants as many of the permits,
    /// in order, as the pause, the starts in the window and the running
    /// permits allow, and records each granted one as a start (now) and as
    /// running (until `lease` from now). Records the limit for
    /// [`Broker::rate_state`].
    ///
    /// # Behavior
    ///
    /// - No window of the limit's length holds more grants than its count:
    ///   a refused request says when the oldest start leaves the window,
    ///   and starts older than the window no longer count — a sliding
    ///   window, not a bucket (`rate_acquire_keeps_starts_in_any_window`).
    /// - At most the running limit's permits are held at once; a released
    ///   permit's room is granted again
    ///   (`rate_acquire_keeps_running_below_the_limit`).
    /// - A running permit not renewed is dropped `lease` after its grant,
    ///   and its room granted again, as a crashed holder's are
    ///   (`rate_acquire_frees_expired_running_permits`).
    /// - Many acquires racing grant no more than the limit in all
    ///   (`rate_acquire_racing_grants_within_the_limit`).
    /// - A limit of 0, a window or lease under 1 ms, or an empty permit name
    ///   fails with `InvalidArgument` before anything is recorded
    ///   (`rate_acquire_rejects_bad_requests`).
    async fn rate_acquire(&self, acquire: RateAcquire) -> Result<RateGrant>;

    /// Extends the running permits still held (unexpired) to `lease` from
    /// now, returning those extended; an expired or released one is not
    /// granted back.
    ///
    /// # Behavior
    ///
    /// - A held permit lives `lease` past its renewal; expired, released
    ///   and unknown ones are left out of the reply and not recorded
    ///   (`rate_renew_extends_only_held_permits`).
    async fn rate_renew(
        &self,
        keys: &RateKeys,
        permits: &[String],
        lease: Duration,
    ) -> Result<Vec<String>>;

    /// Releases permits: `finished` ones (their run ended) stop counting as
    /// running and stay in the log of starts; `unused` ones (granted, never
    /// started) leave both, so the window's starts are not spent on them.
    /// Returns how many running permits were dropped.
    ///
    /// # Behavior
    ///
    /// - A finished permit frees its running room only; an unused one its
    ///   start as well (`rate_release_returns_unused_starts`).
    async fn rate_release(
        &self,
        keys: &RateKeys,
        finished: &[String],
        unused: &[String],
    ) -> Result<u64>;

    /// Pauses grants of the rate limit at `keys` for `pause` from now on the
    /// broker's clock, or longer if already paused longer (the later end
    /// wins); returns how long it is paused now.
    ///
    /// # Behavior
    ///
    /// - While paused, acquires grant nothing and say when the pause ends;
    ///   after it, they grant again
    ///   (`rate_pause_stops_grants_until_it_ends`).
    /// - A shorter pause never cuts a longer one short
    ///   (`rate_pause_keeps_the_later_end`).
    async fn rate_pause(&self, keys: &RateKeys, pause: Duration) -> Result<Duration>;

    /// The rate limit at `keys` as the broker holds it now: the limit last
    /// acquired with, unexpired running permits, starts in the window
    /// ending now, and the pause left.
    ///
    /// # Behavior
    ///
    /// - Reports what acquires, releases and pauses did; all empty for keys
    ///   never used (`rate_state_reports_limit_running_starts_and_pause`).
    async fn rate_state(&self, keys: &RateKeys) -> Result<RateState>;
}

/// Checks a [`Settle`] as [`validate_ack_and_add`] checks its step.
///
/// # Errors
///
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an explicit
/// id or an entry without fields.
pub fn validate_settle(settle: &Settle) -> Result<()> {
    for item in &settle.items {
        for entry in &item.appends {
            if entry.id != crate::AddId::Auto {
                return Err(crate::Error::InvalidArgument(format!(
                    "settle appends need automatic ids; got {:?} for '{}'",
                    entry.id, entry.stream
                )));
            }
            validate_new_entry(entry)?;
        }
        for delay in &item.delays {
            crate::validate_delay(delay)?;
        }
    }
    Ok(())
}

/// Checks the parts of an [`AckAndAdd`] that Redis would only reject inside
/// the transaction, after other parts applied. Backends call it first.
///
/// # Errors
///
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an explicit
/// id or an entry without fields.
pub fn validate_ack_and_add(step: &AckAndAdd) -> Result<()> {
    for entry in &step.adds {
        if entry.id != crate::AddId::Auto {
            return Err(crate::Error::InvalidArgument(format!(
                "ack_and_add appends need automatic ids; got {:?} for '{}'",
                entry.id, entry.stream
            )));
        }
        validate_new_entry(entry)?;
    }
    Ok(())
}

/// Checks what every backend rejects before an append-once.
///
/// # Errors
///
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an entry
/// without fields or a window under 1 ms.
pub fn validate_once_entry(once: &OnceEntry) -> Result<()> {
    validate_new_entry(&once.entry)?;
    if once.window < Duration::from_millis(1) {
        return Err(crate::Error::InvalidArgument(format!(
            "an append-once window must be at least 1 ms (marker '{}')",
            once.marker
        )));
    }
    Ok(())
}

/// Checks what every backend rejects before sending an append.
///
/// # Errors
///
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an entry
/// without fields.
pub fn validate_new_entry(entry: &NewEntry) -> Result<()> {
    if entry.fields.is_empty() {
        return Err(crate::Error::InvalidArgument(format!(
            "an entry needs at least one field (stream '{}')",
            entry.stream
        )));
    }
    Ok(())
}

/// `Arc<B>`, `Box<B>` and `&B` are brokers: layers that change nothing.
macro_rules! pointer_layers {
    ($($ty:ty),*) => {$(
        impl<B: Broker + ?Sized> crate::BrokerLayer for $ty {
            type Inner = B;

            fn inner(&self) -> &B {
                self
            }
        }
    )*};
}

pointer_layers!(Arc<B>, Box<B>, &B);
