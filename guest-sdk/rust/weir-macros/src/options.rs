//! The options of `#[weir::task(...)]`, checked at compile time.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Lit, LitStr, Meta, Token, UnOp};

use crate::duration::{EXPECTED, parse_duration, seconds_to_ms};

/// Every option, in the order the error message lists them.
const OPTIONS: &[&str] = &[
    "name",
    "description",
    "version",
    "tags",
    "retries",
    "retry_delay",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "timeout",
    "cache",
    "cache_key",
    "cache_expiration",
    "log_prints",
    "run_name",
    "needs",
];

/// How results may be reused.
pub(crate) enum Cache {
    None,
    Inputs,
    /// `cache_key = path`: the function (or closure) that computes the key.
    CustomKey(Expr),
}

/// The options as written, with durations in milliseconds.
pub(crate) struct Options {
    pub name: Option<LitStr>,
    pub description: Option<String>,
    pub version: Option<String>,
    pub tags: Vec<String>,
    pub retries: u32,
    pub retry_delays_ms: Vec<u64>,
    /// (base, max)
    pub retry_backoff_ms: Option<(u64, Option<u64>)>,
    pub retry_jitter: Option<f64>,
    pub timeout_ms: Option<u64>,
    pub cache: Cache,
    pub cache_expiration_ms: Option<u64>,
    pub log_prints: bool,
    pub run_name: Option<LitStr>,
    /// `env:NAME`, `dir:/path[:rw]`, `http`, `http:HOST`.
    pub needs: Vec<String>,
}

impl Options {
    /// Parses the attribute's arguments, reporting every mistake at once.
    pub(crate) fn parse(attr: TokenStream) -> syn::Result<Self> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
        let mut options = Self {
            name: None,
            description: None,
            version: None,
            tags: Vec::new(),
            retries: 0,
            retry_delays_ms: Vec::new(),
            retry_backoff_ms: None,
            retry_jitter: None,
            timeout_ms: None,
            cache: Cache::None,
            cache_expiration_ms: None,
            log_prints: true,
            run_name: None,
            needs: Vec::new(),
        };
        let mut errors = Errors::default();
        let mut seen: Vec<String> = Vec::new();
        // Checked once every option is known.
        let mut backoff_max: Option<(u64, Span)> = None;
        let mut spans = Spans::default();

