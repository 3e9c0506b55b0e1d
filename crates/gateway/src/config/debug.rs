//! The `debug.*` section: login tracing ([`TraceConfig`]), off unless it names a file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// `debug:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDebug {
    trace_logins: Option<PathBuf>,
    #[serde(default)]
    trace_attribute_values: bool,
}

/// Login tracing (`debug.trace_logins`).
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// The JSON Lines file each login attempt is described in.
    pub file: PathBuf,
    /// Keep attribute values in the traced documents (off: replaced by `[value]`).
    pub attribute_values: bool,
}

/// Checks `debug.*`: `trace_attribute_values` needs `trace_logins`, whose file must not be
/// `audit_file`.
pub(super) fn check_debug(
    raw: RawDebug,
    audit_file: &Path,
    resolve: &dyn Fn(&Path) -> PathBuf,
    err: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<Option<TraceConfig>, ConfigError> {
    if raw.trace_attribute_values && raw.trace_logins.is_none() {
        return Err(err(
            "debug.trace_attribute_values",
            "applies only with debug.trace_logins",
        ));
    }
    let trace = raw.trace_logins.as_ref().map(|file| TraceConfig {
        file: resolve(file),
        attribute_values: raw.trace_attribute_values,
    });
    if trace
        .as_ref()
        .is_some_and(|t| t.file == resolve(audit_file))
    {
        return Err(err(
            "debug.trace_logins",
            "is the audit file; give the trace a file of its own",
        ));
    }
    Ok(trace)
}
