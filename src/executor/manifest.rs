//! The solo5 notes of a unikernel ELF image: the ABI note (target and ABI version) and the
//! manifest note (the devices the unikernel expects), read with a bounded, total reader
//! (`spec/unikernel-and-executor.md` §3.3, §6).
//!
//! Layouts (from solo5's `include/elf_abi.h` and `include/mft_abi.h`, ELF64 little
//! endian):
//! - a solo5 note has `n_namesz = 6`, the name `"Solo5\0"` padded to 8 octets, so its
//!   header is 20 octets; the ABI note has type `0x31494241` ("ABI1"), the manifest note
//!   `0x3154464d` ("MFT1");
//! - the ABI descriptor (right after the header) is four `u32`: target, ABI version and
//!   two reserved words;
//! - the manifest descriptor starts with 4 octets of padding (the manifest is 8-aligned),
//!   then `u32 version` (1), `u32 entries` (at most 64) and `entries` entries of 104
//!   octets: `name[68]` (NUL-terminated), `u32 type` (1 block-basic, 2 net-basic, `1<<30`
//!   reserved), 16 octets of properties, 8 octets of host handle and a `bool attached`,
//!   padded to 104. The first entry is the reserved one with an empty name.
//!
//! Like the solo5 tender, the reader looks only at the first note of each `PT_NOTE`
//! segment (solo5's linker scripts give each note its own segment) and applies the same
//! checks as solo5's `elf_load_note` and `mft_validate`, plus the device name rule of
//! solo5's `elftool` (1 to 67 ASCII alphanumeric characters). It reads the ELF header,
//! the program headers and the two notes, each bounded by a constant below, and nothing
//! else, so a multi-hundred-MB image costs a few KiB of reads.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

/// Size of an ELF64 file header.
pub const ELF_HEADER_SIZE: usize = 64;

/// Size of one ELF64 program header.
pub const PROGRAM_HEADER_SIZE: usize = 56;

/// Most program headers read. Solo5 images have fewer than ten (code, data, three
/// notes, stack); `e_phnum` could ask for 65535 × 56 octets.
pub const MAX_PROGRAM_HEADERS: u16 = 256;

/// Size of a solo5 note header: `n_namesz`, `n_descsz`, `n_type` and the 8-octet padded
/// name `"Solo5\0"`.
pub const NOTE_HEADER_SIZE: usize = 20;

/// Size of a generic ELF note header (`Elf64_Nhdr`); a `PT_NOTE` segment smaller than
/// this makes solo5 reject the image.
pub const ELF_NOTE_HEADER_SIZE: u64 = 12;

/// The note name solo5 uses, with its terminating NUL.
pub const SOLO5_NOTE_NAME: &[u8; 6] = b"Solo5\0";

/// Note type of the ABI note ("ABI1").
pub const ABI_NOTE_TYPE: u32 = 0x3149_4241;

/// Note type of the manifest note ("MFT1").
pub const MFT_NOTE_TYPE: u32 = 0x3154_464d;

/// Size of the ABI descriptor read (target, version, two reserved words).
pub const ABI_DESC_SIZE: usize = 16;

/// Largest ABI descriptor solo5 accepts (`ABI1_NOTE_MAX_SIZE`).
pub const ABI_DESC_MAX_SIZE: u32 = 32;

/// Padding at the start of the manifest descriptor (the manifest is 8-aligned after a
/// 20-octet header).
pub const MFT_DESC_PAD: u32 = 4;

/// Size of the manifest's own header (`version`, `entries`).
pub const MFT_HEADER_SIZE: usize = 8;

/// Size of one manifest entry (`struct mft_entry` on 64-bit targets).
pub const MFT_ENTRY_SIZE: usize = 104;

/// Size of an entry's name field, including the terminating NUL.
pub const MFT_NAME_SIZE: usize = 68;

/// Longest device name (solo5's `MFT_NAME_MAX`).
pub const MFT_NAME_MAX: usize = 67;

/// Most manifest entries, the reserved first one included (solo5's `MFT_MAX_ENTRIES`).
pub const MFT_MAX_ENTRIES: u32 = 64;

/// The only manifest version (solo5's `MFT_VERSION`).
pub const MFT_VERSION: u32 = 1;

/// Largest manifest descriptor solo5 accepts (`MFT1_NOTE_MAX_SIZE`): padding, header and
/// 64 entries.
pub const MFT_DESC_MAX_SIZE: u32 = 12 + 64 * 104;

