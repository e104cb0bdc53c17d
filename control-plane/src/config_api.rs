//! The operators' config service: apply, delete, get, history, rollback,
//! nodes and health.
//!
//! Every change is computed from the newest stored version, validated as a
//! whole and stored as the next version; nothing is stored when any
//! problem is found, and the answer names every one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use tonic::{Code, Request, Response, Status};
use vakt_api::convert::Objects;
use vakt_api::pb::control::v1 as pb;
use vakt_api::pb::control::v1::config_service_server::ConfigService;
use vakt_api::{Problems, validate};

use crate::state::Shared;
use crate::store::{Revision, StoreError};

/// How often a change is recomputed when another replica stored first.
const CONFLICT_RETRIES: u32 = 20;

/// The config service of one replica.
pub struct ConfigApi {
    shared: Arc<Shared>,
}

impl ConfigApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Computes, validates and stores the next version.
    async fn change(
        &self,
        description: String,
        f: impl Fn(&Objects) -> Result<Objects, Problems>,
    ) -> Result<pb::ChangeResponse, Status> {
        let _guard = self.shared.change_lock.lock().await;
        for _ in 0..CONFLICT_RETRIES {
            let head = self.shared.store.head().await.map_err(internal)?;
            let head = head.unwrap_or_default();
            let next = f(&head.objects).map_err(|p| refused(Code::InvalidArgument, p))?;
            validate_objects(&next).map_err(|p| refused(Code::InvalidArgument, p))?;
            if next == head.objects {
                return Ok(pb::ChangeResponse {
                    version: head.version,
                    changed: false,
                });
            }
            let rev = Revision {
                version: head.version + 1,
                created_at_unix: unix_now(),
                description: description.clone(),
                objects: next,
            };
            match self.shared.store.commit(&rev).await {
                Ok(()) => {
                    let version = rev.version;
                    tracing::info!(version, description = %rev.description, "version stored");
                    self.shared.publish(rev);
                    return Ok(pb::ChangeResponse {
                        version,
                        changed: true,
                    });
                }
                Err(StoreError::Conflict(v)) => {
                    tracing::info!(newest = v, "another replica stored first; retrying");
                    // A random pause keeps two replicas from colliding
                    // again in lockstep.
                    let ms = fastrand::u64(1..=20);
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                Err(e) => return Err(internal(e)),
            }
        }
        Err(Status::aborted("too many concurrent changes; try again"))
    }
}

/// Checks a whole set of objects: names, references, values.
pub fn validate_objects(objects: &Objects) -> Result<(), Problems> {
    let mut problems = Problems::default();
    let config = objects.clone().into_config();
    validate::check_backends(&config.backends, &mut problems);
    validate::check_routes(&config, None, &mut problems);
    problems.into_result()
}

/// Creates or replaces `new` objects in `base`, by name.
pub fn merge(base: &Objects, new: &Objects) -> Objects {
    fn put<T: Clone>(list: &mut Vec<T>, items: &[T], name: impl Fn(&T) -> &str) {
        for item in items {
            match list.iter_mut().find(|x| name(x) == name(item)) {
                Some(slot) => *slot = item.clone(),
                None => list.push(item.clone()),
            }
        }
    }
    let mut out = base.clone();
    put(&mut out.routes, &new.routes, |r| &r.name);
    put(&mut out.backends, &new.backends, |b| &b.name);
    put(&mut out.rate_limits, &new.rate_limits, |r| &r.name);
    out
}

/// The objects of an apply with, for each name, its first copy only.
fn first_copies(o: &Objects) -> Objects {
    fn firsts<T: Clone>(items: &[T], name: impl Fn(&T) -> &str) -> Vec<T> {
        let mut seen = HashSet::new();
        items
            .iter()
            .filter(|i| seen.insert(name(i).to_string()))
            .cloned()
            .collect()
    }
    let mut out = o.clone();
    out.routes = firsts(&o.routes, |r| &r.name);
    out.backends = firsts(&o.backends, |b| &b.name);
    out.rate_limits = firsts(&o.rate_limits, |r| &r.name);
    out
}

/// Names that appear twice in one apply.
fn duplicates(o: &Objects) -> Problems {
    let mut problems = Problems::default();
    let mut check = |kind: &str, names: Vec<&str>| {
        let mut seen = HashSet::new();
        for n in names {
            if !seen.insert(n) {
                problems.push(format!("{kind}[{n}].name"), "duplicate name in this apply");
            }
        }
    };
    check("routes", o.routes.iter().map(|r| r.name.as_str()).collect());
    check(
        "backends",
        o.backends.iter().map(|b| b.name.as_str()).collect(),
    );
    check(
        "rateLimits",
        o.rate_limits.iter().map(|r| r.name.as_str()).collect(),
    );
    problems
}

