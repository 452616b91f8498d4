#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = petrel::executor::manifest::read_image_bytes(data);
});