/// Entry type of a block-basic device.
pub const MFT_DEV_BLOCK_BASIC: u32 = 1;

/// Entry type of a net-basic device.
pub const MFT_DEV_NET_BASIC: u32 = 2;

/// Entry type of the reserved first entry.
pub const MFT_RESERVED_FIRST: u32 = 1 << 30;

const PT_NOTE: u32 = 4;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u32 = 1;
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Why an image's solo5 notes could not be read, or do not fit the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Reading the image failed.
    #[error("reading the image: {0}")]
    Io(#[from] io::Error),
    /// A structure lies (partly) beyond the end of the image.
    #[error("image truncated: {0} extends beyond the end of the file")]
    Truncated(&'static str),
    /// No ELF magic.
    #[error("not an ELF image")]
    NotElf,
    /// Not ELFCLASS64.
    #[error("not a 64-bit ELF image")]
    NotElf64,
    /// Not little endian.
    #[error("not a little-endian ELF image")]
    NotLittleEndian,
    /// `e_version` (or `EI_VERSION`) is not 1.
    #[error("unsupported ELF version {0}")]
    ElfVersion(u32),
    /// `e_type` is not `ET_EXEC` (solo5 tenders load executables only).
    #[error("not an executable ELF image (type {0})")]
    NotExecutable(u16),
    /// Neither x86_64 nor aarch64.
    #[error("unsupported ELF machine {0} (x86_64 and aarch64 are supported)")]
    UnsupportedMachine(u16),
    /// `e_ehsize` or `e_phentsize` is not the ELF64 size.
    #[error("unexpected ELF {what} size {size}")]
    HeaderSize {
        /// Which size field.
        what: &'static str,
        /// Its value.
        size: u16,
    },
    /// `e_phnum` is 0.
    #[error("no program headers")]
    NoProgramHeaders,
    /// `e_phnum` is above [`MAX_PROGRAM_HEADERS`].
    #[error("too many program headers ({0}, at most {max})", max = MAX_PROGRAM_HEADERS)]
    TooManyProgramHeaders(u16),
    /// A `PT_NOTE` segment is smaller than an ELF note header (solo5 rejects this).
    #[error("program header {0}: note segment smaller than a note header")]
    NoteSegmentTooSmall(u16),
    /// A solo5 note's descriptor size is outside what solo5 accepts.
    #[error("solo5 {kind} note has invalid size {size}")]
    NoteSize {
        /// Which note.
        kind: NoteKind,
        /// Its `n_descsz`.
        size: u32,
    },
    /// A solo5 note's descriptor extends beyond its segment.
    #[error("solo5 {0} note extends beyond its segment")]
    NoteOutsideSegment(NoteKind),
    /// The note is absent.
    #[error("no solo5 {0} note found (not a solo5 image?)")]
    MissingNote(NoteKind),
    /// The manifest version is not [`MFT_VERSION`].
    #[error("unsupported solo5 manifest version {0} (expected {v})", v = MFT_VERSION)]
    ManifestVersion(u32),
    /// More than [`MFT_MAX_ENTRIES`] entries.
    #[error("solo5 manifest has {0} entries, at most {max} allowed", max = MFT_MAX_ENTRIES)]
    TooManyEntries(u32),
    /// The descriptor size does not match the entry count.
    #[error("solo5 manifest size {size} does not match its {entries} entries")]
    ManifestSize {
        /// The declared entry count.
        entries: u32,
        /// The manifest's size (descriptor size less padding).
        size: u32,
    },
    /// The first entry is not the reserved entry with an empty name.
    #[error("solo5 manifest does not start with its reserved entry")]
    NoReservedEntry,
    /// A device name is not terminated or not 1 to 67 alphanumeric characters.
    #[error(
        "solo5 manifest entry {0}: device name is not 1 to {max} ASCII alphanumeric characters",
        max = MFT_NAME_MAX
    )]
    DeviceName(u32),
    /// A device name given outside a manifest does not follow the solo5 rule.
    #[error(
        "invalid solo5 device name {0:?} (1 to {max} ASCII alphanumeric characters)",
        max = MFT_NAME_MAX
    )]
    InvalidDeviceName(String),
    /// An entry has a type other than block-basic or net-basic.
    #[error("solo5 manifest entry {index}: unknown device type {value}")]
    DeviceType {
        /// Entry index (the reserved entry is 0).
        index: u32,
        /// The type value.
        value: u32,
    },
    /// An entry is marked attached (solo5 refuses such manifests).
    #[error("solo5 manifest entry {0} is marked attached")]
    EntryAttached(u32),
    /// The image is for a target petrel cannot run (albatross's text).
    #[error("unsupported solo5 target {0}")]
    UnsupportedTarget(Target),
    /// The configured block devices differ from the manifest's (albatross's text).
    #[error(
        "specified block device(s) does not match with manifest. Devices present in manifest: {0}"
    )]
    BlockMismatch(DeviceList),
    /// The configured network devices differ from the manifest's (albatross's text).
    #[error(
        "specified bridge(s) does not match with the manifest. Devices present in manifest: {0}"
    )]
    NetMismatch(DeviceList),
}

