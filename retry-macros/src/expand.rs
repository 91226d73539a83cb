//! Code generation: the function as written, its future run in the runtime's capture scope.
//!
//! ```text
//! #[redis_retry(source = "Repo.save", max_retries = 5)]
//! async fn save(&self, k: &str) -> R { body }
//! ```
//!
//! becomes
//!
//! ```text
//! async fn save(&self, k: &str) -> R {
//!     ::redis_retry::scope::__macro::capture_static(
//!         {
//!             static __REDIS_RETRY_META: ::redis_retry::__private::MetaCell = ..::new();
//!             __REDIS_RETRY_META.get(|| ::redis_retry::__private::meta("Repo.save", 5,
//!                 ::redis_retry::__private::Mode::Replay, ::core::option::Option::None))
//!         },
//!         async move {
//!             if false { let __redis_retry_return: R = loop {}; return __redis_retry_return; }
//!             { body }
//!         },
//!         |__redis_retry_output| {
//!             use ..::{ReturnsRedis as _, ReturnsBoxed as _, ReturnsResult as _, ReturnsOther as _};
//!             (&&&..::Returned(__redis_retry_output)).redis_error()
//!         },
//!     )
//!     .await
//! }
//! ```
//!
//! With a `context = expr`, the metadata depends on the call and is built per call with
//! `__macro::capture(__private::meta(.., Some(expr.into())), ..)` instead. The scope's future
//! runs the closure on what the call returned, and warns when that is a transient Redis error
//! that no `RetryConnection` in the scope saw; the `Returned` probe finds that error by autoref
//! specialisation on the concrete return type, so a method that returns no `Result` costs
//! nothing. The probe is a closure handed to the scope's future rather than code after the
//! `.await`, so that the call is one future around the body, not two.
//!
//! Paths are absolute and the one local is prefixed, so nothing collides with the user's
//! names. The unreachable `return` tells type inference (and error messages) the declared
//! return type before the body is checked, as `tracing`'s `#[instrument]` does: without it a
//! `?` in the body could not infer its error type and a wrong tail expression would be
//! reported at the attribute rather than at the body.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{parse_quote, Expr, Path, ReturnType, Signature, Type};

use crate::attr::Args;
use crate::check;
use crate::item::{Func, Shape};
use crate::marker;
use crate::scan;

/// The whole attribute: the expanded function, or the function untouched plus every error
/// (so the rest of the crate still type-checks against its signature).
pub(crate) fn redis_retry(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut func: Func = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(error) => {
            let message = "#[redis_retry] goes on an `async fn`: a free function, or a method of an \
                           `impl` or `trait` block";
            return with_error(item, syn::Error::new(error.span(), message));
        }
    };
    let expanded = expand(args, &mut func);
    if let Some(body) = &mut func.body {
        marker::strip(&mut body.block);
    }
    match expanded {
        Ok(expanded) => expanded,
        Err(error) => with_error(func.to_token_stream(), error),
    }
}

fn expand(args: TokenStream, func: &mut Func) -> syn::Result<TokenStream> {
    let (args, shape) = match (Args::parse(args), func.shape()) {
        (Ok(args), Ok(shape)) => (args, shape),
        (Err(mut error), Err(more)) => {
            error.combine(more);
            return Err(error);
        }
        (Err(error), _) | (_, Err(error)) => return Err(error),
    };
    stacked(func)?;
    let sig = func.sig.clone();
    let findings = func.future_block().map(|block| scan::scan(Some(&sig), block)).unwrap_or_default();
    check::check(&args, &func.sig.ident, &findings)?;
    if let Some(body) = &mut func.body {
        marker::strip(&mut body.block);
    }

    let krate = args.krate.clone().unwrap_or_else(|| parse_quote!(::redis_retry));
    let enter = enter(&args, &func.sig, &krate);
    Ok(match shape {
        Shape::AsyncFn => wrap_body(func, &enter),
        Shape::AsyncBlock => {
            if let Some(future) = func.async_block_mut() {
                let inner = std::mem::replace(future, Expr::Verbatim(TokenStream::new()));
                let Enter { call, meta, check } = &enter;
                // The metadata is built when the function is called, as before the attribute
                // ran; the scope's future is the function's future.
                *future = parse_quote!(#call(#meta, #inner, #check));
            }
            func.to_token_stream()
        }
    })
}

/// A second `#[redis_retry]` below this one: the inner scope would silently replace this
/// one's for the whole body.
fn stacked(func: &Func) -> syn::Result<()> {
    let Some(inner) =
        func.attrs.iter().find(|a| a.path().segments.last().is_some_and(|s| s.ident == "redis_retry"))
    else {
        return Ok(());
    };
    Err(syn::Error::new_spanned(
        inner,
        "#[redis_retry] is given twice on this function: the inner scope would replace the outer one \
         for the whole body, and its options would silently win\n\
         = help: keep one #[redis_retry] and put every option in it",
    ))
}

/// `async fn`: the body becomes the future of a capture scope.
fn wrap_body(func: &Func, enter: &Enter) -> TokenStream {
    let Func { attrs, vis, sig, body, .. } = func;
    let Some(body) = body else { return func.to_token_stream() };
    let inner_attrs = &body.inner_attrs;
    let block = &body.block;
    let fake_return = fake_return(sig);
    let Enter { call, meta, check } = enter;
    quote! {
        #(#attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #call(
                #meta,
                async move {
                    #fake_return
                    #block
                },
                #check,
            )
            .await
        }
    }
}

