//! A backend's guards on the request path: the breaker that fails fast
//! while the backend is unwell, the bulkhead that bounds its share of the
//! proxy, and the ejection state that takes failing endpoints out of its
//! balancer (fed by outcomes and by active health checks).

pub mod breaker;
pub mod bulkhead;
pub mod ejection;
pub mod health_check;
pub mod outcome;
