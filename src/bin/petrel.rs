//! `petrel`: the client of petrel and albatross TLS endpoints, and a small CA tool.
//!
//! Subcommands and flags follow albatross-client (`spec/tls-endpoint.md` §4–5); petrel
//! adds `inspect`, `--server-name`, `--embed-image`, `--progress` and `--json`. This file
//! only parses the command line; the work is done by `petrel::client` and
//! `petrel::inspect`. Exit codes are albatross-client's (see `petrel::client::Exit`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use flate2::Compression;
use flate2::write::ZlibEncoder;

use petrel::client::ca::{
    self, DEFAULT_CA_DAYS, DEFAULT_SERVER_DAYS, DEFAULT_SERVER_NAME, GenerateOptions, SignOptions,
};
use petrel::client::csr::write_request;
use petrel::client::remote::{
    self, CertificateRequest, Connection, Issuing, Output, Request, progress_mode,
};
use petrel::client::reply::Format;
use petrel::client::request::{
    DEFAULT_COMPRESSION_LEVEL, Destination, UnikernelOptions, compression_level, parse_block,
    parse_net, parse_since,
};
use petrel::client::revoke::{self, RevokeOptions};
use petrel::client::upload::Upload;
use petrel::client::{ClientError, Exit, read_bounded};
use petrel::codec::{
    BlockCmd, BlockDeviceSpec, Command, ConsoleCmd, NetDeviceSpec, PolicyCmd, RestartArgs,
    RevocationCmd, SinceCount, StatsCmd, UnikernelCmd,
};
use petrel::executor::manifest::{check_manifest, read_image_file};
use petrel::inspect;
use petrel::limits::MAX_IMAGE_SIZE;
use petrel::name::{Name, Path as NamePath};
use petrel::pki::keys::KeyOrigin;
use petrel::pki::{KeyType, Profile};
use petrel::policy::Policy;

/// The petrel client: deploy and manage unikernels on petrel (or albatross) TLS
/// endpoints, and run the small CA that authorizes such requests.
///
/// Every request is a short-lived client certificate that carries the command. With
/// --destination the certificate is made on the fly from --ca/--ca-key and sent to the
/// endpoint; with --csr a key and a certificate signing request are written instead, for
/// a CA to sign with `petrel sign`.
///
/// Exit codes: 0 success, 1 inspect failed, 116 local chain validation failed, 117 the
/// server answered with a failure, 119 the server rejected our certificate, 120 the
/// server's certificate was not accepted, 121 communication failure (including a server
/// that closes without a final reply), 122 connect failure, 124 command-line error, 125
/// internal error.
#[derive(Debug, Parser)]
#[command(name = "petrel", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Generate a root CA (NAME.key, cacert.pem) and a server certificate (S.key, S.pem).
    Generate(GenerateArgs),
    /// Sign a certificate signing request: a policy becomes an intermediate CA, a command
    /// a client certificate, no albatross extension a server certificate.
    Sign(SignArgs),
    /// Decode a certificate, CSR, CRL, wire message, albatross extension or state file.
    Inspect(InspectArgs),
    /// Create a unikernel.
    Create(CreateArgs),
    /// Create a unikernel, replacing a running one of the same name (create --force).
    ForceCreate(CreateArgs),
    /// Destroy a unikernel.
    Destroy(NameArgs),
    /// Restart a unikernel, optionally with new arguments.
    Restart(RestartCmdArgs),
    /// Show information about unikernels.
    Info(InfoArgs),
    /// Show the active policies.
    Policy(PolicyArgs),
    /// Request a delegated policy: write a CSR for an intermediate CA (use with --csr).
    #[command(visible_alias = "replace-policy", alias = "add_policy")]
    AddPolicy(AddPolicyArgs),
    /// Show the console output of a unikernel.
    Console(ConsoleArgs),
    /// Show the statistics of unikernels until interrupted: a table per sample (CPU time,
    /// memory, each network interface's tap counters), or one JSON line per frame with
    /// --json.
    Stats(StatsArgs),
    /// Create a block device.
    #[command(visible_alias = "create-block", alias = "create_block")]
    BlockAdd(BlockAddArgs),
    /// Remove a block device.
    #[command(visible_alias = "destroy-block", alias = "destroy_block")]
    BlockRemove(NameArgs),
    /// Show information about block devices.
    #[command(visible_alias = "block")]
    BlockInfo(BlockInfoArgs),
    /// Overwrite a block device with the content of a file.
    #[command(visible_alias = "set-block", alias = "set_block")]
    BlockSet(BlockSetArgs),
    /// Dump the content of a block device into a file.
    #[command(visible_alias = "dump-block", alias = "dump_block")]
    BlockDump(BlockDumpArgs),
    /// Send an existing signed certificate chain (from `petrel sign`) and run its command.
    Certificate(CertificateArgs),
    /// Revoke certificates a CA issued: create or extend its CRL (CRL number + 1), write
    /// it, and with --destination upload it; --info shows the CRLs the server holds.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// Common name of the root CA; its key is NAME.key (reused if it exists).
    name: String,
    /// Serial database file, one line per certificate signed.
    db: PathBuf,
    /// Validity of the root CA in days.
    #[arg(long, default_value_t = DEFAULT_CA_DAYS, value_name = "D", value_parser = clap::value_parser!(u32).range(1..))]
    days: u32,
    /// Common name of the server certificate; its key is S.key, the certificate S.pem.
    #[arg(long, default_value = DEFAULT_SERVER_NAME, value_name = "S")]
    server: String,
    /// Validity of the server certificate in days.
    #[arg(long, default_value_t = DEFAULT_SERVER_DAYS, value_name = "SD", value_parser = clap::value_parser!(u32).range(1..))]
    server_days: u32,
    /// Type of new keys: ed25519, p256, p384, rsa2048 or rsa4096.
    #[arg(long, default_value = "ed25519", value_name = "T")]
    key_type: KeyType,
    /// Another host name or IP address for the server certificate (repeatable; S,
    /// localhost and 127.0.0.1 are always included).
    #[arg(long = "server-name", value_name = "HOST")]
    server_names: Vec<String>,
}

