//! Login traces (`debug.trace_logins`): one JSON line per AuthnRequest sent and per Response
//! received, for the administrator who must find out why a login fails.
//!
//! A Response's line has the verdict and reason code, the reference ID shown on the error page
//! (also in the audit record), each check with the value expected and the value received
//! (Issuer, Destination, Recipient, Audience, InResponseTo, status), the signatures with the
//! fingerprint of the certificate in their KeyInfo next to the trusted fingerprints, the clock
//! difference, and the document with signature values, certificates and ciphertexts replaced
//! (attribute values too, unless `debug.trace_attribute_values`). The file is created mode 0600:
//! it holds who signed in. It is not the audit log: writes are not synced, and a failed write
//! is logged and never stops a login.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use saml_sp::diagnose::{diagnose, redact, Expectations};
use serde_json::json;

use crate::state::AppState;

/// The trace file.
#[derive(Clone)]
pub struct TraceLog {
    path: PathBuf,
    file: Arc<Mutex<File>>,
    attribute_values: bool,
}

/// What the ACS learnt about an attempt, for its trace line.
#[derive(Debug, Default)]
pub struct AcsTrace {
    /// The posted SAMLResponse form value.
    pub saml_response: Option<String>,
    /// The pending request the response had to answer, when one was found.
    pub request_id: Option<String>,
}

impl TraceLog {
    /// Opens (creating, mode 0600) the trace file for appending.
    pub fn open(path: &Path, attribute_values: bool) -> std::io::Result<TraceLog> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        Ok(TraceLog {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
            attribute_values,
        })
    }

    async fn write(&self, mut line: serde_json::Value) {
        line["ts"] = json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let Ok(mut bytes) = serde_json::to_vec(&line) else {
            return;
        };
        bytes.push(b'\n');
        let file = self.file.clone();
        let written = tokio::task::spawn_blocking(move || {
            let file = file
                .lock()
                .map_err(|_| std::io::Error::other("trace file lock poisoned"))?;
            (&*file).write_all(&bytes)
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::warn!(path = %self.path.display(), "could not write a login trace");
        }
    }

    /// Traces an AuthnRequest sent to the IdP.
    pub async fn authn_request(&self, request_id: &str, destination: &str, xml: &str) {
        self.write(json!({
            "event": "authn_request",
            "request_id": request_id,
            "destination": destination,
            "xml": xml,
        }))
        .await;
    }

    /// Traces a Response received at the ACS and the verdict on it.
    pub async fn response(
        &self,
        state: &AppState,
        attempt: &AcsTrace,
        verdict: Result<&str, &str>,
        reference: Option<&str>,
    ) {
        let trust = state.federation.current();
        let acs_url = state.config.acs_url();
        let xml = attempt.saml_response.as_deref().and_then(|value| {
            saml_sp::response::decode_post_value(value, state.config.max_saml_response_bytes).ok()
        });
        let checks = xml.as_deref().map(|xml| {
            diagnose(
                xml,
                &Expectations {
                    issuer: &trust.metadata.entity_id,
                    acs_url: &acs_url,
                    audience: &state.config.sp.entity_id,
                    in_response_to: attempt.request_id.as_deref(),
                    trusted: &trust.metadata.signing_certificates,
                    now: chrono::Utc::now(),
                },
            )
        });
        let (verdict, user, reason) = match verdict {
            Ok(user) => ("accepted", Some(user), None),
            Err(reason) => ("refused", None, Some(reason)),
        };
        self.write(json!({
            "event": "response",
            "verdict": verdict,
            "reason": reason,
            "user": user,
            "reference": reference,
            "request_id": attempt.request_id,
            "checks": checks,
            "xml": xml.as_deref().map(|x| redact(x, self.attribute_values)
                .unwrap_or_else(|| "[not XML]".into())),
        }))
        .await;
    }
}
