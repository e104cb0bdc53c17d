//! The attempt loop: one request, tried against endpoints until one
//! answers well, the retry policy gives up, or the deadline passes.
//!
//! Before any attempt the request takes a slot in the backend's bulkhead.
//! Each attempt asks the breaker for a permit, the balancer for an
//! available endpoint (another one than the last, when there is one) and
//! the pool for a connection, with the time left written into the
//! request. Its outcome feeds the breaker and outlier detection.
//!
//! Failures before anything was sent (connect refused, a pooled
//! connection found closed) are always tried again. Other failures and
//! the retry policy's status codes are retried while attempts, the
//! backend's budget and the deadline allow, after a backoff, and only
//! when the request may be repeated: its method is idempotent or it
//! carries `Idempotency-Key`, and its body can be replayed.

pub mod backoff;
pub mod budget;
pub mod deadline;
mod grpc;
pub mod replay;
mod send;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use http::{HeaderName, Method, Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;
use vakt_api::config;

use crate::backend::breaker::Permit;
use crate::backend::bulkhead::BulkheadPermit;
use crate::backend::ejection::Ejection;
use crate::backend::outcome::{Classifier, FailureReason, Outcome};
use crate::backend::pool::PooledConn;
use crate::backend::{Backend, InFlight};
use crate::http::body::RequestBody;
use crate::respond::ProxyError;
use crate::telemetry::metrics;
use backoff::{Backoff, Jitter};
use deadline::Deadline;
pub use send::{SendError, classify};

/// Tries of one request that failed before sending anything.
const MAX_UNSENT_TRIES: usize = 4;

static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// How a request is to be tried.
pub struct Plan<'a> {
    pub retry: Option<&'a config::Retry>,
    /// `timeouts.backendRequest`.
    pub per_attempt: Option<Duration>,
    pub deadline: Option<Deadline>,
    /// Whether the request is a gRPC call.
    pub grpc: bool,
    /// Counts the attempts sent, for the request's span and log.
    pub attempts: &'a AtomicU32,
}

/// A response head from an endpoint, with what must live as long as its
/// body.
pub struct Forwarded {
    pub response: Response<Incoming>,
    /// A body frame already read, to be sent first.
    pub first: Option<http_body::Frame<bytes::Bytes>>,
    pub conn: Option<PooledConn>,
    pub in_flight: InFlight,
    pub slot: Option<BulkheadPermit>,
    /// Set when the outcome is known only from the trailers.
    pub verdict: Option<Verdict>,
    pub upstream_time: Duration,
}

/// An attempt's outcome still to be recorded.
pub struct Verdict {
    permit: Option<Permit>,
    ejection: Arc<Ejection>,
    index: usize,
    classifier: Classifier,
}

impl Verdict {
    /// Feeds `outcome` to the breaker and outlier detection.
    pub fn record(self, outcome: Outcome) {
        self.ejection.record(self.index, outcome, Instant::now());
        if let Some(p) = self.permit {
            p.record(outcome);
        }
    }

    /// The outcome trailers tell: a gRPC status, or success.
    pub fn classify_trailers(&self, trailers: &http::HeaderMap) -> Outcome {
        self.classifier
            .trailers(trailers)
            .unwrap_or(Outcome::Success)
    }
}

/// Forwards `req` to `backend` according to `plan`.
pub async fn forward(
    backend: &Arc<Backend>,
    req: Request<RequestBody>,
    plan: Plan<'_>,
) -> Result<Forwarded, ProxyError> {
    let slot = match plan.deadline {
        Some(d) => tokio::time::timeout_at(d.instant(), backend.bulkhead.acquire())
            .await
            .map_err(|_| ProxyError::Timeout)?,
        None => backend.bulkhead.acquire().await,
    }
    .map_err(|_| ProxyError::Overflow)?;
    backend.budget.deposit();
    let mut fwd = Attempts::new(backend, req, &plan).run().await?;
    fwd.slot = Some(slot);
    Ok(fwd)
}

/// The state of one request's attempts.
struct Attempts<'a> {
    backend: &'a Arc<Backend>,
    plan: &'a Plan<'a>,
    parts: http::request::Parts,
    body: Option<RequestBody>,
    /// A request handed back unsent, to go again as it is.
    unsent: Option<Request<RequestBody>>,
    retries: u32,
    unsent_tries: usize,
    fresh: bool,
    avoid: Option<usize>,
    backoff: Option<Backoff>,
    repeatable: bool,
}

