//! How SAML attributes become the user, email, display name and groups of a session.
//!
//! Each field has a list of candidate attribute Names, tried in order; the first one present in
//! the assertion wins. Names are matched exactly, whatever their NameFormat. A preset fills the
//! lists with the Names a vendor sends; explicit config replaces a field's list with one Name.

use std::collections::BTreeMap;

use saml_sp::Assertion;

/// Most attribute Names kept in a session besides the mapped fields.
pub const MAX_KEPT_ATTRIBUTES: usize = 64;
/// Most values kept per attribute.
pub const MAX_KEPT_VALUES: usize = 100;
/// Longest value kept.
pub const MAX_KEPT_VALUE_BYTES: usize = 1024;

/// The attribute Name that stands for the subject's NameID in `user`.
pub const NAME_ID: &str = "name_id";

/// Vendor presets for attribute Names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Common LDAP, eduPerson and claim-URI names.
    Generic,
    /// Okta's usual attribute statements.
    Okta,
    /// AD FS claim types.
    Adfs,
    /// Microsoft Entra ID claim URIs.
    Entra,
    /// Google Workspace: the NameID is the primary email; other Names are the admin's.
    Google,
    /// Auth0's SAML2 Web App add-on (claim URIs; groups as `.../claims/Group`).
    Auth0,
    /// Keycloak: X.500 OIDs or plain names, roles as repeated `Role` attributes.
    Keycloak,
}

impl Preset {
    /// Preset names accepted in the config.
    pub const NAMES: [&'static str; 7] = [
        "generic", "okta", "adfs", "entra", "google", "auth0", "keycloak",
    ];

    /// Parses a preset name.
    pub fn parse(name: &str) -> Option<Preset> {
        match name {
            "generic" => Some(Preset::Generic),
            "okta" => Some(Preset::Okta),
            "adfs" => Some(Preset::Adfs),
            "entra" => Some(Preset::Entra),
            "google" => Some(Preset::Google),
            "auth0" => Some(Preset::Auth0),
            "keycloak" => Some(Preset::Keycloak),
            _ => None,
        }
    }
}

const CLAIM_EMAIL: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress";
const CLAIM_DISPLAY: &str = "http://schemas.microsoft.com/identity/claims/displayname";
const CLAIM_NAME: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
const CLAIM_GROUPS: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups";
const CLAIM_ROLE: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role";
const OID_MAIL: &str = "urn:oid:0.9.2342.19200300.100.1.3";
const OID_DISPLAY: &str = "urn:oid:2.16.840.1.113730.3.1.241";
const OID_MEMBER_OF: &str = "urn:oid:1.3.6.1.4.1.5923.1.5.1.1";
const OID_EMAIL_PKCS9: &str = "urn:oid:1.2.840.113549.1.9.1";
const CLAIM_GIVEN: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname";
const CLAIM_SURNAME: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname";
const OID_GIVEN: &str = "urn:oid:2.5.4.42";
const OID_SURNAME: &str = "urn:oid:2.5.4.4";
const CLAIM_AUTH0_GROUP: &str = "http://schemas.xmlsoap.org/claims/Group";
/// The claim Entra sends instead of the groups when a user is in more than 150.
pub const CLAIM_GROUPS_LINK: &str = "http://schemas.microsoft.com/claims/groups.link";

