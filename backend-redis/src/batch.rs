//! Many commands in one round trip: pipelined appends, and the atomic
//! ack-and-append step in `MULTI`/`EXEC`.

use crewq_core::{
    AckAndAdd, AckAndAddReply, AddId, Error, NewEntry, Result, StreamId, validate_ack_and_add,
    validate_new_entry,
};
use redis::Value;

use crate::RedisBroker;
use crate::error::{Op, from_server_error};
use crate::{commands, parse};

impl RedisBroker {
    /// Sends one append per valid entry in a single pipeline (waiting for
    /// replicas when configured) and returns,
    /// per entry in order, its reply (error replies in place, so one failing
    /// command does not hide the others) or why it was not sent.
    pub(crate) async fn pipelined_per_entry<E>(
        &self,
        entries: &[E],
        op: impl Fn(&E) -> Op<'_>,
        validate: impl Fn(&E) -> Result<()>,
        command: impl Fn(&E) -> redis::Cmd,
    ) -> Result<Vec<Result<Value>>> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut results: Vec<Option<Result<Value>>> = Vec::with_capacity(entries.len());
        let mut sent = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match validate(entry) {
                Ok(()) => {
                    pipe.add_command(command(entry));
                    sent.push(index);
                    results.push(None);
                }
                Err(err) => results.push(Some(Err(err))),
            }
        }
        if let Some(&first) = sent.first() {
            let first = op(&entries[first]);
            let replies = self.query_appends(&pipe, first).await?;
            if replies.len() != sent.len() {
                return Err(first.protocol(format_args!(
                    "{} replies to {} commands",
                    replies.len(),
                    sent.len()
                )));
            }
            for (index, reply) in sent.into_iter().zip(replies) {
                results[index] = Some(Ok(reply));
            }
        }
        results
            .into_iter()
            .map(|result| {
                result.ok_or_else(|| Error::Protocol("a pipelined command got no reply".to_owned()))
            })
            .collect()
    }

    /// [`Broker::xadd_many`](crewq_core::Broker::xadd_many): every valid
    /// entry's `XADD` in one pipeline.
    pub(crate) async fn add_pipelined(
        &self,
        entries: Vec<NewEntry>,
    ) -> Result<Vec<Result<StreamId>>> {
        let replies = self
            .pipelined_per_entry(&entries, entry_op, validate_new_entry, commands::xadd)
            .await?;
        let mut ids = Vec::with_capacity(entries.len());
        for (entry, reply) in entries.iter().zip(replies) {
            ids.push(
                match reply.and_then(|reply| added_id(reply, entry_op(entry))) {
                    Ok(id) => Ok(id),
                    Err(err) => Err(self.with_top_id(err).await),
                },
            );
        }
        Ok(ids)
    }

    /// [`Broker::ack_and_add`](crewq_core::Broker::ack_and_add): the
    /// appends, then the acks, then the deletes, in one `MULTI`/`EXEC`.
    ///
    /// `EXEC` runs every queued command even when one fails (a key of the
    /// wrong type), and Redis does not roll back: the failure is returned,
    /// and the commands around it were applied.
    pub(crate) async fn ack_and_add_in_multi(&self, step: AckAndAdd) -> Result<AckAndAddReply> {
        validate_ack_and_add(&step)?;
        let mut pipe = redis::pipe();
        // In place error replies: an error inside EXEC does not undo the
        // commands before it, so the reply must say which one failed.
        pipe.atomic().ignore_errors();
        // Appends first, then acks, then deletes: if a command fails inside
        // EXEC, an outcome is written twice rather than lost.
        let mut ops = Vec::new();
        for entry in &step.adds {
            pipe.add_command(commands::xadd(entry));
            ops.push(entry_op(entry));
        }
        for ack in step.acks.iter().filter(|ack| !ack.ids.is_empty()) {
            pipe.add_command(commands::ack(&ack.stream, &ack.group, &ack.ids));
            ops.push(Op::group("XACK", &ack.stream, &ack.group));
        }
        for delete in step.deletes.iter().filter(|d| !d.ids.is_empty()) {
            pipe.add_command(commands::xdel(&delete.stream, &delete.ids));
            ops.push(Op::new("XDEL", &delete.stream));
        }
        let Some(&first) = ops.first() else {
            return Ok(AckAndAddReply {
                acked: vec![0; step.acks.len()],
                ids: Vec::new(),
                deleted: vec![0; step.deletes.len()],
            });
        };
        let op = Op {
            name: "MULTI/EXEC",
            ..first
        };
        let replies = self.query_pipe(&pipe, op).await?;
        if replies.len() != ops.len() {
            return Err(first.protocol(format_args!(
                "EXEC gave {} replies to {} commands",
                replies.len(),
                ops.len()
            )));
        }
        let mut replies = replies.into_iter().zip(ops);
        let mut reply = AckAndAddReply::default();
        for _ in &step.adds {
            let Some((value, op)) = replies.next() else {
                return Err(first.protocol("EXEC reply too short"));
            };
            reply.ids.push(added_id(value, op).map_err(partly_applied)?);
        }
        let counts = |ids_of: &mut dyn Iterator<Item = bool>,
                      replies: &mut dyn Iterator<Item = (Value, Op<'_>)>|
         -> Result<Vec<u64>> {
            ids_of
                .map(|sent| {
                    if !sent {
                        return Ok(0);
                    }
                    let (value, op) = replies
                        .next()
                        .ok_or_else(|| first.protocol("EXEC reply too short"))?;
                    match value {
                        Value::ServerError(err) => {
                            Err(partly_applied(op.error(from_server_error(err))))
                        }
                        other => parse::uint(other).map_err(|shape| op.protocol(shape)),
                    }
                })
                .collect()
        };
        reply.acked = counts(
            &mut step.acks.iter().map(|ack| !ack.ids.is_empty()),
            &mut replies,
        )?;
        reply.deleted = counts(
            &mut step.deletes.iter().map(|delete| !delete.ids.is_empty()),
            &mut replies,
        )?;
        Ok(reply)
    }
}

/// Reads an `XADD` reply (or its pipelined / transacted result).
pub(crate) fn added_id(reply: Value, op: Op<'_>) -> Result<StreamId> {
    match reply {
        Value::ServerError(err) => Err(op.error(from_server_error(err))),
        other => parse::id(other).map_err(|shape| op.protocol(shape)),
    }
}

/// What an append is, for its errors.
pub(crate) fn entry_op(entry: &NewEntry) -> Op<'_> {
    let op = Op::new("XADD", &entry.stream);
    match entry.id {
        AddId::Explicit(id) => op.with_id(id),
        AddId::Auto => op,
    }
}

/// Notes that a transaction failed part-way: the error says what failed,
/// the log says that the rest was applied.
fn partly_applied(err: Error) -> Error {
    tracing::warn!(error = %err, "a command inside MULTI/EXEC failed; the others were applied");
    err
}
