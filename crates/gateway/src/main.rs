//! `saml-gateway`: a SAML 2.0 Service Provider in front of Streamlit apps.
//!
//! Subcommands: `serve` runs the gateway, `metadata` prints the SP metadata, `check-config`
//! checks a config file, `decode` shows a SAMLResponse and the verdict this config gives it,
//! `keygen` writes a new SP key pair, `sessions list|revoke` shows and ends sessions in the
//! shared (Redis) store.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::{config, decode, federation, keys, redis_access, server, session_admin, state};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "saml-gateway",
    version,
    about = "SAML 2.0 SSO gateway for Streamlit apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print this SP's metadata (for the IdP admin to import).
    Metadata {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and the files it names, then exit.
    CheckConfig {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List or revoke sessions in the shared store (sessions.store: redis only).
    Sessions {
        #[command(subcommand)]
        action: SessionsCommand,
    },
    /// Decode a SAMLResponse (a value, a form body or a browser's HAR file) and print the
    /// verdict this config would give, without creating a session.
    Decode {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The file with the response; `-` reads standard input.
        #[arg(long, default_value = "-")]
        response: PathBuf,
        /// The clock for the time checks (RFC 3339); default: now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Write a new SP private key and self-signed certificate.
    ///
    /// SP key rollover without an outage:
    /// 1. `saml-gateway keygen --key sp-next.key --cert sp-next.crt`;
    /// 2. set `sp.next_key_file` and `sp.next_cert_file` to them and restart: `/saml/metadata`
    ///    publishes both certificates, and encrypted assertions decrypt with either key;
    /// 3. have the IdP import the new metadata (or wait until it refreshes it);
    /// 4. promote: point `sp.key_file`/`sp.cert_file` at the new pair, remove the `next_*`
    ///    keys and restart; the gateway now signs with the new key;
    /// 5. once the IdP has the metadata with only the new certificate, delete the old pair.
    #[command(verbatim_doc_comment)]
    Keygen {
        /// Where to write the private key (PEM, mode 0600).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// The certificate's common name (the SP host name, say).
        #[arg(long, default_value = "saml-gateway")]
        common_name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// List the live sessions: user, NameID, session hash (as in audit records), created,
    /// last seen, expires. Never a session ID.
    List {
        /// The gateway's YAML config file (the replicas' own: it names the store).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// End every session of a user on every replica; their WebSockets close within seconds.
    Revoke {
        /// The gateway's YAML config file (the replicas' own: it names the store).
        #[arg(long, short)]
        config: PathBuf,
        /// The user's NameID, as the IdP sends it (the NAMEID column of `sessions list`).
        #[arg(long)]
        user: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The cryptography of rustls (the Redis connection's TLS), chosen once for the process:
    // ring, which builds with a C compiler alone. rustls marks it deprecated for having no
    // post-quantum key exchange, which aws-lc-rs (a CMake build of a large C library) would
    // add to a link inside the deployment.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("saml-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            let config = config::Config::load(&config)?;
            let mut builder = match config.worker_threads {
                Some(1) => tokio::runtime::Builder::new_current_thread(),
                Some(n) => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(n);
                    b
                }
                None => tokio::runtime::Builder::new_multi_thread(),
            };
            let runtime = builder.enable_all().build()?;
            runtime.block_on(server::serve(config))
        }
        Command::Metadata { config } => {
            let config = config::Config::load(&config)?;
            // Only `serve` creates a key pair: a command run by hand, perhaps as another user,
            // must not leave key files behind.
            refuse_missing_keys(&config)?;
            let (keys, _) = server::load_keys(&config)?;
            print!("{}", state::sp_metadata(&config, &keys)?);
            Ok(())
        }
        Command::CheckConfig { config: path } => {
            let config = config::Config::load(&path)?;
            let initial = idp_metadata(&config)?;
            if key_pair_absent(&config) {
                println!(
                    "{}: sp.key_file and sp.cert_file do not exist yet; `serve` will generate them",
                    path.display()
                );
                // The next pair of a rollover is never generated: it must be right already.
                if let Some((key, cert)) = &config.sp.next_key_pair {
                    keys::load(key, cert, ["sp.next_key_file", "sp.next_cert_file"])
                        .with_context(|| path.display().to_string())?;
                }
            } else {
                server::load_keys(&config)?;
            }
            server::warnings(&config, &initial);
            server::load_tls(&config)?;
            redis_access::load(&config)?;
            redis_access::load_record_keys(&config)?;
            let mut described = Vec::new();
            for (idp, found) in config.idps.iter().zip(&initial) {
                let metadata = &found.metadata;
                for (_, sentence) in federation::expiry_warnings(metadata, state::unix_now()) {
                    let whose = if config.idps_listed {
                        format!("IdP {}: ", idp.name)
                    } else {
                        String::new()
                    };
                    println!("{}: warning: {whose}{sentence}", path.display());
                }
                let from = match (&idp.source, found.origin) {
                    (config::MetadataSource::File { path, .. }, _) => path.display().to_string(),
                    (config::MetadataSource::Url { url, proxy, .. }, federation::Origin::Url) => {
                        match proxy {
                            Some(proxy) => format!(
                                "{} (through the proxy {})",
                                federation::shown(url),
                                proxy.shown()
                            ),
                            None => federation::shown(url),
                        }
                    }
                    (config::MetadataSource::Url { backing_file, .. }, _) => format!(
                        "{} (the URL gave no good document: see the warning above)",
                        backing_file.display()
                    ),
                };
                let name = if config.idps_listed {
                    format!("{} = ", idp.name)
                } else {
                    String::new()
                };
                described.push(format!(
                    "IdP {name}{} from {from}, {} signing certificate(s)",
                    metadata.entity_id,
                    metadata.signing_certificates.len(),
                ));
            }
            println!(
                "{}: OK ({}, {} route(s))",
                path.display(),
                described.join("; "),
                config.routes.routes().len()
            );
            Ok(())
        }
        Command::Sessions { action } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match action {
                SessionsCommand::List { config } => {
                    let config = config::Config::load(&config)?;
                    runtime.block_on(session_admin::list(&config))
                }
                SessionsCommand::Revoke { config, user } => {
                    let config = config::Config::load(&config)?;
                    runtime.block_on(session_admin::revoke(&config, &user))
                }
            }
        }
        Command::Decode {
            config,
            response,
            at,
        } => {
            let config = config::Config::load(&config)?;
            refuse_missing_keys(&config)?;
            let initial = idp_metadata(&config)?;
            if decode::run(&config, &initial, &response, at.as_deref())? {
                Ok(())
            } else {
                anyhow::bail!("refused (see the verdict above)")
            }
        }
        Command::Keygen {
            key,
            cert,
            common_name,
            days,
        } => {
            let keys = keys::generate(&common_name, days)?;
            keys::write(&keys, &key, &cert)?;
            println!("wrote {} and {}", key.display(), cert.display());
            Ok(())
        }
    }
}

/// The metadata of each IdP a command run by hand works with: the file's, or a fresh fetch of
/// the URL (else the backing copy), without writing the backing file.
fn idp_metadata(config: &config::Config) -> anyhow::Result<Vec<federation::Initial>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(federation::initial_all(config, false))?)
}

/// True when neither SP key file exists (the state in which `serve` generates the pair).
/// Commands run by hand (perhaps as another user) must not leave key files behind: only
/// `serve` generates the key pair.
fn refuse_missing_keys(config: &config::Config) -> anyhow::Result<()> {
    if key_pair_absent(config) {
        anyhow::bail!(
            "{}: sp.key_file: {} does not exist yet; run `saml-gateway keygen` or start \
             `serve` once, which generates the key pair",
            config.file.display(),
            config.sp.key_file.display()
        );
    }
    Ok(())
}

fn key_pair_absent(config: &config::Config) -> bool {
    !config.sp.key_file.exists() && !config.sp.cert_file.exists()
}