/// Which solo5 note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// The ABI note.
    Abi,
    /// The manifest note.
    Manifest,
}

impl fmt::Display for NoteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Abi => "ABI",
            Self::Manifest => "manifest",
        })
    }
}

/// What the solo5 notes of an image say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solo5Image {
    /// The ELF machine.
    pub machine: Machine,
    /// Target and ABI version.
    pub abi: Abi,
    /// The devices.
    pub manifest: Manifest,
}

/// ELF machines petrel reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// `EM_X86_64`.
    X86_64,
    /// `EM_AARCH64`.
    Aarch64,
}

impl Machine {
    /// The ELF `e_machine` value.
    pub fn elf_value(self) -> u16 {
        match self {
            Self::X86_64 => EM_X86_64,
            Self::Aarch64 => EM_AARCH64,
        }
    }
}

/// The ABI note: target and ABI version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abi {
    /// The solo5 target.
    pub target: Target,
    /// The target's ABI version.
    pub version: u32,
}

/// A solo5 target (`enum abi_target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// hvt (hardware virtualised tender), 1.
    Hvt,
    /// spt (sandboxed process tender), 2.
    Spt,
    /// virtio, 3.
    Virtio,
    /// muen, 4.
    Muen,
    /// genode, 5.
    Genode,
    /// xen, 6.
    Xen,
    /// Any other value.
    Unknown(u32),
}

impl Target {
    /// The target for a note value.
    pub fn from_value(value: u32) -> Self {
        match value {
            1 => Self::Hvt,
            2 => Self::Spt,
            3 => Self::Virtio,
            4 => Self::Muen,
            5 => Self::Genode,
            6 => Self::Xen,
            other => Self::Unknown(other),
        }
    }

    /// The note value.
    pub fn value(self) -> u32 {
        match self {
            Self::Hvt => 1,
            Self::Spt => 2,
            Self::Virtio => 3,
            Self::Muen => 4,
            Self::Genode => 5,
            Self::Xen => 6,
            Self::Unknown(other) => other,
        }
    }

    /// The tender program for this target (`solo5-hvt`, `solo5-spt`), or
    /// `unsupported solo5 target <target>`.
    pub fn tender_name(self) -> Result<&'static str, ManifestError> {
        match self {
            Self::Hvt => Ok("solo5-hvt"),
            Self::Spt => Ok("solo5-spt"),
            other => Err(ManifestError::UnsupportedTarget(other)),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hvt => f.write_str("hvt"),
            Self::Spt => f.write_str("spt"),
            Self::Virtio => f.write_str("virtio"),
            Self::Muen => f.write_str("muen"),
            Self::Genode => f.write_str("genode"),
            Self::Xen => f.write_str("xen"),
            Self::Unknown(value) => write!(f, "{value}"),
        }
    }
}

/// The devices a unikernel declares, in manifest order (the reserved entry excluded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    devices: Vec<Device>,
}

impl Manifest {
    /// A manifest with these devices.
    pub fn new(devices: Vec<Device>) -> Self {
        Self { devices }
    }

    /// All devices, in manifest order.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Names of the block-basic devices, in manifest order.
    pub fn block_names(&self) -> impl Iterator<Item = &str> {
        self.names_of(DeviceKind::BlockBasic)
    }

    /// Names of the net-basic devices, in manifest order.
    pub fn net_names(&self) -> impl Iterator<Item = &str> {
        self.names_of(DeviceKind::NetBasic)
    }

    fn names_of(&self, kind: DeviceKind) -> impl Iterator<Item = &str> {
        self.devices
            .iter()
            .filter(move |d| d.kind == kind)
            .map(|d| d.name.as_str())
    }
}

