//! How to reach Redis: the URL, its redacted form for logs, and time-outs.

use std::fmt;
use std::time::Duration;

use crewq_core::{Error, Result};
use redis::io::tcp::TcpSettings;
use redis::io::tcp::socket2::TcpKeepalive;
use redis::{Client, IntoConnectionInfo};

use crate::RedisBroker;
use crate::redact::redact_url;

/// Settings for a [`RedisBroker`], built from a URL.
///
/// The URL is `redis://[user[:password]@]host[:port][/db]`, `rediss://` for
/// TLS (feature `tls`), or `redis+unix:///path?db=0&user=u&pass=p`; append
/// `?protocol=resp3` to speak RESP3. The password is never printed:
/// `Debug` and every log line show [`RedisConfig::redacted_url`].
///
/// # TLS
///
/// With feature `tls`, a `rediss://` URL connects over TLS with rustls and
/// checks the server's certificate against the platform's roots (read with
/// `rustls-native-certs` on each connection), or against a private CA given
/// with `tls_root_ca_pem`; `tls_client_cert_pem` adds a client
/// certificate for servers with `tls-auth-clients yes`. Connecting installs
/// *ring* as rustls's process-wide crypto provider unless the application
/// installed one before. `rediss://...#insecure` (no certificate check) is
/// not supported.
///
/// ```
/// use std::time::Duration;
/// use crewq_redis::RedisConfig;
/// let config = RedisConfig::new("redis://crew:s3cret@127.0.0.1:6379/0")
///     .response_timeout(Duration::from_secs(2))
///     .retries(3);
/// assert_eq!(config.redacted_url(), "redis://crew:***@127.0.0.1:6379/0");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) connection_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) retries: usize,
    pub(crate) blocking_connections: usize,
    pub(crate) block_margin: Duration,
    pub(crate) tcp_keepalive: Option<Duration>,
    pub(crate) wait_for_server: Option<Duration>,
    pub(crate) cluster: bool,
    pub(crate) replica_wait: Option<ReplicaWait>,
    #[cfg(feature = "tls")]
    pub(crate) tls: crate::tls::TlsTrust,
}

/// What [`RedisConfig::wait_for_replicas`] asks of every append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReplicaWait {
    /// How many replicas must acknowledge the write.
    pub replicas: u32,
    /// How long the server waits for them (`WAIT`'s time-out).
    pub timeout: Duration,
}

impl RedisConfig {
    /// Default [`RedisConfig::connection_timeout`].
    pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default [`RedisConfig::response_timeout`]. Generous: a pipelined batch
    /// of appends or a long `XRANGE` can take far longer than redis-rs's own
    /// default of 500 ms on a loaded server.
    pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default [`RedisConfig::retries`].
    pub const DEFAULT_RETRIES: usize = 6;
    /// Default [`RedisConfig::blocking_connections`].
    pub const DEFAULT_BLOCKING_CONNECTIONS: usize = 4;
    /// Default [`RedisConfig::block_margin`].
    pub const DEFAULT_BLOCK_MARGIN: Duration = Duration::from_secs(2);
    /// Default [`RedisConfig::tcp_keepalive`]: the first probe after 10 s
    /// of silence, then (on Linux) every 5 s, 3 unanswered probes closing
    /// the socket: a peer gone without a FIN is found within about 25 s.
    pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(10);

