//! crewq-redis: placeholder.
