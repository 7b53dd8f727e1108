//! The request guard in front of every handler on the webhook port: it reads the body itself,
//! so that what a client sends is bounded in size (413), in time (408) and, across all
//! connections, in memory (a budget of bytes); then it runs the handler with bounded
//! concurrency, large bodies off the async workers.
//!
//! Refusals carry the same JSON body as every other error (`{"error": "..."}`), are logged once
//! and counted in `pullsecret_injector_admission_requests_total{result}`. Before a 413 the rest
//! of the body is read and thrown away (up to a bound): a client still writing its body when
//! the server closes gets a reset, not the answer (Go's client reports `broken pipe`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{Limits, MAX_BODY_BYTES};
use crate::metrics::Metrics;

/// Bodies at least this large are decided on the blocking pool, so that decoding them does not
/// hold an async worker (and the connections it drives) for long.
const OFFLOAD_BYTES: usize = 64 * 1024;
/// How much of an oversized body is read and dropped so that the client sees the 413.
const DRAIN_BYTES: u64 = 16 * 1024 * 1024;
/// How long a request waits for a review slot before it is answered 503.
const QUEUE_WAIT: Duration = Duration::from_secs(2);
/// A review takes one slot per this many body bytes (at least one, at most all): decoding
/// takes tens of times the body's size in memory, so large reviews must not run side by side
/// as many as small ones.
const BYTES_PER_SLOT: usize = 64 * 1024;
/// Bodies up to this size (every ordinary Pod review) may also draw on [`SMALL_RESERVE_BYTES`].
const SMALL_BODY_BYTES: usize = 64 * 1024;
/// Memory kept aside for small bodies, on top of `--max-body-memory`: clients that hold large
/// bodies open until the read timeout can fill the shared budget, but not this, so ordinary
/// reviews are still answered while they do (32 small bodies at their largest).
const SMALL_RESERVE_BYTES: usize = 32 * SMALL_BODY_BYTES;

/// Review slots a body of `len` bytes takes out of `slots`.
fn review_weight(len: usize, slots: u32) -> u32 {
    let wanted = u32::try_from(len.div_ceil(BYTES_PER_SLOT)).unwrap_or(u32::MAX);
    wanted.clamp(1, slots.max(1))
}

pub(crate) struct Guard {
    body_read_timeout: Duration,
    /// One permit per byte of request body held in memory.
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    /// One permit per byte of a small body held in memory when `budget` had no room.
    small_reserve: Arc<Semaphore>,
    reviews: Arc<Semaphore>,
    review_slots: u32,
    metrics: Arc<Metrics>,
}

impl Guard {
    pub(crate) fn new(limits: &Limits, metrics: Arc<Metrics>) -> Self {
        // A budget below one full body would refuse requests the API server may send.
        let budget_bytes = limits.body_memory.max(MAX_BODY_BYTES);
        let review_slots = u32::try_from(limits.max_concurrent_reviews.max(1)).unwrap_or(u32::MAX);
        Self {
            body_read_timeout: limits.body_read_timeout,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            small_reserve: Arc::new(Semaphore::new(SMALL_RESERVE_BYTES)),
            reviews: Arc::new(Semaphore::new(review_slots as usize)),
            review_slots,
            metrics,
        }
    }

    fn refuse(&self, status: StatusCode, result: &'static str, message: String) -> Response {
        self.metrics.request(result);
        let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
        let mut response =
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }

    fn update_gauge(&self) {
        let held = self.budget_bytes - self.budget.available_permits() + SMALL_RESERVE_BYTES
            - self.small_reserve.available_permits();
        self.metrics
            .body_bytes_in_memory
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }
}

/// Budget permits that keep the gauge current when they are given back.
struct Held<'a> {
    guard: &'a Guard,
    /// From the shared budget.
    shared: Option<OwnedSemaphorePermit>,
    /// From the small-body reserve (permits of two semaphores cannot be merged).
    reserve: Option<OwnedSemaphorePermit>,
}

/// Where a reservation came from.
enum Lane {
    Shared,
    Reserve,
}

impl Held<'_> {
    fn add(&mut self, (lane, more): (Lane, OwnedSemaphorePermit)) {
        let slot = match lane {
            Lane::Shared => &mut self.shared,
            Lane::Reserve => &mut self.reserve,
        };
        match slot {
            Some(permit) => permit.merge(more),
            None => *slot = Some(more),
        }
        self.guard.update_gauge();
    }

    /// Bytes reserved so far.
    fn reserved(&self) -> usize {
        [&self.shared, &self.reserve]
            .iter()
            .filter_map(|p| p.as_ref())
            .map(|p| p.num_permits())
            .sum()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        drop(self.shared.take());
        drop(self.reserve.take());
        self.guard.update_gauge();
    }
}

enum Read {
    Complete(Bytes),
    TooLarge,
    TimedOut,
    NoBudget,
    Broken,
}