impl<'a> Attempts<'a> {
    fn new(backend: &'a Arc<Backend>, req: Request<RequestBody>, plan: &'a Plan<'a>) -> Self {
        let (parts, body) = req.into_parts();
        let repeatable = idempotent(&parts.method) || parts.headers.contains_key(&IDEMPOTENCY_KEY);
        let body = match plan.retry {
            Some(r) => body.replayable(r.replay_limit_bytes as usize),
            None => body,
        };
        Self {
            backend,
            plan,
            parts,
            body: Some(body),
            unsent: None,
            retries: 0,
            unsent_tries: 0,
            fresh: false,
            avoid: None,
            backoff: plan
                .retry
                .map(|r| Backoff::new(r.backoff.get(), Jitter::Full)),
            repeatable,
        }
    }

    async fn run(&mut self) -> Result<Forwarded, ProxyError> {
        let set = self.backend.endpoints();
        loop {
            let now = Instant::now();
            if self.plan.deadline.is_some_and(|d| d.expired(now)) {
                return Err(self.timed_out());
            }
            let permit = match &self.backend.breaker {
                None => None,
                Some(b) => Some(b.try_acquire().map_err(|_| ProxyError::BreakerOpen)?),
            };
            let Some(index) = self.backend.pick(&set, self.avoid) else {
                return Err(ProxyError::NoEndpoint);
            };
            let Some(mut req) = self.next_request() else {
                return Err(ProxyError::UpstreamReset);
            };
            if let Some(d) = &self.plan.deadline {
                d.apply(req.headers_mut(), now, self.plan.grpc)
                    .map_err(|_| self.timed_out())?;
            }
            let endpoint = &set.list[index];
            let verdict = Verdict {
                permit,
                ejection: set.ejection.clone(),
                index,
                classifier: self.backend.classifier,
            };
            let end = self.attempt_end(now);
            let in_flight = endpoint.start();
            self.plan.attempts.fetch_add(1, Ordering::Relaxed);
            let sent = send::attempt(endpoint, req, self.fresh);
            let result = match end {
                Some(at) => tokio::time::timeout_at(at, sent).await.ok(),
                None => Some(sent.await),
            };
            match self.settle(result, verdict, in_flight, index, now).await? {
                Some(fwd) => return Ok(fwd),
                None => continue,
            }
        }
    }

    /// Decides what an attempt's result means: a response to return
    /// (`Some`), another attempt (`None`), or an error.
    async fn settle(
        &mut self,
        result: Option<Result<send::Sent, SendError>>,
        verdict: Verdict,
        in_flight: InFlight,
        index: usize,
        started: Instant,
    ) -> Result<Option<Forwarded>, ProxyError> {
        let (response, conn) = match result {
            None => {
                verdict.record(Outcome::Failure(FailureReason::Timeout));
                metrics::timeout(&self.backend.name);
                return self.retry_after_failure(ProxyError::Timeout, index).await;
            }
            Some(Err(SendError::Unsent(req, reason, connect))) => {
                let outcome = match connect {
                    true => Outcome::Failure(FailureReason::Connect),
                    false => Outcome::Neutral,
                };
                verdict.record(outcome);
                tracing::debug!(
                    backend = %self.backend.name,
                    %reason,
                    "request not sent; trying again"
                );
                return self.again_unsent(*req, connect, index);
            }
            Some(Err(SendError::Failed(err))) if err.is_client_fault() => {
                // Neither the upstream's failure nor worth another try.
                verdict.record(Outcome::Neutral);
                return Err(err);
            }
            Some(Err(SendError::Failed(err))) => {
                verdict.record(Outcome::Failure(FailureReason::Reset));
                return self.retry_after_failure(err, index).await;
            }
            Some(Ok(sent)) => sent,
        };
        in_flight.responded();
        let mut fwd = Forwarded {
            response,
            first: None,
            conn,
            in_flight,
            slot: None,
            verdict: None,
            upstream_time: started.elapsed(),
        };
        let outcome = grpc::settle_head(
            &mut fwd,
            verdict,
            self.can_retry(true),
            self.attempt_end(started),
        )
        .await;
        let retry = outcome.is_some_and(|o| self.retryable(&fwd, o));
        if retry && self.take_retry(true) {
            let wait = self.backoff_wait(&fwd);
            if let Some(wait) = wait {
                drop(fwd);
                self.avoid = Some(index);
                tokio::time::sleep(wait).await;
                return Ok(None);
            }
        }
        Ok(Some(fwd))
    }

