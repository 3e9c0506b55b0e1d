//! The admin listener (`server.admin_listen`): `/health` and `/metrics`, apart from the public
//! listener so that neither is reachable by the people who use the apps.
//!
//! `/health` answers 200 with a JSON detail: `status` is `ok`, or `degraded` while the last
//! metadata refresh failed or the metadata in force is past its `validUntil` (the gateway keeps
//! serving logins with the last good trust either way). `/metrics` is the Prometheus text format:
//! audit records by event and reason, the metadata refresh counters, the expiry of every
//! trusted IdP certificate and of the SP certificate, and with the Redis store its refused
//! records, failovers and renewals.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use crate::federation::{self, CertificateInfo, Origin, RefreshStatus};
use crate::state::{unix_now, SharedState};

/// The admin URL map.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The `/health` document.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok`, or `degraded` when any IdP is.
    pub status: &'static str,
    /// The first IdP's trust in force (the only one, unless `idps:` lists several).
    pub idp: IdpHealth,
    /// Every IdP's, in config order.
    pub idps: Vec<IdpHealth>,
}

/// The part of `/health` about one IdP.
#[derive(Debug, Clone, Serialize)]
pub struct IdpHealth {
    /// The IdP's configured name.
    pub name: String,
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// The IdP entity ID.
    pub entity_id: String,
    /// Where the trust in force was read from.
    pub origin: Origin,
    /// When it was put in force (Unix seconds).
    pub loaded_at: i64,
    /// The metadata's `validUntil` (Unix seconds), if any.
    pub valid_until: Option<i64>,
    /// The trusted signing certificates.
    pub certificates: Vec<CertificateInfo>,
    /// The background refresh (URL metadata only).
    pub refresh: Option<RefreshStatus>,
}

/// The health of one IdP.
fn idp_health(federation: &crate::federation::Federation) -> IdpHealth {
    let trust = federation.current();
    let refresh = matches!(
        federation.idp.source,
        crate::config::MetadataSource::Url { .. }
    )
    .then(|| federation.status());
    let valid_until = trust.metadata.valid_until.map(|t| t.timestamp());
    let failing = refresh.as_ref().is_some_and(|r| r.consecutive_failures > 0)
        || trust.origin == Origin::BackingFile
            && refresh.as_ref().is_some_and(|r| r.last_success.is_none());
    let expired = valid_until.is_some_and(|t| t <= unix_now());
    IdpHealth {
        name: federation.idp.name.clone(),
        status: if failing || expired { "degraded" } else { "ok" },
        entity_id: trust.metadata.entity_id.clone(),
        origin: trust.origin,
        loaded_at: trust.loaded_at,
        valid_until,
        certificates: federation::certificates(&trust.metadata),
        refresh,
    }
}

/// Builds the health detail.
pub fn health_of(state: &SharedState) -> Health {
    let idps: Vec<IdpHealth> = state.idps.iter().map(idp_health).collect();
    // The same reading as the list's (a refresh may finish between two readings).
    let first = idps
        .first()
        .cloned()
        .unwrap_or_else(|| idp_health(state.first_idp()));
    Health {
        status: if idps.iter().all(|i| i.status == "ok") {
            "ok"
        } else {
            "degraded"
        },
        idp: first,
        idps,
    }
}

async fn health(State(state): State<SharedState>) -> Response {
    axum::Json(health_of(&state)).into_response()
}

