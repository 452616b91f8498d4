//! The albatross AV5 codec against vectors: the worked examples of `spec/wire.md` §12
//! (upstream albatross vectors in `tests/codec/albatross/`, hand-made ones in
//! `tests/codec/constructed/`), legacy formats, leniencies and every rejection rule.

use std::collections::BTreeSet;
use std::path::PathBuf;

use petrel::codec::*;
use petrel::name::Name;
use petrel::policy::Policy;

fn vector(path: &str) -> Vec<u8> {
    let file: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "codec", path]
        .iter()
        .collect();
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn set(xs: &[i64]) -> BTreeSet<i64> {
    xs.iter().copied().collect()
}

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

fn policy(
    cpuids: &[i64],
    unikernels: i64,
    memory: i64,
    block: Option<i64>,
    bridges: &[&str],
) -> Policy {
    Policy {
        unikernels,
        cpuids: set(cpuids),
        memory,
        block,
        bridges: bridges.iter().map(|b| b.to_string()).collect(),
    }
}

/// The policy of example 9.
fn user_policy() -> Policy {
    policy(&[0, 1], 16, 1024, None, &["service"])
}

/// Decodes a wire vector, checks it re-encodes to the same octets, returns it.
fn wire(path: &str) -> Wire {
    let der = vector(path);
    let w = decode_wire(&der).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(encode_wire(&w), der, "{path} re-encodes identically");
    w
}

/// Decodes an extension vector, checks it re-encodes to the same octets, returns its
/// command.
fn extension(path: &str) -> Command {
    let der = vector(path);
    let e = decode_extension(&der).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        encode_extension(&e.command),
        der,
        "{path} re-encodes identically"
    );
    e.command
}

fn state(path: &str) -> State {
    let der = vector(path);
    decode_state(&der).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn hdr(sequence: i64, n: &str) -> Header {
    Header::new(sequence, name(n))
}

// ---------------------------------------------------------------------------------------
// §12 worked examples

#[test]
fn example_1_console_subscribe_wire() {
    let w = wire("albatross/wire.console-subscribe-count-20.der");
    assert_eq!(w.header, hdr(0, ":foo"));
    assert_eq!(
        w.payload,
        Payload::Command(Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(
            20
        ))))
    );
    let w = wire("albatross/wire.console-subscribe-count-20-foo.bar.der");
    assert_eq!(w.header.name.text(), ":foo.bar");
    assert_eq!(w.header.sequence, 0);
    assert_eq!(
        w.payload,
        Payload::Command(Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(
            20
        ))))
    );
}

#[test]
fn example_2_console_subscribe_extension() {
    assert_eq!(
        extension("albatross/extension.console-subscribe-count-20.der"),
        Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(20)))
    );
}

#[test]
fn example_3_policy_extension_of_arc() {
    assert_eq!(
        extension("albatross/extension.policy-arc.der"),
        Command::Policy(PolicyCmd::Add(policy(&[0], 1, 512, None, &[])))
    );
}

#[test]
fn example_4_policy_info() {
    let w = wire("constructed/wire.policy-info-foo.der");
    assert_eq!(w.header, hdr(0, "foo:"));
    assert!(w.header.name.is_path());
    assert_eq!(
        w.payload,
        Payload::Command(Command::Policy(PolicyCmd::Info))
    );
}

#[test]
fn examples_5_and_6_unikernel_info_and_destroy() {
    let w = wire("constructed/wire.unikernel-info-hello.der");
    assert_eq!(w.header, hdr(0, ":hello"));
    assert_eq!(
        w.payload,
        Payload::Command(Command::Unikernel(UnikernelCmd::Info))
    );
    let w = wire("constructed/wire.unikernel-destroy-hello.der");
    assert_eq!(w.header, hdr(0, ":hello"));
    assert_eq!(
        w.payload,
        Payload::Command(Command::Unikernel(UnikernelCmd::Destroy))
    );
}

#[test]
fn examples_7_and_8_failure_and_success_string() {
    let w = wire("constructed/wire.failure-destroy-not-found.der");
    assert_eq!(w.header, hdr(0, ":hello"));
    assert_eq!(w.payload, Payload::failure("destroy: not found"));
    let w = wire("constructed/wire.success-string-destroyed-unikernel.der");
    assert_eq!(w.payload, Payload::success_string("destroyed unikernel"));
    assert_eq!(
        w,
        Wire::reply(
            &hdr(0, ":hello"),
            Payload::Success(Success::String("destroyed unikernel".into()))
        )
    );
}

#[test]
fn example_9_policy_add() {
    let w = wire("constructed/wire.policy-add-user-sequence-1.der");
    assert_eq!(w.header, hdr(1, "user:"));
    assert_eq!(
        w.payload,
        Payload::Command(Command::Policy(PolicyCmd::Add(user_policy())))
    );
    assert_eq!(
        extension("constructed/extension.policy-add-user.der"),
        Command::Policy(PolicyCmd::Add(user_policy()))
    );
}

#[test]
fn example_10_create_with_streamed_image() {
    let expected = UnikernelConfig {
        typ: Typ::Solo5,
        compressed: false,
        image: Vec::new(),
        startup: None,
        add_name: true,
        fail_behaviour: FailBehaviour::Quit,
        cpuids: set(&[0]),
        memory: 32,
        blocks: Vec::new(),
        bridges: vec![NetDeviceSpec::named("service".into())],
        arguments: None,
        cpus: 1,
        linux_boot_partition: None,
    };
    assert_eq!(
        extension("constructed/extension.create-streamed-image.der"),
        Command::Unikernel(UnikernelCmd::Create(expected))
    );
}

#[test]
fn example_11_streamed_data() {
    let w = wire("constructed/wire.data-block-some-data.der");
    assert_eq!(w.header, hdr(0, "foo:disk"));
    assert_eq!(
        w.payload,
        Payload::Data(Data::Block(BlockData::SomeData(vec![0, 1, 2, 3])))
    );
    let w = wire("constructed/wire.data-block-no-data.der");
    assert_eq!(w.header, hdr(0, "foo:disk"));
    assert_eq!(w.payload, Payload::Data(Data::Block(BlockData::NoData)));
    let w = wire("constructed/wire.data-console-hello-world.der");
    assert_eq!(w.header, hdr(0, ":hello"));
    assert_eq!(
        w.payload,
        Payload::Data(Data::Console {
            timestamp: Timestamp::from_unix_seconds(1_755_867_883).unwrap(),
            line: "hello world".into(),
        })
    );
}

