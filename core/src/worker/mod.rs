//! Running tasks with at-least-once delivery (being written).
