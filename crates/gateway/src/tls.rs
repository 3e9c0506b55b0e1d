//! TLS on the public listener (`server.tls`), so that a gateway can face browsers without a
//! reverse proxy or load balancer in front to terminate it.
//!
//! The settings are Mozilla's "intermediate" profile as OpenSSL builds it
//! (`SslAcceptor::mozilla_intermediate_v5`): TLS 1.2 and 1.3 only, forward-secret AEAD cipher
//! suites, no compression; and, set here, a TLS 1.2 floor, no renegotiation and read-ahead.
//! ALPN offers `h2` and `http/1.1`; a browser opens its WebSockets over HTTP/1.1 either way
//! (the gateway offers no extended CONNECT).
//!
//! The certificate (PEM, the leaf first and then its chain) and the key (PEM, unencrypted) are
//! read at start-up, where a file that cannot be read, a key that is not the certificate's, or a
//! certificate that is not yet or no longer valid stops the gateway with the key at fault. On
//! `SIGHUP` both are read again and, when they pass the same checks, serve every connection
//! from then on (a renewed certificate goes in force without a restart); otherwise the ones in
//! force stay and the reason is logged. Each handshake must end within [`HANDSHAKE_TIMEOUT`],
//! in the connection's own task.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use openssl::ssl::{AlpnError, SslAcceptor, SslAcceptorBuilder, SslMethod, SslOptions, SslRef};
use openssl::x509::X509;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// Longest time a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocols offered, in the wire format: `h2`, then `http/1.1`.
const ALPN: &[u8] = b"\x02h2\x08http/1.1";

/// The files of `server.tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// The private key, PEM, unencrypted.
    pub key_file: PathBuf,
}

/// Why the TLS files cannot be used; `key` names the setting at fault.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    /// The setting at fault, such as `server.tls.cert_file` or `server.tls.key_file`.
    pub key: &'static str,
    /// What is wrong, with the file's path.
    pub message: String,
}

/// Why a connection's TLS handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The client took longer than [`HANDSHAKE_TIMEOUT`].
    #[error("no TLS handshake within {} s", HANDSHAKE_TIMEOUT.as_secs())]
    TimedOut,
    /// The handshake failed (not TLS, no shared protocol or cipher, a reset).
    #[error("TLS handshake failed: {0}")]
    Failed(String),
}

/// The listener's TLS settings in force, swapped whole on reload.
pub struct Tls {
    files: TlsFiles,
    acceptor: ArcSwap<SslAcceptor>,
}

impl Tls {
    /// Reads and checks `files`.
    pub fn new(files: TlsFiles) -> Result<Tls, TlsError> {
        let acceptor = acceptor(&files, crate::state::unix_now())?;
        Ok(Tls {
            files,
            acceptor: ArcSwap::from_pointee(acceptor),
        })
    }

    /// Reads the files again; when they pass the checks they serve every later handshake
    /// ([`Tls::certificate`] tells which), otherwise the settings in force stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let acceptor = acceptor(&self.files, crate::state::unix_now())?;
        self.acceptor.store(Arc::new(acceptor));
        Ok(())
    }

    /// The SHA-256 fingerprint and the validity of the certificate in force.
    pub fn certificate(&self) -> (String, Option<Validity>) {
        let acceptor = self.acceptor.load();
        match acceptor.context().certificate() {
            Some(cert) => (fingerprint(cert), validity(cert)),
            None => (String::new(), None),
        }
    }

    /// Runs the server side of the handshake on `stream`.
    pub async fn accept(&self, stream: TcpStream) -> Result<SslStream<TcpStream>, HandshakeError> {
        let ssl = openssl::ssl::Ssl::new(self.acceptor.load().context())
            .map_err(|e| HandshakeError::Failed(e.to_string()))?;
        let mut stream =
            SslStream::new(ssl, stream).map_err(|e| HandshakeError::Failed(e.to_string()))?;
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, std::pin::Pin::new(&mut stream).accept())
            .await
        {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(HandshakeError::Failed(e.to_string())),
            Err(_) => Err(HandshakeError::TimedOut),
        }
    }
}

