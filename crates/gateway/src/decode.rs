//! `saml-gateway decode`: what a SAMLResponse says, and the verdict this gateway would give;
//! SAMLRequests in the input (a login URL, a HAR file) are shown decoded too.
//!
//! For the admin whose login fails: paste the `SAMLResponse` value (from the browser's network
//! tab), or give the HAR file the browser exports, and see the decoded XML and the check that
//! fails, with its stable reason code, as `/saml/acs` would decide with this config. Nothing
//! is stored: no session, no replay-cache entry, no audit record. Two checks need what only a
//! live login has, and are handled as follows:
//! - InResponseTo: the pending request is not known here, so the ID the Response names is
//!   taken as the expected one, and the output says so;
//! - time: responses are short-lived, so `--at` sets the clock to when the response was
//!   received (RFC 3339), otherwise it is now.

use std::path::Path;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};

use crate::config::Config;

/// Longest input read (a HAR file of a long session can be large).
const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// The `SAMLResponse` values in `text`: a HAR file (every POST carrying one, in order), a form
/// body (`SAMLResponse=...&RelayState=...`), or the value itself (base64, URL-encoded or not).
pub fn responses_in(text: &str) -> Vec<String> {
    let text = text.trim();
    if let Ok(har) = serde_json::from_str::<serde_json::Value>(text) {
        return from_har(&har, "SAMLResponse", false);
    }
    if text.contains("SAMLResponse=") {
        return form_values(text, "SAMLResponse");
    }
    if text.contains("SAMLRequest=") {
        return Vec::new();
    }
    vec![form_decode(text)]
}

/// The `SAMLRequest` values in `text`: in a URL or form body (`...SAMLRequest=...`), or in a
/// HAR file (the query of each request URL and each POST body, in order).
pub fn requests_in(text: &str) -> Vec<String> {
    let text = text.trim();
    if let Ok(har) = serde_json::from_str::<serde_json::Value>(text) {
        return from_har(&har, "SAMLRequest", true);
    }
    if text.contains("SAMLRequest=") {
        return form_values(text, "SAMLRequest");
    }
    Vec::new()
}

/// The XML of a SAMLRequest value: DEFLATE-compressed (HTTP-Redirect) or plain (HTTP-POST).
fn request_xml(value: &str, max: usize) -> Option<String> {
    saml_sp::bindings::decode_redirect_value(value, max)
        .ok()
        .or_else(|| saml_sp::response::decode_post_value(value, max).ok())
}

