//! The Broker conformance suite: one `pub async fn` per `# Behavior` bullet
//! of [`Broker`](crate::Broker).
//!
//! A backend runs the suite by expanding [`conformance_cases!`](crate::conformance_cases)
//! into one named test per case:
//!
//! ```text
//! macro_rules! my_backend_cases {
//!     ($($case:ident),* $(,)?) => {$(
//!         #[tokio::test(start_paused = true)]
//!         async fn $case() {
//!             let broker = MyBroker::new();
//!             crewq_core::conformance::$case(&broker, &Ctx::new("t")).await;
//!         }
//!     )*};
//! }
//! crewq_core::conformance_cases!(my_backend_cases);
//! ```
//!
//! # Time
//!
//! Cases that need time to pass (idle times, blocking reads) call
//! `tokio::time::sleep`. A backend whose clock is tokio's (the memory broker
//! with [`TokioClock`](crate::TokioClock)) runs them on a paused runtime,
//! where those sleeps are instant and exact; a real server runs them on real
//! time, so the cases sleep a little longer than the thresholds they test.
//!
//! # Keys
//!
//! Every key a case touches comes from [`Ctx::key`], so cases can share a
//! server, run in parallel, and be cleaned up by prefix.

/// Where a case puts its keys.
#[derive(Clone, Debug)]
pub struct Ctx {
    prefix: String,
}

impl Ctx {
    /// Keys will start with `prefix` and a colon.
    pub fn new(prefix: impl Into<String>) -> Self {
        Ctx {
            prefix: prefix.into(),
        }
    }

    /// The key called `name` in this case's namespace.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{}", self.prefix, name)
    }

    /// The prefix every key of this case starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Calls `$callback! { case, case, ... }` with the name of every