#[derive(Debug, Args)]
struct SignArgs {
    /// The issuing CA's certificate.
    cacert: PathBuf,
    /// Serial database file (a line "<serial> <CN>" is appended).
    db: PathBuf,
    /// The issuing CA's private key.
    cakey: PathBuf,
    /// The certificate signing request.
    csr: PathBuf,
    /// Validity in days (default: 365 for CAs and servers, 1 for client certificates).
    #[arg(long, value_name = "D", value_parser = clap::value_parser!(u32).range(1..))]
    days: Option<u32>,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// The file to decode (`-` reads standard input).
    file: PathBuf,
    /// Print JSON, one document per item (the default).
    #[arg(long, conflicts_with = "text")]
    json: bool,
    /// Print indented text.
    #[arg(long)]
    text: bool,
}

/// How a request is made: written as a CSR, or sent to an endpoint.
#[derive(Debug, Args)]
struct Target {
    /// Write a key and a certificate signing request (<cn>.key, <cn>.req) instead of
    /// connecting.
    #[arg(long, conflicts_with = "destination", help_heading = "Request")]
    csr: bool,
    /// The endpoint to connect to (port 1025 unless given; `-` prints the chain instead).
    #[arg(short = 'd', long, value_name = "HOST[:PORT]", value_parser = parse_destination, help_heading = "Request")]
    destination: Option<Destination>,
    /// The CA certificate that issues the request (the rest of the file is sent along).
    #[arg(
        long,
        default_value = "ca.pem",
        value_name = "FILE",
        help_heading = "Request"
    )]
    ca: PathBuf,
    /// The private key of --ca.
    #[arg(
        long,
        default_value = "ca.key",
        value_name = "FILE",
        help_heading = "Request"
    )]
    ca_key: PathBuf,
    /// The CA certificate(s) the server's certificate must chain to.
    #[arg(
        long,
        default_value = "cacert.pem",
        value_name = "FILE",
        help_heading = "Request"
    )]
    server_ca: PathBuf,
    /// The name the server's certificate must carry (default: the destination's host).
    #[arg(long, value_name = "NAME", help_heading = "Request")]
    server_name: Option<String>,
    /// Type of the request's key: ed25519, p256, p384, rsa2048 or rsa4096.
    #[arg(
        long,
        default_value = "ed25519",
        value_name = "T",
        help_heading = "Request"
    )]
    key_type: KeyType,
    /// Print every reply as one JSON document per line.
    #[arg(long, help_heading = "Request")]
    json: bool,
}

