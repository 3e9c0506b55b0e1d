//! The signed identity token: a JWT (ES256) that tells an app who the user is, verifiably.
//!
//! Identity headers are only as good as the network between the gateway and the app; the token
//! lets an app (or a second proxy) check with the public keys at `/.well-known/jwks.json` that
//! the gateway issued it, for this app (`aud` is the route's name), a moment ago (`exp` is
//! short). Claims: `iss` (the public URL), `aud`, `sub` (the user key), `email`, `name`,
//! `groups` (filtered like the groups header), `idp`, `auth_time` and `acr` (when and how the
//! IdP signed the user in, if the assertion said), `iat`, `exp`, `jti`.
//!
//! Keys: `identity_token.key_file` signs; `next_key_file`, when set, is published in the JWKS
//! before it is used, so that verifiers have fetched it by the time it is promoted. Tokens are
//! signed once per session and route and reused ([`crate::identity`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use serde::Serialize;
use session_store::SessionRecord;

/// The `identity_token` settings, checked.
#[derive(Debug, Clone)]
pub struct IdentityTokenConfig {
    /// The request header that carries the token.
    pub header: hyper::header::HeaderName,
    /// The signing key (EC P-256, PEM); generated when absent.
    pub key_file: PathBuf,
    /// The next signing key, published before it is used.
    pub next_key_file: Option<PathBuf>,
    /// `exp - iat`.
    pub lifetime: Duration,
}

/// One key pair and its JWK form.
struct SigningKey {
    key: EcKey<Private>,
    kid: String,
    jwk: serde_json::Value,
}

/// The token's claims.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    given_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    family_name: Option<&'a str>,
    groups: &'a [&'a str],
    idp: &'a str,
    /// When the IdP signed the user in (OpenID Connect's claim of that name), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
    /// How the IdP signed the user in (the AuthnContextClassRef), when known: OpenID Connect's
    /// Authentication Context Class Reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    acr: Option<&'a str>,
    iat: i64,
    exp: i64,
    jti: String,
}

/// Signs identity tokens and publishes their keys.
pub struct TokenIssuer {
    signing: SigningKey,
    jwks: String,
    issuer: String,
    lifetime: i64,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads a P-256 key, or generates one (mode 0600) when the file does not exist.
fn load_or_generate(path: &Path) -> anyhow::Result<EcKey<Private>> {
    if path.exists() {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let key = PKey::private_key_from_pem(&pem)
            .ok()
            .and_then(|k| k.ec_key().ok())
            .with_context(|| format!("{} is not an EC private key in PEM", path.display()))?;
        if key.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
            anyhow::bail!("{} is not a P-256 key (ES256 needs P-256)", path.display());
        }
        return Ok(key);
    }
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = EcKey::generate(&group)?;
    let pem = PKey::from_ec_key(key.clone())?.private_key_to_pem_pkcs8()?;
    crate::keys::write_private(path, &pem)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(key_file = %path.display(), "generated a new identity-token signing key");
    Ok(key)
}

fn signing_key(key: EcKey<Private>) -> anyhow::Result<SigningKey> {
    let mut ctx = BigNumContext::new()?;
    let (mut x, mut y) = (BigNum::new()?, BigNum::new()?);
    key.public_key()
        .affine_coordinates(key.group(), &mut x, &mut y, &mut ctx)?;
    let x = b64(&x.to_vec_padded(32)?);
    let y = b64(&y.to_vec_padded(32)?);
    // RFC 7638: the thumbprint of the required members, in lexical order, no spaces.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = b64(&openssl::sha::sha256(canonical.as_bytes()));
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256",
    });
    Ok(SigningKey { key, kid, jwk })
}

impl TokenIssuer {
    /// Loads (or generates) the keys named by `config`; `issuer` is the public URL.
    pub fn load(config: &IdentityTokenConfig, issuer: &str) -> anyhow::Result<TokenIssuer> {
        let signing = signing_key(load_or_generate(&config.key_file)?)?;
        let mut keys = vec![signing.jwk.clone()];
        if let Some(next) = &config.next_key_file {
            let next = signing_key(load_or_generate(next)?)?;
            if next.kid == signing.kid {
                anyhow::bail!("identity_token.next_key_file is the same key as key_file");
            }
            keys.push(next.jwk);
        }
        Ok(TokenIssuer {
            jwks: serde_json::json!({ "keys": keys }).to_string(),
            signing,
            issuer: issuer.to_string(),
            lifetime: i64::try_from(config.lifetime.as_secs()).unwrap_or(300),
        })
    }

    /// The JSON Web Key Set served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// `exp - iat` of the tokens, in seconds.
    pub fn lifetime_secs(&self) -> i64 {
        self.lifetime
    }