/// `scope::__macro::capture(meta(source, max_retries, mode, context), ..)` with a context;
/// without one, `scope::__macro::capture_static` of metadata built once in a `static`.
fn enter(args: &Args, sig: &Signature, krate: &Path) -> Enter {
    let source = match &args.source {
        Some(source) => source.to_token_stream(),
        None => {
            let name = sig.ident.to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #name))
        }
    };
    let max_retries = match args.max_retries {
        Some((n, span)) => {
            let mut n = Literal::u32_unsuffixed(n);
            n.set_span(span);
            n.into_token_stream()
        }
        None => quote!(#krate::__private::DEFAULT_MAX_RETRIES),
    };
    let mode = args.mode().variant();
    let check = quote! {
        |__redis_retry_output| {
            #[allow(unused_imports)]
            use #krate::scope::__macro::{ReturnsBoxed as _, ReturnsOther as _, ReturnsRedis as _, ReturnsResult as _};
            (&&&#krate::scope::__macro::Returned(__redis_retry_output)).redis_error()
        }
    };
    match &args.context {
        // Spanned at the expression: a type without `Into<TaskContext>` is reported there.
        Some(expr) => {
            let context = quote_spanned! {expr.span()=>
                ::core::option::Option::Some(::core::convert::Into::<#krate::__private::TaskContext>::into(#expr))
            };
            let meta = quote!(#krate::__private::meta(#source, #max_retries, #krate::__private::Mode::#mode, #context));
            Enter { call: quote!(#krate::scope::__macro::capture), meta, check }
        }
        // Nothing in it depends on the call: built once, then shared (no allocation per call).
        None => Enter {
            call: quote!(#krate::scope::__macro::capture_static),
            meta: quote! {{
                static __REDIS_RETRY_META: #krate::__private::MetaCell = #krate::__private::MetaCell::new();
                __REDIS_RETRY_META.get(|| {
                    #krate::__private::meta(#source, #max_retries, #krate::__private::Mode::#mode, ::core::option::Option::None)
                })
            }},
            check,
        },
    }
}

/// How the scope is entered, `#call(#meta, future, #check)`; `check` finds the Redis error in
/// what the call returned.
struct Enter {
    call: TokenStream,
    meta: TokenStream,
    check: TokenStream,
}

/// An unreachable `return` of the declared type; see the module documentation.
fn fake_return(sig: &Signature) -> TokenStream {
    let (ty, span) = match &sig.output {
        ReturnType::Type(_, ty) => {
            let mut erased = (**ty).clone();
            EraseImplTrait.visit_type_mut(&mut erased);
            (erased.into_token_stream(), ty.span())
        }
        ReturnType::Default => (quote!(()), sig.ident.span()),
    };
    quote_spanned! {span=>
        #[allow(
            unknown_lints,
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::empty_loop,
            clippy::let_unit_value,
            clippy::let_with_type_underscore,
            clippy::needless_return,
            clippy::unreachable
        )]
        if false {
            let __redis_retry_return: #ty = loop {};
            return __redis_retry_return;
        }
    }
}

/// `impl Trait` cannot be written in a `let`; `_` lets inference find the concrete type.
struct EraseImplTrait;

impl VisitMut for EraseImplTrait {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::ImplTrait(impl_trait) = ty {
            *ty = Type::Infer(syn::TypeInfer { underscore_token: syn::Token![_](impl_trait.span()) });
        }
        visit_mut::visit_type_mut(self, ty);
    }
}

fn with_error(mut item: TokenStream, error: syn::Error) -> TokenStream {
    item.extend(error.into_compile_error());
    item
}
