//! Support for crewq's cross-crate tests.
