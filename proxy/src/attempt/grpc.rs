//! Reading a gRPC status before answering the client, so retries and the
//! breaker see it even when it comes only in trailers (case BR-11).

use http_body_util::BodyExt;
use tokio::time::Instant;

use super::{Forwarded, Verdict};
use crate::backend::outcome::{FailureReason, Outcome, grpc_status};
use crate::http::headers;

/// Settles an attempt's outcome from its response head, reading the
/// first body frame of a gRPC response when a retry is still possible.
/// Returns the outcome, or `None` when only the rest of the body can
/// tell (the verdict then travels with the body).
pub async fn settle_head(
    fwd: &mut Forwarded,
    verdict: Verdict,
    may_retry: bool,
    end: Option<Instant>,
) -> Option<Outcome> {
    let rsp = &fwd.response;
    let status_in_body = headers::is_grpc(rsp.headers())
        && rsp.status() == http::StatusCode::OK
        && grpc_status(rsp.headers()).is_none();
    if !status_in_body {
        let outcome = verdict.classifier.response(rsp.status(), rsp.headers());
        verdict.record(outcome);
        return Some(outcome);
    }
    if !may_retry {
        fwd.verdict = Some(verdict);
        return None;
    }
    let read = fwd.response.body_mut().frame();
    let frame = match end {
        Some(at) => match tokio::time::timeout_at(at, read).await {
            Ok(f) => f,
            Err(_) => {
                fwd.verdict = Some(verdict);
                return None;
            }
        },
        None => read.await,
    };
    match frame {
        Some(Ok(frame)) if frame.is_trailers() => {
            let outcome = frame
                .trailers_ref()
                .map_or(Outcome::Success, |t| verdict.classify_trailers(t));
            fwd.first = Some(frame);
            verdict.record(outcome);
            Some(outcome)
        }
        Some(Ok(frame)) => {
            fwd.first = Some(frame);
            fwd.verdict = Some(verdict);
            None
        }
        None => {
            verdict.record(Outcome::Success);
            Some(Outcome::Success)
        }
        Some(Err(_)) => {
            let outcome = Outcome::Failure(FailureReason::Reset);
            verdict.record(outcome);
            Some(outcome)
        }
    }
}

/// The gRPC status of a response: in its head, or in trailers read ahead.
pub fn status_of(fwd: &Forwarded) -> Option<u32> {
    grpc_status(fwd.response.headers()).or_else(|| {
        let t = fwd.first.as_ref()?.trailers_ref()?;
        grpc_status(t)
    })
}
