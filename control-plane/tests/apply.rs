//! Apply, delete, history and rollback: validation runs before anything is
//! stored and names every problem; every change is the next version.

mod common;

use common::*;
use prost::Message;
use vakt_api::pb::control::v1 as pb;
use vakt_api::tonic::Code;

#[tokio::test]
async fn a_bad_apply_names_every_problem_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let mut c = client(cp.addr).await;
    apply(&mut c, &route_yaml("orders", "127.0.0.1:18080"))
        .await
        .unwrap();

    let good = vakt_api::httproute::read_documents(&route_yaml("x", "127.0.0.1:1")).unwrap();
    let mut wire = good.to_proto();
    wire.routes[0].rules[0].backend_refs[0].name = "missing".into();
    wire.routes.push(wire.routes[0].clone());
    wire.backends[0].connect_timeout = "2 seconds".into();
    let err = c
        .apply(pb::ApplyRequest {
            objects: Some(wire.clone()),
            description: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = pb::ProblemList::decode(err.details()).unwrap();
    let paths: Vec<&str> = details.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["backends[x].connectTimeout"], "{}", err.message());

    wire.backends[0].connect_timeout = "2s".into();
    let err = c
        .apply(pb::ApplyRequest {
            objects: Some(wire),
            description: String::new(),
        })
        .await
        .unwrap_err();
    let msg = err.message();
    assert!(
        msg.contains("routes[x].name: duplicate name in this apply"),
        "{msg}"
    );
    assert!(msg.contains("routes[x].rules[0].backendRefs[0]"), "{msg}");
    assert!(msg.contains("missing"), "{msg}");

    let (version, objects) = current(&mut c).await;
    assert_eq!(version, 1);
    assert_eq!(objects.routes.len(), 1);
    cp.shutdown().await;
}

#[tokio::test]
async fn a_name_given_twice_still_has_both_copies_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let mut c = client(cp.addr).await;
    let good = vakt_api::httproute::read_documents(&route_yaml("x", "127.0.0.1:1")).unwrap();
    let mut wire = good.to_proto();
    // The first copy is the bad one; the merge keeps the second.
    let mut bad = wire.routes[0].clone();
    bad.rules[0].backend_refs[0].name = "missing".into();
    wire.routes.insert(0, bad);
    let err = c
        .apply(pb::ApplyRequest {
            objects: Some(wire),
            description: String::new(),
        })
        .await
        .unwrap_err();
    let msg = err.message();
    assert!(msg.contains("duplicate name in this apply"), "{msg}");
    assert!(msg.contains("no backend \"missing\""), "{msg}");
    cp.shutdown().await;
}

#[tokio::test]
async fn changes_get_versions_and_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let mut c = client(cp.addr).await;
    assert_eq!(
        apply(&mut c, &route_yaml("a", "127.0.0.1:1"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        apply(&mut c, &route_yaml("b", "127.0.0.1:2"))
            .await
            .unwrap(),
        2
    );
    // The same objects again store nothing new.
    assert_eq!(
        apply(&mut c, &route_yaml("b", "127.0.0.1:2"))
            .await
            .unwrap(),
        2
    );

    let del = |kind: pb::Kind, name: &str| pb::DeleteRequest {
        objects: vec![pb::ObjectRef {
            kind: kind as i32,
            name: name.into(),
        }],
        description: String::new(),
    };
    // A backend still referenced by a route cannot go.
    let err = c.delete(del(pb::Kind::Backend, "a")).await.unwrap_err();
    assert!(
        err.message().contains("routes[a].rules[0].backendRefs[0]"),
        "{}",
        err.message()
    );
    let r = c
        .delete(del(pb::Kind::Route, "a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.version, 3);
    let err = c.delete(del(pb::Kind::Route, "a")).await.unwrap_err();
    assert!(err.message().contains("routes[a]: does not exist"));

    let r = c
        .rollback(pb::RollbackRequest { to_version: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.version, 4);
    let (_, objects) = current(&mut c).await;
    let names: Vec<_> = objects.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a"]);

    let history = c.history(pb::HistoryRequest {}).await.unwrap().into_inner();
    let versions: Vec<u64> = history.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, [4, 3, 2, 1]);
    assert_eq!(history.versions[0].description, "rollback to 1");
    cp.shutdown().await;
}

#[tokio::test]
async fn versions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let mut c = client(cp.addr).await;
    apply(&mut c, &route_yaml("a", "127.0.0.1:1"))
        .await
        .unwrap();
    apply(&mut c, &route_yaml("b", "127.0.0.1:2"))
        .await
        .unwrap();
    cp.shutdown().await;

    let cp = start(dir.path()).await;
    let mut c = client(cp.addr).await;
    let (version, objects) = current(&mut c).await;
    assert_eq!((version, objects.routes.len()), (2, 2));
    cp.shutdown().await;
}

#[tokio::test]
async fn gateway_api_httproutes_apply_as_routes() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let mut c = client(cp.addr).await;
    let yaml = "backends: [{name: orders-v1, endpoints: [127.0.0.1:18080]}]\n---\n\
        apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
        metadata: {name: orders, namespace: shop}\n\
        spec:\n  parentRefs: [{group: \"\", kind: Service, name: orders}]\n\
        \x20 rules: [{backendRefs: [{name: orders-v1, port: 8080}]}]\n";
    assert_eq!(apply(&mut c, yaml).await.unwrap(), 1);
    let (_, objects) = current(&mut c).await;
    assert_eq!(objects.routes[0].name, "orders.shop");
    assert!(
        objects.routes[0]
            .hostnames
            .contains(&"orders.shop.svc.cluster.local".into())
    );
    cp.shutdown().await;
}