    fn again_unsent(
        &mut self,
        req: Request<RequestBody>,
        connect: bool,
        index: usize,
    ) -> Result<Option<Forwarded>, ProxyError> {
        self.unsent_tries += 1;
        if self.unsent_tries >= MAX_UNSENT_TRIES {
            return Err(ProxyError::ConnectFailed);
        }
        // A refused connect goes to another endpoint, never the same one
        // again at once.
        if connect && self.unsent_tries >= self.backend.endpoints().list.len() {
            return Err(ProxyError::ConnectFailed);
        }
        if connect {
            self.avoid = Some(index);
        } else {
            self.fresh = true;
        }
        self.unsent = Some(req);
        Ok(None)
    }

    async fn retry_after_failure(
        &mut self,
        err: ProxyError,
        index: usize,
    ) -> Result<Option<Forwarded>, ProxyError> {
        if self.take_retry(false) {
            let now = Instant::now();
            let deadline = self.plan.deadline.map(|d| d.instant());
            if let Some(wait) = self
                .backoff
                .as_mut()
                .and_then(|b| b.delay(None, now, deadline))
            {
                self.avoid = Some(index);
                tokio::time::sleep(wait).await;
                return Ok(None);
            }
        }
        Err(err)
    }

    /// Whether a retry could still happen. A status the policy names may
    /// be retried for gRPC calls too (a status is an answer, as gRPC's own
    /// retry policy has it); a failure after sending only for requests
    /// that may be repeated.
    fn can_retry(&self, on_status: bool) -> bool {
        self.plan.retry.is_some_and(|r| self.retries < r.attempts)
            && (self.repeatable || (on_status && self.plan.grpc))
            && self.body.as_ref().is_some_and(|b| b.again().is_some())
    }

    /// Whether the response (or the gRPC status read ahead) asks for a
    /// retry under the policy.
    fn retryable(&self, fwd: &Forwarded, outcome: Outcome) -> bool {
        let Some(retry) = self.plan.retry else {
            return false;
        };
        let status = fwd.response.status().as_u16();
        if retry.codes.contains(&status) {
            return true;
        }
        // gRPC has no HTTP status to retry on: UNAVAILABLE stands for 503.
        outcome == Outcome::Failure(FailureReason::Grpc)
            && retry.codes.contains(&503)
            && grpc::status_of(fwd) == Some(14)
    }

    /// Spends one retry from the policy and the backend's budget.
    fn take_retry(&mut self, on_status: bool) -> bool {
        if !self.can_retry(on_status) {
            return false;
        }
        if !self.backend.budget.try_withdraw() {
            tracing::debug!(backend = %self.backend.name, "retry refused by the budget");
            return false;
        }
        self.retries += 1;
        true
    }

    fn backoff_wait(&mut self, fwd: &Forwarded) -> Option<Duration> {
        let asked = backoff::retry_after(fwd.response.headers(), SystemTime::now());
        let deadline = self.plan.deadline.map(|d| d.instant());
        self.backoff
            .as_mut()?
            .delay(asked, Instant::now(), deadline)
    }

    /// The request for the next attempt.
    fn next_request(&mut self) -> Option<Request<RequestBody>> {
        if let Some(req) = self.unsent.take() {
            return Some(req);
        }
        let body = match self.plan.retry {
            // Without retries the body goes once, as it came.
            None => self.body.take()?,
            Some(_) => self.body.as_ref()?.again()?,
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.parts.method.clone();
        *req.uri_mut() = self.parts.uri.clone();
        *req.version_mut() = self.parts.version;
        *req.headers_mut() = match self.plan.retry {
            None => std::mem::take(&mut self.parts.headers),
            Some(_) => self.parts.headers.clone(),
        };
        Some(req)
    }

    fn attempt_end(&self, now: Instant) -> Option<Instant> {
        match (&self.plan.deadline, self.plan.per_attempt) {
            (Some(d), per) => Some(d.attempt_end(now, per)),
            (None, Some(t)) => Some(now + t),
            (None, None) => None,
        }
    }

    fn timed_out(&self) -> ProxyError {
        metrics::timeout(&self.backend.name);
        ProxyError::Timeout
    }
}

/// Methods that may be sent twice (RFC 9110 §9.2.2).
pub(crate) fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
