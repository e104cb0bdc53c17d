//! `vakt-control inject`: rewrites Kubernetes manifests so every pod
//! runs `vakt-proxy` as a native sidecar behind an iptables redirect, and
//! `--uninject` takes the pieces out again.
//!
//! The transform works on text in, text out, so an admission webhook can
//! reuse it: [`stream`] cuts the YAML stream into documents, [`workload`]
//! finds each pod template, [`pod`] cleans and injects it with the
//! [`pieces`]. A document nothing happens to is written back byte for
//! byte; one that changes is written in a stable block style, so running
//! the transform on its own output changes nothing.

pub mod node;
pub mod options;
pub mod pieces;
pub mod pod;
pub mod stream;
pub mod workload;

use std::fmt;

pub use options::InjectOptions;

pub use node::Node;
use workload::Job;

/// Which way to rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Add the sidecar (replacing an older injection).
    Inject,
    /// Remove what injection added.
    Uninject,
}

/// The rewritten stream and the workloads skipped on purpose.
#[derive(Debug)]
pub struct Output {
    pub text: String,
    /// One line per workload skipped by its opt-out annotation.
    pub notes: Vec<String>,
}

/// Why a workload is not injected.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("it has no pod template")]
    NoTemplate,
    #[error("its pod template has no containers")]
    NoContainers,
    #[error("{0} is not a mapping or a sequence as Kubernetes expects")]
    Malformed(&'static str),
    #[error(
        "hostNetwork pods share the node's network namespace, where the redirect would catch every other pod's traffic"
    )]
    HostNetwork,
    #[error("it already carries another mesh's sidecar ({0})")]
    OtherMesh(String),
    #[error(
        "container {container:?} runs as {id} 1717, the proxy's, so its traffic would bypass the proxy"
    )]
    ProxyId {
        container: String,
        /// `UID` or `GID`.
        id: &'static str,
    },
    #[error("container {container:?} uses port {port}, which the proxy listens on")]
    PortTaken { container: String, port: i64 },
    #[error("annotation {annotation}: {value:?} is not a comma-separated list of ports")]
    BadPorts {
        annotation: &'static str,
        value: String,
    },
    #[error("annotation {0} must be a string")]
    NotAString(&'static str),
    #[error("no service name: set label app.kubernetes.io/name or app, or metadata.name")]
    NoServiceName,
}

/// What stops a stream from being rewritten.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// `line` is where the document starts in the stream; the line
    /// numbers inside `reason` count from there.
    #[error("document {doc} (from line {line}): not valid YAML: {reason}")]
    Yaml {
        doc: usize,
        line: usize,
        reason: String,
    },
    #[error("{at}: refused: {reason}")]
    Refused { at: String, reason: Refusal },
    #[error("document {doc}: cannot write YAML: {reason}")]
    Write { doc: usize, reason: String },
}

/// Every problem found in a stream; nothing is written when there is one.
#[derive(Debug)]
pub struct Failed(pub Vec<InjectError>);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for Failed {}

/// Rewrites a YAML stream. Documents are numbered from 1 in messages, as
/// lines are.
pub fn transform(text: &str, mode: Mode, opts: &InjectOptions) -> Result<Output, Failed> {
    let mut job = Job {
        mode,
        opts,
        notes: Vec::new(),
        errors: Vec::new(),
    };
    let mut out = String::with_capacity(text.len() * 2);
    let mut line = 1;
    for (i, doc) in stream::split(text).iter().enumerate() {
        let (n, first_line) = (i + 1, line);
        line += doc.line_count();
        if doc.is_blank() {
            doc.write_original(&mut out);
            continue;
        }
        let mut tree = match stream::parse(&doc.source()) {
            Ok(tree) => tree,
            Err(reason) => {
                job.errors.push(InjectError::Yaml {
                    doc: n,
                    line: first_line,
                    reason,
                });
                continue;
            }
        };
        if !job.visit(&mut tree, &format!("document {n}")) {
            doc.write_original(&mut out);
        } else if let Err(reason) = doc.write_tree(&tree, &mut out) {
            job.errors.push(InjectError::Write { doc: n, reason });
        }
    }
    match job.errors.is_empty() {
        true => Ok(Output {
            text: out,
            notes: job.notes,
        }),
        false => Err(Failed(job.errors)),
    }
}

/// Rewrites one object already parsed (a Pod as an admission webhook
/// receives it, say); `Ok(true)` when it changed. Notes are returned
/// beside the errors' absence.
pub fn rewrite_object(
    object: &mut Node,
    mode: Mode,
    opts: &InjectOptions,
) -> Result<(bool, Vec<String>), Failed> {
    let mut job = Job {
        mode,
        opts,
        notes: Vec::new(),
        errors: Vec::new(),
    };
    let changed = job.visit(object, "object");
    match job.errors.is_empty() {
        true => Ok((changed, job.notes)),
        false => Err(Failed(job.errors)),
    }
}
