//! The `#[weir::task]` attribute. Use it through the `weir` crate, which documents its options.
//!
//! The attribute keeps the function unchanged and adds, in the type namespace, a unit-like struct
//! of the same name implementing `weir::Task`: the task's defaults (`info`), its JSON entry point
//! (`run`) and its cache key. Options are checked here, so that a typo or a malformed duration is
//! a compile error pointing at it.

mod duration;
mod expand;
mod options;

use proc_macro::TokenStream;

/// Marks a function as a weir task. See the `weir` crate for the options.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr.into(), item.into()).into()
}
