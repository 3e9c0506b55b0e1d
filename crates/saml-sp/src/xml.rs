//! A small, strict XML tree for SAML messages.
//!
//! Every message is parsed here before anything else touches it, and the same parser reads the
//! signature-verified XML that claims are taken from. It refuses what SAML never needs and what
//! lets two parsers disagree about one document: a DOCTYPE (entities, XXE), processing
//! instructions, a declared encoding other than UTF-8, text or a second element outside the root,
//! unknown entity references, unbound prefixes and nesting deeper than [`MAX_DEPTH`].
//! Element and attribute names are kept as (namespace URI, local name) pairs so that callers match
//! on both, never on a prefix or a local name alone.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// Deepest element nesting accepted; real SAML responses stay below 12.
pub const MAX_DEPTH: usize = 32;

/// Most elements accepted in one document; bounds memory for hostile input.
pub const MAX_ELEMENTS: usize = 20_000;

/// Why a document was refused by the strict parser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// The document is not well-formed XML.
    #[error("the XML is not well-formed")]
    Malformed,
    /// The document has a DOCTYPE declaration.
    #[error("the XML has a DOCTYPE declaration")]
    Doctype,
    /// The document declares an encoding other than UTF-8.
    #[error("the XML declares an encoding other than UTF-8")]
    Encoding,
    /// The document has a processing instruction.
    #[error("the XML has a processing instruction")]
    ProcessingInstruction,
    /// The document has no root element, two root elements, or text outside the root.
    #[error("the XML does not have exactly one root element")]
    Root,
    /// Elements are nested deeper than [`MAX_DEPTH`] or there are more than [`MAX_ELEMENTS`].
    #[error("the XML is nested too deeply or has too many elements")]
    TooLarge,
    /// A prefix is used that no namespace declaration binds.
    #[error("the XML uses an unbound namespace prefix")]
    UnboundPrefix,
    /// An entity reference other than the five predefined ones or a character reference.
    #[error("the XML uses an unknown entity reference")]
    UnknownEntity,
}

/// An attribute with its namespace (None when unprefixed) and local name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Namespace URI of the attribute, `None` for an unprefixed attribute.
    pub ns: Option<String>,
    /// Local name of the attribute.
    pub name: String,
    /// Value with entity and character references resolved.
    pub value: String,
}

/// A child of an element: another element or a run of character data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Text or CDATA content (comments are dropped, so text around a comment is joined).
    Text(String),
}

/// One element of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Namespace URI, `None` when the element is in no namespace.
    pub ns: Option<String>,
    /// Local name.
    pub name: String,
    /// Attributes in document order, namespace declarations excluded.
    pub attributes: Vec<Attribute>,
    /// Child elements and text in document order.
    pub children: Vec<Node>,
}

impl Element {
    /// True when this element has the given namespace URI and local name.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.name == name
    }

    /// The value of the unprefixed attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.ns.is_none() && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// Child elements in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Child elements with the given namespace and local name.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements().filter(move |e| e.is(ns, name))
    }

    /// The only child element with this name; `None` when there is none or more than one.
    pub fn only_child(&self, ns: &str, name: &str) -> Option<&Element> {
        let mut found = None;
        for e in self.elements().filter(|e| e.is(ns, name)) {
            if found.replace(e).is_some() {
                return None;
            }
        }
        found
    }

    /// The element's whole text: every text node joined, comments or not; child elements skipped.
    pub fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }

    /// True when the element has child elements (a NameID or value must not).
    pub fn has_child_elements(&self) -> bool {
        self.elements().next().is_some()
    }

    /// Every element of the subtree, this one first, in document order.
    pub fn descendants(&self) -> Vec<&Element> {
        let mut out = vec![self];
        let mut i = 0;
        while i < out.len() {
            let e = out[i];
            // Keep document order within each level; full document order is not needed by callers.
            out.extend(e.elements());
            i += 1;
        }
        out
    }
}

/// True when two elements under `root` (itself included) carry the same ID (`ID`, `Id` or
/// `id`, unqualified or `xml:`): a signature reference to such an ID is ambiguous.
pub fn has_duplicate_ids(root: &Element) -> bool {
    let mut ids = std::collections::HashSet::new();
    for element in root.descendants() {
        for attr in &element.attributes {
            let is_id = matches!(attr.name.as_str(), "ID" | "Id" | "id")
                && (attr.ns.is_none() || attr.ns.as_deref() == Some(crate::XML_NS));
            if is_id && !ids.insert(attr.value.as_str()) {
                return true;
            }
        }
    }
    false
}

