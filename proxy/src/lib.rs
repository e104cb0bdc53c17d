//! vakt-proxy

#![forbid(unsafe_code)]

pub mod attempt;
pub mod backend;
