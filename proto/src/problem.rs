//! A problem found in a config: where it is and why it is wrong.
//!
//! Loading and validation never stop at the first problem; they collect
//! every one into [`Problems`] so a user can fix a file in one pass.

use std::fmt;

/// One problem: the path to the key (`routes[2].rules[0].backendRefs[1]`)
/// and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Every problem found in one config, with the file it came from, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems {
    pub source: Option<String>,
    pub items: Vec<Problem>,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl Problems {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.items.push(Problem::new(path, message));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// `Ok(())` when nothing was found, the problems otherwise.
    pub fn into_result(self) -> Result<(), Problems> {
        if self.items.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.items.len();
        let noun = if n == 1 { "problem" } else { "problems" };
        match &self.source {
            Some(src) => writeln!(f, "{src}: {n} {noun}")?,
            None => writeln!(f, "{n} {noun}")?,
        }
        for p in &self.items {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}
