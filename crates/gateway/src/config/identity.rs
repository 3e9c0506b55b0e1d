//! The `identity_headers.*` and `identity_token.*` sections: the names of the headers that
//! carry the signed-in user to the upstream, and the signed token's settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{duration_text, parse_duration, ConfigError, SpConfig};
use crate::identity_token::IdentityTokenConfig;

/// `identity_headers:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentityHeaders {
    user: Option<String>,
    email: Option<String>,
    name: Option<String>,
    groups: Option<String>,
    given_name: Option<String>,
    surname: Option<String>,
    idp: Option<String>,
    auth_time: Option<String>,
    authn_context: Option<String>,
}

/// `identity_token:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentityToken {
    enabled: Option<bool>,
    header: Option<String>,
    key_file: Option<PathBuf>,
    next_key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration_text")]
    lifetime: Option<String>,
}

/// Names of the identity headers sent upstream.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    /// The user key.
    pub user: hyper::header::HeaderName,
    /// The email.
    pub email: hyper::header::HeaderName,
    /// The display name.
    pub name: hyper::header::HeaderName,
    /// The groups, comma separated.
    pub groups: hyper::header::HeaderName,
    /// The given name, when configured (not sent by default).
    pub given_name: Option<hyper::header::HeaderName>,
    /// The surname, when configured (not sent by default).
    pub surname: Option<hyper::header::HeaderName>,
    /// The name of the IdP that made the session, when configured (not sent by default).
    pub idp: Option<hyper::header::HeaderName>,
    /// When the IdP signed the user in, in seconds since 1970, when configured (not sent by
    /// default).
    pub auth_time: Option<hyper::header::HeaderName>,
    /// How the IdP signed the user in (the AuthnContextClassRef), when configured (not sent by
    /// default).
    pub authn_context: Option<hyper::header::HeaderName>,
}

impl Default for IdentityHeaders {
    /// The default names: `X-Auth-User`, `X-Auth-Email`, `X-Auth-Name`, `X-Auth-Groups`, and
    /// none of the optional headers.
    fn default() -> IdentityHeaders {
        use hyper::header::HeaderName;
        IdentityHeaders {
            user: HeaderName::from_static("x-auth-user"),
            email: HeaderName::from_static("x-auth-email"),
            name: HeaderName::from_static("x-auth-name"),
            groups: HeaderName::from_static("x-auth-groups"),
            given_name: None,
            surname: None,
            idp: None,
            auth_time: None,
            authn_context: None,
        }
    }
}

impl IdentityHeaders {
    /// Every identity header name in use.
    pub fn all(&self) -> impl Iterator<Item = &hyper::header::HeaderName> {
        [&self.user, &self.email, &self.name, &self.groups]
            .into_iter()
            .chain(self.given_name.as_ref())
            .chain(self.surname.as_ref())
            .chain(self.idp.as_ref())
            .chain(self.auth_time.as_ref())
            .chain(self.authn_context.as_ref())
    }
}

/// Headers that carry HTTP framing, routing or credentials: an identity value there would
/// change what the request means to the upstream.
const RESERVED_HEADERS: [&str; 16] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "cookie",
    "authorization",
    "proxy-authorization",
    "forwarded",
    "x-real-ip",
    "origin",
    "expect",
];

/// A header name for identity: valid, not reserved, not of the `X-Forwarded-*` family.
fn identity_header_name(name: &str) -> Result<hyper::header::HeaderName, &'static str> {
    let name = hyper::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| "not a valid HTTP header name")?;
    let folded = name.as_str().replace('_', "-");
    if RESERVED_HEADERS.contains(&folded.as_str())
        || folded.starts_with("x-forwarded-")
        || folded.starts_with("sec-")
    {
        return Err("is a header with its own meaning in HTTP; choose another name");
    }
    Ok(name)
}

