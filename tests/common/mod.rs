//! Fixtures shared by the integration tests: a small PKI with one fixed clock (or the real
//! clock, for tests that talk TLS to a running endpoint), built with petrel's own `pki`;
//! an OpenSSL test client, a fake handler, and servers (in-process or the real binary).

#![allow(dead_code)]

pub mod cli;
pub mod handler;
pub mod netns;
pub mod pki;
pub mod procs;
pub mod server;
pub mod tls_client;
pub mod tls_server;
