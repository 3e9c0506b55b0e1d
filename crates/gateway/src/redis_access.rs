//! What the Redis connection signs in with and trusts beyond its URL: the passwords of
//! `sessions.redis_password_file` and `sessions.redis_sentinel_password_file` and the files of
//! `sessions.redis_tls`, read and checked when
//! the store is opened (by `serve`, the session commands and `check-config`) and handed to the
//! store as what was checked. `serve` reads them again on SIGHUP ([`renew_on_hangup`]): a
//! rotated password or a renewed client certificate goes in force without a restart.

use std::path::Path;

use openssl::x509::X509;
use session_store::{RecordKeys, RedisAccess, RedisConnectError, RedisStore, RedisTls};

use crate::config::{Config, ConfigError, StoreKind};
use crate::state::unix_now;

/// Longest password read from `sessions.redis_password_file`.
const MAX_PASSWORD_BYTES: usize = 4096;

/// Reads and checks `sessions.redis_password_file`, `sessions.redis_sentinel_password_file`
/// and the files of `sessions.redis_tls` (for `serve`, the session commands and
/// `check-config`). Errors name the file, the setting and the path, never the password or the
/// key.
pub fn load(config: &Config) -> Result<RedisAccess, ConfigError> {
    let password_in = |path: &Option<std::path::PathBuf>, key: &str, what: &str| {
        path.as_deref()
            .map(|path| read_password(path, what))
            .transpose()
            .map_err(|message| ConfigError {
                file: config.file.clone(),
                key: key.to_string(),
                message,
            })
    };
    let sessions = &config.sessions;
    let access = RedisAccess {
        password: password_in(
            &sessions.redis_password_file,
            "sessions.redis_password_file",
            "the Redis password file (sessions.redis_password_file)",
        )?,
        sentinel_password: password_in(
            &sessions.redis_sentinel_password_file,
            "sessions.redis_sentinel_password_file",
            "the sentinels' password file (sessions.redis_sentinel_password_file)",
        )?,
        tls: load_tls(config)?,
    };
    if let StoreKind::Redis { url, .. } = &config.sessions.store {
        RedisStore::check_url(url, &access).map_err(|e| ConfigError {
            file: config.file.clone(),
            key: match e {
                RedisConnectError::InvalidTls(_) => "sessions.redis_tls",
                _ => "sessions.redis_url",
            }
            .to_string(),
            message: e.to_string(),
        })?;
    }
    Ok(access)
}

/// The password in `path`: its one line, without the line end. The error names the path and
/// what is wrong, never the content. Only a regular file is read (a FIFO would block), and no
/// more of it than a password can take. `what` names the file in the warning that others may
/// read it.
fn read_password(path: &Path, what: &str) -> Result<String, String> {
    // The longest password and a line end, and one byte more to tell a longer file.
    let bytes = read_small_file(path, MAX_PASSWORD_BYTES + 3)?;
    let text = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(&bytes);
    let shown = path.display();
    if text.is_empty() {
        return Err(format!("is empty: {shown}"));
    }
    if text.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "holds more than {MAX_PASSWORD_BYTES} bytes; it must hold the password alone: {shown}"
        ));
    }
    if text.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        return Err(format!(
            "holds more than one line; it must hold the password alone: {shown}"
        ));
    }
    if text.iter().any(u8::is_ascii_control) {
        return Err(format!("holds a control character: {shown}"));
    }
    let password =
        String::from_utf8(text.to_vec()).map_err(|_| format!("is not UTF-8 text: {shown}"))?;
    crate::tls::key_file_warning(path, what);
    Ok(password)
}

/// At most `most` bytes of the regular file `path` (a FIFO would block); the error names the
/// path, never the content.
fn read_small_file(path: &Path, most: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    if !std::fs::metadata(path).map_err(cannot)?.is_file() {
        return Err(format!("is not a regular file: {}", path.display()));
    }
    let mut bytes = Vec::new();
    let most = u64::try_from(most).unwrap_or(u64::MAX);
    std::fs::File::open(path)
        .and_then(|file| file.take(most).read_to_end(&mut bytes))
        .map_err(cannot)?;
    Ok(bytes)
}