/// Candidate attribute Names per session field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeMapping {
    /// Candidates for the user key; [`NAME_ID`] means the subject's NameID.
    pub user: Vec<String>,
    /// Candidates for the email.
    pub email: Vec<String>,
    /// Candidates for the display name.
    pub display_name: Vec<String>,
    /// Candidates for the groups (all values of the first present one).
    pub groups: Vec<String>,
    /// Candidates for the given (first) name.
    pub given_name: Vec<String>,
    /// Candidates for the surname (family name).
    pub surname: Vec<String>,
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl AttributeMapping {
    /// The mapping of a preset.
    pub fn preset(preset: Preset) -> AttributeMapping {
        let user = names(&[NAME_ID]);
        match preset {
            Preset::Generic => AttributeMapping {
                user,
                email: names(&["mail", "email", "emailaddress", OID_MAIL, CLAIM_EMAIL]),
                display_name: names(&["displayName", "name", OID_DISPLAY, CLAIM_DISPLAY]),
                groups: names(&[
                    "groups",
                    "memberOf",
                    "isMemberOf",
                    OID_MEMBER_OF,
                    CLAIM_GROUPS,
                ]),
                given_name: names(&["givenName", "given_name", OID_GIVEN, CLAIM_GIVEN]),
                surname: names(&["sn", "surname", "family_name", OID_SURNAME, CLAIM_SURNAME]),
            },
            Preset::Okta => AttributeMapping {
                user,
                email: names(&["email", "mail"]),
                display_name: names(&["displayName", "name"]),
                groups: names(&["groups"]),
                given_name: names(&["firstName", "givenName"]),
                surname: names(&["lastName", "surname"]),
            },
            Preset::Adfs => AttributeMapping {
                user,
                email: names(&[CLAIM_EMAIL]),
                display_name: names(&[CLAIM_NAME]),
                groups: names(&[CLAIM_ROLE, CLAIM_AUTH0_GROUP, CLAIM_GROUPS]),
                given_name: names(&[CLAIM_GIVEN]),
                surname: names(&[CLAIM_SURNAME]),
            },
            Preset::Entra => AttributeMapping {
                user,
                email: names(&[CLAIM_EMAIL]),
                display_name: names(&[CLAIM_DISPLAY, CLAIM_NAME]),
                groups: names(&[CLAIM_GROUPS, CLAIM_ROLE]),
                given_name: names(&[CLAIM_GIVEN]),
                surname: names(&[CLAIM_SURNAME]),
            },
            Preset::Google => AttributeMapping {
                user,
                email: names(&["email", "mail", NAME_ID]),
                display_name: names(&["displayName", "name"]),
                groups: names(&["groups"]),
                given_name: names(&["firstName", "givenName"]),
                surname: names(&["lastName", "surname"]),
            },
            Preset::Auth0 => AttributeMapping {
                user,
                email: names(&[CLAIM_EMAIL, "email"]),
                display_name: names(&[CLAIM_NAME, "name"]),
                groups: names(&[CLAIM_AUTH0_GROUP, "groups"]),
                given_name: names(&[CLAIM_GIVEN, "given_name"]),
                surname: names(&[CLAIM_SURNAME, "family_name"]),
            },
            Preset::Keycloak => AttributeMapping {
                user,
                email: names(&["email", OID_EMAIL_PKCS9, OID_MAIL]),
                display_name: names(&["displayName", "name", OID_DISPLAY]),
                groups: names(&["groups", "member", "Role"]),
                given_name: names(&["givenName", "firstName", OID_GIVEN]),
                surname: names(&["surname", "lastName", OID_SURNAME]),
            },
        }
    }

    /// Replaces one field's candidates with a single Name (`field` is a config key).
    pub fn set(&mut self, field: &str, name: String) {
        let slot = match field {
            "user" => &mut self.user,
            "email" => &mut self.email,
            "display_name" => &mut self.display_name,
            "given_name" => &mut self.given_name,
            "surname" => &mut self.surname,
            _ => &mut self.groups,
        };
        *slot = vec![name];
    }

    /// The user key, or `None` when no candidate is present.
    pub fn user(&self, assertion: &Assertion) -> Option<String> {
        self.user.iter().find_map(|name| {
            if name == NAME_ID {
                Some(assertion.name_id.value.clone())
            } else {
                first_value(assertion, name)
            }
        })
    }

    /// The email, when present ([`NAME_ID`] among the candidates: the NameID, for IdPs whose
    /// NameID is the email).
    pub fn email(&self, assertion: &Assertion) -> Option<String> {
        self.email.iter().find_map(|n| {
            if n == NAME_ID {
                Some(assertion.name_id.value.clone())
            } else {
                first_value(assertion, n)
            }
        })
    }

    /// True when the assertion carries an attribute the groups could be read from.
    pub fn has_groups_attribute(&self, assertion: &Assertion) -> bool {
        self.groups
            .iter()
            .any(|n| assertion.attributes.iter().any(|a| &a.name == n))
    }

    /// The display name, when present.
    pub fn display_name(&self, assertion: &Assertion) -> Option<String> {
        self.display_name
            .iter()
            .find_map(|n| first_value(assertion, n))
    }

    /// The given name, when present.
    pub fn given_name(&self, assertion: &Assertion) -> Option<String> {
        self.given_name
            .iter()
            .find_map(|n| first_value(assertion, n))
    }

    /// The surname, when present.
    pub fn surname(&self, assertion: &Assertion) -> Option<String> {
        self.surname.iter().find_map(|n| first_value(assertion, n))
    }

    /// The Name of the attribute the groups are read from: the first candidate present.
    fn groups_attribute<'m>(&'m self, assertion: &Assertion) -> Option<&'m str> {
        self.groups
            .iter()
            .find(|n| !assertion.attribute(n).is_empty())
            .map(String::as_str)
    }

    /// The groups: the values of the first candidate present, empty values dropped.
    pub fn groups(&self, assertion: &Assertion) -> Vec<String> {
        self.groups_attribute(assertion)
            .map(|n| assertion.attribute(n))
            .map(|values| {
                values
                    .iter()
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
    /// The assertion's attributes other than the groups one, for rules on `attributes`:
    /// at most [`MAX_KEPT_ATTRIBUTES`] Names with [`MAX_KEPT_VALUES`] non-empty values each
    /// (the session is kept for hours; an IdP's whole directory entry is not).
    pub fn other_attributes(&self, assertion: &Assertion) -> BTreeMap<String, Vec<String>> {
        let groups = self.groups_attribute(assertion);
        let mut out = BTreeMap::new();
        for attribute in &assertion.attributes {
            if Some(attribute.name.as_str()) == groups || out.len() >= MAX_KEPT_ATTRIBUTES {
                continue;
            }
            let values: &mut Vec<String> = out.entry(attribute.name.clone()).or_default();
            for v in &attribute.values {
                let v = v.trim();
                if !v.is_empty()
                    && values.len() < MAX_KEPT_VALUES
                    && v.len() <= MAX_KEPT_VALUE_BYTES
                {
                    values.push(v.to_string());
                }
            }
        }
        out.retain(|_, v| !v.is_empty());
        out
    }
}

fn first_value(assertion: &Assertion, name: &str) -> Option<String> {
    assertion
        .attribute(name)
        .iter()
        .map(|v| v.trim())
        .find(|v| !v.is_empty())
        .map(str::to_string)
}
