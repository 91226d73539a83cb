//! The body scan: which Redis commands the function sends, found from evidence in its tokens.
//!
//! A proc macro sees no types, so a call is taken as a Redis command only on evidence:
//!
//! - a command named in a string literal: `redis::cmd("GET")`, `cmd("HSET")`,
//!   `pipe.cmd("DEL")`, `redis::Cmd::new().arg("SET")`, with the literal arguments that follow
//!   (`.arg("STORE")`), so that the runtime's per-invocation rules (`ZADD .. INCR`, `SORT`
//!   without `STORE`) apply; a `Cmd` bound to a local is followed through the calls on it;
//! - a redis-rs method called on a pipeline: `redis::pipe().get(k).set(k, v)`, or on a local
//!   bound to one (`let mut p = redis::pipe();`);
//! - a redis-rs method through its trait or type: `AsyncCommands::get(&mut conn, k)`,
//!   `redis::Cmd::hset(k, f, v)`;
//! - a redis-rs method of a distinctive name (`hgetall`, `lpush`, `set_ex`) on any receiver;
//! - a redis-rs method of a shared name (`get`, `keys`, `exists`, `append`, `incr`, ...) with
//!   a turbofish of two or more types, as redis-rs's `<K, .., RV>` take
//!   (`conn.get::<_, String>(k)`; `HashMap::get` takes one); or `.await`ed with redis-rs's
//!   number of arguments where its result gets its type, which redis-rs's generic `RV` needs:
//!   a typed `let` with `?` or a `RedisResult` type (`let v: Option<String> =
//!   conn.get(k).await?;`), or the tail or `return` of a function returning a Redis result;
//! - any call on a receiver known to be a Redis connection: a parameter of a redis-rs or
//!   redis-retry connection type (or of a type bounded by `AsyncCommands`/`ConnectionLike`), a
//!   local bound from one or from a connection constructor, or a receiver that one call with
//!   certain evidence was made on.
//!
//! A shared name without such evidence is still recorded, as *uncertain*: it never causes an
//! error, but an uncertain write still counts as a write, so that `x.set(v)` (maybe
//! `Cell::set`, maybe Redis) keeps a function from being taken for reads only. The scan covers
//! closures, `async` blocks, and macro arguments: those that parse as expressions or
//! statements (`join!`, `vec!`, `format!`), and otherwise every expression that parses from
//! some token of the macro on (`select!`'s `v = fut, if cond => handler`). Nested items are
//! other functions and are left alone.
//!
//! Two statement markers let a user correct the scan where it cannot see (see [`crate::marker`]):
//! `#[redis_retry::writes]` counts a statement as a write (a helper that writes), and
//! `#[redis_retry::not_redis]` leaves a statement out of the scan.

