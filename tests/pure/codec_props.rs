//! Property tests of the albatross codec: round trips of every top-level structure,
//! totality on arbitrary and mutated input.

use std::collections::BTreeSet;

use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;

use petrel::codec::*;
use petrel::name::{Label, Name, Path};
use petrel::policy::Policy;

// ---------------------------------------------------------------------------------------
// Strategies

/// An `Int`: albatross's 63-bit range, biased towards small values.
fn int() -> impl Strategy<Value = i64> {
    prop_oneof![-300i64..300, -(1i64 << 62)..(1i64 << 62)]
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,10}"
}

fn label() -> impl Strategy<Value = Label> {
    "[a-z0-9][a-z0-9.-]{0,6}".prop_map(|s| Label::parse(&s).unwrap())
}

fn name() -> impl Strategy<Value = Name> {
    (vec(label(), 0..3), option::of(label())).prop_map(|(path, label)| {
        let path = Path::from_labels(path);
        match label {
            Some(l) => Name::labelled(path, l),
            None => Name::of_path(path),
        }
    })
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (Timestamp::MIN.millis()..=Timestamp::MAX.millis())
        .prop_map(|ms| Timestamp::from_millis(ms).unwrap())
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn int_set() -> impl Strategy<Value = BTreeSet<i64>> {
    btree_set(int(), 0..4)
}

fn policy() -> BoxedStrategy<Policy> {
    (
        int_set(),
        int(),
        int(),
        option::of(int()),
        btree_set(text(), 0..3),
    )
        .prop_map(|(cpuids, unikernels, memory, block, bridges)| Policy {
            unikernels,
            cpuids,
            memory,
            block,
            bridges,
        })
        .boxed()
}

fn typ() -> impl Strategy<Value = Typ> {
    prop_oneof![Just(Typ::Solo5), Just(Typ::Bhyve)]
}

fn fail_behaviour() -> impl Strategy<Value = FailBehaviour> {
    prop_oneof![
        Just(FailBehaviour::Quit),
        int_set().prop_map(FailBehaviour::Restart)
    ]
}

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr::new)
}

/// `SET OF` elements in the order the encoder writes them (sorted by encoding).
fn der_sorted<T: Der>(mut items: Vec<T>) -> Vec<T> {
    items.sort_by_cached_key(Der::to_der);
    items
}

fn block_specs() -> BoxedStrategy<Vec<BlockDeviceSpec>> {
    vec(
        (text(), option::of(text()), option::of(int())).prop_map(
            |(name, device_name, sector_size)| BlockDeviceSpec {
                name,
                device_name,
                sector_size,
            },
        ),
        0..3,
    )
    .prop_map(der_sorted)
    .boxed()
}

fn net_specs() -> BoxedStrategy<Vec<NetDeviceSpec>> {
    vec(
        (text(), option::of(text()), option::of(mac()))
            .prop_map(|(netif, bridge, mac)| NetDeviceSpec { netif, bridge, mac }),
        0..3,
    )
    .prop_map(der_sorted)
    .boxed()
}

fn arguments() -> impl Strategy<Value = Option<Vec<String>>> {
    option::of(vec(text(), 0..3))
}

fn config() -> BoxedStrategy<UnikernelConfig> {
    (
        (
            typ(),
            any::<bool>(),
            bytes(80),
            option::of(int()),
            any::<bool>(),
        ),
        (
            fail_behaviour(),
            int_set(),
            int(),
            block_specs(),
            net_specs(),
        ),
        (arguments(), int(), option::of(text())),
    )
        .prop_map(
            |(
                (typ, compressed, image, startup, add_name),
                (fail_behaviour, cpuids, memory, blocks, bridges),
                (arguments, cpus, linux_boot_partition),
            )| UnikernelConfig {
                typ,
                compressed,
                image,
                startup,
                add_name,
                fail_behaviour,
                cpuids,
                memory,
                blocks,
                bridges,
                arguments,
                cpus,
                linux_boot_partition,
            },
        )
        .boxed()
}

fn unikernel_arguments() -> BoxedStrategy<UnikernelArguments> {
    (
        (
            fail_behaviour(),
            option::of(int()),
            any::<bool>(),
            int_set(),
            int(),
        ),
        (
            block_specs(),
            net_specs(),
            arguments(),
            int(),
            option::of(text()),
        ),
    )
        .prop_map(
            |(
                (fail_behaviour, startup, add_name, cpuids, memory),
                (blocks, bridges, arguments, cpus, linux_boot_partition),
            )| UnikernelArguments {
                fail_behaviour,
                startup,
                add_name,
                cpuids,
                memory,
                blocks,
                bridges,
                arguments,
                cpus,
                linux_boot_partition,
            },
        )
        .boxed()
}

