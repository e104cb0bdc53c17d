//! Bearer-token checks in front of both services.
//!
//! Operators present the token of `--token-file`; proxies present one of
//! `--node-token-file` (or the operators' token when none is given). A call
//! without a matching `authorization: Bearer <token>` is UNAUTHENTICATED
//! before any handler runs, so it changes nothing.

use std::path::Path;
use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Why a token file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file {0} holds no token")]
    Empty(String),
}

/// Reads a token file: one token per line, blank lines skipped.
pub fn read_tokens(path: &Path) -> Result<Vec<String>, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if tokens.is_empty() {
        return Err(TokenFileError::Empty(path.display().to_string()));
    }
    Ok(tokens)
}

/// Accepts calls carrying one of a set of tokens.
#[derive(Clone)]
pub struct TokenCheck {
    tokens: Arc<Vec<String>>,
}

impl TokenCheck {
    pub fn new(tokens: Vec<String>) -> Self {
        Self {
            tokens: Arc::new(tokens),
        }
    }

    fn accepts(&self, presented: &[u8]) -> bool {
        // Compare every token in full so timing does not leak a prefix.
        self.tokens
            .iter()
            .fold(false, |ok, t| ok | same(t.as_bytes(), presented))
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let header = req.metadata().get("authorization");
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        let token = header.map(|v| v.as_bytes()).and_then(|v| {
            let (scheme, rest) = v.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
        });
        match token {
            Some(t) if self.accepts(t) => Ok(req),
            Some(_) => Err(Status::unauthenticated("bad credential")),
            None => Err(Status::unauthenticated("a bearer token is required")),
        }
    }
}
