//! The harness serves exactly the routes docs/openapi.yaml describes: the
//! route table (from which the router is built) and the file's `paths` must
//! list the same (method, path) pairs, and every table route is served.

use std::collections::BTreeSet;

use rdrunner_harness::{RouteName, ROUTES};

const OPENAPI: &str = include_str!("../../../../docs/openapi.yaml");

/// (method, path) pairs under `paths:`, by a line scan: a path is a
/// two-space-indented key starting with `/`, a method a four-space key.
fn openapi_routes(yaml: &str) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in yaml.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line.trim_end() == "paths:";
            path = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = Some(format!("/{}", p.trim_end().trim_end_matches(':')));
        } else if let (Some(p), Some(m)) = (&path, line.strip_prefix("    ")) {
            let key = m.trim_end().trim_end_matches(':');
            if !m.starts_with(' ') && ["get", "post", "put", "delete", "patch"].contains(&key) {
                routes.insert((key.to_owned(), p.clone()));
            }
        }
    }
    routes
}

#[test]
fn the_route_table_and_openapi_list_the_same_routes() {
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(served.len(), ROUTES.len(), "a route is listed twice");
    let documented = openapi_routes(OPENAPI);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in docs/openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in docs/openapi.yaml but not served: {unserved:?}"
    );
}

#[test]
fn the_scan_finds_paths_and_methods() {
    let yaml = "openapi: 3.1.0\npaths:\n  /a/{id}:\n    get:\n      responses: {}\n    delete:\n      x: 1\n  /b:\n    post:\n      y: 2\ncomponents:\n  /notapath:\n    get: {}\n";
    let found = openapi_routes(yaml);
    let want: BTreeSet<_> = [("get", "/a/{id}"), ("delete", "/a/{id}"), ("post", "/b")]
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(found, want);
}

/// Every table route answers through the router with something other than
/// the 404/405 the router gives unknown routes (unauthenticated: 401, but
/// 200 from `/metrics`, which takes no token).
#[actix_rt::test]
async fn every_table_route_is_served() {
    let harness = rdrunner_harness::Harness::start(Default::default()).unwrap();
    let client = awc::Client::default();
    for r in ROUTES {
        let path = r
            .path
            .replace("{id}", "1")
            .replace("{opId}", "op-1-1")
            .replace("{project}", "ops")
            .replace("{pingId}", "ping-0");
        let method =
            awc::http::Method::from_bytes(r.method.as_str().to_uppercase().as_bytes()).unwrap();
        let resp = client
            .request(method, format!("{}{path}", harness.base_url()))
            .send_body("{}")
            .await
            .unwrap();
        // `/metrics` holds counts only and takes no token.
        let want = if r.name == RouteName::Metrics {
            200
        } else {
            401
        };
        assert_eq!(resp.status().as_u16(), want, "{:?} {path}", r.name);
    }
    let hits = harness.faults().hits();
    assert_eq!(
        hits.len(),
        ROUTES.len(),
        "every route passed the fault seam: {hits:?}"
    );
}
