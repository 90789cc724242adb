//! Redis Cluster: the seed nodes, the cluster client, and the slot rules
//! crewq's commands follow there.
//!
//! redis-rs's cluster client routes each command by its key, follows
//! `MOVED`/`ASK` and a failover's new topology, and retries `TRYAGAIN`,
//! `CLUSTERDOWN`, `LOADING` and `READONLY` itself. Two things it leaves to
//! the caller, done here:
//!
//! - A script or a `MULTI` must keep all its keys in one slot. A call whose
//!   keys span slots would fail on the server with `CROSSSLOT` (or, for a
//!   pipeline, in redis-rs before sending); it is refused here instead,
//!   before anything is sent, with an error naming the keys and their slots.
//! - A pipeline goes to one node. crewq's batches (appends to the streams of
//!   several agent types, one script call per stream) are split by slot:
//!   one pipeline per slot, sent concurrently, the replies put back in
//!   order. Keeping each pipeline to one slot also keeps redis-rs's retry
//!   of a redirected pipeline safe: a `MOVED` for the slot means no command
//!   of that pipeline ran.
//! - redis-rs follows `MOVED`/`ASK` a bounded number of times
//!   ([`RedisConfig::retries`]), immediately, rebuilding its slot map each
//!   time. Right after a master is killed, the nodes' views of the slot
//!   disagree for a moment and the redirects can outlast those tries; the
//!   last one comes back as the call's error. A redirected command ran
//!   nowhere, so that is a transient [`Error::Unavailable`] here, which
//!   callers wait out, never the standalone server's "this is a cluster
//!   node" refusal.
//! - A transaction whose queued commands were redirected comes back as
//!   `EXECABORT`, which redis-rs does not follow: nothing ran, so it is
//!   sent again here after a one-key read has made the client learn the
//!   slot's owner.

use std::time::Duration;

use crewq_core::{Error, Result};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Arg, Cmd, Pipeline, RedisError, RedisResult, Value};

/// How many times a transaction aborted by a redirect is sent again, each
/// time after the client relearned the slot's owner. A slot that keeps
/// moving for longer is reported as unavailable, which callers wait out.
const REDIRECTED_TRANSACTION_TRIES: usize = 3;

use crate::config::{RedisConfig, tcp_settings};
use crate::error::{Op, is_redirect};
use crate::redact::redact_url;

/// The seed nodes of `url`: a comma-separated list of URLs or `host:port`.
/// A seed without a scheme takes the first seed's scheme, user info and
/// what follows its address (`/db`, `?protocol=resp3`).
pub(crate) fn seed_urls(url: &str) -> Vec<String> {
    let seeds: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let Some(first) = seeds.first() else {
        return Vec::new();
    };
    let (scheme, rest) = first.split_once("://").unwrap_or(("redis", first));
    // The authority ends at the first '/' or '?' after the user info.
    let after_user = rest.rfind('@').map_or(0, |at| at + 1);
    let end = rest[after_user..]
        .find(['/', '?'])
        .map_or(rest.len(), |i| after_user + i);
    let user_info = &rest[..after_user];
    let tail = &rest[end..];
    seeds
        .iter()
        .map(|seed| {
            if seed.contains("://") {
                (*seed).to_owned()
            } else {
                format!("{scheme}://{user_info}{seed}{tail}")
            }
        })
        .collect()
}

/// The seeds of `url` with their passwords hidden, for logs.
pub(crate) fn redacted_seeds(url: &str) -> String {
    seed_urls(url)
        .iter()
        .map(|seed| redact_url(seed))
        .collect::<Vec<_>>()
        .join(",")
}