        for meta in metas {
            let nv = match meta {
                Meta::NameValue(nv) => nv,
                Meta::Path(path) => {
                    errors.push(syn::Error::new_spanned(
                        &path,
                        format!("option `{}` needs a value: `{0} = ...`", path_text(&path)),
                    ));
                    continue;
                }
                Meta::List(list) => {
                    errors.push(syn::Error::new_spanned(
                        &list,
                        format!("expected `{} = ...`", path_text(&list.path)),
                    ));
                    continue;
                }
            };
            let key = path_text(&nv.path);
            if !OPTIONS.contains(&key.as_str()) {
                errors.push(syn::Error::new_spanned(
                    &nv.path,
                    format!(
                        "unknown option `{key}`; expected one of {}",
                        OPTIONS
                            .iter()
                            .map(|option| format!("`{option}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
                continue;
            }
            if seen.contains(&key) {
                errors.push(syn::Error::new_spanned(
                    &nv.path,
                    format!("option `{key}` is given twice"),
                ));
                continue;
            }
            seen.push(key.clone());
            let value = unwrap_groups(&nv.value);
            let span = nv.value.span();
            let result = (|| -> syn::Result<()> {
                match key.as_str() {
                    "name" => {
                        let name = string(value, "name", "\"get-url\"")?;
                        let text = name.value();
                        if text.is_empty()
                            || text.chars().any(|c| c.is_whitespace() || c.is_control())
                        {
                            return Err(syn::Error::new(
                                span,
                                "a task name must be non-empty and without spaces, e.g. \"get-url\"",
                            ));
                        }
                        options.name = Some(name);
                    }
                    "description" => {
                        let text = string(value, "description", "\"Adds two numbers.\"")?.value();
                        options.description =
                            Some(text.trim().to_owned()).filter(|d| !d.is_empty());
                    }
                    "version" => {
                        options.version = Some(string(value, "version", "\"1.2\"")?.value())
                    }
                    "tags" => options.tags = strings(value, "tags", "[\"io\", \"web\"]")?,
                    "retries" => options.retries = integer(value, "retries", "3")?,
                    "retry_delay" => {
                        spans.retry_delay = Some(span);
                        options.retry_delays_ms = match value {
                            Expr::Array(array) => array
                                .elems
                                .iter()
                                .map(|delay| duration(unwrap_groups(delay), "retry_delay"))
                                .collect::<syn::Result<_>>()?,
                            _ => vec![duration(value, "retry_delay")?],
                        };
                    }
                    "retry_backoff" => {
                        let base = duration(value, "retry_backoff")?;
                        if base == 0 {
                            return Err(syn::Error::new(
                                span,
                                "`retry_backoff` must be longer than 0",
                            ));
                        }
                        spans.retry_backoff = Some(span);
                        options.retry_backoff_ms = Some((base, None));
                    }
                    "retry_backoff_max" => {
                        backoff_max = Some((duration(value, "retry_backoff_max")?, span));
                    }
                    "retry_jitter" => {
                        let factor = number(value, "retry_jitter", "0.5")?;
                        if !factor.is_finite() || factor < 0.0 {
                            return Err(syn::Error::new(
                                span,
                                "`retry_jitter` must not be negative",
                            ));
                        }
                        options.retry_jitter = Some(factor);
                    }
                    "timeout" => {
                        let timeout = duration(value, "timeout")?;
                        if timeout == 0 {
                            return Err(syn::Error::new(span, "`timeout` must be longer than 0"));
                        }
                        options.timeout_ms = Some(timeout);
                    }
                    "cache" => {
                        spans.cache = Some(span);
                        let policy = string(value, "cache", "\"inputs\"")?;
                        options.cache = match policy.value().as_str() {
                            "none" => Cache::None,
                            "inputs" => Cache::Inputs,
                            other => {
                                return Err(syn::Error::new(
                                    span,
                                    format!(
                                        "unknown cache policy `{other}`; expected \"none\" or \"inputs\" \
                                         (for a key of your own, use `cache_key = path::to::function`)"
                                    ),
                                ));
                            }
                        };
                    }
                    "cache_key" => {
                        if !matches!(value, Expr::Path(_) | Expr::Closure(_)) {
                            return Err(syn::Error::new(
                                span,
                                "expected the path of a function \
                                 `fn(&serde_json::Value) -> Option<String>`, e.g. `cache_key = key_by_url`",
                            ));
                        }
                        spans.cache_key = Some(span);
                        options.cache = Cache::CustomKey(value.clone());
                    }
                    "cache_expiration" => {
                        let expiration = duration(value, "cache_expiration")?;
                        if expiration == 0 {
                            return Err(syn::Error::new(
                                span,
                                "`cache_expiration` must be longer than 0",
                            ));
                        }
                        spans.cache_expiration = Some(span);
                        options.cache_expiration_ms = Some(expiration);
                    }
                    "log_prints" => options.log_prints = boolean(value, "log_prints")?,
                    "needs" => {
                        let needs = strings(
                            value,
                            "needs",
                            "[\"env:API_TOKEN\", \"http:api.github.com\"]",
                        )?;
                        for need in &needs {
                            let valid = need == "http"
                                || need
                                    .strip_prefix("env:")
                                    .is_some_and(|name| !name.is_empty())
                                || need
                                    .strip_prefix("http:")
                                    .is_some_and(|host| !host.is_empty())
                                || need
                                    .strip_prefix("dir:")
                                    .is_some_and(|path| path.starts_with('/'));
                            if !valid {
                                return Err(syn::Error::new(
                                    span,
                                    format!(
                                        "`{need}` is not a need; expected `env:NAME`, `dir:/path`, `dir:/path:rw`, `http` or `http:HOST`"
                                    ),
                                ));
                            }
                        }
                        options.needs = needs;
                    }
                    "run_name" => {
                        options.run_name = Some(string(value, "run_name", "\"fetch-{url}\"")?)
                    }
                    _ => unreachable!("`{key}` is in OPTIONS"),
                }
                Ok(())
            })();
            if let Err(error) = result {
                errors.push(error);
            }
        }

        // Options that only make sense together.
        if let Some((max, span)) = backoff_max {
            match &mut options.retry_backoff_ms {
                None => errors.push(syn::Error::new(
                    span,
                    "`retry_backoff_max` caps `retry_backoff`, which is not given",
                )),
                Some((base, _)) if max < *base => errors.push(syn::Error::new(
                    span,
                    "`retry_backoff_max` is shorter than `retry_backoff`",
                )),
                Some((_, cap)) => *cap = Some(max),
            }
        }
        if let (Some(_), Some(span)) = (spans.retry_backoff, spans.retry_delay) {
            errors.push(syn::Error::new(
                span,
                "give either `retry_delay` (fixed delays) or `retry_backoff` (exponential delays), not both",
            ));
        }
        if let (Some(span), Some(_)) = (spans.cache, spans.cache_key) {
            errors.push(syn::Error::new(
                span,
                "`cache_key` already sets the cache policy; remove `cache`",
            ));
        }
        if let (Some(span), Cache::None) = (spans.cache_expiration, &options.cache) {
            errors.push(syn::Error::new(
                span,
                "`cache_expiration` needs `cache = \"inputs\"` or `cache_key = ...`",
            ));
        }
        errors.finish()?;
        Ok(options)
    }
}

/// Where some options were written, for errors about combinations.
#[derive(Default)]
struct Spans {
    retry_delay: Option<Span>,
    retry_backoff: Option<Span>,
    cache: Option<Span>,
    cache_key: Option<Span>,
    cache_expiration: Option<Span>,
}

/// Several errors reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn path_text(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// Values passed through `macro_rules!` arrive wrapped in invisible groups.
fn unwrap_groups(mut expr: &Expr) -> &Expr {
    loop {
        match expr {
            Expr::Group(group) => expr = &group.expr,
            Expr::Paren(paren) => expr = &paren.expr,
            _ => return expr,
        }
    }
}

fn literal(expr: &Expr) -> Option<&Lit> {
    match expr {
        Expr::Lit(lit) => Some(&lit.lit),
        _ => None,
    }
}

fn expected(expr: &Expr, what: &str, option: &str, example: &str) -> syn::Error {
    syn::Error::new_spanned(
        expr,
        format!("expected {what} for `{option}`, e.g. `{option} = {example}`"),
    )
}

fn string(expr: &Expr, option: &str, example: &str) -> syn::Result<LitStr> {
    match literal(expr) {
        Some(Lit::Str(lit)) => Ok(lit.clone()),
        _ => Err(expected(expr, "a string", option, example)),
    }
}

fn strings(expr: &Expr, option: &str, example: &str) -> syn::Result<Vec<String>> {
    match expr {
        Expr::Array(array) => array
            .elems
            .iter()
            .map(|element| Ok(string(unwrap_groups(element), option, example)?.value()))
            .collect(),
        _ => Ok(vec![string(expr, option, example)?.value()]),
    }
}

fn integer(expr: &Expr, option: &str, example: &str) -> syn::Result<u32> {
    if let Some(error) = negative(expr, option) {
        return Err(error);
    }
    match literal(expr) {
        Some(Lit::Int(lit)) => lit.base10_parse(),
        _ => Err(expected(expr, "a whole number", option, example)),
    }
}

fn number(expr: &Expr, option: &str, example: &str) -> syn::Result<f64> {
    if let Some(error) = negative(expr, option) {
        return Err(error);
    }
    match literal(expr) {
        Some(Lit::Int(lit)) => lit.base10_parse(),
        Some(Lit::Float(lit)) => lit.base10_parse(),
        _ => Err(expected(expr, "a number", option, example)),
    }
}

fn boolean(expr: &Expr, option: &str) -> syn::Result<bool> {
    match literal(expr) {
        Some(Lit::Bool(lit)) => Ok(lit.value),
        _ => Err(expected(expr, "`true` or `false`", option, "false")),
    }
}

fn negative(expr: &Expr, option: &str) -> Option<syn::Error> {
    let is_negative = match expr {
        Expr::Unary(unary) => matches!(unary.op, UnOp::Neg(_)),
        // `quote!(-1)` and some macro expansions make one negative literal.
        Expr::Lit(lit) => match &lit.lit {
            Lit::Int(int) => int.base10_digits().starts_with('-'),
            Lit::Float(float) => float.base10_digits().starts_with('-'),
            _ => false,
        },
        _ => false,
    };
    is_negative.then(|| syn::Error::new_spanned(expr, format!("`{option}` must not be negative")))
}

/// A duration in milliseconds: a string such as `"30s"`, or a number of seconds.
fn duration(expr: &Expr, option: &str) -> syn::Result<u64> {
    if let Some(error) = negative(expr, option) {
        return Err(error);
    }
    match literal(expr) {
        Some(Lit::Str(lit)) => parse_duration(&lit.value()).map_err(|reason| {
            syn::Error::new(
                lit.span(),
                format!(
                    "invalid duration `{}` for `{option}`: {reason}",
                    lit.value()
                ),
            )
        }),
        Some(Lit::Int(lit)) => seconds_to_ms(lit.base10_parse::<u64>()? as f64)
            .map_err(|reason| syn::Error::new(lit.span(), reason)),
        Some(Lit::Float(lit)) => {
            seconds_to_ms(lit.base10_parse()?).map_err(|reason| syn::Error::new(lit.span(), reason))
        }
        _ => Err(syn::Error::new_spanned(
            expr,
            format!(
                "expected a duration for `{option}`: a number of seconds, or a string with \
                 {}",
                EXPECTED.trim_start_matches("expected ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn error(attr: TokenStream) -> String {
        match Options::parse(attr) {
            Ok(_) => panic!("expected an error"),
            Err(error) => error
                .into_iter()
                .map(|error| error.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    #[test]
    fn parses_every_option() {
        let options = Options::parse(quote! {
            name = "sum", description = "  Sums.  ", version = "1.2", tags = ["math", "demo"],
            retries = 3, retry_delay = [1, 2.5, "500ms"], retry_jitter = 0.5, timeout = "1m30s",
            cache = "inputs", cache_expiration = 3600, log_prints = false, run_name = "sum-{a}",
        })
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(options.name.unwrap().value(), "sum");
        assert_eq!(options.description.as_deref(), Some("Sums."));
        assert_eq!(options.version.as_deref(), Some("1.2"));
        assert_eq!(options.tags, ["math", "demo"]);
        assert_eq!(options.retries, 3);
        assert_eq!(options.retry_delays_ms, [1_000, 2_500, 500]);
        assert_eq!(options.retry_jitter, Some(0.5));
        assert_eq!(options.timeout_ms, Some(90_000));
        assert!(matches!(options.cache, Cache::Inputs));
        assert_eq!(options.cache_expiration_ms, Some(3_600_000));
        assert!(!options.log_prints);
        assert_eq!(options.run_name.unwrap().value(), "sum-{a}");
    }

    #[test]
    fn defaults() {
        let options = Options::parse(TokenStream::new()).unwrap_or_else(|error| panic!("{error}"));
        assert!(options.log_prints);
        assert_eq!(options.retries, 0);
        assert!(options.retry_delays_ms.is_empty());
        assert!(matches!(options.cache, Cache::None));
    }

    #[test]
    fn backoff_and_custom_key() {
        let options = Options::parse(quote! {
            retry_backoff = "1s", retry_backoff_max = "1m", retry_delay = 0,
        });
        assert!(options.is_err());
        let options = Options::parse(quote! {
            retry_backoff = "1s", retry_backoff_max = "1m", cache_key = key, cache_expiration = "1d",
        })
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(options.retry_backoff_ms, Some((1_000, Some(60_000))));
        assert!(matches!(options.cache, Cache::CustomKey(_)));
        assert_eq!(options.cache_expiration_ms, Some(86_400_000));
    }

    #[test]
    fn unknown_options_are_named() {
        assert!(
            error(quote!(retrys = 3))
                .starts_with("unknown option `retrys`; expected one of `name`, `description`")
        );
        assert_eq!(
            error(quote!(retries = 3, retries = 4)),
            "option `retries` is given twice"
        );
        assert_eq!(
            error(quote!(log_prints)),
            "option `log_prints` needs a value: `log_prints = ...`"
        );
    }

    #[test]
    fn malformed_values_are_explained() {
        assert!(
            error(quote!(timeout = "3x"))
                .starts_with("invalid duration `3x` for `timeout`: unknown unit `x`")
        );
        assert_eq!(
            error(quote!(timeout = 0)),
            "`timeout` must be longer than 0"
        );
        assert_eq!(
            error(quote!(retries = -1)),
            "`retries` must not be negative"
        );
        assert_eq!(
            error(quote!(retries = "3")),
            "expected a whole number for `retries`, e.g. `retries = 3`"
        );
        assert_eq!(
            error(quote!(retry_delay = [1, -2])),
            "`retry_delay` must not be negative"
        );
        assert!(error(quote!(cache = "always")).starts_with("unknown cache policy `always`"));
        assert_eq!(
            error(quote!(log_prints = 1)),
            "expected `true` or `false` for `log_prints`, e.g. `log_prints = false`"
        );
        assert!(error(quote!(cache_key = "id")).starts_with("expected the path of a function"));
        assert_eq!(
            error(quote!(name = "get url")),
            "a task name must be non-empty and without spaces, e.g. \"get-url\""
        );
    }

    #[test]
    fn conflicting_options_are_errors() {
        assert_eq!(
            error(quote!(retry_backoff_max = "1m")),
            "`retry_backoff_max` caps `retry_backoff`, which is not given"
        );
        assert_eq!(
            error(quote!(retry_backoff = "1m", retry_backoff_max = "1s")),
            "`retry_backoff_max` is shorter than `retry_backoff`"
        );
        assert_eq!(
            error(quote!(cache = "inputs", cache_key = key)),
            "`cache_key` already sets the cache policy; remove `cache`"
        );
        assert_eq!(
            error(quote!(cache_expiration = "1h")),
            "`cache_expiration` needs `cache = \"inputs\"` or `cache_key = ...`"
        );
    }

    #[test]
    fn every_error_is_reported() {
        assert_eq!(error(quote!(retrys = 3, timeout = "3x")).lines().count(), 2);
    }

    #[test]
    fn needs_are_checked() {
        let options = Options::parse(quote!(
            needs = ["env:TOKEN", "dir:/data:rw", "http", "http:api.github.com"]
        ))
        .unwrap();
        assert_eq!(
            options.needs,
            ["env:TOKEN", "dir:/data:rw", "http", "http:api.github.com"]
        );
        assert_eq!(
            error(quote!(needs = ["disk:/x"])),
            "`disk:/x` is not a need; expected `env:NAME`, `dir:/path`, `dir:/path:rw`, `http` or `http:HOST`"
        );
        assert!(error(quote!(needs = ["dir:relative"])).contains("is not a need"));
    }
}
