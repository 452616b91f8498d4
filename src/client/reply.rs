//! Reading and printing the server's replies (`spec/tls-endpoint.md` §5 step 7,
//! `spec/wire.md` §7–8): frames are read according to the command's [`ReplyMode`]; a
//! `failure` ends the exchange with exit 117, and a connection that ends before the
//! final frame is an error (Note T1), never a success.
//!
//! The frames come from the network: reading them never panics and allocates at most
//! [`MAX_REPLY_FRAME_SIZE`] per frame.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::write::ZlibDecoder;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::request::ReplyMode;
use super::{ClientError, tls};
use crate::codec::{
    BlockData, BlockDevice, Data, FailBehaviour, FrameLength, Payload, PolicyEntry, StatsData,
    Success, UnikernelInfo, Wire, decode_frame_header, decode_wire,
};
use crate::executor::stats::{VMM_CGROUP_CPU_USEC, VMM_CGROUP_MEMORY_BYTES, VMM_RSS_BYTES};
use crate::name::Name;
use crate::policy::join;

/// Largest reply frame read. Info and policy replies list a whole subtree (a few hundred
/// octets per unikernel), so this is generous; it only bounds what one read allocates.
pub const MAX_REPLY_FRAME_SIZE: usize = 64 * 1024 * 1024;

/// Text of a connection that ended before the final reply (Note T1).
pub const NO_FINAL_REPLY: &str = "the server closed the connection without a final reply";

/// A statistics round is complete once no frame has come for this long (the frames of a
/// round are sent back to back; rounds are seconds apart): its table is printed then.
pub const ROUND_GAP: std::time::Duration = std::time::Duration::from_millis(200);

/// Clears a terminal before a new statistics table (cursor home, erase display).
pub const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// How replies are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// Readable: texts, tables, console lines.
    #[default]
    Text,
    /// One JSON document per frame (keys as in `spec/wire.md`).
    Json,
}

/// Reads one frame; `None` when the connection ended cleanly at a frame boundary (or the
/// server sent the end-of-stream marker).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Wire>, ClientError> {
    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < header.len() {
        let rest = header.get_mut(filled..).unwrap_or_default();
        match r.read(rest).await {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(truncated()),
            Ok(n) => filled += n,
            // A peer that closes without close_notify, at a frame boundary, has simply
            // stopped talking; the caller decides whether that was allowed.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && filled == 0 => {
                return Ok(None);
            }
            Err(e) => return Err(tls::classify(&e, "reading a reply")),
        }
    }
    let len = match decode_frame_header(header, MAX_REPLY_FRAME_SIZE) {
        Ok(FrameLength::EndOfStream) => return Ok(None),
        Ok(FrameLength::Body(len)) => len,
        Err(e) => return Err(ClientError::Communication(format!("reading a reply: {e}"))),
    };
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            truncated()
        } else {
            tls::classify(&e, "reading a reply")
        }
    })?;
    decode_wire(&body)
        .map(Some)
        .map_err(|e| ClientError::Communication(format!("couldn't decode a reply: {e}")))
}

fn truncated() -> ClientError {
    ClientError::Communication("the connection ended in the middle of a frame".to_owned())
}

