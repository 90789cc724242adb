//! Cases for shared rate limits: `rate_acquire`, `rate_renew`,
//! `rate_release`, `rate_pause` and `rate_state`.
//!
//! The windows, leases and pauses are hundreds of ms, with margins, so the
//! cases hold on a real server's clock as on a paused one.

use std::time::Duration;

use crate::{Broker, ErrorKind, RateAcquire, RateGrant, RateKeys, RateLimit};

use super::Ctx;

const MS: fn(u64) -> Duration = Duration::from_millis;

/// A lease no case outlives.
const LONG: Duration = Duration::from_secs(60);

/// The rate-limit keys of a case.
fn keys(ctx: &Ctx) -> RateKeys {
    RateKeys {
        starts: ctx.key("rate:starts"),
        running: ctx.key("rate:running"),
        paused: ctx.key("rate:paused"),
        limit: ctx.key("rate:limit"),
    }
}

/// Asks for `want` permits named `<tag>-<i>`.
async fn acquire(
    broker: &dyn Broker,
    keys: &RateKeys,
    limit: RateLimit,
    tag: &str,
    want: usize,
    lease: Duration,
) -> RateGrant {
    let permits = (0..want).map(|i| format!("{tag}-{i}")).collect();
    broker
        .rate_acquire(RateAcquire {
            keys: keys.clone(),
            limit,
            permits,
            lease,
        })
        .await
        .unwrap_or_else(|e| panic!("rate_acquire {tag}: {e}"))
}

/// `rate_acquire`: 3 starts per second. Two at 0, one of two at ~300 ms
/// (the window holds 3), whose refusal says when the first ones leave;
/// past them, two more, not three: the one of ~300 ms still counts, where
/// a bucket reset at 1 s would grant three.
pub async fn rate_acquire_keeps_starts_in_any_window(broker: &dyn Broker, ctx: &Ctx) {
    let keys = keys(ctx);
    let limit = RateLimit::new().starts(3, Duration::from_secs(1));
    let first = acquire(broker, &keys, limit, "a", 2, LONG).await;
    assert_eq!(first.granted, 2);
    assert_eq!(first.retry_in, None, "all granted");
    tokio::time::sleep(MS(300)).await;
    let second = acquire(broker, &keys, limit, "b", 2, LONG).await;
    assert_eq!(second.granted, 1, "the window holds 3");
    let wait = second.retry_in.expect("a start limit says when");
    let since = second.at_ms - first.at_ms;
    assert_eq!(wait, MS(1000 - since), "when the first two leave");
    let third = acquire(broker, &keys, limit, "c", 1, LONG).await;
    assert_eq!(third.granted, 0);
    tokio::time::sleep(wait + MS(50)).await;
    let fourth = acquire(broker, &keys, limit, "d", 3, LONG).await;
    assert_eq!(fourth.granted, 2, "b-0 still counts: {fourth:?}");
}

/// `rate_acquire`: 2 running; a third waits for a release (and is told no
/// time, since starts are not what is short), then takes its room.
pub async fn rate_acquire_keeps_running_below_the_limit(broker: &dyn Broker, ctx: &Ctx) {
    let keys = keys(ctx);
    let limit = RateLimit::new().running(2);
    assert_eq!(acquire(broker, &keys, limit, "a", 3, LONG).await.granted, 2);
    let refused = acquire(broker, &keys, limit, "b", 1, LONG).await;
    assert_eq!((refused.granted, refused.retry_in), (0, None));
    let released = broker
        .rate_release(&keys, &["a-1".to_owned()], &[])
        .await
        .expect("rate_release");
    assert_eq!(released, 1);
    assert_eq!(acquire(broker, &keys, limit, "b", 2, LONG).await.granted, 1);
}