/// A cluster client for `config`'s seeds; `response_timeout` `None` for
/// the clients of blocking reads, whose deadline is their own.
pub(crate) fn client(
    config: &RedisConfig,
    redacted: &str,
    response_timeout: Option<Duration>,
) -> Result<ClusterClient> {
    #[cfg(feature = "tls")]
    crate::tls::ensure_crypto_provider();
    let seeds = seed_urls(&config.url);
    if seeds.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no seed node in the cluster URL '{redacted}'"
        )));
    }
    #[cfg(feature = "tls")]
    let certificates = if config.tls.is_set() {
        // Connecting in plain text while the caller configured a CA would
        // look like TLS and not be (as on one node).
        if let Some(plain) = seeds.iter().find(|seed| !seed.starts_with("rediss://")) {
            return Err(Error::InvalidArgument(format!(
                "TLS certificates are set but the seed {} is not a rediss:// URL",
                redact_url(plain)
            )));
        }
        Some(crate::tls::certificates_of(&config.tls)?)
    } else {
        None
    };
    let mut builder = ClusterClientBuilder::new(seeds)
        .connection_timeout(config.connection_timeout)
        .retries(u32::try_from(config.retries).unwrap_or(u32::MAX))
        .tcp_settings(tcp_settings(config.tcp_keepalive));
    if let Some(timeout) = response_timeout {
        // Per attempt; the whole call (retries and redirects included) gets
        // the retries' worth of attempts, not one attempt's time.
        builder = builder
            .response_timeout(timeout)
            .overall_response_timeout(None);
    }
    #[cfg(feature = "tls")]
    if let Some(certificates) = certificates {
        // Every node, the seeds and those learnt from the slot map, is
        // verified against the same CA (and shown the same certificate).
        builder = builder.certs(certificates);
    }
    builder.build().map_err(|err| {
        Error::InvalidArgument(format!("not a Redis Cluster seed list: {redacted} ({err})"))
    })
}

/// Opens one cluster connection (to every master) with `client`.
pub(crate) async fn connect(client: &ClusterClient, redacted: &str) -> Result<ClusterConnection> {
    client
        .get_async_connection()
        .await
        .map_err(|err| Op::new("connect", redacted).error(err))
}

/// The name of a command, upper case.
fn name(cmd: &Cmd) -> Vec<u8> {
    match cmd.args_iter().next() {
        Some(Arg::Simple(name)) => name.to_ascii_uppercase(),
        _ => Vec::new(),
    }
}

/// The keys of a command crewq sends in a script call, a `MULTI` or a
/// pipeline: `KEYS` of `EVAL`/`EVALSHA`, else the key after the name
/// (`XADD`, `XACK`, `XDEL` ...).
fn keys_of(cmd: &Cmd) -> Vec<&[u8]> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|arg| match arg {
            Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    match name(cmd).as_slice() {
        b"EVAL" | b"EVALSHA" => {
            let count = args
                .get(2)
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            args.iter().skip(3).take(count).copied().collect()
        }
        b"MULTI" | b"EXEC" => Vec::new(),
        _ => args.get(1).copied().into_iter().collect(),
    }
}

/// Refuses `keys` unless they all hash to one slot.
fn one_slot(keys: &[&[u8]], op: Op<'_>) -> Result<Option<Slot>> {
    let Some(first) = keys.first() else {
        return Ok(None);
    };
    let slot = Slot::for_key(first);
    if keys.iter().all(|key| Slot::for_key(key) == slot) {
        return Ok(Some(slot));
    }
    let listed: Vec<String> = keys
        .iter()
        .map(|key| {
            format!(
                "'{}' (slot {:?})",
                String::from_utf8_lossy(key),
                Slot::for_key(key)
            )
        })
        .collect();
    Err(Error::InvalidArgument(format!(
        "{} on '{}': its keys span Redis Cluster hash slots, and a script or MULTI must keep \
         all of its keys in one slot: {}. Use the cluster keyspace (Keyspace::cluster), which \
         puts every key of an agent type under its hash tag",
        op.name,
        op.stream,
        listed.join(", ")
    )))
}

/// Sends one command on the cluster, refusing a script whose keys span
/// slots.
pub(crate) async fn send(
    conn: &ClusterConnection,
    cmd: &Cmd,
    op: Op<'_>,
) -> Result<RedisResult<Value>> {
    one_slot(&keys_of(cmd), op)?;
    redirect_is_transient(cmd.query_async(&mut conn.clone()).await, op)
}