/// Builds the acceptor for `files`, checked at `now` (Unix seconds).
fn acceptor(files: &TlsFiles, now: i64) -> Result<SslAcceptor, TlsError> {
    settings(files, now).map(SslAcceptorBuilder::build)
}

/// The settings names of a certificate file and its key file, for errors.
#[derive(Debug, Clone, Copy)]
pub struct PairKeys {
    /// The certificate file's setting, such as `server.tls.cert_file`.
    pub cert: &'static str,
    /// The key file's setting, such as `server.tls.key_file`.
    pub key: &'static str,
}

impl PairKeys {
    /// An error of the certificate file.
    fn cert_error(self, message: String) -> TlsError {
        TlsError {
            key: self.cert,
            message,
        }
    }

    /// An error of the key file.
    fn key_error(self, message: String) -> TlsError {
        TlsError {
            key: self.key,
            message,
        }
    }
}

/// The names of `server.tls`'s files.
const SERVER_KEYS: PairKeys = PairKeys {
    cert: "server.tls.cert_file",
    key: "server.tls.key_file",
};

/// Reads a PEM certificate chain (leaf first) and its unencrypted PEM private key, and checks
/// that the leaf is valid at `now` (Unix seconds) and that the key is its key. Errors name the
/// setting (from `keys`) and the path, never the key's content.
pub fn read_pair(files: &TlsFiles, keys: PairKeys, now: i64) -> Result<Pair, TlsError> {
    let cert_err = |message| keys.cert_error(message);
    let key_err = |message| keys.key_error(message);
    let chain = read(&files.cert_file).map_err(cert_err)?;
    let chain = X509::stack_from_pem(&chain).map_err(|_| {
        cert_err(format!(
            "not a PEM certificate chain: {}",
            files.cert_file.display()
        ))
    })?;
    let mut chain = chain.into_iter();
    let Some(leaf) = chain.next() else {
        return Err(cert_err(format!(
            "holds no certificate: {}",
            files.cert_file.display()
        )));
    };
    let now = openssl::asn1::Asn1Time::from_unix(now)
        .map_err(|e| cert_err(format!("cannot read the time: {e}")))?;
    if leaf.not_before() > now {
        return Err(cert_err(format!(
            "the certificate is not valid yet: {}",
            files.cert_file.display()
        )));
    }
    if leaf.not_after() <= now {
        return Err(cert_err(format!(
            "the certificate has expired: {}",
            files.cert_file.display()
        )));
    }
    // Read apart first, so that an unreadable or malformed key is told from the key of
    // another certificate.
    let key = read(&files.key_file).map_err(key_err)?;
    let key = openssl::pkey::PKey::private_key_from_pem(&key).map_err(|_| {
        key_err(format!(
            "not an unencrypted PEM private key: {}",
            files.key_file.display()
        ))
    })?;
    if !leaf.public_key().is_ok_and(|public| public.public_eq(&key)) {
        return Err(key_err(format!(
            "is not the key of the certificate in {}: {}",
            keys.cert,
            files.key_file.display()
        )));
    }
    Ok(Pair {
        leaf,
        intermediates: chain.collect(),
        key,
    })
}

/// A certificate chain and its key, read and checked by [`read_pair`].
pub struct Pair {
    /// The certificate.
    pub leaf: X509,
    /// The certificates that follow it in the file.
    pub intermediates: Vec<X509>,
    /// Its private key.
    pub key: openssl::pkey::PKey<openssl::pkey::Private>,
}

