//! Dispatching tasks to their streams (being written).
