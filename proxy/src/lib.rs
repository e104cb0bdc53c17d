//! vakt-proxy

pub mod discovery;
