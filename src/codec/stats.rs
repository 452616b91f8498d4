//! Statistics data (spec §6.2): resource usage, interface counters, vmm and kinfo_mem
//! statistics.

use serde::Serialize;

use crate::codec::der::{Reader, Result, SEQUENCE, Writer, context};

/// ```text
/// StatsData ::= SEQUENCE {
///     resourceUsage  RUsage,
///     ifdata         SEQUENCE OF IfData,
///     vmmStats   [0] SEQUENCE OF SEQUENCE { key UTF8String, value Int64 } OPTIONAL,
///     kinfoMem   [1] IMPLICIT KinfoMem OPTIONAL }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsData {
    /// getrusage(2) of the tender.
    pub resource_usage: RUsage,
    /// Counters of each network interface.
    pub ifdata: Vec<IfData>,
    /// bhyve/vmm statistics (`[0]`, EXPLICIT).
    pub vmm_stats: Option<Vec<VmmStat>>,
    /// FreeBSD kinfo_proc memory (`[1]`, IMPLICIT: the SEQUENCE tag is replaced by `A1`).
    pub kinfo_mem: Option<KinfoMem>,
}

impl StatsData {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            Ok(Self {
                resource_usage: RUsage::decode(r)?,
                ifdata: r.list(SEQUENCE, IfData::decode)?,
                vmm_stats: r.optional_explicit(0, |r| r.list(SEQUENCE, VmmStat::decode))?,
                kinfo_mem: r.optional(context(1), |r| {
                    r.constructed(context(1), KinfoMem::decode_fields)
                })?,
            })
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            self.resource_usage.encode(w);
            w.sequence_of(&self.ifdata, |w, i| i.encode(w));
            if let Some(stats) = &self.vmm_stats {
                w.explicit(0, |w| w.sequence_of(stats, |w, s| s.encode(w)));
            }
            if let Some(k) = &self.kinfo_mem {
                w.constructed(context(1), |w| k.encode_fields(w));
            }
        });
    }
}

/// One `SEQUENCE { key UTF8String, value Int64 }` of `vmmStats`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct VmmStat {
    /// Counter name.
    pub key: String,
    /// Counter value.
    pub value: i64,
}

impl VmmStat {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            Ok(Self {
                key: r.utf8()?,
                value: r.int64()?,
            })
        })
    }

    fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            w.utf8(&self.key);
            w.int64(self.value);
        });
    }
}

/// ```text
/// Timeval ::= SEQUENCE { seconds Int64, microseconds Int }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Timeval {
    /// Seconds.
    pub seconds: i64,
    /// Microseconds.
    pub microseconds: i64,
}

impl Timeval {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            Ok(Self {
                seconds: r.int64()?,
                microseconds: r.int()?,
            })
        })
    }

    fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            w.int64(self.seconds);
            w.int(self.microseconds);
        });
    }
}

/// ```text
/// RUsage ::= SEQUENCE {
///     utime Timeval, stime Timeval,
///     maxrss Int64, ixrss Int64, idrss Int64, isrss Int64, minflt Int64,
///     majflt Int64, nswap Int64, inblock Int64, outblock Int64, msgsnd Int64,
///     msgrcv Int64, nsignals Int64, nvcsw Int64, nivcsw Int64 }
/// ```
/// The fields are getrusage(2)'s `ru_*` members of the tender process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct RUsage {
    /// User CPU time.
    pub utime: Timeval,
    /// System CPU time.
    pub stime: Timeval,
    /// Maximum resident set size.
    pub maxrss: i64,
    /// Integral shared memory size.
    pub ixrss: i64,
    /// Integral unshared data size.
    pub idrss: i64,
    /// Integral unshared stack size.
    pub isrss: i64,
    /// Page reclaims (soft faults).
    pub minflt: i64,
    /// Page faults (hard faults).
    pub majflt: i64,
    /// Swaps.
    pub nswap: i64,
    /// Block input operations.
    pub inblock: i64,
    /// Block output operations.
    pub outblock: i64,
    /// IPC messages sent.
    pub msgsnd: i64,
    /// IPC messages received.
    pub msgrcv: i64,
    /// Signals received.
    pub nsignals: i64,
    /// Voluntary context switches.
    pub nvcsw: i64,
    /// Involuntary context switches.
    pub nivcsw: i64,
}

impl RUsage {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            Ok(Self {
                utime: Timeval::decode(r)?,
                stime: Timeval::decode(r)?,
                maxrss: r.int64()?,
                ixrss: r.int64()?,
                idrss: r.int64()?,
                isrss: r.int64()?,
                minflt: r.int64()?,
                majflt: r.int64()?,
                nswap: r.int64()?,
                inblock: r.int64()?,
                outblock: r.int64()?,
                msgsnd: r.int64()?,
                msgrcv: r.int64()?,
                nsignals: r.int64()?,
                nvcsw: r.int64()?,
                nivcsw: r.int64()?,
            })
        })
    }

    fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            self.utime.encode(w);
            self.stime.encode(w);
            for v in [
                self.maxrss,
                self.ixrss,
                self.idrss,
                self.isrss,
                self.minflt,
                self.majflt,
                self.nswap,
                self.inblock,
                self.outblock,
                self.msgsnd,
                self.msgrcv,
                self.nsignals,
                self.nvcsw,
                self.nivcsw,
            ] {
                w.int64(v);
            }
        });
    }
}

