//! vakt-proxy
pub mod edge;
