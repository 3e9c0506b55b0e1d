//! Per-request cost of the access decision: path normalization, route lookup among 50 routes
//! and rule evaluation for a user in 500 groups, with the groups filter, the identity token, and
//! the whole decision when it comes from the identity cache (every request after the first). The baseline, measured in the same run, is one `HashMap` lookup of a session ID:
//! the work a minimal authenticating proxy does per request.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::authz::{GroupsFilter, Rule};
use gateway::config::IdentityHeaders;
use gateway::identity::{self, IdentityCache, IdentitySources};
use gateway::identity_token::{IdentityTokenConfig, TokenIssuer};
use gateway::paths::normalize;
use gateway::routing::{Route, RouteMatch, RouteTable};
use session_store::{SessionId, SessionRecord};

fn session() -> SessionRecord {
    SessionRecord {
        version: 1,
        sp_entity_id: "https://dash.example.com/saml/metadata".into(),
        idp: "https://idp.example.com".into(),
        idp_name: String::new(),
        user: "alice@example.com".into(),
        name_id: "alice@example.com".into(),
        name_id_format: None,
        session_index: None,
        name_qualifier: None,
        sp_name_qualifier: None,
        email: Some("alice@example.com".into()),
        display_name: Some("Alice Analyst".into()),
        given_name: None,
        surname: None,
        // The one group that matters comes last, the worst case for a scan.
        groups: session_store::groups(
            (0..499)
                .map(|i| format!("CN=group-{i:03},OU=Groups,DC=example,DC=com"))
                .chain(["app-24".to_string()]),
        ),
        attributes: Default::default(),
        csrf_token: "t".into(),
        created_at: 0,
        authn_instant: None,
        authn_context: None,
        expires_at: i64::MAX,
        last_seen: 0,
    }
}

fn routes() -> RouteTable {
    let routes = (0..50)
        .map(|i| {
            let rule = Rule {
                groups: vec![format!("app-{i}"), format!("app-{i}-admins")],
                ..Rule::default()
            };
            Route {
                name: format!("app-{i}"),
                path: format!("/team-{}/app-{i}", i % 7),
                host: None,
                upstream: "http://127.0.0.1:8501".parse().unwrap_or_default(),
                public: false,
                compiled: rule.compile(),
                rule,
                groups_filter: GroupsFilter::Rule,
                forward_cookies: vec!["_streamlit_*".into()],
                idp: None,
                max_authn_age: None,
            }
        })
        .collect();
    RouteTable::new(routes, true)
}

fn decide(table: &RouteTable, raw_path: &str, session: &SessionRecord) -> usize {
    let Ok(path) = normalize(raw_path) else {
        return 0;
    };
    match table.find(None, &path) {
        RouteMatch::Found(route, forwarded) => {
            let allowed = route.compiled.allows(session);
            let groups = route.groups_filter.apply(&session.groups, &route.compiled);
            usize::from(allowed) + groups.len() + forwarded.len()
        }
        _ => 0,
    }
}

fn bench(c: &mut Criterion) {
    let table = routes();
    let session = session();
    let path = "/team-3/app-24/_stcore/host-config";

    let ids: HashMap<String, SessionRecord> = (0..1000)
        .map(|i| (format!("{i:043}"), session.clone()))
        .collect();
    let id = format!("{:043}", 500);
    c.bench_function("baseline: session HashMap lookup", |b| {
        b.iter(|| ids.get(black_box(&id)).map(|s| s.groups.len()))
    });
    c.bench_function("normalize path", |b| b.iter(|| normalize(black_box(path))));
    c.bench_function("decide: 50 routes, 500 groups", |b| {
        b.iter(|| decide(&table, black_box(path), &session))
    });
    c.bench_function("decide: denied (no group matches)", |b| {
        b.iter(|| decide(&table, black_box("/team-0/app-0/"), &session))
    });

    let dir = std::env::temp_dir().join(format!("saml-gateway-bench-{}", std::process::id()));
    let config = IdentityTokenConfig {
        header: hyper::header::HeaderName::from_static("x-auth-jwt"),
        key_file: dir.join("jwt.key"),
        next_key_file: None,
        lifetime: std::time::Duration::from_secs(300),
    };
    if let Ok(tokens) = TokenIssuer::load(&config, "https://dash.example.com") {
        c.bench_function("identity token: signed anew", |b| {
            b.iter(|| tokens.sign(&session, "app-24", &["app-24"], 1000))
        });
        let names = IdentityHeaders::default();
        let sources = IdentitySources {
            names: &names,
            tokens: Some((&config, &tokens)),
        };
        let cache = IdentityCache::default();
        let sid = SessionId::generate().ok();
        if let (Some(sid), RouteMatch::Found(route, _)) = (sid, table.find(None, "/team-3/app-24/"))
        {
            let built = identity::build(&sources, &session, route, table.generation(), 1000);
            cache.put(&sid, std::sync::Arc::new(built), 1000);
            c.bench_function(
                "decide + identity, cached: normalize, route, cache hit",
                |b| {
                    b.iter(|| {
                        let path = normalize(black_box(path)).unwrap_or_default();
                        match table.find(None, &path) {
                            RouteMatch::Found(route, _) => cache
                                .get(&sid, &route.name, table.generation(), 1001)
                                .map(|i| i.headers.len()),
                            _ => None,
                        }
                    })
                },
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
