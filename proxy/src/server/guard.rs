//! Who may pass: a route's authentication and rate limit, checked after
//! routing and before anything is forwarded. A refused request never
//! reaches the upstream.

use std::net::IpAddr;

use http::Request;
use hyper::body::Incoming;

use crate::edge::auth::{AuthError, AuthOutcome};
use crate::respond::ProxyError;
use crate::route::Decision;
use crate::state::Routing;

/// Checks credentials (setting the forwarded claim headers on success),
/// then the rate limit, keyed by `client` or the authenticated subject.
pub fn admit(
    routing: &Routing,
    decision: Decision<'_>,
    req: &mut Request<Incoming>,
    client: IpAddr,
) -> Result<(), ProxyError> {
    let route = &decision.rule.route;
    let identity = match &route.auth {
        None => None,
        Some(auth) => {
            let checked = auth.check(req.headers());
            let outcome = checked
                .as_ref()
                .map_or_else(|e| e.outcome(), |_| AuthOutcome::Allowed);
            route.metrics.auth(outcome);
            match checked {
                Ok(identity) => Some(identity),
                Err(AuthError::Forbidden) => return Err(ProxyError::Forbidden),
                Err(e) => return Err(ProxyError::Unauthenticated(e.challenge().cloned())),
            }
        }
    };

    // The key is read before the credential headers are removed, so a
    // limit keyed by the API key header counts each caller apart.
    let limiter = &routing.rate_limiter;
    if let Some(policy) = limiter.route(&route.name) {
        let subject = identity.as_ref().and_then(|i| i.subject.as_deref());
        let key = limiter
            .key_source(policy)
            .key(client, req.headers(), subject);
        let decision = limiter.check(policy, key);
        if !decision.allowed {
            route.metrics.rate_limited();
            return Err(ProxyError::RateLimited(decision));
        }
    }
    if let Some(identity) = identity {
        identity.apply(req.headers_mut());
    }
    Ok(())
}
