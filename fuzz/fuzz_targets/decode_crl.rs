#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = petrel::pki::ParsedCrl::parse(data);
});