#[test]
fn example_12_policies_and_empty_success() {
    let w = wire("constructed/wire.success-policies-user.der");
    assert_eq!(w.header, hdr(0, "user:"));
    assert_eq!(
        w.payload,
        Payload::Success(Success::Policies(vec![PolicyEntry {
            name: Name::root(),
            policy: user_policy(),
        }]))
    );
    let w = wire("constructed/wire.success-empty-root.der");
    assert_eq!(w.header, hdr(0, ":"));
    assert_eq!(w.payload, Payload::Success(Success::Empty));
    // §7.1: the 26-octet message is framed as 00 00 00 1A.
    let der = vector("constructed/wire.success-empty-root.der");
    let framed = frame(&der).unwrap();
    assert_eq!(framed.get(..5), Some(&[0x00, 0x00, 0x00, 0x1A, 0x30][..]));
    assert_eq!(
        decode_frame_header([0, 0, 0, 0x1A], 1 << 20),
        Ok(FrameLength::Body(26))
    );
}

fn hello_config() -> UnikernelConfig {
    UnikernelConfig {
        typ: Typ::Solo5,
        compressed: false,
        image: vec![0x7F, 0x45, 0x4C, 0x46],
        startup: None,
        add_name: true,
        fail_behaviour: FailBehaviour::Restart(BTreeSet::new()),
        cpuids: set(&[1]),
        memory: 64,
        blocks: vec![BlockDeviceSpec {
            name: "storage".into(),
            device_name: Some("hello-data".into()),
            sector_size: None,
        }],
        bridges: vec![NetDeviceSpec::named("service".into())],
        arguments: Some(vec!["--hello=hi".into()]),
        cpus: 1,
        linux_boot_partition: None,
    }
}

#[test]
fn example_13_state_file_current_format() {
    let der = vector("constructed/state.v6-hello.der");
    let s = decode_state(&der).unwrap();
    let root = Policy {
        unikernels: (1 << 62) - 1,
        cpuids: set(&[0, 1, 2, 3]),
        memory: 7936,
        block: Some(100_000),
        bridges: ["br0", "service"].iter().map(|b| b.to_string()).collect(),
    };
    assert_eq!(
        s,
        State {
            unikernels: vec![TrieEntry::new(name(":hello"), hello_config())],
            policies: vec![
                TrieEntry::new(Name::root(), root),
                TrieEntry::new(name("user:"), user_policy()),
            ],
        }
    );
    assert_eq!(encode_state(&s), der);
}

#[test]
fn example_14_state_file_v3_first_entry() {
    let s = state("albatross/state.v3-first-entry.der");
    assert!(s.policies.is_empty());
    assert_eq!(
        s.unikernels,
        vec![TrieEntry::new(
            name("bar:hello"),
            UnikernelConfig {
                typ: Typ::Solo5,
                compressed: false,
                image: Vec::new(),
                startup: None,
                add_name: true,
                fail_behaviour: FailBehaviour::Quit,
                cpuids: set(&[2]),
                memory: 10,
                blocks: Vec::new(),
                bridges: vec![NetDeviceSpec {
                    netif: "service".into(),
                    bridge: Some("bridge-interface".into()),
                    mac: Some(MacAddr::new([0x00, 0xDE, 0xAD, 0xBE, 0xEF, 0x00])),
                }],
                arguments: None,
                cpus: 1,
                linux_boot_partition: None,
            },
        )]
    );
    // Written back in the current format [6].
    let der = encode_state(&s);
    assert_eq!(der.first(), Some(&0xA6));
    assert_eq!(decode_state(&der).unwrap(), s);
}

#[test]
fn revocation_commands() {
    assert_eq!(
        extension("constructed/extension.revocation-upload.der"),
        Command::Revocation(RevocationCmd::Upload)
    );
    assert_eq!(
        extension("constructed/extension.revocation-info.der"),
        Command::Revocation(RevocationCmd::Info)
    );
    assert_eq!(
        encode_extension(&Command::Revocation(RevocationCmd::Upload)),
        hex("30 09 02 01 05 A6 04 A0 02 05 00")
    );
}

// ---------------------------------------------------------------------------------------
// Further hand-made vectors: unikernel information, statistics

#[test]
fn unikernel_info_reply() {
    let w = wire("constructed/wire.success-unikernel-info.der");
    let info = UnikernelInfo {
        typ: Typ::Solo5,
        startup: Some(50),
        fail_behaviour: FailBehaviour::Quit,
        cpuids: set(&[0]),
        memory: 32,
        digest: (0..32).collect(),
        blocks: vec![BlockInfo {
            unikernel_device: "storage".into(),
            host_device: "hello-data".into(),
            sector_size: 512,
            size: 100,
        }],
        bridges: vec![NetInfo {
            unikernel_device: "service".into(),
            host_device: "service".into(),
            mac: MacAddr::new([0x00, 0xDE, 0xAD, 0xBE, 0xEF, 0x01]),
        }],
        arguments: None,
        started: Timestamp::from_unix_seconds(1_755_867_883).unwrap(),
        cpus: 1,
        linux_boot_partition: None,
    };
    assert_eq!(
        w.payload,
        Payload::Success(Success::UnikernelInfo(vec![InfoEntry {
            name: name(":hello"),
            info: info.clone(),
        }]))
    );

    // The old formats carry one CPU id (Note W7).
    let old5 = UnikernelInfoOld5::try_from(&info).unwrap();
    assert_eq!(old5.cpuid, 0);
    assert_eq!(UnikernelInfo::from(old5.clone()), info);
    let old4 = UnikernelInfoOld4::try_from(&info).unwrap();
    assert_eq!(
        UnikernelInfo::from(old4.clone()),
        UnikernelInfo {
            startup: None,
            ..info.clone()
        }
    );
    let two = UnikernelInfo {
        cpuids: set(&[0, 1]),
        ..info.clone()
    };
    assert_eq!(
        UnikernelInfoOld5::try_from(&two).unwrap_err().to_string(),
        "expected a single CPUid, got 2"
    );
    assert_eq!(
        UnikernelInfoOld4::try_from(&two).unwrap_err(),
        OldInfoError::NotOneCpu(2)
    );
    for payload in [
        Success::OldUnikernelInfo5(vec![InfoEntry {
            name: name(":hello"),
            info: old5,
        }]),
        Success::OldUnikernelInfo4(vec![InfoEntry {
            name: name(":hello"),
            info: old4,
        }]),
    ] {
        let w = Wire::new(hdr(0, ":hello"), Payload::Success(payload));
        assert_eq!(decode_wire(&encode_wire(&w)).unwrap(), w);
    }

    // Absent `started` and `cpus` take their defaults.
    let minimal = hex("30 16 A0 02 05 00 A0 02 05 00 31 03 02 01 00 02 01 20 04 00 A2 02 30 00");
    let decoded = UnikernelInfo::from_der(&minimal).unwrap();
    assert_eq!(decoded.started, Timestamp::EPOCH);
    assert_eq!(decoded.cpus, 1);
    assert_eq!(decoded.arguments, Some(Vec::new()));
}