/// The unikernel settings of create and restart.
#[derive(Debug, Args)]
struct UnikernelFlags {
    /// CPU id to pin the unikernel to (repeatable; default 0).
    #[arg(long = "cpu", value_name = "N")]
    cpu: Vec<i64>,
    /// Memory in MB.
    #[arg(long, default_value_t = 32, value_name = "MB")]
    mem: i64,
    /// Unikernel argument (repeatable), e.g. --arg='--hello=Hi'.
    #[arg(long = "arg", value_name = "A", allow_hyphen_values = true)]
    arg: Vec<String>,
    /// Block device: the unikernel's device NAME, the block DEVICE (default NAME), the
    /// sector size (repeatable).
    #[arg(long = "block", value_name = "NAME[:DEVICE][@SECTOR]", value_parser = parse_block_arg)]
    block: Vec<BlockDeviceSpec>,
    /// Network device: the unikernel's device NETIF, the host BRIDGE (default NETIF), a
    /// MAC address (repeatable).
    #[arg(long = "net", value_name = "[NETIF:]BRIDGE[@MAC]", value_parser = parse_net_arg)]
    net: Vec<NetDeviceSpec>,
    /// Restart the unikernel when it exits.
    #[arg(long, visible_alias = "restart")]
    restart_on_fail: bool,
    /// Exit code to restart on (repeatable; default: all but 1 and 60-64).
    #[arg(long = "exit-code", value_name = "N")]
    exit_code: Vec<i64>,
    /// Start-up priority after a server restart (lower starts first; default 50).
    #[arg(long, value_name = "N")]
    startup: Option<i64>,
    /// Do not pass --name=<NAME> to the unikernel.
    #[arg(long)]
    no_add_name: bool,
}

