//! Decodes arbitrary bytes with each decoder of the lease wire (STYLE rule 11: peer input never
//! panics): lease datagrams (Raft messages, requests, responses, notices), snapshot data (an
//! encoded lease table), and entry data and context (a replicated command, a voter change).
//! Whatever decodes must re-encode to exactly the same bytes (the encodings are canonical) and
//! decode to the same value; the checks live in `meshkit::lease::fuzzing` (feature `fuzzing`),
//! beside the encoders, which are not public.
//!
//! The first byte chooses the decoder, so the fuzzer's corpus for each one grows on its own.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshkit::lease::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let _ = fuzzing::message_round_trip(bytes);
        }
        1 => {
            let _ = fuzzing::table_round_trip(bytes);
        }
        _ => {
            let _ = fuzzing::entry_round_trip(bytes);
        }
    }
});