#[test]
fn statistics_data_with_implicit_kinfo_mem() {
    let w = wire("constructed/wire.data-statistics.der");
    let Payload::Data(Data::Statistics(stats)) = w.payload else {
        panic!("not statistics: {w:?}");
    };
    assert_eq!(
        stats.resource_usage.utime,
        Timeval {
            seconds: 1,
            microseconds: 500
        }
    );
    assert_eq!(
        stats.resource_usage.stime,
        Timeval {
            seconds: 0,
            microseconds: 250
        }
    );
    assert_eq!(stats.resource_usage.maxrss, 100);
    assert_eq!(stats.resource_usage.nivcsw, 113);
    let ifdata = stats.ifdata.first().unwrap();
    assert_eq!(stats.ifdata.len(), 1);
    assert_eq!(ifdata.bridge, "service");
    assert_eq!(
        (ifdata.flags, ifdata.max_send_length, ifdata.mtu),
        (34883, 50, 1500)
    );
    assert_eq!((ifdata.baudrate, ifdata.output_dropped), (1000, 1011));
    assert_eq!(
        stats.vmm_stats,
        Some(vec![VmmStat {
            key: "vmexits".into(),
            value: 1234
        }])
    );
    assert_eq!(
        stats.kinfo_mem,
        Some(KinfoMem {
            vsize: 1 << 20,
            rss: 1 << 19,
            tsize: 4096,
            dsize: 8192,
            ssize: 16384,
            runtime: 77,
            cow: 0,
            start: Timeval {
                seconds: 1_755_867_883,
                microseconds: 0
            },
        })
    );
}

// ---------------------------------------------------------------------------------------
// Legacy formats

#[test]
fn legacy_state_v0() {
    let s = state("constructed/state.v0-two-entries.der");
    assert!(s.policies.is_empty());
    let expected_first = UnikernelConfig {
        typ: Typ::Solo5,
        compressed: true,
        image: hex("78 9c 03 00 00 00 00 01"),
        startup: None,
        add_name: true,
        fail_behaviour: FailBehaviour::Quit,
        cpuids: set(&[1]),
        memory: 32,
        blocks: vec![BlockDeviceSpec::named("disk".into())],
        bridges: vec![
            NetDeviceSpec::named("service".into()),
            NetDeviceSpec::named("other".into()),
        ],
        arguments: Some(vec!["-vv".into()]),
        cpus: 1,
        linux_boot_partition: None,
    };
    let expected_second = UnikernelConfig {
        typ: Typ::Solo5,
        compressed: false,
        image: hex("7f454c46"),
        startup: None,
        add_name: true,
        fail_behaviour: FailBehaviour::Quit,
        cpuids: set(&[0]),
        memory: 64,
        blocks: Vec::new(),
        bridges: Vec::new(),
        arguments: None,
        cpus: 1,
        linux_boot_partition: None,
    };
    assert_eq!(
        s.unikernels,
        vec![
            // Old keys without a colon are root-level labels.
            TrieEntry::new(name(":hello"), expected_first),
            TrieEntry::new(name(":foo.bar"), expected_second),
        ]
    );
}

#[test]
fn legacy_state_v1_names_only() {
    let s = state("constructed/state.v1-names-only.der");
    assert!(s.policies.is_empty());
    assert_eq!(
        s.unikernels,
        vec![TrieEntry::new(
            name("foo:hello"),
            UnikernelConfig {
                typ: Typ::Bhyve,
                compressed: true,
                image: vec![0xAB],
                startup: None,
                add_name: true,
                fail_behaviour: FailBehaviour::Restart(set(&[2])),
                cpuids: set(&[3]),
                memory: 64,
                blocks: vec![
                    BlockDeviceSpec::named("block".into()),
                    BlockDeviceSpec::named("second".into()),
                ],
                bridges: vec![NetDeviceSpec::named("service".into())],
                arguments: Some(vec!["-l".into(), "*:debug".into()]),
                cpus: 1,
                linux_boot_partition: None,
            },
        )]
    );
}

#[test]
fn legacy_state_v2_bridge_pairs() {
    let s = state("constructed/state.v2-bridge-pairs.der");
    assert!(s.policies.is_empty());
    let [entry] = s.unikernels.as_slice() else {
        panic!("one entry expected: {s:?}");
    };
    assert_eq!(entry.name, name("foo:hello"));
    let c = &entry.value;
    assert_eq!((c.typ, c.compressed, c.image.len()), (Typ::Solo5, false, 0));
    assert_eq!((c.startup, c.add_name, c.cpus), (None, true, 1));
    assert_eq!(c.fail_behaviour, FailBehaviour::Quit);
    assert_eq!((c.cpuids.clone(), c.memory), (set(&[0]), 16));
    assert_eq!(c.blocks, vec![BlockDeviceSpec::named("data".into())]);
    assert_eq!(
        c.bridges,
        vec![
            NetDeviceSpec::named("service".into()),
            NetDeviceSpec {
                netif: "other-net".into(),
                bridge: Some("second-bridge".into()),
                mac: None,
            },
        ]
    );
    assert_eq!(c.arguments, None);
}

#[test]
fn legacy_state_v3_with_policies() {
    let s = state("constructed/state.v3-with-policies.der");
    assert_eq!(
        s,
        State {
            unikernels: vec![TrieEntry::new(
                name(":hello"),
                UnikernelConfig {
                    typ: Typ::Solo5,
                    compressed: false,
                    image: Vec::new(),
                    startup: None,
                    add_name: true,
                    fail_behaviour: FailBehaviour::Restart(BTreeSet::new()),
                    cpuids: set(&[1]),
                    memory: 32,
                    blocks: vec![BlockDeviceSpec {
                        name: "storage".into(),
                        device_name: Some("hello-data".into()),
                        sector_size: Some(4096),
                    }],
                    bridges: vec![NetDeviceSpec {
                        netif: "service".into(),
                        bridge: Some("br0".into()),
                        mac: Some(MacAddr::new([2, 0, 0, 0, 0, 1])),
                    }],
                    arguments: Some(Vec::new()),
                    cpus: 1,
                    linux_boot_partition: None,
                },
            )],
            policies: vec![TrieEntry::new(name("user:"), user_policy())],
        }
    );
}

