//! The body scan: which Redis commands the function sends, found from evidence in its tokens.
//!
//! A proc macro sees no types, so a call is taken as a Redis command only on evidence:
//!
//! - a command named in a string literal: `redis::cmd("GET")`, `cmd("HSET")`,
//!   `pipe.cmd("DEL")`, with the literal arguments that follow (`.arg("STORE")`), so that the
//!   runtime's per-invocation rules (`ZADD .. INCR`, `SORT` without `STORE`) apply;
//! - a redis-rs method called on a pipeline: `redis::pipe().get(k).set(k, v)`, or on a local
//!   bound to one (`let mut p = redis::pipe();`);
//! - a redis-rs method through its trait or type: `AsyncCommands::get(&mut conn, k)`,
//!   `redis::Cmd::hset(k, f, v)`;
//! - a redis-rs method of a distinctive name (`hgetall`, `lpush`, `set_ex`) on any receiver;
//! - a redis-rs method of a shared name (`get`, `keys`, `exists`, `append`, `incr`, ...) with a
//!   turbofish of two or more types, as redis-rs's `<K, RV>` take (`conn.get::<_, String>(k)`;
//!   `HashMap::get` takes one), or, for the names whose namesakes are not async or take another
//!   number of arguments, `.await`ed with redis-rs's arguments (`conn.incr(k, 1).await`, not
//!   `stats.incr("hits")`; `conn.set(k, v).await`, not `cell.set(v)`).
//!
//! A shared name without such evidence is still recorded, as *uncertain*: it never causes an
//! error, but an uncertain write still counts as a write, so that `x.set(v)` (maybe
//! `Cell::set`, maybe Redis) keeps a function from being taken for reads only. The scan covers
//! closures, `async` blocks and macro arguments that parse as expressions; nested items are
//! other functions and are left alone.

use std::collections::HashSet;

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{
    AngleBracketedGenericArguments, Block, Expr, ExprAwait, ExprCall, ExprLit, ExprMethodCall, Item, Lit,
    Local, Macro, Pat, Token,
};

use crate::commands::{self, Access, CommandSpec};
use crate::methods::{self, Evidence};

/// One Redis command the body sends.
pub(crate) struct Call {
    /// The command, when the table knows it.
    pub(crate) spec: Option<&'static CommandSpec>,
    /// Its access for this invocation, as far as the literal arguments tell; `None` when the
    /// command is not known (a name the table lacks, or not a literal).
    pub(crate) access: Option<Access>,
    /// Evidence strong enough to report an error about this call.
    pub(crate) certain: bool,
    /// The redis-rs method that sends it; `None` when a literal names the command.
    pub(crate) method: Option<&'static str>,
    /// The tokens to point at.
    pub(crate) tokens: TokenStream,
}

impl Call {
    /// Sends something that may change data (or that cannot be known not to).
    pub(crate) fn may_write(&self) -> bool {
        self.access.is_none_or(Access::may_write)
    }

    pub(crate) fn is_certain_read(&self) -> bool {
        self.certain && self.access.is_some_and(Access::is_read)
    }

    pub(crate) fn is_certain_non_idempotent(&self) -> bool {
        self.certain && self.access == Some(Access::Write { idempotent: false })
    }

    /// The command as the table spells it: "INCRBY".
    pub(crate) fn command_name(&self) -> &'static str {
        self.spec.map_or("an unknown command", |spec| spec.name)
    }

    /// For messages: "`incr` sends INCRBY, which", or "LPUSH" for a command named in a literal.
    pub(crate) fn describe(&self) -> String {
        match self.method {
            Some(method) => format!("`{method}` sends {}, which", self.command_name()),
            None => self.command_name().to_string(),
        }
    }
}

/// The Redis commands `block` sends, in source order.
pub(crate) fn calls(block: &Block) -> Vec<Call> {
    let mut scan = Scan::default();
    scan.visit_block(block);
    scan.calls
}

/// The traits and types whose associated functions are redis-rs commands.
const COMMAND_OWNERS: &[&str] = &["AsyncCommands", "AsyncTypedCommands", "Cmd", "Commands", "TypedCommands"];

#[derive(Default)]
struct Scan {
    calls: Vec<Call>,
    /// Locals bound to a pipeline.
    pipelines: HashSet<String>,
}

/// A command named by a string, whose literal arguments are still being collected along a
/// chain (`cmd("SORT").arg(k).arg("STORE").arg(dest)`).
struct Pending {
    /// The name and the arguments so far; empty when the name is not a literal.
    args: Vec<Vec<u8>>,
    tokens: TokenStream,
}

