//! The executor: the only part of petrel that touches the host.
//!
//! For now this holds the host-side primitives the executor proper (dispatch,
//! supervision, state) is built on. Each is small, typed and testable on its own:
//!
//! - [`net`]: tap devices attached to bridges, behind the [`net::Network`] trait
//!   (ioctls on `/dev/net/tun` and sockets, sysfs reads; a recording fake for tests);
//! - [`manifest`]: the solo5 ABI and manifest notes of a unikernel ELF image, read with a
//!   bounded, total reader, and the manifest check against the configured devices;
//! - [`mac`]: the deterministic MAC address of a unikernel's network device;
//! - [`tender`]: the solo5-hvt command line, spawning and signalling tender processes
//!   behind the [`tender::Tender`] trait, exit classification and the restart table;
//! - [`console_lines`]: splitting a tender's console output into lines (pure).
//!
//! The boundary rules of `DESIGN.md` ("The executor boundary") apply to what is built on
//! top: the executor is driven by messages only, never by references into the server.

pub mod api;
pub mod console_lines;
pub mod mac;
pub mod manifest;
pub mod net;
pub mod tender;