fn delete(base: &Objects, refs: &[pb::ObjectRef]) -> Result<Objects, Problems> {
    let mut out = base.clone();
    let mut problems = Problems::default();
    for r in refs {
        let (key, before, after) = match pb::Kind::try_from(r.kind) {
            Ok(pb::Kind::Route) => {
                let n = out.routes.len();
                out.routes.retain(|x| x.name != r.name);
                ("routes", n, out.routes.len())
            }
            Ok(pb::Kind::Backend) => {
                let n = out.backends.len();
                out.backends.retain(|x| x.name != r.name);
                ("backends", n, out.backends.len())
            }
            Ok(pb::Kind::RateLimit) => {
                let n = out.rate_limits.len();
                out.rate_limits.retain(|x| x.name != r.name);
                ("rateLimits", n, out.rate_limits.len())
            }
            _ => {
                problems.push(format!("objects[{}]", r.name), "unknown kind");
                continue;
            }
        };
        if before == after {
            problems.push(format!("{key}[{}]", r.name), "does not exist");
        }
    }
    problems.into_result().map(|()| out)
}

/// A refusal whose message lists the problems and whose details carry
/// them as a `vakt.control.v1.ProblemList`.
pub fn refused(code: Code, problems: Problems) -> Status {
    let list = pb::ProblemList {
        problems: problems
            .items
            .iter()
            .map(|p| pb::Problem {
                path: p.path.clone(),
                message: p.message.clone(),
            })
            .collect(),
    };
    let details = prost::bytes::Bytes::from(list.encode_to_vec());
    Status::with_details(code, problems.to_string(), details)
}

fn internal(e: StoreError) -> Status {
    tracing::error!(error = %e, "store failed");
    Status::unavailable(e.to_string())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tonic::async_trait]
impl ConfigService for ConfigApi {
    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let req = req.into_inner();
        let wire = req.objects.unwrap_or_default();
        let new = Objects::from_proto(&wire).map_err(|p| refused(Code::InvalidArgument, p))?;
        let dups = duplicates(&new);
        let description = if req.description.is_empty() {
            "apply".to_string()
        } else {
            req.description
        };
        let resp = self
            .change(description, |base| {
                let merged = merge(base, &new);
                let mut problems = dups.clone();
                if let Err(p) = validate_objects(&merged) {
                    problems.items.extend(p.items);
                }
                // With a name given twice, the copy that lost the merge is
                // checked too, so its problems are named as well.
                if !dups.is_empty()
                    && let Err(p) = validate_objects(&merge(base, &first_copies(&new)))
                {
                    for item in p.items {
                        if !problems.items.contains(&item) {
                            problems.items.push(item);
                        }
                    }
                }
                problems.into_result().map(|()| merged)
            })
            .await?;
        Ok(Response::new(resp))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let req = req.into_inner();
        let description = format!("delete {} objects", req.objects.len());
        let resp = self
            .change(description, |base| delete(base, &req.objects))
            .await?;
        Ok(Response::new(resp))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let version = req.into_inner().version;
        let store = &self.shared.store;
        let rev = match version {
            0 => store.head().await.map_err(internal)?.unwrap_or_default(),
            v => store
                .get(v)
                .await
                .map_err(internal)?
                .ok_or_else(|| Status::not_found(format!("no version {v}")))?,
        };
        Ok(Response::new(pb::GetResponse {
            version: rev.version,
            objects: Some(rev.objects.to_proto()),
        }))
    }

    async fn history(
        &self,
        _: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let all = self.shared.store.history().await.map_err(internal)?;
        let versions = all
            .iter()
            .rev()
            .map(|r| pb::VersionInfo {
                version: r.version,
                created_at_unix: r.created_at_unix,
                description: r.description.clone(),
                routes: r.objects.routes.len() as u32,
                backends: r.objects.backends.len() as u32,
            })
            .collect();
        Ok(Response::new(pb::HistoryResponse { versions }))
    }

    async fn rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let to = req.into_inner().to_version;
        let old = self.shared.store.get(to).await.map_err(internal)?;
        let old = old.ok_or_else(|| Status::not_found(format!("no version {to}")))?;
        let resp = self
            .change(format!("rollback to {to}"), |_| Ok(old.objects.clone()))
            .await?;
        Ok(Response::new(resp))
    }

    async fn list_nodes(
        &self,
        _: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        Ok(Response::new(pb::ListNodesResponse {
            nodes: self.shared.nodes.list(),
        }))
    }

    async fn list_health(
        &self,
        _: Request<pb::ListHealthRequest>,
    ) -> Result<Response<pb::ListHealthResponse>, Status> {
        let cur = self.shared.current();
        let unhealthy = self.shared.unhealthy();
        let mut endpoints = Vec::new();
        for b in &cur.objects.backends {
            for e in &b.endpoints {
                let key = (b.name.clone(), e.clone());
                let (reporters, probe_failed) = self.shared.health_detail(&key);
                endpoints.push(pb::EndpointVerdict {
                    healthy: !unhealthy.contains(&key),
                    backend: key.0,
                    endpoint: key.1,
                    reporters: reporters as u32,
                    probe_failed,
                });
            }
        }
        Ok(Response::new(pb::ListHealthResponse { endpoints }))
    }
}
