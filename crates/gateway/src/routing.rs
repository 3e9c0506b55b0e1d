//! Routes: which app a request goes to and who may use it; their config section and lookup.
//!
//! A route has a path prefix (on segment boundaries: `/sales` matches `/sales` and
//! `/sales/x`, not `/salesforce`), optionally a host, one upstream and a rule. Routes with a
//! host are tried before routes without one, and among those the longest prefix wins; `/` is
//! the catch-all. Paths are compared after [`crate::paths::normalize`]. With
//! `paths.case_sensitive: true` (the default) a path that would match a different route if case
//! were ignored (`/OPS` next to a route `/ops`) matches none, so that a catch-all with a
//! weaker rule never serves what an upstream may read as the stricter route's path.

use std::collections::BTreeMap;

use serde::Deserialize;
use url::Url;

use crate::authz::{CompiledRule, GroupsFilter, Rule};
use crate::config::ConfigError;

/// One route as written in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    name: Option<String>,
    path: String,
    host: Option<String>,
    upstream: String,
    #[serde(default)]
    public: bool,
    allow: Option<RawRule>,
    allow_groups: Option<Vec<String>>,
    forward_cookies: Option<Vec<String>>,
    groups_header: Option<String>,
}

/// A route's `allow` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    emails: Vec<String>,
    #[serde(default)]
    email_domains: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    groups_case_insensitive: bool,
}

/// The `paths` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    case_sensitive: Option<bool>,
}

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
}

/// The result of looking a request up.
#[derive(Debug)]
pub enum RouteMatch<'t> {
    /// This route, and the path to send upstream.
    Found(&'t Route, String),
    /// Only a different spelling of the path's case would match (with case-sensitive paths).
    CaseMismatch,
    /// No route.
    None,
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

/// The request's host as routes compare it: lower case, without port.
pub fn host_key(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
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
    pub fn find(&self, host: Option<&str>, path: &str) -> RouteMatch<'_> {
        let exact = self.find_with(host, path, false);
        let folded = self.find_with(host, path, true);
        let Some(route) = (if self.case_sensitive { exact } else { folded }) else {
            return RouteMatch::None;
        };
        if self.case_sensitive && folded.is_some_and(|f| !std::ptr::eq(f, route)) {
            return RouteMatch::CaseMismatch;
        }
        // The prefix as configured, so that the upstream sees one spelling.
        let forwarded = if route.path == "/" {
            path.to_string()
        } else {
            format!("{}{}", route.path, &path[route.path.len()..])
        };
        RouteMatch::Found(route, forwarded)
    }
}

/// Checks the `routes` and `paths` sections; `err(key, message)` makes the error.
pub fn check_routes(
    raw: Vec<RawRoute>,
    paths: RawPaths,
    err: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<RouteTable, ConfigError> {
    if raw.is_empty() {
        return Err(err("routes", "at least one route is needed"));
    }
    let case_sensitive = paths.case_sensitive.unwrap_or(true);
    let mut routes: Vec<Route> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].{k}");
        let route = check_route(r, &|k, m| err(&key(k), m))?;
        let same_path = |o: &Route| {
            o.host == route.host
                && if case_sensitive {
                    o.path == route.path
                } else {
                    o.path.eq_ignore_ascii_case(&route.path)
                }
        };
        if routes.iter().any(same_path) {
            return Err(err(
                &key("path"),
                "the same path (and host) is used by an earlier route",
            ));
        }
        if routes.iter().any(|o| o.name == route.name) {
            return Err(err(
                &key("name"),
                "the same name is used by an earlier route; names must be unique",
            ));
        }
        routes.push(route);
    }
    Ok(RouteTable::new(routes, case_sensitive))
}

fn default_name(path: &str) -> String {
    let name = path.trim_matches('/').replace('/', "-");
    if name.is_empty() {
        "root".into()
    } else {
        name
    }
}

fn check_rule(raw: Option<RawRule>, allow_groups: Option<Vec<String>>) -> Result<Rule, String> {
    let rule = match (raw, allow_groups) {
        (Some(_), Some(_)) => {
            return Err("use either allow or allow_groups, not both".into());
        }
        (None, groups) => Rule {
            groups: groups.unwrap_or_default(),
            ..Rule::default()
        },
        (Some(r), None) => {
            let rule = Rule {
                groups: r.groups,
                users: r.users,
                emails: r.emails,
                email_domains: r.email_domains,
                attributes: r.attributes,
                groups_case_insensitive: r.groups_case_insensitive,
            };
            if rule.is_open() {
                return Err("has no entries; remove it to let every signed-in user in".into());
            }
            rule
        }
    };
    let blank = |v: &Vec<String>| v.iter().any(|s| s.trim().is_empty());
    if blank(&rule.groups)
        || blank(&rule.users)
        || blank(&rule.emails)
        || blank(&rule.email_domains)
        || rule
            .attributes
            .iter()
            .any(|(k, v)| k.is_empty() || blank(v))
    {
        return Err("has an empty value".into());
    }
    if rule.attributes.values().any(Vec::is_empty) {
        return Err("an attribute lists no values".into());
    }
    Ok(rule)
}

