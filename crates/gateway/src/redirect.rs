//! Redirect targets after login: only local paths, anything else becomes `/` (invariant 12).

/// Longest return path kept; longer ones become `/`.
pub const MAX_RETURN_TO: usize = 2048;

/// Returns `target` when it is a safe local path (one leading `/`, no `//`, no `\`, no scheme,
/// no control or non-ASCII characters, no encoded slash or backslash, no dot segment),
/// otherwise `/`.
pub fn local_path(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let safe = target.len() <= MAX_RETURN_TO
        && is_canonical_path(path)
        && target.bytes().all(|b| b.is_ascii_graphic());
    if safe {
        target.to_string()
    } else {
        "/".to_string()
    }
}

/// True when `path` (without query) means the same to every server that might read it: it
/// starts with one `/`, has no empty, `.` or `..` segment, no `\`, and no percent-encoded
/// `/`, `\`, `.` or `%` (which a later decoding step could turn into one of those).
pub fn is_canonical_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    // One trailing slash is fine; any other empty segment is a `//`.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    !rest.is_empty()
        && !path.contains('\\')
        && !contains_encoded_separator(path)
        && rest
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// True when the path has `%2F`, `%5C`, `%2E` or a `%25` that could decode into one later.
fn contains_encoded_separator(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    let path = lower.split(['?', '#']).next().unwrap_or("");
    path.contains("%2f") || path.contains("%5c") || path.contains("%2e") || path.contains("%25")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_local_paths() {
        for ok in [
            "/",
            "/app",
            "/app/",
            "/app/page?x=1&y=%20",
            "/a/b#frag",
            "/a/b?next=//x",
        ] {
            assert_eq!(local_path(ok), ok);
        }
    }

    #[test]
    fn turns_everything_else_into_root() {
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "///evil.example",
            "https://evil.example",
            "%2F%2Fevil.example",
            "/%2F/evil.example",
            "/%5Cevil.example",
            "/a\r\nSet-Cookie: x",
            "/a\tb",
            "",
            "evil",
            "/ünï",
            "javascript:alert(1)",
            "/a//b",
            "/a/../b",
            "/./a",
            "/a/%2e%2e/b",
            "/a/..",
        ] {
            assert_eq!(local_path(bad), "/", "{bad:?}");
        }
        assert_eq!(local_path(&format!("/{}", "a".repeat(MAX_RETURN_TO))), "/");
    }
}
