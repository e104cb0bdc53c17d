//! Finding the pod templates of a document: a Pod is its own template,
//! the controllers keep one under `spec.template`, a CronJob under
//! `spec.jobTemplate.spec.template`, and a `List` holds documents in
//! `items`. Every other kind passes through untouched.

use super::node::Node;
use super::options::InjectOptions;
use super::pod::{self, Injected, Workload};
use super::{InjectError, Mode, Refusal};

/// One run over a stream: its settings and what it has to say.
pub struct Job<'a> {
    pub mode: Mode,
    pub opts: &'a InjectOptions,
    /// Workloads skipped on purpose.
    pub notes: Vec<String>,
    pub errors: Vec<InjectError>,
}

/// Where a kind keeps its pod template.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

impl Job<'_> {
    /// Rewrites every workload in `doc`; true when something changed.
    pub fn visit(&mut self, doc: &mut Node, at: &str) -> bool {
        let kind = doc.at(&["kind"]).and_then(Node::as_str).unwrap_or("");
        let kind = kind.to_string();
        if kind.ends_with("List")
            && let Some(Node::Seq(items)) = doc.at_mut(&["items"])
        {
            let mut changed = false;
            for (i, item) in items.iter_mut().enumerate() {
                changed |= self.visit(item, &format!("{at}, items[{i}]"));
            }
            return changed;
        }
        let Some(path) = template_path(&kind) else {
            return false;
        };
        let name = name_of(doc);
        let at = format!("{at}, {kind}/{}", name.as_deref().unwrap_or("<unnamed>"));
        let annotations = match path.is_empty() {
            true => None,
            false => doc
                .at(&["metadata", "annotations"])
                .and_then(Node::as_map)
                .cloned(),
        };
        let Some(tpl) = doc.at_mut(path).filter(|t| t.as_map().is_some()) else {
            self.refuse(&at, Refusal::NoTemplate);
            return false;
        };
        let w = Workload {
            name: name.as_deref(),
            annotations: annotations.as_ref(),
        };
        self.rewrite(tpl, &w, &at)
    }

    fn rewrite(&mut self, tpl: &mut Node, w: &Workload, at: &str) -> bool {
        if self.mode == Mode::Uninject {
            return pod::uninject(tpl);
        }
        match pod::inject(tpl, w, self.opts) {
            Ok(Injected::Template(new)) if new == *tpl => false,
            Ok(Injected::Template(new)) => {
                *tpl = new;
                true
            }
            Ok(Injected::OptedOut) => {
                self.notes.push(format!(
                    "{at}: skipped, annotation vakt.dev/inject: disabled"
                ));
                false
            }
            Err(r) => {
                self.refuse(at, r);
                false
            }
        }
    }

    fn refuse(&mut self, at: &str, reason: Refusal) {
        self.errors.push(InjectError::Refused {
            at: at.to_string(),
            reason,
        });
    }
}

fn name_of(doc: &Node) -> Option<String> {
    let meta = doc.at(&["metadata"])?;
    meta.at(&["name"])
        .or_else(|| meta.at(&["generateName"]))
        .and_then(Node::as_str)
        .map(str::to_string)
}
