//! What a [`FaultyBroker`](super::FaultyBroker) decides for a call when it
//! starts: its number, its connection and the faults drawn for it.

use std::time::Duration;

use crewq_core::Broker;
use rand::Rng;

use super::{Conn, FaultyBroker, Op, ServerError, links, millis, server};

/// What was decided for one call when it started.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    pub(super) seq: u64,
    pub(super) op: Op,
    /// The connection it goes on.
    pub(super) conn: Conn,
    /// Whether faults were on for it: its end is observed.
    pub(super) watched: bool,
    pub(super) delay: Duration,
    pub(super) error: Option<ErrorAt>,
    pub(super) refused: Option<ServerError>,
    /// Hangs on a silent connection of a half-open link.
    pub(super) half_open: Option<links::Hang>,
    /// The broker is down: refused at once.
    pub(super) outage: bool,
}

/// When an injected error strikes.
#[derive(Clone, Copy, Debug)]
pub(super) enum ErrorAt {
    Before,
    After,
}

impl<B: Broker> FaultyBroker<B> {
    /// Numbers the call, on `conn`, and draws its faults.
    pub(super) fn plan(&self, op: Op, conn: Conn) -> Plan {
        let config = &self.state.config;
        let mut dice = self.dice();
        let seq = dice.calls;
        dice.calls += 1;
        let mut plan = Plan {
            seq,
            op,
            conn,
            watched: false,
            delay: Duration::ZERO,
            error: None,
            refused: None,
            half_open: None,
            outage: false,
        };
        if !dice.enabled || !config.ops.contains(op) {
            return plan;
        }
        plan.watched = true;
        let now = tokio::time::Instant::now();
        if config.outages.iter().any(|window| window.contains(&now)) {
            plan.outage = true;
            return plan;
        }
        plan.half_open = links::hang(config, &mut dice, conn);
        if plan.half_open.is_some() {
            return plan;
        }
        if let Some((a, b)) = config.latency {
            let lo = millis(a.min(b));
            let hi = millis(a.max(b));
            plan.delay = Duration::from_millis(dice.latency.random_range(lo..=hi));
        }
        let roll: f64 = dice.errors.random();
        plan.error = if roll < config.error_before {
            Some(ErrorAt::Before)
        } else if roll < config.error_before + config.error_after {
            Some(ErrorAt::After)
        } else {
            None
        };
        if config.refused > 0.0 {
            let roll: f64 = dice.server.random();
            let choices = ServerError::for_op(op);
            let pick = dice.server.random_range(0..choices.len());
            if plan.error.is_none() && roll < config.refused {
                plan.refused = Some(choices[pick]);
            }
        }
        plan
    }

    /// Draws which items of a settle of `items` items the server refuses,
    /// with the reply text of each (none when the call itself fails).
    pub(super) fn item_failures(&self, plan: &Plan, items: usize) -> Vec<Option<&'static str>> {
        let config = &self.state.config;
        let mut dice = self.dice();
        let faulted = plan.error.is_some()
            || plan.refused.is_some()
            || plan.half_open.is_some()
            || plan.outage;
        if !dice.enabled || !config.ops.contains(plan.op) || config.item_failure <= 0.0 || faulted {
            return vec![None; items];
        }
        (0..items)
            .map(|_| {
                let roll: f64 = dice.server.random();
                let reply = server::ITEM_REPLIES[dice.server.random_range(0..2)];
                (roll < config.item_failure).then_some(reply)
            })
            .collect()
    }
}