/// ```text
/// KinfoMem ::= SEQUENCE {
///     vsize Int64, rss Int64, tsize Int64, dsize Int64, ssize Int64,
///     runtime Int64, cow Int, start Timeval }
/// ```
/// The fields are FreeBSD `kinfo_proc`'s `ki_*` members of the tender process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct KinfoMem {
    /// Virtual memory size.
    pub vsize: i64,
    /// Resident set size.
    pub rss: i64,
    /// Text size.
    pub tsize: i64,
    /// Data size.
    pub dsize: i64,
    /// Stack size.
    pub ssize: i64,
    /// Run time.
    pub runtime: i64,
    /// Copy-on-write faults.
    pub cow: i64,
    /// Process start time.
    pub start: Timeval,
}

impl KinfoMem {
    /// The fields, without the SEQUENCE (the IMPLICIT `[1]` replaces its tag).
    fn decode_fields(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            vsize: r.int64()?,
            rss: r.int64()?,
            tsize: r.int64()?,
            dsize: r.int64()?,
            ssize: r.int64()?,
            runtime: r.int64()?,
            cow: r.int()?,
            start: Timeval::decode(r)?,
        })
    }

    fn encode_fields(&self, w: &mut Writer) {
        for v in [
            self.vsize,
            self.rss,
            self.tsize,
            self.dsize,
            self.ssize,
            self.runtime,
        ] {
            w.int64(v);
        }
        w.int(self.cow);
        self.start.encode(w);
    }
}

/// ```text
/// IfData ::= SEQUENCE {
///     bridge UTF8String, flags Int32, sendLength Int32, maxSendLength Int32,
///     sendDrops Int32, mtu Int32, baudrate Int64, inputPackets Int64,
///     inputErrors Int64, outputPackets Int64, outputErrors Int64,
///     collisions Int64, inputBytes Int64, outputBytes Int64, inputMcast Int64,
///     outputMcast Int64, inputDropped Int64, outputDropped Int64 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IfData {
    /// The unikernel's network device name (albatross calls it `bridge`).
    pub bridge: String,
    /// Interface flags.
    pub flags: i32,
    /// Send queue length.
    pub send_length: i32,
    /// Send queue maximum length.
    pub max_send_length: i32,
    /// Send queue drops.
    pub send_drops: i32,
    /// Maximum transmission unit.
    pub mtu: i32,
    /// Line speed.
    pub baudrate: i64,
    /// Packets received.
    pub input_packets: i64,
    /// Input errors.
    pub input_errors: i64,
    /// Packets sent.
    pub output_packets: i64,
    /// Output errors.
    pub output_errors: i64,
    /// Collisions.
    pub collisions: i64,
    /// Octets received.
    pub input_bytes: i64,
    /// Octets sent.
    pub output_bytes: i64,
    /// Multicast packets received.
    pub input_mcast: i64,
    /// Multicast packets sent.
    pub output_mcast: i64,
    /// Packets dropped on input.
    pub input_dropped: i64,
    /// Packets dropped on output.
    pub output_dropped: i64,
}

impl IfData {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            Ok(Self {
                bridge: r.utf8()?,
                flags: r.int32()?,
                send_length: r.int32()?,
                max_send_length: r.int32()?,
                send_drops: r.int32()?,
                mtu: r.int32()?,
                baudrate: r.int64()?,
                input_packets: r.int64()?,
                input_errors: r.int64()?,
                output_packets: r.int64()?,
                output_errors: r.int64()?,
                collisions: r.int64()?,
                input_bytes: r.int64()?,
                output_bytes: r.int64()?,
                input_mcast: r.int64()?,
                output_mcast: r.int64()?,
                input_dropped: r.int64()?,
                output_dropped: r.int64()?,
            })
        })
    }

    fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            w.utf8(&self.bridge);
            for v in [
                self.flags,
                self.send_length,
                self.max_send_length,
                self.send_drops,
                self.mtu,
            ] {
                w.int32(v);
            }
            for v in [
                self.baudrate,
                self.input_packets,
                self.input_errors,
                self.output_packets,
                self.output_errors,
                self.collisions,
                self.input_bytes,
                self.output_bytes,
                self.input_mcast,
                self.output_mcast,
                self.input_dropped,
                self.output_dropped,
            ] {
                w.int64(v);
            }
        });
    }
}