/// One manifest device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its name.
    pub name: DeviceName,
    /// Its type.
    pub kind: DeviceKind,
}

impl Device {
    /// A block-basic device, for tests and fixtures.
    ///
    /// # Panics
    /// On a name that is not a valid [`DeviceName`]; use [`DeviceName::parse`] for
    /// names from untrusted input.
    pub fn block(name: &str) -> Self {
        Self::of_kind(name, DeviceKind::BlockBasic)
    }

    /// A net-basic device, for tests and fixtures.
    ///
    /// # Panics
    /// On a name that is not a valid [`DeviceName`]; use [`DeviceName::parse`] for
    /// names from untrusted input.
    pub fn net(name: &str) -> Self {
        Self::of_kind(name, DeviceKind::NetBasic)
    }

    #[allow(clippy::expect_used)]
    fn of_kind(name: &str, kind: DeviceKind) -> Self {
        let name = DeviceName::parse(name).expect("valid solo5 device name");
        Self { name, kind }
    }
}

impl fmt::Display for Device {
    /// albatross's rendering: `block "x"` or `net "y"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DeviceKind::BlockBasic => write!(f, "block \"{}\"", self.name),
            DeviceKind::NetBasic => write!(f, "net \"{}\"", self.name),
        }
    }
}

/// Manifest device types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// `MFT_DEV_BLOCK_BASIC`.
    BlockBasic,
    /// `MFT_DEV_NET_BASIC`.
    NetBasic,
}

impl DeviceKind {
    /// The entry type value.
    pub fn value(self) -> u32 {
        match self {
            Self::BlockBasic => MFT_DEV_BLOCK_BASIC,
            Self::NetBasic => MFT_DEV_NET_BASIC,
        }
    }
}

/// A solo5 device name: 1 to [`MFT_NAME_MAX`] ASCII alphanumeric characters (the rule
/// of solo5's `elftool` and of the tender's `--net:`/`--block:` option parsing).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceName(String);

impl DeviceName {
    /// Checks the solo5 rule.
    pub fn parse(name: &str) -> Result<Self, ManifestError> {
        if Self::is_valid(name.as_bytes()) {
            Ok(Self(name.to_owned()))
        } else {
            Err(ManifestError::InvalidDeviceName(name.to_owned()))
        }
    }