/// Checks `identity_headers.*` and `identity_token.*`, then that no two of them name the same
/// header (`_` and `-` compared as one).
pub(super) fn check_identity(
    raw: RawIdentityHeaders,
    token: RawIdentityToken,
    sp: &SpConfig,
    resolve: &dyn Fn(&Path) -> PathBuf,
    err: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<(IdentityHeaders, Option<IdentityTokenConfig>), ConfigError> {
    let header = |key: &str, value: Option<String>, default: &str| {
        let name = value.unwrap_or_else(|| default.to_string());
        identity_header_name(&name).map_err(|m| err(&format!("identity_headers.{key}"), m))
    };
    let optional = |key: &str, value: Option<String>| {
        value.map(|name| header(key, Some(name), "")).transpose()
    };
    let identity_headers = IdentityHeaders {
        user: header("user", raw.user, "X-Auth-User")?,
        email: header("email", raw.email, "X-Auth-Email")?,
        name: header("name", raw.name, "X-Auth-Name")?,
        groups: header("groups", raw.groups, "X-Auth-Groups")?,
        given_name: optional("given_name", raw.given_name)?,
        surname: optional("surname", raw.surname)?,
        idp: optional("idp", raw.idp)?,
        auth_time: optional("auth_time", raw.auth_time)?,
        authn_context: optional("authn_context", raw.authn_context)?,
    };

    let identity_token = check_identity_token(token, sp, resolve, err)?;
    let h = &identity_headers;
    let mut taken: Vec<(&str, &hyper::header::HeaderName)> = [
        ("identity_headers.user", Some(&h.user)),
        ("identity_headers.email", Some(&h.email)),
        ("identity_headers.name", Some(&h.name)),
        ("identity_headers.groups", Some(&h.groups)),
        ("identity_headers.given_name", h.given_name.as_ref()),
        ("identity_headers.surname", h.surname.as_ref()),
        ("identity_headers.idp", h.idp.as_ref()),
        ("identity_headers.auth_time", h.auth_time.as_ref()),
        ("identity_headers.authn_context", h.authn_context.as_ref()),
    ]
    .into_iter()
    .filter_map(|(key, name)| Some((key, name?)))
    .collect();
    if let Some(t) = &identity_token {
        taken.push(("identity_token.header", &t.header));
    }
    for (i, (key, name)) in taken.iter().enumerate() {
        let folded = |n: &hyper::header::HeaderName| n.as_str().replace('_', "-");
        if taken[..i]
            .iter()
            .any(|(_, other)| folded(other) == folded(name))
        {
            return Err(err(key, "is the same header as another identity header"));
        }
    }
    Ok((identity_headers, identity_token))
}

fn check_identity_token(
    raw: RawIdentityToken,
    sp: &SpConfig,
    resolve: &dyn Fn(&Path) -> PathBuf,
    err: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<Option<IdentityTokenConfig>, ConfigError> {
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let header = raw.header.unwrap_or_else(|| "X-Auth-Jwt".into());
    let header = identity_header_name(&header).map_err(|m| err("identity_token.header", m))?;
    let key_file = match raw.key_file {
        Some(p) => resolve(&p),
        None => sp
            .key_file
            .parent()
            .unwrap_or(Path::new("."))
            .join("jwt.key"),
    };
    let next_key_file = raw.next_key_file.map(|p| resolve(&p));
    if next_key_file.as_ref() == Some(&key_file) {
        return Err(err(
            "identity_token.next_key_file",
            "must be another file than identity_token.key_file",
        ));
    }
    let lifetime = match raw.lifetime.as_deref() {
        None => Duration::from_secs(300),
        Some(v) => parse_duration(v)
            .filter(|d| (10..=3600).contains(&d.as_secs()))
            .ok_or_else(|| {
                err(
                    "identity_token.lifetime",
                    "not a duration between 10s and 1h, such as 5m",
                )
            })?,
    };
    Ok(Some(IdentityTokenConfig {
        header,
        key_file,
        next_key_file,
        lifetime,
    }))
}
