//! `petrel-load`: a load generator for a petrel (or albatross) TLS endpoint.
//!
//! N concurrent clients each open one TLS 1.3 connection per request — a full handshake
//! every time, no resumption, as `petrel` and `albatross-client` do — with client
//! certificates made once at start-up from `--ca`/`--ca-key` and reused, send the command
//! (`policy info`, `unikernel info`, or a force-create whose image is streamed after the
//! handshake), read every reply frame and check the final one. It prints requests per
//! second, latency percentiles (connect to last frame) and octets per second.
//!
//! `--bare-server` measures, in the same run, a baseline: a bare tokio-openssl server in
//! this process with petrel's own TLS settings (the endpoint's `Acceptor`: TLS 1.3, client
//! certificates verified against the same CA file, the same server certificate) that only
//! completes the handshake (and drains a streamed upload) and answers one fixed frame.
//! Each concurrency level is measured against the endpoint, then against the baseline.
//!
//! `--pid` samples a process's memory (`VmRSS` during each run, `VmHWM` before and
//! after) from `/proc`, to show the endpoint's peak memory during an upload.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use petrel::client::request::Destination;
use petrel::client::tls::client_config;
use petrel::codec::{
    self, Command, FrameLength, Header, Payload, PolicyCmd, UnikernelCmd, UnikernelConfig, Wire,
};
use petrel::executor::manifest::{Target, build_test_image};
use petrel::limits::{MAX_CHAIN_SIZE, MAX_FRAME_SIZE};
use petrel::name::Name;
use petrel::pki::cert::{self, CaIssuer, Certificate, CertificateTemplate, Criticality, Serial};
use petrel::pki::{KeyType, PrivateKey, Profile, Subject, Validity, keys};
use petrel::tls::Acceptor;
use petrel::verify::TrustAnchors;

/// Size of the chunks an image is streamed in (the `petrel` client's).
const CHUNK_SIZE: usize = petrel::client::upload::CHUNK_SIZE;

/// Validity of the client certificates made at start-up: long enough for any run.
const LEAF_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// Interval between two memory samples of `--pid`.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(20);

/// Largest reply frame read (an info reply about many unikernels is far smaller).
const MAX_REPLY_FRAME: usize = 64 * 1024 * 1024;

