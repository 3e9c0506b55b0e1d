//! Access rules of a route, and which groups a route passes on to its app.
//!
//! A rule is evaluated on every request from the claims stored in the session, never from
//! anything the client sends, so a rule changed by a reload applies to open sessions at their
//! next request. It allows the request when any one of its entries matches and, when it names
//! IdPs (`allow.idps`, or the route's `idp`), the session was made by one of them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use session_store::SessionRecord;

/// Who may use a route: allowed when any entry matches. An empty rule allows every signed-in
/// user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// Groups, any of which the user must be in.
    pub groups: Vec<String>,
    /// User keys (the session's user, the NameID by default).
    pub users: Vec<String>,
    /// Email addresses, compared ignoring ASCII case.
    pub emails: Vec<String>,
    /// Email domains (the part after the last `@`), compared ignoring ASCII case.
    pub email_domains: Vec<String>,
    /// SAML attributes by Name, any of whose values must match one listed.
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Compare groups ignoring case (Unicode lower case) instead of exactly.
    pub groups_case_insensitive: bool,
    /// IdP names, one of which must have made the session (a condition on top of the
    /// entries above, not an entry of its own); empty: any IdP.
    pub idps: Vec<String>,
}

impl Rule {
    /// True when the rule has no entry at all (every signed-in user of its IdPs is allowed).
    pub fn is_open(&self) -> bool {
        self.groups.is_empty()
            && self.users.is_empty()
            && self.emails.is_empty()
            && self.email_domains.is_empty()
            && self.attributes.is_empty()
    }

    /// Precomputes the rule for evaluation on every request.
    pub fn compile(&self) -> CompiledRule {
        let fold = |g: &String| {
            if self.groups_case_insensitive {
                g.to_lowercase()
            } else {
                g.clone()
            }
        };
        CompiledRule {
            idps: self.idps.clone(),
            open: self.is_open(),
            groups: NameSet::new(self.groups.iter().map(fold).collect()),
            groups_case_insensitive: self.groups_case_insensitive,
            users: self.users.iter().cloned().collect(),
            emails: self.emails.iter().map(|e| e.to_ascii_lowercase()).collect(),
            email_domains: self
                .email_domains
                .iter()
                .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
                .collect(),
            attributes: self
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
                .collect(),
        }
    }
}

/// Up to this many names are compared one by one; more go into a hash set. A user's groups are
/// many (hundreds) and a rule's few, so per request the rule is probed once per user group:
/// a short list compares lengths first and costs a few nanoseconds per probe, where hashing a
/// long group name costs tens.
const SMALL_SET: usize = 16;

/// A set of names, shaped for many probes.
#[derive(Debug, Clone)]
enum NameSet {
    /// A short list, with a bit per name length (modulo 64): most probes are rejected by one
    /// bit test, without touching the strings.
    Small {
        names: Vec<String>,
        lengths: u64,
    },
    Large(HashSet<String>),
}

fn length_bit(name: &str) -> u64 {
    1u64 << (name.len() % 64)
}

impl NameSet {
    fn new(names: Vec<String>) -> NameSet {
        if names.len() <= SMALL_SET {
            let lengths = names.iter().fold(0, |bits, n| bits | length_bit(n));
            NameSet::Small { names, lengths }
        } else {
            NameSet::Large(names.into_iter().collect())
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            NameSet::Small { names, .. } => names.is_empty(),
            NameSet::Large(s) => s.is_empty(),
        }
    }

    fn contains(&self, name: &str) -> bool {
        match self {
            NameSet::Small { names, lengths } => {
                lengths & length_bit(name) != 0 && names.iter().any(|n| n == name)
            }
            NameSet::Large(s) => s.contains(name),
        }
    }
}

/// A [`Rule`] in the form evaluated per request: sets ready for probing, case folded once.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    idps: Vec<String>,
    open: bool,
    groups: NameSet,
    groups_case_insensitive: bool,
    users: HashSet<String>,
    emails: HashSet<String>,
    email_domains: HashSet<String>,
    attributes: Vec<(String, HashSet<String>)>,
}