/// Reads the replies of one request in `mode` and hands them to `printer`, until the
/// final frame. A `failure` frame gives [`ClientError::RemoteFailure`].
pub async fn read_replies<R, W, E>(
    r: &mut R,
    mode: ReplyMode,
    printer: &mut Printer<W, E>,
) -> Result<(), ClientError>
where
    R: AsyncRead + Unpin,
    W: Write,
    E: Write,
{
    let mut started = false;
    loop {
        let next = next_frame(r, printer).await;
        if next.as_ref().map_or(true, Option::is_none) {
            printer.flush_stats()?;
        }
        let Some(wire) = next? else {
            return Err(ClientError::Communication(NO_FINAL_REPLY.to_owned()));
        };
        match (&wire.payload, mode) {
            (Payload::Failure(text), _) => {
                printer.json(&wire)?;
                return Err(ClientError::RemoteFailure(text.clone()));
            }
            (Payload::Command(command), _) => {
                return Err(ClientError::Internal(format!(
                    "the server sent a command ({command})"
                )));
            }
            (Payload::Success(_), ReplyMode::Single) => {
                printer.reply(&wire)?;
                return Ok(());
            }
            (Payload::Success(_), ReplyMode::Read) => {
                if started {
                    printer.reply(&wire)?;
                    return Ok(());
                }
                printer.status(&wire)?;
                started = true;
            }
            (Payload::Success(Success::BlockDeviceImage(compressed)), ReplyMode::Dump)
                if !started =>
            {
                printer.status(&wire)?;
                printer.start_dump(*compressed)?;
                started = true;
            }
            (Payload::Data(Data::Block(BlockData::SomeData(chunk))), ReplyMode::Dump)
                if started =>
            {
                printer.dump_chunk(chunk)?;
            }
            (Payload::Data(Data::Block(BlockData::NoData)), ReplyMode::Dump) if started => {
                printer.finish_dump()?;
                printer.json(&wire)?;
                return Ok(());
            }
            (Payload::Data(_), ReplyMode::Read) => printer.data(&wire)?,
            (payload, _) => {
                return Err(ClientError::Communication(format!(
                    "unexpected reply: {}",
                    describe(payload)
                )));
            }
        }
    }
}

/// The next frame; while a statistics table is pending, it is printed once no frame has
/// come for [`ROUND_GAP`] (the read goes on undisturbed).
async fn next_frame<R, W, E>(
    r: &mut R,
    printer: &mut Printer<W, E>,
) -> Result<Option<Wire>, ClientError>
where
    R: AsyncRead + Unpin,
    W: Write,
    E: Write,
{
    let frame = read_frame(r);
    tokio::pin!(frame);
    if printer.stats.is_empty() {
        return frame.await;
    }
    tokio::select! {
        result = &mut frame => return result,
        () = tokio::time::sleep(ROUND_GAP) => printer.flush_stats()?,
    }
    frame.await
}

/// A short description of a payload for error messages.
fn describe(payload: &Payload) -> &'static str {
    match payload {
        Payload::Command(_) => "command",
        Payload::Success(_) => "success",
        Payload::Failure(_) => "failure",
        Payload::Data(Data::Block(_)) => "block data",
        Payload::Data(Data::Console { .. }) => "console data",
        Payload::Data(Data::Statistics(_)) => "statistics",
    }
}

/// Prints replies to `out` (results) and `err` (status lines), and writes a block dump.
#[derive(Debug)]
pub struct Printer<W, E> {
    format: Format,
    out: W,
    err: E,
    dump: Option<Dump>,
    /// Statistics frames of the round being received (text format).
    stats: Vec<(Name, StatsData)>,
    /// Clear the screen before each statistics table.
    clear: bool,
}

/// Where a block dump goes.
#[derive(Debug)]
struct Dump {
    path: PathBuf,
    sink: DumpSink,
}

#[derive(Debug)]
enum DumpSink {
    /// Created, the server has not said yet whether the stream is compressed.
    Waiting(File),
    Raw(File),
    Inflate(ZlibDecoder<File>),
    Done,
}

impl<W: Write, E: Write> Printer<W, E> {
    /// A printer in `format`.
    pub fn new(format: Format, out: W, err: E) -> Self {
        Self {
            format,
            out,
            err,
            dump: None,
            stats: Vec::new(),
            clear: false,
        }
    }