/// Time allowed for one request before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Load generator for a petrel TLS endpoint: handshakes + commands per second, latency
/// percentiles, upload throughput, and a bare TLS server as baseline.
///
/// Every request is a new TLS 1.3 connection with a full handshake (no resumption),
/// presenting a client certificate made once at start-up from --ca/--ca-key.
///
/// Example (endpoint and bare server side by side, 1, 8 and 64 clients):
///
///   petrel-load -d localhost:1025 --ca cacert.pem --ca-key myca.key --server-ca cacert.pem
///   --command policy-info --clients 1,8,64 --duration 10s --bare-server --cacert cacert.pem
///   --cert server.pem --key server.key
#[derive(Debug, Parser)]
#[command(version, about, verbatim_doc_comment)]
struct Args {
    /// The endpoint (HOST[:PORT], port 1025 unless given).
    #[arg(
        short,
        long,
        value_name = "HOST[:PORT]",
        required_unless_present_any = ["serve_bare", "write_image"]
    )]
    destination: Option<String>,
    /// The CA certificate that issues the client certificates (the rest of the file is
    /// sent along).
    #[arg(long, default_value = "ca.pem", value_name = "FILE")]
    ca: PathBuf,
    /// The private key of --ca.
    #[arg(long, default_value = "ca.key", value_name = "FILE")]
    ca_key: PathBuf,
    /// The CA certificate(s) the server's certificate must chain to.
    #[arg(long, default_value = "cacert.pem", value_name = "FILE")]
    server_ca: PathBuf,
    /// The name the server's certificate must carry (default: the destination's host).
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// What every request does.
    #[arg(long, value_enum, default_value_t = LoadCommand::PolicyInfo)]
    command: LoadCommand,
    /// For uploads: size of the image in octets (a solo5 stub padded with pseudo-random
    /// octets, streamed uncompressed).
    #[arg(long, value_name = "OCTETS", default_value_t = 1024 * 1024)]
    image_size: usize,
    /// For uploads: unikernel names are this prefix and the client's number.
    #[arg(long, default_value = "load", value_name = "LABEL")]
    name: String,
    /// Concurrent clients; a comma-separated list runs one measurement per value.
    #[arg(long, value_delimiter = ',', default_value = "1", value_name = "N,...")]
    clients: Vec<usize>,
    /// How long each measurement runs (e.g. 10s, 500ms, 1m).
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "TIME")]
    duration: Duration,
    /// Instead of --duration: the number of requests of each measurement.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Measurements per target and concurrency level, alternating endpoint and bare
    /// server (the ratio is taken over all of them, which evens out a busy machine).
    #[arg(long, default_value_t = 1, value_name = "N")]
    rounds: usize,
    /// Requests before each measurement that are not counted (to warm up both sides).
    #[arg(long, value_parser = parse_duration, default_value = "1s", value_name = "TIME")]
    warmup: Duration,
    /// Also measure a bare tokio-openssl server in this process, with the endpoint's TLS
    /// settings, --cacert, --cert and --key.
    #[arg(long, requires_all = ["cacert", "cert", "key"])]
    bare_server: bool,
    /// With --bare-server: the CA certificate(s) client chains are verified against (the
    /// endpoint's CACERT).
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// With --bare-server: the server certificate (the endpoint's CERT).
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// With --bare-server: the server's key (the endpoint's KEY).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// With --bare-server: worker threads of its runtime (default: one per CPU, as the
    /// endpoint).
    #[arg(long, value_name = "N")]
    bare_threads: Option<usize>,
    /// Sample this process's memory (the endpoint's pid): peak VmRSS during each
    /// measurement, VmHWM before and after.
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// Only write the image an upload sends (a solo5 stub padded to --image-size, which
    /// the stand-in tender runs) to this file, and exit.
    #[arg(long, value_name = "FILE")]
    write_image: Option<PathBuf>,
    /// Only run the bare server (with --cacert, --cert and --key) on this loopback port
    /// until killed, sending no load: for profiling it on its own (e.g. under valgrind).
    #[arg(long, value_name = "PORT", requires_all = ["cacert", "cert", "key"])]
    serve_bare: Option<u16>,
    /// Worker threads of the clients' runtime (default: one per CPU).
    #[arg(long, value_name = "N")]
    client_threads: Option<usize>,
    /// Print one JSON document per measurement instead of a table.
    #[arg(long)]
    json: bool,
}

/// The command of every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LoadCommand {
    /// `policy info` of the CA's path.
    PolicyInfo,
    /// `unikernel info` of the CA's path.
    UnikernelInfo,
    /// `force-create` of one unikernel per client with a streamed image of --image-size.
    Upload,
}

impl LoadCommand {
    fn text(self) -> &'static str {
        match self {
            Self::PolicyInfo => "policy info",
            Self::UnikernelInfo => "unikernel info",
            Self::Upload => "upload",
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("petrel-load: {e:#}");
        std::process::exit(1);
    }
}

/// Everything a client needs for one request.
struct Server {
    label: &'static str,
    addr: SocketAddr,
    server_name: ServerName<'static>,
    /// One client configuration (leaf + key) per client slot; slot `i % len` is used.
    configs: Vec<Arc<ClientConfig>>,
    image: Option<Arc<Vec<u8>>>,
}