/// `rate_acquire`: a permit nobody renews is dropped at its lease's end,
/// as a crashed worker's would be; a renewed one is not.
pub async fn rate_acquire_frees_expired_running_permits(broker: &dyn Broker, ctx: &Ctx) {
    let keys = keys(ctx);
    let limit = RateLimit::new().running(2);
    assert_eq!(
        acquire(broker, &keys, limit, "a", 2, MS(400)).await.granted,
        2
    );
    tokio::time::sleep(MS(200)).await;
    let renewed = broker
        .rate_renew(&keys, &["a-0".to_owned()], LONG)
        .await
        .expect("rate_renew");
    assert_eq!(renewed, ["a-0"]);
    assert_eq!(acquire(broker, &keys, limit, "b", 1, LONG).await.granted, 0);
    tokio::time::sleep(MS(400)).await;
    let after = acquire(broker, &keys, limit, "b", 2, LONG).await;
    assert_eq!(after.granted, 1, "a-1 expired, a-0 renewed");
}

/// `rate_acquire`: ten racing acquires of 3 each under 5 starts and 4
/// running grant 4 in all.
pub async fn rate_acquire_racing_grants_within_the_limit(broker: &dyn Broker, ctx: &Ctx) {
    let keys = keys(ctx);
    let limit = RateLimit::new().starts(5, LONG).running(4);
    let racing = (0..10).map(|i| {
        let keys = &keys;
        async move { acquire(broker, keys, limit, &format!("w{i}"), 3, LONG).await }
    });
    let grants = futures::future::join_all(racing).await;
    let total: usize = grants.iter().map(|g| g.granted).sum();
    assert_eq!(total, 4, "{grants:?}");
    let state = broker.rate_state(&keys).await.expect("rate_state");
    assert_eq!((state.running, state.starts_in_window), (4, 4));
}

/// `rate_acquire`: requests that cannot be kept fail whole.
pub async fn rate_acquire_rejects_bad_requests(broker: &dyn Broker, ctx: &Ctx) {
    let keys = keys(ctx);
    let ok = RateAcquire {
        keys: keys.clone(),
        limit: RateLimit::new().running(1),
        permits: vec!["p".to_owned()],
        lease: LONG,
    };
    let bad = [
        RateAcquire {
            limit: RateLimit::new().running(0),
            ..ok.clone()
        },
        RateAcquire {
            limit: RateLimit::new().starts(0, LONG),
            ..ok.clone()
        },
        RateAcquire {
            limit: RateLimit::new().starts(1, Duration::from_micros(10)),
            ..ok.clone()
        },
        RateAcquire {
            lease: Duration::ZERO,
            ..ok.clone()
        },
        RateAcquire {
            permits: vec![String::new()],
            ..ok.clone()
        },
    ];
    for request in bad {
        let err = broker
            .rate_acquire(request.clone())
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{request:?}: {err}");
    }
    let state = broker.rate_state(&keys).await.expect("rate_state");
    assert_eq!(state.running, 0, "nothing recorded");
    assert_eq!(state.limit, None);
    assert_eq!(broker.rate_acquire(ok).await.expect("ok").granted, 1);
}

/// `rate_renew`: only held permits are extended.
pub async fn rate_renew_extends_only_held_permits(broker: &dyn Broker, ctx: &Ctx) {
    let keys = keys(ctx);
    let limit = RateLimit::new().running(10);
    acquire(broker, &keys, limit, "short", 1, MS(200)).await;
    acquire(broker, &keys, limit, "held", 2, LONG).await;
    broker
        .rate_release(&keys, &["held-1".to_owned()], &[])
        .await
        .expect("rate_release");
    tokio::time::sleep(MS(400)).await;
    let asked: Vec<String> = ["short-0", "held-0", "held-1", "never"]
        .map(str::to_owned)
        .to_vec();
    let renewed = broker
        .rate_renew(&keys, &asked, LONG)
        .await
        .expect("rate_renew");
    assert_eq!(renewed, ["held-0"]);
    let state = broker.rate_state(&keys).await.expect("rate_state");
    assert_eq!(state.running, 1, "nothing renewed back to life");
}