/// Most bytes of `sessions.redis_record_key_file`.
const MAX_RECORD_KEY_FILE_BYTES: usize = 64 * 1024;

/// Reads and checks `sessions.redis_record_key_file` (for `serve`, the session commands and
/// `check-config`): one key per line, the sealing one first, each at least
/// [`session_store::MIN_KEY_BYTES`] bytes of printable text. `None`: no such setting. Errors
/// name the file, the setting, the path and the line, never a key.
pub fn load_record_keys(config: &Config) -> Result<Option<RecordKeys>, ConfigError> {
    let Some(path) = &config.sessions.redis_record_key_file else {
        return Ok(None);
    };
    let err = |message: String| ConfigError {
        file: config.file.clone(),
        key: "sessions.redis_record_key_file".to_string(),
        message,
    };
    let bytes = read_small_file(path, MAX_RECORD_KEY_FILE_BYTES + 1).map_err(err)?;
    let shown = path.display();
    if bytes.len() > MAX_RECORD_KEY_FILE_BYTES {
        return Err(err(format!(
            "holds more than {MAX_RECORD_KEY_FILE_BYTES} bytes: {shown}"
        )));
    }
    let mut keys = Vec::new();
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let number = n + 1;
        if !line.iter().all(|b| b.is_ascii_graphic()) {
            return Err(err(format!(
                "line {number} holds a space or a character that is not printable ASCII \
                 (write keys as base64 or hex, such as from `openssl rand -base64 32`): {shown}"
            )));
        }
        if line.len() < session_store::MIN_KEY_BYTES {
            return Err(err(format!(
                "line {number} is shorter than {} characters (`openssl rand -base64 32` makes \
                 a key): {shown}",
                session_store::MIN_KEY_BYTES
            )));
        }
        keys.push(line.to_vec());
    }
    let keys = RecordKeys::new(keys).ok_or_else(|| {
        err(format!(
            "holds no key (one per line, such as from `openssl rand -base64 32`): {shown}"
        ))
    })?;
    crate::tls::key_file_warning(
        path,
        "the session record key file (sessions.redis_record_key_file)",
    );
    Ok(Some(keys))
}

/// Reads and checks the files of `sessions.redis_tls`: the CA file holds PEM certificates,
/// the client certificate is valid now and the key is its key. `None`: no such settings
/// (plain `redis://`, or `rediss://` with the system's roots).
fn load_tls(config: &Config) -> Result<Option<RedisTls>, ConfigError> {
    let Some(files) = &config.sessions.redis_tls else {
        return Ok(None);
    };
    let err = |key: &str, message: String| ConfigError {
        file: config.file.clone(),
        key: key.to_string(),
        message,
    };
    let ca_pem = match &files.ca_file {
        None => None,
        Some(path) => {
            let key = "sessions.redis_tls.ca_file";
            let pem = crate::tls::read(path).map_err(|m| err(key, m))?;
            let certs = X509::stack_from_pem(&pem).map_err(|_| {
                err(
                    key,
                    format!("not a file of PEM certificates: {}", path.display()),
                )
            })?;
            if certs.is_empty() {
                return Err(err(
                    key,
                    format!("holds no PEM certificate: {}", path.display()),
                ));
            }
            // The certificates as checked, written again: the TLS library reads plain
            // `CERTIFICATE` blocks only.
            let checked = crate::tls::to_pem(certs.iter().map(|c| &**c))
                .map_err(|_| err(key, format!("cannot be used: {}", path.display())))?;
            Some(checked)
        }
    };
    let client = match &files.client {
        None => None,
        Some(pair) => {
            let keys = crate::tls::PairKeys {
                cert: "sessions.redis_tls.cert_file",
                key: "sessions.redis_tls.key_file",
            };
            let checked =
                crate::tls::read_pair(pair, keys, unix_now()).map_err(|e| err(e.key, e.message))?;
            crate::tls::key_file_warning(
                &pair.key_file,
                "the Redis client key (sessions.redis_tls.key_file)",
            );
            let validity = crate::tls::validity(&checked.leaf);
            if let Some(days) = validity.and_then(|v| v.warn_days_left(unix_now())) {
                tracing::warn!(
                    cert_file = %pair.cert_file.display(),
                    days_left = days,
                    "the Redis client certificate (sessions.redis_tls.cert_file) expires soon; \
                     renew it and send SIGHUP"
                );
            }
            // What was checked is what is used, not the files read again.
            let chain =
                std::iter::once(&*checked.leaf).chain(checked.intermediates.iter().map(|c| &**c));
            let cert = crate::tls::to_pem(chain).map_err(|_| {
                err(
                    keys.cert,
                    format!("cannot be used: {}", pair.cert_file.display()),
                )
            })?;
            let key = checked.key.private_key_to_pem_pkcs8().map_err(|_| {
                err(
                    keys.key,
                    format!("cannot be used: {}", pair.key_file.display()),
                )
            })?;
            Some((cert, key))
        }
    };
    Ok(Some(RedisTls { ca_pem, client }))
}

