//! vakt-proxy
