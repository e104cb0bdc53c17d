//! The pieces the attempt loop uses between attempts: the deadline that
//! bounds them all, the backoff before a retry, the budget that caps
//! retries per backend and the body that can be sent again.

pub mod backoff;
pub mod budget;
pub mod deadline;
pub mod replay;
