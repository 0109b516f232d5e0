//! The per-attempt store data: a WASI context with no authority, the memory limiter,
//! the run context and the attempt's log.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};
use weir_core::{DirGrant, HttpGrant, LogLevel, RunContext};

use crate::bindings::{WitLogLevel, WitRunContext, weir::task::host};
use crate::output::{AttemptLog, CapturedOutput, Stream};

/// Data of one wasmtime `Store`: lives exactly as long as one attempt.
/// The most bytes of one set of HTTP header fields a task may build or receive.
pub const HTTP_FIELDS_LIMIT_BYTES: usize = 64 << 10;

/// The most host resources (handles) an attempt may hold at once: one per 256 KiB of
/// its memory limit (1,024 at the default 256 MiB), so that header sets of at most
/// [`HTTP_FIELDS_LIMIT_BYTES`] each keep host memory within a quarter of the limit.
pub fn resource_limit(memory_limit_bytes: u64) -> usize {
    (memory_limit_bytes / (256 << 10)).clamp(256, 16_384) as usize
}

pub(crate) struct AttemptState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_policy: HttpPolicy,
    pub(crate) limiter: MemoryLimiter,
    context: RunContext,
    pub(crate) log: Arc<AttemptLog>,
}

impl AttemptState {
    /// Builds the store data; fails (with a message naming it) when a granted directory
    /// cannot be opened.
    pub(crate) fn new(
        context: RunContext,
        log: Arc<AttemptLog>,
        memory_limit_bytes: u64,
        dirs: &[DirGrant],
        env: &[(String, String)],
        http: &[HttpGrant],
        max_http_response_bytes: usize,
    ) -> Result<Self, String> {
        // Everything is denied unless granted: the builder's defaults have no preopens, no
        // environment, no arguments and a closed stdin; the socket switches are turned off
        // explicitly so that a later default change cannot open the network.
        let mut builder = WasiCtx::builder();
        builder
            .stdout(CapturedOutput::new(log.clone(), Stream::Stdout))
            .stderr(CapturedOutput::new(log.clone(), Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        // Granted directories are opened with cap-std: paths are resolved beneath the
        // directory, so `..` and symlinks cannot lead out of it.
        for dir in dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|error| {
                    format!(
                        "could not grant the directory {} (as {}): {error:#}",
                        dir.host.display(),
                        dir.guest
                    )
                })?;
        }
        for (name, value) in env {
            builder.env(name, value);
        }
        // Host-side state a guest can make the host hold (resources: header sets,
        // streams, …) is bounded per attempt by its memory limit, not only its memory.
        let mut table = ResourceTable::new();
        table.set_max_capacity(resource_limit(memory_limit_bytes));
        let mut http_ctx = WasiHttpCtx::new();
        http_ctx.set_field_size_limit(HTTP_FIELDS_LIMIT_BYTES);
        Ok(AttemptState {
            wasi: builder.build(),
            table,
            http: http_ctx,
            http_policy: HttpPolicy {
                granted: http.to_vec(),
                log: log.clone(),
                max_response_bytes: max_http_response_bytes,
            },
            limiter: MemoryLimiter::new(memory_limit_bytes),
            context,
            log,
        })
    }
}

impl WasiView for AttemptState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for AttemptState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.http_policy,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

/// Outgoing HTTP: only to granted hosts, with timeouts. A refused request fails inside
/// the guest (`HTTP request denied`) and the run's log says which host was refused.
pub(crate) struct HttpPolicy {
    granted: Vec<HttpGrant>,
    log: Arc<AttemptLog>,
    /// The largest response body the task may receive.
    max_response_bytes: usize,
}

type HttpFuture<T> = Box<dyn Future<Output = wasmtime_wasi_http::Result<T>> + Send>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        response_done: HttpFuture<()>,
    ) -> HttpFuture<(http::Response<WasiBody>, HttpFuture<()>)> {
        drop(response_done);
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        if !self
            .granted
            .iter()
            .any(|grant| grant.matches(&scheme, &host, port))
        {
            self.log.log(
                LogLevel::Warning,
                &format!(
                    "refused an HTTP request to {scheme}://{host}:{port}: this host is not granted to the task (grant it with --allow-http or `http = [...]`)"
                ),
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        // Bounded waits: a server that never answers costs a timeout, not a hang.
        let options = Some(options.unwrap_or(RequestOptions {
            connect_timeout: Some(Duration::from_secs(10)),
            first_byte_timeout: Some(Duration::from_secs(30)),
            between_bytes_timeout: Some(Duration::from_secs(30)),
        }));
        let limit = self.max_response_bytes;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            // A response body larger than the bound fails the read inside the guest.
            let response = response.map(move |body| {
                http_body_util::Limited::new(body, limit)
                    .map_err(move |_| {
                        wasmtime_wasi_http::Error::HttpResponseBodySize(Some(limit as u64))
                    })
                    .boxed_unsync()
            });
            Ok((response, Box::new(io) as HttpFuture<()>))
        })
    }
}

impl host::Host for AttemptState {
    fn log(&mut self, level: WitLogLevel, message: String) {
        let level = match level {
            WitLogLevel::Trace => LogLevel::Trace,
            WitLogLevel::Debug => LogLevel::Debug,
            WitLogLevel::Info => LogLevel::Info,
            WitLogLevel::Warning => LogLevel::Warning,
            WitLogLevel::Error => LogLevel::Error,
        };
        self.log.log(level, &message);
    }

    fn context(&mut self) -> WitRunContext {
        let context = &self.context;
        WitRunContext {
            flow_run_id: context.flow_run_id.clone(),
            flow_run_name: context.flow_run_name.clone(),
            task_run_id: context.task_run_id.clone(),
            task_run_name: context.task_run_name.clone(),
            task_name: context.task_name.clone(),
            attempt: context.attempt,
            tags: context.tags.clone(),
            parameters: context.parameters.to_string(),
        }
    }
}

impl crate::bindings::weir::task::types::Host for AttemptState {}

/// Bounds the linear memory of one attempt (summed over all its memories) and
/// remembers a refused growth, so that the crash it causes can be explained.
pub(crate) struct MemoryLimiter {
    limit_bytes: u64,
    /// Bytes currently allocated per memory are not tracked individually; the sum of
    /// growths is, which is what the limit bounds.
    used_bytes: u64,
    pub(crate) refused_growth_to: Option<u64>,
}

impl MemoryLimiter {
    fn new(limit_bytes: u64) -> Self {
        MemoryLimiter {
            limit_bytes,
            used_bytes: 0,
            refused_growth_to: None,
        }
    }

    pub(crate) fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = (desired - current) as u64;
        let total = self.used_bytes + growth;
        if total > self.limit_bytes {
            self.refused_growth_to = Some(total);
            return Ok(false);
        }
        self.used_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond any real plugin.
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        1000
    }

    fn tables(&self) -> usize {
        1000
    }

    fn memories(&self) -> usize {
        100
    }
}
