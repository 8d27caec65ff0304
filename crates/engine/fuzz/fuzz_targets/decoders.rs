//! Every Engine.IO / Socket.IO decoder on arbitrary input: none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    engine::fuzz_decoders(data);
});