pub(crate) async fn guard(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let deadline = Instant::now() + guard.body_read_timeout;
    let (parts, body) = req.into_parts();
    let http1 = parts.version < Version::HTTP_2;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let protocol = if http1 { "http/1.1" } else { "h2" };
    let mut stream = body.into_data_stream();

    let mut held = Held {
        guard: &guard,
        shared: None,
        reserve: None,
    };
    let outcome = if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        Read::TooLarge
    } else {
        read(&guard, &mut held, &mut stream, declared, deadline).await
    };
    let bytes = match outcome {
        Read::Complete(bytes) => bytes,
        Read::TooLarge => {
            drop(held);
            tracing::warn!(
                protocol,
                declared,
                limit = MAX_BODY_BYTES,
                "request body over the limit; answered 413"
            );
            let expects_continue = parts
                .headers
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            // A client waiting for 100 Continue has sent nothing; anyone else is told after the
            // rest of the body is read, so that it is not writing into a closed connection.
            let drained = expects_continue || drain(&mut stream, deadline).await;
            let mut response = guard.refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            );
            if http1 && !drained {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return response;
        }
        Read::TimedOut => {
            drop(held);
            tracing::warn!(protocol, timeout = ?guard.body_read_timeout, "request body not complete in time; answered 408");
            let mut response = guard.refuse(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "request body not complete within {:?}",
                    guard.body_read_timeout
                ),
            );
            if http1 {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return response;
        }
        Read::NoBudget => {
            drop(held);
            tracing::warn!(
                protocol,
                budget = guard.budget_bytes,
                "request body memory budget exhausted; answered 503"
            );
            return guard.refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many request bodies in memory; try again".into(),
            );
        }
        Read::Broken => {
            // The client broke off or sent a malformed body; nobody is left to read an answer.
            return guard.refuse(
                StatusCode::BAD_REQUEST,
                "invalid",
                "request body could not be read".into(),
            );
        }
    };

    let weight = review_weight(bytes.len(), guard.review_slots);
    let reviews = guard.reviews.clone();
    let slot = match tokio::time::timeout(QUEUE_WAIT, reviews.acquire_many_owned(weight)).await {
        Ok(Ok(slot)) => slot,
        _ => {
            tracing::warn!(
                protocol,
                wait = ?QUEUE_WAIT,
                "all review slots busy; answered 503"
            );
            return guard.refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many reviews in progress; try again".into(),
            );
        }
    };
    let len = bytes.len();
    let req = Request::from_parts(parts, Body::from(bytes));
    let response = if len >= OFFLOAD_BYTES {
        let runtime = tokio::runtime::Handle::current();
        match tokio::task::spawn_blocking(move || runtime.block_on(next.run(req))).await {
            Ok(response) => response,
            Err(e) => {
                tracing::error!(error = %e, "review task failed");
                guard.refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "error",
                    "internal error".into(),
                )
            }
        }
    } else {
        next.run(req).await
    };
    // The body's memory is given back only now: decoding it is what it was reserved for.
    drop(slot);
    drop(held);
    response
}

async fn read(
    guard: &Guard,
    held: &mut Held<'_>,
    stream: &mut axum::body::BodyDataStream,
    declared: Option<u64>,
    deadline: Instant,
) -> Read {
    // `total` is the body's size once these `n` bytes are in: small bodies may use the reserve.
    let acquire = |n: usize, total: usize| {
        let budget = guard.budget.clone();
        let reserve = guard.small_reserve.clone();
        async move {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            // Taken at once when free, past the queue: a small body must not wait behind a
            // large one that waits for room (the semaphore is first come, first served).
            if let Ok(permit) = budget.clone().try_acquire_many_owned(n) {
                return Ok(Ok((Lane::Shared, permit)));
            }
            if total <= SMALL_BODY_BYTES {
                return tokio::time::timeout_at(deadline, reserve.acquire_many_owned(n))
                    .await
                    .map(|r| r.map(|p| (Lane::Reserve, p)));
            }
            tokio::time::timeout_at(deadline, budget.acquire_many_owned(n))
                .await
                .map(|r| r.map(|p| (Lane::Shared, p)))
        }
    };
    // A declared length is reserved at once: that much is allocated for it.
    let mut buf = Vec::new();
    if let Some(n) = declared.filter(|n| *n > 0) {
        let n = n as usize;
        match acquire(n, n).await {
            Ok(Ok(permit)) => held.add(permit),
            Err(_) => return Read::NoBudget,
            Ok(Err(_)) => return Read::Broken,
        }
        buf.reserve_exact(n);
    }
    loop {
        let frame = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Read::TimedOut,
            Ok(None) => break,
            Ok(Some(Err(_))) => return Read::Broken,
            Ok(Some(Ok(frame))) => frame,
        };
        if buf.len() + frame.len() > MAX_BODY_BYTES {
            return Read::TooLarge;
        }
        let total = buf.len() + frame.len();
        let needed = total.saturating_sub(held.reserved());
        if needed > 0 {
            match acquire(needed, total).await {
                Ok(Ok(permit)) => held.add(permit),
                Err(_) => return Read::NoBudget,
                Ok(Err(_)) => return Read::Broken,
            }
        }
        buf.extend_from_slice(&frame);
    }
    Read::Complete(Bytes::from(buf))
}

/// Reads and drops the rest of a body, up to `DRAIN_BYTES` and `deadline`. `true` when the body
/// ended.
async fn drain(stream: &mut axum::body::BodyDataStream, deadline: Instant) -> bool {
    let mut seen = 0u64;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                seen += frame.len() as u64;
                if seen > DRAIN_BYTES {
                    return false;
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_reviews_take_more_slots() {
        assert_eq!(review_weight(0, 8), 1);
        assert_eq!(review_weight(2_000, 8), 1);
        assert_eq!(review_weight(425_000, 8), 7);
        assert_eq!(review_weight(MAX_BODY_BYTES, 8), 8);
        assert_eq!(review_weight(MAX_BODY_BYTES, 1), 1);
    }
}
