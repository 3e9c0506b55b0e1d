//! The strict XML parser and the comment cutter that runs before signature reduction.
//!
//! Beyond "never panic" it checks the invariant the signature code relies on: a document the
//! parser accepts is also accepted by `without_comments`, and cutting the comments leaves the
//! parsed tree unchanged (text split by a comment is one string either way).
#![no_main]

use libfuzzer_sys::fuzz_target;
use saml_sp::xml::{parse, without_comments};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse(text);
    let cut = without_comments(text);
    if let Ok(tree) = parsed {
        let cut = cut.expect("without_comments accepts what parse accepts");
        let reparsed = parse(&cut).expect("the document without comments still parses");
        assert_eq!(tree, reparsed, "cutting comments changed the tree");
    }
});
