//! Cases for appends, ranges, deletes and trims.

use crate::{Broker, Fields, NewEntry};

use super::Ctx;

/// `xadd`: automatic ids strictly increase.
pub async fn xadd_auto_ids_strictly_increase(broker: &dyn Broker, ctx: &Ctx) {
    let stream = ctx.key("s");
    let mut last = crate::StreamId::ZERO;
    for n in 0..20 {
        let id = broker
            .xadd(NewEntry::new(
                &stream,
                Fields::new().with("n", n.to_string()),
            ))
            .await
            .expect("xadd");
        assert!(id > last, "{id} after {last}");
        last = id;
    }
}