impl<'ast> Visit<'ast> for Scan {
    fn visit_item(&mut self, _: &'ast Item) {}

    fn visit_local(&mut self, local: &'ast Local) {
        if let (Some(name), Some(init)) = (bound_name(&local.pat), &local.init) {
            if is_pipeline_constructor(&init.expr) {
                self.pipelines.insert(name);
            }
        }
        visit::visit_local(self, local);
    }

    fn visit_expr_await(&mut self, awaited: &'ast ExprAwait) {
        match &*awaited.base {
            Expr::MethodCall(outer) => self.method_chain(outer, true),
            _ => visit::visit_expr_await(self, awaited),
        }
    }

    fn visit_expr_method_call(&mut self, outer: &'ast ExprMethodCall) {
        self.method_chain(outer, false);
    }

    fn visit_expr_call(&mut self, call: &'ast ExprCall) {
        if let Some(args) = cmd_call(call) {
            self.record_named(Pending { args, tokens: call.to_token_stream() });
        } else if let Some(method) = associated_command(call) {
            self.record_method(method, true, call.to_token_stream());
        }
        visit::visit_expr_call(self, call);
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        // `tokio::join!(..)`, `assert!(..)`, `format!(..)`: arguments that are expressions are
        // scanned; anything else (`select!` arms, custom syntax) is beyond evidence.
        let parser = Punctuated::<Expr, Token![,]>::parse_terminated;
        if let Ok(exprs) = mac.parse_body_with(parser) {
            for expr in &exprs {
                self.visit_expr(expr);
            }
        }
    }
}

impl Scan {
    /// `root.a(..).b(..)...` (`.await`ed or not): each link once, in order, then the arguments.
    fn method_chain(&mut self, outer: &ExprMethodCall, awaited: bool) {
        let mut links = vec![outer];
        let mut root = &*outer.receiver;
        while let Expr::MethodCall(inner) = root {
            links.push(inner);
            root = &inner.receiver;
        }
        links.reverse();
        let on_pipeline = self.is_pipeline(root);
        let mut pending = match root {
            Expr::Call(call) if !on_pipeline => {
                cmd_call(call).map(|args| Pending { args, tokens: call.to_token_stream() })
            }
            _ => None,
        };
        if pending.is_none() && !on_pipeline {
            self.visit_expr(root);
        }
        for &link in &links {
            if link.method == "arg" {
                // Arguments of a command whose name is not a literal tell nothing.
                if let Some(pending) = pending.as_mut().filter(|p| !p.args.is_empty()) {
                    pending.args.push(literal_arg(link));
                }
                continue;
            }
            self.finish(pending.take());
            if let Some(args) = cmd_method(link) {
                pending = Some(Pending { args, tokens: method_tokens(link) });
            } else if let Some(method) = methods::find(&link.method.to_string()) {
                let awaited = awaited && std::ptr::eq(link, outer);
                let certain = on_pipeline || redis_evidence(method, link, awaited);
                self.record_method(method, certain, method_tokens(link));
            }
        }
        self.finish(pending);
        for link in &links {
            for arg in &link.args {
                self.visit_expr(arg);
            }
        }
    }

    /// `redis::pipe()`, `Pipeline::new()`, or a local bound to one.
    fn is_pipeline(&self, expr: &Expr) -> bool {
        match expr {
            Expr::Path(p) => p.path.get_ident().is_some_and(|i| self.pipelines.contains(&i.to_string())),
            Expr::Reference(r) => self.is_pipeline(&r.expr),
            Expr::Paren(p) => self.is_pipeline(&p.expr),
            _ => is_pipeline_constructor(expr),
        }
    }

    fn record_method(&mut self, method: &'static methods::Method, certain: bool, tokens: TokenStream) {
        let spec = commands::lookup_name(method.command);
        let access = spec.map(|s| s.access);
        self.calls.push(Call { spec, access, certain, method: Some(method.name), tokens });
    }

    fn finish(&mut self, pending: Option<Pending>) {
        if let Some(pending) = pending {
            self.record_named(pending);
        }
    }

