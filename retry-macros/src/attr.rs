//! The attribute's options:
//!
//! ```text
//! #[redis_retry(
//!     source = "UserRepository.DeleteUserCache",  // default: module path and fn name
//!     max_retries = 5,                            // 1..=100, default: the runtime's
//!     mode = "replay" | "invalidate" | "log",     // default: "replay"
//!     context = <expr>,                           // impl Into<TaskContext>
//!     crate = "path::to::redis_retry",            // default: ::redis_retry
//!     read_path,                                  // only with mode = "log"
//!     allow_non_idempotent,                       // only with mode = "replay"
//!     allow_unknown_commands,                     // commands the table lacks: never captured
//! )]
//! ```
//!
//! Every mistake is reported at once, each at the tokens that caused it.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Path, Token};

use crate::errors::Errors;

mod kw {
    syn::custom_keyword!(source);
    syn::custom_keyword!(max_retries);
    syn::custom_keyword!(mode);
    syn::custom_keyword!(context);
    syn::custom_keyword!(read_path);
    syn::custom_keyword!(allow_non_idempotent);
    syn::custom_keyword!(allow_unknown_commands);
}

const OPTIONS: &str = "`source`, `max_retries`, `mode`, `context`, `crate`, `read_path`, \
                       `allow_non_idempotent`, `allow_unknown_commands`";

/// The bounds of `max_retries`: at least one retry, and few enough that a task cannot cycle
/// through the retry tiers for days.
const MAX_RETRIES: std::ops::RangeInclusive<u32> = 1..=100;

/// What the consumer does with the tasks of a scope (the runtime's `Mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Replay,
    Invalidate,
    Log,
}

impl Mode {
    const ALL: [(Mode, &'static str); 3] =
        [(Mode::Replay, "replay"), (Mode::Invalidate, "invalidate"), (Mode::Log, "log")];

    fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.iter().find(|(_, n)| *n == name).map(|(mode, _)| *mode)
    }

    /// The runtime's variant name.
    pub(crate) fn variant(self) -> Ident {
        let name = match self {
            Mode::Replay => "Replay",
            Mode::Invalidate => "Invalidate",
            Mode::Log => "Log",
        };
        Ident::new(name, Span::call_site())
    }
}

/// The options, validated.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) source: Option<LitStr>,
    pub(crate) max_retries: Option<(u32, Span)>,
    pub(crate) mode: Option<(Mode, Span)>,
    pub(crate) context: Option<Expr>,
    pub(crate) krate: Option<Path>,
    pub(crate) read_path: Option<Span>,
    pub(crate) allow_non_idempotent: Option<Span>,
    pub(crate) allow_unknown_commands: Option<Span>,
}

impl Args {
    pub(crate) fn mode(&self) -> Mode {
        self.mode.map_or(Mode::Replay, |(mode, _)| mode)
    }

    /// Parses and validates the attribute's tokens.
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Args> {
        let mut errors = Errors::default();
        let args = (|input: ParseStream| parse_options(input, &mut errors)).parse2(tokens)?;
        args.check_combinations(&mut errors);
        errors.finish(args)
    }

    fn check_combinations(&self, errors: &mut Errors) {
        let mode = self.mode();
        if let Some(span) = self.read_path {
            if mode != Mode::Log {
                errors.push(syn::Error::new(
                    span,
                    "`read_path` needs `mode = \"log\"`: a failed cache backfill on a read path is \
                     only logged, never retried (the next read backfills again)",
                ));
            }
        }
        if let Some(span) = self.allow_non_idempotent {
            if mode != Mode::Replay {
                errors.push(syn::Error::new(
                    span,
                    "`allow_non_idempotent` only applies to `mode = \"replay\"`: the other modes never \
                     re-run a write, so remove it",
                ));
            }
        }
    }
}