fn restart_args() -> BoxedStrategy<RestartArgs> {
    prop_oneof![
        Just(RestartArgs::NoArguments),
        unikernel_arguments().prop_map(RestartArgs::Arguments)
    ]
    .boxed()
}

fn block_info() -> impl Strategy<Value = BlockInfo> {
    (text(), text(), int(), int()).prop_map(|(unikernel_device, host_device, sector_size, size)| {
        BlockInfo {
            unikernel_device,
            host_device,
            sector_size,
            size,
        }
    })
}

fn net_info() -> impl Strategy<Value = NetInfo> {
    (text(), text(), mac()).prop_map(|(unikernel_device, host_device, mac)| NetInfo {
        unikernel_device,
        host_device,
        mac,
    })
}

fn unikernel_info() -> BoxedStrategy<UnikernelInfo> {
    (
        (
            typ(),
            option::of(int()),
            fail_behaviour(),
            int_set(),
            int(),
            bytes(40),
        ),
        (
            vec(block_info(), 0..3).prop_map(der_sorted),
            vec(net_info(), 0..3).prop_map(der_sorted),
            arguments(),
            timestamp(),
            int(),
            option::of(text()),
        ),
    )
        .prop_map(
            |(
                (typ, startup, fail_behaviour, cpuids, memory, digest),
                (blocks, bridges, arguments, started, cpus, linux_boot_partition),
            )| UnikernelInfo {
                typ,
                startup,
                fail_behaviour,
                cpuids,
                memory,
                digest,
                blocks,
                bridges,
                arguments,
                started,
                cpus,
                linux_boot_partition,
            },
        )
        .boxed()
}

/// Old-format infos: a current info with exactly one CPU id, converted.
fn single_cpu_info() -> BoxedStrategy<UnikernelInfo> {
    (unikernel_info(), int())
        .prop_map(|(info, cpu)| UnikernelInfo {
            cpuids: BTreeSet::from([cpu]),
            ..info
        })
        .boxed()
}

fn timeval() -> impl Strategy<Value = Timeval> {
    (any::<i64>(), int()).prop_map(|(seconds, microseconds)| Timeval {
        seconds,
        microseconds,
    })
}

fn stats_data() -> BoxedStrategy<StatsData> {
    let rusage = (timeval(), timeval(), prop::array::uniform14(any::<i64>())).prop_map(
        |(
            utime,
            stime,
            [
                maxrss,
                ixrss,
                idrss,
                isrss,
                minflt,
                majflt,
                nswap,
                inblock,
                outblock,
                msgsnd,
                msgrcv,
                nsignals,
                nvcsw,
                nivcsw,
            ],
        )| RUsage {
            utime,
            stime,
            maxrss,
            ixrss,
            idrss,
            isrss,
            minflt,
            majflt,
            nswap,
            inblock,
            outblock,
            msgsnd,
            msgrcv,
            nsignals,
            nvcsw,
            nivcsw,
        },
    );
    let ifdata = (
        text(),
        prop::array::uniform5(any::<i32>()),
        prop::array::uniform12(any::<i64>()),
    )
        .prop_map(
            |(
                bridge,
                [flags, send_length, max_send_length, send_drops, mtu],
                [
                    baudrate,
                    input_packets,
                    input_errors,
                    output_packets,
                    output_errors,
                    collisions,
                    input_bytes,
                    output_bytes,
                    input_mcast,
                    output_mcast,
                    input_dropped,
                    output_dropped,
                ],
            )| IfData {
                bridge,
                flags,
                send_length,
                max_send_length,
                send_drops,
                mtu,
                baudrate,
                input_packets,
                input_errors,
                output_packets,
                output_errors,
                collisions,
                input_bytes,
                output_bytes,
                input_mcast,
                output_mcast,
                input_dropped,
                output_dropped,
            },
        );
    let vmm = vec(
        (text(), any::<i64>()).prop_map(|(key, value)| VmmStat { key, value }),
        0..3,
    );
    let kinfo = (prop::array::uniform6(any::<i64>()), int(), timeval()).prop_map(
        |([vsize, rss, tsize, dsize, ssize, runtime], cow, start)| KinfoMem {
            vsize,
            rss,
            tsize,
            dsize,
            ssize,
            runtime,
            cow,
            start,
        },
    );
    (
        rusage,
        vec(ifdata, 0..3),
        option::of(vmm),
        option::of(kinfo),
    )
        .prop_map(|(resource_usage, ifdata, vmm_stats, kinfo_mem)| StatsData {
            resource_usage,
            ifdata,
            vmm_stats,
            kinfo_mem,
        })
        .boxed()
}