#[test]
fn legacy_state_v4_with_policies() {
    let s = state("constructed/state.v4-with-policies.der");
    let [entry] = s.unikernels.as_slice() else {
        panic!("one entry expected: {s:?}");
    };
    assert_eq!(entry.name, name(":hello"));
    assert_eq!(entry.value.startup, Some(10));
    assert!(!entry.value.add_name);
    assert_eq!(entry.value.cpuids, set(&[1]));
    assert_eq!(entry.value.cpus, 1);
    assert_eq!(
        s.policies,
        vec![TrieEntry::new(
            Name::root(),
            policy(&[0], 2, 512, Some(100), &[])
        )]
    );
}

#[test]
fn legacy_create_tags_decode_to_create_and_encode_as_20_21() {
    let v3 = UnikernelConfig {
        typ: Typ::Solo5,
        compressed: false,
        image: Vec::new(),
        startup: None,
        add_name: true,
        fail_behaviour: FailBehaviour::Quit,
        cpuids: set(&[0]),
        memory: 32,
        blocks: Vec::new(),
        bridges: vec![NetDeviceSpec::named("service".into())],
        arguments: None,
        cpus: 1,
        linux_boot_partition: None,
    };
    let der = vector("constructed/extension.create-v3.der");
    let cmd = decode_extension(&der).unwrap().command;
    assert_eq!(cmd, Command::Unikernel(UnikernelCmd::Create(v3.clone())));
    // The encoder writes [20]; the up-converted config is the one of example 10.
    assert_eq!(
        encode_extension(&cmd),
        vector("constructed/extension.create-streamed-image.der")
    );
    // [10] is the force-create sibling of [9].
    let mut force = der.clone();
    assert_eq!(force.get(7), Some(&0xA9));
    force[7] = 0xAA;
    assert_eq!(
        decode_extension(&force).unwrap().command,
        Command::Unikernel(UnikernelCmd::ForceCreate(v3))
    );

    let v4 = UnikernelConfig {
        typ: Typ::Solo5,
        compressed: true,
        image: Vec::new(),
        startup: Some(20),
        add_name: true,
        fail_behaviour: FailBehaviour::Restart(set(&[1, 2])),
        cpuids: set(&[2]),
        memory: 64,
        blocks: Vec::new(),
        bridges: Vec::new(),
        arguments: Some(vec!["--x".into()]),
        cpus: 1,
        linux_boot_partition: None,
    };
    let der = vector("constructed/extension.force-create-v4-unsorted-set.der");
    let cmd = decode_extension(&der).unwrap().command;
    assert_eq!(
        cmd,
        Command::Unikernel(UnikernelCmd::ForceCreate(v4.clone()))
    );
    // Written as [21], with the set sorted, TRUE as FF and cpus [3].
    assert_eq!(
        encode_extension(&cmd),
        hex(
            "30 38 02 01 05 A3 33 B5 31 30 2F A0 02 05 00 01 01 FF 04 00 02 01 14 01 01 FF
             A1 08 31 06 02 01 01 02 01 02 31 03 02 01 02 02 01 40
             A2 07 30 05 0C 03 2D 2D 78 A3 03 02 01 01"
        )
    );
    // [16] is the create sibling of [17].
    let mut create = der.clone();
    assert_eq!(create.get(7), Some(&0xB1));
    create[7] = 0xB0;
    assert_eq!(
        decode_extension(&create).unwrap().command,
        Command::Unikernel(UnikernelCmd::Create(v4))
    );
}

#[test]
fn legacy_restart_arguments() {
    let cmd = decode_extension(&vector("constructed/extension.restart-v0.der"))
        .unwrap()
        .command;
    let v0 = UnikernelArguments {
        fail_behaviour: FailBehaviour::Quit,
        startup: None,
        add_name: true,
        cpuids: set(&[3]),
        memory: 64,
        blocks: Vec::new(),
        bridges: vec![NetDeviceSpec {
            netif: "service".into(),
            bridge: Some("br1".into()),
            mac: None,
        }],
        arguments: None,
        cpus: 1,
        linux_boot_partition: None,
    };
    assert_eq!(
        cmd,
        Command::Unikernel(UnikernelCmd::Restart(RestartArgs::Arguments(v0)))
    );
    // Written back as [3].
    assert_eq!(
        encode_extension(&cmd),
        hex(
            "30 33 02 01 05 A3 2E AE 2C A3 2A 30 28 A0 02 05 00 01 01 FF 31 03 02 01 03
             02 01 40 A1 12 31 10 30 0E 0C 07 73 65 72 76 69 63 65 0C 03 62 72 31
             A3 03 02 01 01"
        )
    );

    let cmd = decode_extension(&vector("constructed/extension.restart-v1.der"))
        .unwrap()
        .command;
    let v1 = UnikernelArguments {
        fail_behaviour: FailBehaviour::Restart(set(&[1])),
        startup: Some(5),
        add_name: false,
        cpuids: set(&[0]),
        memory: 128,
        blocks: vec![BlockDeviceSpec::named("disk".into())],
        bridges: Vec::new(),
        arguments: Some(vec!["-a".into()]),
        cpus: 1,
        linux_boot_partition: None,
    };
    assert_eq!(
        cmd,
        Command::Unikernel(UnikernelCmd::Restart(RestartArgs::Arguments(v1)))
    );

    let current = UnikernelArguments {
        fail_behaviour: FailBehaviour::Quit,
        startup: None,
        add_name: true,
        cpuids: set(&[0, 1]),
        memory: 64,
        blocks: Vec::new(),
        bridges: Vec::new(),
        arguments: None,
        cpus: 2,
        linux_boot_partition: Some("hd0,msdos1".into()),
    };
    assert_eq!(
        extension("constructed/extension.restart-arguments.der"),
        Command::Unikernel(UnikernelCmd::Restart(RestartArgs::Arguments(current)))
    );
    let no_args = Command::Unikernel(UnikernelCmd::Restart(RestartArgs::NoArguments));
    assert_eq!(
        encode_extension(&no_args),
        hex("30 0B 02 01 05 A3 06 AE 04 A0 02 05 00")
    );
}

