#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = petrel::chain::decode_concatenated(data);
});