fn command() -> BoxedStrategy<Command> {
    let console = prop_oneof![
        int().prop_map(ConsoleCmd::Add),
        timestamp().prop_map(|t| ConsoleCmd::Subscribe(SinceCount::Since(t))),
        int().prop_map(|n| ConsoleCmd::Subscribe(SinceCount::Count(n))),
        Just(ConsoleCmd::ListInactive),
    ]
    .prop_map(Command::Console);
    let stats = prop_oneof![
        (
            text(),
            int(),
            vec(
                (text(), text()).prop_map(|(bridge, tap)| StatsNetwork { bridge, tap }),
                0..3
            )
        )
            .prop_map(|(vmmdev, pid, network)| StatsCmd::Add(StatsAdd {
                vmmdev,
                pid,
                network
            })),
        Just(StatsCmd::Remove),
        Just(StatsCmd::Subscribe),
        Just(StatsCmd::Initial),
    ]
    .prop_map(Command::Statistics);
    let unikernel = prop_oneof![
        Just(UnikernelCmd::Info),
        Just(UnikernelCmd::InfoOld4),
        Just(UnikernelCmd::InfoOld5),
        config().prop_map(UnikernelCmd::Create),
        config().prop_map(UnikernelCmd::ForceCreate),
        restart_args().prop_map(UnikernelCmd::Restart),
        Just(UnikernelCmd::Destroy),
        int().prop_map(UnikernelCmd::Get),
    ]
    .prop_map(Command::Unikernel);
    let policy_cmd = prop_oneof![
        Just(PolicyCmd::Info),
        policy().prop_map(PolicyCmd::Add),
        Just(PolicyCmd::Remove),
    ]
    .prop_map(Command::Policy);
    let block = prop_oneof![
        Just(BlockCmd::Info),
        int().prop_map(BlockCmd::Add),
        Just(BlockCmd::Remove),
        (int(), any::<bool>(), option::of(bytes(40))).prop_map(|(size, compress, data)| {
            BlockCmd::AddOld {
                size,
                compress,
                data,
            }
        }),
        (any::<bool>(), bytes(40)).prop_map(|(compress, data)| BlockCmd::SetOld { compress, data }),
        int().prop_map(BlockCmd::DumpOld),
        int().prop_map(BlockCmd::Dump),
        any::<bool>().prop_map(BlockCmd::Set),
    ]
    .prop_map(Command::Block);
    let revocation = prop_oneof![Just(RevocationCmd::Upload), Just(RevocationCmd::Info)]
        .prop_map(Command::Revocation);
    prop_oneof![console, stats, unikernel, policy_cmd, block, revocation].boxed()
}

fn success() -> BoxedStrategy<Success> {
    prop_oneof![
        Just(Success::Empty),
        text().prop_map(Success::String),
        vec(
            (name(), policy()).prop_map(|(name, policy)| PolicyEntry { name, policy }),
            0..3
        )
        .prop_map(Success::Policies),
        vec(
            (name(), int(), any::<bool>()).prop_map(|(name, size, active)| BlockDevice {
                name,
                size,
                active
            }),
            0..3
        )
        .prop_map(Success::BlockDevices),
        (any::<bool>(), bytes(80))
            .prop_map(|(compressed, image)| Success::UnikernelImage { compressed, image }),
        (any::<bool>(), bytes(80))
            .prop_map(|(compressed, image)| Success::OldBlockDeviceImage { compressed, image }),
        vec((name(), single_cpu_info()), 0..2).prop_map(|infos| Success::OldUnikernelInfo4(
            infos
                .into_iter()
                .map(|(name, info)| InfoEntry {
                    name,
                    info: UnikernelInfoOld4::try_from(&info).unwrap()
                })
                .collect()
        )),
        any::<bool>().prop_map(Success::BlockDeviceImage),
        vec((name(), single_cpu_info()), 0..2).prop_map(|infos| Success::OldUnikernelInfo5(
            infos
                .into_iter()
                .map(|(name, info)| InfoEntry {
                    name,
                    info: UnikernelInfoOld5::try_from(&info).unwrap()
                })
                .collect()
        )),
        vec(name(), 0..3).prop_map(Success::Consoles),
        vec(
            (name(), unikernel_info()).prop_map(|(name, info)| InfoEntry { name, info }),
            0..2
        )
        .prop_map(Success::UnikernelInfo),
    ]
    .boxed()
}

