#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = petrel::codec::decode_state(data);
});