    /// True if `name` follows the solo5 rule.
    pub fn is_valid(name: &[u8]) -> bool {
        !name.is_empty() && name.len() <= MFT_NAME_MAX && name.iter().all(u8::is_ascii_alphanumeric)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Manifest entries rendered as albatross does: `block "x", net "y"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList(pub Vec<Device>);

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, device) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{device}")?;
        }
        Ok(())
    }
}

/// Reads the solo5 notes of the image at `path`.
pub fn read_image_file(path: &Path) -> Result<Solo5Image, ManifestError> {
    let mut file = File::open(path)?;
    read_image(&mut file)
}

/// Reads the solo5 notes of an image held in memory.
pub fn read_image_bytes(image: &[u8]) -> Result<Solo5Image, ManifestError> {
    read_image(&mut Cursor::new(image))
}

/// Reads the solo5 notes of an image: the ELF header, the program headers and the first
/// note of each `PT_NOTE` segment until both solo5 notes are found.
pub fn read_image<R: Read + Seek>(image: &mut R) -> Result<Solo5Image, ManifestError> {
    let header = read_up_to(image, ELF_HEADER_SIZE)?;
    let header = ElfHeader::parse(&header)?;
    let table_size = usize::from(header.phnum).saturating_mul(PROGRAM_HEADER_SIZE);
    let table = read_at(image, header.phoff, table_size, "program header table")?;
    let mut abi = None;
    let mut manifest = None;
    for (index, phdr) in (0u16..).zip(table.chunks_exact(PROGRAM_HEADER_SIZE)) {
        if abi.is_some() && manifest.is_some() {
            break;
        }
        if le_u32(phdr, 0) != Some(PT_NOTE) {
            continue;
        }
        let offset = le_u64(phdr, 8).ok_or(ManifestError::Truncated("program header"))?;
        let filesz = le_u64(phdr, 32).ok_or(ManifestError::Truncated("program header"))?;
        if filesz < ELF_NOTE_HEADER_SIZE {
            return Err(ManifestError::NoteSegmentTooSmall(index));
        }
        if filesz < u64_of(NOTE_HEADER_SIZE) {
            continue;
        }
        let note = read_at(image, offset, NOTE_HEADER_SIZE, "note header")?;
        let (namesz, descsz, kind) = (le_u32(&note, 0), le_u32(&note, 4), le_u32(&note, 8));
        if namesz != Some(6) || note.get(12..18) != Some(&SOLO5_NOTE_NAME[..]) {
            continue;
        }
        let descsz = descsz.unwrap_or_default();
        match kind {
            Some(ABI_NOTE_TYPE) if abi.is_none() => {
                check_note_size(NoteKind::Abi, descsz, ABI_DESC_MAX_SIZE, filesz)?;
                if descsz < u32_of(ABI_DESC_SIZE) {
                    return Err(ManifestError::NoteSize {
                        kind: NoteKind::Abi,
                        size: descsz,
                    });
                }
                let desc = read_at(
                    image,
                    add(offset, NOTE_HEADER_SIZE)?,
                    ABI_DESC_SIZE,
                    "ABI note",
                )?;
                abi = Some(parse_abi(&desc)?);
            }
            Some(MFT_NOTE_TYPE) if manifest.is_none() => {
                check_note_size(NoteKind::Manifest, descsz, MFT_DESC_MAX_SIZE, filesz)?;
                let size = descsz.checked_sub(MFT_DESC_PAD).filter(|&s| s > 0).ok_or(
                    ManifestError::NoteSize {
                        kind: NoteKind::Manifest,
                        size: descsz,
                    },
                )?;
                let start = add(offset, NOTE_HEADER_SIZE + usize_of(MFT_DESC_PAD))?;
                let desc = read_at(image, start, usize_of(size), "manifest note")?;
                manifest = Some(parse_manifest(&desc)?);
            }
            _ => continue,
        }
    }
    let abi = abi.ok_or(ManifestError::MissingNote(NoteKind::Abi))?;
    let manifest = manifest.ok_or(ManifestError::MissingNote(NoteKind::Manifest))?;
    Ok(Solo5Image {
        machine: header.machine,
        abi,
        manifest,
    })
}

/// The manifest check of §6: the set of manifest block names must equal the set of
/// configured block names, then the set of manifest net names must equal the set of
/// configured network device names (`netif`s). Duplicates collapse; order is irrelevant.
pub fn check_manifest<B, N>(
    manifest: &Manifest,
    block_names: B,
    net_names: N,
) -> Result<(), ManifestError>
where
    B: IntoIterator,
    B::Item: AsRef<str>,
    N: IntoIterator,
    N::Item: AsRef<str>,
{
    let configured_blocks: BTreeSet<String> = block_names
        .into_iter()
        .map(|n| n.as_ref().to_owned())
        .collect();
    let manifest_blocks: BTreeSet<String> = manifest.block_names().map(str::to_owned).collect();
    if configured_blocks != manifest_blocks {
        return Err(ManifestError::BlockMismatch(DeviceList(
            manifest.devices.clone(),
        )));
    }
    let configured_nets: BTreeSet<String> = net_names
        .into_iter()
        .map(|n| n.as_ref().to_owned())
        .collect();
    let manifest_nets: BTreeSet<String> = manifest.net_names().map(str::to_owned).collect();
    if configured_nets != manifest_nets {
        return Err(ManifestError::NetMismatch(DeviceList(
            manifest.devices.clone(),
        )));
    }
    Ok(())
}

/// Test support: a minimal valid solo5 image for x86_64 with an ABI note and a manifest
/// note listing `devices` (see [`build_test_image_for`]).
pub fn build_test_image(target: Target, abi_version: u32, devices: &[Device]) -> Vec<u8> {
    build_test_image_for(Machine::X86_64, target, abi_version, devices)
}

/// Test support: a minimal valid solo5 image, as there is no solo5 toolchain to build
/// real ones in tests. Layout (offsets in octets, N = `devices.len() + 1` entries):
///
/// | offset | content |
/// |---|---|
/// | 0 | ELF64 header (`ET_EXEC`, `machine`, 2 program headers at 64) |
/// | 64 | program header 0: `PT_NOTE`, offset 176, size 36 (the ABI note) |
/// | 120 | program header 1: `PT_NOTE`, offset 216, size 32 + 104·N (the manifest note) |
/// | 176 | ABI note: header (20), target, `abi_version`, 0, 0 |
/// | 212 | 4 octets padding |
/// | 216 | manifest note: header (20), padding (4), version 1 at 240, N at 244 |
/// | 248 | the reserved entry, then one 104-octet entry per device |
pub fn build_test_image_for(
    machine: Machine,
    target: Target,
    abi_version: u32,
    devices: &[Device],
) -> Vec<u8> {
    let entries = devices.len().saturating_add(1);
    let mft_desc = usize_of(MFT_DESC_PAD) + MFT_HEADER_SIZE + entries * MFT_ENTRY_SIZE;
    let abi_offset = ELF_HEADER_SIZE + 2 * PROGRAM_HEADER_SIZE;
    let abi_size = NOTE_HEADER_SIZE + ABI_DESC_SIZE;
    let mft_offset = abi_offset + abi_size + 4;
    let mft_size = NOTE_HEADER_SIZE + mft_desc;

    let mut out = Vec::with_capacity(mft_offset + mft_size);
    // ELF header.
    out.extend_from_slice(ELF_MAGIC);
    out.extend_from_slice(&[ELFCLASS64, ELFDATA2LSB, 1, 0]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&ET_EXEC.to_le_bytes());
    out.extend_from_slice(&machine.elf_value().to_le_bytes());
    out.extend_from_slice(&EV_CURRENT.to_le_bytes());
    out.extend_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
    out.extend_from_slice(&u64_of(ELF_HEADER_SIZE).to_le_bytes()); // e_phoff
    out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&u16_of(ELF_HEADER_SIZE).to_le_bytes());
    out.extend_from_slice(&u16_of(PROGRAM_HEADER_SIZE).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes()); // e_phnum
    out.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    // Program headers.
    for (offset, size, align) in [(abi_offset, abi_size, 4u64), (mft_offset, mft_size, 4)] {
        out.extend_from_slice(&PT_NOTE.to_le_bytes());
        out.extend_from_slice(&4u32.to_le_bytes()); // PF_R
        out.extend_from_slice(&u64_of(offset).to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // p_vaddr
        out.extend_from_slice(&0u64.to_le_bytes()); // p_paddr
        out.extend_from_slice(&u64_of(size).to_le_bytes());
        out.extend_from_slice(&u64_of(size).to_le_bytes());
        out.extend_from_slice(&align.to_le_bytes());
    }
    // ABI note.
    push_note_header(&mut out, u32_of(ABI_DESC_SIZE), ABI_NOTE_TYPE);
    for word in [target.value(), abi_version, 0, 0] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(&[0; 4]);
    // Manifest note.
    push_note_header(&mut out, u32_of(mft_desc), MFT_NOTE_TYPE);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&MFT_VERSION.to_le_bytes());
    out.extend_from_slice(&u32_of(entries).to_le_bytes());
    push_entry(&mut out, "", MFT_RESERVED_FIRST);
    for device in devices {
        push_entry(&mut out, device.name.as_str(), device.kind.value());
    }
    out
}

fn push_note_header(out: &mut Vec<u8>, descsz: u32, kind: u32) {
    out.extend_from_slice(&6u32.to_le_bytes());
    out.extend_from_slice(&descsz.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(SOLO5_NOTE_NAME);
    out.extend_from_slice(&[0; 2]);
}

fn push_entry(out: &mut Vec<u8>, name: &str, kind: u32) {
    let mut field = [0u8; MFT_NAME_SIZE];
    for (slot, byte) in field.iter_mut().zip(name.bytes().take(MFT_NAME_MAX)) {
        *slot = byte;
    }
    out.extend_from_slice(&field);
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&[0; MFT_ENTRY_SIZE - MFT_NAME_SIZE - 4]);
}

struct ElfHeader {
    machine: Machine,
    phoff: u64,
    phnum: u16,
}

impl ElfHeader {
    fn parse(h: &[u8]) -> Result<Self, ManifestError> {
        let short = || ManifestError::Truncated("ELF header");
        // Identify what is there before complaining that it is short.
        if !h.iter().zip(ELF_MAGIC).all(|(a, b)| a == b) {
            return Err(ManifestError::NotElf);
        }
        if h.get(4).is_some_and(|&class| class != ELFCLASS64) {
            return Err(ManifestError::NotElf64);
        }
        if h.get(5).is_some_and(|&data| data != ELFDATA2LSB) {
            return Err(ManifestError::NotLittleEndian);
        }
        if h.len() < ELF_HEADER_SIZE {
            return Err(short());
        }
        let ident_version = h.get(6).copied().ok_or_else(short)?;
        if ident_version != 1 {
            return Err(ManifestError::ElfVersion(u32::from(ident_version)));
        }
        let e_type = le_u16(h, 16).ok_or_else(short)?;
        let e_machine = le_u16(h, 18).ok_or_else(short)?;
        let e_version = le_u32(h, 20).ok_or_else(short)?;
        let phoff = le_u64(h, 32).ok_or_else(short)?;
        let ehsize = le_u16(h, 52).ok_or_else(short)?;
        let phentsize = le_u16(h, 54).ok_or_else(short)?;
        let phnum = le_u16(h, 56).ok_or_else(short)?;
        if e_version != EV_CURRENT {
            return Err(ManifestError::ElfVersion(e_version));
        }
        let machine = match e_machine {
            EM_X86_64 => Machine::X86_64,
            EM_AARCH64 => Machine::Aarch64,
            other => return Err(ManifestError::UnsupportedMachine(other)),
        };
        if e_type != ET_EXEC {
            return Err(ManifestError::NotExecutable(e_type));
        }
        if usize::from(ehsize) != ELF_HEADER_SIZE {
            return Err(ManifestError::HeaderSize {
                what: "header",
                size: ehsize,
            });
        }
        if usize::from(phentsize) != PROGRAM_HEADER_SIZE {
            return Err(ManifestError::HeaderSize {
                what: "program header",
                size: phentsize,
            });
        }
        if phnum == 0 {
            return Err(ManifestError::NoProgramHeaders);
        }
        if phnum > MAX_PROGRAM_HEADERS {
            return Err(ManifestError::TooManyProgramHeaders(phnum));
        }
        Ok(Self {
            machine,
            phoff,
            phnum,
        })
    }
}

fn check_note_size(
    kind: NoteKind,
    descsz: u32,
    max: u32,
    filesz: u64,
) -> Result<(), ManifestError> {
    if descsz < 1 || descsz > max {
        return Err(ManifestError::NoteSize { kind, size: descsz });
    }
    if filesz < u64_of(NOTE_HEADER_SIZE).saturating_add(u64::from(descsz)) {
        return Err(ManifestError::NoteOutsideSegment(kind));
    }
    Ok(())
}

fn parse_abi(desc: &[u8]) -> Result<Abi, ManifestError> {
    let short = || ManifestError::Truncated("ABI note");
    let target = le_u32(desc, 0).ok_or_else(short)?;
    let version = le_u32(desc, 4).ok_or_else(short)?;
    Ok(Abi {
        target: Target::from_value(target),
        version,
    })
}

/// `mft_validate` plus the device name and type rules; `desc` is the manifest without
/// the descriptor's leading padding.
fn parse_manifest(desc: &[u8]) -> Result<Manifest, ManifestError> {
    let size = u32_of(desc.len());
    let bad_size = |entries| ManifestError::ManifestSize { entries, size };
    let version = le_u32(desc, 0).ok_or(bad_size(0))?;
    let entries = le_u32(desc, 4).ok_or(bad_size(0))?;
    if version != MFT_VERSION {
        return Err(ManifestError::ManifestVersion(version));
    }
    if entries > MFT_MAX_ENTRIES {
        return Err(ManifestError::TooManyEntries(entries));
    }
    let expected = MFT_HEADER_SIZE.saturating_add(usize_of(entries).saturating_mul(MFT_ENTRY_SIZE));
    if desc.len() != expected {
        return Err(bad_size(entries));
    }
    if entries < 1 {
        return Err(ManifestError::NoReservedEntry);
    }
    let body = desc.get(MFT_HEADER_SIZE..).unwrap_or_default();
    let mut devices = Vec::new();
    for (index, entry) in (0u32..).zip(body.chunks_exact(MFT_ENTRY_SIZE)) {
        let name_field = entry.get(..MFT_NAME_SIZE).unwrap_or_default();
        let kind = le_u32(entry, MFT_NAME_SIZE).unwrap_or_default();
        let attached = entry.get(96).copied().unwrap_or_default();
        if index == 0 {
            if kind != MFT_RESERVED_FIRST || name_field.first() != Some(&0) {
                return Err(ManifestError::NoReservedEntry);
            }
        } else {
            let name = name_field
                .iter()
                .position(|&b| b == 0)
                .and_then(|end| name_field.get(..end))
                .filter(|_| name_field.get(MFT_NAME_MAX) == Some(&0))
                .filter(|name| DeviceName::is_valid(name))
                .ok_or(ManifestError::DeviceName(index))?;
            let kind = match kind {
                MFT_DEV_BLOCK_BASIC => DeviceKind::BlockBasic,
                MFT_DEV_NET_BASIC => DeviceKind::NetBasic,
                value => return Err(ManifestError::DeviceType { index, value }),
            };
            let name = DeviceName(String::from_utf8_lossy(name).into_owned());
            devices.push(Device { name, kind });
        }
        if attached != 0 {
            return Err(ManifestError::EntryAttached(index));
        }
    }
    Ok(Manifest { devices })
}

/// Reads exactly `len` octets at `offset`; `len` is always bounded by a constant above.
fn read_at<R: Read + Seek>(
    image: &mut R,
    offset: u64,
    len: usize,
    what: &'static str,
) -> Result<Vec<u8>, ManifestError> {
    image.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len];
    match image.read_exact(&mut buf) {
        Ok(()) => Ok(buf),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ManifestError::Truncated(what)),
        Err(e) => Err(ManifestError::Io(e)),
    }
}

/// Reads the first `len` octets, or the whole image if it is shorter.
fn read_up_to<R: Read + Seek>(image: &mut R, len: usize) -> Result<Vec<u8>, ManifestError> {
    image.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::with_capacity(len);
    image.take(u64_of(len)).read_to_end(&mut buf)?;
    Ok(buf)
}

fn add(offset: u64, delta: usize) -> Result<u64, ManifestError> {
    offset
        .checked_add(u64_of(delta))
        .ok_or(ManifestError::Truncated("note"))
}

fn le_u16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(bytes.try_into().ok()?))
}

fn le_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn le_u64(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Lossless on every target petrel runs on (usize is 64 bits); saturates otherwise.
fn u64_of(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// For sizes bounded by the constants above; saturates otherwise.
fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// For small constants; saturates otherwise.
fn u16_of(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// Lossless on 32- and 64-bit targets; saturates otherwise.
fn usize_of(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_built_image() {
        let image = build_test_image(
            Target::Hvt,
            2,
            &[Device::net("service"), Device::block("storage")],
        );
        let read = read_image_bytes(&image).unwrap();
        assert_eq!(
            read,
            Solo5Image {
                machine: Machine::X86_64,
                abi: Abi {
                    target: Target::Hvt,
                    version: 2
                },
                manifest: Manifest::new(vec![Device::net("service"), Device::block("storage")]),
            }
        );
    }

    #[test]
    fn layout_matches_solo5_sizes() {
        // 64-bit struct mft_entry: name[68], type at 68, union at 72 (16), union at 88 (8),
        // bool at 96, padded to 104; MFT1_NOTE_MAX_SIZE = 12 + 64 * 104.
        assert_eq!(MFT_ENTRY_SIZE, 104);
        assert_eq!(MFT_DESC_MAX_SIZE, 6668);
        assert_eq!(ABI_NOTE_TYPE.to_le_bytes(), *b"ABI1");
        assert_eq!(MFT_NOTE_TYPE.to_le_bytes(), *b"MFT1");
        let image = build_test_image(Target::Spt, 2, &[]);
        assert_eq!(image.len(), 216 + 20 + 4 + 8 + 104);
    }

    #[test]
    fn device_names() {
        assert!(DeviceName::parse("service0").is_ok());
        assert!(DeviceName::parse(&"a".repeat(67)).is_ok());
        for bad in ["", "a-b", "a.b", "a b", "é", &"a".repeat(68)] {
            assert_eq!(
                DeviceName::parse(bad).unwrap_err().to_string(),
                format!(
                    "invalid solo5 device name {bad:?} (1 to 67 ASCII alphanumeric characters)"
                )
            );
        }
    }

    #[test]
    fn target_names_and_tenders() {
        assert_eq!(Target::Hvt.tender_name().unwrap(), "solo5-hvt");
        assert_eq!(Target::Spt.tender_name().unwrap(), "solo5-spt");
        assert_eq!(
            Target::Virtio.tender_name().unwrap_err().to_string(),
            "unsupported solo5 target virtio"
        );
        assert_eq!(
            Target::from_value(9).tender_name().unwrap_err().to_string(),
            "unsupported solo5 target 9"
        );
        for v in 1..=7 {
            assert_eq!(Target::from_value(v).value(), v);
        }
    }
}