fn data() -> BoxedStrategy<Data> {
    prop_oneof![
        stats_data().prop_map(|s| Data::Statistics(Box::new(s))),
        (timestamp(), text()).prop_map(|(timestamp, line)| Data::Console { timestamp, line }),
        bytes(64).prop_map(|b| Data::Block(BlockData::SomeData(b))),
        Just(Data::Block(BlockData::NoData)),
    ]
    .boxed()
}

fn header() -> impl Strategy<Value = Header> {
    (any::<i64>(), name()).prop_map(|(sequence, name)| Header::new(sequence, name))
}

fn wire_with(payload: impl Strategy<Value = Payload>) -> impl Strategy<Value = Wire> {
    (header(), payload).prop_map(|(header, payload)| Wire::new(header, payload))
}

fn any_wire() -> BoxedStrategy<Wire> {
    wire_with(prop_oneof![
        command().prop_map(Payload::Command),
        success().prop_map(Payload::Success),
        text().prop_map(Payload::Failure),
        data().prop_map(Payload::Data),
    ])
    .boxed()
}

fn state() -> BoxedStrategy<State> {
    (
        btree_map(name(), config(), 0..3),
        btree_map(name(), policy(), 0..3),
    )
        .prop_map(|(unikernels, policies)| State {
            unikernels: unikernels
                .into_iter()
                .map(|(n, c)| TrieEntry::new(n, c))
                .collect(),
            policies: policies
                .into_iter()
                .map(|(n, p)| TrieEntry::new(n, p))
                .collect(),
        })
        .boxed()
}

/// A mutation of a valid encoding.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip bit `bit` of the octet at `at` (modulo the length).
    Flip { at: usize, bit: u8 },
    /// Keep only the first `at` octets (modulo the length).
    Truncate { at: usize },
    /// Append these octets.
    Append(Vec<u8>),
    /// Overwrite the octet at `at` with `value`.
    Set { at: usize, value: u8 },
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    vec(
        prop_oneof![
            (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
            any::<usize>().prop_map(|at| Mutation::Truncate { at }),
            bytes(4).prop_map(Mutation::Append),
            (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        ],
        1..4,
    )
}

fn mutate(mut der: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = der.len().max(1);
        match m {
            Mutation::Flip { at, bit } => {
                if let Some(b) = der.get_mut(at % len) {
                    *b ^= 1 << bit;
                }
            }
            Mutation::Truncate { at } => der.truncate(at % len),
            Mutation::Append(extra) => der.extend_from_slice(extra),
            Mutation::Set { at, value } => {
                if let Some(b) = der.get_mut(at % len) {
                    *b = *value;
                }
            }
        }
    }
    der
}

/// Whatever decodes re-encodes to a fixpoint: encoding the decoded value and decoding
/// and encoding again gives the same octets (the first encoding normalises order of
/// `SET OF`, lossy strings, legacy tags).
fn assert_normalises<T: Der + std::fmt::Debug + PartialEq>(der: &[u8]) {
    if let Ok(value) = T::from_der(der) {
        let once = value.to_der();
        let again = T::from_der(&once).expect("an encoding decodes");
        assert_eq!(again.to_der(), once);
    }
}

// ---------------------------------------------------------------------------------------
// Properties