fn parse_options(input: ParseStream, errors: &mut Errors) -> syn::Result<Args> {
    let mut args = Args::default();
    while !input.is_empty() {
        let lookahead = input.lookahead1();
        if lookahead.peek(kw::source) {
            let key = input.parse::<kw::source>()?;
            let value = value_of(input, "source")?;
            set(&mut args.source, key.span, "source", source(value), errors);
        } else if lookahead.peek(kw::max_retries) {
            let key = input.parse::<kw::max_retries>()?;
            let value = value_of(input, "max_retries")?;
            set(&mut args.max_retries, key.span, "max_retries", max_retries(value), errors);
        } else if lookahead.peek(kw::mode) {
            let key = input.parse::<kw::mode>()?;
            let value = value_of(input, "mode")?;
            set(&mut args.mode, key.span, "mode", mode(value), errors);
        } else if lookahead.peek(kw::context) {
            let key = input.parse::<kw::context>()?;
            let value = value_of(input, "context")?;
            set(&mut args.context, key.span, "context", Ok(value), errors);
        } else if lookahead.peek(Token![crate]) {
            let key = input.parse::<Token![crate]>()?;
            let value = value_of(input, "crate")?;
            set(&mut args.krate, key.span, "crate", crate_path(value), errors);
        } else if lookahead.peek(kw::read_path) {
            let key = input.parse::<kw::read_path>()?;
            let flag = flag(input, key.span, "read_path")?;
            set(&mut args.read_path, key.span, "read_path", flag, errors);
        } else if lookahead.peek(kw::allow_non_idempotent) {
            let key = input.parse::<kw::allow_non_idempotent>()?;
            let flag = flag(input, key.span, "allow_non_idempotent")?;
            set(&mut args.allow_non_idempotent, key.span, "allow_non_idempotent", flag, errors);
        } else if lookahead.peek(kw::allow_unknown_commands) {
            let key = input.parse::<kw::allow_unknown_commands>()?;
            let flag = flag(input, key.span, "allow_unknown_commands")?;
            set(&mut args.allow_unknown_commands, key.span, "allow_unknown_commands", flag, errors);
        } else if input.peek(Ident::peek_any) {
            let key = input.call(Ident::parse_any)?;
            if input.peek(Token![=]) {
                value_of(input, "")?;
            }
            errors.push(syn::Error::new(
                key.span(),
                format!("unknown option `{key}`; the options are {OPTIONS}"),
            ));
        } else {
            return Err(lookahead.error());
        }
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(args)
}

/// Stores the first occurrence; a repeated option is an error at the repetition.
fn set<T>(slot: &mut Option<T>, key: Span, name: &str, value: syn::Result<T>, errors: &mut Errors) {
    if slot.is_some() {
        errors.push(syn::Error::new(key, format!("`{name}` is given more than once")));
        return;
    }
    match value {
        Ok(value) => *slot = Some(value),
        Err(error) => errors.push(error),
    }
}

fn value_of(input: ParseStream, name: &str) -> syn::Result<Expr> {
    if !input.peek(Token![=]) {
        return Err(input.error(format!("expected `=` and a value after `{name}`")));
    }
    input.parse::<Token![=]>()?;
    input.parse()
}

fn flag(input: ParseStream, key: Span, name: &str) -> syn::Result<syn::Result<Span>> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        let value: Expr = input.parse()?;
        let message = format!("`{name}` takes no value: write `{name}` alone");
        return Ok(Err(syn::Error::new_spanned(value, message)));
    }
    Ok(Ok(key))
}

fn string(value: &Expr) -> Option<&LitStr> {
    match value {
        Expr::Lit(ExprLit { lit: Lit::Str(lit), .. }) => Some(lit),
        _ => None,
    }
}

fn source(value: Expr) -> syn::Result<LitStr> {
    let Some(lit) = string(&value) else {
        return Err(syn::Error::new_spanned(
            value,
            "`source` takes a string literal, e.g. `source = \"UserRepository.DeleteUserCache\"`",
        ));
    };
    if lit.value().trim().is_empty() {
        return Err(syn::Error::new(
            lit.span(),
            "`source` must not be empty: it tells which code the failed writes come from, e.g. \
             \"UserRepository.DeleteUserCache\"; leave it out for the module path and function name",
        ));
    }
    Ok(lit.clone())
}

fn max_retries(value: Expr) -> syn::Result<(u32, Span)> {
    let (start, end) = (MAX_RETRIES.start(), MAX_RETRIES.end());
    let Expr::Lit(ExprLit { lit: Lit::Int(lit), .. }) = &value else {
        return Err(syn::Error::new_spanned(
            value,
            format!("`max_retries` takes an integer literal from {start} to {end}"),
        ));
    };
    match lit.base10_parse::<u32>() {
        Ok(n) if MAX_RETRIES.contains(&n) => Ok((n, lit.span())),
        _ => Err(syn::Error::new(
            lit.span(),
            format!(
                "`max_retries` must be from {start} to {end}, not {}; leave it out for the runtime's default",
                lit.base10_digits()
            ),
        )),
    }
}

fn mode(value: Expr) -> syn::Result<(Mode, Span)> {
    let choices = Mode::ALL.iter().map(|(_, n)| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
    let Some(lit) = string(&value) else {
        return Err(syn::Error::new_spanned(
            value,
            format!("`mode` takes a string literal, one of {choices}"),
        ));
    };
    match Mode::from_name(&lit.value()) {
        Some(mode) => Ok((mode, lit.span())),
        None => Err(syn::Error::new(
            lit.span(),
            format!("unknown mode \"{}\"; the modes are {choices}", lit.value()),
        )),
    }
}

fn crate_path(value: Expr) -> syn::Result<Path> {
    let message = "`crate` takes the path to the `redis_retry` crate as a string literal, \
                   e.g. `crate = \"::my_platform::redis_retry\"`";
    let Some(lit) = string(&value) else {
        return Err(syn::Error::new_spanned(value, message));
    };
    // `LitStr::parse` gives every token the literal's span: errors in generated paths point at it.
    let path: Path = lit.parse().map_err(|_| syn::Error::new(lit.span(), message))?;
    Ok(path)
}