impl UnikernelFlags {
    fn options(&self) -> UnikernelOptions {
        UnikernelOptions {
            cpuids: self.cpu.clone(),
            memory: self.mem,
            arguments: self.arg.clone(),
            blocks: self.block.clone(),
            bridges: self.net.clone(),
            restart_on_fail: self.restart_on_fail,
            exit_codes: self.exit_code.clone(),
            startup: self.startup,
            no_add_name: self.no_add_name,
        }
    }
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Name of the unikernel.
    #[arg(value_parser = parse_name)]
    name: Name,
    /// The solo5 unikernel image.
    image: PathBuf,
    #[command(flatten)]
    unikernel: UnikernelFlags,
    /// Replace a running unikernel of the same name.
    #[arg(short, long)]
    force: bool,
    /// zlib level of the image, 0 (none) to 9.
    #[arg(long, value_name = "L", value_parser = parse_level)]
    compression_level: Option<u32>,
    /// Put the image in the certificate, as albatross-client does, instead of streaming
    /// it after the handshake.
    #[arg(long)]
    embed_image: bool,
    /// Show upload progress even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct NameArgs {
    /// Name of the unikernel or block device.
    #[arg(value_parser = parse_name)]
    name: Name,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct RestartCmdArgs {
    /// Name of the unikernel.
    #[arg(value_parser = parse_name)]
    name: Name,
    /// Replace the unikernel's settings by the ones given here.
    #[arg(long)]
    replace_arguments: bool,
    #[command(flatten)]
    unikernel: UnikernelFlags,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct InfoArgs {
    /// Name of a unikernel, or a path (ending in `:`); default: everything.
    #[arg(value_parser = parse_name, conflicts_with = "name_option")]
    name: Option<Name>,
    /// The same as NAME (albatross-client's spelling).
    #[arg(short = 'n', long = "name", id = "name_option", value_parser = parse_name, value_name = "NAME")]
    name_option: Option<Name>,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct StatsArgs {
    /// Name of a unikernel, or a path (ending in `:`) for every unikernel below it;
    /// default: everything the certificate may see.
    #[arg(value_parser = parse_name, conflicts_with = "name_option")]
    name: Option<Name>,
    /// The same as NAME.
    #[arg(short = 'n', long = "name", id = "name_option", value_parser = parse_name, value_name = "NAME")]
    name_option: Option<Name>,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct PolicyArgs {
    /// Path of the policies shown (all policies below it are listed); the default, the
    /// issuing CA's own path, is the only path a request certificate can name.
    #[arg(value_parser = parse_path, conflicts_with = "path_option")]
    path: Option<Name>,
    /// The same as PATH (albatross-client's spelling).
    #[arg(short = 'p', long = "path", id = "path_option", value_parser = parse_path, value_name = "PATH")]
    path_option: Option<Name>,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct AddPolicyArgs {
    /// The label of the delegated path (the common name of the new intermediate CA).
    #[arg(value_parser = parse_path)]
    path: Name,
    /// Number of unikernels allowed to run at once (albatross-client's positional form).
    #[arg(value_name = "UNIKERNELS", conflicts_with = "unikernels_option")]
    unikernels: Option<i64>,
    /// Number of unikernels allowed to run at once.
    #[arg(long = "unikernels", id = "unikernels_option", value_name = "N")]
    unikernels_option: Option<i64>,
    /// Memory allowed in MB.
    #[arg(long, default_value_t = 512, value_name = "MB")]
    mem: i64,
    /// CPU id allowed (repeatable; default 0).
    #[arg(long = "cpu", value_name = "N")]
    cpu: Vec<i64>,
    /// Bridge allowed (repeatable).
    #[arg(long = "bridge", visible_alias = "network", value_name = "B")]
    bridge: Vec<String>,
    /// Block storage allowed in MB (default: none).
    #[arg(long, visible_alias = "block", value_name = "MB")]
    size: Option<i64>,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct ConsoleArgs {
    /// Name of the unikernel.
    #[arg(value_parser = parse_name)]
    name: Name,
    /// Lines since this time: RFC 3339 (2025-03-12T23:42:15Z), a date, or a duration
    /// before now (90s, 10m, 2h, 1d).
    #[arg(long, value_name = "RFC3339|DURATION", conflicts_with = "count")]
    since: Option<String>,
    /// The last N lines.
    #[arg(long, default_value_t = 20, value_name = "N")]
    count: i64,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct BlockAddArgs {
    /// Name of the block device.
    #[arg(value_parser = parse_name)]
    name: Name,
    /// Size in MB.
    size: i64,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct BlockInfoArgs {
    /// Name of a block device, or a path (ending in `:`); default: everything.
    #[arg(value_parser = parse_name, conflicts_with = "name_option")]
    name: Option<Name>,
    /// The same as NAME (albatross-client's spelling).
    #[arg(long = "name", id = "name_option", value_parser = parse_name, value_name = "NAME")]
    name_option: Option<Name>,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct BlockSetArgs {
    /// Name of the block device.
    #[arg(value_parser = parse_name)]
    name: Name,
    /// The new content.
    file: PathBuf,
    /// zlib level of the stream, 0 (none) to 9.
    #[arg(long, value_name = "L", value_parser = parse_level)]
    compression_level: Option<u32>,
    /// Show upload progress even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct BlockDumpArgs {
    /// Name of the block device.
    #[arg(value_parser = parse_name)]
    name: Name,
    /// The file to write (must not exist; default: NAME and the time in the temporary
    /// directory).
    file: Option<PathBuf>,
    /// zlib level the server compresses with, 0 (none) to 9 (the file is always
    /// written uncompressed).
    #[arg(long, value_name = "L", value_parser = parse_level)]
    compression_level: Option<u32>,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct CertificateArgs {
    /// The certificate chain (leaf first), e.g. <CN>.pem from `petrel sign`.
    cert: PathBuf,
    /// The leaf's private key.
    key: PathBuf,
    /// The endpoint to connect to (port 1025 unless given).
    #[arg(short = 'd', long, value_name = "HOST[:PORT]", value_parser = parse_destination)]
    destination: Destination,
    /// The CA certificate(s) the server's certificate must chain to.
    #[arg(long, default_value = "cacert.pem", value_name = "FILE")]
    server_ca: PathBuf,
    /// The name the server's certificate must carry (default: the destination's host).
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// The file to stream after the handshake, when the command streams one (a create
    /// with an empty image, a block set).
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// The file a block dump is written to (must not exist).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Show upload progress even when stderr is not a terminal.
    #[arg(long)]
    progress: bool,
    /// Print every reply as one JSON document per line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    /// Show the CRLs the server holds for the issuers of the --ca chain (JSON) instead.
    #[arg(long, conflicts_with_all = ["crl", "cert", "serial", "reason", "next_update"])]
    info: bool,
    /// The CRL file to extend and write (DER) [default: <CA common name>.crl].
    #[arg(long, value_name = "FILE")]
    crl: Option<PathBuf>,
    /// A certificate the CA issued, to revoke (repeatable).
    #[arg(long = "cert", value_name = "CERT.pem")]
    cert: Vec<PathBuf>,
    /// The serial (hex) of a certificate the CA issued, to revoke (repeatable).
    #[arg(long = "serial", value_name = "HEX")]
    serial: Vec<String>,
    /// The reason recorded with the new entries (RFC 5280 name, e.g. keyCompromise).
    #[arg(long, value_name = "R")]
    reason: Option<String>,
    /// Days until the CRL's nextUpdate [default: no nextUpdate].
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    next_update: Option<u32>,
    #[command(flatten)]
    target: Target,
}

fn parse_destination(s: &str) -> Result<Destination, String> {
    Destination::parse(s).map_err(|e| e.to_string())
}

fn parse_name(s: &str) -> Result<Name, String> {
    Name::parse(s).map_err(|e| e.to_string())
}

fn parse_path(s: &str) -> Result<Name, String> {
    let path = s.strip_suffix(':').unwrap_or(s);
    NamePath::parse(path)
        .map(Name::of_path)
        .map_err(|e| e.to_string())
}

fn parse_level(s: &str) -> Result<u32, String> {
    let level: u32 = s.parse().map_err(|_| format!("not a number: {s:?}"))?;
    compression_level(level).map_err(|e| e.to_string())
}

fn parse_block_arg(s: &str) -> Result<BlockDeviceSpec, String> {
    parse_block(s).map_err(|e| e.to_string())
}

fn parse_net_arg(s: &str) -> Result<NetDeviceSpec, String> {
    parse_net(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(Exit::CommandLine.code())
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Cmd::Inspect(args) = &cli.command {
        return inspect_main(args);
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let (text, code) = match e.downcast::<ClientError>() {
                Ok(client) => (client.to_string(), client.exit().code()),
                Err(other) => (format!("{other:#}"), Exit::CommandLine.code()),
            };
            eprintln!("petrel: {text}");
            ExitCode::from(code)
        }
    }
}

fn inspect_main(args: &InspectArgs) -> ExitCode {
    let format = if args.text {
        inspect::Format::Text
    } else {
        inspect::Format::Json
    };
    match inspect::read_input(&args.file).and_then(|input| inspect::inspect(&input)) {
        Ok(items) => {
            print!("{}", inspect::render(&items, format));
            ExitCode::SUCCESS
        }
        Err(e) => {
            let text = e.to_string().replace('\n', " ");
            eprintln!("petrel inspect: {}: {text}", args.file.display());
            ExitCode::from(1)
        }
    }
}

fn run(command: Cmd) -> anyhow::Result<()> {
    let dir = PathBuf::from(".");
    let now = petrel::pki::now_utc();
    match command {
        Cmd::Generate(args) => generate(args, dir, now),
        Cmd::Sign(args) => sign(args, dir, now),
        Cmd::Inspect(_) => Ok(()),
        Cmd::Create(args) => create(args, false),
        Cmd::ForceCreate(args) => create(args, true),
        Cmd::Destroy(args) => request(
            args.name,
            Command::Unikernel(UnikernelCmd::Destroy),
            None,
            &args.target,
            None,
        ),
        Cmd::Restart(args) => {
            let options = args.unikernel.options();
            let restart = if args.replace_arguments {
                RestartArgs::Arguments(options.arguments().map_err(ClientError::from)?)
            } else if options != UnikernelOptions::default() {
                return Err(ClientError::usage(
                    "unikernel settings are only sent with --replace-arguments",
                )
                .into());
            } else {
                RestartArgs::NoArguments
            };
            request(
                args.name,
                Command::Unikernel(UnikernelCmd::Restart(restart)),
                None,
                &args.target,
                None,
            )
        }
        Cmd::Info(args) => request(
            args.name.or(args.name_option).unwrap_or_else(Name::root),
            Command::Unikernel(UnikernelCmd::Info),
            None,
            &args.target,
            None,
        ),
        Cmd::Policy(args) => request(
            args.path.or(args.path_option).unwrap_or_else(Name::root),
            Command::Policy(PolicyCmd::Info),
            None,
            &args.target,
            None,
        ),
        Cmd::AddPolicy(args) => add_policy(args),
        Cmd::Console(args) => {
            let since_count = match &args.since {
                Some(since) => {
                    SinceCount::Since(parse_since(since, now).map_err(ClientError::from)?)
                }
                None => SinceCount::Count(args.count),
            };
            request(
                args.name,
                Command::Console(ConsoleCmd::Subscribe(since_count)),
                None,
                &args.target,
                None,
            )
        }
        Cmd::Stats(args) => request(
            args.name.or(args.name_option).unwrap_or_else(Name::root),
            Command::Statistics(StatsCmd::Subscribe),
            None,
            &args.target,
            None,
        ),
        Cmd::BlockAdd(args) => request(
            args.name,
            Command::Block(BlockCmd::Add(args.size)),
            None,
            &args.target,
            None,
        ),
        Cmd::BlockRemove(args) => request(
            args.name,
            Command::Block(BlockCmd::Remove),
            None,
            &args.target,
            None,
        ),
        Cmd::BlockInfo(args) => request(
            args.name.or(args.name_option).unwrap_or_else(Name::root),
            Command::Block(BlockCmd::Info),
            None,
            &args.target,
            None,
        ),
        Cmd::BlockSet(args) => {
            let level = args.compression_level.unwrap_or(DEFAULT_COMPRESSION_LEVEL);
            std::fs::metadata(&args.file).map_err(|e| ClientError::io(&args.file, e))?;
            let upload = Upload {
                path: args.file.clone(),
                level,
                progress: progress_mode(args.progress),
            };
            if args.target.csr {
                eprintln!(
                    "petrel: the request does not contain {}; once signed, send it with `petrel certificate CERT KEY --data {}`",
                    args.file.display(),
                    args.file.display()
                );
            }
            request(
                args.name,
                Command::Block(BlockCmd::Set(level > 0)),
                Some(upload),
                &args.target,
                None,
            )
        }
        Cmd::BlockDump(args) => {
            let level = args.compression_level.unwrap_or(DEFAULT_COMPRESSION_LEVEL);
            let file = args
                .file
                .unwrap_or_else(|| remote::default_dump_file(&args.name, now));
            request(
                args.name,
                Command::Block(BlockCmd::Dump(i64::from(level))),
                None,
                &args.target,
                Some(file),
            )
        }
        Cmd::Certificate(args) => certificate(args),
        Cmd::Revoke(args) => revoke(args, dir, now),
    }
}

fn revoke(args: RevokeArgs, dir: PathBuf, now: time::OffsetDateTime) -> anyhow::Result<()> {
    if args.info {
        return request(
            Name::root(),
            Command::Revocation(RevocationCmd::Info),
            None,
            &args.target,
            None,
        );
    }
    let reason = args
        .reason
        .as_deref()
        .map(revoke::parse_reason)
        .transpose()?;
    let outcome = revoke::revoke(
        &RevokeOptions {
            ca: args.target.ca.clone(),
            ca_key: args.target.ca_key.clone(),
            crl: args.crl,
            certificates: args.cert,
            serials: args.serial,
            reason,
            next_update_days: args.next_update,
            dir,
        },
        now,
    )?;
    if !outcome.already_revoked.is_empty() {
        eprintln!(
            "petrel: already revoked: {}",
            outcome.already_revoked.join(", ")
        );
    }
    println!(
        "wrote {} (CRL number {}, {} revoked, {} new{})",
        outcome.crl_file.display(),
        outcome.number,
        outcome.total,
        outcome.added.len(),
        if outcome.added.is_empty() {
            String::new()
        } else {
            format!(": {}", outcome.added.join(", "))
        }
    );
    if args.target.destination.is_none() && !args.target.csr {
        return Ok(());
    }
    if args.target.csr {
        eprintln!(
            "petrel: once signed, upload with `petrel certificate CERT KEY --data {}`",
            outcome.crl_file.display()
        );
    }
    let upload = Upload {
        path: outcome.crl_file,
        level: 0,
        progress: progress_mode(false),
    };
    request(
        Name::root(),
        Command::Revocation(RevocationCmd::Upload),
        Some(upload),
        &args.target,
        None,
    )
}

fn generate(args: GenerateArgs, dir: PathBuf, now: time::OffsetDateTime) -> anyhow::Result<()> {
    let generated = ca::generate(
        &GenerateOptions {
            dir,
            name: args.name,
            db: args.db,
            days: args.days,
            server: args.server,
            server_days: args.server_days,
            key_type: args.key_type,
            server_names: args.server_names,
        },
        now,
    )?;
    println!("{}", key_line(&generated.ca_key.0, generated.ca_key.1));
    println!("wrote {}", generated.ca_certificate.display());
    println!(
        "{}",
        key_line(&generated.server_key.0, generated.server_key.1)
    );
    println!(
        "wrote {} (serial {})",
        generated.server_certificate.display(),
        generated.server_serial
    );
    Ok(())
}

fn key_line(path: &Path, origin: KeyOrigin) -> String {
    match origin {
        KeyOrigin::Generated => format!("wrote {} (new key)", path.display()),
        KeyOrigin::Loaded => format!("reused {}", path.display()),
    }
}

fn sign(args: SignArgs, dir: PathBuf, now: time::OffsetDateTime) -> anyhow::Result<()> {
    let signed = ca::sign(
        &SignOptions {
            ca_certificate: args.cacert,
            db: args.db,
            ca_key: args.cakey,
            csr: args.csr,
            days: args.days,
            dir,
        },
        now,
    )?;
    let what = match &signed.command {
        Some(command) => format!("{command}"),
        None => "no albatross extension".to_owned(),
    };
    let profile = match signed.profile {
        Profile::RootCa => "root CA",
        Profile::IntermediateCa => "intermediate CA",
        Profile::Server => "server",
        Profile::Leaf | Profile::DestinationLeaf => "client",
    };
    println!(
        "signed {profile} certificate {} ({what}), serial {}",
        signed.common_name, signed.serial
    );
    println!("wrote {}", signed.chain_file.display());
    Ok(())
}

fn create(args: CreateArgs, force_create: bool) -> anyhow::Result<()> {
    let options = args.unikernel.options();
    let level = args.compression_level.unwrap_or(DEFAULT_COMPRESSION_LEVEL);
    // The manifest check of spec §6, before anything is signed or sent.
    let image = read_image_file(&args.image)
        .map_err(|e| ClientError::usage(format!("{}: {e}", args.image.display())))?;
    let blocks = options.blocks.iter().map(|b| b.name.as_str());
    let nets = options.bridges.iter().map(|n| n.netif.as_str());
    check_manifest(&image.manifest, blocks, nets).map_err(ClientError::usage)?;

    let embed = args.embed_image || args.target.csr;
    let (config, upload) = if embed {
        let bytes = read_bounded(&args.image, MAX_IMAGE_SIZE)?;
        let image = if level > 0 {
            compress(&bytes, level).context("compressing the image")?
        } else {
            bytes
        };
        (
            options
                .config(image, level > 0)
                .map_err(ClientError::from)?,
            None,
        )
    } else {
        let upload = Upload {
            path: args.image.clone(),
            level,
            progress: progress_mode(args.progress),
        };
        (
            options
                .config(Vec::new(), level > 0)
                .map_err(ClientError::from)?,
            Some(upload),
        )
    };
    let command = if args.force || force_create {
        UnikernelCmd::ForceCreate(config)
    } else {
        UnikernelCmd::Create(config)
    };
    request(
        args.name,
        Command::Unikernel(command),
        upload,
        &args.target,
        None,
    )
}

fn compress(data: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut z = ZlibEncoder::new(Vec::new(), Compression::new(level));
    z.write_all(data)?;
    z.finish()
}

fn add_policy(args: AddPolicyArgs) -> anyhow::Result<()> {
    let unikernels = args.unikernels.or(args.unikernels_option).ok_or_else(|| {
        ClientError::usage("the number of unikernels is required (UNIKERNELS or --unikernels N)")
    })?;
    let cpuids = if args.cpu.is_empty() {
        [0].into()
    } else {
        args.cpu.iter().copied().collect()
    };
    let policy = Policy {
        unikernels,
        cpuids,
        memory: args.mem,
        block: args.size,
        bridges: args.bridge.iter().cloned().collect(),
    };
    policy
        .usable()
        .map_err(petrel::client::Refusal::from)
        .map_err(ClientError::from)?;
    if policy.bridges.is_empty() {
        eprintln!("petrel: warning: policy without any network access");
    }
    if args.target.destination.is_some() {
        eprintln!(
            "petrel: warning: endpoints accept policies only in intermediate CA certificates; use --csr and `petrel sign`"
        );
    }
    request(
        args.path,
        Command::Policy(PolicyCmd::Add(policy)),
        None,
        &args.target,
        None,
    )
}

/// Writes a CSR (`--csr`) or runs the request against `--destination`.
fn request(
    name: Name,
    command: Command,
    upload: Option<Upload>,
    target: &Target,
    dump_to: Option<PathBuf>,
) -> anyhow::Result<()> {
    if target.csr {
        let files = write_request(Path::new("."), &name, &command, target.key_type)?;
        println!("{}", key_line(&files.key.0, files.key.1));
        println!(
            "wrote {} (common name {:?}, {command})",
            files.request.display(),
            files.common_name
        );
        return Ok(());
    }
    let Some(destination) = target.destination.clone() else {
        return Err(
            ClientError::usage("one of --destination HOST[:PORT] or --csr is required").into(),
        );
    };
    let issuing = Issuing {
        ca: target.ca.clone(),
        ca_key: target.ca_key.clone(),
        key_type: target.key_type,
    };
    let connection = Connection {
        destination,
        server_ca: target.server_ca.clone(),
        server_name: target.server_name.clone(),
    };
    let output = Output {
        format: if target.json {
            Format::Json
        } else {
            Format::Text
        },
        dump_to,
    };
    remote::run(
        &issuing,
        &connection,
        &Request {
            name,
            command,
            upload,
        },
        &output,
    )?;
    Ok(())
}

fn certificate(args: CertificateArgs) -> anyhow::Result<()> {
    let connection = Connection {
        destination: args.destination,
        server_ca: args.server_ca,
        server_name: args.server_name,
    };
    let request = CertificateRequest {
        chain: args.cert,
        key: args.key,
        data: args.data,
        progress: progress_mode(args.progress),
    };
    let output = Output {
        format: if args.json {
            Format::Json
        } else {
            Format::Text
        },
        dump_to: args.output,
    };
    remote::run_certificate(&connection, &request, &output)?;
    Ok(())
}