use std::collections::{HashMap, HashSet};

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::{discouraged::Speculative, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{
    AngleBracketedGenericArguments, Block, Expr, ExprAwait, ExprCall, ExprLit, ExprMethodCall, ExprReturn,
    FnArg, GenericParam, Item, Lit, Local, Macro, Pat, ReturnType, Signature, Stmt, Token,
};

use crate::commands::{self, Access, CommandSpec};
use crate::marker::{self, Marker};
use crate::methods::{self, Evidence};

/// One Redis command the body sends.
pub(crate) struct Call {
    /// The command's name as the code gives it (a literal, or the command a redis-rs method
    /// sends); `None` when the name is not a literal.
    pub(crate) name: Option<String>,
    /// The command, when the table knows it.
    pub(crate) spec: Option<&'static CommandSpec>,
    /// Its access for this invocation, as far as the literal arguments tell; `None` when the
    /// command is not known (a name the table lacks, or not a literal).
    pub(crate) access: Option<Access>,
    /// Evidence strong enough to report an error about this call.
    pub(crate) certain: bool,
    /// The redis-rs method that sends it; `None` when a literal names the command.
    pub(crate) method: Option<&'static str>,
    /// Sent from a spawned task or thread, outside the capture scope.
    pub(crate) spawned: bool,
    /// Sent through a connection redis-retry does not wrap (a parameter of a redis-rs
    /// connection type, a local bound from a redis-rs constructor): the name of it.
    pub(crate) unwrapped: Option<String>,
    /// The tokens to point at.
    pub(crate) tokens: TokenStream,
    /// What it is called on (`conn`, `self.redis`), for the receiver model.
    receiver: Option<String>,
    /// The connection it goes through: its receiver, or the argument of the
    /// `query_async(&mut c)` that sends it.
    through: Option<String>,
}

impl Call {
    /// A command the scan knows nothing of yet: not certain, of no known name or access.
    fn unknown(tokens: TokenStream, spawned: bool) -> Call {
        Call {
            name: None,
            spec: None,
            access: None,
            certain: false,
            method: None,
            spawned,
            unwrapped: None,
            tokens,
            receiver: None,
            through: None,
        }
    }

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

    /// A command named for certain that the runtime's table does not know: never captured.
    pub(crate) fn unknown_name(&self) -> Option<&str> {
        self.name.as_deref().filter(|_| self.certain && self.spec.is_none())
    }

    /// The command as the table spells it: "INCRBY".
    pub(crate) fn command_name(&self) -> &str {
        match (self.spec, &self.name) {
            (Some(spec), _) => spec.name,
            (None, Some(name)) => name,
            (None, None) => "an unknown command",
        }
    }

    /// For messages: "`incr` sends INCRBY, which", or "LPUSH" for a command named in a literal.
    pub(crate) fn describe(&self) -> String {
        match self.method {
            Some(method) => format!("`{method}` sends {}, which", self.command_name()),
            None => self.command_name().to_string(),
        }
    }
}

/// What the scan found.
#[derive(Default)]
pub(crate) struct Findings {
    pub(crate) calls: Vec<Call>,
    /// `redis::Script::new(..)`: runs by EVALSHA, whose body the runtime cannot recover.
    pub(crate) plain_scripts: Vec<TokenStream>,
}

/// The Redis commands `block` sends, in source order, without a signature to learn from.
#[cfg(test)]
pub(crate) fn calls(block: &Block) -> Vec<Call> {
    scan(None, block).calls
}

/// What the body `block` of a function with signature `sig` sends.
pub(crate) fn scan(sig: Option<&Signature>, block: &Block) -> Findings {
    let mut scan = Scan::default();
    if let Some(sig) = sig {
        scan.learn_signature(sig);
    }
    if scan.returns_redis {
        if let Some(Stmt::Expr(tail, None)) = block.stmts.last() {
            scan.mark_typed(tail);
        }
    }
    scan.visit_block(block);
    scan.finish()
}

/// The traits and types whose associated functions are redis-rs commands.
const COMMAND_OWNERS: &[&str] = &["AsyncCommands", "AsyncTypedCommands", "Cmd", "Commands", "TypedCommands"];

/// Types whose values are Redis connections, by the last segment of their path.
const CONNECTION_TYPES: &[&str] = &[
    "RetryConnection",
    "ConnectionManager",
    "MultiplexedConnection",
    "ClusterConnection",
    "AsyncCommands",
    "ConnectionLike",
];

/// redis-rs's connection types, which redis-retry does not see through unless wrapped.
const UNWRAPPED_TYPES: &[&str] =
    &["ConnectionManager", "MultiplexedConnection", "ClusterConnection", "Connection"];

/// What sends a `Cmd` or a pipeline through the connection given as its argument.
const SENDERS: &[&str] = &["query_async", "exec_async", "invoke_async", "query", "exec", "invoke"];

/// Methods and functions that return a Redis connection.
const CONNECTION_CONSTRUCTORS: &[&str] = &[
    "get_multiplexed_async_connection",
    "get_multiplexed_tokio_connection",
    "get_multiplexed_async_connection_with_config",
    "get_connection_manager",
    "get_connection_manager_with_config",
    "get_async_connection",
    "get_async_connection_with_config",
];

/// Functions and methods that run their argument in another task or thread.
const SPAWNERS: &[&str] = &["spawn", "spawn_blocking", "spawn_local"];

/// Functions that run their future in a capture scope of its own.
const SCOPE_ENTRIES: &[&str] = &["capture", "capture_shared"];

#[derive(Default)]
struct Scan {
    calls: Vec<Call>,
    plain_scripts: Vec<TokenStream>,
    /// Locals bound to a pipeline.
    pipelines: HashSet<String>,
    /// Locals bound to a `Cmd`, with the call recorded for it and its arguments so far.
    cmds: HashMap<String, (usize, Pending)>,
    /// Receivers known to be Redis connections.
    connections: HashSet<String>,
    /// Those of them that redis-retry does not wrap.
    unwrapped: HashSet<String>,
    /// A local bound from another receiver: `let mut c = self.redis.clone();`.
    aliases: HashMap<String, String>,
    /// Method calls whose result gets its type from the code around them (by address).
    typed: HashSet<*const ExprMethodCall>,
    /// The function returns a Redis result: its tail and `return`s are typed.
    returns_redis: bool,
    /// How many spawned closures or futures the scan is inside.
    spawned: usize,
}

/// A command named by a string, whose literal arguments are still being collected
/// (`cmd("SORT").arg(k).arg("STORE").arg(dest)`).
#[derive(Clone)]
struct Pending {
    name: Name,
    /// The name and the arguments so far, once the name is a literal.
    args: Vec<Vec<u8>>,
    tokens: TokenStream,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Name {
    /// `args[0]` is the name.
    Literal,
    /// `Cmd::new()`: the first `arg` is the name.
    FirstArg,
    /// Not a literal: the arguments tell nothing.
    Unknown,
}

impl Pending {
    fn new(args: Vec<Vec<u8>>, tokens: TokenStream) -> Pending {
        let name = if args.is_empty() { Name::Unknown } else { Name::Literal };
        Pending { name, args, tokens }
    }

    fn arg(&mut self, link: &ExprMethodCall) {
        match self.name {
            Name::Literal => self.args.push(literal_arg(link)),
            Name::FirstArg => match link.args.first() {
                Some(Expr::Lit(ExprLit { lit: Lit::Str(s), .. })) => {
                    self.args.push(s.value().into_bytes());
                    self.name = Name::Literal;
                }
                _ => self.name = Name::Unknown,
            },
            Name::Unknown => {}
        }
    }

    /// The call it makes, as the runtime classifies the command it sends.
    fn call(&self, spawned: bool) -> Call {
        let args: Vec<&[u8]> = self.args.iter().map(Vec::as_slice).collect();
        let class = if self.name == Name::Literal { commands::classify(&args) } else { None };
        let name = (self.name == Name::Literal).then(|| String::from_utf8_lossy(&self.args[0]).into_owned());
        Call {
            name: class.map(|c| c.spec.name.to_string()).or(name),
            spec: class.map(|c| c.spec),
            access: class.map(|c| c.access),
            certain: true,
            ..Call::unknown(self.tokens.clone(), spawned)
        }
    }
}

impl<'ast> Visit<'ast> for Scan {
    fn visit_item(&mut self, _: &'ast Item) {}

    fn visit_stmt(&mut self, stmt: &'ast Stmt) {
        match marker::of_stmt(stmt) {
            Some(Marker::NotRedis) => {}
            Some(Marker::Writes(tokens)) => {
                // A write of unknown kind: it may write, and is certain of nothing else.
                self.calls.push(Call::unknown(tokens, self.spawned > 0));
                visit::visit_stmt(self, stmt);
            }
            None => visit::visit_stmt(self, stmt),
        }
    }

    fn visit_local(&mut self, local: &'ast Local) {
        let Some(init) = &local.init else { return visit::visit_local(self, local) };
        let name = bound_name(&local.pat);
        if let Pat::Type(typed) = &local.pat {
            let (core, tried) = strip_try(&init.expr);
            if tried || mentions(&typed.ty.to_token_stream(), &["RedisResult"]) {
                self.mark_typed(core);
            }
        }
        if let Some(name) = name {
            if is_pipeline_constructor(&init.expr) {
                self.pipelines.insert(name);
            } else if let Some(pending) = self.cmd_value(&init.expr) {
                self.visit_cmd_value_args(&init.expr);
                self.calls.push(pending.call(self.spawned > 0));
                self.cmds.insert(name, (self.calls.len() - 1, pending));
                return;
            } else if is_connection_constructor(&init.expr) {
                if !mentions(&init.expr.to_token_stream(), &["RetryConnection"]) {
                    self.unwrapped.insert(name.clone());
                }
                self.connections.insert(name);
            } else if let Some(source) = receiver_key(&init.expr) {
                if source != name {
                    self.aliases.insert(name, source);
                }
            }
        }
        visit::visit_local(self, local);
    }

    fn visit_expr_return(&mut self, ret: &'ast ExprReturn) {
        if let (true, Some(expr)) = (self.returns_redis, &ret.expr) {
            self.mark_typed(expr);
        }
        visit::visit_expr_return(self, ret);
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
            self.record_named(Pending::new(args, call.to_token_stream()));
        } else if let Some(method) = associated_command(call) {
            self.record_method(method, true, call.to_token_stream(), None);
        } else if path_ends_with(&call.func, &["redis", "Script", "new"]) {
            self.plain_scripts.push(call.to_token_stream());
        }
        if path_last_in(&call.func, SPAWNERS) {
            self.visit_expr(&call.func);
            self.spawned += 1;
            call.args.iter().for_each(|arg| self.visit_expr(arg));
            self.spawned -= 1;
        } else if path_last_in(&call.func, SCOPE_ENTRIES) {
            let outer = std::mem::take(&mut self.spawned);
            visit::visit_expr_call(self, call);
            self.spawned = outer;
        } else {
            visit::visit_expr_call(self, call);
        }
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        self.scan_tokens(mac.tokens.clone());
    }
}

impl Scan {
    fn learn_signature(&mut self, sig: &Signature) {
        self.returns_redis = match &sig.output {
            ReturnType::Type(_, ty) => mentions(&ty.to_token_stream(), &["RedisResult", "RedisError"]),
            ReturnType::Default => false,
        };
        // `C: AsyncCommands`, `C: ConnectionLike + Send`: a parameter of type `C` is a connection.
        let mut generic_connections: Vec<String> = Vec::new();
        for param in &sig.generics.params {
            if let GenericParam::Type(ty) = param {
                if mentions(&ty.bounds.to_token_stream(), CONNECTION_TYPES) {
                    generic_connections.push(ty.ident.to_string());
                }
            }
        }
        if let Some(clause) = &sig.generics.where_clause {
            for predicate in &clause.predicates {
                if let syn::WherePredicate::Type(p) = predicate {
                    if mentions(&p.bounds.to_token_stream(), CONNECTION_TYPES) {
                        generic_connections.push(p.bounded_ty.to_token_stream().to_string());
                    }
                }
            }
        }
        let generic_names: Vec<&str> = generic_connections.iter().map(String::as_str).collect();
        for input in &sig.inputs {
            let FnArg::Typed(arg) = input else { continue };
            let ty = arg.ty.to_token_stream();
            let connection = mentions(&ty, CONNECTION_TYPES) || mentions(&ty, &generic_names);
            if let (true, Some(name)) = (connection, bound_name(&arg.pat)) {
                if mentions(&ty, UNWRAPPED_TYPES) && !mentions(&ty, &["RetryConnection"]) {
                    self.unwrapped.insert(name.clone());
                }
                self.connections.insert(name);
            }
        }
    }

    /// The call `expr` (under `.await`) gets its type from the code around it.
    fn mark_typed(&mut self, expr: &Expr) {
        match expr {
            Expr::Await(awaited) => {
                if let Expr::MethodCall(call) = &*awaited.base {
                    self.typed.insert(call as *const ExprMethodCall);
                }
            }
            // `Ok(conn.get(k).await?)`: the `Ok` takes its type from the function's.
            Expr::Call(call) if path_ends_with(&call.func, &["Ok"]) && call.args.len() == 1 => {
                if let Some(arg) = call.args.first() {
                    self.mark_typed(strip_try(arg).0);
                }
            }
            Expr::Try(tried) => self.mark_typed(&tried.expr),
            Expr::Paren(p) => self.mark_typed(&p.expr),
            _ => {}
        }
    }

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
        let local_cmd = match root {
            Expr::Path(p) => {
                p.path.get_ident().map(ToString::to_string).filter(|n| self.cmds.contains_key(n))
            }
            _ => None,
        };
        let mut pending = match root {
            Expr::Call(call) if !on_pipeline => self.cmd_root(call),
            _ => None,
        };
        if pending.is_none() && !on_pipeline && local_cmd.is_none() {
            self.visit_expr(root);
        }
        let receiver = receiver_key(root);
        let sent_through = links
            .iter()
            .find(|l| l.args.len() == 1 && SENDERS.iter().any(|s| l.method == s))
            .and_then(|l| l.args.first())
            .and_then(receiver_key);
        let first_call = self.calls.len();
        let mut on_local_cmd = local_cmd.is_some();
        for &link in &links {
            if link.method == "arg" {
                if let Some(pending) = pending.as_mut() {
                    pending.arg(link);
                } else if let Some((_, pending)) =
                    local_cmd.as_ref().filter(|_| on_local_cmd).and_then(|n| self.cmds.get_mut(n))
                {
                    pending.arg(link);
                }
                continue;
            }
            on_local_cmd = false;
            self.finish_pending(pending.take());
            if let Some(args) = cmd_method(link) {
                pending = Some(Pending::new(args, method_tokens(link)));
            } else if let Some(method) = methods::find(&link.method.to_string()) {
                let awaited = awaited && std::ptr::eq(link, outer);
                let typed = awaited && self.typed.contains(&(outer as *const ExprMethodCall));
                let certain = on_pipeline || redis_evidence(method, link, awaited, typed);
                let receiver = if on_pipeline { None } else { receiver.clone() };
                self.record_method(method, certain, method_tokens(link), receiver);
            }
        }
        self.finish_pending(pending);
        if let Some(through) = sent_through {
            for call in &mut self.calls[first_call..] {
                call.through.get_or_insert_with(|| through.clone());
            }
        }
        for link in &links {
            let spawner = SPAWNERS.iter().any(|s| link.method == s);
            self.spawned += usize::from(spawner);
            for arg in &link.args {
                self.visit_expr(arg);
            }
            self.spawned -= usize::from(spawner);
        }
    }

    /// `cmd("NAME")` or `Cmd::new()` at the root of a chain.
    fn cmd_root(&self, call: &ExprCall) -> Option<Pending> {
        if let Some(args) = cmd_call(call) {
            return Some(Pending::new(args, call.to_token_stream()));
        }
        (path_ends_with(&call.func, &["Cmd", "new"]) && call.args.is_empty()).then(|| Pending {
            name: Name::FirstArg,
            args: Vec::new(),
            tokens: call.to_token_stream(),
        })
    }

    /// A value that is a `Cmd` being built: `cmd("X")`, `Cmd::new()`, either with `.arg(..)`s.
    fn cmd_value(&self, expr: &Expr) -> Option<Pending> {
        match expr {
            Expr::Call(call) => self.cmd_root(call),
            Expr::MethodCall(link) if link.method == "arg" => {
                let mut pending = self.cmd_value(&link.receiver)?;
                pending.arg(link);
                Some(pending)
            }
            _ => None,
        }
    }

    /// The arguments of the `.arg(..)`s of a `Cmd` value, which may hold Redis calls of their own.
    fn visit_cmd_value_args(&mut self, expr: &Expr) {
        match expr {
            Expr::MethodCall(link) => {
                self.visit_cmd_value_args(&link.receiver);
                link.args.iter().for_each(|arg| self.visit_expr(arg));
            }
            Expr::Call(call) => call.args.iter().for_each(|arg| self.visit_expr(arg)),
            _ => {}
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

    fn record_method(
        &mut self,
        method: &'static methods::Method,
        certain: bool,
        tokens: TokenStream,
        receiver: Option<String>,
    ) {
        let spec = commands::lookup_name(method.command);
        self.calls.push(Call {
            name: Some(method.command.to_string()),
            spec,
            access: spec.map(|s| s.access),
            certain,
            method: Some(method.name),
            through: receiver.clone(),
            receiver,
            ..Call::unknown(tokens, self.spawned > 0)
        });
    }

    fn finish_pending(&mut self, pending: Option<Pending>) {
        if let Some(pending) = pending {
            self.record_named(pending);
        }
    }

    /// A command named by a string: classified with its literal arguments, as the runtime
    /// classifies the command it sends.
    fn record_named(&mut self, pending: Pending) {
        let call = pending.call(self.spawned > 0);
        self.calls.push(call);
    }

    /// A macro's tokens: as expressions, as statements, or piece by piece.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        if let Ok(exprs) = Punctuated::<Expr, Token![,]>::parse_terminated.parse2(tokens.clone()) {
            exprs.iter().for_each(|expr| self.visit_expr(expr));
            return;
        }
        if let Ok(stmts) = Block::parse_within.parse2(tokens.clone()) {
            stmts.iter().for_each(|stmt| self.visit_stmt(stmt));
            return;
        }
        // Custom syntax (`select!` arms, `v = fut, if cond => handler`): each expression found
        // by parsing as far as an expression goes, skipping a token where none starts.
        let mut found: Vec<Expr> = Vec::new();
        let mut groups: Vec<TokenStream> = Vec::new();
        let _ = (|input: ParseStream| {
            while !input.is_empty() {
                let fork = input.fork();
                match fork.parse::<Expr>() {
                    Ok(expr) => {
                        input.advance_to(&fork);
                        found.push(expr);
                    }
                    Err(_) => {
                        if let TokenTree::Group(group) = input.parse::<TokenTree>()? {
                            groups.push(group.stream());
                        }
                    }
                }
            }
            Ok(())
        })
        .parse2(tokens);
        found.iter().for_each(|expr| self.visit_expr(expr));
        groups.into_iter().for_each(|group| self.scan_tokens(group));
    }

    /// Settles what the whole body tells: locals' `Cmd`s with all their arguments, and calls on
    /// receivers known to be connections.
    fn finish(mut self) -> Findings {
        for (index, pending) in self.cmds.values() {
            let spawned = self.calls[*index].spawned;
            self.calls[*index] = pending.call(spawned);
        }
        let mut connections: HashSet<String> =
            self.connections.iter().map(|c| resolve(&self.aliases, c)).collect();
        for call in self.calls.iter().filter(|c| c.certain) {
            if let Some(receiver) = &call.receiver {
                connections.insert(resolve(&self.aliases, receiver));
            }
        }
        let unwrapped: HashSet<String> = self.unwrapped.iter().map(|c| resolve(&self.aliases, c)).collect();
        for call in &mut self.calls {
            if let Some(receiver) = &call.receiver {
                if connections.contains(&resolve(&self.aliases, receiver)) {
                    call.certain = true;
                }
            }
            if let Some(through) = &call.through {
                if unwrapped.contains(&resolve(&self.aliases, through)) {
                    call.unwrapped = Some(through.clone());
                }
            }
        }
        Findings { calls: self.calls, plain_scripts: self.plain_scripts }
    }
}

/// What a local is, following `let a = b;` chains (bounded: a cycle is not Rust, but
/// shadowing can make one of names).
fn resolve(aliases: &HashMap<String, String>, key: &str) -> String {
    let mut key = key.to_string();
    for _ in 0..8 {
        match aliases.get(&key) {
            Some(next) => key = next.clone(),
            None => break,
        }
    }
    key
}

/// The name a `let` or a parameter binds: `p`, `mut p`, `p: Pipeline`.
fn bound_name(pat: &Pat) -> Option<String> {
    match pat {
        Pat::Ident(p) => Some(p.ident.to_string()),
        Pat::Type(t) => bound_name(&t.pat),
        _ => None,
    }
}

/// `expr?` -> (`expr`, true).
fn strip_try(expr: &Expr) -> (&Expr, bool) {
    match expr {
        Expr::Try(tried) => (&tried.expr, true),
        Expr::Paren(p) => strip_try(&p.expr),
        _ => (expr, false),
    }
}

/// A receiver as a name the scan can compare: `conn`, `self.redis`; `&mut c`, `(c)`,
/// `c.clone()` and `c.as_mut()` are `c`.
fn receiver_key(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Path(p) => p.path.get_ident().map(ToString::to_string),
        Expr::Field(f) => {
            let base = receiver_key(&f.base)?;
            Some(format!("{base}.{}", f.member.to_token_stream()))
        }
        Expr::Reference(r) => receiver_key(&r.expr),
        Expr::Paren(p) => receiver_key(&p.expr),
        Expr::MethodCall(m)
            if m.args.is_empty()
                && ["clone", "as_mut", "borrow_mut", "as_ref"].iter().any(|n| m.method == n) =>
        {
            receiver_key(&m.receiver)
        }
        _ => None,
    }
}

