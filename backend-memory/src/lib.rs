//! crewq-memory: placeholder.
pub struct MemoryBroker;
impl MemoryBroker {
    pub fn with_clock<C>(_c: C) -> Self {
        MemoryBroker
    }
}