impl CompiledRule {
    /// True when the session's claims satisfy the rule.
    pub fn allows(&self, session: &SessionRecord) -> bool {
        self.idp_allows(session) && self.entries_allow(session)
    }

    /// True when the rule names no IdP, or the session's IdP is among those it names.
    pub fn idp_allows(&self, session: &SessionRecord) -> bool {
        self.idps.is_empty() || self.idps.contains(&session.idp_name)
    }

    fn entries_allow(&self, session: &SessionRecord) -> bool {
        if self.open || self.users.contains(&session.user) {
            return true;
        }
        if !self.groups.is_empty() && session.groups.iter().any(|g| self.has_group(g)) {
            return true;
        }
        if let Some(email) = session.email.as_deref() {
            let email = email.to_ascii_lowercase();
            if self.emails.contains(&email) {
                return true;
            }
            if let Some((_, domain)) = email.rsplit_once('@') {
                if self.email_domains.contains(domain) {
                    return true;
                }
            }
        }
        self.attributes.iter().any(|(name, allowed)| {
            session
                .attributes
                .get(name)
                .is_some_and(|values| values.iter().any(|v| allowed.contains(v)))
        })
    }

    /// True when `group` is one the rule names (as the rule compares groups).
    pub fn has_group(&self, group: &str) -> bool {
        if self.groups_case_insensitive {
            self.groups.contains(&group.to_lowercase())
        } else {
            self.groups.contains(group)
        }
    }
}

/// Which of the user's groups a route passes on (groups header and identity token), so that a
/// user in hundreds of groups does not trip the app's header-size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupsFilter {
    /// Every group.
    All,
    /// Only the groups the route's rule names.
    Rule,
    /// Only groups whose name starts with this prefix.
    Prefix(String),
    /// None: the header is left out and the token's `groups` is empty.
    None,
}

impl GroupsFilter {
    /// Parses `all`, `rule`, `none` or `prefix:TEXT`.
    pub fn parse(text: &str) -> Option<GroupsFilter> {
        match text {
            "all" => Some(GroupsFilter::All),
            "rule" => Some(GroupsFilter::Rule),
            "none" => Some(GroupsFilter::None),
            _ => text
                .strip_prefix("prefix:")
                .filter(|p| !p.is_empty())
                .map(|p| GroupsFilter::Prefix(p.to_string())),
        }
    }

