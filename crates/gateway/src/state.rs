//! The shared state every handler sees, built once from the checked config.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::http::HeaderMap;
use openssl::pkey::{PKey, Private};
use saml_sp::encryption::{ContentAlgorithm, Decryption};
use saml_sp::metadata::SpMetadata;
use saml_sp::response::{ServiceProvider, TrustedIdp, ValidationOptions};
use saml_sp::signature::AlgorithmPolicy;
use saml_sp::ResponseValidator;
use session_store::Store;

use crate::audit::{AuditLog, Record};
use crate::config::Config;
use crate::cookies::CookiePolicy;
use crate::identity::{self, Identity, IdentityCache, IdentitySources};
use crate::identity_token::TokenIssuer;
use crate::keys::SpKeys;
use crate::routing::RouteTable;

/// Everything the handlers share.
pub struct AppState {
    /// The checked configuration.
    pub config: Config,
    /// The IdPs, in the order configured (never empty), each with the trust in force
    /// (metadata and response validator), swapped by refreshes.
    pub idps: Vec<crate::federation::Federation>,
    /// Sessions, pending requests and replay cache.
    pub store: Arc<dyn Store>,
    /// The audit log.
    pub audit: AuditLog,
    /// Cookie names and attributes.
    pub cookies: CookiePolicy,
    /// The SP metadata document served at `/saml/metadata`.
    pub sp_metadata_xml: String,
    /// The key AuthnRequests are signed with, when signing is on.
    pub request_signing_key: Option<PKey<Private>>,
    /// The SP key: signs Single Logout messages (always signed).
    pub sp_key: PKey<Private>,
    /// Keep-alive connections to the upstreams.
    pub upstreams: Arc<crate::upstream::Pool>,
    /// The routes in force: those of the config, or of the last successful reload.
    pub routes: ArcSwap<RouteTable>,
    /// Signs identity tokens, unless they are switched off.
    pub tokens: Option<TokenIssuer>,
    /// Access decisions and identity headers per session and route.
    pub identities: IdentityCache,
    /// The header names a client may not send (the identity headers and their kin).
    pub claim_names: crate::proxy::ClaimNames,
    /// When the SP certificate expires (Unix seconds), for the metrics.
    pub sp_cert_not_after: Option<i64>,
    /// The login trace file, when `debug.trace_logins` is set.
    pub trace: Option<crate::trace::TraceLog>,
    /// The budget of login starts per client address, unless switched off.
    pub login_limit: Option<crate::login_limit::LoginLimiter>,
    /// Requests with refused sessions not yet audited one by one (`session_refused`).
    pub session_refusals: crate::session_refusals::SessionRefusals,
}

/// The state as handlers receive it.
pub type SharedState = Arc<AppState>;

impl AppState {
    /// The IdP named `name`.
    pub fn idp(&self, name: &str) -> Option<&crate::federation::Federation> {
        self.idps.iter().find(|f| f.idp.name == name)
    }

    /// The IdP whose metadata in force has entity ID `entity_id`.
    pub fn idp_by_entity_id(&self, entity_id: &str) -> Option<&crate::federation::Federation> {
        self.idps.iter().find(|f| f.entity_id == entity_id)
    }

    /// The IdP that made `session`: by its name, or by its entity ID for a session recorded
    /// without one. Both must agree, so that a renamed or re-pointed IdP never inherits
    /// another's sessions.
    pub fn session_idp(
        &self,
        session: &session_store::SessionRecord,
    ) -> Option<&crate::federation::Federation> {
        let found = if session.idp_name.is_empty() {
            self.idp_by_entity_id(&session.idp)
        } else {
            self.idp(&session.idp_name)
        }?;
        (found.entity_id == session.idp).then_some(found)
    }

