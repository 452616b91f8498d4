//! The tests that need no host resources (no endpoint, no tender, no taps): the codec and
//! its vectors, the resource trie, names, chains and certificates, the manifest reader,
//! `petrel inspect`, and the fuzz corpora replayed. They share one test binary so that a
//! clean `cargo test` links (and stores) one executable for them instead of ten.

#[path = "../common/mod.rs"]
mod common;

mod certs;
mod chain;
mod codec;
mod codec_props;
mod fuzz_corpus;
mod inspect;
mod manifest;
mod pki;
mod resources;
mod resources_props;