    /// Sends a block dump to `path`, a new file (an existing file is never overwritten).
    pub fn dump_to(&mut self, path: &Path) -> Result<(), ClientError> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| ClientError::io(path, e))?;
        self.dump = Some(Dump {
            path: path.to_path_buf(),
            sink: DumpSink::Waiting(file),
        });
        Ok(())
    }

    /// Removes a dump file that did not complete.
    pub fn discard_dump(&mut self) {
        if let Some(dump) = self.dump.take() {
            if !matches!(dump.sink, DumpSink::Done) {
                let _ = std::fs::remove_file(&dump.path);
            }
        }
    }

    /// Clears the screen before each statistics table (for a terminal).
    pub fn clear_between_tables(&mut self, clear: bool) {
        self.clear = clear;
    }

    /// Prints the pending statistics table, if any.
    pub fn flush_stats(&mut self) -> Result<(), ClientError> {
        if self.stats.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.stats);
        let mut text = String::new();
        if self.clear {
            text.push_str(CLEAR_SCREEN);
        }
        text.push_str(&stats_table(&rows));
        if !self.clear {
            text.push('\n');
        }
        write_out(&mut self.out, &text)
    }

    /// Gives back the writers.
    pub fn into_inner(self) -> (W, E) {
        (self.out, self.err)
    }

    /// A final reply.
    fn reply(&mut self, wire: &Wire) -> Result<(), ClientError> {
        match (self.format, &wire.payload) {
            (Format::Json, _) => self.json(wire),
            (Format::Text, Payload::Success(success)) => {
                let text = render_success(success);
                write_out(&mut self.out, &text)
            }
            (Format::Text, _) => Ok(()),
        }
    }

    /// The success that starts a stream ("subscribed", "waiting for VM", block image).
    fn status(&mut self, wire: &Wire) -> Result<(), ClientError> {
        match (self.format, &wire.payload) {
            (Format::Json, _) => self.json(wire),
            (Format::Text, Payload::Success(Success::BlockDeviceImage(compressed))) => {
                let how = if *compressed {
                    "compressed"
                } else {
                    "uncompressed"
                };
                write_out(
                    &mut self.err,
                    &format!("receiving block device {} ({how})\n", wire.header.name),
                )
            }
            (Format::Text, Payload::Success(success)) => {
                write_out(&mut self.err, &render_success(success))
            }
            (Format::Text, _) => Ok(()),
        }
    }

    /// A streamed data frame.
    fn data(&mut self, wire: &Wire) -> Result<(), ClientError> {
        match (self.format, &wire.payload) {
            (Format::Json, _) => self.json(wire),
            (Format::Text, Payload::Data(Data::Console { timestamp, line })) => {
                write_out(&mut self.out, &format!("{timestamp} {line}\n"))
            }
            (Format::Text, Payload::Data(Data::Statistics(stats))) => {
                // A name seen again starts the next round.
                if self.stats.iter().any(|(name, _)| name == &wire.header.name) {
                    self.flush_stats()?;
                }
                self.stats
                    .push((wire.header.name.clone(), (**stats).clone()));
                Ok(())
            }
            (Format::Text, _) => Ok(()),
        }
    }

    /// In JSON format, the frame as one line; nothing in text format.
    fn json(&mut self, wire: &Wire) -> Result<(), ClientError> {
        if self.format != Format::Json {
            return Ok(());
        }
        let json = serde_json::to_string(wire).map_err(|e| ClientError::Internal(e.to_string()))?;
        write_out(&mut self.out, &format!("{json}\n"))
    }

    fn start_dump(&mut self, compressed: bool) -> Result<(), ClientError> {
        let dump = self
            .dump
            .as_mut()
            .ok_or_else(|| ClientError::Internal("block dump without an output file".to_owned()))?;
        let sink = std::mem::replace(&mut dump.sink, DumpSink::Done);
        dump.sink = match sink {
            DumpSink::Waiting(file) if compressed => DumpSink::Inflate(ZlibDecoder::new(file)),
            DumpSink::Waiting(file) => DumpSink::Raw(file),
            other => other,
        };
        Ok(())
    }

    fn dump_chunk(&mut self, chunk: &[u8]) -> Result<(), ClientError> {
        let Some(dump) = self.dump.as_mut() else {
            return Err(ClientError::Internal(
                "block dump without an output file".to_owned(),
            ));
        };
        let written = match &mut dump.sink {
            DumpSink::Raw(file) => file.write_all(chunk),
            DumpSink::Inflate(z) => z.write_all(chunk),
            DumpSink::Waiting(_) | DumpSink::Done => Ok(()),
        };
        written.map_err(|e| ClientError::io(&dump.path, e))
    }

    fn finish_dump(&mut self) -> Result<(), ClientError> {
        let Some(dump) = self.dump.as_mut() else {
            return Err(ClientError::Internal(
                "block dump without an output file".to_owned(),
            ));
        };
        let sink = std::mem::replace(&mut dump.sink, DumpSink::Done);
        let finished = match sink {
            DumpSink::Raw(file) => file.sync_all(),
            DumpSink::Inflate(z) => z.finish().and_then(|file| file.sync_all()),
            DumpSink::Waiting(file) => file.sync_all(),
            DumpSink::Done => Ok(()),
        };
        finished.map_err(|e| ClientError::io(&dump.path, e))?;
        if self.format == Format::Text {
            let path = dump.path.display().to_string();
            write_out(&mut self.err, &format!("dumped to {path}\n"))?;
        }
        Ok(())
    }
}

