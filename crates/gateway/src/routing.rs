//! Routes: which app a request goes to and who may use it; their config section and lookup.
//!
//! A route has a path prefix (on segment boundaries: `/sales` matches `/sales` and
//! `/sales/x`, not `/salesforce`), optionally a host, one upstream and a rule. Routes with a
//! host are tried before routes without one, and among those the longest prefix wins; `/` is
//! the catch-all. Paths are compared after [`crate::paths::normalize`]. With
//! `paths.case_sensitive: true` (the default) a path that would match a different route if case
//! were ignored (`/OPS` next to a route `/ops`) matches none, so that a catch-all with a
//! weaker rule never serves what an upstream may read as the stricter route's path.

use std::borrow::Cow;

use crate::authz::{CompiledRule, GroupsFilter, Rule};

/// One proxied application.
#[derive(Debug, Clone)]
pub struct Route {
    /// The app's name: the identity token's audience, shown on pages, in audit records.
    pub name: String,
    /// Path prefix, starting with `/`, without a trailing `/` (except the catch-all `/`).
    pub path: String,
    /// The host this route is for (lower case, without port); `None`: any host.
    pub host: Option<String>,
    /// Upstream base URL (`http://host:port`), without a path.
    pub upstream: hyper::Uri,
    /// No login: the request is proxied without identity.
    pub public: bool,
    /// Who may use the route, as configured.
    pub rule: Rule,
    /// The rule, ready for evaluation.
    pub compiled: CompiledRule,
    /// Which groups reach the app.
    pub groups_filter: GroupsFilter,
    /// Cookie names forwarded to the upstream (a trailing `*` matches a prefix).
    pub forward_cookies: Vec<String>,
    /// The IdP that logins started for this route go to (its rule then requires it too).
    pub idp: Option<String>,
    /// The oldest sign-in at the IdP the route accepts, in seconds (`max_authn_age`): an older
    /// one is sent to sign in again, and logins for the route ask the IdP for a new sign-in.
    pub max_authn_age: Option<i64>,
}

/// The result of looking a request up.
#[derive(Debug)]
pub enum RouteMatch<'t, 'p> {
    /// This route, and the path to send upstream (the request's own when it is spelled as
    /// the route's prefix, nearly always).
    Found(&'t Route, Cow<'p, str>),
    /// Only a different spelling of the path's case would match (with case-sensitive paths).
    CaseMismatch,
    /// No route.
    NoRoute,
}

/// Every route, in lookup order.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    case_sensitive: bool,
    generation: u64,
}

/// Numbers route tables, so that what was derived from one table is never used with another.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn prefix_matches(prefix: &str, path: &str, ignore_case: bool) -> bool {
    if prefix == "/" {
        return true;
    }
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    let same = if ignore_case {
        head.eq_ignore_ascii_case(prefix)
    } else {
        head == prefix
    };
    same && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

/// The request's host as routes compare it: lower case, without port. Borrowed when it is
/// lower case already (as browsers send it), so that nothing is built per request.
pub fn host_key(host: &str) -> Cow<'_, str> {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let key = without_port.trim_end_matches('.');
    if key.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(key.to_ascii_lowercase())
    } else {
        Cow::Borrowed(key)
    }
}

impl RouteTable {
    /// Builds the table from checked routes.
    pub fn new(mut routes: Vec<Route>, case_sensitive: bool) -> RouteTable {
        routes.sort_by_key(|r| (r.host.is_none(), std::cmp::Reverse(r.path.len())));
        RouteTable {
            routes,
            case_sensitive,
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The route named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// This table's number, different for every table built.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The routes in lookup order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// True when a route takes every path (`/`) for requests without a routed host.
    pub fn has_catch_all(&self) -> bool {
        self.routes
            .iter()
            .any(|r| r.path == "/" && r.host.is_none())
    }

    fn find_with(&self, host: Option<&str>, path: &str, ignore_case: bool) -> Option<&Route> {
        self.routes.iter().find(|r| {
            r.host.as_deref().is_none_or(|h| Some(h) == host)
                && prefix_matches(&r.path, path, ignore_case)
        })
    }

    /// The route for a request to `host` (see [`host_key`]) and a normalized `path`.
    pub fn find<'p>(&self, host: Option<&str>, path: &'p str) -> RouteMatch<'_, 'p> {
        let Some(route) = self.find_with(host, path, !self.case_sensitive) else {
            return RouteMatch::NoRoute;
        };
        // With exact case, another route matching when case is ignored means `/OPS` next to
        // `/ops`: it must not fall through to a weaker route.
        if self.case_sensitive
            && self
                .find_with(host, path, true)
                .is_some_and(|f| !std::ptr::eq(f, route))
        {
            return RouteMatch::CaseMismatch;
        }
        // The prefix as configured, so that the upstream sees one spelling.
        let forwarded = if route.path == "/" || path.starts_with(route.path.as_str()) {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(format!("{}{}", route.path, &path[route.path.len()..]))
        };
        RouteMatch::Found(route, forwarded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, host: Option<&str>) -> Route {
        Route {
            name: crate::route_config::default_name(path),
            path: path.into(),
            host: host.map(str::to_string),
            upstream: "http://127.0.0.1:1".parse().unwrap(),
            public: false,
            max_authn_age: None,
            rule: Rule::default(),
            compiled: Rule::default().compile(),
            groups_filter: GroupsFilter::All,
            forward_cookies: vec![],
            idp: None,
        }
    }

    fn found(t: &RouteTable, host: Option<&str>, path: &str) -> Option<(String, String)> {
        match t.find(host, path) {
            RouteMatch::Found(r, p) => Some((r.name.clone(), p.into_owned())),
            _ => None,
        }
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let t = RouteTable::new(vec![route("/", None), route("/sales", None)], true);
        assert_eq!(found(&t, None, "/sales/x").unwrap().0, "sales");
        assert_eq!(found(&t, None, "/sales").unwrap().0, "sales");
        assert_eq!(found(&t, None, "/salesforce").unwrap().0, "root");
        let no_root = RouteTable::new(vec![route("/sales", None)], true);
        assert!(matches!(no_root.find(None, "/ops"), RouteMatch::NoRoute));
        assert!(!no_root.has_catch_all() && t.has_catch_all());
    }

    #[test]
    fn case_rule() {
        let routes = vec![route("/", None), route("/ops", None)];
        let sensitive = RouteTable::new(routes.clone(), true);
        assert!(matches!(
            sensitive.find(None, "/OPS/x"),
            RouteMatch::CaseMismatch
        ));
        assert_eq!(found(&sensitive, None, "/ops/x").unwrap().0, "ops");
        let insensitive = RouteTable::new(routes, false);
        assert_eq!(
            found(&insensitive, None, "/OPS/x"),
            Some(("ops".into(), "/ops/x".into()))
        );
    }

    #[test]
    fn host_routes_first() {
        let t = RouteTable::new(
            vec![route("/sales", None), route("/", Some("ops.example.com"))],
            true,
        );
        assert_eq!(
            found(&t, Some("ops.example.com"), "/sales").unwrap().0,
            "root"
        );
        assert_eq!(
            found(&t, Some("dash.example.com"), "/sales").unwrap().0,
            "sales"
        );
        assert!(matches!(
            t.find(Some("dash.example.com"), "/x"),
            RouteMatch::NoRoute
        ));
        assert_eq!(host_key("Ops.Example.com:8443"), "ops.example.com");
        assert_eq!(host_key("[::1]:8080"), "[::1]");
    }
}
