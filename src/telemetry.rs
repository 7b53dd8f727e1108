//! Logging set-up (tracing, text or JSON), filtered by `RUST_LOG` (default `info`).
//!
//! One-shot commands write each line to stderr as it happens, so their lines and their final
//! `error:` line come out in order. `serve` appends its lines to a bounded buffer instead, and
//! one writer thread writes what gathered there in batches ([`init_serving`]): an admission
//! then costs the formatting of its line and a copy, not a system call, an allocation or a
//! thread wake-up, and a stalled log pipe (a full container runtime buffer) cannot stall
//! admissions. A line that finds the buffer full is dropped and counted
//! (`pullsecret_injector_log_lines_dropped_total`), never waited for.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::cli::LogFormat;

/// Bytes of log lines `serve` holds for the writer thread at once: about 2,000 lines, a
/// fifth of a second of admissions at full speed.
const QUEUE_BYTES: usize = 512 * 1024;
/// How long the writer thread lets lines gather after the first one, unless the buffer is
/// half full first: lines reach stderr at most this late.
const BATCH_WAIT: Duration = Duration::from_millis(20);
/// How long the end of `serve` waits for the last lines to be written.
const FINAL_WAIT: Duration = Duration::from_secs(1);

/// `serve`'s log buffer, read by the dropped-lines metric.
static QUEUE: OnceLock<Arc<LogQueue>> = OnceLock::new();

/// Logging for the one-shot commands; `default_filter` applies when `RUST_LOG` is not set.
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    install(format, default_filter, std::io::stderr);
}

/// Logging for `serve`: lines go to stderr through a bounded buffer and a writer thread that
/// writes them in batches. Keep the guard until the process ends: dropping it writes out what
/// is still buffered.
pub fn init_serving(format: LogFormat, default_filter: &str) -> LogGuard {
    let (queue, guard) = LogQueue::start(std::io::stderr());
    let _ = QUEUE.set(queue.clone());
    install(format, default_filter, QueueWriter(queue));
    guard
}

/// Log lines dropped because the buffer was full (0 outside `serve`).
pub(crate) fn dropped_log_lines() -> u64 {
    QUEUE
        .get()
        .map_or(0, |queue| queue.dropped.load(Ordering::Relaxed))
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// Set by [`LogGuard`]'s drop: write what is left and stop.
    closing: bool,
    /// Set by the writer thread when it has written everything after `closing`.
    done: bool,
}

/// Lines formatted by the threads that log, waiting for the writer thread.
struct LogQueue {
    pending: Mutex<Pending>,
    /// The writer thread waits here for lines (and, in a batch, for more or for half full).
    wake: Condvar,
    /// [`LogGuard`] waits here for the last batch.
    written: Condvar,
    dropped: AtomicU64,
}

impl LogQueue {
    fn start<W: Write + Send + 'static>(out: W) -> (Arc<Self>, LogGuard) {
        let queue = Arc::new(LogQueue {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            written: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let writer = queue.clone();
        // Without a writer thread the lines are dropped and counted: serving goes on.
        let _ = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.write_out(out));
        (queue.clone(), LogGuard(queue))
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one formatted line (the fmt layer writes each line with one call).
    fn push(&self, line: &[u8]) {
        let mut pending = self.lock();
        if pending.lines.len() + line.len() > QUEUE_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let was_empty = pending.lines.is_empty();
        pending.lines.extend_from_slice(line);
        let half_full = pending.lines.len() >= QUEUE_BYTES / 2;
        drop(pending);
        // One wake-up per batch: when it starts, and early when the buffer is filling up.
        if was_empty || half_full {
            self.wake.notify_one();
        }
    }

    /// The writer thread: waits for a line, lets a batch gather, writes it with one call.
    fn write_out<W: Write>(&self, mut out: W) {
        let mut batch = Vec::new();
        loop {
            let mut pending = self.lock();
            while pending.lines.is_empty() && !pending.closing {
                pending = self.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
            }
            if !pending.closing && pending.lines.len() < QUEUE_BYTES / 2 {
                pending = self
                    .wake
                    .wait_timeout(pending, BATCH_WAIT)
                    .map_or_else(|e| e.into_inner().0, |(p, _)| p);
            }
            std::mem::swap(&mut batch, &mut pending.lines);
            let closing = pending.closing;
            drop(pending);
            // A failed write loses this batch, not the next ones.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            if closing {
                // Checked and marked under one lock: a line that comes after the check is
                // written by the next round, never left behind a thread that says it is done.
                let mut pending = self.lock();
                if pending.lines.is_empty() {
                    pending.done = true;
                    drop(pending);
                    self.written.notify_all();
                    return;
                }
            }
        }
    }
}

/// Writes out the buffered lines when dropped (waiting at most [`FINAL_WAIT`]: a stalled
/// stderr must not keep the process from ending).
pub struct LogGuard(Arc<LogQueue>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        let mut pending = self.0.lock();
        pending.closing = true;
        self.0.wake.notify_one();
        let _ = self
            .0
            .written
            .wait_timeout_while(pending, FINAL_WAIT, |p| !p.done);
    }
}

/// What the fmt layer writes each line into.
struct QueueWriter(Arc<LogQueue>);

/// One line's writer, borrowed from [`QueueWriter`].
struct QueueLine<'a>(&'a LogQueue);

impl Write for QueueLine<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = QueueLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        QueueLine(&self.0)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Collects what the writer thread writes; each write first waits for a go from `gate`,
    /// when there is one.
    struct Sink {
        out: Arc<Mutex<Vec<u8>>>,
        gate: Option<mpsc::Receiver<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Some(gate) = &self.gate {
                let _ = gate.recv();
            }
            self.out.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(i: usize) -> String {
        format!("line {i:06} {}\n", "x".repeat(200))
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_by_the_end() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (queue, guard) = LogQueue::start(Sink {
            out: out.clone(),
            gate: None,
        });
        // Fewer bytes than the buffer holds: none can be dropped, however slow the writer.
        let lines: Vec<String> = (0..2000).map(line).collect();
        assert!(lines.concat().len() < QUEUE_BYTES);
        for l in &lines {
            QueueLine(&queue).write_all(l.as_bytes()).unwrap();
        }
        drop(guard);
        assert_eq!(
            String::from_utf8(out.lock().unwrap().clone()).unwrap(),
            lines.concat()
        );
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_stalled_output_costs_dropped_lines_not_a_wait() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (go, gate) = mpsc::channel();
        let (queue, guard) = LogQueue::start(Sink {
            out: out.clone(),
            gate: Some(gate),
        });
        // Three buffers' worth while the output takes nothing: at most one batch is in the
        // writer's hands and one buffer waits; the rest is dropped, and no push waits.
        let count = 3 * QUEUE_BYTES / line(0).len();
        for i in 0..count {
            QueueLine(&queue).write_all(line(i).as_bytes()).unwrap();
        }
        let dropped = queue.dropped.load(Ordering::Relaxed) as usize;
        assert!(dropped >= count / 3, "{dropped} of {count} dropped");
        // The output moves again: what was kept is written, each line whole, in order.
        for _ in 0..4 {
            let _ = go.send(());
        }
        drop(go);
        drop(guard);
        let written = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let kept: Vec<&str> = written.lines().collect();
        assert_eq!(kept.len(), count - dropped);
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "in order");
        assert!(
            kept.iter().all(|l| l.len() == line(0).len() - 1),
            "whole lines"
        );
    }
}
