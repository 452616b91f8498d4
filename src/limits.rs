//! Every bound petrel enforces, as a named constant with its reason, gathered in
//! [`Limits`] so that each can be overridden from the command line.

use std::time::Duration;

/// Chains of this many certificates or more are refused (albatross: "certificate chain
/// too long" at 10).
pub const MAX_CHAIN_LEN: usize = 10;

/// Largest TLS Certificate message accepted (OpenSSL's `max_cert_list`). albatross-client
/// embeds the compressed unikernel image in the leaf, so this must hold real images;
/// albatross-client itself refuses certificates over 2^24 octets.
pub const MAX_CHAIN_SIZE: usize = 16 * 1024 * 1024;

/// Largest single frame (a `Wire` message or one raw data chunk). albatross has no limit
/// (Note W4); albatross-client sends chunks of at most 4096 octets, other front-ends use
/// larger ones, so 1 MiB leaves ample room while bounding what one read allocates.
pub const MAX_FRAME_SIZE: usize = 1024 * 1024;

/// Largest unikernel image accepted, streamed or embedded, before and after zlib
/// inflation. Typical solo5 images are 2–30 MB.
pub const MAX_IMAGE_SIZE: u64 = 512 * 1024 * 1024;

/// Largest CRL accepted (upload stream or operator file).
pub const MAX_CRL_SIZE: u64 = 8 * 1024 * 1024;

/// Open connections at once; further connections are closed right after accept.
pub const MAX_CONNECTIONS: usize = 1024;

/// TLS handshakes in progress at once. A handshake may buffer a certificate chain of up
/// to [`MAX_CHAIN_SIZE`], so this bounds what unauthenticated peers can make us hold.
pub const MAX_HANDSHAKES: usize = 64;

/// Time a peer has to complete the TLS handshake (a 2 MiB chain over a 1 Mbit/s link
/// takes about 17 s).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Time allowed between two frames or chunks of a stream before the connection is
/// dropped with a failure. Writes to a client that stopped reading are bounded by the same
/// time, so a stalled reader cannot hold a console stream or a connection forever.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Time a new connection has to send its first octet before it takes a handshake slot.
/// Idle peers hold only a connection slot (a socket, no TLS state) and are dropped after
/// this; a real client sends its ClientHello right after connecting, so 10 s covers
/// slow links while keeping hundreds of idle sockets from piling up.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a connection may wait for one of the [`MAX_HANDSHAKES`] slots. Slots free up at
/// least every [`HANDSHAKE_TIMEOUT`], and waiters are served first come, first served, so
/// a legitimate client queued behind stalled handshakes gets its turn; the bound keeps the
/// queue from growing without end under a flood.
pub const HANDSHAKE_QUEUE_TIMEOUT: Duration = Duration::from_secs(60);

/// After a refusal or an abandoned input stream, the client may still be sending: the
/// server keeps reading (and discarding) for at most this long after its close_notify so
/// that closing with unread data does not reset the connection before the client has read
/// the failure frame. Short, since the reply is already on its way.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// Audit records queued for the writer; beyond this the server counts and logs dropped
/// records instead of waiting for the disk. Records are a few hundred octets, so the queue
/// holds well under 1 MB.
pub const AUDIT_QUEUE: usize = 4096;

/// Console history kept per unikernel, in lines (albatross: 1024).
pub const CONSOLE_LINES: usize = 1024;

/// Largest console `count` honoured; larger requests are clamped (spec E8).
pub const MAX_CONSOLE_COUNT: i64 = 1024;

/// Console subscribers per unikernel (albatross `--max-subscribers` default: 5).
pub const MAX_CONSOLE_SUBSCRIBERS: usize = 5;

/// Time a tender has to exit after SIGTERM before it is killed with SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a tender started by a command must survive before the command reports success.
/// solo5-hvt gives up within milliseconds when it cannot set up (KVM, a tap, a block
/// device, the image) and exits with status 1; waiting this long lets create,
/// force-create and restart report that failure instead of a false "created unikernel",
/// at the price of this much latency per start.
pub const START_CHECK: Duration = Duration::from_millis(100);

/// Delay before the first automatic restart of a unikernel that exited (restart on
/// failure, spec §8). Short enough that a one-off crash is hardly noticed; the delay
/// doubles with every further quick exit up to [`RESTART_BACKOFF_MAX`], so a crash loop
/// costs at most one spawn per minute instead of spinning a CPU.
pub const RESTART_BACKOFF_INITIAL: Duration = Duration::from_secs(1);

/// Longest delay between automatic restarts of a unikernel in a crash loop.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A unikernel that ran at least this long before exiting is restarted after
/// [`RESTART_BACKOFF_INITIAL`] again: its earlier crashes no longer count.
pub const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(60);

/// Time between two samples of every unikernel's statistics (albatross-stats'
/// `--interval` default). Sampling only happens while somebody subscribes or metrics are
/// on; one round over 1 000 unikernels costs a few milliseconds (docs/PERFORMANCE.md).
pub const STATS_INTERVAL: Duration = Duration::from_secs(10);

/// All limits, with their defaults above; the endpoint's flags override them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// See [`MAX_CHAIN_LEN`].
    pub max_chain_len: usize,
    /// See [`MAX_CHAIN_SIZE`].
    pub max_chain_size: usize,
    /// See [`MAX_FRAME_SIZE`].
    pub max_frame_size: usize,
    /// See [`MAX_IMAGE_SIZE`].
    pub max_image_size: u64,
    /// See [`MAX_CRL_SIZE`].
    pub max_crl_size: u64,
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`MAX_HANDSHAKES`].
    pub max_handshakes: usize,
    /// See [`HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`FIRST_BYTE_TIMEOUT`].
    pub first_byte_timeout: Duration,
    /// See [`HANDSHAKE_QUEUE_TIMEOUT`].
    pub handshake_queue_timeout: Duration,
    /// See [`CONSOLE_LINES`].
    pub console_lines: usize,
    /// See [`MAX_CONSOLE_SUBSCRIBERS`].
    pub max_console_subscribers: usize,
    /// See [`STOP_TIMEOUT`].
    pub stop_timeout: Duration,
    /// See [`START_CHECK`].
    pub start_check: Duration,
    /// See [`RESTART_BACKOFF_INITIAL`].
    pub restart_backoff_initial: Duration,
    /// See [`RESTART_BACKOFF_MAX`].
    pub restart_backoff_max: Duration,
    /// See [`RESTART_BACKOFF_RESET`].
    pub restart_backoff_reset: Duration,
    /// See [`STATS_INTERVAL`].
    pub stats_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_chain_len: MAX_CHAIN_LEN,
            max_chain_size: MAX_CHAIN_SIZE,
            max_frame_size: MAX_FRAME_SIZE,
            max_image_size: MAX_IMAGE_SIZE,
            max_crl_size: MAX_CRL_SIZE,
            max_connections: MAX_CONNECTIONS,
            max_handshakes: MAX_HANDSHAKES,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            first_byte_timeout: FIRST_BYTE_TIMEOUT,
            handshake_queue_timeout: HANDSHAKE_QUEUE_TIMEOUT,
            console_lines: CONSOLE_LINES,
            max_console_subscribers: MAX_CONSOLE_SUBSCRIBERS,
            stop_timeout: STOP_TIMEOUT,
            start_check: START_CHECK,
            restart_backoff_initial: RESTART_BACKOFF_INITIAL,
            restart_backoff_max: RESTART_BACKOFF_MAX,
            restart_backoff_reset: RESTART_BACKOFF_RESET,
            stats_interval: STATS_INTERVAL,
        }
    }
}
