//! The rules a function's Redis commands must follow under its options.
//!
//! - **Reads are never retried** (seed: 只重试增删改操作). A function whose scan finds a Redis
//!   read and nothing that may write is an error at the first read, unless it is marked a read
//!   path (`mode = "log", read_path`): a backfill the scan cannot see may happen in a helper.
//! - **Non-idempotent writes are not replayed blindly.** In `mode = "replay"`, a certain call
//!   to a non-idempotent command (INCR, LPUSH, XADD, ...) is an error at the call unless the
//!   user opts in with `allow_non_idempotent`. `invalidate` replays a DEL and `log` replays
//!   nothing, so both are fine.
//!
//! Only calls with certain evidence cause errors (see [`crate::scan`]); an uncertain write
//! still counts as a write, so a std method never turns a write path into an error.

use syn::Ident;

use crate::attr::{Args, Mode};
use crate::errors::Errors;
use crate::scan::Call;

/// Most reads a reads-only error lists before "...".
const LISTED_READS: usize = 3;

pub(crate) fn check(args: &Args, function: &Ident, calls: &[Call]) -> syn::Result<()> {
    let mut errors = Errors::default();
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
             (只重试增删改操作): #[redis_retry] has nothing to capture here, remove it\n\
             = help: if its writes happen in a function it calls, put #[redis_retry] on that function\n\
             = help: if it is a read path that backfills the cache, failures there are only logged: \
             `#[redis_retry(mode = \"log\", read_path)]`",
            reads.join(", ")
        ),
    )
}