    /// Settings for `url` with the default time-outs.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            connection_timeout: Self::DEFAULT_CONNECTION_TIMEOUT,
            response_timeout: Self::DEFAULT_RESPONSE_TIMEOUT,
            retries: Self::DEFAULT_RETRIES,
            blocking_connections: Self::DEFAULT_BLOCKING_CONNECTIONS,
            block_margin: Self::DEFAULT_BLOCK_MARGIN,
            tcp_keepalive: Some(Self::DEFAULT_TCP_KEEPALIVE),
            wait_for_server: None,
            cluster: false,
            replica_wait: None,
            #[cfg(feature = "tls")]
            tls: crate::tls::TlsTrust::default(),
        }
    }

    /// How long one attempt to open a connection may take.
    #[must_use]
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// How long a command on the shared connection may wait for its reply
    /// before it fails with [`Error::Timeout`](crewq_core::Error::Timeout).
    ///
    /// A time-out also retires the shared connection: it may be half-open
    /// (gone silent with no FIN or RST, so every later command would time
    /// out too), and the next call opens a fresh one. Keep it well above
    /// the slowest reply expected (a large pipelined batch) so a busy
    /// server does not cost reconnects.
    ///
    /// Blocking reads never use the shared connection, so this need not
    /// cover any `BLOCK` time.
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How many times a dropped shared connection is re-opened (with
    /// exponential back-off) before commands fail.
    #[must_use]
    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    /// How many idle dedicated connections for blocking reads are kept
    /// open. More concurrent blocking reads than this still each get a
    /// connection of their own; the extra ones are closed after use.
    #[must_use]
    pub fn blocking_connections(mut self, count: usize) -> Self {
        self.blocking_connections = count;
        self
    }

    /// How much longer than its `BLOCK` time a blocking read waits for the
    /// server's reply before it fails with a time-out.
    #[must_use]
    pub fn block_margin(mut self, margin: Duration) -> Self {
        self.block_margin = margin;
        self
    }

    /// Makes [`RedisConfig::connect`] wait for a server that is down or
    /// not answering yet (a crew started before its Redis), trying again
    /// with back-off and logging each failed attempt, for at most `bound`
    /// in all; then it fails with one [`Error::Connection`] naming the
    /// address, how long it tried and the last failure. A refused identity
    /// (wrong password, untrusted certificate) fails at once.
    ///
    /// Without it, `connect` tries a handful of times (about 9.5 s with
    /// the default [`RedisConfig::retries`]) and a server that accepts but
    /// never answers costs each attempt its [`RedisConfig::connection_timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use crewq_redis::RedisConfig;
    /// let config = RedisConfig::new("redis://127.0.0.1:6379/0")
    ///     .wait_for_server(Duration::from_secs(60));
    /// # drop(config);
    /// ```
    #[must_use]
    pub fn wait_for_server(mut self, bound: Duration) -> Self {
        self.wait_for_server = Some(bound);
        self
    }

    /// Speaks to a Redis Cluster: the URL is then one node's, or a
    /// comma-separated list of seed nodes (`host:port,host:port` or full
    /// URLs; a seed without a scheme takes the first one's scheme, user
    /// and password).
    ///
    /// Commands go out on redis-rs's cluster client, which follows `MOVED`
    /// and `ASK` redirects and a failover's new topology, and waits out
    /// `TRYAGAIN`, `CLUSTERDOWN` and `LOADING` (those that outlast its
    /// retries are a transient `Unavailable`, as on a single node). Every
    /// script and `MULTI` must keep all its keys in one hash slot: a call
    /// whose keys span slots is refused before anything is sent, with an
    /// [`Error::InvalidArgument`](crewq_core::Error::InvalidArgument)
    /// naming the keys. [`Keyspace::cluster`](crewq_core::Keyspace::cluster)
    /// lays keys out that way. Pipelined batches are split by slot, one
    /// pipeline per slot; blocking reads each get a cluster connection of
    /// their own.
    ///
    /// ```
    /// use crewq_redis::RedisConfig;
    /// let config = RedisConfig::new("10.0.0.1:7000,10.0.0.2:7000").cluster();
    /// # drop(config);
    /// ```
    #[must_use]
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Opt-in durability for dispatch: every append ([`Broker::xadd`],
    /// [`Broker::xadd_many`], [`Broker::xadd_once`], which is how a
    /// `Producer` dispatches) is followed by Redis's `WAIT replicas
    /// timeout` on the same connection, and the call succeeds only once at
    /// least `replicas` replicas acknowledged the write. Off by default:
    /// then `WAIT` is never sent.
    ///
    /// Redis replication is asynchronous: without it, a primary can
    /// acknowledge an append and die before any replica has it, and the
    /// failover then loses the task. With it, a dispatch that returned `Ok`
    /// is on `replicas` replicas as well (unless every one of them is lost
    /// too, or the primary restarts without persistence with a replica
    /// syncing from it).
    ///
    /// When fewer replicas acknowledge within `timeout`, the call fails
    /// with the transient
    /// [`Error::NotReplicated`](crewq_core::Error::NotReplicated): the
    /// write **was applied** on the primary and is not rolled back, but is
    /// not yet safe from a failover. The producer may dispatch again: with
    /// a dedupe window ([`Producer::with_dedupe_window`]) the retry finds the
    /// marker, appends nothing twice, and its own `WAIT` covers the first
    /// write (a duplicate re-writes its marker, so the wait is for a write
    /// at least as recent). Without a dedupe window a retry appends the
    /// task again.
    ///
    /// An append that waits runs on a connection of its own (from the pool
    /// of blocking reads): `WAIT` blocks the connection it is sent on until
    /// the replicas answer or `timeout` passes, which on the shared
    /// connection would hold every other command of the crew. On a Redis
    /// Cluster the `WAIT` goes in the same pipeline as the appends of each
    /// slot, so it reaches the master that owns the written stream's slot
    /// (a batch over several slots waits on each of their masters).
    ///
    /// Only appends wait: acks, results written by a worker's settle and
    /// group commands do not (a result or ack lost to a failover is
    /// re-done by the at-least-once redelivery; see RELIABILITY.md).
    ///
    /// ```
    /// use std::time::Duration;
    /// use crewq_redis::RedisConfig;
    /// let config = RedisConfig::new("redis://127.0.0.1:6379/0")
    ///     .wait_for_replicas(1, Duration::from_millis(100));
    /// # drop(config);
    /// ```
    ///
    /// [`Broker::xadd`]: crewq_core::Broker::xadd
    /// [`Broker::xadd_many`]: crewq_core::Broker::xadd_many
    /// [`Broker::xadd_once`]: crewq_core::Broker::xadd_once
    /// [`Producer::with_dedupe_window`]: crewq_core::producer::Producer::with_dedupe_window
    #[must_use]
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replica_wait = Some(ReplicaWait { replicas, timeout });
        self
    }

    /// TCP keepalive on every connection: after `idle` without traffic the
    /// kernel probes the peer and closes a socket whose peer is gone (a
    /// crashed host, a dropped NAT mapping), so even an idle connection
    /// does not stay half-open. `None` turns it off.
    #[must_use]
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.tcp_keepalive = idle;
        self
    }

    /// Trusts the CA certificates in `pem` (one or more `CERTIFICATE`
    /// blocks) instead of the platform's roots, for a `rediss://` URL: for a
    /// server whose certificate a private CA signed. Only with feature `tls`.
    ///
    /// Checked on [`RedisConfig::connect`], which fails with
    /// [`Error::InvalidArgument`](crewq_core::Error::InvalidArgument) when
    /// `pem` holds no certificate or the URL is not `rediss://`.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls_root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.root_ca_pem = Some(pem.into());
        self
    }

    /// Presents the certificate chain `cert_chain_pem` (leaf first) and its
    /// private key `key_pem` (PKCS#8, PKCS#1 or SEC1) to the server: mutual
    /// TLS, for a server started with `tls-auth-clients yes`. Only with
    /// feature `tls`.
    ///
    /// Checked on [`RedisConfig::connect`], which fails with
    /// [`Error::InvalidArgument`](crewq_core::Error::InvalidArgument) when
    /// either does not parse, the key does not belong to the certificate, or
    /// the URL is not `rediss://`. `Debug` never shows the key.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls_client_cert_pem(
        mut self,
        cert_chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client_cert = Some(crate::tls::ClientCert {
            chain_pem: cert_chain_pem.into(),
            key_pem: key_pem.into(),
        });
        self
    }

    /// The URL with its password replaced by `***`, safe to print.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The redis-rs client for these settings (URL and TLS trust).
    pub(crate) fn client(&self, redacted_url: &str) -> Result<Client> {
        // redis-rs's URL errors never echo the URL, so they are safe to keep.
        let info = self.url.as_str().into_connection_info().map_err(|err| {
            Error::InvalidArgument(format!("not a Redis URL: {redacted_url} ({err})"))
        })?;
        let info = info.set_tcp_settings(tcp_settings(self.tcp_keepalive));
        let client = Client::open(info).map_err(|err| {
            Error::InvalidArgument(format!("not a Redis URL: {redacted_url} ({err})"))
        })?;
        #[cfg(feature = "tls")]
        let client = crate::tls::apply(client, &self.tls, redacted_url)?;
        Ok(client)
    }

    /// Connects with these settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crewq_core::Error::InvalidArgument) for a
    /// URL that does not parse or TLS certificates that are not usable; a
    /// connection error or time-out when the server cannot be reached or
    /// (`rediss://`) its certificate is not trusted; a backend error when
    /// authentication fails.
    ///
    /// With [`RedisConfig::wait_for_server`], a server that is not up (or
    /// does not answer) is waited for up to that bound, and the error then
    /// names the address and how long it was tried.
    pub async fn connect(self) -> Result<RedisBroker> {
        crate::connect::open(self).await
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("RedisConfig");
        debug
            .field("url", &self.redacted_url())
            .field("connection_timeout", &self.connection_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("retries", &self.retries)
            .field("blocking_connections", &self.blocking_connections)
            .field("block_margin", &self.block_margin)
            .field("tcp_keepalive", &self.tcp_keepalive)
            .field("wait_for_server", &self.wait_for_server)
            .field("cluster", &self.cluster)
            .field("replica_wait", &self.replica_wait);
        #[cfg(feature = "tls")]
        debug.field("tls", &self.tls);
        debug.finish()
    }
}

