//! Decodes arbitrary bytes (STYLE rule 11: peer input never panics). Whatever decodes must
//! re-encode to exactly the same bytes (the encoding is canonical), and those bytes must decode
//! to the same datagram.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshkit::wire::{self, Datagram};

fuzz_target!(|data: &[u8]| {
    let Ok(datagram) = wire::decode(data) else {
        return;
    };
    let bytes = encode(&datagram);
    assert_eq!(
        wire::decode(&bytes).as_ref(),
        Ok(&datagram),
        "re-encoded datagram decodes differently"
    );
    assert_eq!(bytes, data, "the encoding of a datagram is not canonical");
});

/// Encodes a datagram the way `Membership::poll_transmit` does: the message, then each update
/// through `append_update`.
fn encode(d: &Datagram) -> Vec<u8> {
    let mut buf = Vec::new();
    let count_at = wire::encode_message(d.sender, &d.message, &mut buf);
    let mut encoded = Vec::new();
    for update in &d.updates {
        encoded.clear();
        wire::encode_update(update, &mut encoded);
        assert!(
            wire::append_update(&mut buf, count_at, &encoded),
            "an update of a decoded datagram no longer fits"
        );
    }
    buf
}