/// Parses `input` strictly into its root element.
pub fn parse(input: &str) -> Result<Element, XmlError> {
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    let mut reader = NsReader::from_str(input);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    config.expand_empty_elements = false;

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    let mut seen_decl = false;
    loop {
        let event = reader.read_event().map_err(|_| XmlError::Malformed)?;
        match event {
            Event::Decl(decl) => {
                if seen_decl || root.is_some() || !stack.is_empty() {
                    return Err(XmlError::Malformed);
                }
                seen_decl = true;
                if let Some(enc) = decl.encoding() {
                    let enc = enc.map_err(|_| XmlError::Malformed)?;
                    let enc = enc.to_ascii_lowercase();
                    if enc != "utf-8" && enc != "utf8" {
                        return Err(XmlError::Encoding);
                    }
                }
            }
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::PI(_) => return Err(XmlError::ProcessingInstruction),
            Event::Comment(_) => {}
            Event::Start(start) => {
                count += 1;
                if stack.len() >= MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err(XmlError::TooLarge);
                }
                if root.is_some() {
                    return Err(XmlError::Root);
                }
                let element = element_from(&reader, &start)?;
                stack.push(element);
            }
            Event::Empty(start) => {
                count += 1;
                if stack.len() >= MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err(XmlError::TooLarge);
                }
                if root.is_some() {
                    return Err(XmlError::Root);
                }
                let element = element_from(&reader, &start)?;
                close(&mut stack, &mut root, element);
            }
            Event::End(_) => {
                let element = stack.pop().ok_or(XmlError::Malformed)?;
                close(&mut stack, &mut root, element);
            }
            Event::Text(text) => {
                let content = text.xml10_content();
                push_text(&mut stack, &content)?;
            }
            Event::CData(cdata) => {
                let content = cdata.xml10_content();
                push_text(&mut stack, &content)?;
            }
            Event::GeneralRef(reference) => {
                let resolved = if reference.is_char_ref() {
                    match reference.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => return Err(XmlError::Malformed),
                    }
                } else {
                    let name = reference.xml10_content();
                    quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or(XmlError::UnknownEntity)?
                        .to_string()
                };
                push_text(&mut stack, &resolved)?;
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed);
    }
    root.ok_or(XmlError::Root)
}

fn close(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(element)),
        None => *root = Some(element),
    }
}

/// Appends text to the open element, joining it with a preceding text node (so that text split
/// by a comment or a reference is one string); text outside the root must be white space.
fn push_text(stack: &mut [Element], text: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(parent) => {
            if let Some(Node::Text(prev)) = parent.children.last_mut() {
                prev.push_str(text);
            } else {
                parent.children.push(Node::Text(text.to_string()));
            }
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(XmlError::Root),
    }
}

fn element_from(reader: &NsReader<&[u8]>, start: &BytesStart<'_>) -> Result<Element, XmlError> {
    let (ns, local) = reader.resolver().resolve_element(start.name());
    let ns = namespace(ns)?;
    let name = local.as_ref().to_string();
    let mut attributes = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|_| XmlError::Malformed)?;
        let key = attr.key;
        if key.as_namespace_binding().is_some() {
            continue;
        }
        let (ans, alocal) = reader.resolver().resolve_attribute(key);
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| match e {
                quick_xml::Error::Escape(_) => XmlError::UnknownEntity,
                _ => XmlError::Malformed,
            })?;
        attributes.push(Attribute {
            ns: namespace(ans)?,
            name: alocal.as_ref().to_string(),
            value: value.into_owned(),
        });
    }
    Ok(Element {
        ns,
        name,
        attributes,
        children: Vec::new(),
    })
}