fn write_out<W: Write>(w: &mut W, text: &str) -> Result<(), ClientError> {
    w.write_all(text.as_bytes())
        .and_then(|()| w.flush())
        .map_err(|e| ClientError::Communication(format!("writing the output: {e}")))
}

/// The readable form of a success: its text, or a table, ending with a newline.
pub fn render_success(success: &Success) -> String {
    match success {
        Success::Empty => "success\n".to_owned(),
        Success::String(text) => format!("{text}\n"),
        Success::Policies(policies) => policy_table(policies),
        Success::BlockDevices(devices) => block_table(devices),
        Success::UnikernelInfo(infos) => {
            info_table(infos.iter().map(|e| (&e.name, e.info.clone())))
        }
        Success::OldUnikernelInfo5(infos) => info_table(
            infos
                .iter()
                .map(|e| (&e.name, UnikernelInfo::from(e.info.clone()))),
        ),
        Success::OldUnikernelInfo4(infos) => info_table(
            infos
                .iter()
                .map(|e| (&e.name, UnikernelInfo::from(e.info.clone()))),
        ),
        Success::Consoles(names) => names.iter().map(|n| format!("{n}\n")).collect(),
        Success::UnikernelImage { compressed, image }
        | Success::OldBlockDeviceImage { compressed, image } => {
            let how = if *compressed {
                "compressed"
            } else {
                "uncompressed"
            };
            format!("image of {} octets ({how})\n", image.len())
        }
        Success::BlockDeviceImage(compressed) => {
            let how = if *compressed {
                "compressed"
            } else {
                "uncompressed"
            };
            format!("block device image follows ({how})\n")
        }
    }
}

fn policy_table(policies: &[PolicyEntry]) -> String {
    let rows = policies
        .iter()
        .map(|PolicyEntry { name, policy }| {
            vec![
                name.to_string(),
                policy.unikernels.to_string(),
                join(&policy.cpuids),
                format!("{} MB", policy.memory),
                policy
                    .block
                    .map_or_else(|| "-".to_owned(), |b| format!("{b} MB")),
                join(&policy.bridges),
            ]
        })
        .collect();
    table(
        &["NAME", "UNIKERNELS", "CPUIDS", "MEMORY", "BLOCK", "BRIDGES"],
        rows,
    )
}