// ---------------------------------------------------------------------------------------
// Leniencies (§10.2)

#[test]
fn accepted_leniencies() {
    // Any non-zero BOOLEAN is TRUE (addName 01 in the V4 vector), SET OF need not be
    // sorted (exit codes 2, 1): covered by legacy_create_tags_…; here: non-UTF-8 strings.
    let der = hex(
        "30 1C 30 15 02 01 05 04 08 00 00 00 00 00 00 00 00 0C 06 3A 68 65 6C 6C 6F A2 03 0C 01 FF",
    );
    assert_eq!(
        decode_wire(&der).unwrap().payload,
        Payload::failure("\u{FFFD}")
    );
    // Lenient GeneralizedTime: no seconds, one fraction digit, zone offset.
    for (text, ms) in [
        ("202508221304Z", 1_755_867_840_000),
        ("20250822130443.5Z", 1_755_867_883_005),
        ("20250822150443+0200", 1_755_867_883_000),
    ] {
        // SEQUENCE { 5, [0] console { [2] subscribe { [0] since { GeneralizedTime } } } }
        let len = u8::try_from(text.len()).unwrap();
        let time = [&[0x18, len][..], text.as_bytes()].concat();
        let since = [&[0xA0, len + 2][..], &time].concat();
        let subscribe = [&[0xA2, len + 4][..], &since].concat();
        let console = [&[0xA0, len + 6][..], &subscribe].concat();
        let ext = [&[0x30, len + 11, 0x02, 0x01, 0x05][..], &console].concat();
        let since = SinceCount::Since(Timestamp::from_millis(ms).unwrap());
        assert_eq!(
            decode_extension(&ext).unwrap().command,
            Command::Console(ConsoleCmd::Subscribe(since)),
            "{text}"
        );
    }
}