fn run(args: &Args) -> Result<()> {
    if let Some(path) = &args.write_image {
        std::fs::write(path, image(args.image_size)).with_context(|| path.display().to_string())?;
        return Ok(());
    }
    if let Some(port) = args.serve_bare {
        let bare = BareServer::start(args, port, args.command == LoadCommand::Upload)?;
        eprintln!("petrel-load: bare server listening on {}", bare.addr);
        loop {
            std::thread::park();
        }
    }
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients: at least one client");
    }
    let destination = Destination::parse(args.destination.as_deref().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("--destination: {e}"))?;
    let addr =
        std::net::ToSocketAddrs::to_socket_addrs(&(destination.host.as_str(), destination.port))
            .with_context(|| format!("resolving {}", destination.host))?
            .next()
            .context("no address for the destination")?;
    let server_name = petrel::client::tls::server_name(&destination, args.server_name.as_deref())?;

    let issuer = CaIssuer::new(
        Certificate::from_pem_chain(
            &std::fs::read_to_string(&args.ca).with_context(|| args.ca.display().to_string())?,
        )?,
        keys::load_key_file(&args.ca_key)?,
    )?;
    let server_ca = TrustAnchors::from_pem(
        &std::fs::read(&args.server_ca).with_context(|| args.server_ca.display().to_string())?,
    )?;
    let slots = match args.command {
        LoadCommand::Upload => args.clients.iter().copied().max().unwrap_or(1),
        _ => 1,
    };
    let started = Instant::now();
    let configs = (0..slots)
        .map(|i| {
            let (name, command) = request(args, i);
            let (chain, key) = leaf(&issuer, &name, &command)?;
            Ok(client_config(&server_ca.certificates(), &chain, &key)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let image = (args.command == LoadCommand::Upload).then(|| Arc::new(image(args.image_size)));
    eprintln!(
        "petrel-load: {} client certificate(s) made in {:.0?}; {} against {addr}",
        configs.len(),
        started.elapsed(),
        args.command.text()
    );

    let bare = if args.bare_server {
        Some(BareServer::start(
            args,
            0,
            args.command == LoadCommand::Upload,
        )?)
    } else {
        None
    };
    let runtime = runtime(args.client_threads)?;
    let mut targets = vec![Server {
        label: "endpoint",
        addr,
        server_name: server_name.clone(),
        configs: configs.clone(),
        image: image.clone(),
    }];
    if let Some(bare) = &bare {
        targets.push(Server {
            label: "bare",
            addr: bare.addr,
            server_name,
            configs,
            image,
        });
    }

    if !args.json {
        println!(
            "{:<8} {:<14} {:>7} {:>8} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10}{}",
            "target",
            "command",
            "clients",
            "requests",
            "errors",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "sent MB/s",
            "recv MB/s",
            if args.pid.is_some() {
                "  memory of --pid"
            } else {
                ""
            }
        );
    }
    for &clients in &args.clients {
        // Per target: requests and seconds over all rounds.
        let mut totals = vec![(0usize, 0f64); targets.len()];
        for _ in 0..args.rounds {
            for (target, total) in targets.iter().zip(&mut totals) {
                if !args.warmup.is_zero() {
                    runtime.block_on(measure(target, args, clients, Stop::After(args.warmup)));
                }
                let sampler = args
                    .pid
                    .filter(|_| target.label == "endpoint")
                    .map(Sampler::start);
                let stop = match args.count {
                    Some(n) => Stop::Count(n),
                    None => Stop::After(args.duration),
                };
                let result = runtime.block_on(measure(target, args, clients, stop));
                let memory = sampler.map(Sampler::finish);
                report(args, target.label, clients, &result, memory.as_ref());
                total.0 += result.latencies.len();
                total.1 += result.elapsed.as_secs_f64();
            }
        }
        if let [endpoint, bare] = totals[..] {
            let ratio = (endpoint.0 as f64 / endpoint.1) / (bare.0 as f64 / bare.1);
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"clients": clients, "endpoint_vs_bare": ratio})
                );
            } else {
                println!(
                    "{:<8} {:<14} {clients:>7}  endpoint/bare = {ratio:.2} ({:.1} / {:.1} req/s over {} round(s))",
                    "ratio",
                    args.command.text(),
                    endpoint.0 as f64 / endpoint.1,
                    bare.0 as f64 / bare.1,
                    args.rounds,
                );
            }
        }
    }
    drop(bare);
    Ok(())
}

fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    Ok(builder.enable_all().build()?)
}

/// The name and command of client slot `i`.
fn request(args: &Args, i: usize) -> (Name, Command) {
    match args.command {
        LoadCommand::PolicyInfo => (Name::root(), Command::Policy(PolicyCmd::Info)),
        LoadCommand::UnikernelInfo => (Name::root(), Command::Unikernel(UnikernelCmd::Info)),
        LoadCommand::Upload => (
            Name::parse(&format!("{}{i}", args.name)).unwrap_or_else(|_| Name::root()),
            Command::Unikernel(UnikernelCmd::ForceCreate(UnikernelConfig {
                arguments: Some(Vec::new()),
                ..UnikernelConfig::default()
            })),
        ),
    }
}

