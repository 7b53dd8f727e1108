//! Logging set-up (tracing, text or JSON), filtered by `RUST_LOG` (default `info`).
//!
//! One-shot commands write each line to stderr as it happens, so their lines and their final
//! `error:` line come out in order. `serve` hands its lines to a writer thread instead
//! ([`init_serving`]): an admission then costs the formatting of its line, not a write
//! system call on the request's worker, and a stalled log pipe (a full container runtime
//! buffer) cannot stall admissions. That queue is bounded; a line that finds it full is
//! dropped and counted (`pullsecret_injector_log_lines_dropped_total`), never waited for.

use std::io::{BufWriter, IsTerminal};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::cli::LogFormat;

/// Lines `serve` may have queued for the writer thread at once: a few seconds of admissions
/// at full speed, about 1 MiB of memory at the most.
const QUEUED_LINES: usize = 4096;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Logging for the one-shot commands; `default_filter` applies when `RUST_LOG` is not set.
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    install(format, default_filter, std::io::stderr);
}

/// Logging for `serve`: lines go to stderr through a bounded queue and a writer thread that
/// writes them in batches. Keep the guard until the process ends: dropping it writes out what
/// is still queued.
pub fn init_serving(format: LogFormat, default_filter: &str) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        // The writer thread flushes whenever its queue runs empty: under load lines leave in
        // batches, when idle each at once.
        .finish(BufWriter::new(std::io::stderr()));
    let _ = DROPPED.set(writer.error_counter());
    install(format, default_filter, writer);
    guard
}

/// Log lines dropped because the writer thread's queue was full (0 outside `serve`).
pub(crate) fn dropped_log_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

fn install<W>(format: LogFormat, default_filter: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        // Colours only for a person at a terminal, never in collected logs.
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(writer),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    // The span list would repeat the current span's fields in every line.
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .init(),
    }
}
