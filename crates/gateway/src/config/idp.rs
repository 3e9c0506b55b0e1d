//! The `idp:` / `idps:` section: each trusted IdP's metadata source, attribute mapping and
//! switches ([`IdpConfig`]), checked one IdP at a time by [`check_idps`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::metadata::{
    check_metadata_url, read_certificates, read_metadata_file, with_extra_certs,
};
use super::{duration_text, parse_duration, ConfigError, MetadataSource, SecretText};
use crate::attributes::{AttributeMapping, Preset};

/// One IdP (`idp:` or an item of `idps:`) as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdp {
    name: Option<String>,
    label: Option<String>,
    metadata_file: Option<PathBuf>,
    metadata_url: Option<String>,
    metadata_proxy: Option<SecretText>,
    #[serde(default, deserialize_with = "duration_text")]
    refresh_interval: Option<String>,
    metadata_signing_cert: Option<PathBuf>,
    extra_signing_certs: Option<PathBuf>,
    entity_id: Option<String>,
    preset: Option<String>,
    user_from: Option<String>,
    authn_context: Option<Vec<String>>,
    attributes: Option<RawAttributes>,
    #[serde(default)]
    allow_sha1: bool,
    #[serde(default)]
    allow_unsolicited: bool,
    single_logout: Option<bool>,
    #[serde(default, deserialize_with = "duration_text")]
    unsolicited_max_age: Option<String>,
    unsolicited_relay_state: Option<Vec<String>>,
    #[serde(default)]
    allow_cbc_encryption: bool,
    clock_skew: Option<String>,
    name_id_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawAttributes {
    Preset(String),
    Explicit(RawAttributeNames),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttributeNames {
    preset: Option<String>,
    user: Option<String>,
    email: Option<String>,
    display_name: Option<String>,
    groups: Option<String>,
    given_name: Option<String>,
    surname: Option<String>,
}

/// A trusted IdP.
#[derive(Debug, Clone)]
pub struct IdpConfig {
    /// The name routes, rules, the chooser and `?idp=` use (`default` for a single `idp:`).
    pub name: String,
    /// The text the chooser page shows for it.
    pub label: String,
    /// Where the metadata comes from.
    pub source: MetadataSource,
    /// The IdP entity ID to pick out of the metadata (required for aggregates).
    pub entity_id: Option<String>,
    /// Certificates (DER) that must sign the metadata; empty: metadata is not signature-checked.
    pub metadata_signing_certs: Vec<saml_sp::CertificateDer>,
    /// Signing certificates trusted besides the metadata's (`idp.extra_signing_certs`): for
    /// an IdP that publishes only its active certificate, the next one ahead of a rollover.
    pub extra_signing_certs: Vec<saml_sp::CertificateDer>,
    /// The vendor preset the attribute mapping started from.
    pub preset: Preset,
    /// How attributes map to user, email, name and groups.
    pub attributes: AttributeMapping,
    /// AuthnContextClassRefs to request (Comparison `exact`); empty: no RequestedAuthnContext.
    pub authn_context: Vec<String>,
    /// Accept RSA-SHA1 / SHA-1 (legacy IdPs).
    pub allow_sha1: bool,
    /// Accept IdP-initiated (unsolicited) responses.
    pub allow_unsolicited: bool,
    /// Speak Single Logout with the IdP (when its metadata has an SLO endpoint); off: sign-out
    /// ends only the session here.
    pub single_logout: bool,
    /// Oldest IssueInstant an unsolicited response may have (before clock skew).
    pub unsolicited_max_age: Duration,
    /// Local path prefixes an unsolicited response's RelayState may send the user to; any
    /// other RelayState sends them to `/`.
    pub unsolicited_relay_state: Vec<String>,
    /// Accept AES-CBC encrypted assertions (only inside a signed Response).
    pub allow_cbc_encryption: bool,
    /// Clock skew allowed on time checks.
    pub clock_skew: Duration,
    /// NameIDPolicy Format to request, if any.
    pub name_id_format: Option<String>,
}

/// Checks the IdPs: `idp:` (one) or `idps:` (a list), never both.
pub(super) fn check_idps(
    one: Option<RawIdp>,
    many: Option<Vec<RawIdp>>,
    file: &Path,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Vec<IdpConfig>, ConfigError> {
    let err = |key: &str, message: &str| ConfigError {
        file: file.to_path_buf(),
        key: key.to_string(),
        message: message.to_string(),
    };
    let idps = match (one, many) {
        (Some(_), Some(_)) => {
            return Err(err(
                "idps",
                "is set beside idp; list every IdP under idps (or keep the one under idp)",
            ))
        }
        (None, None) => return Err(err("idp", "is required (or idps, a list of IdPs)")),
        (Some(raw), None) => vec![check_idp(raw, "idp", false, file, resolve)?],
        (None, Some(list)) if list.is_empty() => {
            return Err(err("idps", "must list at least one IdP"))
        }
        (None, Some(list)) => list
            .into_iter()
            .enumerate()
            .map(|(i, raw)| check_idp(raw, &format!("idps[{i}]"), true, file, resolve))
            .collect::<Result<Vec<_>, _>>()?,
    };
    for (i, idp) in idps.iter().enumerate() {
        if let Some(j) = idps[..i].iter().position(|o| o.name == idp.name) {
            return Err(err(
                &format!("idps[{i}].name"),
                &format!("`{}` is also the name of idps[{j}]", idp.name),
            ));
        }
    }
    Ok(idps)
}

/// True when `name` can name an IdP: 1 to 32 of a-z, 0-9, `-` and `_`, not starting with `-`
/// or `_` (it appears in URLs, cookies, metrics labels and rules).
pub fn is_idp_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with(['-', '_'])
}

fn check_idp(
    raw: RawIdp,
    prefix: &str,
    listed: bool,
    file: &Path,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<IdpConfig, ConfigError> {
    // Keys are written as `idp.x` below and reported under this IdP's own prefix.
    let err = |key: &str, message: String| ConfigError {
        file: file.to_path_buf(),
        key: format!("{prefix}{}", key.strip_prefix("idp").unwrap_or(key)),
        message,
    };
    let name = match raw.name {
        Some(n) if is_idp_name(&n) => n,
        Some(_) => {
            return Err(err(
                "idp.name",
                "must be 1 to 32 of a-z, 0-9, - and _, starting with a letter or digit".into(),
            ))
        }
        None if listed => {
            return Err(err(
                "idp.name",
                "is required for each IdP of idps (such as staff or partners)".into(),
            ))
        }
        None => "default".to_string(),
    };
    let label = match raw.label {
        Some(l) if l.trim().is_empty() || l.chars().count() > 100 => {
            return Err(err("idp.label", "must be 1 to 100 characters".into()))
        }
        Some(l) => l,
        None => name.clone(),
    };
    let metadata_signing_certs = match &raw.metadata_signing_cert {
        None => Vec::new(),
        Some(path) => {
            let path = resolve(path);
            read_certificates(&path).map_err(|m| {
                err(
                    "idp.metadata_signing_cert",
                    format!("{}: {m}", path.display()),
                )
            })?
        }
    };
    let extra_signing_certs = match &raw.extra_signing_certs {
        None => Vec::new(),
        Some(path) => {
            let path = resolve(path);
            read_certificates(&path).map_err(|m| {
                err(
                    "idp.extra_signing_certs",
                    format!("{}: {m}", path.display()),
                )
            })?
        }
    };
    let source = match (&raw.metadata_url, &raw.metadata_file) {
        (None, None) => {
            return Err(err(
                "idp.metadata_file",
                "is required (or idp.metadata_url with idp.metadata_file as its backing copy)"
                    .into(),
            ))
        }
        (None, Some(file)) => {
            if raw.refresh_interval.is_some() {
                return Err(err(
                    "idp.refresh_interval",
                    "applies only with idp.metadata_url; a metadata_file is read again at SIGHUP"
                        .into(),
                ));
            }
            if raw.metadata_proxy.is_some() {
                return Err(err(
                    "idp.metadata_proxy",
                    "applies only with idp.metadata_url; a metadata_file is not fetched".into(),
                ));
            }
            let path = resolve(file);
            let metadata =
                read_metadata_file(&path, raw.entity_id.as_deref(), &metadata_signing_certs)
                    .map_err(|m| err("idp.metadata_file", m))?;
            let metadata = with_extra_certs(metadata, &extra_signing_certs);
            MetadataSource::File { path, metadata }
        }
        (Some(_), None) => {
            return Err(err(
                "idp.metadata_file",
                "is required with idp.metadata_url: it keeps the last good copy of the metadata, \
                 so that the gateway starts while the URL does not answer"
                    .into(),
            ))
        }
        (Some(text), Some(file)) => {
            let proxy = raw
                .metadata_proxy
                .as_ref()
                .map(|text| crate::fetch_proxy::MetadataProxy::parse(&text.0))
                .transpose()
                .map_err(|m| err("idp.metadata_proxy", m))?;
            let url = check_metadata_url(text, !metadata_signing_certs.is_empty(), proxy.is_some())
                .map_err(|m| err("idp.metadata_url", m))?;
            let refresh_interval = match raw.refresh_interval.as_deref() {
                None => Duration::from_secs(3600),
                Some(v) => parse_duration(v)
                    .filter(|d| (1..=7 * 86_400).contains(&d.as_secs()))
                    .ok_or_else(|| {
                        err(
                            "idp.refresh_interval",
                            "not a duration between 1s and 7d, such as 1h".into(),
                        )
                    })?,
            };
            MetadataSource::Url {
                url,
                refresh_interval,
                backing_file: resolve(file),
                proxy,
            }
        }
    };

    let top_preset = match raw.preset.as_deref() {
        None => None,
        Some(name) => {
            Some(Preset::parse(name).ok_or_else(|| err("idp.preset", unknown_preset(name)))?)
        }
    };
    let attributes_preset = match &raw.attributes {
        Some(RawAttributes::Preset(name)) => Some((name.as_str(), "idp.attributes")),
        Some(RawAttributes::Explicit(names)) => names
            .preset
            .as_deref()
            .map(|p| (p, "idp.attributes.preset")),
        None => None,
    };
    if let (Some(_), Some((_, key))) = (top_preset, attributes_preset) {
        return Err(err(
            key,
            "names a preset while idp.preset is set; keep one of them".into(),
        ));
    }
    let preset = match attributes_preset {
        None => top_preset.unwrap_or(Preset::Generic),
        Some((name, key)) => Preset::parse(name).ok_or_else(|| err(key, unknown_preset(name)))?,
    };
    let mut attributes = AttributeMapping::preset(preset);
    if let Some(RawAttributes::Explicit(names)) = raw.attributes {
        if raw.user_from.is_some() && names.user.is_some() {
            return Err(err(
                "idp.user_from",
                "and idp.attributes.user both name the user key; keep one of them".into(),
            ));
        }
        let overrides: BTreeMap<&str, Option<String>> = [
            ("user", names.user),
            ("email", names.email),
            ("display_name", names.display_name),
            ("groups", names.groups),
            ("given_name", names.given_name),
            ("surname", names.surname),
        ]
        .into_iter()
        .collect();
        for (field, value) in overrides {
            if let Some(v) = value {
                if v.trim().is_empty() {
                    return Err(err(
                        &format!("idp.attributes.{field}"),
                        "must not be empty".into(),
                    ));
                }
                attributes.set(field, v);
            }
        }
    }
    if let Some(from) = raw.user_from {
        if from.trim().is_empty() {
            return Err(err(
                "idp.user_from",
                "must be name_id or an attribute Name".into(),
            ));
        }
        attributes.set("user", from);
    }
    // Trimmed as the assertion's AuthnContextClassRef is, so that the two compare.
    let authn_context: Vec<String> = raw
        .authn_context
        .unwrap_or_default()
        .iter()
        .map(|c| c.trim().to_string())
        .collect();
    if let Some(i) = authn_context.iter().position(String::is_empty) {
        return Err(err(
            &format!("idp.authn_context[{i}]"),
            "must be an AuthnContextClassRef URI".into(),
        ));
    }
    let clock_skew = match raw.clock_skew.as_deref() {
        None => Duration::from_secs(180),
        Some(v) => parse_duration(v)
            .filter(|d| d.as_secs() <= 900)
            .ok_or_else(|| {
                err(
                    "idp.clock_skew",
                    "not a duration of at most 15m, such as 3m".into(),
                )
            })?,
    };
    if !raw.allow_unsolicited
        && (raw.unsolicited_max_age.is_some() || raw.unsolicited_relay_state.is_some())
    {
        let key = if raw.unsolicited_max_age.is_some() {
            "idp.unsolicited_max_age"
        } else {
            "idp.unsolicited_relay_state"
        };
        return Err(err(
            key,
            "applies only with idp.allow_unsolicited: true".into(),
        ));
    }
    let unsolicited_max_age = match raw.unsolicited_max_age.as_deref() {
        None => Duration::from_secs(120),
        Some(v) => parse_duration(v)
            .filter(|d| (1..=300).contains(&d.as_secs()))
            .ok_or_else(|| {
                err(
                    "idp.unsolicited_max_age",
                    "not a duration between 1s and 5m, such as 2m".into(),
                )
            })?,
    };
    let unsolicited_relay_state = raw.unsolicited_relay_state.unwrap_or_default();
    for (i, prefix) in unsolicited_relay_state.iter().enumerate() {
        if !crate::redirect::is_canonical_path(prefix) || prefix.contains(['?', '#']) {
            return Err(err(
                &format!("idp.unsolicited_relay_state[{i}]"),
                "must be a local path such as /sales (one leading /, no //, no .., no query)"
                    .into(),
            ));
        }
    }
    Ok(IdpConfig {
        name,
        label,
        single_logout: raw.single_logout.unwrap_or(true),
        unsolicited_max_age,
        unsolicited_relay_state,
        source,
        entity_id: raw.entity_id,
        metadata_signing_certs,
        extra_signing_certs,
        preset,
        attributes,
        authn_context,
        allow_sha1: raw.allow_sha1,
        allow_unsolicited: raw.allow_unsolicited,
        allow_cbc_encryption: raw.allow_cbc_encryption,
        clock_skew,
        name_id_format: raw.name_id_format,
    })
}

fn unknown_preset(name: &str) -> String {
    format!(
        "unknown preset `{}`; use one of {}",
        name.escape_debug(),
        Preset::NAMES.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{error_of, load, with_idps, GOOD};

    #[test]
    fn several_idps_load_with_names_labels_and_indexed_keys() {
        let two = with_idps(
            "  - name: staff\n    label: Staff sign-in\n    metadata_file: idp.xml\n    allow_sha1: true\n  - name: partners\n    metadata_file: idp.xml\n",
        );
        let (_dir, result) = load(&two);
        let c = result.unwrap();
        assert!(c.idps_listed);
        let names: Vec<(&str, &str)> = c
            .idps
            .iter()
            .map(|i| (i.name.as_str(), i.label.as_str()))
            .collect();
        assert_eq!(
            names,
            [("staff", "Staff sign-in"), ("partners", "partners")]
        );
        assert!(c.idps[0].allow_sha1 && !c.idps[1].allow_sha1);
        assert_eq!(
            c.idp_key(&c.idps[1], "metadata_file"),
            "idps[1].metadata_file"
        );
        let (_dir, one) = load(GOOD);
        let one = one.unwrap();
        assert_eq!(one.idps[0].name, "default");
        assert_eq!(
            one.idp_key(&one.idps[0], "metadata_file"),
            "idp.metadata_file"
        );

        let e = error_of(&with_idps("  - metadata_file: idp.xml\n"));
        assert_eq!(e.key, "idps[0].name");
        let e = error_of(&with_idps(
            "  - name: a\n    metadata_file: idp.xml\n  - name: a\n    metadata_file: idp.xml\n",
        ));
        assert_eq!(e.key, "idps[1].name");
        assert!(e.message.contains("idps[0]"), "{}", e.message);
        let e = error_of(&with_idps("  - name: Staff!\n    metadata_file: idp.xml\n"));
        assert_eq!(e.key, "idps[0].name");
        let e = error_of(&with_idps("  - name: b\n    metadata_file: nowhere.xml\n"));
        assert_eq!(e.key, "idps[0].metadata_file");
        let e = error_of(&with_idps(
            "  - name: b\n    metadata_file: idp.xml\n    clock_skew: 1h\n",
        ));
        assert_eq!(e.key, "idps[0].clock_skew");
        assert_eq!(
            error_of(&with_idps("  []\n").replace("idps:\n  []", "idps: []")).key,
            "idps"
        );
        let both = GOOD.replace(
            "routes:",
            "idps:\n  - name: b\n    metadata_file: idp.xml\nroutes:",
        );
        assert_eq!(error_of(&both).key, "idps");
        assert_eq!(
            error_of(&GOOD.replace("idp:\n  metadata_file: idp.xml\n", "")).key,
            "idp"
        );
    }

    #[tokio::test]
    async fn two_idps_with_one_entity_id_stop_start_up() {
        let (_dir, c) = load(&with_idps(
            "  - name: a\n    metadata_file: idp.xml\n  - name: b\n    metadata_file: idp.xml\n",
        ));
        let c = c.unwrap();
        let e = crate::federation::initial_all(&c, false).await.unwrap_err();
        assert_eq!(e.key, "idps[1].metadata_file");
        assert!(
            e.message.contains("the same IdP entity ID as idps[0]"),
            "{}",
            e.message
        );
    }

    #[test]
    fn metadata_urls() {
        let with = |lines: &str| {
            GOOD.replace(
                "  metadata_file: idp.xml\n",
                &format!("  metadata_file: idp.xml\n{lines}"),
            )
        };
        let (_dir, c) = load(&with(
            "  metadata_url: https://idp.example/md\n  refresh_interval: 10m\n  metadata_proxy: http://proxy.corp:3128\n",
        ));
        match c.unwrap().idps.remove(0).source {
            MetadataSource::Url {
                url,
                refresh_interval,
                backing_file,
                proxy,
            } => {
                assert_eq!(url.as_str(), "https://idp.example/md");
                assert_eq!(refresh_interval, Duration::from_secs(600));
                assert!(backing_file.ends_with("idp.xml"));
                assert_eq!(proxy.unwrap().shown(), "http://proxy.corp:3128/");
            }
            other => panic!("{other:?}"),
        }
        // Loopback http is fine; http elsewhere only with a signature check.
        assert!(load(&with("  metadata_url: http://127.0.0.1:9/md\n"))
            .1
            .is_ok());
        for (lines, key, says) in [
            (
                "  metadata_url: http://idp.example/md\n",
                "idp.metadata_url",
                "plain http",
            ),
            (
                "  metadata_url: ftp://idp.example/md\n",
                "idp.metadata_url",
                "https://",
            ),
            ("  metadata_url: nowhere\n", "idp.metadata_url", "not a URL"),
            (
                "  metadata_url: https://idp.example/md\n  refresh_interval: 0s\n",
                "idp.refresh_interval",
                "between 1s and 7d",
            ),
            (
                "  refresh_interval: 1h\n",
                "idp.refresh_interval",
                "only with",
            ),
            (
                "  metadata_proxy: http://proxy.corp:3128\n",
                "idp.metadata_proxy",
                "only with",
            ),
            (
                "  metadata_url: https://idp.example/md\n  metadata_proxy: http://u:secret@proxy.corp\n",
                "idp.metadata_proxy",
                "must name the port",
            ),
            (
                "  metadata_url: http://127.0.0.1:9/md\n  metadata_proxy: http://proxy.corp:3128\n",
                "idp.metadata_url",
                "plain http",
            ),
            (
                "  metadata_signing_cert: missing.pem\n",
                "idp.metadata_signing_cert",
                "cannot read",
            ),
        ] {
            let e = error_of(&with(lines));
            assert_eq!(e.key, key, "{lines}");
            assert!(e.message.contains(says), "{lines}: {e}");
        }
        let e = error_of(&GOOD.replace(
            "  metadata_file: idp.xml\n",
            "  metadata_url: https://idp.example/md\n",
        ));
        assert_eq!(e.key, "idp.metadata_file");
        assert!(e.message.contains("last good copy"), "{e}");

        let e = error_of(&format!("{GOOD}listen: nowhere\n"));
        assert_eq!(e.key, "listen");

        let e = error_of(&GOOD.replace("audit.jsonl", "${SAML_GATEWAY_TEST_UNSET_VARIABLE}"));
        assert_eq!(e.key, "audit.file");
        assert!(e.message.contains("SAML_GATEWAY_TEST_UNSET_VARIABLE"));

        let e = error_of("public_url: [1\n");
        assert_eq!(e.key, "(file)");
    }

    #[test]
    fn encryption_and_unsolicited_switches() {
        let with_sp = |extra: &str| {
            GOOD.replace(
                "  cert_file: sp.crt\n",
                &format!("  cert_file: sp.crt\n{extra}"),
            )
        };
        let with_idp = |sp: &str, idp: &str| {
            with_sp(sp).replace(
                "  metadata_file: idp.xml\n",
                &format!("  metadata_file: idp.xml\n{idp}"),
            )
        };
        let (_dir, result) = load(&with_idp(
            "  encrypted_assertions: true\n",
            "  allow_cbc_encryption: true\n",
        ));
        let c = result.unwrap();
        assert!(c.sp.encrypted_assertions && c.idps[0].allow_cbc_encryption);

        let e = error_of(&with_idp("", "  allow_cbc_encryption: true\n"));
        assert_eq!(e.key, "idp.allow_cbc_encryption");

        let (_dir, result) = load(&with_idp(
            "",
            "  allow_unsolicited: true\n  unsolicited_max_age: 30s\n  unsolicited_relay_state: [/sales, /ops/]\n",
        ));
        let c = result.unwrap();
        assert!(c.idps[0].allow_unsolicited);
        assert_eq!(c.idps[0].unsolicited_max_age, Duration::from_secs(30));
        assert_eq!(c.idps[0].unsolicited_relay_state, ["/sales", "/ops/"]);
        let (_dir, result) = load(&with_idp("", "  allow_unsolicited: true\n"));
        let c = result.unwrap();
        assert_eq!(c.idps[0].unsolicited_max_age, Duration::from_secs(120));
        assert!(c.idps[0].unsolicited_relay_state.is_empty());
        for (lines, key) in [
            ("  unsolicited_max_age: 1m\n", "idp.unsolicited_max_age"),
            (
                "  unsolicited_relay_state: [/a]\n",
                "idp.unsolicited_relay_state",
            ),
            (
                "  allow_unsolicited: true\n  unsolicited_max_age: 1h\n",
                "idp.unsolicited_max_age",
            ),
            (
                "  allow_unsolicited: true\n  unsolicited_relay_state: [/a, //evil.example]\n",
                "idp.unsolicited_relay_state[1]",
            ),
            (
                "  allow_unsolicited: true\n  unsolicited_relay_state: [https://evil.example/]\n",
                "idp.unsolicited_relay_state[0]",
            ),
        ] {
            assert_eq!(error_of(&with_idp("", lines)).key, key, "{lines}");
        }
    }

    #[test]
    fn vendor_presets_user_key_and_authn_context() {
        let with = |lines: &str| {
            GOOD.replace(
                "  metadata_file: idp.xml\n",
                &format!("  metadata_file: idp.xml\n{lines}"),
            )
        };
        let (_dir, c) = load(&with(
            "  preset: keycloak\n  user_from: email\n  authn_context: [urn:oasis:names:tc:SAML:2.0:ac:classes:X509]\n",
        ));
        let c = c.unwrap();
        assert_eq!(c.idps[0].preset, Preset::Keycloak);
        assert_eq!(c.idps[0].attributes.user, ["email"]);
        assert!(c.idps[0].attributes.groups.contains(&"Role".to_string()));
        assert_eq!(
            c.idps[0].authn_context,
            ["urn:oasis:names:tc:SAML:2.0:ac:classes:X509"]
        );
        // Trimmed, as the assertion's AuthnContextClassRef is before the two are compared.
        let (_dir, c) = load(&with("  authn_context: [' urn:x ', \"urn:y\\n\"]\n"));
        assert_eq!(c.unwrap().idps[0].authn_context, ["urn:x", "urn:y"]);
        let (_dir, c) = load(&with("  attributes: {preset: google, groups: teams}\n"));
        let c = c.unwrap();
        assert_eq!(c.idps[0].preset, Preset::Google);
        assert_eq!(c.idps[0].attributes.groups, ["teams"]);
        assert!(c.idps[0].authn_context.is_empty());
        for (lines, key, says) in [
            ("  preset: azure\n", "idp.preset", "unknown preset"),
            (
                "  preset: entra\n  attributes: okta\n",
                "idp.attributes",
                "keep one of them",
            ),
            (
                "  preset: entra\n  attributes: {preset: okta}\n",
                "idp.attributes.preset",
                "keep one of them",
            ),
            (
                "  user_from: upn\n  attributes: {user: mail}\n",
                "idp.user_from",
                "keep one of them",
            ),
            (
                "  user_from: ' '\n",
                "idp.user_from",
                "name_id or an attribute",
            ),
            ("  authn_context: ['']\n", "idp.authn_context[0]", "URI"),
        ] {
            let e = error_of(&with(lines));
            assert_eq!(e.key, key, "{lines}");
            assert!(e.message.contains(says), "{lines}: {e}");
        }
    }
}
