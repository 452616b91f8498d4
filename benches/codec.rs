//! Decoding cost of what every connection decodes: the leaf's extension (a create with a
//! small config and an image streamed afterwards), an intermediate's policy extension,
//! and typical wire frames.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

use petrel::codec::{decode_extension, decode_wire, encode_wire};

/// spec §12 example 10: create, solo5, empty image, one network device.
const CREATE_EXTENSION: &[u8] =
    include_bytes!("../tests/codec/constructed/extension.create-streamed-image.der");
/// spec §12 example 9: policy add as an intermediate CA's extension.
const POLICY_EXTENSION: &[u8] =
    include_bytes!("../tests/codec/constructed/extension.policy-add-user.der");
/// spec §12 example 1: console subscribe request.
const SUBSCRIBE_WIRE: &[u8] =
    include_bytes!("../tests/codec/albatross/wire.console-subscribe-count-20.der");
/// spec §12 example 11: one streamed console line.
const CONSOLE_WIRE: &[u8] =
    include_bytes!("../tests/codec/constructed/wire.data-console-hello-world.der");
/// A unikernel info reply with one block and one network device.
const INFO_WIRE: &[u8] =
    include_bytes!("../tests/codec/constructed/wire.success-unikernel-info.der");

fn bench(c: &mut Criterion) {
    c.bench_function("decode_extension/create", |b| {
        b.iter(|| decode_extension(black_box(CREATE_EXTENSION)))
    });
    c.bench_function("decode_extension/policy", |b| {
        b.iter(|| decode_extension(black_box(POLICY_EXTENSION)))
    });
    c.bench_function("decode_wire/console-subscribe", |b| {
        b.iter(|| decode_wire(black_box(SUBSCRIBE_WIRE)))
    });
    c.bench_function("decode_wire/console-data", |b| {
        b.iter(|| decode_wire(black_box(CONSOLE_WIRE)))
    });
    c.bench_function("decode_wire/unikernel-info", |b| {
        b.iter(|| decode_wire(black_box(INFO_WIRE)))
    });
    let info = decode_wire(INFO_WIRE).expect("vector decodes");
    c.bench_function("encode_wire/unikernel-info", |b| {
        b.iter(|| encode_wire(black_box(&info)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
