#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    petrel::codec::check_roundtrip(data);
});