/// `rate_release`: finished permits keep their starts, unused ones not.
pub async fn rate_release_returns_unused_starts(broker: &dyn Broker, ctx: &Ctx) {
    let keys = keys(ctx);
    let limit = RateLimit::new().starts(4, LONG).running(4);
    assert_eq!(acquire(broker, &keys, limit, "a", 4, LONG).await.granted, 4);
    let dropped = broker
        .rate_release(
            &keys,
            &["a-0".to_owned()],
            &["a-1".to_owned(), "a-2".to_owned()],
        )
        .await
        .expect("rate_release");
    assert_eq!(dropped, 3);
    let state = broker.rate_state(&keys).await.expect("rate_state");
    assert_eq!((state.running, state.starts_in_window), (1, 2));
    let again = acquire(broker, &keys, limit, "b", 4, LONG).await;
    assert_eq!(again.granted, 2, "the unused starts came back, not a-0's");
}

/// `rate_pause`: no grant while paused, the pause's end as the time to
/// ask again; grants after it.
pub async fn rate_pause_stops_grants_until_it_ends(broker: &dyn Broker, ctx: &Ctx) {
    let keys = keys(ctx);
    let limit = RateLimit::new();
    let left = broker.rate_pause(&keys, MS(400)).await.expect("rate_pause");
    assert_eq!(left, MS(400));
    let refused = acquire(broker, &keys, limit, "a", 1, LONG).await;
    assert_eq!(refused.granted, 0);
    let wait = refused.retry_in.expect("the pause's end");
    assert!(wait <= MS(400) && wait > Duration::ZERO, "{wait:?}");
    tokio::time::sleep(wait + MS(50)).await;
    assert_eq!(acquire(broker, &keys, limit, "a", 1, LONG).await.granted, 1);
}

/// `rate_pause`: the later end wins.
pub async fn rate_pause_keeps_the_later_end(broker: &dyn Broker, ctx: &Ctx) {
    let keys = keys(ctx);
    broker
        .rate_pause(&keys, Duration::from_secs(30))
        .await
        .expect("rate_pause");
    let left = broker.rate_pause(&keys, MS(100)).await.expect("rate_pause");
    assert!(left > Duration::from_secs(29), "{left:?}");
    let state = broker.rate_state(&keys).await.expect("rate_state");
    assert!(
        state
            .paused_for
            .is_some_and(|p| p > Duration::from_secs(29)),
        "{state:?}"
    );
    let longer = broker
        .rate_pause(&keys, Duration::from_secs(60))
        .await
        .expect("rate_pause");
    assert!(longer > Duration::from_secs(59), "{longer:?}");
}

/// `rate_state`: what acquires, releases and pauses did.
pub async fn rate_state_reports_limit_running_starts_and_pause(broker: &dyn Broker, ctx: &Ctx) {
    let keys = keys(ctx);
    let empty = broker.rate_state(&keys).await.expect("rate_state");
    assert_eq!(empty, crate::RateState::default());
    let limit = RateLimit::new().starts(10, MS(500)).running(5);
    acquire(broker, &keys, limit, "a", 3, LONG).await;
    broker
        .rate_release(&keys, &["a-0".to_owned()], &[])
        .await
        .expect("rate_release");
    broker
        .rate_pause(&keys, Duration::from_secs(30))
        .await
        .expect("rate_pause");
    let state = broker.rate_state(&keys).await.expect("rate_state");
    assert_eq!(state.limit, Some(limit));
    assert_eq!((state.running, state.starts_in_window), (2, 3));
    assert!(
        state
            .paused_for
            .is_some_and(|p| p > Duration::from_secs(29))
    );
    tokio::time::sleep(MS(700)).await;
    let later = broker.rate_state(&keys).await.expect("rate_state");
    assert_eq!(
        (later.running, later.starts_in_window),
        (2, 0),
        "the window moved on"
    );
}
