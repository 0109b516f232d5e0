//! The per-attempt store data: a WASI context with no authority, the memory limiter,
//! the run context and the attempt's log.

use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use weir_core::{DirGrant, LogLevel, RunContext};

use crate::bindings::{WitLogLevel, WitRunContext, weir::task::host};
use crate::output::{AttemptLog, CapturedOutput, Stream};

/// Data of one wasmtime `Store`: lives exactly as long as one attempt.
pub(crate) struct AttemptState {
    wasi: WasiCtx,
    table: ResourceTable,
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
        Ok(AttemptState {
            wasi: builder.build(),
            table: ResourceTable::new(),
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
