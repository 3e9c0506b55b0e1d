//! Request paths in one normal form: what routing decides on is exactly what the upstream gets.
//!
//! Proxies that match rules on one reading of a path and forward another have been walked
//! around again and again (`/public/..;/admin`, `/%61dmin`, `//admin`). Here the path is
//! normalized once, before anything looks at it, and the normalized path replaces the original
//! in the request sent upstream, so there is no second reading:
//!
//! 1. `\` becomes `/` (browsers and some servers treat it as a separator);
//! 2. `%XX` escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) and of `/` and `\` are
//!    decoded; other escapes stay, with upper-case hex; a malformed escape, or an escape of a
//!    control character, is refused;
//! 3. `;parameters` are cut from every segment (`/ops;x=1`, `/sales/..;/ops`);
//! 4. `.` and `..` segments are resolved (never above `/`) and empty segments (`//`) dropped,
//!    keeping a trailing `/`.
//!
//! The query string is not touched.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-escape")]
    BadEscape,
    /// A control character, raw or escaped, or a byte that is not printable ASCII.
    #[error("control character in the path")]
    ControlCharacter,
    /// The path does not start with `/`.
    #[error("the path does not start with /")]
    NotAbsolute,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Steps 1 and 2: separators unified and safe escapes decoded.
fn decode_safe_escapes(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            ) else {
                return Err(PathError::BadEscape);
            };
            let decoded = hi * 16 + lo;
            if decoded < 0x20 || decoded == 0x7f {
                return Err(PathError::ControlCharacter);
            }
            if is_unreserved(decoded) || decoded == b'/' || decoded == b'\\' {
                out.push(if decoded == b'\\' {
                    '/'
                } else {
                    char::from(decoded)
                });
            } else {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
            }
            i += 3;
            continue;
        }
        if !(0x21..0x7f).contains(&b) {
            return Err(PathError::ControlCharacter);
        }
        out.push(if b == b'\\' { '/' } else { char::from(b) });
        i += 1;
    }
    Ok(out)
}

/// True when `path` is its own normal form: it starts with `/`, has only visible ASCII
/// without `%`, `\\` or `;`, no empty segment but a last one, and no `.` or `..` segment. Nearly
/// every request's path is; it is then returned borrowed, without a copy or the steps of
/// [`normalize`].
fn is_normal(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if !path
        .bytes()
        .all(|b| (0x21..0x7f).contains(&b) && !matches!(b, b'%' | b'\\' | b';'))
    {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

/// Normalizes a request path (without its query) as the module docs describe; a path already
/// in normal form (nearly every one) comes back as it is, without a copy.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    normalize_steps(path).map(Cow::Owned)
}

/// The steps of [`normalize`], for a path not known to be in normal form.
fn normalize_steps(path: &str) -> Result<String, PathError> {
    let decoded = decode_safe_escapes(path)?;
    if !decoded.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let mut segments: Vec<&str> = Vec::new();
    let raw: Vec<&str> = decoded.split('/').skip(1).collect();
    let mut trailing_slash = false;
    for (i, segment) in raw.iter().enumerate() {
        let last = i + 1 == raw.len();
        let segment = segment.split(';').next().unwrap_or("");
        match segment {
            "" | "." => trailing_slash = last,
            ".." => {
                segments.pop();
                trailing_slash = last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_check_agrees_with_the_full_steps() {
        // Every path of up to four pieces from these, through both: a path the quick check
        // passes must be a fixed point of the full normalization.
        let pieces = [
            "/", "a", ".", "..", "%2e", "%41", ";x", "\\", "//", "b.c", "~", "_stcore", "%",
        ];
        let mut paths = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for p in &paths {
                for piece in pieces {
                    next.push(format!("{p}{piece}"));
                }
            }
            paths.extend(next);
        }
        let mut quick = 0;
        for path in &paths {
            if is_normal(path) {
                quick += 1;
                assert_eq!(
                    normalize_steps(path).as_deref(),
                    Ok(path.as_str()),
                    "{path:?}"
                );
            }
        }
        assert!(quick > 100, "the quick check passed only {quick} paths");
    }

    fn n(p: &str) -> String {
        normalize(p).map_or_else(|e| format!("error: {e}"), Cow::into_owned)
    }

    #[test]
    fn plain_paths_stay() {
        assert_eq!(n("/"), "/");
        assert_eq!(n("/ops"), "/ops");
        assert_eq!(n("/ops/"), "/ops/");
        assert_eq!(n("/ops/_stcore/stream"), "/ops/_stcore/stream");
        assert_eq!(n("/a/b%20c"), "/a/b%20c");
        assert_eq!(n("/a/%e2%9c%93"), "/a/%E2%9C%93");
    }

    #[test]
    fn bypass_attempts_become_the_plain_path() {
        for (attempt, plain) in [
            ("/ops%2F", "/ops/"),
            ("/ops%2f", "/ops/"),
            ("/sales/../ops", "/ops"),
            ("/sales/%2e%2e/ops", "/ops"),
            ("/sales/.%2E/ops", "/ops"),
            ("//ops", "/ops"),
            ("///ops//x", "/ops/x"),
            ("/%6Fps", "/ops"),
            ("/ops;x=1", "/ops"),
            ("/ops;x=1/", "/ops/"),
            ("/sales/..;/ops", "/ops"),
            ("\\ops", "/ops"),
            ("/sales\\..\\ops", "/ops"),
            ("/sales%5C..%5Cops", "/ops"),
            ("/ops/%2e/", "/ops/"),
            ("/ops/.", "/ops/"),
            ("/../../ops", "/ops"),
            ("/ops/x/..", "/ops/"),
        ] {
            assert_eq!(n(attempt), plain, "{attempt}");
        }
    }

    #[test]
    fn escapes_of_other_characters_stay_escaped() {
        // `%25` is a literal percent: decoding it would let `%252e` become `%2e` upstream.
        assert_eq!(n("/ops%252e%252e"), "/ops%252e%252e");
        assert_eq!(n("/a%3Bb"), "/a%3Bb");
        assert_eq!(n("/a%3fb"), "/a%3Fb");
    }

    #[test]
    fn malformed_and_control_characters_are_refused() {
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%00"), Err(PathError::ControlCharacter));
        assert_eq!(normalize("/a%0d%0a"), Err(PathError::ControlCharacter));
        assert_eq!(normalize("/a\tb"), Err(PathError::ControlCharacter));
        assert_eq!(normalize("ops"), Err(PathError::NotAbsolute));
        assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn normal_form_is_a_fixed_point() {
        for p in [
            "/ops%2F",
            "/sales/..;/ops",
            "/a%252e",
            "//x//y/",
            "/%7Euser",
        ] {
            let once = n(p);
            assert_eq!(n(&once), once, "{p}");
        }
    }
}
