//! Fixtures shared by the integration tests: a small PKI with one fixed clock (or the real
//! clock, for tests that talk TLS to a running endpoint), built with petrel's own `pki`.

#![allow(dead_code)]

pub mod pki;
pub mod tls_server;