fn block_table(devices: &[BlockDevice]) -> String {
    let rows = devices
        .iter()
        .map(|d| {
            vec![
                d.name.to_string(),
                format!("{} MB", d.size),
                if d.active { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    table(&["NAME", "SIZE", "ACTIVE"], rows)
}

fn info_table<'a>(infos: impl Iterator<Item = (&'a crate::name::Name, UnikernelInfo)>) -> String {
    let rows = infos
        .map(|(name, info)| {
            let fail = match &info.fail_behaviour {
                FailBehaviour::Quit => "quit".to_owned(),
                FailBehaviour::Restart(codes) if codes.is_empty() => "restart".to_owned(),
                FailBehaviour::Restart(codes) => format!("restart on {}", join(codes)),
            };
            let nets: Vec<String> = info
                .bridges
                .iter()
                .map(|n| format!("{}:{}@{}", n.unikernel_device, n.host_device, n.mac))
                .collect();
            let blocks: Vec<String> = info
                .blocks
                .iter()
                .map(|b| {
                    format!(
                        "{}:{}@{} ({} MB)",
                        b.unikernel_device, b.host_device, b.sector_size, b.size
                    )
                })
                .collect();
            let digest = hex::encode(&info.digest);
            vec![
                name.to_string(),
                format!("{:?}", info.typ).to_lowercase(),
                join(&info.cpuids),
                format!("{} MB", info.memory),
                info.started.to_string(),
                fail,
                or_dash(nets.join(" ")),
                or_dash(blocks.join(" ")),
                or_dash(digest.get(..16).unwrap_or(&digest).to_owned()),
                or_dash(info.arguments.unwrap_or_default().join(" ")),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "TYPE",
            "CPUIDS",
            "MEMORY",
            "STARTED",
            "ON EXIT",
            "NETWORK",
            "BLOCK",
            "DIGEST",
            "ARGUMENTS",
        ],
        rows,
    )
}

/// The statistics of one round as a table: one row per unikernel and network interface
/// (the tap's counters: RX is what the unikernel sent), CPU time in seconds (the cgroup's
/// if given), resident and cgroup memory.
pub fn stats_table(rows: &[(Name, StatsData)]) -> String {
    let vmm = |data: &StatsData, key: &str| {
        data.vmm_stats
            .as_ref()
            .and_then(|stats| stats.iter().find(|s| s.key == key))
            .map(|s| s.value)
    };
    let mut sorted: Vec<&(Name, StatsData)> = rows.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut lines = Vec::new();
    for (name, data) in sorted {
        let ru = &data.resource_usage;
        let micros = vmm(data, VMM_CGROUP_CPU_USEC).unwrap_or_else(|| {
            let us = |t: &crate::codec::Timeval| {
                t.seconds
                    .saturating_mul(1_000_000)
                    .saturating_add(t.microseconds)
            };
            us(&ru.utime).saturating_add(us(&ru.stime))
        });
        let cpu = format!(
            "{}.{:02}",
            micros / 1_000_000,
            (micros % 1_000_000) / 10_000
        );
        let rss = vmm(data, VMM_RSS_BYTES).map_or_else(|| "-".to_owned(), human_bytes);
        let memory = vmm(data, VMM_CGROUP_MEMORY_BYTES).map_or_else(|| "-".to_owned(), human_bytes);
        let head = [name.to_string(), cpu, rss, memory];
        if data.ifdata.is_empty() {
            let mut row = head.to_vec();
            row.extend(["-", "-", "-", "-", "-"].map(str::to_owned));
            lines.push(row);
        }
        for (i, ifdata) in data.ifdata.iter().enumerate() {
            let mut row = if i == 0 {
                head.to_vec()
            } else {
                vec![String::new(); 4]
            };
            row.extend([
                ifdata.bridge.clone(),
                ifdata.input_bytes.to_string(),
                ifdata.input_packets.to_string(),
                ifdata.output_bytes.to_string(),
                ifdata.output_packets.to_string(),
            ]);
            lines.push(row);
        }
    }
    table(
        &[
            "NAME",
            "CPU S",
            "RSS",
            "CGROUP MEM",
            "IF",
            "RX BYTES",
            "RX PKTS",
            "TX BYTES",
            "TX PKTS",
        ],
        lines,
    )
}

/// Octets in B, KiB, MiB or GiB with one decimal.
fn human_bytes(octets: i64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut unit = 0;
    let mut scaled = octets.max(0);
    let mut tenths = 0;
    while scaled >= 1024 && unit + 1 < UNITS.len() {
        tenths = (scaled % 1024) * 10 / 1024;
        scaled /= 1024;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or("B");
    if unit == 0 {
        format!("{scaled} {name}")
    } else {
        format!("{scaled}.{tenths} {name}")
    }
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".to_owned() } else { s }
}

/// Columns padded to their widest cell, separated by two spaces; the last column is not
/// padded. No rows: only the header.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let last = row.len().saturating_sub(1);
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::codec::{Header, InfoEntry, NetInfo, Timestamp, encode_wire, frame};
    use crate::name::Name;
    use crate::policy::Policy;

    fn wire(payload: Payload) -> Wire {
        Wire::new(Header::new(0, Name::parse(":hello").unwrap()), payload)
    }

    fn stream(frames: &[Payload]) -> Vec<u8> {
        frames
            .iter()
            .flat_map(|p| frame(&encode_wire(&wire(p.clone()))).unwrap())
            .collect()
    }

    fn run(
        bytes: &[u8],
        mode: ReplyMode,
        format: Format,
        dump: Option<&Path>,
    ) -> (Result<(), ClientError>, String, String) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut printer = Printer::new(format, Vec::new(), Vec::new());
        if let Some(path) = dump {
            printer.dump_to(path).unwrap();
        }
        let mut reader = bytes;
        let result = runtime.block_on(read_replies(&mut reader, mode, &mut printer));
        let (out, err) = printer.into_inner();
        (
            result,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn single_reply() {
        let bytes = stream(&[Payload::success_string("destroyed unikernel")]);
        let (result, out, err) = run(&bytes, ReplyMode::Single, Format::Text, None);
        assert!(result.is_ok());
        assert_eq!(out, "destroyed unikernel\n");
        assert_eq!(err, "");
        let (_, out, _) = run(&bytes, ReplyMode::Single, Format::Json, None);
        assert_eq!(
            out,
            "{\"header\":{\"version\":5,\"sequence\":0,\"name\":\":hello\"},\"payload\":{\"success\":{\"string\":\"destroyed unikernel\"}}}\n"
        );
    }

    #[test]
    fn failure_and_silence() {
        let bytes = stream(&[Payload::failure("destroy: not found")]);
        let (result, out, _) = run(&bytes, ReplyMode::Single, Format::Text, None);
        let error = result.unwrap_err();
        assert_eq!(error.to_string(), "destroy: not found");
        assert_eq!(error.exit().code(), 117);
        assert_eq!(out, "");

        let (result, _, _) = run(&[], ReplyMode::Single, Format::Text, None);
        let error = result.unwrap_err();
        assert_eq!(error.to_string(), NO_FINAL_REPLY);
        assert_eq!(error.exit().code(), 121);

        let (result, _, _) = run(&[0, 0, 0, 0], ReplyMode::Single, Format::Text, None);
        assert_eq!(result.unwrap_err().to_string(), NO_FINAL_REPLY);

        let mut cut = stream(&[Payload::success_string("x")]);
        cut.truncate(cut.len() - 1);
        let (result, _, _) = run(&cut, ReplyMode::Single, Format::Text, None);
        assert_eq!(
            result.unwrap_err().to_string(),
            "the connection ended in the middle of a frame"
        );

        let (result, _, _) = run(
            &[0, 0, 0, 2, 0x30, 0],
            ReplyMode::Single,
            Format::Text,
            None,
        );
        assert_eq!(result.unwrap_err().exit().code(), 121);
    }

    fn stats(cpu_us: i64, rss: Option<i64>, nets: &[(&str, i64)]) -> StatsData {
        let t = crate::codec::Timeval {
            seconds: cpu_us / 1_000_000,
            microseconds: cpu_us % 1_000_000,
        };
        let zero = crate::codec::Timeval {
            seconds: 0,
            microseconds: 0,
        };
        StatsData {
            resource_usage: crate::codec::RUsage {
                utime: t,
                stime: zero,
                maxrss: 0,
                ixrss: 0,
                idrss: 0,
                isrss: 0,
                minflt: 0,
                majflt: 0,
                nswap: 0,
                inblock: 0,
                outblock: 0,
                msgsnd: 0,
                msgrcv: 0,
                nsignals: 0,
                nvcsw: 0,
                nivcsw: 0,
            },
            ifdata: nets
                .iter()
                .map(|(netif, n)| crate::codec::IfData {
                    bridge: (*netif).to_owned(),
                    flags: 0,
                    send_length: 0,
                    max_send_length: 0,
                    send_drops: 0,
                    mtu: 1500,
                    baudrate: 0,
                    input_packets: *n,
                    input_errors: 0,
                    output_packets: n * 2,
                    output_errors: 0,
                    collisions: 0,
                    input_bytes: n * 100,
                    output_bytes: n * 200,
                    input_mcast: 0,
                    output_mcast: 0,
                    input_dropped: 0,
                    output_dropped: 0,
                })
                .collect(),
            vmm_stats: rss.map(|rss| {
                vec![crate::codec::VmmStat {
                    key: "rss_bytes".into(),
                    value: rss,
                }]
            }),
            kinfo_mem: None,
        }
    }

    #[test]
    fn statistics_table() {
        let mut with_cgroup = stats(0, Some(2048), &[]);
        with_cgroup.vmm_stats.as_mut().unwrap().extend([
            crate::codec::VmmStat {
                key: "cgroup_memory_bytes".into(),
                value: 100 * 1024 * 1024 + 512 * 1024,
            },
            crate::codec::VmmStat {
                key: "cgroup_cpu_usec".into(),
                value: 12_345_678,
            },
        ]);
        let rows = vec![
            (
                Name::parse("b:web").unwrap(),
                stats(
                    1_500_000,
                    Some(12 * 1024 * 1024),
                    &[("service", 3), ("admin", 1)],
                ),
            ),
            (Name::parse(":a").unwrap(), stats(999, None, &[])),
            (Name::parse(":c").unwrap(), with_cgroup),
        ];
        assert_eq!(
            stats_table(&rows),
            "\
NAME   CPU S  RSS       CGROUP MEM  IF       RX BYTES  RX PKTS  TX BYTES  TX PKTS
:a     0.00   -         -           -        -         -        -         -
:c     12.34  2.0 KiB   100.5 MiB   -        -         -        -         -
b:web  1.50   12.0 MiB  -           service  300       3        600       6
                                    admin    100       1        200       2
"
        );
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(-5), "0 B");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024 * 1024), "5120.0 GiB");
    }

    #[test]
    fn statistics_stream_prints_a_table_per_round() {
        let data = |n: &str, cpu| {
            Wire::new(
                Header::new(0, Name::parse(n).unwrap()),
                Payload::Data(Data::Statistics(Box::new(stats(cpu, None, &[])))),
            )
        };
        let frames = [
            wire(Payload::success_string("subscribed")),
            data(":a", 1_000_000),
            data(":b", 0),
            data(":a", 2_000_000),
        ];
        let bytes: Vec<u8> = frames
            .iter()
            .flat_map(|w| frame(&encode_wire(w)).unwrap())
            .collect();
        let (result, out, err) = run(&bytes, ReplyMode::Read, Format::Text, None);
        assert_eq!(result.unwrap_err().to_string(), NO_FINAL_REPLY);
        assert_eq!(err, "subscribed\n");
        let header = "NAME  CPU S  RSS  CGROUP MEM  IF  RX BYTES  RX PKTS  TX BYTES  TX PKTS\n";
        assert_eq!(
            out,
            format!(
                "{header}:a    1.00   -    -           -   -         -        -         -\n\
                 :b    0.00   -    -           -   -         -        -         -\n\n\
                 {header}:a    2.00   -    -           -   -         -        -         -\n\n"
            )
        );
        let (_, out, _) = run(&bytes, ReplyMode::Read, Format::Json, None);
        assert_eq!(out.lines().count(), 4);
    }

    #[test]
    fn console_stream() {
        let line = |ms: i64, text: &str| {
            Payload::Data(Data::Console {
                timestamp: Timestamp::from_millis(ms).unwrap(),
                line: text.to_owned(),
            })
        };
        let frames = [
            Payload::success_string("subscribed"),
            line(1_755_867_883_000, "hello world"),
            line(1_755_867_883_250, "second"),
        ];
        // The server ends the stream without a final frame: an error (T1).
        let (result, out, err) = run(&stream(&frames), ReplyMode::Read, Format::Text, None);
        assert_eq!(result.unwrap_err().exit().code(), 121);
        assert_eq!(
            out,
            "2025-08-22T13:04:43Z hello world\n2025-08-22T13:04:43.250Z second\n"
        );
        assert_eq!(err, "subscribed\n");
        // A final failure (albatross's endpoint) or success (a proper end).
        let mut with_end = frames.to_vec();
        with_end.push(Payload::failure("exception while reading from fd"));
        let (result, _, _) = run(&stream(&with_end), ReplyMode::Read, Format::Text, None);
        assert_eq!(result.unwrap_err().exit().code(), 117);
        let mut with_end = frames.to_vec();
        with_end.push(Payload::success_string("console closed"));
        let (result, out, _) = run(&stream(&with_end), ReplyMode::Read, Format::Text, None);
        assert!(result.is_ok());
        assert!(out.ends_with("second\nconsole closed\n"));
    }

    #[test]
    fn block_dump_inflates_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump");
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
        z.write_all(&content).unwrap();
        let compressed = z.finish().unwrap();
        let mut frames = vec![Payload::Success(Success::BlockDeviceImage(true))];
        for chunk in compressed.chunks(1000) {
            frames.push(Payload::Data(Data::Block(BlockData::SomeData(
                chunk.to_vec(),
            ))));
        }
        frames.push(Payload::Data(Data::Block(BlockData::NoData)));
        let (result, out, err) = run(&stream(&frames), ReplyMode::Dump, Format::Text, Some(&path));
        assert!(result.is_ok());
        assert_eq!(out, "");
        assert_eq!(
            err,
            format!(
                "receiving block device :hello (compressed)\ndumped to {}\n",
                path.display()
            )
        );
        assert_eq!(std::fs::read(&path).unwrap(), content);

        // Uncompressed, and a dump without its noData end.
        let raw = dir.path().join("raw");
        let frames = [
            Payload::Success(Success::BlockDeviceImage(false)),
            Payload::Data(Data::Block(BlockData::SomeData(vec![1, 2, 3]))),
        ];
        let mut printer = Printer::new(Format::Text, Vec::new(), Vec::new());
        printer.dump_to(&raw).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = stream(&frames);
        let result = runtime.block_on(read_replies(
            &mut bytes.as_slice(),
            ReplyMode::Dump,
            &mut printer,
        ));
        assert_eq!(result.unwrap_err().exit().code(), 121);
        assert_eq!(std::fs::read(&raw).unwrap(), [1, 2, 3]);
        printer.discard_dump();
        assert!(!raw.exists());
        // An existing file is never overwritten.
        let mut printer = Printer::new(Format::Text, Vec::new(), Vec::new());
        assert_eq!(printer.dump_to(&path).unwrap_err().exit().code(), 124);
    }

    #[test]
    fn unexpected_frames() {
        let bytes = stream(&[Payload::Data(Data::Block(BlockData::NoData))]);
        let (result, _, _) = run(&bytes, ReplyMode::Single, Format::Text, None);
        assert_eq!(
            result.unwrap_err().to_string(),
            "unexpected reply: block data"
        );
        let bytes = stream(&[Payload::Command(crate::codec::Command::Unikernel(
            crate::codec::UnikernelCmd::Info,
        ))]);
        let (result, _, _) = run(&bytes, ReplyMode::Single, Format::Text, None);
        assert_eq!(result.unwrap_err().exit().code(), 125);
    }

    #[test]
    fn tables() {
        let policies = Success::Policies(vec![PolicyEntry {
            name: Name::parse(":").unwrap(),
            policy: Policy {
                unikernels: 16,
                cpuids: BTreeSet::from([0, 1]),
                memory: 1024,
                block: None,
                bridges: BTreeSet::from(["service".to_owned()]),
            },
        }]);
        assert_eq!(
            render_success(&policies),
            "NAME  UNIKERNELS  CPUIDS  MEMORY   BLOCK  BRIDGES\n\
             :     16          0, 1    1024 MB  -      service\n"
        );
        let blocks = Success::BlockDevices(vec![BlockDevice {
            name: Name::parse("foo:disk").unwrap(),
            size: 100,
            active: false,
        }]);
        assert_eq!(
            render_success(&blocks),
            "NAME      SIZE    ACTIVE\nfoo:disk  100 MB  no\n"
        );
        let info = Success::UnikernelInfo(vec![InfoEntry {
            name: Name::parse(":hello").unwrap(),
            info: UnikernelInfo {
                typ: crate::codec::Typ::Solo5,
                startup: None,
                fail_behaviour: FailBehaviour::Restart(BTreeSet::from([3])),
                cpuids: BTreeSet::from([0]),
                memory: 32,
                digest: vec![0xab; 32],
                blocks: Vec::new(),
                bridges: vec![NetInfo {
                    unikernel_device: "service".into(),
                    host_device: "br0".into(),
                    mac: crate::codec::MacAddr::new([0, 0x80, 0x41, 1, 2, 3]),
                }],
                arguments: None,
                started: Timestamp::EPOCH,
                cpus: 1,
                linux_boot_partition: None,
            },
        }]);
        assert_eq!(
            render_success(&info),
            "NAME    TYPE   CPUIDS  MEMORY  STARTED               ON EXIT       NETWORK                        BLOCK  DIGEST            ARGUMENTS\n\
             :hello  solo5  0       32 MB   1970-01-01T00:00:00Z  restart on 3  service:br0@00:80:41:01:02:03  -      abababababababab  -\n"
        );
        assert_eq!(render_success(&Success::Empty), "success\n");
        assert_eq!(
            render_success(&Success::Consoles(vec![Name::parse("a:b").unwrap()])),
            "a:b\n"
        );
    }
}