#[test]
fn duplicate_list_entries_collapse_in_sets() {
    // Policy cpuids SEQUENCE OF with a duplicate and bridges out of order.
    let der = hex("30 1B 30 06 02 01 01 02 01 01 02 01 01 02 01 20
                   30 0B 0C 03 62 72 31 0C 04 62 72 30 30");
    let p = Policy::from_der(&der).unwrap();
    assert_eq!(p, policy(&[1], 1, 32, None, &["br00", "br1"]));
}

// ---------------------------------------------------------------------------------------
// Rejections, with exact texts

fn wire_err(der: &[u8]) -> String {
    decode_wire(der).unwrap_err().to_string()
}

fn ext_err(der: &[u8]) -> String {
    decode_extension(der).unwrap_err().to_string()
}

fn state_err(der: &[u8]) -> String {
    decode_state(der).unwrap_err().to_string()
}

#[test]
fn rejects_trailing_bytes() {
    for path in [
        "albatross/wire.console-subscribe-count-20.der",
        "albatross/extension.policy-arc.der",
        "albatross/state.v3-first-entry.der",
    ] {
        let mut der = vector(path);
        der.push(0);
        let text = if path.contains("wire.") {
            wire_err(&der)
        } else if path.contains("extension.") {
            ext_err(&der)
        } else {
            state_err(&der)
        };
        assert_eq!(text, "trailing bytes", "{path}");
    }
}

#[test]
fn rejects_bad_lengths() {
    assert_eq!(
        ext_err(&hex("30 80 02 01 05 A4 04 A0 02 05 00 00 00")),
        "indefinite length"
    );
    assert_eq!(wire_err(&hex("30 80 30 80")), "indefinite length");
    assert_eq!(
        ext_err(&hex("30 0B 02 01 05 A4 80 A0 02 05 00 00 00")),
        "indefinite length"
    );
    assert_eq!(
        ext_err(&hex("30 81 09 02 01 05 A4 04 A0 02 05 00")),
        "non-minimal length"
    );
    assert_eq!(
        ext_err(&hex("30 0B 02 01 05 A4 82 00 04 A0 02 05 00")),
        "non-minimal length"
    );
    assert_eq!(
        ext_err(&hex("30 09 02 01 05 A4 05 A0 02 05 00")),
        "truncated input"
    );
    assert_eq!(ext_err(&hex("30 85 01 00 00 00 00")), "length too large");
}

#[test]
fn rejects_bad_primitives() {
    // Non-minimal and empty INTEGERs, out of range.
    assert_eq!(
        ext_err(&hex("30 0A 02 02 00 05 A4 04 A0 02 05 00")),
        "non-minimal integer"
    );
    assert_eq!(
        ext_err(&hex("30 08 02 00 A4 04 A0 02 05 00")),
        "empty integer"
    );
    assert_eq!(
        ext_err(&hex(
            "30 10 02 08 40 00 00 00 00 00 00 00 A4 04 A0 02 05 00"
        )),
        "integer out of range"
    );
    // NULL with content.
    assert_eq!(
        ext_err(&hex("30 0A 02 01 05 A4 05 A0 03 05 01 00")),
        "NULL with content"
    );
    // Constructed UTF8String (the header name).
    assert_eq!(
        wire_err(&hex(
            "30 1B 30 13 02 01 05 04 08 00 00 00 00 00 00 00 00 2C 04 0C 02 3A 61 A1 04 A0 02 05 00"
        )),
        "constructed string"
    );
    // Constructed OCTET STRING (block data).
    assert_eq!(
        wire_err(&hex(
            "30 21 30 17 02 01 05 04 08 00 00 00 00 00 00 00 00 0C 08 66 6F 6F 3A 64 69 73 6B A3 06 A4 04 A0 02 24 00"
        )),
        "constructed string"
    );
    // BOOLEAN of two octets (block set).
    assert_eq!(
        ext_err(&hex("30 0B 02 01 05 A5 06 A7 04 01 02 FF FF")),
        "BOOLEAN of 2 octets"
    );
    // Int64 (the header sequence) of 7 and 9 octets (Note W1).
    assert_eq!(
        wire_err(&hex(
            "30 1A 30 12 02 01 05 04 07 00 00 00 00 00 00 00 0C 04 3A 66 6F 6F A1 04 A0 02 05 00"
        )),
        "Int64 of 7 octets, expected 8"
    );
    assert_eq!(
        wire_err(&hex(
            "30 1C 30 14 02 01 05 04 09 00 00 00 00 00 00 00 00 00 0C 04 3A 66 6F 6F A1 04 A0 02 05 00"
        )),
        "Int64 of 9 octets, expected 8"
    );
    // Invalid GeneralizedTime (month 13).
    assert_eq!(
        ext_err(&hex(
            "30 1A 02 01 05 A0 15 A2 13 A0 11 18 0F 32 30 32 35 31 33 32 32 31 33 30 34 34 33 5A"
        )),
        "invalid GeneralizedTime"
    );
}

#[test]
fn rejects_bad_mac_addresses() {
    let mut der = vector("albatross/state.v3-first-entry.der");
    // Shorten the MAC to 5 octets: fix every enclosing length.
    let mac_at = der.len() - 8;
    assert_eq!(der.get(mac_at..mac_at + 2), Some(&[0x04, 0x06][..]));
    der[mac_at + 1] = 0x05;
    der.pop();
    for i in [1, 3, 5, 18, 39, 41, 43] {
        der[i] -= 1;
    }
    assert_eq!(
        state_err(&der),
        "bad mac address: Macaddr: MAC is exactly 6 bytes"
    );
    // And a 7-octet MAC in a NetInfo.
    let info = hex("30 0F 0C 01 61 0C 01 62 04 07 00 01 02 03 04 05 06");
    assert_eq!(
        NetInfo::from_der(&info).unwrap_err().to_string(),
        "bad mac address: Macaddr: MAC is exactly 6 bytes"
    );
}

#[test]
fn rejects_other_versions() {
    assert_eq!(
        ext_err(&hex("30 09 02 01 06 A4 04 A0 02 05 00")),
        "unknown version number 0x6"
    );
    assert_eq!(
        ext_err(&hex("30 09 02 01 04 A4 04 A0 02 05 00")),
        "unknown version number 0x4"
    );
    assert_eq!(
        ext_err(&hex("30 09 02 01 1A FF FF FF FF FF FF")),
        "unknown version number 0x1A"
    );
    let mut der = vector("albatross/wire.console-subscribe-count-20.der");
    der[6] = 0x06;
    assert_eq!(wire_err(&der), "unknown version number 0x6");
    // The version is checked before the rest is looked at (§6.3).
    for b in der.iter_mut().skip(23) {
        *b = 0xFF;
    }
    assert_eq!(wire_err(&der), "unknown version number 0x6");
    assert_eq!(
        wire_err(&hex("30 06 30 04 02 02 01 00 00 00")),
        "unknown version number 0x100"
    );
}

#[test]
fn rejects_unknown_and_dropped_alternatives() {
    let cases: &[(&str, &str)] = &[
        // command [7]
        (
            "30 09 02 01 05 A7 04 A0 02 05 00",
            "unknown command alternative [7]",
        ),
        // console [1] (dropped old subscribe)
        (
            "30 09 02 01 05 A0 04 A1 02 05 00",
            "unknown ConsoleCmd alternative [1]",
        ),
        // unikernel [0], [12], [13] (dropped)
        (
            "30 09 02 01 05 A3 04 A0 02 05 00",
            "unknown UnikernelCmd alternative [0]",
        ),
        (
            "30 09 02 01 05 A3 04 AC 02 05 00",
            "unknown UnikernelCmd alternative [12]",
        ),
        (
            "30 09 02 01 05 A3 04 AD 02 05 00",
            "unknown UnikernelCmd alternative [13]",
        ),
        // policy [3], block [8], stats [4], revocation [2]
        (
            "30 09 02 01 05 A4 04 A3 02 05 00",
            "unknown PolicyCmd alternative [3]",
        ),
        (
            "30 09 02 01 05 A5 04 A8 02 05 00",
            "unknown BlockCmd alternative [8]",
        ),
        (
            "30 09 02 01 05 A1 04 A4 02 05 00",
            "unknown StatsCmd alternative [4]",
        ),
        (
            "30 09 02 01 05 A6 04 A2 02 05 00",
            "unknown RevocationCmd alternative [2]",
        ),
        // restart [4], since/count [2]
        (
            "30 0B 02 01 05 A3 06 AE 04 A4 02 05 00",
            "unknown RestartArgs alternative [4]",
        ),
        (
            "30 0B 02 01 05 A0 06 A2 04 A2 02 05 00",
            "unknown SinceCount alternative [2]",
        ),
        // not a context tag where a CHOICE is expected
        (
            "30 07 02 01 05 30 02 05 00",
            "unknown command alternative SEQUENCE",
        ),
        // log [2]
        ("30 07 02 01 05 A2 02 05 00", "support for log dropped"),
        // a command missing entirely
        ("30 03 02 01 05", "missing command"),
        // an extra element after the command
        (
            "30 0B 02 01 05 A4 04 A0 02 05 00 05 00",
            "unexpected NULL after the last element",
        ),
        // an extra element inside the EXPLICIT tag
        (
            "30 0B 02 01 05 A4 06 A0 02 05 00 05 00",
            "unexpected NULL after the last element",
        ),
        // wrong type in a field
        (
            "30 09 02 01 05 A5 04 A1 02 05 00",
            "expected INTEGER, found NULL",
        ),
    ];
    for (der, text) in cases {
        assert_eq!(ext_err(&hex(der)), *text, "{der}");
    }
    let hdr = "30 10 02 01 05 04 08 00 00 00 00 00 00 00 00 0C 01 3A";
    let wire_cases: &[(&str, &str)] = &[
        ("30 16 {hdr} A4 02 05 00", "unknown payload alternative [4]"),
        (
            "30 18 {hdr} A1 04 A3 02 05 00",
            "unknown Success alternative [3]",
        ),
        (
            "30 18 {hdr} A1 04 A5 02 05 00",
            "unknown Success alternative [5]",
        ),
        (
            "30 18 {hdr} A1 04 A8 02 05 00",
            "unknown Success alternative [8]",
        ),
        (
            "30 18 {hdr} A3 04 A0 02 05 00",
            "unknown Data alternative [0]",
        ),
        (
            "30 18 {hdr} A3 04 A2 02 05 00",
            "support for log was dropped",
        ),
        (
            "30 1A {hdr} A3 06 A4 04 A2 02 05 00",
            "unknown block data alternative [2]",
        ),
    ];
    for (der, text) in wire_cases {
        assert_eq!(wire_err(&hex(&der.replace("{hdr}", hdr))), *text, "{der}");
    }
    assert_eq!(state_err(&hex("A7 02 05 00")), "not yet implemented");
    assert_eq!(
        state_err(&hex("A8 02 05 00")),
        "unknown State alternative [8]"
    );
    assert_eq!(state_err(&hex("")), "missing State");
}

#[test]
fn rejects_bad_names() {
    let with_name = |name: &[u8]| {
        let len = u8::try_from(name.len()).unwrap();
        let mut der = vec![
            0x30,
            0x17 + len,
            0x30,
            0x0F + len,
            0x02,
            0x01,
            0x05,
            0x04,
            0x08,
        ];
        der.extend_from_slice(&[0; 8]);
        der.extend_from_slice(&[0x0C, len]);
        der.extend_from_slice(name);
        der.extend_from_slice(&[0xA1, 0x04, 0xA0, 0x02, 0x05, 0x00]);
        der
    };
    assert!(decode_wire(&with_name(b":ok")).is_ok());
    assert_eq!(wire_err(&with_name(b"")), "empty name");
    assert_eq!(wire_err(&with_name(b"::x")), "invalid name");
    assert_eq!(wire_err(&with_name(b"a/b")), "invalid name");
    assert_eq!(
        wire_err(&with_name(b"a/b:")),
        "invalid path: invalid label (only [a-zA-Z0-9-.] allowed, 1 to 63 chars)"
    );
    // Names are case-folded on decode (Note W3).
    assert_eq!(
        decode_wire(&with_name(b"Foo:Bar"))
            .unwrap()
            .header
            .name
            .text(),
        "foo:bar"
    );
}

#[test]
fn rejects_bad_state_keys() {
    // The V3 vector's key "bar:hello" replaced by "bar/hello".
    let mut der = vector("albatross/state.v3-first-entry.der");
    der[11] = b'/';
    assert_eq!(state_err(&der), "invalid key in state file: invalid name");
    // The same entry twice.
    let entry = vector("albatross/state.v3-first-entry.der")[4..].to_vec();
    let mut twice = vec![0xA3, 0x81, 0x99, 0x30, 0x81, 0x96];
    twice.extend_from_slice(&entry);
    twice.extend_from_slice(&entry);
    assert_eq!(state_err(&twice), "duplicate key bar:hello in state file");
}

#[test]
fn rejects_overlong_lists() {
    let count = MAX_ELEMENTS + 1;
    let mut names = Vec::with_capacity(count * 3);
    for _ in 0..count {
        names.extend_from_slice(&[0x0C, 0x01, 0x3A]);
    }
    let der = Writerless::wrap(0x30, &names);
    let der = Writerless::wrap(0xAC, &der);
    let der = Writerless::wrap(0xA1, &der);
    let hdr = hex("30 10 02 01 05 04 08 00 00 00 00 00 00 00 00 0C 01 3A");
    let der = Writerless::wrap(0x30, &[hdr.as_slice(), &der].concat());
    assert_eq!(
        wire_err(&der),
        "too many elements in a SEQUENCE OF or SET OF"
    );
    // One fewer is fine.
    let ok = Success::Consoles(vec![Name::root(); MAX_ELEMENTS]);
    let w = Wire::new(Header::new(0, Name::root()), Payload::Success(ok));
    assert_eq!(decode_wire(&encode_wire(&w)).unwrap(), w);
}

/// Hand-rolled TLV wrapping for building large test inputs.
struct Writerless;

impl Writerless {
    fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
        let len = content.len();
        let mut out = vec![tag];
        if len < 0x80 {
            out.push(u8::try_from(len).unwrap());
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | u8::try_from(8 - skip).unwrap());
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(content);
        out
    }
}