/// Sends a pipeline on the cluster: a transaction (or a pipeline in one
/// slot) as it is, once its keys are checked to share a slot; any other
/// pipeline split into one pipeline per slot, the replies in the caller's
/// order. Only pipelines with error replies in place (`ignore_errors`) are
/// split, which is how crewq sends every batch.
pub(crate) async fn send_pipe(
    conn: &ClusterConnection,
    pipe: &Pipeline,
    op: Op<'_>,
) -> Result<RedisResult<Vec<Value>>> {
    Ok(send_pipe_then(conn, pipe, op, None)
        .await?
        .map(|(replies, _)| replies))
}

/// [`send_pipe`], with `then` (a keyless command: `WAIT`) added at the end
/// of each part sent, so that it runs on the connection to the master of
/// that part's slot right after the part's commands; its replies (one per
/// part) come back apart from the pipeline's. Refused on a transaction.
pub(crate) async fn send_pipe_then(
    conn: &ClusterConnection,
    pipe: &Pipeline,
    op: Op<'_>,
    then: Option<&Cmd>,
) -> Result<RedisResult<(Vec<Value>, Vec<Value>)>> {
    let mut slots: Vec<Option<Slot>> = Vec::with_capacity(pipe.len());
    for cmd in pipe.cmd_iter() {
        slots.push(one_slot(&keys_of(cmd), op)?);
    }
    let keyed: Vec<Slot> = slots.iter().flatten().copied().collect();
    let single = keyed.windows(2).all(|pair| pair[0] == pair[1]);
    let cmds: Vec<&Cmd> = pipe.cmd_iter().collect();
    if pipe.is_transaction() {
        if then.is_some() {
            return Err(Error::InvalidArgument(format!(
                "{} on '{}': a command after a transaction is not supported on a cluster",
                op.name, op.stream
            )));
        }
        let keys: Vec<&[u8]> = cmds.iter().flat_map(|cmd| keys_of(cmd)).collect();
        one_slot(&keys, op)?;
        let sent = send_transaction(conn, pipe, keys.first().copied(), op).await?;
        return Ok(sent.map(|replies| (replies, Vec::new())));
    }
    if single {
        let Some(then) = then else {
            let sent = pipe.query_async::<Vec<Value>>(&mut conn.clone()).await;
            return Ok(redirect_is_transient(sent, op)?.map(|replies| (replies, Vec::new())));
        };
        // One pipeline, so `then` goes to the slot's master right after it.
        let mut whole = pipe.clone();
        whole.add_command(then.clone());
        let sent = whole.query_async::<Vec<Value>>(&mut conn.clone()).await;
        return Ok(redirect_is_transient(sent, op)?.map(|mut replies| {
            let thens = replies.pop().into_iter().collect();
            (replies, thens)
        }));
    }
    // One pipeline per slot, in the order slots first appear.
    let mut groups: Vec<(Option<Slot>, Vec<usize>)> = Vec::new();
    for (index, slot) in slots.iter().enumerate() {
        match groups.iter_mut().find(|(s, _)| s == slot) {
            Some((_, members)) => members.push(index),
            None => groups.push((*slot, vec![index])),
        }
    }
    let sends = groups.iter().map(|(_, members)| {
        let mut part = redis::pipe();
        part.ignore_errors();
        for &index in members {
            if let Some(cmd) = cmds.get(index) {
                part.add_command((*cmd).clone());
            }
        }
        if let Some(then) = then {
            part.add_command(then.clone());
        }
        let mut conn = conn.clone();
        async move { part.query_async::<Vec<Value>>(&mut conn).await }
    });
    let replies = futures::future::join_all(sends).await;
    let mut ordered: Vec<Option<Value>> = vec![None; cmds.len()];
    let mut thens = Vec::new();
    for ((_, members), reply) in groups.iter().zip(replies) {
        // A part that failed whole fails the call: the other parts may
        // have been applied, as after a lost reply.
        let mut values = match reply {
            Ok(values) => values,
            Err(err) => return redirect_is_transient(Err(err), op),
        };
        if then.is_some() {
            thens.extend(values.pop());
        }
        if values.len() != members.len() {
            return Err(op.protocol(format_args!(
                "{} replies to {} pipelined commands",
                values.len(),
                members.len()
            )));
        }
        for (&index, value) in members.iter().zip(values) {
            if let Some(slot) = ordered.get_mut(index) {
                *slot = Some(value);
            }
        }
    }
    let ordered = ordered
        .into_iter()
        .map(|value| value.unwrap_or(Value::Nil))
        .collect();
    Ok(Ok((ordered, thens)))
}

