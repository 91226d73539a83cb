//! The statement markers that correct the body scan where tokens cannot tell:
//!
//! - `#[redis_retry::writes]`: the statement writes to Redis in a way the scan cannot see (a
//!   helper function, a macro of the user's), so the function is not taken for reads only;
//! - `#[redis_retry::not_redis]`: the statement sends nothing to Redis (a type of the user's
//!   with methods named like redis-rs's), so the scan leaves it out.
//!
//! They exist only for the attribute: it removes them from the code it emits, on success and
//! on error alike, so the compiler never sees an attribute on a statement it cannot resolve.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::visit_mut::{self, VisitMut};
use syn::{Attribute, Block, Expr, Stmt};

/// A marker on a statement.
pub(crate) enum Marker {
    /// `#[redis_retry::writes]`, with the statement's tokens to point at.
    Writes(TokenStream),
    /// `#[redis_retry::not_redis]`.
    NotRedis,
}

const WRITES: &str = "writes";
const NOT_REDIS: &str = "not_redis";

/// The marker a statement carries, if any.
pub(crate) fn of_stmt(stmt: &Stmt) -> Option<Marker> {
    let attrs: &[Attribute] = match stmt {
        Stmt::Local(local) => &local.attrs,
        Stmt::Macro(mac) => &mac.attrs,
        Stmt::Expr(expr, _) => expr_attrs(expr)?,
        Stmt::Item(_) => return None,
    };
    attrs.iter().find_map(|attr| match marker_name(attr)? {
        WRITES => Some(Marker::Writes(stmt.to_token_stream())),
        _ => Some(Marker::NotRedis),
    })
}

/// Removes every marker from `block`.
pub(crate) fn strip(block: &mut Block) {
    Strip.visit_block_mut(block);
}

/// `redis_retry::writes` or `redis_retry::not_redis`, also under a leading `::`.
fn marker_name(attr: &Attribute) -> Option<&'static str> {
    let segments: Vec<String> = attr.path().segments.iter().map(|s| s.ident.to_string()).collect();
    match segments.as_slice() {
        [krate, name] if krate == "redis_retry" && name == WRITES => Some(WRITES),
        [krate, name] if krate == "redis_retry" && name == NOT_REDIS => Some(NOT_REDIS),
        _ => None,
    }
}

struct Strip;

impl VisitMut for Strip {
    fn visit_stmt_mut(&mut self, stmt: &mut Stmt) {
        let attrs = match stmt {
            Stmt::Local(local) => Some(&mut local.attrs),
            Stmt::Macro(mac) => Some(&mut mac.attrs),
            Stmt::Expr(expr, _) => expr_attrs_mut(expr),
            Stmt::Item(_) => None,
        };
        if let Some(attrs) = attrs {
            attrs.retain(|attr| marker_name(attr).is_none());
        }
        visit_mut::visit_stmt_mut(self, stmt);
    }
}

/// The outer attributes of the expressions a statement can start with.
macro_rules! expr_attrs {
    ($name:ident, $($ref:tt)+) => {
        fn $name(expr: $($ref)+ Expr) -> Option<$($ref)+ Vec<Attribute>> {
            Some(match expr {
                Expr::Assign(e) => $($ref)+ e.attrs,
                Expr::Async(e) => $($ref)+ e.attrs,
                Expr::Await(e) => $($ref)+ e.attrs,
                Expr::Binary(e) => $($ref)+ e.attrs,
                Expr::Block(e) => $($ref)+ e.attrs,
                Expr::Call(e) => $($ref)+ e.attrs,
                Expr::ForLoop(e) => $($ref)+ e.attrs,
                Expr::If(e) => $($ref)+ e.attrs,
                Expr::Loop(e) => $($ref)+ e.attrs,
                Expr::Macro(e) => $($ref)+ e.attrs,
                Expr::Match(e) => $($ref)+ e.attrs,
                Expr::MethodCall(e) => $($ref)+ e.attrs,
                Expr::Paren(e) => $($ref)+ e.attrs,
                Expr::Path(e) => $($ref)+ e.attrs,
                Expr::Return(e) => $($ref)+ e.attrs,
                Expr::Try(e) => $($ref)+ e.attrs,
                Expr::Unsafe(e) => $($ref)+ e.attrs,
                Expr::While(e) => $($ref)+ e.attrs,
                _ => return None,
            })
        }
    };
}

expr_attrs!(expr_attrs, &);
expr_attrs!(expr_attrs_mut, &mut);