/// Whether `tokens` contain one of `names` as an identifier.
fn mentions(tokens: &TokenStream, names: &[&str]) -> bool {
    tokens.clone().into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => names.iter().any(|n| ident == n),
        TokenTree::Group(group) => mentions(&group.stream(), names),
        _ => false,
    })
}

fn path_ends_with(expr: &Expr, tail: &[&str]) -> bool {
    let Expr::Path(p) = expr else { return false };
    let segments = &p.path.segments;
    segments.len() >= tail.len() && segments.iter().rev().zip(tail.iter().rev()).all(|(s, t)| s.ident == t)
}

fn path_last_in(expr: &Expr, names: &[&str]) -> bool {
    let Expr::Path(p) = expr else { return false };
    p.path.segments.last().is_some_and(|last| names.iter().any(|n| last.ident == n))
}

/// `redis::pipe()`, `pipe()`, `Pipeline::new()`, `Pipeline::with_capacity(n)`.
fn is_pipeline_constructor(expr: &Expr) -> bool {
    let Expr::Call(call) = expr else { return false };
    (path_ends_with(&call.func, &["pipe"]) && call.args.is_empty())
        || path_ends_with(&call.func, &["Pipeline", "new"])
        || path_ends_with(&call.func, &["Pipeline", "with_capacity"])
}