fn namespace(result: ResolveResult<'_>) -> Result<Option<String>, XmlError> {
    match result {
        ResolveResult::Bound(ns) => Ok(Some(ns.as_ref().to_string())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(_) => Err(XmlError::UnboundPrefix),
    }
}

/// The document with every comment cut out, byte for byte otherwise.
///
/// Exclusive c14n without comments (the only canonicalization accepted) digests a document as if
/// it had no comments, so cutting them changes no digest; it lets the verified copy of a text
/// node split by a comment match the original again, so that claims read from verified XML are
/// the whole text. Returns the input unchanged when it has no comments.
pub fn without_comments(input: &str) -> Result<std::borrow::Cow<'_, str>, XmlError> {
    // quick-xml skips a leading byte order mark without counting it in `buffer_position`, so
    // the cuts are found in the text after it and the mark is put back in front.
    let body = input.strip_prefix('\u{feff}').unwrap_or(input);
    let bom = input
        .get(..input.len() - body.len())
        .ok_or(XmlError::Malformed)?;
    let mut reader = quick_xml::Reader::from_str(body);
    reader.config_mut().check_comments = true;
    let mut cuts = Vec::new();
    loop {
        let start = position(reader.buffer_position())?;
        match reader.read_event().map_err(|_| XmlError::Malformed)? {
            Event::Comment(_) => cuts.push(start..position(reader.buffer_position())?),
            Event::Eof => break,
            _ => {}
        }
    }
    if cuts.is_empty() {
        return Ok(std::borrow::Cow::Borrowed(input));
    }
    let mut out = String::with_capacity(input.len());
    out.push_str(bom);
    let mut from = 0;
    for cut in cuts {
        out.push_str(body.get(from..cut.start).ok_or(XmlError::Malformed)?);
        from = cut.end;
    }
    out.push_str(body.get(from..).ok_or(XmlError::Malformed)?);
    Ok(std::borrow::Cow::Owned(out))
}

fn position(p: u64) -> Result<usize, XmlError> {
    usize::try_from(p).map_err(|_| XmlError::TooLarge)
}

/// Escapes text for use in XML character data and attribute values.
pub fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_namespaces_and_joins_text_around_comments() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
            <a:Root xmlns:a="urn:a" xmlns="urn:d" ID="x"><Child>alice@corp.example<!---->.evil.example</Child></a:Root>"#;
        let root = parse(doc).unwrap();
        assert!(root.is("urn:a", "Root"));
        assert_eq!(root.attr("ID"), Some("x"));
        let child = root.only_child("urn:d", "Child").unwrap();
        assert_eq!(child.text(), "alice@corp.example.evil.example");
    }

    #[test]
    fn cuts_comments_and_nothing_else() {
        let doc = "<?xml version=\"1.0\"?><!-- a --><r x=\"<!--\"><n>alice<!---->.evil</n>\
                   <![CDATA[<!-- kept -->]]></r><!--z-->";
        assert_eq!(
            without_comments(doc).unwrap(),
            "<?xml version=\"1.0\"?><r x=\"<!--\"><n>alice.evil</n>\
             <![CDATA[<!-- kept -->]]></r>"
        );
        assert!(matches!(
            without_comments("<r>plain</r>").unwrap(),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            without_comments("<r><!-- -- --></r>"),
            Err(XmlError::Malformed)
        );
    }

    #[test]
    fn resolves_references_in_text_and_attributes() {
        let root = parse(r#"<r a="1&amp;2&#x41;">x&lt;&#13;y</r>"#).unwrap();
        assert_eq!(root.attr("a"), Some("1&2A"));
        assert_eq!(root.text(), "x<\ry");
    }

    #[test]
    fn refuses_doctype_entities_and_pis() {
        assert_eq!(
            parse(r#"<!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>"#),
            Err(XmlError::Doctype)
        );
        assert_eq!(parse(r#"<r>&x;</r>"#), Err(XmlError::UnknownEntity));
        assert_eq!(
            parse(r#"<?xml-stylesheet href="a"?><r/>"#),
            Err(XmlError::ProcessingInstruction)
        );
    }

    #[test]
    fn refuses_other_encodings() {
        assert_eq!(
            parse(r#"<?xml version="1.0" encoding="UTF-7"?><r/>"#),
            Err(XmlError::Encoding)
        );
    }

    #[test]
    fn refuses_two_roots_and_text_outside() {
        assert_eq!(parse("<a/><b/>"), Err(XmlError::Root));
        assert_eq!(parse("<a/>junk"), Err(XmlError::Root));
        assert_eq!(parse(""), Err(XmlError::Root));
    }

    #[test]
    fn refuses_unbound_prefixes_and_bad_nesting() {
        assert_eq!(parse("<x:a/>"), Err(XmlError::UnboundPrefix));
        assert_eq!(parse("<a><b></a></b>"), Err(XmlError::Malformed));
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&deep), Err(XmlError::TooLarge));
    }
}