proptest! {
    #[test]
    fn extension_round_trips(cmd in command()) {
        let der = encode_extension(&cmd);
        prop_assert_eq!(decode_extension(&der).unwrap().command, cmd.clone());
        prop_assert_eq!(Command::from_der(&cmd.to_der()).unwrap(), cmd);
    }

    #[test]
    fn wire_with_command_round_trips(w in wire_with(command().prop_map(Payload::Command))) {
        prop_assert_eq!(decode_wire(&encode_wire(&w)).unwrap(), w);
    }

    #[test]
    fn wire_with_success_round_trips(w in wire_with(success().prop_map(Payload::Success))) {
        prop_assert_eq!(decode_wire(&encode_wire(&w)).unwrap(), w);
    }

    #[test]
    fn wire_with_failure_round_trips(w in wire_with(text().prop_map(Payload::Failure))) {
        prop_assert_eq!(decode_wire(&encode_wire(&w)).unwrap(), w);
    }

    #[test]
    fn wire_with_data_round_trips(w in wire_with(data().prop_map(Payload::Data))) {
        prop_assert_eq!(decode_wire(&encode_wire(&w)).unwrap(), w);
    }

    #[test]
    fn config_round_trips(c in config()) {
        prop_assert_eq!(UnikernelConfig::from_der(&c.to_der()).unwrap(), c);
    }

    #[test]
    fn restart_args_round_trip(a in restart_args()) {
        prop_assert_eq!(RestartArgs::from_der(&a.to_der()).unwrap(), a);
    }

    #[test]
    fn policy_round_trips(p in policy()) {
        prop_assert_eq!(Policy::from_der(&p.to_der()).unwrap(), p);
    }

    #[test]
    fn unikernel_info_round_trips(i in unikernel_info()) {
        prop_assert_eq!(UnikernelInfo::from_der(&i.to_der()).unwrap(), i);
    }

    #[test]
    fn old_unikernel_infos_round_trip(i in single_cpu_info()) {
        let old5 = UnikernelInfoOld5::try_from(&i).unwrap();
        prop_assert_eq!(UnikernelInfoOld5::from_der(&old5.to_der()).unwrap(), old5);
        let old4 = UnikernelInfoOld4::try_from(&i).unwrap();
        prop_assert_eq!(UnikernelInfoOld4::from_der(&old4.to_der()).unwrap(), old4);
    }

    #[test]
    fn block_info_round_trips(b in block_info(), n in net_info()) {
        prop_assert_eq!(BlockInfo::from_der(&b.to_der()).unwrap(), b);
        prop_assert_eq!(NetInfo::from_der(&n.to_der()).unwrap(), n);
    }

    #[test]
    fn stats_data_round_trips(s in stats_data()) {
        prop_assert_eq!(StatsData::from_der(&s.to_der()).unwrap(), s);
    }

    #[test]
    fn state_round_trips(s in state()) {
        prop_assert_eq!(decode_state(&encode_state(&s)).unwrap(), s);
    }

    #[test]
    fn timestamps_round_trip(t in timestamp(), n in name()) {
        let w = Wire::new(Header::new(0, n), Payload::Data(Data::Console { timestamp: t, line: String::new() }));
        prop_assert_eq!(decode_wire(&encode_wire(&w)).unwrap(), w);
    }

    #[test]
    fn frame_headers_round_trip(len in 0usize..=MAX_FRAMEABLE) {
        let expected = if len == 0 { FrameLength::EndOfStream } else { FrameLength::Body(len) };
        prop_assert_eq!(decode_frame_header(frame_header(len).unwrap(), MAX_FRAMEABLE), Ok(expected));
    }

    #[test]
    fn arbitrary_bytes_never_panic(der in bytes(512)) {
        let _ = decode_extension(&der);
        let _ = decode_wire(&der);
        let _ = decode_state(&der);
        assert_normalises::<Command>(&der);
        assert_normalises::<UnikernelConfig>(&der);
        assert_normalises::<UnikernelArguments>(&der);
        assert_normalises::<RestartArgs>(&der);
        assert_normalises::<Policy>(&der);
        assert_normalises::<UnikernelInfo>(&der);
        assert_normalises::<UnikernelInfoOld4>(&der);
        assert_normalises::<UnikernelInfoOld5>(&der);
        assert_normalises::<BlockInfo>(&der);
        assert_normalises::<NetInfo>(&der);
        assert_normalises::<BlockDeviceSpec>(&der);
        assert_normalises::<NetDeviceSpec>(&der);
        assert_normalises::<FailBehaviour>(&der);
        assert_normalises::<StatsData>(&der);
        assert_normalises::<Header>(&der);
        let hdr: [u8; 4] = der.get(..4).and_then(|h| h.try_into().ok()).unwrap_or_default();
        let _ = decode_frame_header(hdr, 4096);
    }

    #[test]
    fn mutated_extensions_never_panic(cmd in command(), m in mutations()) {
        let der = mutate(encode_extension(&cmd), &m);
        assert_normalises::<Extension>(&der);
    }

    #[test]
    fn mutated_wires_never_panic(w in any_wire(), m in mutations()) {
        let der = mutate(encode_wire(&w), &m);
        assert_normalises::<Wire>(&der);
    }

    #[test]
    fn mutated_states_never_panic(s in state(), m in mutations()) {
        let der = mutate(encode_state(&s), &m);
        assert_normalises::<State>(&der);
    }
}