/// A redirect that outlasted the cluster client's tries, as a transient
/// error: the command ran nowhere, and the slot is moving.
fn redirect_is_transient<T>(reply: RedisResult<T>, op: Op<'_>) -> Result<RedisResult<T>> {
    match reply {
        Err(err) if err.code().is_some_and(is_redirect) => Err(Error::Unavailable(format!(
            "{} on '{}': still redirected after the cluster client's tries ({err}): its slot \
             is moving (a failover or resharding under way); nothing was applied",
            op.name, op.stream
        ))),
        other => Ok(other),
    }
}

/// Sends a transaction; when its queued commands were redirected (so
/// nothing ran), makes the client learn the owner of `key`'s slot with a
/// one-key read and sends it again.
async fn send_transaction(
    conn: &ClusterConnection,
    pipe: &Pipeline,
    key: Option<&[u8]>,
    op: Op<'_>,
) -> Result<RedisResult<Vec<Value>>> {
    for _ in 0..REDIRECTED_TRANSACTION_TRIES {
        let reply = pipe.query_async::<Vec<Value>>(&mut conn.clone()).await;
        match (&reply, key) {
            (Err(err), Some(key)) if aborted_by_redirect(err) => {
                // Only the redirect it follows matters, not the answer.
                let _ = redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<Value>(&mut conn.clone())
                    .await;
            }
            _ => return redirect_is_transient(reply, op),
        }
    }
    Err(Error::Unavailable(format!(
        "{} on '{}': the slot was still moving after {REDIRECTED_TRANSACTION_TRIES} tries \
         (a failover or resharding under way); nothing was applied",
        op.name, op.stream
    )))
}

/// Whether a transaction was aborted because its commands were redirected.
fn aborted_by_redirect(err: &RedisError) -> bool {
    err.clone()
        .into_server_errors()
        .is_some_and(|errors| errors.iter().any(|(_, err)| is_redirect(err.code())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_without_a_scheme_take_the_first_seeds_scheme_and_user() {
        assert_eq!(
            seed_urls("127.0.0.1:7000, 127.0.0.1:7001"),
            vec!["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert_eq!(
            seed_urls("rediss://u:p@a:1/0?protocol=resp3,b:2"),
            vec![
                "rediss://u:p@a:1/0?protocol=resp3",
                "rediss://u:p@b:2/0?protocol=resp3"
            ]
        );
        assert_eq!(
            redacted_seeds("redis://u:secret@a:1,b:2"),
            "redis://u:***@a:1,redis://u:***@b:2"
        );
        assert!(seed_urls(" , ").is_empty());
    }

    #[test]
    fn script_keys_are_its_keys_and_not_its_arguments() {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg("abc").arg(2).arg("k1").arg("k2").arg("argv1");
        assert_eq!(keys_of(&cmd), vec![b"k1".as_slice(), b"k2".as_slice()]);
        let mut xadd = redis::cmd("xadd");
        xadd.arg("s").arg("*").arg("f").arg("v");
        assert_eq!(keys_of(&xadd), vec![b"s".as_slice()]);
    }

    #[test]
    fn keys_in_two_slots_are_refused_with_their_names() {
        let op = Op::new("settle", "crewq:{a}:tasks");
        let same: [&[u8]; 2] = [b"crewq:{a}:tasks", b"crewq:{a}:results"];
        assert!(one_slot(&same, op).is_ok());
        let apart: [&[u8]; 2] = [b"agent:tasks:a", b"agent:results"];
        let err = one_slot(&apart, op).expect_err("two slots");
        let text = err.to_string();
        assert!(
            text.contains("'agent:tasks:a'") && text.contains("'agent:results'"),
            "{text}"
        );
        assert_eq!(err.kind(), crewq_core::ErrorKind::InvalidArgument);
    }
}
