//! Login traces (`debug.trace_logins`): one JSON line per AuthnRequest sent and per Response
//! received, for the administrator who must find out why a login fails.
//!
//! A Response's line has the verdict and reason code, the reference ID shown on the error page
//! (also in the audit record), each check with the value expected and the value received
//! (Issuer, Destination, Recipient, Audience, InResponseTo, status), the signatures with the
//! fingerprint of the certificate in their KeyInfo next to the trusted fingerprints, the clock
//! difference, and the document with signature values, certificates and ciphertexts replaced
//! (attribute values too, unless `debug.trace_attribute_values`), cut at
//! [`MAX_TRACED_XML_BYTES`]. The file is mode 0600 (made so when it exists): it holds who signed
//! in. It is not the audit log: lines go through a bounded queue to one writer task, are not
//! synced, and are dropped (with a warning) when the queue is full, so a slow disk or a flood of
//! posted junk never holds a login.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use saml_sp::diagnose::{diagnose, redact, Expectations};
use serde_json::json;

use crate::state::AppState;

/// Longest document kept in a trace line (the rest is cut).
pub const MAX_TRACED_XML_BYTES: usize = 64 * 1024;
/// Lines waiting for the writer; more are dropped.
const QUEUE: usize = 256;

/// The trace file.
#[derive(Clone)]
pub struct TraceLog {
    path: PathBuf,
    lines: tokio::sync::mpsc::Sender<Vec<u8>>,
    attribute_values: bool,
}

/// What the ACS learnt about an attempt, for its trace line.
#[derive(Debug, Default)]
pub struct AcsTrace {
    /// The posted SAMLResponse form value.
    pub saml_response: Option<String>,
    /// The pending request the response had to answer, when one was found.
    pub request_id: Option<String>,
    /// The IdP the response was judged against, when one was picked.
    pub idp: Option<String>,
}

impl TraceLog {
    /// Opens (creating) the trace file for appending, mode 0600, and starts its writer.
    pub fn open(path: &Path, attribute_values: bool) -> std::io::Result<TraceLog> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            // Never through a symbolic link.
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        // An existing file keeps its mode on open: make it private now.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let (lines, mut queue) = tokio::sync::mpsc::channel::<Vec<u8>>(QUEUE);
        let shown = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut file: File = file;
            while let Some(line) = queue.blocking_recv() {
                if let Err(e) = file.write_all(&line) {
                    tracing::warn!(path = %shown.display(), error = %e, "could not write a login trace");
                }
            }
        });
        Ok(TraceLog {
            path: path.to_path_buf(),
            lines,
            attribute_values,
        })
    }

    async fn write(&self, mut line: serde_json::Value) {
        line["ts"] = json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let Ok(mut bytes) = serde_json::to_vec(&line) else {
            return;
        };
        bytes.push(b'\n');
        if self.lines.try_send(bytes).is_err() {
            tracing::warn!(path = %self.path.display(), "login trace queue full; a line was dropped");
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
        // Checks are shown against the IdP the response was judged against; when none was
        // picked (an unbound response), against the first one.
        let trust = attempt
            .idp
            .as_deref()
            .and_then(|name| state.idp(name))
            .unwrap_or_else(|| state.first_idp())
            .current();
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
            "xml": xml.as_deref().map(|x| cut(redact(x, self.attribute_values)
                .unwrap_or_else(|| "[not XML]".into()))),
        }))
        .await;
    }
}

/// `text` cut at [`MAX_TRACED_XML_BYTES`] (on a character boundary), marked when cut.
fn cut(mut text: String) -> String {
    if text.len() > MAX_TRACED_XML_BYTES {
        let mut end = MAX_TRACED_XML_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("[cut]");
    }
    text
}
