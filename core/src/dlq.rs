//! Listing, replaying and purging dead letters (being written).