// ---------------------------------------------------------------------------------------
// Encoder rules

#[test]
fn encoder_sorts_sets_and_follows_albatross_omissions() {
    let config = UnikernelConfig {
        blocks: vec![
            BlockDeviceSpec::named("zzz-long-name".into()),
            BlockDeviceSpec::named("b".into()),
        ],
        bridges: Vec::new(),
        arguments: Some(Vec::new()),
        startup: Some(3),
        linux_boot_partition: Some("p".into()),
        cpuids: set(&[256, 1, -1]),
        ..hello_config()
    };
    let der = config.to_der();
    let back = UnikernelConfig::from_der(&der).unwrap();
    // SET OF in DER order: the shorter SEQUENCE first.
    assert_eq!(
        back.blocks,
        vec![
            BlockDeviceSpec::named("b".into()),
            BlockDeviceSpec::named("zzz-long-name".into()),
        ]
    );
    assert_eq!(back.bridges, Vec::new());
    assert_eq!(back.arguments, Some(Vec::new()));
    assert_eq!(back.cpuids, set(&[-1, 1, 256]));
    assert_eq!(
        der,
        hex(
            "30 4E A0 02 05 00 01 01 00 04 04 7F 45 4C 46 02 01 03 01 01 FF A1 02 31 00
             31 0A 02 01 01 02 01 FF 02 02 01 00 02 01 40
             A0 18 31 16 30 03 0C 01 62 30 0F 0C 0D 7A 7A 7A 2D 6C 6F 6E 67 2D 6E 61 6D 65
             A2 02 30 00 A3 03 02 01 01 A4 03 0C 01 70"
        )
    );
}

#[test]
fn state_sort_is_trie_pre_order() {
    let config = hello_config();
    let mut s = State {
        unikernels: ["b:x", "a:b:y", ":z", "a:x", "a:b.c"]
            .iter()
            .map(|n| TrieEntry::new(name(n), config.clone()))
            .collect(),
        policies: ["b:", ":", "a:b:", "a:"]
            .iter()
            .map(|n| TrieEntry::new(name(n), user_policy()))
            .collect(),
    };
    s.sort();
    let unikernels: Vec<String> = s.unikernels.iter().map(|e| e.name.text()).collect();
    let policies: Vec<String> = s.policies.iter().map(|e| e.name.text()).collect();
    assert_eq!(unikernels, ["a:b:y", "a:b.c", "a:x", "b:x", ":z"]);
    assert_eq!(policies, [":", "a:", "a:b:", "b:"]);
}

