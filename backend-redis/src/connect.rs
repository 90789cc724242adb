//! Opening a [`RedisBroker`]: a probe that tells a refused identity from a
//! server not up yet, then the shared connection and the blocking pool;
//! with [`RedisConfig::wait_for_server`], the probe is retried until the
//! server answers or the bound runs out.

use std::time::Duration;

use crewq_core::{Error, ErrorKind, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::{AsyncConnectionConfig, Client};
use tokio::time::Instant;

use crate::RedisBroker;
use crate::blocking::{BlockingPool, Opener};
use crate::broker::Link;
use crate::cluster;
use crate::config::RedisConfig;
use crate::error::Op;
use crate::shared::Shared;

/// The first pause between attempts of a waiting connect; it doubles up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// What a broker connects to.
#[derive(Clone)]
enum Target {
    /// One server.
    Single(Box<Client>),
    /// A Redis Cluster: the client of the shared connection, and the one
    /// of blocking reads (no response time-out).
    Cluster {
        client: Box<ClusterClient>,
        blocking: Box<ClusterClient>,
    },
}

/// Connects with `config`.
pub(crate) async fn open(config: RedisConfig) -> Result<RedisBroker> {
    let (redacted_url, client) = if config.cluster {
        let redacted = cluster::redacted_seeds(&config.url);
        let client = cluster::client(&config, &redacted, Some(config.response_timeout))?;
        let blocking = cluster::client(&config, &redacted, None)?;
        let (client, blocking) = (Box::new(client), Box::new(blocking));
        (redacted, Target::Cluster { client, blocking })
    } else {
        let redacted = config.redacted_url();
        let client = config.client(&redacted)?;
        (redacted, Target::Single(Box::new(client)))
    };
    let Some(bound) = config.wait_for_server else {
        return open_now(config, client, redacted_url).await;
    };
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut last: Option<Error> = None;
    let mut pause = FIRST_PAUSE;
    tracing::info!(url = %redacted_url, ?bound, "connecting to Redis, waiting for it if need be");
    loop {
        let left = bound.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        attempts += 1;
        // The whole attempt, handshake included, stays within the bound: a
        // server that accepts and never answers cannot hold it longer.
        let attempt = probe(&client, &config, &redacted_url);
        match tokio::time::timeout(left, attempt).await {
            Ok(Ok(())) => {
                let left = bound.saturating_sub(started.elapsed());
                let opened = open_now(config.clone(), client.clone(), redacted_url.clone());
                match tokio::time::timeout(left, opened).await {
                    Ok(Ok(broker)) => return Ok(broker),
                    Ok(Err(err)) if err.kind() == ErrorKind::Auth => return Err(err),
                    Ok(Err(err)) => last = Some(err),
                    Err(_) => last = Some(Error::Timeout("no reply to the handshake".into())),
                }
            }
            Ok(Err(err)) if err.kind() == ErrorKind::Auth => return Err(err),
            Ok(Err(err)) => last = Some(err),
            Err(_) => last = Some(Error::Timeout("no reply to the handshake".into())),
        }
        let left = bound.saturating_sub(started.elapsed());
        let wait = pause.min(left);
        if let Some(err) = &last {
            tracing::warn!(url = %redacted_url, attempt = attempts, error = %err, ?wait,
                "Redis is not reachable yet; trying again");
        }
        tokio::time::sleep(wait).await;
        pause = pause.saturating_mul(2).min(MAX_PAUSE);
    }
    let tried = started.elapsed();
    let why = last.map_or_else(
        || "no attempt fit in the bound".to_owned(),
        |err| err.to_string(),
    );
    tracing::error!(url = %redacted_url, ?tried, attempts, "giving up connecting to Redis");
    Err(Error::Connection {
        message: format!(
            "could not connect to Redis at {redacted_url}: tried {attempts} times for \
             {tried:.1?} (bound {bound:?}); last error: {why}"
        ),
        source: None,
    })
}

/// One plain connection attempt, dropped at once.
async fn probe(target: &Target, config: &RedisConfig, redacted_url: &str) -> Result<()> {
    let client = match target {
        Target::Single(client) => client,
        Target::Cluster { client, .. } => {
            return cluster::connect(client, redacted_url).await.map(drop);
        }
    };
    let probe_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connection_timeout))
        .set_response_timeout(Some(config.response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&probe_config)
        .await
        .map(drop)
        .map_err(|err| Op::new("connect", redacted_url).error(err))
}

/// Connects without waiting beyond redis-rs's own retries.
async fn open_now(
    config: RedisConfig,
    target: Target,
    redacted_url: String,
) -> Result<RedisBroker> {
    let client = match target {
        Target::Single(client) => *client,
        Target::Cluster { client, blocking } => {
            tracing::debug!(url = %redacted_url, "connecting to the Redis Cluster");
            let conn = cluster::connect(&client, &redacted_url).await?;
            let blocking = BlockingPool::with_opener(
                Opener::Cluster(*blocking),
                config.blocking_connections,
                redacted_url.clone(),
            );
            return Ok(RedisBroker::from_parts(
                Link::Cluster(conn),
                blocking,
                config,
                redacted_url,
            ));
        }
    };
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connection_timeout))
        .set_response_timeout(Some(config.response_timeout))
        .set_number_of_retries(config.retries);
    tracing::debug!(url = %redacted_url, "connecting to Redis");
    // redis-rs's ConnectionManager retries its first connection on every
    // error, so a wrong password or an untrusted certificate would cost
    // the whole back-off and then look transient. One plain attempt
    // first tells a refused identity from a server not up yet.
    if let Err(err) = probe(
        &Target::Single(Box::new(client.clone())),
        &config,
        &redacted_url,
    )
    .await
        && err.kind() == ErrorKind::Auth
    {
        return Err(err);
    }
    let manager = ConnectionManager::new_with_config(client.clone(), manager_config.clone())
        .await
        .map_err(|err| Op::new("connect", &redacted_url).error(err))?;
    let shared = Shared::new(
        client.clone(),
        manager_config,
        manager,
        redacted_url.clone(),
    );
    tracing::debug!(url = %redacted_url, "connected to Redis");
    let blocking = BlockingPool::new(
        client,
        config.connection_timeout,
        config.blocking_connections,
        redacted_url.clone(),
    );
    Ok(RedisBroker::from_parts(
        Link::Single(Box::new(shared)),
        blocking,
        config,
        redacted_url,
    ))
}
