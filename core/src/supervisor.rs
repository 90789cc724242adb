//! Fanning work out and gathering results (being written).
