//! Session records sealed in Redis: with [`RecordKeys`], every record the Redis store writes
//! carries an HMAC-SHA256 over its Redis key and its JSON, under a secret that the replicas
//! share and Redis never sees. A record whose seal does not check, one without a seal, and one
//! copied under another key read as absent: someone who can write to Redis, but does not hold
//! the secret, cannot make a session that signs anyone in, nor move a genuine record to a
//! session ID of their choosing.
//!
//! A sealed record is stored as `m1:` + the HMAC in lower-case hex + a line feed + the JSON;
//! the HMAC covers `m1:`, the Redis key's length, `:`, the Redis key and the JSON.
//! The first key seals; every key opens, so that a key can be replaced without signing anyone
//! out (add the new key after the old one, then move it first, then remove the old one).
//! Without keys the store writes plain JSON and opens a sealed record without checking it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What starts a sealed record.
const PREFIX: &str = "m1:";
/// Length of the seal in hex.
const SEAL_HEX: usize = 64;
/// Fewest bytes a key may have.
pub const MIN_KEY_BYTES: usize = 32;

/// The secrets that seal session records in Redis: each record carries an HMAC-SHA256 over
/// its Redis key and its JSON, so that whoever can write to Redis without them cannot make a
/// session or move one under another ID. The first seals, every one opens. Its `Debug` shows
/// how many there are, never a key.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordKeys {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for RecordKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordKeys")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl RecordKeys {
    /// The keys, the sealing one first; `None` when there is none or one is shorter than
    /// [`MIN_KEY_BYTES`].
    pub fn new(keys: Vec<Vec<u8>>) -> Option<RecordKeys> {
        let usable = !keys.is_empty() && keys.iter().all(|k| k.len() >= MIN_KEY_BYTES);
        usable.then_some(RecordKeys { keys })
    }

    /// The HMAC of `json` stored under `redis_key`, under `key`: over the format's tag, the
    /// Redis key's length and the Redis key, then the JSON, so that no two pairs of a Redis key
    /// and a JSON text share an input.
    fn mac(key: &[u8], redis_key: &str, json: &str) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
        mac.update(PREFIX.as_bytes());
        mac.update(redis_key.len().to_string().as_bytes());
        mac.update(b":");
        mac.update(redis_key.as_bytes());
        mac.update(json.as_bytes());
        Some(mac)
    }
}

/// What to store under `redis_key` for the record `json`: sealed with the first key, or `json`
/// itself without keys.
pub(crate) fn seal(keys: Option<&RecordKeys>, redis_key: &str, json: String) -> String {
    let Some(mac) = keys
        .and_then(|k| k.keys.first())
        .and_then(|key| RecordKeys::mac(key, redis_key, &json))
    else {
        return json;
    };
    let seal = crate::hex(&mac.finalize().into_bytes());
    format!("{PREFIX}{seal}\n{json}")
}

/// The record's JSON in what is stored under `redis_key`, when its seal checks with one of
/// `keys`; without keys, the JSON whether sealed or not. `None`: not to be trusted.
pub(crate) fn open<'s>(
    keys: Option<&RecordKeys>,
    redis_key: &str,
    stored: &'s str,
) -> Option<&'s str> {
    let sealed = stored
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_at_checked(SEAL_HEX))
        .and_then(|(seal, rest)| Some((seal, rest.strip_prefix('\n')?)));
    let Some(keys) = keys else {
        return Some(sealed.map_or(stored, |(_, json)| json));
    };
    let (seal, json) = sealed?;
    let seal = from_hex(seal)?;
    keys.keys
        .iter()
        .filter_map(|key| RecordKeys::mac(key, redis_key, json))
        .any(|mac| mac.verify_slice(&seal).is_ok())
        .then_some(json)
}