    /// Whether `session` may use a route whose `max_authn_age` is `max_age` at `now`: always
    /// without one; else when its sign-in at the IdP is that recent, by the rule the ACS
    /// applies ([`session_store::signed_in_within`], with that IdP's clock skew).
    pub fn signed_in_recently(
        &self,
        max_age: Option<i64>,
        session: &session_store::SessionRecord,
        now: i64,
    ) -> bool {
        let Some(max_age) = max_age else {
            return true;
        };
        let skew = self.session_idp(session).map_or(0, |f| {
            i64::try_from(f.idp.clock_skew.as_secs()).unwrap_or(0)
        });
        session.signed_in_within(max_age, skew, now)
    }

    /// The IdP a pending login or sign-out was sent to; one recorded before IdPs had names
    /// belongs to the only IdP.
    pub fn pending_idp(
        &self,
        pending: &session_store::PendingRequest,
    ) -> Option<&crate::federation::Federation> {
        match (pending.idp.as_str(), self.idps.as_slice()) {
            ("", [only]) => Some(only),
            (name, _) => self.idp(name),
        }
    }

    /// The first IdP of the config: the one for messages that name no IdP.
    pub fn first_idp(&self) -> &crate::federation::Federation {
        &self.idps[0]
    }

    /// The decision and identity headers for session `id` at `route` of the table numbered
    /// `generation`: from the cache, or built now and cached.
    pub fn identity(
        &self,
        id: &session_store::SessionId,
        session: &session_store::SessionRecord,
        route: &crate::routing::Route,
        generation: u64,
        now: i64,
    ) -> Arc<Identity> {
        if let Some(found) = self.identities.get(id, &route.name, generation, now) {
            return found;
        }
        let sources = IdentitySources {
            names: &self.config.identity_headers,
            tokens: self
                .config
                .identity_token
                .as_ref()
                .zip(self.tokens.as_ref()),
        };
        let built = Arc::new(identity::build(&sources, session, route, generation, now));
        self.identities.put(id, built.clone(), now);
        built
    }
}

