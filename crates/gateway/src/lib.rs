//! The saml-gateway library: everything the `saml-gateway` binary is made of, so that
//! benchmarks and tests can reach the parts. The binary (`main.rs`) only parses the command line.
#![forbid(unsafe_code)]

pub mod admin;
pub mod attributes;
pub mod audit;
pub mod authz;
pub mod client_timeout;
pub mod closing;
pub mod config;
pub mod cookies;
pub mod decode;
pub mod federation;
pub mod fetch_proxy;
pub mod forwarded;
pub mod gate;
pub mod identity;
pub mod identity_token;
pub mod keys;
pub mod login_limit;
pub mod pages;
pub mod paths;
pub mod proxy;
pub mod proxy_protocol;
pub mod redirect;
pub mod redis_access;
pub mod refusals;
pub mod route_config;
pub mod routing;
pub mod saml;
pub mod server;
pub mod session_admin;
pub mod session_refusals;
pub mod session_watch;
pub mod slo;
pub mod state;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod ws_activity;
pub mod ws_join;
