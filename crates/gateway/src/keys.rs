//! The SP's key pair: loaded from PEM files, or generated on first start when both are absent.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509NameBuilder, X509};

/// The SP private key and its certificate, and the next pair during a key rollover.
pub struct SpKeys {
    /// The private key; never logged or shown.
    pub key: PKey<Private>,
    /// The certificate published in SP metadata.
    pub cert: X509,
    /// The pair that will replace this one (`sp.next_key_file`): published in metadata and
    /// tried for decryption, never used to sign.
    pub next: Option<Box<SpKeys>>,
}

impl SpKeys {
    /// This pair and then the next one, if any.
    pub fn all(&self) -> impl Iterator<Item = &SpKeys> {
        std::iter::once(self).chain(self.next.as_deref())
    }
}

impl std::fmt::Debug for SpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpKeys(..)")
    }
}

/// Makes a new RSA-2048 key and a self-signed certificate for `common_name`, valid `days`.
pub fn generate(common_name: &str, days: u32) -> anyhow::Result<SpKeys> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", common_name)?;
    let name = name.build();
    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_not_before(&*Asn1Time::days_from_now(0)?)?;
    builder.set_not_after(&*Asn1Time::days_from_now(days)?)?;
    builder.set_pubkey(&key)?;
    builder.sign(&key, MessageDigest::sha256())?;
    Ok(SpKeys {
        key,
        cert: builder.build(),
        next: None,
    })
}

/// Creates `path` (and its folder) with `mode` and writes `bytes`, refusing to overwrite.
fn create_file(path: &Path, mode: u32, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    out.write_all(bytes)?;
    Ok(())
}

/// Writes a private key (PEM) readable by its owner only, refusing to overwrite.
pub fn write_private(path: &Path, pem: &[u8]) -> anyhow::Result<()> {
    create_file(path, 0o600, pem)
}

/// Writes the key (mode 0600) and certificate as PEM, refusing to overwrite either.
pub fn write(keys: &SpKeys, key_file: &Path, cert_file: &Path) -> anyhow::Result<()> {
    write_private(key_file, &keys.key.private_key_to_pem_pkcs8()?)?;
    create_file(cert_file, 0o644, &keys.cert.to_pem()?)
}

/// Loads a key pair from PEM files; errors name the config keys in `keys` (key, cert) and the
/// files, never their content.
pub fn load(key_file: &Path, cert_file: &Path, keys: [&str; 2]) -> anyhow::Result<SpKeys> {
    let [key_name, cert_name] = keys;
    let key_pem = std::fs::read(key_file)
        .with_context(|| format!("{key_name}: cannot read {}", key_file.display()))?;
    let key = PKey::private_key_from_pem(&key_pem).map_err(|_| {
        anyhow::anyhow!(
            "{key_name}: {} is not a PEM private key",
            key_file.display()
        )
    })?;
    let cert_pem = std::fs::read(cert_file)
        .with_context(|| format!("{cert_name}: cannot read {}", cert_file.display()))?;
    let cert = X509::from_pem(&cert_pem).map_err(|_| {
        anyhow::anyhow!(
            "{cert_name}: {} is not a PEM certificate",
            cert_file.display()
        )
    })?;
    let matches = cert
        .public_key()
        .map(|public| public.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        bail!("{cert_name}: the certificate does not belong to the key in {key_name}");
    }
    Ok(SpKeys {
        key,
        cert,
        next: None,
    })
}

/// Loads the key pair, or generates and writes one when neither file exists.
/// Returns the keys and whether they were generated now.
pub fn load_or_generate(
    key_file: &Path,
    cert_file: &Path,
    common_name: &str,
) -> anyhow::Result<(SpKeys, bool)> {
    match (key_file.exists(), cert_file.exists()) {
        (false, false) => {
            let keys = generate(common_name, 3650)?;
            write(&keys, key_file, cert_file)?;
            Ok((keys, true))
        }
        (true, true) => Ok((
            load(key_file, cert_file, ["sp.key_file", "sp.cert_file"])?,
            false,
        )),
        (true, false) => bail!(
            "sp.cert_file: {} does not exist but sp.key_file does; provide both or neither",
            cert_file.display()
        ),
        (false, true) => bail!(
            "sp.key_file: {} does not exist but sp.cert_file does; provide both or neither",
            key_file.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (k, c) = (dir.path().join("sp.key"), dir.path().join("sp.crt"));
        let (first, generated) = load_or_generate(&k, &c, "sp").unwrap();
        assert!(generated);
        let (second, generated) = load_or_generate(&k, &c, "sp").unwrap();
        assert!(!generated);
        assert_eq!(first.cert.to_der().unwrap(), second.cert.to_der().unwrap());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn refuses_half_a_pair_and_mismatched_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let (k, c) = (dir.path().join("sp.key"), dir.path().join("sp.crt"));
        load_or_generate(&k, &c, "sp").unwrap();
        std::fs::remove_file(&c).unwrap();
        assert!(load_or_generate(&k, &c, "sp")
            .unwrap_err()
            .to_string()
            .starts_with("sp.cert_file"));
        let other = generate("other", 1).unwrap();
        std::fs::write(&c, other.cert.to_pem().unwrap()).unwrap();
        let e = load_or_generate(&k, &c, "sp").unwrap_err().to_string();
        assert!(e.contains("does not belong"), "{e}");
    }
}