/// The settings of [`acceptor`], before they are sealed.
fn settings(files: &TlsFiles, now: i64) -> Result<SslAcceptorBuilder, TlsError> {
    let cert_err = |message| SERVER_KEYS.cert_error(message);
    let key_err = |message| SERVER_KEYS.key_error(message);
    let pair = read_pair(files, SERVER_KEYS, now)?;
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| cert_err(format!("cannot set up TLS: {e}")))?;
    // OpenSSL 3 refuses a client's renegotiation by default; older ones would let a client
    // make the server redo handshakes after the deadline.
    builder.set_options(SslOptions::NO_RENEGOTIATION);
    // The profile turns TLS 1.0 and 1.1 off by options; the floor says so once more.
    builder
        .set_min_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
        .map_err(|e| cert_err(format!("cannot set up TLS: {e}")))?;
    // The chain as read and checked above, not the file read again (it may have changed).
    let usable = |_| {
        cert_err(format!(
            "not a usable PEM certificate chain: {}",
            files.cert_file.display()
        ))
    };
    builder.set_certificate(&pair.leaf).map_err(usable)?;
    for intermediate in pair.intermediates {
        builder.add_extra_chain_cert(intermediate).map_err(usable)?;
    }
    // `read_pair` checked that the key is the certificate's.
    builder.set_private_key(&pair.key).map_err(|_| {
        key_err(format!(
            "cannot use the private key: {}",
            files.key_file.display()
        ))
    })?;
    builder.set_alpn_select_callback(select_alpn);
    // One read per record instead of one for its 5-byte header and one for the rest, and
    // none that finds nothing (nginx sets the same): a proxied 100-byte request took three
    // reads on the client's side, now one (docs/performance.md).
    builder.set_read_ahead(true);
    Ok(builder)
}

/// Picks `h2`, else `http/1.1`, from what the client offers; a client that offers neither
/// goes on without ALPN (HTTP/1.1).
fn select_alpn<'a>(_: &mut SslRef, offered: &'a [u8]) -> Result<&'a [u8], AlpnError> {
    openssl::ssl::select_next_proto(ALPN, offered).ok_or(AlpnError::NOACK)
}

/// Whether a key file's mode lets its group or others read it.
pub fn readable_by_others(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o077 != 0
}

/// Warns when the key file at `path`, `what` (named with its setting), is readable by other
/// users.
pub fn key_file_warning(path: &std::path::Path, what: &str) {
    if std::fs::metadata(path).is_ok_and(|m| readable_by_others(&m)) {
        tracing::warn!(
            key_file = %path.display(),
            "{what} is readable by other users; chmod 600 it"
        );
    }
}

/// `certs` written as PEM `CERTIFICATE` blocks, one after the other.
pub fn to_pem<'c>(
    certs: impl IntoIterator<Item = &'c openssl::x509::X509Ref>,
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let mut pem = Vec::new();
    for cert in certs {
        pem.extend_from_slice(&cert.to_pem()?);
    }
    Ok(pem)
}

/// The bytes of `path`; the error names the path.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn fingerprint(cert: &openssl::x509::X509Ref) -> String {
    saml_sp::metadata::certificate_fingerprint(&cert.to_der().unwrap_or_default())
}

/// When `cert` is valid; `None` when its times cannot be read.
pub fn validity(cert: &openssl::x509::X509Ref) -> Option<Validity> {
    use saml_sp::metadata::unix_time;
    Some(Validity {
        not_before: unix_time(cert.not_before())?,
        not_after: unix_time(cert.not_after())?,
    })
}

/// When a certificate is valid, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// The start of its validity.
    pub not_before: i64,
    /// Its expiry.
    pub not_after: i64,
}

/// Longest time before expiry from which a certificate is warned of: 21 days, so that a
/// certificate renewed 30 days ahead (Let's Encrypt's 90-day ones, at a third of their life)
/// never is.
const EXPIRY_WARNING_SECS: i64 = 21 * 86_400;