    /// A command named by a string: classified with its literal arguments, as the runtime
    /// classifies the command it sends.
    fn record_named(&mut self, pending: Pending) {
        let args: Vec<&[u8]> = pending.args.iter().map(Vec::as_slice).collect();
        let class = commands::classify(&args);
        self.calls.push(Call {
            spec: class.map(|c| c.spec),
            access: class.map(|c| c.access),
            certain: true,
            method: None,
            tokens: pending.tokens,
        });
    }
}

/// The name a `let` binds: `p`, `mut p`, `p: Pipeline`.
fn bound_name(pat: &Pat) -> Option<String> {
    match pat {
        Pat::Ident(p) => Some(p.ident.to_string()),
        Pat::Type(t) => bound_name(&t.pat),
        _ => None,
    }
}

fn path_ends_with(expr: &Expr, tail: &[&str]) -> bool {
    let Expr::Path(p) = expr else { return false };
    let segments = &p.path.segments;
    segments.len() >= tail.len() && segments.iter().rev().zip(tail.iter().rev()).all(|(s, t)| s.ident == t)
}

/// `redis::pipe()`, `pipe()`, `Pipeline::new()`, `Pipeline::with_capacity(n)`.
fn is_pipeline_constructor(expr: &Expr) -> bool {
    let Expr::Call(call) = expr else { return false };
    (path_ends_with(&call.func, &["pipe"]) && call.args.is_empty())
        || path_ends_with(&call.func, &["Pipeline", "new"])
        || path_ends_with(&call.func, &["Pipeline", "with_capacity"])
}

/// `cmd("NAME")` / `redis::cmd("NAME")`: `[NAME]`; `cmd(name)`: `[]` (a command, but which?).
fn cmd_call(call: &ExprCall) -> Option<Vec<Vec<u8>>> {
    if !path_ends_with(&call.func, &["cmd"]) || call.args.len() != 1 {
        return None;
    }
    Some(name_arg(call.args.first()))
}

/// `.cmd("NAME")` on a pipeline or any other receiver, as [`cmd_call`].
fn cmd_method(link: &ExprMethodCall) -> Option<Vec<Vec<u8>>> {
    (link.method == "cmd" && link.args.len() == 1).then(|| name_arg(link.args.first()))
}

fn name_arg(arg: Option<&Expr>) -> Vec<Vec<u8>> {
    match arg {
        Some(Expr::Lit(ExprLit { lit: Lit::Str(name), .. })) => vec![name.value().into_bytes()],
        _ => Vec::new(),
    }
}

/// `AsyncCommands::get(&mut conn, k)`, `redis::Cmd::hset(k, f, v)`.
fn associated_command(call: &ExprCall) -> Option<&'static methods::Method> {
    let Expr::Path(p) = &*call.func else { return None };
    let mut segments = p.path.segments.iter().rev();
    let (method, owner) = (segments.next()?, segments.next()?);
    let owner = owner.ident.to_string();
    COMMAND_OWNERS.contains(&owner.as_str()).then(|| methods::find(&method.ident.to_string())).flatten()
}

/// An argument as the runtime's per-invocation rules read it: string and integer literals as
/// written, anything else as a placeholder that matches no option keyword.
fn literal_arg(link: &ExprMethodCall) -> Vec<u8> {
    match link.args.first() {
        Some(Expr::Lit(ExprLit { lit: Lit::Str(s), .. })) => s.value().into_bytes(),
        Some(Expr::Lit(ExprLit { lit: Lit::Int(i), .. })) => i.base10_digits().as_bytes().to_vec(),
        _ => b"\0".to_vec(),
    }
}

/// Whether a call of a redis-rs method name, off a pipeline, is redis-rs's; see the module
/// documentation.
fn redis_evidence(method: &methods::Method, call: &ExprMethodCall, awaited: bool) -> bool {
    match method.evidence {
        Evidence::Distinctive => true,
        Evidence::Shared { awaited_with } => {
            redis_turbofish(call.turbofish.as_ref()) || (awaited && awaited_with == Some(call.args.len()))
        }
    }
}

/// Two or more types, as redis-rs's generic methods take (`<K, RV>`, `<K, F, RV>`); std's
/// `get`, `keys`, `append`, ... take at most one.
fn redis_turbofish(turbofish: Option<&AngleBracketedGenericArguments>) -> bool {
    turbofish.is_some_and(|t| t.args.len() >= 2)
}

/// `name::<T>(args)`, without the receiver: what an error about the call underlines.
fn method_tokens(link: &ExprMethodCall) -> TokenStream {
    let mut tokens = link.method.to_token_stream();
    link.turbofish.to_tokens(&mut tokens);
    link.paren_token.surround(&mut tokens, |t| link.args.to_tokens(t));
    tokens
}

#[cfg(test)]
mod tests;