/// On SIGHUP, reads `sessions.redis_record_key_file` again and puts its keys in force, and
/// reads `sessions.redis_password_file`, `sessions.redis_sentinel_password_file` and the files
/// of `sessions.redis_tls` again and, when
/// they changed and pass the checks of start-up, connects to Redis with them and uses that
/// connection from then on; `in_force` is what the store connected with. Files that fail the
/// checks, or a server that refuses them, change nothing (the next SIGHUP tries again).
pub async fn renew_on_hangup(config: Config, store: RedisStore, mut in_force: RedisAccess) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!(
            "cannot listen for SIGHUP; a new Redis password, new TLS files or new session \
             record keys need a restart"
        );
        return;
    };
    let sessions = &config.sessions;
    while hangup.recv().await.is_some() {
        if sessions.redis_record_key_file.is_some() {
            reload_record_keys(&config, &store).await;
        }
        if sessions.redis_tls.is_some()
            || sessions.redis_password_file.is_some()
            || sessions.redis_sentinel_password_file.is_some()
        {
            renew_access(&config, &store, &mut in_force).await;
        }
    }
}

/// Reads `sessions.redis_record_key_file` again and, when it passes the checks of start-up,
/// puts its keys in force; otherwise the keys in force stay.
async fn reload_record_keys(config: &Config, store: &RedisStore) {
    // The file may sit on a mount that is slow to answer: read off the async workers.
    let reading = config.clone();
    match tokio::task::spawn_blocking(move || load_record_keys(&reading)).await {
        Ok(Ok(keys)) => {
            if store.set_record_keys(keys) {
                tracing::info!("reloaded the session record keys (sessions.redis_record_key_file)");
            } else {
                tracing::info!("the session record keys are unchanged");
            }
        }
        Ok(Err(e)) => tracing::error!(
            error = %e,
            "session record keys reload refused; the keys in force stay"
        ),
        Err(e) => tracing::error!(
            error = %e,
            "session record keys reload failed; the keys in force stay"
        ),
    }
}