/// The TCP settings of every connection: keepalive after `idle`.
pub(crate) fn tcp_settings(idle: Option<Duration>) -> TcpSettings {
    let settings = TcpSettings::default();
    let Some(idle) = idle else {
        return settings;
    };
    let keepalive = TcpKeepalive::new().with_time(idle);
    #[cfg(target_os = "linux")]
    let keepalive = keepalive
        .with_interval(idle / 2)
        .with_retries(KEEPALIVE_PROBES);
    settings.set_keepalive(keepalive)
}

/// Unanswered keepalive probes before the kernel closes the socket.
#[cfg(target_os = "linux")]
const KEEPALIVE_PROBES: u32 = 3;

/// A `BLOCK` time in whole milliseconds, rounded up: Redis reads `BLOCK 0`
/// as "forever", so a non-zero duration below 1 ms must never become 0.
pub(crate) fn block_millis(duration: Duration) -> u64 {
    ceil_millis(duration)
}

/// A duration in whole milliseconds, rounded up and saturating.
///
/// Rounding up keeps "idle at least `d`" true at Redis's ms resolution.
pub(crate) fn ceil_millis(duration: Duration) -> u64 {
    let whole = duration.as_millis();
    let whole = if duration.subsec_nanos().is_multiple_of(1_000_000) {
        whole
    } else {
        whole + 1
    };
    u64::try_from(whole).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let config = RedisConfig::new("redis://admin:hunter2@localhost:6379/0");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("redis://admin:***@localhost:6379/0"),
            "{debug}"
        );
    }

    /// Every connection of a client gets TCP keepalive, unless turned off.
    #[test]
    fn connections_use_tcp_keepalive_by_default() {
        let config = RedisConfig::new("redis://127.0.0.1:1/0");
        let client = config.client("redis://127.0.0.1:1/0").expect("client");
        assert!(
            client
                .get_connection_info()
                .tcp_settings()
                .keepalive()
                .is_some()
        );
        let off = config.tcp_keepalive(None);
        let client = off.client("redis://127.0.0.1:1/0").expect("client");
        assert!(
            client
                .get_connection_info()
                .tcp_settings()
                .keepalive()
                .is_none()
        );
    }

    #[test]
    fn block_times_round_up_to_whole_millis() {
        assert_eq!(block_millis(Duration::ZERO), 0);
        assert_eq!(block_millis(Duration::from_nanos(1)), 1);
        assert_eq!(block_millis(Duration::from_micros(999)), 1);
        assert_eq!(block_millis(Duration::from_millis(1)), 1);
        assert_eq!(block_millis(Duration::from_micros(1_500)), 2);
        assert_eq!(block_millis(Duration::MAX), u64::MAX);
    }
}
