//! The annotated function, kept token for token, and where its future is.
//!
//! Three shapes have a future to run in a capture scope:
//!
//! - an `async fn`: its body;
//! - what `#[async_trait]` leaves (it expands first, being on the `impl` or `trait`): a plain
//!   `fn` returning `Box::pin(async move { .. })`: that `async` block, as `tracing`'s
//!   `#[instrument]` does;
//! - what `#[tokio::test]` / `#[tokio::main]` leave when written above the attribute: a plain
//!   `fn` starting with `let body = async { .. };`: that `async` block.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::{braced, Attribute, Block, Expr, ExprAsync, Pat, Signature, Stmt, Token, Visibility};

/// A function item, trait method or impl method, as written.
pub(crate) struct Func {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    pub(crate) body: Option<Body>,
    /// The `;` of a trait method without a body.
    pub(crate) semi: Option<Token![;]>,
}

/// A function body, inner attributes (`#![allow(..)]`) apart so that they stay first.
pub(crate) struct Body {
    pub(crate) inner_attrs: Vec<Attribute>,
    pub(crate) block: Block,
}

/// Where the future to wrap is.
pub(crate) enum Shape {
    /// `async fn`: the body.
    AsyncFn,
    /// The `async` block `#[async_trait]` or a tokio entry point made of the body.
    AsyncBlock,
}

impl Parse for Func {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        if input.peek(Token![;]) {
            return Ok(Func { attrs, vis, sig, body: None, semi: Some(input.parse()?) });
        }
        let content;
        let brace_token = braced!(content in input);
        let inner_attrs = content.call(Attribute::parse_inner)?;
        let stmts = content.call(Block::parse_within)?;
        let body = Body { inner_attrs, block: Block { brace_token, stmts } };
        Ok(Func { attrs, vis, sig, body: Some(body), semi: None })
    }
}

impl Func {
    /// The shape, or an error at the tokens that make the function unfit.
    pub(crate) fn shape(&mut self) -> syn::Result<Shape> {
        if let Some(constness) = &self.sig.constness {
            return Err(syn::Error::new(
                constness.span,
                "#[redis_retry] cannot be used on a `const fn`: the capture scope exists only at run \
                 time, around the `.await`s of an `async fn`",
            ));
        }
        let Some(body) = &mut self.body else {
            return Err(syn::Error::new_spanned(
                &self.sig,
                "#[redis_retry] needs a function body to run in a capture scope: put it on the method \
                 in each `impl` of the trait, or give this method a default body",
            ));
        };
        if self.sig.asyncness.is_some() {
            return Ok(Shape::AsyncFn);
        }
        if async_block_mut(&mut body.block).is_some() {
            return Ok(Shape::AsyncBlock);
        }
        Err(syn::Error::new(
            self.sig.fn_token.span,
            "#[redis_retry] needs an `async fn`: the capture scope lives across the `.await`s of the \
             body, and a plain `fn` has none (the `async` keyword is missing)",
        ))
    }

    /// The code the capture scope covers: the body of an `async fn`, or the body of the `async`
    /// block of the other shapes.
    pub(crate) fn future_block(&mut self) -> Option<&Block> {
        let body = self.body.as_mut()?;
        if self.sig.asyncness.is_some() {
            return Some(&body.block);
        }
        match async_block_mut(&mut body.block)? {
            Expr::Async(ExprAsync { block, .. }) => Some(block),
            _ => None,
        }
    }

    /// The `Box::pin` / `let body =` async block, to be wrapped in place.
    pub(crate) fn async_block_mut(&mut self) -> Option<&mut Expr> {
        async_block_mut(&mut self.body.as_mut()?.block)
    }
}

impl ToTokens for Func {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.extend(self.attrs.iter().map(ToTokens::to_token_stream));
        self.vis.to_tokens(tokens);
        self.sig.to_tokens(tokens);
        if let Some(body) = &self.body {
            body.block.brace_token.surround(tokens, |tokens| {
                tokens.extend(body.inner_attrs.iter().map(ToTokens::to_token_stream));
                tokens.extend(body.block.stmts.iter().map(ToTokens::to_token_stream));
            });
        }
        self.semi.to_tokens(tokens);
    }
}

/// `Box::pin(async move { .. })` as the tail of the body (`#[async_trait]`), or
/// `let body = async { .. };` as its first statement (`#[tokio::test]`, `#[tokio::main]`).
fn async_block_mut(block: &mut Block) -> Option<&mut Expr> {
    let (first, tail) = match block.stmts.as_mut_slice() {
        [] => return None,
        [only] => (None, only),
        [first, .., tail] => (Some(first), tail),
    };
    if let Stmt::Expr(Expr::Call(call), None) = tail {
        let boxed = matches!(&*call.func, Expr::Path(p)
            if p.path.segments.len() >= 2
                && p.path.segments.iter().rev().take(2).map(|s| s.ident.to_string()).eq(["pin", "Box"]));
        if boxed && call.args.len() == 1 && matches!(call.args.first(), Some(Expr::Async(_))) {
            return call.args.first_mut();
        }
    }
    if let Some(Stmt::Local(local)) = first {
        let named_body = matches!(&local.pat, Pat::Ident(p) if p.ident == "body");
        if let Some(init) = local.init.as_mut().filter(|_| named_body) {
            if let Expr::Async(_) = &*init.expr {
                return Some(&mut init.expr);
            }
        }
    }
    None
}