/// A client certificate for `command` on `name` issued by `issuer`, and its key.
fn leaf(
    issuer: &CaIssuer,
    name: &Name,
    command: &Command,
) -> Result<(Vec<Certificate>, PrivateKey)> {
    let key = PrivateKey::generate(KeyType::Ed25519)?;
    let common_name = name.label().map_or(".".to_owned(), |l| l.to_string());
    let extension = codec::encode_extension(command);
    let template = CertificateTemplate {
        profile: Profile::Leaf,
        subject: Subject::CommonName(&common_name),
        public_key: key.public_key(),
        albatross: Some(&extension),
        albatross_criticality: Criticality::NonCritical,
        alt_names: &[],
        validity: Validity {
            now: petrel::pki::now_utc() - time::Duration::seconds(10),
            duration: LEAF_VALIDITY,
        },
        serial: Serial::random(&mut rand::thread_rng()),
    };
    let mut chain = vec![cert::issue(&template, issuer)?];
    if !issuer.is_self_signed() {
        chain.extend(issuer.chain().iter().cloned());
    }
    Ok((chain, key))
}

/// A solo5 stub image (no devices) padded to `size` octets with pseudo-random octets
/// (xorshift: cheap, and not compressible or sparse).
fn image(size: usize) -> Vec<u8> {
    let mut image = build_test_image(Target::Hvt, 2, &[]);
    let stub = image.len();
    image.reserve(size.saturating_sub(stub));
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while image.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        image.extend_from_slice(&state.to_le_bytes());
    }
    // Never shorter than the stub itself.
    image.truncate(size.max(stub));
    image
}

/// When a measurement ends.
#[derive(Debug, Clone, Copy)]
enum Stop {
    After(Duration),
    Count(u64),
}

