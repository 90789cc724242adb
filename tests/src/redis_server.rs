//! A private redis-server for tests (placeholder until the Redis backend lands).

/// A redis-server owned by one test (or `CREWQ_REDIS_URL`).
pub struct TestRedis {
    url: String,
}

impl TestRedis {
    /// Starts a private server.
    pub fn start() -> TestRedis {
        panic!("TestRedis is not written yet")
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A key prefix no other user of this server has.
    pub fn unique_prefix(&self) -> String {
        String::new()
    }
}