    /// The groups of `groups` this filter keeps, in their order.
    pub fn apply<'g>(&self, groups: &'g [Arc<str>], rule: &CompiledRule) -> Vec<&'g str> {
        let keep = |g: &&Arc<str>| match self {
            GroupsFilter::All => true,
            GroupsFilter::Rule => rule.has_group(g),
            GroupsFilter::Prefix(p) => g.starts_with(p.as_str()),
            GroupsFilter::None => false,
        };
        groups.iter().filter(keep).map(|g| &**g).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user: &str, email: Option<&str>, groups: &[&str]) -> SessionRecord {
        SessionRecord {
            version: 1,
            sp_entity_id: String::new(),
            idp: String::new(),
            idp_name: String::new(),
            user: user.into(),
            name_id: user.into(),
            name_id_format: None,
            session_index: None,
            name_qualifier: None,
            sp_name_qualifier: None,
            email: email.map(str::to_string),
            display_name: None,
            given_name: None,
            surname: None,
            groups: session_store::groups(groups),
            attributes: BTreeMap::from([("department".to_string(), vec!["sales".to_string()])]),
            csrf_token: String::new(),
            created_at: 0,
            authn_instant: None,
            authn_context: None,
            expires_at: 0,
            last_seen: 0,
        }
    }

    #[test]
    fn empty_rule_allows_everyone_signed_in() {
        assert!(Rule::default().compile().allows(&session("x", None, &[])));
    }

    #[test]
    fn any_entry_matches() {
        let rule = Rule {
            groups: vec!["Analytics".into()],
            users: vec!["root".into()],
            emails: vec!["Boss@Example.test".into()],
            email_domains: vec!["@partner.example".into()],
            ..Rule::default()
        }
        .compile();
        assert!(rule.allows(&session("a", None, &["Analytics"])));
        assert!(!rule.allows(&session("a", None, &["analytics"])), "exact");
        assert!(rule.allows(&session("root", None, &[])));
        assert!(!rule.allows(&session("Root", None, &[])));
        assert!(rule.allows(&session("b", Some("boss@example.TEST"), &[])));
        assert!(rule.allows(&session("c", Some("z@PARTNER.example"), &[])));
        assert!(!rule.allows(&session("c", Some("z@evil.partner.example"), &[])));
        assert!(!rule.allows(&session("c", Some("partner.example@evil.test"), &[])));
        assert!(!rule.allows(&session("d", Some("d@example.test"), &["ops"])));
    }

    #[test]
    fn case_insensitive_groups_and_attributes() {
        let rule = Rule {
            groups: vec!["Analytics".into()],
            groups_case_insensitive: true,
            ..Rule::default()
        }
        .compile();
        assert!(rule.allows(&session("a", None, &["ANALYTICS"])));
        let rule = Rule {
            attributes: BTreeMap::from([("department".into(), vec!["sales".into()])]),
            ..Rule::default()
        }
        .compile();
        assert!(rule.allows(&session("a", None, &[])));
        let rule = Rule {
            attributes: BTreeMap::from([("department".into(), vec!["ops".into()])]),
            ..Rule::default()
        }
        .compile();
        assert!(!rule.allows(&session("a", None, &[])));
    }

    #[test]
    fn long_rules_use_a_hash_set_with_the_same_answers() {
        for count in [1, SMALL_SET, SMALL_SET + 1, 200] {
            let rule = Rule {
                groups: (0..count).map(|i| format!("team-{i}")).collect(),
                ..Rule::default()
            }
            .compile();
            let last = format!("team-{}", count - 1);
            assert!(rule.allows(&session("a", None, &["x", &last])), "{count}");
            // Same length as a listed name, different text.
            assert!(!rule.allows(&session("a", None, &["team-x"])), "{count}");
            assert!(
                !rule.allows(&session("a", None, &[&format!("team-{count}")])),
                "{count}"
            );
        }
    }

    #[test]
    fn groups_filters() {
        let rule = Rule {
            groups: vec!["sales-eu".into()],
            ..Rule::default()
        }
        .compile();
        let groups = session_store::groups(["staff", "sales-eu", "sales-us"]);
        assert_eq!(GroupsFilter::All.apply(&groups, &rule).len(), 3);
        assert_eq!(GroupsFilter::Rule.apply(&groups, &rule), ["sales-eu"]);
        assert_eq!(
            GroupsFilter::parse("prefix:sales-")
                .unwrap()
                .apply(&groups, &rule),
            ["sales-eu", "sales-us"]
        );
        assert!(GroupsFilter::None.apply(&groups, &rule).is_empty());
        assert_eq!(GroupsFilter::parse("prefix:"), None);
        assert_eq!(GroupsFilter::parse("some"), None);
    }

    #[test]
    fn idps_are_a_condition_on_top_of_the_entries() {
        let mut staff = session("alice", None, &["ops"]);
        staff.idp_name = "staff".into();
        let mut partner = staff.clone();
        partner.idp_name = "partners".into();
        let only_staff = Rule {
            idps: vec!["staff".into()],
            ..Rule::default()
        }
        .compile();
        assert!(only_staff.allows(&staff));
        assert!(!only_staff.allows(&partner));
        let staff_ops = Rule {
            idps: vec!["staff".into()],
            groups: vec!["ops".into()],
            ..Rule::default()
        }
        .compile();
        assert!(staff_ops.allows(&staff));
        assert!(
            !staff_ops.allows(&partner),
            "the group does not open it to another IdP"
        );
        let mut not_ops = staff.clone();
        not_ops.groups = session_store::groups(["sales"]);
        assert!(
            !staff_ops.allows(&not_ops),
            "the IdP alone does not open a group rule"
        );
        let mut unnamed = staff.clone();
        unnamed.idp_name = String::new();
        assert!(
            !only_staff.allows(&unnamed),
            "a session without an IdP name fails closed"
        );
        assert!(Rule::default().compile().allows(&partner));
    }
}
