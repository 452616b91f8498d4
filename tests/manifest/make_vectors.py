#!/usr/bin/env python3
"""Writes the solo5 image vectors of this folder.

An encoder independent of petrel's own `manifest::build_test_image`, written from the
layouts in solo5's include/elf_abi.h and include/mft_abi.h, with the segment layout of
solo5's bindings/*.lds linker scripts: a PT_LOAD, then one PT_NOTE each for the
"not OpenBSD" note, the ABI note and the manifest note, then PT_GNU_STACK. Run it from
this folder: `python3 make_vectors.py`. The corrupted vectors patch the good one.
"""
import struct

PT_LOAD, PT_NOTE, PT_GNU_STACK = 1, 4, 0x6474E551
EM_X86_64, EM_AARCH64 = 62, 183
ABI1, MFT1 = 0x31494241, 0x3154464D
BLOCK, NET, RESERVED = 1, 2, 1 << 30


def note(name, ntype, desc, desc_pad=0):
    name_b = name + b"\0"
    padded = name_b + b"\0" * ((4 - len(name_b) % 4) % 4)
    body = b"\0" * desc_pad + desc
    return struct.pack("<III", len(name_b), len(body), ntype) + padded + body


def entry(name, kind, attached=0):
    return (name.ljust(68, b"\0") + struct.pack("<I", kind) + b"\0" * 16 + b"\0" * 8
            + bytes([attached]) + b"\0" * 7)


def manifest(devices, version=1):
    entries = [entry(b"", RESERVED)] + [entry(n, k) for n, k in devices]
    return struct.pack("<II", version, len(entries)) + b"".join(entries)


def image(machine, target, abi_version, devices):
    code = b"\xf4" * 64  # hlt
    notes = [
        note(b"OpenBSD", 1, struct.pack("<I", 0)),
        note(b"Solo5", ABI1, struct.pack("<IIII", target, abi_version, 0, 0)),
        note(b"Solo5", MFT1, manifest(devices), desc_pad=4),
    ]
    phnum = 5
    offset = 64 + 56 * phnum
    code_off = offset
    offset += len(code)
    note_offs = []
    for n in notes:
        offset = (offset + 7) & ~7
        note_offs.append(offset)
        offset += len(n)
    out = bytearray(offset)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    out[0:64] = ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0x100000 + code_off,
                                    64, 0, 0, 64, 56, phnum, 64, 0, 0)
    phdrs = [(PT_LOAD, 5, code_off, 0x100000 + code_off, len(code), 0x1000)]
    phdrs += [(PT_NOTE, 4, o, 0x100000 + o, len(n), 4)
              for i, (o, n) in enumerate(zip(note_offs, notes))]
    phdrs += [(PT_GNU_STACK, 6, 0, 0, 0, 16)]
    for i, (t, f, o, va, sz, al) in enumerate(phdrs):
        out[64 + 56 * i:64 + 56 * (i + 1)] = struct.pack("<IIQQQQQQ", t, f, o, va, va, sz, sz, al)
    out[code_off:code_off + len(code)] = code
    for o, n in zip(note_offs, notes):
        out[o:o + len(n)] = n
    return bytes(out), note_offs


def write(name, data):
    with open(name, "wb") as f:
        f.write(data)


good, offs = image(EM_X86_64, 1, 2, [(b"service", NET), (b"storage", BLOCK)])
write("hvt-x86_64.net-service.block-storage.hvt", good)
write("spt-aarch64.no-devices.spt", image(EM_AARCH64, 2, 2, [])[0])
write("hvt-x86_64.63-devices.hvt",
      image(EM_X86_64, 1, 2, [(b"dev%d" % i, NET if i % 2 else BLOCK) for i in range(63)])[0])
write("virtio-x86_64.virtio.hvt", image(EM_X86_64, 3, 1, [(b"net0", NET)])[0])

abi_off, mft_off = offs[1], offs[2]
mft = mft_off + 24          # struct mft inside the manifest note
e1 = mft + 8 + 104          # first device entry (after the reserved one)


def patched(patches, data=good):
    b = bytearray(data)
    for off, raw in patches:
        b[off:off + len(raw)] = raw
    return bytes(b)


u16 = lambda v: struct.pack("<H", v)
u32 = lambda v: struct.pack("<I", v)
u64 = lambda v: struct.pack("<Q", v)
write("bad.truncated-in-manifest.hvt", good[:mft + 100])
write("bad.truncated-in-header.hvt", good[:40])
write("bad.phnum-65535.hvt", patched([(56, u16(65535))]))
write("bad.phoff-beyond-end.hvt", patched([(32, u64(1 << 40))]))
write("bad.manifest-entries-65.hvt", patched([(mft + 4, u32(65))]))
write("bad.manifest-entries-4.hvt", patched([(mft + 4, u32(4))]))
write("bad.manifest-descsz-huge.hvt", patched([(mft_off + 4, u32(0xFFFFFFFF))]))
write("bad.manifest-version-2.hvt", patched([(mft, u32(2))]))
write("bad.abi-descsz-0.hvt", patched([(abi_off + 4, u32(0))]))
write("bad.abi-descsz-8.hvt", patched([(abi_off + 4, u32(8))]))
write("bad.device-name-dash.hvt", patched([(e1, b"serv-ce")]))
write("bad.device-name-unterminated.hvt", patched([(e1, b"x" * 68)]))
write("bad.device-type-3.hvt", patched([(e1 + 68, u32(3))]))
write("bad.device-attached.hvt", patched([(e1 + 96, b"\x01")]))
write("bad.no-reserved-entry.hvt", patched([(mft + 8 + 68, u32(BLOCK))]))
# Manifest note segment turned into PT_LOAD: no manifest note left.
write("bad.no-manifest-note.hvt", patched([(64 + 56 * 3, u32(PT_LOAD))]))
write("bad.note-segment-8-octets.hvt", patched([(64 + 56 * 1 + 32, u64(8))]))
write("bad.elf32.hvt", patched([(4, b"\x01")]))
write("bad.big-endian.hvt", patched([(5, b"\x02")]))
write("bad.machine-riscv.hvt", patched([(18, u16(243))]))
write("bad.shared-object.hvt", patched([(16, u16(3))]))
write("bad.not-elf.hvt", b"#!/bin/sh\necho this is not a unikernel\n")
