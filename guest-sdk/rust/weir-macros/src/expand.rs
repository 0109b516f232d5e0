//! What `#[weir::task]` turns a function into.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, FnArg, Ident, ItemFn, Lit, Meta, Pat, ReturnType, Type};

use crate::options::{Cache, Errors, Options};

/// Expands `#[weir::task(attr)] item`. On error the function is still emitted, so that its callers
/// do not get errors of their own.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new_spanned(&item, "#[weir::task] goes on a function")
                .into_compile_error();
            return quote!(#error #item);
        }
    };
    let options = Options::parse(attr);
    let parameters = parameters(&mut function);
    match (options, parameters) {
        (Ok(options), Ok(parameters)) => match task(&function, options, &parameters) {
            Ok(task) => quote!(#function #task),
            Err(error) => error_with(error, &function),
        },
        (options, parameters) => {
            let mut errors = Errors::default();
            for error in [options.err(), parameters.err()].into_iter().flatten() {
                errors.push(error);
            }
            let error = errors.finish().expect_err("one of them failed");
            error_with(error, &function)
        }
    }
}

/// The error, the function, and a stand-in task so that `weir::export!` adds no errors of its own.
fn error_with(error: syn::Error, function: &ItemFn) -> TokenStream {
    let error = error.into_compile_error();
    let ident = &function.sig.ident;
    let name = ident.unraw().to_string();
    quote! {
        #error
        #function

        #[allow(non_camel_case_types, dead_code)]
        #[doc(hidden)]
        pub struct #ident {}

        impl ::weir::Task for #ident {
            const NAME: &'static str = #name;

            fn info() -> ::weir::TaskInfo {
                ::core::unreachable!()
            }

            fn run(
                _: &::core::primitive::str,
            ) -> ::core::result::Result<::std::string::String, ::weir::TaskError> {
                ::core::unreachable!()
            }

            fn cache_key(_: &::core::primitive::str) -> ::core::option::Option<::std::string::String> {
                ::core::unreachable!()
            }
        }
    }
}

/// One parameter of the task: one field of its input object.
struct Parameter {
    ident: Ident,
    ty: Type,
    /// `#[serde(...)]` attributes, moved from the parameter to the input field.
    serde: Vec<Attribute>,
}

/// Reads the parameters and takes their `#[serde]` attributes off the function (they are not
/// valid there).
fn parameters(function: &mut ItemFn) -> syn::Result<Vec<Parameter>> {
    let signature = &mut function.sig;
    let mut errors = Errors::default();
    let unsupported = [
        (
            signature.asyncness.is_some(),
            "a task cannot be `async`: the weir:task world is synchronous",
        ),
        (signature.unsafety.is_some(), "a task cannot be `unsafe`"),
        (signature.variadic.is_some(), "a task cannot be variadic"),
        (
            !signature.generics.params.is_empty(),
            "a task cannot be generic: its input types must be known",
        ),
        (
            signature.generics.where_clause.is_some(),
            "a task cannot have a `where` clause",
        ),
    ];
    for (_, message) in unsupported.iter().filter(|(is, _)| *is) {
        errors.push(syn::Error::new_spanned(&signature.ident, message));
    }
    let mut parameters = Vec::new();
    for input in &mut signature.inputs {
        let typed = match input {
            FnArg::Receiver(receiver) => {
                errors.push(syn::Error::new_spanned(
                    receiver,
                    "a task cannot take `self`",
                ));
                continue;
            }
            FnArg::Typed(typed) => typed,
        };
        let ident = match &*typed.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => pat.ident.clone(),
            pat => {
                errors.push(syn::Error::new_spanned(
                    pat,
                    "a task parameter must be a plain name: it is the name of an input field",
                ));
                continue;
            }
        };
        match &*typed.ty {
            Type::Reference(reference) => errors.push(syn::Error::new_spanned(
                reference,
                "a task parameter must be an owned type (`String`, not `&str`): \
                 it is deserialized from the input",
            )),
            Type::ImplTrait(impl_trait) => errors.push(syn::Error::new_spanned(
                impl_trait,
                "a task parameter cannot be `impl Trait`: it is deserialized from the input",
            )),
            _ => {}
        }
        let (serde, others) = std::mem::take(&mut typed.attrs)
            .into_iter()
            .partition(|attr| attr.path().is_ident("serde"));
        typed.attrs = others;
        parameters.push(Parameter {
            ident,
            ty: (*typed.ty).clone(),
            serde,
        });
    }
    errors.finish()?;
    Ok(parameters)
}