#[test]
fn frames() {
    assert_eq!(frame_header(0x1A), Ok([0, 0, 0, 0x1A]));
    assert_eq!(frame_header(0), Ok(END_OF_STREAM));
    assert_eq!(
        frame_header(1 << 31).unwrap_err().to_string(),
        "frame of 2147483648 octets does not fit the 31-bit length prefix"
    );
    assert_eq!(
        decode_frame_header([0, 0, 0x10, 0], 4096),
        Ok(FrameLength::Body(4096))
    );
    assert_eq!(
        decode_frame_header(END_OF_STREAM, 4096),
        Ok(FrameLength::EndOfStream)
    );
    assert_eq!(
        decode_frame_header([0x80, 0, 0, 1], 4096),
        Ok(FrameLength::EndOfStream)
    );
    assert_eq!(
        decode_frame_header([0, 1, 0, 0], 4096)
            .unwrap_err()
            .to_string(),
        "frame of 65536 octets exceeds the limit of 4096 octets"
    );
}

// ---------------------------------------------------------------------------------------
// Descriptions and JSON

#[test]
fn command_descriptions() {
    let config = hello_config();
    let cases: Vec<(Command, &str)> = vec![
        (Command::Console(ConsoleCmd::Add(3)), "console add"),
        (
            Command::Console(ConsoleCmd::Subscribe(SinceCount::Count(1))),
            "console subscribe",
        ),
        (
            Command::Console(ConsoleCmd::ListInactive),
            "console list inactive",
        ),
        (Command::Statistics(StatsCmd::Subscribe), "stat subscribe"),
        (Command::Statistics(StatsCmd::Remove), "stat remove"),
        (Command::Statistics(StatsCmd::Initial), "stat initial"),
        (
            Command::Statistics(StatsCmd::Add(StatsAdd {
                vmmdev: String::new(),
                pid: 1,
                network: Vec::new(),
            })),
            "stats add",
        ),
        (Command::Unikernel(UnikernelCmd::Info), "unikernel info"),
        (
            Command::Unikernel(UnikernelCmd::InfoOld4),
            "old unikernel info4",
        ),
        (
            Command::Unikernel(UnikernelCmd::InfoOld5),
            "old unikernel info5",
        ),
        (
            Command::Unikernel(UnikernelCmd::Create(config.clone())),
            "unikernel create",
        ),
        (
            Command::Unikernel(UnikernelCmd::ForceCreate(config)),
            "unikernel force create",
        ),
        (
            Command::Unikernel(UnikernelCmd::Restart(RestartArgs::NoArguments)),
            "unikernel restart",
        ),
        (
            Command::Unikernel(UnikernelCmd::Destroy),
            "unikernel destroy",
        ),
        (Command::Unikernel(UnikernelCmd::Get(9)), "unikernel get"),
        (Command::Policy(PolicyCmd::Info), "policy info"),
        (Command::Policy(PolicyCmd::Add(user_policy())), "policy add"),
        (Command::Policy(PolicyCmd::Remove), "policy remove"),
        (Command::Block(BlockCmd::Info), "block info"),
        (Command::Block(BlockCmd::Add(10)), "block add"),
        (Command::Block(BlockCmd::Remove), "block remove"),
        (
            Command::Block(BlockCmd::AddOld {
                size: 1,
                compress: false,
                data: None,
            }),
            "old block add",
        ),
        (
            Command::Block(BlockCmd::SetOld {
                compress: false,
                data: Vec::new(),
            }),
            "old block set",
        ),
        (Command::Block(BlockCmd::DumpOld(0)), "old block dump"),
        (Command::Block(BlockCmd::Dump(0)), "block dump"),
        (Command::Block(BlockCmd::Set(true)), "block set"),
        (
            Command::Revocation(RevocationCmd::Upload),
            "revocation upload",
        ),
        (Command::Revocation(RevocationCmd::Info), "revocation info"),
    ];
    for (cmd, text) in cases {
        assert_eq!(cmd.to_string(), text);
        // Every command also round-trips through the extension.
        assert_eq!(
            decode_extension(&encode_extension(&cmd)).unwrap().command,
            cmd,
            "{text}"
        );
    }
}

#[test]
fn json_of_a_create_extension() {
    let e = decode_extension(&vector("constructed/extension.create-streamed-image.der")).unwrap();
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"version":5,"command":{"unikernel":{"create":{"typ":"solo5","compressed":false,"image":"","startup":null,"addName":true,"failBehaviour":"quit","cpuids":[0],"memory":32,"blocks":[],"bridges":[{"netif":"service","bridge":null,"mac":null}],"arguments":null,"cpus":1,"linuxBootPartition":null}}}}"#
    );
}

#[test]
fn json_of_bytes_macs_names_and_times() {
    let s = state("constructed/state.v3-with-policies.der");
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["unikernels"][0]["name"], ":hello");
    assert_eq!(
        json["unikernels"][0]["value"]["bridges"][0]["mac"],
        "02:00:00:00:00:01"
    );
    assert_eq!(
        json["unikernels"][0]["value"]["failBehaviour"],
        serde_json::json!({"restart": []})
    );
    assert_eq!(
        json["unikernels"][0]["value"]["blocks"][0]["sectorSize"],
        4096
    );
    assert_eq!(json["policies"][0]["name"], "user:");
    assert_eq!(
        json["policies"][0]["value"]["cpuids"],
        serde_json::json!([0, 1])
    );

    let mut config = hello_config();
    assert_eq!(serde_json::to_value(&config).unwrap()["image"], "7f454c46");
    config.image = vec![0xAB; 65];
    assert_eq!(
        serde_json::to_value(&config).unwrap()["image"],
        serde_json::json!({
            "length": 65,
            "sha256": "39cd843414d5125dd308568ace26d04e60b7fa6d2b1a901fb5184fa2eae0598b"
        })
    );

    let w = wire("constructed/wire.data-console-hello-world.der");
    assert_eq!(
        serde_json::to_string(&w).unwrap(),
        r#"{"header":{"version":5,"sequence":0,"name":":hello"},"payload":{"data":{"console":{"timestamp":"2025-08-22T13:04:43Z","line":"hello world"}}}}"#
    );
    let w = wire("constructed/wire.data-block-some-data.der");
    assert_eq!(
        serde_json::to_value(&w).unwrap()["payload"],
        serde_json::json!({"data": {"block": {"someData": "00010203"}}})
    );
    let w = wire("constructed/wire.success-unikernel-info.der");
    let info = &serde_json::to_value(&w).unwrap()["payload"]["success"]["unikernelInfo"][0];
    assert_eq!(
        info["info"]["digest"],
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    );
    assert_eq!(info["info"]["started"], "2025-08-22T13:04:43Z");
    assert_eq!(info["info"]["blocks"][0]["hostDevice"], "hello-data");
}