    /// Signs a fresh token.
    pub fn sign(
        &self,
        session: &SessionRecord,
        audience: &str,
        groups: &[&str],
        now: i64,
    ) -> Result<String, openssl::error::ErrorStack> {
        let jti = session_store::random_bytes::<16>()
            .map(|b| b64(&b))
            .map_err(|_| openssl::error::ErrorStack::get())?;
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.signing.kid});
        let claims = Claims {
            iss: &self.issuer,
            aud: audience,
            sub: &session.user,
            email: session.email.as_deref(),
            name: session.display_name.as_deref(),
            given_name: session.given_name.as_deref(),
            family_name: session.surname.as_deref(),
            groups,
            idp: &session.idp,
            auth_time: session.authn_instant,
            acr: session.authn_context.as_deref(),
            iat: now,
            // No token outlives its session.
            exp: (now + self.lifetime).min(session.expires_at.max(now + 1)),
            jti,
        };
        // Serializing these plain structs cannot fail; an empty payload would fail verification.
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(&payload));
        let digest = openssl::sha::sha256(signing_input.as_bytes());
        let sig = EcdsaSig::sign(&digest, &self.signing.key)?;
        // JWS wants r || s, each 32 bytes, not DER.
        let mut raw = sig.r().to_vec_padded(32)?;
        raw.extend(sig.s().to_vec_padded(32)?);
        Ok(format!("{signing_input}.{}", b64(&raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entra's AuthnContextClassRef for a sign-in with a second factor.
    const MFA: &str = "http://schemas.microsoft.com/claims/multipleauthn";

    fn session() -> SessionRecord {
        SessionRecord {
            version: 1,
            sp_entity_id: String::new(),
            idp: "https://idp.example".into(),
            idp_name: String::new(),
            user: "zoe".into(),
            name_id: "zoe".into(),
            name_id_format: None,
            session_index: None,
            name_qualifier: None,
            sp_name_qualifier: None,
            email: Some("zoe@example.test".into()),
            display_name: Some("Zoë Ångström".into()),
            given_name: Some("Zoë".into()),
            surname: None,
            groups: session_store::groups(["analytics"]),
            attributes: Default::default(),
            csrf_token: String::new(),
            created_at: 0,
            authn_instant: None,
            authn_context: None,
            expires_at: i64::MAX,
            last_seen: 0,
        }
    }

    fn issuer(dir: &Path, next: bool) -> TokenIssuer {
        let config = IdentityTokenConfig {
            header: hyper::header::HeaderName::from_static("x-auth-jwt"),
            key_file: dir.join("jwt.key"),
            next_key_file: next.then(|| dir.join("jwt-next.key")),
            lifetime: Duration::from_secs(300),
        };
        TokenIssuer::load(&config, "https://dash.example.com").unwrap()
    }

    #[test]
    fn token_verifies_with_the_published_key() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = issuer(dir.path(), false);
        let token = issuer
            .sign(&session(), "sales", &["analytics"], 1000)
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["name"], "Zoë Ångström");
        assert_eq!(claims["given_name"], "Zoë");
        assert!(claims.get("family_name").is_none());
        assert!(
            claims.get("auth_time").is_none(),
            "no AuthnInstant, no claim"
        );
        assert_eq!(claims["aud"], "sales");
        assert_eq!(claims["exp"], 1300);
        assert_eq!(claims["groups"], serde_json::json!(["analytics"]));
        let mut ending = session();
        ending.expires_at = 1100;
        ending.authn_instant = Some(940);
        ending.authn_context = Some(MFA.into());
        let capped = issuer.sign(&ending, "sales", &[], 1000).unwrap();
        let payload = capped.split('.').nth(1).unwrap();
        let capped: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(capped["exp"], 1100, "a token never outlives its session");
        assert_eq!(capped["auth_time"], 940);
        assert_eq!(capped["acr"], MFA);

        // Verify with the JWKS coordinates alone, as an app would.
        let jwks: serde_json::Value = serde_json::from_str(issuer.jwks()).unwrap();
        let jwk = &jwks["keys"][0];
        let coordinate = |k: &str| {
            BigNum::from_slice(&URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap()).unwrap()).unwrap()
        };
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let public =
            EcKey::from_public_key_affine_coordinates(&group, &coordinate("x"), &coordinate("y"))
                .unwrap();
        let raw = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let sig = EcdsaSig::from_private_components(
            BigNum::from_slice(&raw[..32]).unwrap(),
            BigNum::from_slice(&raw[32..]).unwrap(),
        )
        .unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        assert!(sig
            .verify(&openssl::sha::sha256(input.as_bytes()), &public)
            .unwrap());
        let tampered = format!("{}.{}x", parts[0], parts[1]);
        assert!(!sig
            .verify(&openssl::sha::sha256(tampered.as_bytes()), &public)
            .unwrap());
    }

    #[test]
    fn keys_persist_and_rotation_publishes_two() {
        let dir = tempfile::tempdir().unwrap();
        let first = issuer(dir.path(), false);
        let again = issuer(dir.path(), false);
        assert_eq!(first.signing.kid, again.signing.kid);
        let rotating = issuer(dir.path(), true);
        let jwks: serde_json::Value = serde_json::from_str(rotating.jwks()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        assert_eq!(jwks["keys"][0]["kid"], first.signing.kid.as_str());
    }
}