/// A Prometheus label value, escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `/metrics` text.
pub fn metrics_text(state: &SharedState) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP saml_gateway_audit_records_total Audit records written, by event and reason.\n\
         # TYPE saml_gateway_audit_records_total counter"
    );
    for ((event, reason), count) in state.audit.counts() {
        let _ = writeln!(
            out,
            "saml_gateway_audit_records_total{{event=\"{}\",reason=\"{}\"}} {count}",
            label(&event),
            label(&reason)
        );
    }
    let _ = writeln!(
        out,
        "# HELP saml_gateway_audit_syncs_total Batches of audit records synced to disk (records \
         that arrive together share one fdatasync).\n\
         # TYPE saml_gateway_audit_syncs_total counter\n\
         saml_gateway_audit_syncs_total {}",
        state.audit.syncs()
    );
    if let Some(limiter) = &state.login_limit {
        let _ = writeln!(
            out,
            "# HELP saml_gateway_login_starts_refused_total Login starts refused by the budget \
             per client address (limits.login_starts_per_minute).\n\
             # TYPE saml_gateway_login_starts_refused_total counter\n\
             saml_gateway_login_starts_refused_total {}\n\
             # HELP saml_gateway_login_starts_untracked_total Login starts let through \
             unlimited because the budget's table of client addresses was full.\n\
             # TYPE saml_gateway_login_starts_untracked_total counter\n\
             saml_gateway_login_starts_untracked_total {}",
            limiter.refused_total(),
            limiter.untracked_total()
        );
    }
    if state.config.proxy_protocol {
        let _ = writeln!(
            out,
            "# HELP saml_gateway_proxy_protocol_refused_total Connections closed because they \
             did not begin with a good PROXY protocol header in time (server.proxy_protocol).\n\
             # TYPE saml_gateway_proxy_protocol_refused_total counter\n\
             saml_gateway_proxy_protocol_refused_total {}",
            crate::proxy_protocol::refused_total()
        );
    }
    let now = unix_now();
    let idps: Vec<(String, RefreshStatus, i64, Vec<CertificateInfo>)> = state
        .idps
        .iter()
        .map(|f| {
            let trust = f.current();
            (
                label(&f.idp.name),
                f.status(),
                trust.loaded_at,
                federation::certificates(&trust.metadata),
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "# HELP saml_gateway_idp_metadata_refresh_total IdP metadata fetches, by IdP and result.\n\
         # TYPE saml_gateway_idp_metadata_refresh_total counter"
    );
    for (name, status, _, _) in &idps {
        let _ = writeln!(
            out,
            "saml_gateway_idp_metadata_refresh_total{{idp=\"{name}\",result=\"success\"}} {}\n\
             saml_gateway_idp_metadata_refresh_total{{idp=\"{name}\",result=\"failure\"}} {}",
            status.successes_total, status.failures_total
        );
    }
    let _ = writeln!(
        out,
        "# HELP saml_gateway_idp_metadata_consecutive_failures Failed fetches since the last good one.\n\
         # TYPE saml_gateway_idp_metadata_consecutive_failures gauge"
    );
    for (name, status, _, _) in &idps {
        let _ = writeln!(
            out,
            "saml_gateway_idp_metadata_consecutive_failures{{idp=\"{name}\"}} {}",
            status.consecutive_failures
        );
    }
    let _ = writeln!(
        out,
        "# HELP saml_gateway_idp_metadata_loaded_timestamp_seconds When the trust in force was put in force.\n\
         # TYPE saml_gateway_idp_metadata_loaded_timestamp_seconds gauge"
    );
    for (name, _, loaded_at, _) in &idps {
        let _ = writeln!(
            out,
            "saml_gateway_idp_metadata_loaded_timestamp_seconds{{idp=\"{name}\"}} {loaded_at}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP saml_gateway_idp_certificate_expiry_timestamp_seconds notAfter of each trusted IdP signing certificate.\n\
         # TYPE saml_gateway_idp_certificate_expiry_timestamp_seconds gauge"
    );
    for (name, _, _, certs) in &idps {
        for cert in certs {
            if let Some(not_after) = cert.not_after {
                let _ = writeln!(
                    out,
                    "saml_gateway_idp_certificate_expiry_timestamp_seconds{{idp=\"{name}\",fingerprint=\"{}\"}} {not_after}",
                    label(&cert.fingerprint)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP saml_gateway_idp_certificates_expiring Trusted IdP signing certificates expiring within the given days (expired ones included).\n\
         # TYPE saml_gateway_idp_certificates_expiring gauge"
    );
    for (name, _, _, certs) in &idps {
        for days in federation::EXPIRY_WARNING_DAYS {
            let count = certs
                .iter()
                .filter(|c| c.not_after.is_some_and(|t| t - now < days * 86_400))
                .count();
            let _ = writeln!(
                out,
                "saml_gateway_idp_certificates_expiring{{idp=\"{name}\",within_days=\"{days}\"}} {count}"
            );
        }
    }
    if let Some(not_after) = state.sp_cert_not_after {
        let _ = writeln!(
            out,
            "# HELP saml_gateway_sp_certificate_expiry_timestamp_seconds notAfter of the SP certificate.\n\
             # TYPE saml_gateway_sp_certificate_expiry_timestamp_seconds gauge\n\
             saml_gateway_sp_certificate_expiry_timestamp_seconds {not_after}"
        );
    }
    if matches!(
        state.config.sessions.store,
        crate::config::StoreKind::Redis { .. }
    ) {
        let counters = state.store.counters();
        let _ = writeln!(
            out,
            "# HELP saml_gateway_session_records_refused_total Reads of session records in Redis \
             refused because no key of sessions.redis_record_key_file sealed them (forged, copied \
             under another session ID, or written without the key); each read counts; always 0 \
             without the key file.\n\
             # TYPE saml_gateway_session_records_refused_total counter\n\
             saml_gateway_session_records_refused_total {}\n\
             # HELP saml_gateway_redis_master_changes_total Moves to a new Redis master after a \
             Sentinel failover.\n\
             # TYPE saml_gateway_redis_master_changes_total counter\n\
             saml_gateway_redis_master_changes_total {}\n\
             # HELP saml_gateway_redis_renewals_total Connections put in force with a new Redis \
             or sentinel password or new TLS files (SIGHUP).\n\
             # TYPE saml_gateway_redis_renewals_total counter\n\
             saml_gateway_redis_renewals_total {}",
            counters.records_refused, counters.master_changes, counters.renewals
        );
    }
    out
}

async fn metrics(State(state): State<SharedState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics_text(&state),
    )
        .into_response()
}