/// What one measurement saw.
#[derive(Debug, Default)]
struct Measured {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    sent: u64,
    received: u64,
    elapsed: Duration,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q`-quantile latency in milliseconds (nearest rank).
    fn percentile(&self, q: f64) -> f64 {
        percentile(&self.latencies, q).as_secs_f64() * 1000.0
    }
}

/// Nearest-rank quantile of sorted `values` (zero if empty).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `clients` concurrent clients against `target` until `stop`.
async fn measure(target: &Server, args: &Args, clients: usize, stop: Stop) -> Measured {
    let shared = Arc::new(Mutex::new(Measured::default()));
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = match stop {
        Stop::After(d) => Some(start + d),
        Stop::Count(_) => None,
    };
    let mut tasks = Vec::new();
    for client in 0..clients {
        let config = Arc::clone(&target.configs[client % target.configs.len()]);
        let image = target.image.clone();
        let (addr, name) = (target.addr, target.server_name.clone());
        let (shared, issued, done) = (shared.clone(), issued.clone(), done.clone());
        let command = args.command;
        tasks.push(tokio::spawn(async move {
            loop {
                if done.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if let Stop::Count(n) = stop {
                    if issued.fetch_add(1, Ordering::Relaxed) >= n {
                        break;
                    }
                }
                let t0 = Instant::now();
                let result = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    one_request(addr, &config, name.clone(), command, image.as_deref()),
                )
                .await
                .unwrap_or_else(|_| Err("request timed out".to_owned()));
                let elapsed = t0.elapsed();
                let mut m = shared.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok((sent, received)) => {
                        m.latencies.push(elapsed);
                        m.sent += sent;
                        m.received += received;
                    }
                    Err(e) => {
                        m.errors += 1;
                        m.first_error.get_or_insert(e);
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    done.store(true, Ordering::Relaxed);
    let mut m = std::mem::take(&mut *shared.lock().unwrap_or_else(|e| e.into_inner()));
    m.elapsed = start.elapsed();
    m.latencies.sort();
    m
}

/// One request on a new connection: handshake, the streamed image if any, every reply
/// frame until the server closes. Octets sent and received (application data), or why
/// it failed (including a final `failure` reply).
async fn one_request(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    name: ServerName<'static>,
    command: LoadCommand,
    image: Option<&Vec<u8>>,
) -> Result<(u64, u64), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut tls = TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut sent = 0u64;
    if let (LoadCommand::Upload, Some(image)) = (command, image) {
        sent = stream_image(&mut tls, image)
            .await
            .map_err(|e| format!("upload: {e}"))?;
    }
    let (received, last) = read_replies(&mut tls).await?;
    let _ = tls.shutdown().await;
    match last {
        Some(Payload::Success(_)) => Ok((sent, received)),
        Some(Payload::Failure(text)) => Err(format!("failure: {text}")),
        Some(other) => Err(format!("unexpected final frame {other:?}")),
        None => Err("no reply".to_owned()),
    }
}

/// Streams `image` in chunks and the terminator; octets sent.
async fn stream_image<W: AsyncWrite + Unpin>(w: &mut W, image: &[u8]) -> std::io::Result<u64> {
    let mut sent = 0u64;
    for chunk in image.chunks(CHUNK_SIZE) {
        let header = codec::frame_header(chunk.len()).map_err(std::io::Error::other)?;
        w.write_all(&header).await?;
        w.write_all(chunk).await?;
        sent += 4 + chunk.len() as u64;
    }
    w.write_all(&codec::END_OF_STREAM).await?;
    w.flush().await?;
    Ok(sent + 4)
}

/// Reads frames until the server closes; octets read and the last payload.
async fn read_replies<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u64, Option<Payload>), String> {
    let mut received = 0u64;
    let mut last = None;
    loop {
        let mut header = [0u8; 4];
        match r.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("reading: {e}")),
        }
        let len = match codec::decode_frame_header(header, MAX_REPLY_FRAME) {
            Ok(FrameLength::Body(len)) => len,
            Ok(FrameLength::EndOfStream) => break,
            Err(e) => return Err(format!("frame: {e}")),
        };
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)
            .await
            .map_err(|e| format!("reading a frame: {e}"))?;
        received += 4 + len as u64;
        let wire = codec::decode_wire(&body).map_err(|e| format!("decoding a frame: {e}"))?;
        last = Some(wire.payload);
    }
    Ok((received, last))
}

/// Prints one measurement.
fn report(args: &Args, label: &str, clients: usize, m: &Measured, memory: Option<&Memory>) {
    let secs = m.elapsed.as_secs_f64();
    let mb = |octets: u64| octets as f64 / secs / 1e6;
    if args.json {
        let mut doc = serde_json::json!({
            "target": label,
            "command": args.command.text(),
            "clients": clients,
            "requests": m.latencies.len(),
            "errors": m.errors,
            "seconds": secs,
            "requests_per_second": m.rate(),
            "p50_ms": m.percentile(0.5),
            "p90_ms": m.percentile(0.9),
            "p99_ms": m.percentile(0.99),
            "max_ms": m.percentile(1.0),
            "sent_bytes": m.sent,
            "received_bytes": m.received,
            "sent_bytes_per_second": mb(m.sent) * 1e6,
            "received_bytes_per_second": mb(m.received) * 1e6,
        });
        if let Some(e) = &m.first_error {
            doc["first_error"] = serde_json::json!(e);
        }
        if let Some(mem) = memory {
            doc["vm_hwm_before_kib"] = serde_json::json!(mem.hwm_before);
            doc["vm_hwm_after_kib"] = serde_json::json!(mem.hwm_after);
            doc["vm_rss_max_kib"] = serde_json::json!(mem.rss_max);
        }
        println!("{doc}");
        return;
    }
    let memory = memory.map_or(String::new(), |mem| {
        format!(
            "  VmHWM {:.1} → {:.1} MiB, peak VmRSS {:.1} MiB",
            mem.hwm_before as f64 / 1024.0,
            mem.hwm_after as f64 / 1024.0,
            mem.rss_max as f64 / 1024.0
        )
    });
    println!(
        "{label:<8} {:<14} {clients:>7} {:>8} {:>6} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>10.2} {:>10.2}{memory}",
        args.command.text(),
        m.latencies.len(),
        m.errors,
        m.rate(),
        m.percentile(0.5),
        m.percentile(0.9),
        m.percentile(0.99),
        m.percentile(1.0),
        mb(m.sent),
        mb(m.received),
    );
    if let Some(e) = &m.first_error {
        println!("{label:<8} first error: {e}");
    }
}

/// Memory of `--pid` around one measurement, in KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    hwm_before: u64,
    hwm_after: u64,
    rss_max: u64,
}

/// Samples `/proc/<pid>/status` on a thread of its own.
struct Sampler {
    pid: u32,
    hwm_before: u64,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let hwm_before = status_kib(pid, "VmHWM").unwrap_or(0);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut max = 0;
            while !flag.load(Ordering::Relaxed) {
                max = max.max(status_kib(pid, "VmRSS").unwrap_or(0));
                std::thread::sleep(SAMPLE_INTERVAL);
            }
            max
        });
        Self {
            pid,
            hwm_before,
            stop,
            thread,
        }
    }

    fn finish(self) -> Memory {
        self.stop.store(true, Ordering::Relaxed);
        let rss_max = self.thread.join().unwrap_or(0);
        Memory {
            hwm_before: self.hwm_before,
            hwm_after: status_kib(self.pid, "VmHWM").unwrap_or(0),
            rss_max,
        }
    }
}

/// A field of `/proc/<pid>/status` in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse().ok())
}

/// The baseline: a bare tokio-openssl server with the endpoint's TLS settings that
/// completes the handshake, drains a streamed upload if asked to, answers one fixed
/// frame and closes. Its threads are laid out as the endpoint's: a runtime of its own
/// whose workers run the connections, and the accept loop on a thread of its own (the
/// endpoint accepts in `block_on` on its main thread), so that both get the same share of
/// a busy machine's CPUs.
struct BareServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    accept: Option<std::thread::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl BareServer {
    fn start(args: &Args, port: u16, drain: bool) -> Result<Self> {
        let (Some(cacert), Some(cert), Some(key)) = (&args.cacert, &args.cert, &args.key) else {
            bail!("--bare-server needs --cacert, --cert and --key");
        };
        let anchors = TrustAnchors::from_pem(
            &std::fs::read(cacert).with_context(|| cacert.display().to_string())?,
        )?;
        let acceptor = Arc::new(Acceptor::from_files(&anchors, cert, key, MAX_CHAIN_SIZE)?);
        let reply = Arc::new(codec::frame(&codec::encode_wire(&Wire::new(
            Header::new(0, Name::root()),
            Payload::success_string("bare"),
        )))?);
        let runtime = runtime(args.bare_threads)?;
        let listener = runtime.block_on(TcpListener::bind(("127.0.0.1", port)))?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = runtime.handle().clone();
        let accept = std::thread::Builder::new()
            .name("bare-accept".to_owned())
            .spawn(move || {
                handle.block_on(async move {
                    loop {
                        let accepted = tokio::select! {
                            _ = &mut stopped => return,
                            accepted = listener.accept() => accepted,
                        };
                        let Ok((tcp, _)) = accepted else { continue };
                        let (acceptor, reply) = (Arc::clone(&acceptor), Arc::clone(&reply));
                        tokio::spawn(async move {
                            let _ = bare_connection(&acceptor, tcp, &reply, drain).await;
                        });
                    }
                });
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            accept: Some(accept),
            runtime: Some(runtime),
        })
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn bare_connection(
    acceptor: &Acceptor,
    tcp: TcpStream,
    reply: &[u8],
    drain: bool,
) -> Result<()> {
    let (ssl, _) = acceptor.ssl()?;
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp)?;
    Pin::new(&mut tls).accept().await?;
    if drain {
        loop {
            let mut header = [0u8; 4];
            tls.read_exact(&mut header).await?;
            match codec::decode_frame_header(header, MAX_FRAME_SIZE)? {
                FrameLength::EndOfStream => break,
                FrameLength::Body(len) => {
                    let mut body = vec![0u8; len];
                    tls.read_exact(&mut body).await?;
                }
            }
        }
    }
    tls.write_all(reply).await?;
    tls.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("3h"),
            Err("invalid duration unit in \"3h\" (ms, s or m)".to_owned())
        );
        assert_eq!(
            parse_duration("x"),
            Err("invalid duration \"x\"".to_owned())
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&ms, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&ms, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&ms, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        let one = [Duration::from_millis(7)];
        assert_eq!(percentile(&one, 0.9), Duration::from_millis(7));
    }

    #[test]
    fn images_have_the_size_asked_for_and_a_valid_manifest() {
        for size in [1000, 4096, 100_003] {
            let image = image(size);
            assert_eq!(image.len(), size);
            assert!(petrel::executor::manifest::read_image_bytes(&image).is_ok());
        }
    }
}