/// The struct named after the function and its `weir::Task` impl.
fn task(function: &ItemFn, options: Options, parameters: &[Parameter]) -> syn::Result<TokenStream> {
    let ident = &function.sig.ident;
    let name = match &options.name {
        Some(name) => name.value(),
        None => ident.unraw().to_string().replace('_', "-"),
    };
    if let Some(template) = &options.run_name {
        check_run_name(template, ident, parameters)?;
    }

    let description = options
        .description
        .clone()
        .or_else(|| doc_comment(&function.attrs));
    let spec = spec(&name, description, &options);
    let cache_key = match &options.cache {
        Cache::CustomKey(key) => quote_spanned! {key.span()=>
            ::weir::__private::custom_cache_key(__weir_input, #key)
        },
        Cache::None | Cache::Inputs => quote!(::core::option::Option::None),
    };

    let fields = parameters.iter().map(|parameter| {
        let Parameter { ident, ty, serde } = parameter;
        quote!(#(#serde)* #ident: #ty)
    });
    // Bound to prefixed names so that a parameter named like the function does not shadow it.
    let field_idents: Vec<&Ident> = parameters
        .iter()
        .map(|parameter| &parameter.ident)
        .collect();
    let locals: Vec<Ident> = field_idents
        .iter()
        .map(|ident| format_ident!("__weir_{}", ident.unraw()))
        .collect();
    let call = quote!(#ident(#(#locals),*));
    let output = match &function.sig.output {
        ReturnType::Default => quote! {
            #call;
            ::weir::__private::output(Self::NAME, &())
        },
        ReturnType::Type(_, ty) if returns_result(ty) => quote_spanned! {ty.span()=>
            ::weir::__private::output_result(Self::NAME, #call)
        },
        ReturnType::Type(_, ty) => quote_spanned! {ty.span()=>
            ::weir::__private::output(Self::NAME, &#call)
        },
    };

    Ok(quote! {
        #[allow(non_camel_case_types, dead_code)]
        #[doc(hidden)]
        pub struct #ident {}

        impl ::weir::Task for #ident {
            const NAME: &'static str = #name;

            fn info() -> ::weir::TaskInfo {
                #spec.to_info()
            }

            fn run(
                __weir_input: &::core::primitive::str,
            ) -> ::core::result::Result<::std::string::String, ::weir::TaskError> {
                #[derive(::weir::__private::serde::Deserialize)]
                #[serde(crate = "::weir::__private::serde", deny_unknown_fields)]
                struct __WeirInput {
                    #(#fields,)*
                }
                let __WeirInput { #(#field_idents: #locals),* } =
                    ::weir::__private::input::<__WeirInput>(Self::NAME, __weir_input)?;
                #output
            }

            fn cache_key(
                __weir_input: &::core::primitive::str,
            ) -> ::core::option::Option<::std::string::String> {
                #cache_key
            }
        }
    })
}

/// The `weir::__private::TaskSpec` literal of the task's defaults.
fn spec(name: &str, description: Option<String>, options: &Options) -> TokenStream {
    let option = |value: Option<TokenStream>| match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    };
    let description = option(description.map(|d| quote!(#d)));
    let version = option(options.version.as_ref().map(|v| quote!(#v)));
    let tags = &options.tags;
    let retries = options.retries;
    let retry_delays_ms = &options.retry_delays_ms;
    let retry_backoff_ms = option(options.retry_backoff_ms.map(|(base, max)| {
        let max = option(max.map(|max| quote!(#max)));
        quote!((#base, #max))
    }));
    let retry_jitter_factor = option(options.retry_jitter.map(|jitter| quote!(#jitter)));
    let timeout_ms = option(options.timeout_ms.map(|timeout| quote!(#timeout)));
    let cache_policy = match options.cache {
        Cache::None => quote!(None),
        Cache::Inputs => quote!(Inputs),
        Cache::CustomKey(_) => quote!(CustomKey),
    };
    let cache_expiration_ms = option(options.cache_expiration_ms.map(|ms| quote!(#ms)));
    let log_prints = options.log_prints;
    let run_name = option(options.run_name.as_ref().map(|template| quote!(#template)));
    let needs = &options.needs;
    quote! {
        ::weir::__private::TaskSpec {
            name: #name,
            description: #description,
            version: #version,
            tags: &[#(#tags),*],
            retries: #retries,
            retry_delays_ms: &[#(#retry_delays_ms),*],
            retry_backoff_ms: #retry_backoff_ms,
            retry_jitter_factor: #retry_jitter_factor,
            timeout_ms: #timeout_ms,
            cache_policy: ::weir::CachePolicy::#cache_policy,
            cache_expiration_ms: #cache_expiration_ms,
            log_prints: #log_prints,
            run_name: #run_name,
            needs: &[#(#needs),*],
        }
    }
}

/// `Result<T, E>`, `weir::Result<T>`, `io::Result<T>`...: anything whose last segment is `Result`.
fn returns_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Result"),
        Type::Group(group) => returns_result(&group.elem),
        Type::Paren(paren) => returns_result(&paren.elem),
        _ => false,
    }
}

/// The function's doc comment, with rustdoc's leading space removed from each line.
fn doc_comment(attrs: &[Attribute]) -> Option<String> {
    let lines: Vec<String> = attrs
        .iter()
        .filter_map(|attr| match &attr.meta {
            Meta::NameValue(nv) if nv.path.is_ident("doc") => match &nv.value {
                Expr::Lit(syn::ExprLit {
                    lit: Lit::Str(text),
                    ..
                }) => Some(text.value()),
                _ => None,
            },
            _ => None,
        })
        .flat_map(|text| {
            text.split('\n')
                .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let text = lines.join("\n").trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// Each `{field}` of a run name template must name a parameter (a field of the input).
fn check_run_name(
    template: &syn::LitStr,
    function: &Ident,
    parameters: &[Parameter],
) -> syn::Result<()> {
    let text = template.value();
    let mut rest = text.as_str();
    // `#[serde(rename, flatten...)]` change the input's field names: trust the author then.
    let check_fields = parameters
        .iter()
        .all(|parameter| parameter.serde.is_empty());
    let names: Vec<String> = parameters
        .iter()
        .map(|parameter| parameter.ident.unraw().to_string())
        .collect();
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(syn::Error::new(
                template.span(),
                "`run_name` has a `}` without `{`",
            ));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(syn::Error::new(
                template.span(),
                "`run_name` has a `{` without `}`",
            ));
        };
        let field = &rest[open + 1..open + close];
        // `{a.b}`: the first part names the parameter.
        let head = field.split(['.', '[']).next().unwrap_or_default();
        if check_fields && !names.iter().any(|name| name == head) {
            let known = if names.is_empty() {
                "it has no parameters".to_owned()
            } else {
                format!("its parameters are {}", names.join(", "))
            };
            return Err(syn::Error::new(
                template.span(),
                format!(
                    "`run_name` refers to `{{{field}}}`, which is not a parameter of `{function}`; {known}"
                ),
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_ok(attr: TokenStream, item: TokenStream) -> String {
        let output = expand(attr, item).to_string();
        assert!(
            !output.contains("compile_error"),
            "unexpected error: {output}"
        );
        output
    }

    fn expand_err(attr: TokenStream, item: TokenStream) -> String {
        let output = expand(attr, item);
        let file: syn::File = syn::parse2(output).expect("valid items");
        let mut messages = Vec::new();
        for item in &file.items {
            if let syn::Item::Macro(mac) = item
                && mac.mac.path.segments.last().unwrap().ident == "compile_error"
            {
                let message: syn::LitStr = mac.mac.parse_body().expect("a string");
                messages.push(message.value());
            }
        }
        assert!(
            file.items
                .iter()
                .any(|item| matches!(item, syn::Item::Fn(_))),
            "the function is kept"
        );
        messages.join("\n")
    }

    #[test]
    fn names_come_from_the_function() {
        let output = expand_ok(
            quote!(),
            quote!(
                fn get_url(url: String) -> String {
                    url
                }
            ),
        );
        assert!(
            output.contains(r#"const NAME : & 'static str = "get-url""#),
            "{output}"
        );
        assert!(output.contains("pub struct get_url { }"), "{output}");
        let output = expand_ok(
            quote!(name = "fetch"),
            quote!(
                fn get_url() {}
            ),
        );
        assert!(
            output.contains(r#"const NAME : & 'static str = "fetch""#),
            "{output}"
        );
    }

    #[test]
    fn the_doc_comment_is_the_description() {
        let attrs: Vec<Attribute> = vec![
            syn::parse_quote!(#[doc = " Adds two numbers."]),
            syn::parse_quote!(#[doc = ""]),
            syn::parse_quote!(#[doc = "   Indented, then trailing.  "]),
            syn::parse_quote!(#[doc(hidden)]),
        ];
        assert_eq!(
            doc_comment(&attrs).as_deref(),
            Some("Adds two numbers.\n\n  Indented, then trailing.")
        );
        assert_eq!(doc_comment(&[]), None);
    }

    #[test]
    fn result_types_are_detected_by_their_last_segment() {
        for ty in [
            quote!(Result<i64, MyError>),
            quote!(weir::Result<i64>),
            quote!(std::io::Result<()>),
        ] {
            assert!(returns_result(&syn::parse2(ty.clone()).unwrap()), "{ty}");
        }
        for ty in [
            quote!(i64),
            quote!(Option<i64>),
            quote!(()),
            quote!(MyResult<i64>),
        ] {
            assert!(!returns_result(&syn::parse2(ty.clone()).unwrap()), "{ty}");
        }
    }

    #[test]
    fn serde_attributes_move_to_the_input_field() {
        let output = expand_ok(
            quote!(),
            quote!(
                fn f(#[serde(default)] n: u32) -> u32 {
                    n
                }
            ),
        );
        assert!(output.contains("fn f (n : u32)"), "{output}");
        assert!(output.contains("# [serde (default)] n : u32"), "{output}");
    }

    #[test]
    fn unsupported_signatures_are_errors() {
        assert_eq!(
            expand_err(
                quote!(),
                quote!(
                    async fn f() {}
                )
            ),
            "a task cannot be `async`: the weir:task world is synchronous"
        );
        assert_eq!(
            expand_err(
                quote!(),
                quote!(
                    fn f<T>(t: T) {}
                )
            ),
            "a task cannot be generic: its input types must be known"
        );
        assert_eq!(
            expand_err(
                quote!(),
                quote!(
                    fn f(s: &str) {}
                )
            ),
            "a task parameter must be an owned type (`String`, not `&str`): it is deserialized from the input"
        );
        assert_eq!(
            expand_err(
                quote!(),
                quote!(
                    fn f((a, b): (u8, u8)) {}
                )
            ),
            "a task parameter must be a plain name: it is the name of an input field"
        );
        let output = expand(
            quote!(),
            quote!(
                struct S;
            ),
        )
        .to_string();
        assert!(output.contains("goes on a function"), "{output}");
    }

    #[test]
    fn option_and_signature_errors_are_reported_together() {
        assert_eq!(
            expand_err(
                quote!(retries = "x"),
                quote!(
                    fn f(s: &str) {}
                )
            )
            .lines()
            .count(),
            2
        );
    }

    #[test]
    fn run_name_fields_must_be_parameters() {
        expand_ok(
            quote!(run_name = "add-{a}-{b.c}"),
            quote!(
                fn add(a: i64, b: X) {}
            ),
        );
        assert_eq!(
            expand_err(
                quote!(run_name = "add-{c}"),
                quote!(
                    fn add(a: i64, b: i64) {}
                )
            ),
            "`run_name` refers to `{c}`, which is not a parameter of `add`; its parameters are a, b"
        );
        assert_eq!(
            expand_err(
                quote!(run_name = "add-{a"),
                quote!(
                    fn add(a: i64) {}
                )
            ),
            "`run_name` has a `{` without `}`"
        );
        expand_ok(
            quote!(run_name = "x-{renamed}"),
            quote!(
                fn f(#[serde(rename = "renamed")] a: i64) {}
            ),
        );
    }

    #[test]
    fn a_custom_key_sets_the_policy() {
        let output = expand_ok(
            quote!(cache_key = keys::by_id),
            quote!(
                fn f(id: String) {}
            ),
        );
        assert!(output.contains("CachePolicy :: CustomKey"), "{output}");
        assert!(
            output.contains("custom_cache_key (__weir_input , keys :: by_id)"),
            "{output}"
        );
    }
}