fn form_decode(value: &str) -> String {
    if value.contains('%') {
        url::form_urlencoded::parse(format!("v={value}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    } else {
        value.to_string()
    }
}

/// The values of the form field `name` in `body` (a form body, or a URL whose query is one).
fn form_values(body: &str, name: &str) -> Vec<String> {
    let query = body.split_once('?').map_or(body, |(_, query)| query);
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// The values of the field `name` in a HAR file, in order: each POST's form params (or, without
/// params, its body) and, with `in_urls`, each request URL's query.
fn from_har(har: &serde_json::Value, name: &str, in_urls: bool) -> Vec<String> {
    let entries = har["log"]["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut found = Vec::new();
    for entry in entries {
        if in_urls {
            if let Some(url) = entry["request"]["url"].as_str() {
                found.extend(form_values(url, name));
            }
        }
        let post = &entry["request"]["postData"];
        let params: Vec<String> = post["params"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["name"] == name)
                    .filter_map(|p| p["value"].as_str().map(form_decode))
                    .collect()
            })
            .unwrap_or_default();
        if !params.is_empty() {
            found.extend(params);
        } else if let Some(body) = post["text"].as_str() {
            found.extend(form_values(body, name));
        }
    }
    found
}

/// Decodes each response in the input file (`-`: standard input), prints its XML and the
/// verdict; true when every one would be accepted.
pub fn run(
    config: &Config,
    initial: &[crate::federation::Initial],
    input: &Path,
    at: Option<&str>,
) -> anyhow::Result<bool> {
    let text = read_input(input)?;
    let now: DateTime<Utc> = match at {
        None => Utc::now(),
        Some(t) => DateTime::parse_from_rfc3339(t)
            .with_context(|| {
                format!("--at {t}: not an RFC 3339 time such as 2026-12-03T10:00:00Z")
            })?
            .with_timezone(&Utc),
    };
    let requests = requests_in(&text);
    for (i, value) in requests.iter().enumerate() {
        println!("== SAMLRequest {} of {}", i + 1, requests.len());
        match request_xml(value, config.max_saml_response_bytes) {
            Some(xml) => println!("{xml}"),
            None => println!("(not a SAML message: neither DEFLATE nor base64 XML)"),
        }
    }
    let responses = responses_in(&text);
    if responses.is_empty() {
        if requests.is_empty() {
            bail!("{}: no SAMLResponse or SAMLRequest found", input.display());
        }
        return Ok(true);
    }
    let keys = crate::server::load_keys(config)?.0;
    let validators: Vec<(&crate::config::IdpConfig, saml_sp::ResponseValidator)> = config
        .idps
        .iter()
        .zip(initial)
        .map(|(idp, i)| {
            (
                idp,
                crate::state::validator(config, &keys, idp, &i.metadata),
            )
        })
        .collect();
    let mut all_accepted = true;
    for (i, value) in responses.iter().enumerate() {
        println!("== SAMLResponse {} of {}", i + 1, responses.len());
        // Judged against the IdP its Issuer names, as the ACS would; else the first.
        let issuer = saml_sp::response::unverified_issuer(value, config.max_saml_response_bytes)
            .ok()
            .flatten();
        let Some((idp, validator)) = validators
            .iter()
            .find(|(_, v)| Some(&v.idp.entity_id) == issuer.as_ref())
            .or(validators.first())
        else {
            bail!("no IdP is configured");
        };
        if validators.len() > 1 {
            println!("IdP: {} ({})", idp.name, validator.idp.entity_id);
        }
        all_accepted &= show(config, idp, validator, value, now);
    }
    Ok(all_accepted)
}

fn read_input(input: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    if input == Path::new("-") {
        std::io::stdin()
            .take(MAX_INPUT_BYTES)
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
    } else {
        std::fs::File::open(input)
            .and_then(|f| f.take(MAX_INPUT_BYTES).read_to_string(&mut text))
            .with_context(|| format!("cannot read {}", input.display()))?;
    }
    Ok(text)
}

/// Prints one response and its verdict; true when accepted.
fn show(
    config: &Config,
    idp: &crate::config::IdpConfig,
    validator: &saml_sp::ResponseValidator,
    value: &str,
    now: DateTime<Utc>,
) -> bool {
    let xml = match saml_sp::response::decode_post_value(value, config.max_saml_response_bytes) {
        Ok(xml) => xml,
        Err(e) => {
            let e = saml_sp::ValidationError::from(e);
            println!("verdict: refused: {}: {e}", e.code());
            return false;
        }
    };
    println!("{xml}");
    // The pending request is unknown here; take the one the Response names, from the
    // unverified document (for this printout only, never for a session).
    let named = saml_sp::xml::parse(&xml)
        .ok()
        .and_then(|root| root.attr("InResponseTo").map(str::to_string));
    match &named {
        Some(id) => println!("InResponseTo: {id} (taken as the pending request; not checked here)"),
        None => println!("InResponseTo: none (an IdP-initiated response)"),
    }
    print_checks(&saml_sp::diagnose::diagnose(
        &xml,
        &saml_sp::diagnose::Expectations {
            issuer: &validator.idp.entity_id,
            acs_url: &validator.sp.acs_url,
            audience: &validator.sp.entity_id,
            in_response_to: named.as_deref(),
            trusted: &validator.idp.certificates,
            now,
        },
    ));
    // An IdP-initiated response is judged as the ACS would: with its shorter maximum age.
    let unsolicited;
    let validator = if named.is_none() && idp.allow_unsolicited {
        let mut v = validator.clone();
        v.options.max_issue_age = idp.unsolicited_max_age;
        unsolicited = v;
        &unsolicited
    } else {
        validator
    };
    match validator.validate_without_replay(value, named.as_deref(), now) {
        Ok(assertion) => {
            let mapping = &idp.attributes;
            println!("verdict: accepted");
            println!("  user: {}", mapping.user(&assertion).unwrap_or_default());
            println!("  email: {}", mapping.email(&assertion).unwrap_or_default());
            println!(
                "  display name: {}",
                mapping.display_name(&assertion).unwrap_or_default()
            );
            println!("  groups: {}", mapping.groups(&assertion).join(", "));
            println!(
                "  authn context: {}",
                assertion
                    .authn_context
                    .as_deref()
                    .map(crate::saml::printable_uri)
                    .unwrap_or("none")
            );
            println!("  assertion ID: {}", assertion.id);
            true
        }
        Err(e) => {
            println!("verdict: refused: {}: {e}", e.code());
            false
        }
    }
}

/// Prints each compared value, expected against received.
fn print_checks(d: &saml_sp::diagnose::Diagnosis) {
    let show = |name: &str, c: &saml_sp::diagnose::Check| {
        println!(
            "check {name}: {} (expected {}, received {})",
            if c.ok { "ok" } else { "DIFFERS" },
            c.expected.as_deref().unwrap_or("nothing"),
            c.received.as_deref().unwrap_or("nothing"),
        );
    };
    show("issuer", &d.issuer);
    show("destination", &d.destination);
    show("recipient", &d.recipient);
    show("audience", &d.audience);
    for s in &d.signatures {
        println!(
            "check signature on {}: {}, KeyInfo certificate {} ({})",
            s.on,
            s.algorithm.as_deref().unwrap_or("no algorithm"),
            s.key_info_certificate.as_deref().unwrap_or("absent"),
            match s.key_info_certificate_trusted {
                Some(true) =>
                    "matches a trusted certificate; the signature itself is the verdict's",
                Some(false) => "matches NO trusted certificate",
                None => "none to compare",
            }
        );
    }
    println!(
        "trusted certificates: {}",
        d.trusted_certificates.join(", ")
    );
    if let Some(age) = d.clock.age_seconds {
        println!(
            "check clock: the response was issued {age} s before the clock used here ({})",
            d.clock.now
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_responses_in_values_forms_and_har_files() {
        assert_eq!(responses_in(" PHNhbWw+ \n"), ["PHNhbWw+"]);
        assert_eq!(responses_in("PHNhbWw%2B"), ["PHNhbWw+"]);
        assert_eq!(
            responses_in("RelayState=x&SAMLResponse=PHNhbWw%2B"),
            ["PHNhbWw+"]
        );
        let har = r#"{"log":{"entries":[
            {"request":{"method":"GET","url":"https://idp/"}},
            {"request":{"method":"POST","postData":{"params":[
                {"name":"SAMLResponse","value":"QUFB"},{"name":"RelayState","value":"r"}]}}},
            {"request":{"method":"POST","postData":{"text":"SAMLResponse=QkJC%3D&RelayState=r"}}}
        ]}}"#;
        assert_eq!(responses_in(har), ["QUFB", "QkJC="]);
        assert!(responses_in(r#"{"log":{"entries":[]}}"#).is_empty());
    }

    #[test]
    fn finds_requests_in_urls_and_har_files() {
        let url = "https://idp/sso?SAMLRequest=fZB%2B&RelayState=x";
        assert_eq!(requests_in(url), ["fZB+"]);
        assert!(responses_in(url).is_empty());
        let har = r#"{"log":{"entries":[
            {"request":{"method":"GET","url":"https://idp/sso?SAMLRequest=QUFB&SigAlg=x"}},
            {"request":{"method":"POST","url":"https://idp/sso","postData":{"text":"SAMLRequest=QkJC"}}},
            {"request":{"method":"POST","url":"https://idp/sso","postData":{"params":[
                {"name":"SAMLRequest","value":"Q0ND"}]}}}
        ]}}"#;
        assert_eq!(requests_in(har), ["QUFB", "QkJC", "Q0ND"]);
        assert!(requests_in("PHNhbWw+").is_empty());
    }
}