/// `client.get_multiplexed_async_connection().await?`, `RetryConnection::new(..)`,
/// `ConnectionManager::new(..).await?`.
fn is_connection_constructor(expr: &Expr) -> bool {
    match expr {
        Expr::Try(t) => is_connection_constructor(&t.expr),
        Expr::Await(a) => is_connection_constructor(&a.base),
        Expr::Paren(p) => is_connection_constructor(&p.expr),
        Expr::MethodCall(m) => {
            CONNECTION_CONSTRUCTORS.iter().any(|c| m.method == c)
                || (["with_producer", "capture_all", "capture_all_with"].iter().any(|c| m.method == c)
                    && is_connection_constructor(&m.receiver))
        }
        Expr::Call(call) => {
            let Expr::Path(p) = &*call.func else { return false };
            let mut segments = p.path.segments.iter().rev();
            let (last, owner) = (segments.next(), segments.next());
            owner.is_some_and(|o| CONNECTION_TYPES.iter().any(|t| o.ident == t))
                && last.is_some_and(|l| l.ident == "new")
        }
        _ => false,
    }
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
fn redis_evidence(method: &methods::Method, call: &ExprMethodCall, awaited: bool, typed: bool) -> bool {
    match method.evidence {
        Evidence::Distinctive => true,
        Evidence::Shared { arity } => {
            redis_turbofish(call.turbofish.as_ref()) || (awaited && typed && call.args.len() == arity)
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
