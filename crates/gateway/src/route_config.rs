//! The `routes` and `paths` sections of the config: parsed, checked, made into a
//! [`RouteTable`].
//!
//! Besides each route's own keys, the checks look at routes together: no two with the same
//! path (ignoring case, since one of them could never be reached), no two names alike, and no
//! two routes to one upstream with different access unless both say `shared_upstream: true`.
//! A route protects an upstream, not a path of it: a Streamlit app picks its pages over its
//! WebSocket, and any upstream may answer paths outside its prefix, so a weaker route to the
//! same upstream would open the stronger one's content.

use std::collections::BTreeMap;

use serde::Deserialize;
use url::Url;

use crate::authz::{GroupsFilter, Rule};
use crate::config::ConfigError;
use crate::routing::{host_key, Route, RouteTable};

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
    #[serde(default)]
    shared_upstream: bool,
    idp: Option<String>,
    #[serde(default, deserialize_with = "crate::config::duration_text")]
    max_authn_age: Option<String>,
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
    #[serde(default)]
    idps: Vec<String>,
}

/// The `paths` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    case_sensitive: Option<bool>,
}

/// Checks the `routes` and `paths` sections against the configured IdP names;
/// `err(key, message)` makes the error.
pub fn check_routes(
    raw: Vec<RawRoute>,
    paths: RawPaths,
    idp_names: &[&str],
    err: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<RouteTable, ConfigError> {
    if raw.is_empty() {
        return Err(err("routes", "at least one route is needed"));
    }
    let case_sensitive = paths.case_sensitive.unwrap_or(true);
    let mut routes: Vec<(Route, bool)> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].{k}");
        let shares = r.shared_upstream;
        let route = check_route(r, idp_names, &|k, m| err(&key(k), m))?;
        // Two paths alike but for case: in either case mode one of them is never reached.
        let same_path = |(o, _): &(Route, bool)| {
            o.host == route.host && o.path.eq_ignore_ascii_case(&route.path)
        };
        if routes.iter().any(same_path) {
            return Err(err(
                &key("path"),
                "the same path (and host), or one differing only in case, is used by an \
                 earlier route",
            ));
        }
        let weaker = routes.iter().find(|(o, shared)| {
            same_server(&o.upstream, &route.upstream)
                && !(*shared && shares)
                && (o.public != route.public || o.rule != route.rule || o.host != route.host)
        });
        // Nothing the app receives dates the sign-in, so `shared_upstream` (the app checks
        // access itself) cannot vouch for a second way in without a recent one.
        let older = routes.iter().find(|(o, _)| {
            same_server(&o.upstream, &route.upstream)
                && !o.public
                && !route.public
                && o.max_authn_age != route.max_authn_age
        });
        if let Some((o, _)) = older {
            return Err(err(
                &key("max_authn_age"),
                &format!(
                    "differs from that of route `{}`, which has the same upstream: the app \
                     would be reached without the recent sign-in one of them asks for (even \
                     with shared_upstream)",
                    o.name
                ),
            ));
        }
        if let Some((o, _)) = weaker {
            return Err(err(
                &key("upstream"),
                &format!(
                    "is also the upstream of route `{}` with other access; a route protects an \
                     upstream, not a path of it (a Streamlit app picks its pages over its \
                     WebSocket), so give each access level its own upstream, or set \
                     shared_upstream: true on both routes if the app checks access itself",
                    o.name
                ),
            ));
        }
        if routes.iter().any(|(o, _)| o.name == route.name) {
            return Err(err(
                &key("name"),
                "the same name is used by an earlier route; names must be unique",
            ));
        }
        routes.push((route, shares));
    }
    Ok(RouteTable::new(
        routes.into_iter().map(|(r, _)| r).collect(),
        case_sensitive,
    ))
}

/// True when two upstream URLs name the same server: host compared ignoring case, the
/// default port filled in (`h` and `h:80` are one server).
fn same_server(a: &hyper::Uri, b: &hyper::Uri) -> bool {
    let key = |u: &hyper::Uri| {
        (
            u.host().map(|h| h.to_ascii_lowercase()),
            u.port_u16().unwrap_or(80),
        )
    };
    key(a) == key(b)
}

/// A route's name when the config gives none: its path without slashes, `root` for `/`.
pub fn default_name(path: &str) -> String {
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
        (None, Some(groups)) if groups.is_empty() => {
            return Err("is empty; remove it to let every signed-in user in".into());
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
                idps: r.idps,
            };
            if rule.is_open() && rule.idps.is_empty() {
                return Err("has no entries; remove it to let every signed-in user in".into());
            }
            rule
        }
    };
    let blank = |v: &Vec<String>| v.iter().any(|s| s.trim().is_empty());
    if blank(&rule.idps)
        || blank(&rule.groups)
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
    idp_names: &[&str],
    err: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<Route, ConfigError> {
    let normal = crate::paths::normalize(&raw.path).ok();
    let in_normal_form = normal
        .as_deref()
        .is_some_and(|n| raw.path == n || (n != "/" && raw.path.strip_suffix('/') == Some(n)));
    if !in_normal_form || raw.path.contains(';') || raw.path.contains('%') {
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
            Some(key.into_owned())
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
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(
            "upstream",
            "must not carry a user name or password (the Host header would carry them)",
        ));
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
    let mut rule = check_rule(raw.allow, raw.allow_groups).map_err(|m| err(key, &m))?;
    let unknown = |name: &String| !idp_names.contains(&name.as_str());
    if let Some(i) = rule.idps.iter().position(unknown) {
        return Err(err(
            &format!("allow.idps[{i}]"),
            &format!("names no configured IdP (known: {})", idp_names.join(", ")),
        ));
    }
    if let Some(idp) = &raw.idp {
        if raw.public {
            return Err(err(
                "idp",
                "a public route has no login, so it cannot name an IdP",
            ));
        }
        if unknown(idp) {
            return Err(err(
                "idp",
                &format!("names no configured IdP (known: {})", idp_names.join(", ")),
            ));
        }
        if rule.idps.is_empty() {
            rule.idps.push(idp.clone());
        } else if !rule.idps.contains(idp) {
            return Err(err(
                "idp",
                "is not among the route's allow.idps, so no login it starts could pass",
            ));
        }
    }
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
    let max_authn_age = match raw.max_authn_age.as_deref() {
        None => None,
        Some(_) if raw.public => {
            return Err(err(
                "max_authn_age",
                "a public route has no login, so it cannot ask for a recent one",
            ))
        }
        Some(text) => Some(
            crate::config::parse_duration(text)
                .filter(|d| !d.is_zero() && d.as_secs() <= 366 * 86_400)
                .and_then(|d| i64::try_from(d.as_secs()).ok())
                .ok_or_else(|| err("max_authn_age", "not a duration such as 15m, 1h or 1d"))?,
        ),
    };
    Ok(Route {
        max_authn_age,
        idp: raw.idp,
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
