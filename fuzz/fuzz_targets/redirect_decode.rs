//! The HTTP-Redirect decoder (`bindings::decode_redirect_value`): arbitrary bytes as the query
//! value, and the same bytes base64-encoded so that they reach the DEFLATE decoder. It must
//! return, never panic, and never hand back more than the limit.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use saml_sp::bindings::decode_redirect_value;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    if let Ok(xml) = decode_redirect_value(&value, LIMIT) {
        assert!(xml.len() <= LIMIT);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    if let Ok(xml) = decode_redirect_value(&encoded, LIMIT) {
        assert!(xml.len() <= LIMIT);
    }
});