impl Validity {
    /// Whole days left at `now` when the certificate is close enough to its expiry to warn of:
    /// under 21 days, and under a quarter of its lifetime (so that short-lived certificates,
    /// renewed at a third or half of their life, are not warned of at every start). `None`:
    /// not yet.
    pub fn warn_days_left(&self, now: i64) -> Option<i64> {
        let left = self.not_after - now;
        let lifetime = (self.not_after - self.not_before).max(0);
        (left < EXPIRY_WARNING_SECS.min(lifetime / 4)).then(|| left.div_euclid(86_400))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use openssl::ssl::{SslConnector, SslVerifyMode, SslVersion};

    /// A certificate and key for 127.0.0.1 in `dir`, valid from `from` to `until` days from
    /// now (negative: in the past).
    pub(crate) fn write_pair(dir: &Path, name: &str, from: i32, until: i32) -> TlsFiles {
        use openssl::asn1::Asn1Time;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::hash::MessageDigest;
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::x509::{X509NameBuilder, X509};
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name_builder = X509NameBuilder::new().unwrap();
        name_builder
            .append_entry_by_text("CN", "127.0.0.1")
            .unwrap();
        let subject = name_builder.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&subject).unwrap();
        b.set_issuer_name(&subject).unwrap();
        b.set_pubkey(&key).unwrap();
        let now = crate::state::unix_now();
        let at = |days: i32| Asn1Time::from_unix(now + i64::from(days) * 86_400).unwrap();
        b.set_not_before(&at(from)).unwrap();
        b.set_not_after(&at(until)).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let files = TlsFiles {
            cert_file: dir.join(format!("{name}.crt")),
            key_file: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert_file, b.build().to_pem().unwrap()).unwrap();
        std::fs::write(&files.key_file, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        files
    }

    /// A handshake with `tls` from a client of `connector`: the server's result, and what
    /// `look` reads off the client's side once connected (`None`: the client's handshake
    /// failed).
    async fn handshake_with<T: Send + 'static>(
        tls: &Tls,
        connector: SslConnector,
        look: fn(&SslRef) -> T,
    ) -> (Result<(), HandshakeError>, Option<T>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let ssl = connector
                .configure()
                .unwrap()
                .into_ssl("127.0.0.1")
                .unwrap();
            let tcp = TcpStream::connect(address).await.unwrap();
            let mut stream = SslStream::new(ssl, tcp).unwrap();
            let connected = std::pin::Pin::new(&mut stream).connect().await;
            connected.ok().map(|()| look(stream.ssl()))
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let result = tls.accept(tcp).await.map(|_| ());
        (result, client.await.unwrap())
    }

    /// A handshake with `tls` from a client that trusts anything and may offer `alpn` and be
    /// limited to `max` (with the ciphers of an old client when below TLS 1.2).
    async fn handshake(
        tls: &Tls,
        alpn: &[u8],
        max: Option<SslVersion>,
    ) -> (Result<(), HandshakeError>, Option<Vec<u8>>, String) {
        let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
        b.set_verify(SslVerifyMode::NONE);
        if !alpn.is_empty() {
            b.set_alpn_protos(alpn).unwrap();
        }
        if let Some(max) = max {
            b.set_min_proto_version(Some(SslVersion::TLS1)).unwrap();
            b.set_max_proto_version(Some(max)).unwrap();
            b.set_cipher_list("DEFAULT:@SECLEVEL=0").unwrap();
        }
        let (result, seen) = handshake_with(tls, b.build(), |ssl| {
            let cert = ssl.peer_certificate().map(|c| fingerprint(&c));
            (ssl.selected_alpn_protocol().map(<[u8]>::to_vec), cert)
        })
        .await;
        let (alpn, cert) = seen.unwrap_or((None, None));
        (result, alpn, cert.unwrap_or_default())
    }