/// The bytes that `hex` (lower- or upper-case) spells; `None` when it is not hex.
fn from_hex(hex: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| char::from(b).to_digit(16);
    hex.as_bytes()
        .chunks_exact(2)
        .map(|pair| u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> RecordKeys {
        RecordKeys::new(list.iter().map(|k| k.as_bytes().to_vec()).collect()).unwrap()
    }

    const A: &str = "a-secret-of-at-least-32-bytes-000";
    const B: &str = "b-secret-of-at-least-32-bytes-111";
    const KEY: &str = "saml-gw:0123456789abcdef:session:aa";

    #[test]
    fn a_sealed_record_opens_with_its_key_and_nothing_else() {
        let json = r#"{"user":"alice"}"#.to_string();
        let stored = seal(Some(&keys(&[A])), KEY, json.clone());
        assert!(stored.starts_with("m1:") && stored.ends_with(&format!("\n{json}")));
        assert_eq!(open(Some(&keys(&[A])), KEY, &stored), Some(json.as_str()));
        // Another key, another Redis key (a record copied under a chosen session ID), a
        // changed record, a record without a seal: none opens.
        assert_eq!(open(Some(&keys(&[B])), KEY, &stored), None);
        assert_eq!(
            open(
                Some(&keys(&[A])),
                "saml-gw:0123456789abcdef:session:bb",
                &stored
            ),
            None
        );
        let changed = stored.replace("alice", "admin");
        assert_eq!(open(Some(&keys(&[A])), KEY, &changed), None);
        assert_eq!(open(Some(&keys(&[A])), KEY, &json), None);
        assert_eq!(open(Some(&keys(&[A])), KEY, "m1:zz\n{}"), None);
        assert_eq!(open(Some(&keys(&[A])), KEY, "m1:"), None);
    }

    #[test]
    fn the_seal_is_the_hmac_of_the_documented_input() {
        // HMAC-SHA256(A, "m1:" + len(key) + ":" + key + json), computed apart with
        // `printf 'm1:35:%s%s' KEY JSON | openssl dgst -sha256 -hmac A`: a change to the input
        // would make every replica refuse the records of the others.
        let json = r#"{"user":"alice"}"#.to_string();
        let stored = seal(Some(&keys(&[A])), KEY, json);
        let expected = "m1:499fb549e2bff0d3bd336d8ac6795a74633c635473f2818513ca3868abe22e27";
        assert_eq!(&stored[..3 + SEAL_HEX], expected);
    }

    #[test]
    fn every_key_opens_and_the_first_seals() {
        let json = r#"{"user":"alice"}"#.to_string();
        let by_a = seal(Some(&keys(&[A])), KEY, json.clone());
        let rotating = keys(&[B, A]);
        assert_eq!(open(Some(&rotating), KEY, &by_a), Some(json.as_str()));
        let by_b = seal(Some(&rotating), KEY, json.clone());
        assert_eq!(open(Some(&keys(&[B])), KEY, &by_b), Some(json.as_str()));
        assert_eq!(open(Some(&keys(&[A])), KEY, &by_b), None);
    }

    #[test]
    fn without_keys_records_are_plain_and_seals_are_not_checked() {
        let json = r#"{"user":"alice"}"#.to_string();
        assert_eq!(seal(None, KEY, json.clone()), json);
        assert_eq!(open(None, KEY, &json), Some(json.as_str()));
        let sealed = seal(Some(&keys(&[A])), KEY, json.clone());
        assert_eq!(open(None, KEY, &sealed), Some(json.as_str()));
    }

    #[test]
    fn short_keys_and_no_keys_are_refused_and_never_shown() {
        assert!(RecordKeys::new(Vec::new()).is_none());
        assert!(RecordKeys::new(vec![b"short".to_vec()]).is_none());
        assert!(RecordKeys::new(vec![A.as_bytes().to_vec(), b"short".to_vec()]).is_none());
        let shown = format!("{:?}", keys(&[A, B]));
        assert_eq!(shown, "RecordKeys { keys: 2 }");
    }
}