fn check_route(
    raw: RawRoute,
    err: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<Route, ConfigError> {
    let normal = crate::paths::normalize(&raw.path).ok();
    if normal.as_deref() != Some(raw.path.as_str())
        && normal.as_deref().map(|n| format!("{n}/")) != Some(raw.path.clone())
        || raw.path.contains(';')
        || raw.path.contains('%')
    {
        return Err(err(
            "path",
            "must start with / and be in normal form (no //, . or .. segments, ; or %)",
        ));
    }
    if raw.path.starts_with("/saml/") || raw.path == "/saml" {
        return Err(err(
            "path",
            "/saml is reserved for the gateway's own endpoints",
        ));
    }
    let path = if raw.path.len() > 1 {
        raw.path.trim_end_matches('/').to_string()
    } else {
        raw.path
    };
    let name = raw.name.unwrap_or_else(|| default_name(&path));
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(err(
            "name",
            "must be 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let host = match raw.host {
        None => None,
        Some(h) => {
            let key = host_key(&h);
            if key.is_empty() || url::Host::parse(&key).is_err() || key != h.to_ascii_lowercase() {
                return Err(err(
                    "host",
                    "must be a host name such as dash.example.com, without port",
                ));
            }
            Some(key)
        }
    };
    let url = Url::parse(&raw.upstream).map_err(|_| {
        err(
            "upstream",
            "not an absolute URL such as http://127.0.0.1:8501",
        )
    })?;
    if url.scheme() != "http" || url.host().is_none() {
        return Err(err("upstream", "must be an http:// URL with a host"));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(err(
            "upstream",
            "must not have a path or query; requests keep their own path",
        ));
    }
    let upstream: hyper::Uri = raw
        .upstream
        .trim_end_matches('/')
        .parse()
        .map_err(|_| err("upstream", "not a valid URL"))?;
    if raw.public && (raw.allow.is_some() || raw.allow_groups.is_some()) {
        return Err(err(
            "public",
            "a public route has no login, so it cannot have allow or allow_groups",
        ));
    }
    let key = if raw.allow_groups.is_some() {
        "allow_groups"
    } else {
        "allow"
    };
    let rule = check_rule(raw.allow, raw.allow_groups).map_err(|m| err(key, &m))?;
    let groups_filter = match raw.groups_header.as_deref() {
        None => GroupsFilter::All,
        Some(text) => GroupsFilter::parse(text)
            .ok_or_else(|| err("groups_header", "must be all, rule, none or prefix:TEXT"))?,
    };
    if groups_filter == GroupsFilter::Rule && rule.groups.is_empty() {
        return Err(err(
            "groups_header",
            "is `rule` but the route's rule names no groups",
        ));
    }
    Ok(Route {
        name,
        path,
        host,
        upstream,
        public: raw.public,
        compiled: rule.compile(),
        rule,
        groups_filter,
        forward_cookies: raw
            .forward_cookies
            .unwrap_or_else(|| vec!["_streamlit_*".to_string()]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, host: Option<&str>) -> Route {
        Route {
            name: default_name(path),
            path: path.into(),
            host: host.map(str::to_string),
            upstream: "http://127.0.0.1:1".parse().unwrap(),
            public: false,
            rule: Rule::default(),
            compiled: Rule::default().compile(),
            groups_filter: GroupsFilter::All,
            forward_cookies: vec![],
        }
    }

    fn found(t: &RouteTable, host: Option<&str>, path: &str) -> Option<(String, String)> {
        match t.find(host, path) {
            RouteMatch::Found(r, p) => Some((r.name.clone(), p)),
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
        assert!(matches!(no_root.find(None, "/ops"), RouteMatch::None));
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
            RouteMatch::None
        ));
        assert_eq!(host_key("Ops.Example.com:8443"), "ops.example.com");
        assert_eq!(host_key("[::1]:8080"), "[::1]");
    }
}
