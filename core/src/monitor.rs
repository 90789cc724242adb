//! Lag, pending work and dead letters at a glance (being written).