/// conformance case, so a backend's test file can expand each into a test.
#[macro_export]
macro_rules! conformance_cases {
    ($callback:ident) => {
        $callback! {
            // stream.rs
            xadd_auto_ids_strictly_increase,
            xadd_auto_id_after_future_explicit_id_increments_seq,
            xadd_explicit_id_must_exceed_top,
            xadd_stores_fields_in_order,
            xadd_rejects_empty_fields,
            xadd_with_maxlen_trims_oldest,
            xadd_many_returns_one_result_per_entry,
            xadd_once_appends_once_per_marker,
            xadd_once_forgets_after_the_window,
            xadd_once_rejects_malformed_entries,
            xlen_counts_present_entries,
            xrange_honours_bounds_and_count,
            xrange_missing_key_is_empty,
            xdel_counts_existing_ids_only,
            // trim.rs
            xtrim_maxlen_keeps_newest,
            xtrim_minid_removes_smaller_ids,
            xtrim_approximate_never_overtrims,
            trimming_leaves_pending_entries,
            // group.rs
            group_create_start_decides_what_is_new,
            group_create_twice_is_busygroup,
            group_create_requires_key_unless_mkstream,
            group_destroy_reports_existence,
            consumer_delete_drops_its_pending_entries,
            // prune.rs
            consumer_delete_if_idle_deletes_an_idle_consumer_holding_nothing,
            consumer_delete_if_idle_keeps_a_consumer_holding_entries,
            consumer_delete_if_idle_keeps_a_recently_active_consumer,
            consumer_delete_if_idle_keeps_a_consumer_that_read_after_it_was_found_idle,
            consumer_delete_if_idle_reports_missing_consumers_groups_and_keys,
            // read.rs
            read_new_delivers_each_entry_once_per_group,
            read_new_adds_to_pending_with_one_delivery,
            read_honours_count,
            read_history_returns_own_pending_after_id,
            read_history_counts_a_delivery,
            read_history_returns_deleted_entries_without_fields,
            read_history_ignores_block,
            read_missing_group_is_nogroup,
            read_block_times_out_empty,
            read_block_is_woken_by_append,
            read_creates_the_consumer,
            // ack_pending.rs
            ack_counts_only_pending_ids,
            ack_missing_group_is_zero,
            pending_summary_of_empty_group,
            pending_summary_counts_per_consumer,
            pending_missing_group_is_nogroup,
            pending_extended_filters_range_count_consumer,
            pending_extended_filters_min_idle,
            pending_extended_reports_owner_idle_and_deliveries,
            // claim.rs
            claim_moves_ownership_and_counts_a_delivery,
            claim_skips_entries_not_idle_enough,
            claim_ignores_ids_not_pending,
            claim_drops_deleted_entries,
            claim_missing_group_is_nogroup,
            claim_ids_resets_idle_without_counting_a_delivery,
            autoclaim_follows_its_cursor_to_the_end,
            autoclaim_reports_and_removes_deleted_entries,
            autoclaim_scans_at_most_ten_times_count,
            autoclaim_missing_group_is_nogroup,
            autoclaim_rejects_count_out_of_range,
            // autoclaim_recorded.rs
            autoclaim_recorded_claims_and_records_deleted_entries,
            autoclaim_recorded_records_each_id_once,
            autoclaim_recorded_appends_nothing_without_deletions,
            autoclaim_recorded_rejects_bad_calls_whole,
            // info.rs
            info_stream_reports_counters_and_edges,
            info_missing_key_fails,
            info_groups_tracks_reads_and_lag,
            info_groups_lag_with_deletions,
            info_consumers_reports_pending_and_idle,
            info_consumers_missing_group_is_nogroup,
            // atomic.rs
            ack_and_add_applies_both,
            ack_and_add_reports_each_ack,
            ack_and_add_rejects_malformed_steps_whole,
            ack_and_add_deletes_in_the_same_step,
            settle_writes_and_acks_owned_entries,
            settle_skips_entries_another_consumer_claimed,
            settle_skips_entries_no_longer_pending,
            settle_rejects_malformed_steps_whole,
            settle_missing_group_is_nogroup,
            settle_fails_an_item_alone,
            settle_settles_large_batches_exactly,
            renew_resets_idle_of_own_entries,
            renew_never_takes_entries_of_others,
            renew_leaves_deleted_entries_pending,
            // delayed.rs
            settle_schedules_delays_of_owned_items,
            promote_moves_due_members_in_due_order,
            promote_goes_by_the_brokers_clock,
            promote_racing_appends_each_member_once,
            promote_honours_count_and_missing_sets,
            delayed_len_counts_waiting_members,
            delay_once_schedules_once_per_marker,
            delay_once_respects_append_markers,
            delay_once_rejects_malformed_entries,
            // lanes.rs
            read_lanes_takes_the_highest_priority_first,
            read_lanes_takes_a_starving_entry_first,
            read_lanes_delivers_as_a_group_read,
            read_lanes_skips_missing_lanes_and_reports_missing_groups,
            read_lanes_creates_the_group_of_a_lane_never_served,
            read_lanes_rejects_bad_requests,
            // rate.rs
            rate_acquire_keeps_starts_in_any_window,
            rate_acquire_keeps_running_below_the_limit,
            rate_acquire_frees_expired_running_permits,
            rate_acquire_racing_grants_within_the_limit,
            rate_acquire_rejects_bad_requests,
            rate_renew_extends_only_held_permits,
            rate_release_returns_unused_starts,
            rate_pause_stops_grants_until_it_ends,
            rate_pause_keeps_the_later_end,
            rate_state_reports_limit_running_starts_and_pause,
        }
    };
}

/// The names of all cases, in the order of [`conformance_cases!`](crate::conformance_cases).
pub const CASES: &[&str] = {
    macro_rules! names {
        ($($case:ident),* $(,)?) => { &[$(stringify!($case)),*] };
    }
    conformance_cases!(names)
};

mod ack_pending;
mod atomic;
mod autoclaim_recorded;
mod claim;
mod delayed;
mod group;
mod info;
mod lanes;
mod once;
mod prune;
mod rate;
mod read;
mod settle;
mod stream;
mod support;
mod trim;

pub use ack_pending::*;
pub use atomic::*;
pub use autoclaim_recorded::*;
pub use claim::*;
pub use delayed::*;
pub use group::*;
pub use info::*;
pub use lanes::*;
pub use once::*;
pub use prune::*;
pub use rate::*;
pub use read::*;
pub use settle::*;
pub use stream::*;
pub use trim::*;
