//! The gateway's own HTML pages: errors, sign-out. Every dynamic value is escaped; no page
//! ever shows a SAML message, a key or a stack trace.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A complete HTML page with the given status; `body_html` must already be escaped.
pub fn page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;\
         margin:4rem auto;padding:0 1rem;color:#222}}code{{background:#f3f3f3;padding:0 .2em}}\
         button{{font-size:1rem;padding:.4rem 1rem}}</style></head>\
         <body><h1>{title}</h1>{body_html}</body></html>\n",
        title = escape_html(title),
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    // The sign-out button must not be clickable from a frame (clickjacking).
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The script of [`auto_post`]: submits the page's form as soon as it loads.
const AUTO_POST_SCRIPT: &str = "document.forms[0].submit();";

/// The CSP of [`auto_post`]'s page. The form goes to the IdP, so form-action is left open (a
/// browser also applies it to the IdP's own redirects after the post); scripts other than
/// [`AUTO_POST_SCRIPT`] stay blocked.
static AUTO_POST_CSP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use base64::Engine;
    let hash = base64::engine::general_purpose::STANDARD
        .encode(openssl::sha::sha256(AUTO_POST_SCRIPT.as_bytes()));
    format!(
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{hash}'; \
         frame-ancestors 'none'"
    )
});

/// A page that makes the browser POST `fields` to `action` at once (the SAML HTTP-POST
/// binding): a form of hidden fields, submitted by a script that the page's CSP allows by its
/// hash alone, with a button for browsers without scripts. Every value is escaped.
pub fn auto_post(action: &str, fields: &[(&str, &str)]) -> Response {
    let inputs: String = fields
        .iter()
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape_html(name),
                escape_html(value)
            )
        })
        .collect();
    let body = format!(
        "<p>Taking you to your identity provider.</p>\
         <form method=\"post\" action=\"{}\">{inputs}\
         <noscript><button type=\"submit\">Continue</button></noscript></form>\
         <script>{AUTO_POST_SCRIPT}</script>",
        escape_html(action)
    );
    let mut response = page(StatusCode::OK, "Signing in", &body);
    if let Ok(value) = HeaderValue::from_str(&AUTO_POST_CSP) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// An error page naming the failed check by its reason code, with a reference that also
/// appears in the audit record.
pub fn error(
    status: StatusCode,
    title: &str,
    reason: &str,
    detail: &str,
    reference: &str,
) -> Response {
    let body = format!(
        "<p>{}</p><p>Reason: <code>{}</code><br>Reference: <code>{}</code></p>\
         <p><a href=\"/\">Try again</a></p>",
        escape_html(detail),
        escape_html(reason),
        escape_html(reference),
    );
    page(status, title, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything() {
        assert_eq!(
            escape_html(r#"<script>"x"&'y'</script>"#),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
    }
}