/// Reads the password file and the TLS files again and, when they changed and pass the
/// checks, connects with them; `in_force` is what the store connected with.
async fn renew_access(config: &Config, store: &RedisStore, in_force: &mut RedisAccess) {
    // The files may sit on a mount that is slow to answer: read off the async workers.
    let reading = config.clone();
    let loaded = tokio::task::spawn_blocking(move || load(&reading)).await;
    let renewed = match loaded {
        Ok(Ok(renewed)) => renewed,
        Err(e) => {
            tracing::error!(error = %e, "Redis reload failed; the connection in force stays");
            return;
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "Redis reload refused; the connection in force stays");
            return;
        }
    };
    let changes = [
        (
            renewed.password != in_force.password,
            "the new password (sessions.redis_password_file)",
        ),
        (
            renewed.sentinel_password != in_force.sentinel_password,
            "the sentinels' new password (sessions.redis_sentinel_password_file)",
        ),
        (
            renewed.tls != in_force.tls,
            "the renewed TLS files (sessions.redis_tls)",
        ),
    ];
    let changed: Vec<&str> = changes
        .iter()
        .filter(|(changed, _)| *changed)
        .map(|(_, what)| *what)
        .collect();
    if changed.is_empty() {
        tracing::info!("the Redis passwords and TLS files are unchanged");
        return;
    }
    let what = changed.join(" and ");
    match store.renew(&renewed).await {
        Ok(()) => {
            tracing::info!("reconnected to Redis with {what}");
            *in_force = renewed;
        }
        Err(e) => tracing::error!(
            error = %e,
            "Redis reload refused: no connection with {what}; the connection in force stays"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(content: &[u8]) -> Result<String, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redis-password");
        std::fs::write(&path, content).unwrap();
        let result = read_password(&path, "the test file");
        if let Err(message) = &result {
            assert!(message.contains("redis-password"), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
        result
    }

    fn record_keys(content: &[u8]) -> Result<Option<RecordKeys>, String> {
        use crate::config::tests::{load, GOOD};
        let keys = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(keys.path(), content).unwrap();
        let (_dir, config) = load(&format!(
            "{GOOD}sessions:\n  store: redis\n  redis_url: redis://127.0.0.1:6379/0\n  \
             redis_record_key_file: {}\n",
            keys.path().display()
        ));
        load_record_keys(&config.unwrap()).map_err(|e| {
            let shown = e.to_string();
            assert!(shown.contains("sessions.redis_record_key_file"), "{shown}");
            assert!(!shown.contains("s3cret"), "{shown}");
            shown
        })
    }

    #[test]
    fn record_keys_are_one_per_line_and_long_enough() {
        let a = "s3cret-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let b = "s3cret-BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
        let one = record_keys(format!("{a}\n").as_bytes()).unwrap().unwrap();
        assert_eq!(one, RecordKeys::new(vec![a.as_bytes().to_vec()]).unwrap());
        let two = record_keys(format!("{b}\r\n\n{a}").as_bytes())
            .unwrap()
            .unwrap();
        let expected = vec![b.as_bytes().to_vec(), a.as_bytes().to_vec()];
        assert_eq!(two, RecordKeys::new(expected).unwrap());
        assert!(record_keys(b"").unwrap_err().contains("holds no key"));
        assert!(record_keys(b"s3cret-short\n")
            .unwrap_err()
            .contains("line 1 is shorter"));
        let spaced = format!("{a}\ns3cret with spaces and more than 32 characters\n");
        assert!(record_keys(spaced.as_bytes())
            .unwrap_err()
            .contains("line 2 holds a space"));
    }

    #[test]
    fn the_password_is_the_files_one_line_without_its_end() {
        assert_eq!(read(b"s3cret-pw\n").unwrap(), "s3cret-pw");
        assert_eq!(read(b"s3cret-pw\r\n").unwrap(), "s3cret-pw");
        assert_eq!(
            read(b"s3cret pw with spaces").unwrap(),
            "s3cret pw with spaces"
        );
        assert_eq!(
            read("s3cret-pässwort\n".as_bytes()).unwrap(),
            "s3cret-pässwort"
        );
    }

    #[test]
    fn a_file_that_holds_more_or_less_than_a_password_is_refused_without_showing_it() {
        assert!(read(b"").unwrap_err().contains("is empty"));
        assert!(read(b"\n").unwrap_err().contains("is empty"));
        assert!(read(b"s3cret\nother\n")
            .unwrap_err()
            .contains("more than one line"));
        assert!(read(b"s3cret\n\n")
            .unwrap_err()
            .contains("more than one line"));
        assert!(read(b"s3cret\x00x")
            .unwrap_err()
            .contains("control character"));
        assert!(read(b"s3cret\xff").unwrap_err().contains("UTF-8"));
        let long = vec![b'a'; MAX_PASSWORD_BYTES + 1];
        assert!(read(&long).unwrap_err().contains("more than 4096 bytes"));
        assert_eq!(read(&long[1..]).unwrap().len(), MAX_PASSWORD_BYTES);
        let big = vec![b'a'; 1 << 20];
        assert!(read(&big).unwrap_err().contains("more than 4096 bytes"));
        let dir = tempfile::tempdir().unwrap();
        let not_a_file = read_password(dir.path(), "the test file").unwrap_err();
        assert!(not_a_file.contains("is not a regular file"), "{not_a_file}");
        let missing =
            read_password(Path::new("/nonexistent/redis-password"), "the test file").unwrap_err();
        assert!(
            missing.contains("cannot read /nonexistent/redis-password"),
            "{missing}"
        );
    }
}