/// Builds the SP metadata document for `config` and `keys`.
pub fn sp_metadata(config: &Config, keys: &SpKeys) -> anyhow::Result<String> {
    Ok(SpMetadata {
        entity_id: config.sp.entity_id.clone(),
        acs_url: config.acs_url(),
        slo_url: config
            .idps
            .iter()
            .any(|i| i.single_logout)
            .then(|| config.slo_url()),
        signing_certificates: keys
            .all()
            .map(|k| k.cert.to_der())
            .collect::<Result<_, _>>()?,
        encryption_certificates: if config.sp.encrypted_assertions {
            keys.all()
                .map(|k| k.cert.to_der())
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        },
        encryption_methods: ContentAlgorithm::uris(
            config.idps.iter().any(|i| i.allow_cbc_encryption),
        )
        .into_iter()
        .map(str::to_string)
        .collect(),
        authn_requests_signed: config.sp.sign_authn_requests,
        name_id_formats: config
            .idps
            .iter()
            .filter_map(|i| i.name_id_format.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
    }
    .to_xml())
}

/// The response validator for this SP and `idp` with its `metadata`, as `/saml/acs` uses it.
pub fn validator(
    config: &Config,
    keys: &SpKeys,
    idp: &crate::config::IdpConfig,
    metadata: &saml_sp::metadata::IdpMetadata,
) -> ResponseValidator {
    ResponseValidator {
        sp: ServiceProvider {
            entity_id: config.sp.entity_id.clone(),
            acs_url: config.acs_url(),
        },
        idp: TrustedIdp {
            entity_id: metadata.entity_id.clone(),
            certificates: metadata.signing_certificates.clone(),
        },
        options: ValidationOptions {
            clock_skew: idp.clock_skew,
            allow_unsolicited: idp.allow_unsolicited,
            algorithms: AlgorithmPolicy {
                allow_sha1: idp.allow_sha1,
            },
            max_message_bytes: config.max_saml_response_bytes,
            decryption: config.sp.encrypted_assertions.then(|| Decryption {
                keys: keys.all().map(|k| k.key.clone()).collect(),
                allow_cbc: idp.allow_cbc_encryption,
            }),
            accepted_authn_contexts: idp.authn_context.clone(),
            ..ValidationOptions::default()
        },
    }
}

impl AppState {
    /// Assembles the state around the IdP metadata read at start-up (`initial`, one per IdP
    /// of the config, in its order).
    pub fn new(
        config: Config,
        keys: SpKeys,
        initial: Vec<crate::federation::Initial>,
        store: Arc<dyn Store>,
        audit: AuditLog,
    ) -> anyhow::Result<AppState> {
        anyhow::ensure!(
            initial.len() == config.idps.len() && !initial.is_empty(),
            "one IdP metadata document per configured IdP is needed"
        );
        let idps = config
            .idps
            .iter()
            .zip(initial)
            .map(|(idp, initial)| {
                crate::federation::Federation::new(
                    idp.clone(),
                    validator(&config, &keys, idp, &initial.metadata),
                    initial,
                )
            })
            .collect();
        let tokens = match &config.identity_token {
            Some(t) => Some(
                TokenIssuer::load(t, &config.public_url)
                    .with_context(|| format!("{}: identity_token", config.file.display()))?,
            ),
            None => None,
        };
        let sp_cert_not_after = keys
            .cert
            .to_der()
            .ok()
            .and_then(|der| saml_sp::metadata::certificate_not_after(&der));
        let trace = match &config.trace {
            Some(t) => Some(
                crate::trace::TraceLog::open(&t.file, t.attribute_values).with_context(|| {
                    format!(
                        "{}: debug.trace_logins: cannot open {}",
                        config.file.display(),
                        t.file.display()
                    )
                })?,
            ),
            None => None,
        };
        Ok(AppState {
            trace,
            login_limit: config
                .login_starts_per_minute
                .map(crate::login_limit::LoginLimiter::new),
            session_refusals: Default::default(),
            sp_cert_not_after,
            routes: ArcSwap::from_pointee(config.routes.clone()),
            tokens,
            identities: IdentityCache::default(),
            claim_names: crate::proxy::ClaimNames::new(
                &config.identity_headers,
                config.identity_token.as_ref().map(|t| &t.header),
            ),
            sp_metadata_xml: sp_metadata(&config, &keys)?,
            cookies: CookiePolicy::new(config.secure_cookies),
            request_signing_key: config.sp.sign_authn_requests.then(|| keys.key.clone()),
            sp_key: keys.key.clone(),
            idps,
            store,
            audit,
            upstreams: Arc::default(),
            config,
        })
    }
}

/// A fresh audit record pre-filled with what the request says about the client.
pub fn audit_record(peer: SocketAddr, headers: &HeaderMap, path: &str) -> Record {
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(256).collect());
    Record {
        client_ip: Some(peer.ip().to_string()),
        user_agent,
        path: Some(path.chars().take(512).collect()),
        idp: None,
        ..Record::default()
    }
}

/// A short random reference for an error page and its audit record.
pub fn reference() -> String {
    session_store::hex(&session_store::random_bytes::<6>().unwrap_or_default())
}

/// Hash of a session ID for audit records: never the ID itself.
pub fn session_hash(id: &str) -> String {
    session_store::session_hash(id)
}

/// Current Unix time in seconds (rounded down, as `chrono`'s `timestamp` does), read from the
/// system clock without building a calendar date.
pub fn unix_now() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        // A clock set before 1970.
        Err(before) => {
            let before = before.duration();
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            -whole - i64::from(before.subsec_nanos() > 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_now_tells_the_second_chrono_tells() {
        let before = chrono::Utc::now().timestamp();
        let now = unix_now();
        let after = chrono::Utc::now().timestamp();
        assert!(before <= now && now <= after, "{before} {now} {after}");
    }
}
