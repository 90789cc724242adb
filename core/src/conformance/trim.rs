//! Cases for trimming: `XTRIM` and what trims leave behind.

use crate::{Broker, NewEntry, StreamId, Trim};

use super::Ctx;
use super::support::{
    IDLE_THRESHOLD, IDLE_WAIT, all_ids, fields, group_from_start, id, ids_of, pending_owners,
    read_history, read_new, seed,
};

/// `xtrim`: `MAXLEN n` keeps exactly the newest `n`.
pub async fn xtrim_maxlen_keeps_newest(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    assert_eq!(
        broker
            .xtrim(&stream, Trim::max_len(0))
            .await
            .expect("xtrim missing key"),
        0
    );
    seed(broker, &stream, 5).await;
    assert_eq!(
        broker
            .xtrim(&stream, Trim::max_len(10))
            .await
            .expect("xtrim"),
        0,
        "nothing to trim"
    );
    assert_eq!(
        broker
            .xtrim(&stream, Trim::max_len(2))
            .await
            .expect("xtrim"),
        3
    );
    assert_eq!(all_ids(broker, &stream).await, vec![id(4), id(5)]);
    assert_eq!(
        broker
            .xtrim(&stream, Trim::max_len(0))
            .await
            .expect("xtrim"),
        2
    );
    // An emptied stream still exists, and keeps its last id.
    let info = broker.info_stream(&stream).await.expect("info stream");
    assert_eq!((info.length, info.last_generated_id), (0, id(5)));
    assert_eq!(
        info.max_deleted_entry_id,
        StreamId::ZERO,
        "trims are not deletes"
    );
}

/// `xtrim`: `MINID id` removes the entries with smaller ids.
pub async fn xtrim_minid_removes_smaller_ids(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    seed(broker, &stream, 5).await;
    assert_eq!(
        broker
            .xtrim(&stream, Trim::min_id(id(1)))
            .await
            .expect("xtrim"),
        0,
        "nothing below the first id"
    );
    assert_eq!(
        broker
            .xtrim(&stream, Trim::min_id(id(3)))
            .await
            .expect("xtrim"),
        2
    );
    assert_eq!(all_ids(broker, &stream).await, vec![id(3), id(4), id(5)]);
    // A MINID between entries keeps the entries at or above it.
    assert_eq!(
        broker
            .xtrim(&stream, Trim::min_id(StreamId::new(3, 1)))
            .await
            .expect("xtrim"),
        1
    );
    assert_eq!(all_ids(broker, &stream).await, vec![id(4), id(5)]);
}

/// `xtrim`: approximate trims keep at least what an exact trim keeps.
pub async fn xtrim_approximate_never_overtrims(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    let ids = seed(broker, &stream, 10).await;
    let removed = broker
        .xtrim(&stream, Trim::max_len(3).approximate())
        .await
        .expect("xtrim ~");
    let kept = all_ids(broker, &stream).await;
    assert_eq!(removed as usize + kept.len(), ids.len(), "removed + kept");
    assert!(kept.len() >= 3, "kept {kept:?}");
    assert_eq!(kept, ids[ids.len() - kept.len()..], "kept the newest");

    let removed = broker
        .xtrim(&stream, Trim::min_id(id(8)).approximate())
        .await
        .expect("xtrim minid ~");
    let kept_after = all_ids(broker, &stream).await;
    assert_eq!(
        removed as usize + kept_after.len(),
        kept.len(),
        "removed + kept"
    );
    assert!(
        kept_after.ends_with(&[id(8), id(9), id(10)]),
        "kept every id from 8-0: {kept_after:?}"
    );
    assert_eq!(
        kept_after,
        kept[kept.len() - kept_after.len()..],
        "kept the newest"
    );
}

/// `xtrim`: trimming leaves pending entries pending; they read back without
/// fields.
pub async fn trimming_leaves_pending_entries(broker: &dyn Broker, ctx: &Ctx) {
    let (stream, group) = (ctx.key("s"), "g");
    seed(broker, &stream, 4).await;
    group_from_start(broker, &stream, group).await;
    read_new(broker, &stream, group, "c", 3).await;

    assert_eq!(
        broker
            .xtrim(&stream, Trim::max_len(2))
            .await
            .expect("xtrim"),
        2
    );
    // An xadd's own trim leaves the pending list alone too.
    broker
        .xadd(
            NewEntry::new(&stream, fields(5))
                .with_id(id(5))
                .with_trim(Trim::max_len(2)),
        )
        .await
        .expect("xadd with trim");
    assert_eq!(all_ids(broker, &stream).await, vec![id(4), id(5)]);

    let c = String::from("c");
    assert_eq!(
        pending_owners(broker, &stream, group).await,
        vec![
            (id(1), c.clone(), 1),
            (id(2), c.clone(), 1),
            (id(3), c.clone(), 1)
        ],
        "the pending list is untouched"
    );
    let history = read_history(broker, &stream, group, "c", StreamId::ZERO).await;
    assert_eq!(ids_of(&history), vec![id(1), id(2), id(3)]);
    assert!(
        history.iter().all(|e| e.fields.is_none()),
        "trimmed entries have no fields: {history:?}"
    );
    // Reading past the trimmed entries still delivers what is new.
    let fresh = read_new(broker, &stream, group, "c", 10).await;
    assert_eq!(ids_of(&fresh), vec![id(4), id(5)]);

    // They stay claimable for cleanup: claiming drops them.
    tokio::time::sleep(IDLE_WAIT).await;
    let claimed = broker
        .claim(&stream, group, "d", IDLE_THRESHOLD, &[id(1)])
        .await
        .expect("claim");
    assert!(claimed.is_empty(), "trimmed entries are not returned");
    assert_eq!(
        pending_owners(broker, &stream, group).await.len(),
        4,
        "1-0 dropped from the pending list: 2-0, 3-0, 4-0, 5-0 left"
    );
}