    #[tokio::test]
    async fn a_handshake_offers_h2_then_http_1_1_and_refuses_old_versions() {
        let dir = tempfile::tempdir().unwrap();
        let tls = Tls::new(write_pair(dir.path(), "a", -1, 30)).unwrap();
        let (r, alpn, _) = handshake(&tls, b"\x02h2\x08http/1.1", None).await;
        r.unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        let (r, alpn, _) = handshake(&tls, b"\x08http/1.1", None).await;
        r.unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        let (r, alpn, _) = handshake(&tls, b"", None).await;
        r.unwrap();
        assert_eq!(alpn, None);
        // TLS 1.1 and below are refused, even to a client willing to use weak ciphers: by the
        // context's own floor, whatever OpenSSL's security level would allow.
        let (r, _, _) = handshake(&tls, b"", Some(SslVersion::TLS1_1)).await;
        assert!(matches!(r, Err(HandshakeError::Failed(_))), "{r:?}");
        let mut settings = settings(&tls.files, crate::state::unix_now()).unwrap();
        assert_eq!(settings.min_proto_version(), Some(SslVersion::TLS1_2));
        let options = settings.options();
        assert!(options.contains(SslOptions::NO_RENEGOTIATION));
        assert!(options.contains(SslOptions::NO_TLSV1 | SslOptions::NO_TLSV1_1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_greets_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let tls = Tls::new(write_pair(dir.path(), "a", -1, 30)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let _quiet = TcpStream::connect(address).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let r = tls.accept(tcp).await;
        assert!(matches!(r, Err(HandshakeError::TimedOut)), "{r:?}");
    }

    /// A P-256 certificate for `cn`, signed by `issuer` (self-signed when `None`), a CA or not.
    fn issue(
        cn: &str,
        issuer: Option<(&X509, &openssl::pkey::PKey<openssl::pkey::Private>)>,
        ca: bool,
    ) -> (X509, openssl::pkey::PKey<openssl::pkey::Private>) {
        use openssl::asn1::Asn1Time;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::hash::MessageDigest;
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
        use openssl::x509::X509NameBuilder;
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let serial = openssl::bn::BigNum::from_u32(rand_serial()).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(issuer.map_or(&*name, |(cert, _)| cert.subject_name()))
            .unwrap();
        b.set_pubkey(&key).unwrap();
        let now = crate::state::unix_now();
        b.set_not_before(&Asn1Time::from_unix(now - 86_400).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(now + 30 * 86_400).unwrap())
            .unwrap();
        let mut constraints = BasicConstraints::new();
        if ca {
            constraints.critical().ca();
        }
        b.append_extension(constraints.build().unwrap()).unwrap();
        if !ca {
            let san = SubjectAlternativeName::new()
                .ip("127.0.0.1")
                .build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))
                .unwrap();
            b.append_extension(san).unwrap();
        }
        let signer = issuer.map_or(&key, |(_, k)| k);
        b.sign(signer, MessageDigest::sha256()).unwrap();
        (b.build(), key)
    }

    fn rand_serial() -> u32 {
        let mut bytes = [0u8; 4];
        openssl::rand::rand_bytes(&mut bytes).unwrap();
        u32::from_be_bytes(bytes) >> 1
    }

    #[tokio::test]
    async fn the_chain_is_served_so_a_client_that_trusts_only_the_root_connects() {
        let dir = tempfile::tempdir().unwrap();
        let (root, root_key) = issue("Test Root", None, true);
        let (intermediate, intermediate_key) =
            issue("Test Intermediate", Some((&root, &root_key)), true);
        let (leaf, leaf_key) = issue("127.0.0.1", Some((&intermediate, &intermediate_key)), false);
        let files = TlsFiles {
            cert_file: dir.path().join("chain.pem"),
            key_file: dir.path().join("leaf.key"),
        };
        let chain = [leaf.to_pem().unwrap(), intermediate.to_pem().unwrap()].concat();
        std::fs::write(&files.cert_file, chain).unwrap();
        std::fs::write(
            &files.key_file,
            leaf_key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        let tls = Tls::new(files).unwrap();

        let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
        let mut store = openssl::x509::store::X509StoreBuilder::new().unwrap();
        store.add_cert(root).unwrap();
        b.set_verify_cert_store(store.build()).unwrap();
        let (served, sent) = handshake_with(&tls, b.build(), |ssl| {
            ssl.peer_cert_chain().map_or(0, |c| c.len())
        })
        .await;
        served.unwrap();
        let sent = sent.expect("the client verified the chain up to the root");
        assert_eq!(sent, 2, "the leaf and the intermediate");
    }

    #[test]
    fn the_validity_served_is_read_from_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let tls = Tls::new(write_pair(dir.path(), "v", -1, 30)).unwrap();
        let Some(v) = tls.certificate().1 else {
            panic!("no validity read");
        };
        let now = crate::state::unix_now();
        assert!(
            (v.not_before - (now - 86_400)).abs() < 120,
            "{v:?} at {now}"
        );
        assert!(
            (v.not_after - (now + 30 * 86_400)).abs() < 120,
            "{v:?} at {now}"
        );
    }

    #[test]
    fn expiry_is_warned_of_under_21_days_and_a_quarter_of_the_lifetime() {
        const DAY: i64 = 86_400;
        let now = 1_000 * DAY;
        // A certificate of `life` days with `left` days (seconds, for fractions) to go.
        let warned = |life: i64, left: i64| {
            Validity {
                not_before: now + left - life * DAY,
                not_after: now + left,
            }
            .warn_days_left(now)
        };
        // 90 days (Let's Encrypt today): renewed 30 days ahead, never warned of.
        assert_eq!(warned(90, 30 * DAY), None);
        assert_eq!(warned(90, 21 * DAY), None);
        assert_eq!(warned(90, 21 * DAY - 1), Some(20));
        // A year: the same 21 days.
        assert_eq!(warned(397, 22 * DAY), None);
        assert_eq!(warned(397, 10 * DAY), Some(10));
        // 45 days, renewed at a third of its life (15 days ahead): warned of under 11.25.
        assert_eq!(warned(45, 15 * DAY), None);
        assert_eq!(warned(45, 11 * DAY + DAY / 2), None);
        assert_eq!(warned(45, 11 * DAY), Some(11));
        // Six days, renewed at half its life: warned of under a day and a half.
        assert_eq!(warned(6, 3 * DAY), None);
        assert_eq!(warned(6, DAY), Some(1));
        // Expired: warned of, with the days below zero.
        assert_eq!(warned(90, -DAY), Some(-1));
    }

    #[tokio::test]
    async fn a_reload_serves_the_new_certificate_and_a_bad_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), "live", -1, 30);
        let tls = Tls::new(files.clone()).unwrap();
        let (first, _) = tls.certificate();
        assert_eq!(handshake(&tls, b"", None).await.2, first);
        // Renewed in place, as certbot or cert-manager do.
        let renewed = write_pair(dir.path(), "renewed", -1, 60);
        std::fs::rename(&renewed.cert_file, &files.cert_file).unwrap();
        std::fs::rename(&renewed.key_file, &files.key_file).unwrap();
        tls.reload().unwrap();
        let second = tls.certificate().0;
        assert_ne!(second, first);
        assert_eq!(tls.certificate().0, second);
        assert_eq!(handshake(&tls, b"", None).await.2, second);
        // A certificate whose key did not come with it is refused; the one in force stays.
        let other = write_pair(dir.path(), "other", -1, 60);
        std::fs::rename(&other.cert_file, &files.cert_file).unwrap();
        let e = tls.reload().unwrap_err();
        assert_eq!(e.key, "server.tls.key_file");
        assert_eq!(handshake(&tls, b"", None).await.2, second);
    }

    #[test]
    fn bad_files_name_the_key_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_pair(dir.path(), "good", -1, 30);
        let now = crate::state::unix_now();
        let check = |files: &TlsFiles| acceptor(files, now).map(|_| ()).unwrap_err();

        let missing = TlsFiles {
            cert_file: dir.path().join("absent.crt"),
            ..good.clone()
        };
        let e = check(&missing);
        assert_eq!(e.key, "server.tls.cert_file");
        assert!(e.message.contains("cannot read") && e.message.contains("absent.crt"));

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem").unwrap();
        let e = check(&TlsFiles {
            cert_file: garbage.clone(),
            ..good.clone()
        });
        assert_eq!(e.key, "server.tls.cert_file");
        let e = check(&TlsFiles {
            key_file: garbage,
            ..good.clone()
        });
        assert_eq!(e.key, "server.tls.key_file");
        assert!(
            e.message.contains("not an unencrypted PEM private key"),
            "{e}"
        );

        let other = write_pair(dir.path(), "other", -1, 30);
        let e = check(&TlsFiles {
            key_file: other.key_file,
            ..good.clone()
        });
        assert_eq!(e.key, "server.tls.key_file");
        assert!(
            e.message.contains("is not the key of the certificate"),
            "{e}"
        );

        let expired = write_pair(dir.path(), "expired", -30, -1);
        assert!(check(&expired).message.contains("has expired"));
        let future = write_pair(dir.path(), "future", 2, 30);
        assert!(check(&future).message.contains("not valid yet"));
        // No secret in the messages, only paths: the key given as the certificate.
        let e = check(&TlsFiles {
            cert_file: good.key_file.clone(),
            ..good
        });
        assert_eq!(e.key, "server.tls.cert_file");
        assert!(!e.to_string().contains("PRIVATE KEY"), "{e}");
        assert!(!e.to_string().contains("BEGIN"), "{e}");
    }
}
