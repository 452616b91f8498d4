//! petrel: a wire-compatible successor to albatross's remote side.
//!
//! A TLS 1.3 endpoint that authorizes each request from the client's X.509 certificate
//! chain (the command in the leaf, delegated resource policies in the intermediate CAs),
//! checks it against a hierarchical resource trie and runs MirageOS/Solo5 unikernels on
//! the local host. See `docs/` and the README for the operator's and tenant's view.
//!
//! Layering (bytes stop at the boundary, the core is pure):
//! - [`name`], [`policy`]: the pure vocabulary;
//! - [`trie`], [`resources`]: the pure resource core (policies, usage, every check);
//! - everything that parses untrusted bytes turns them into these typed values in one
//!   place; nothing past it sees raw DER.

#![warn(missing_docs)]

pub mod audit;
pub mod auth;
pub mod chain;
pub mod client;
pub mod codec;
pub mod dev;
pub mod executor;
pub mod inspect;
pub mod limits;
pub mod metrics;
pub mod name;
pub mod pki;
pub mod policy;
pub mod privsep;
pub mod resources;
pub mod revocation;
pub mod server;
pub mod store;
pub mod tls;
pub mod trie;
pub mod verify;
