//! The rules a function's Redis commands must follow under its options.
//!
//! - **Reads are never retried** (seed: 只重试增删改操作). A function whose scan finds a Redis
//!   read and nothing that may write is an error at the first read, unless it is marked a read
//!   path (`mode = "log", read_path`): a backfill the scan cannot see may happen in a helper.
//! - **Non-idempotent writes are not replayed blindly.** In `mode = "replay"`, a certain call
//!   to a non-idempotent command (INCR, LPUSH, XADD, ...) is an error at the call unless the
//!   user opts in with `allow_non_idempotent`. `invalidate` replays a DEL and `log` replays
//!   nothing, so both are fine.
//! - **No write the attribute can see it will never capture:** a command the runtime's table
//!   does not know (unless `allow_unknown_commands`), a forbidden command, a command sent from
//!   a spawned task or thread (the scope is task-local), through a connection redis-retry does
//!   not wrap, a plain `redis::Script` (its body is unknown to the runtime).
//!
//! Only calls with certain evidence cause errors (see [`crate::scan`]); an uncertain write
//! still counts as a write, so a std method never turns a write path into an error.

use syn::Ident;

use crate::attr::{Args, Mode};
use crate::errors::Errors;
use crate::scan::{Call, Findings};

/// Most reads a reads-only error lists before "...".
const LISTED_READS: usize = 3;

pub(crate) fn check(args: &Args, function: &Ident, findings: &Findings) -> syn::Result<()> {
    let calls = &findings.calls;
    let mut errors = Errors::default();
    for call in calls.iter().filter(|c| c.certain) {
        if let Some(name) = call.unknown_name() {
            if args.allow_unknown_commands.is_none() {
                errors.push(unknown(call, name));
            }
        } else if call.access.is_some_and(|a| a.is_forbidden()) {
            errors.push(forbidden(call));
        } else if call.spawned && call.may_write() {
            errors.push(spawned(call));
        } else if let (Some(connection), true) = (&call.unwrapped, call.may_write()) {
            errors.push(unwrapped(call, connection));
        }
    }
    for script in &findings.plain_scripts {
        errors.push(syn::Error::new_spanned(
            script,
            "a plain `redis::Script` runs by EVALSHA, and redis-retry cannot replay an EVALSHA whose \
             script body it never saw: a failed call of it would not be captured\n\
             = help: build it with `redis_retry::Script::new(..)`, the same API, which records the body",
        ));
    }
    if args.mode() == Mode::Replay && args.allow_non_idempotent.is_none() {
        for call in calls.iter().filter(|c| c.is_certain_non_idempotent()) {
            errors.push(non_idempotent(call));
        }
    }
    if args.read_path.is_none() && !calls.iter().any(Call::may_write) {
        if let Some(first) = calls.iter().find(|c| c.is_certain_read()) {
            errors.push(reads_only(function, first, calls));
        }
    }
    errors.finish(())
}

fn unknown(call: &Call, name: &str) -> syn::Error {
    syn::Error::new_spanned(
        &call.tokens,
        format!(
            "{name} is not in redis-retry's command table: if it fails, it can never be captured or \
             replayed\n\
             = help: send it outside #[redis_retry], or add `allow_unknown_commands` to accept that its \
             failures are only returned to the caller"
        ),
    )
}

fn forbidden(call: &Call) -> syn::Error {
    syn::Error::new_spanned(
        &call.tokens,
        format!(
            "{} is never captured nor replayed: redis-retry forbids administrative and destructive \
             commands in tasks\n\
             = help: send it from a function without #[redis_retry]",
            call.command_name()
        ),
    )
}

fn spawned(call: &Call) -> syn::Error {
    syn::Error::new_spanned(
        &call.tokens,
        format!(
            "{} runs in a spawned task or thread, outside the capture scope (it is task-local and does \
             not follow `tokio::spawn` or `std::thread::spawn`): if it fails, it is never captured\n\
             = help: call an async fn with its own #[redis_retry] inside the spawned task, or wrap the \
             spawned future in `redis_retry::scope::capture(..)`",
            call.command_name()
        ),
    )
}

fn unwrapped(call: &Call, connection: &str) -> syn::Error {
    syn::Error::new_spanned(
        &call.tokens,
        format!(
            "{} goes through `{connection}`, a redis-rs connection that redis-retry does not wrap: if it \
             fails, it is never captured\n\
             = help: wrap the connection once where it is made, `RetryConnection::new(conn)`, and pass \
             the wrapper here",
            call.command_name()
        ),
    )
}

fn non_idempotent(call: &Call) -> syn::Error {
    syn::Error::new_spanned(
        &call.tokens,
        format!(
            "{} is not idempotent: replaying it could apply it twice, so mode = \"replay\" refuses it\n\
             = help: use `mode = \"invalidate\"` (a failure deletes the keys it touched), or add \
             `allow_non_idempotent` to replay it anyway (a failure after it may have reached Redis is \
             then dead-lettered as `ambiguous`)",
            call.describe()
        ),
    )
}

fn reads_only(function: &Ident, first: &Call, calls: &[Call]) -> syn::Error {
    let mut reads: Vec<&str> = Vec::new();
    for call in calls.iter().filter(|c| c.is_certain_read()) {
        if !reads.contains(&call.command_name()) {
            reads.push(call.command_name());
        }
    }
    let more = if reads.len() > LISTED_READS { ", ..." } else { "" };
    reads.truncate(LISTED_READS);
    syn::Error::new_spanned(
        &first.tokens,
        format!(
            "`{function}` only reads from Redis ({}{more}) and reads are never retried \
             (只重试增删改操作): #[redis_retry] has nothing to capture here\n\
             = help: if it does write, in a helper or a macro the attribute cannot see into, mark that \
             statement `#[redis_retry::writes]`\n\
             = help: if a call here is not Redis at all (a type of yours with a method named like \
             redis-rs's), mark its statement `#[redis_retry::not_redis]`\n\
             = help: if it only reads, remove the attribute",
            reads.join(", ")
        ),
    )
}
