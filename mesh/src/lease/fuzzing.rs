//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not part of MeshKit's API
//! and not semver-stable). Each takes arbitrary bytes, decodes them as a peer's datagram or a
//! durable record would be decoded, and checks the round-trip property where the format has an
//! encoder: whatever decodes re-encodes to the same bytes (the encodings are canonical) and
//! decodes to the same value. A property violation panics, which the fuzzer reports.

use super::wire::{self, LeaseMessage};

/// A lease datagram (Raft message, request, response, notice). Returns whether it decoded.
pub fn message_round_trip(bytes: &[u8]) -> bool {
    let _ = wire::recipient(bytes);
    let Ok((sender, message)) = wire::decode(bytes) else {
        return false;
    };
    let mut again = Vec::new();
    let cut = wire::encode(sender, &message, &mut again);
    let decoded = wire::decode(&again).expect("a re-encoded lease datagram decodes");
    if cut == 0 {
        assert_eq!(
            decoded,
            (sender, message),
            "re-encoded datagram decodes differently"
        );
        assert_eq!(again, bytes, "the lease datagram encoding is not canonical");
    } else {
        // Only a snapshot message over a datagram can lose entries on the way out.
        assert!(
            matches!(&message, LeaseMessage::Raft(m) if m.has_snapshot()),
            "entries cut from a message that decoded within a datagram"
        );
    }
    true
}

/// Snapshot data: an encoded lease table. Returns whether it decoded.
pub fn table_round_trip(bytes: &[u8]) -> bool {
    let Ok((applied, table)) = wire::decode_table(bytes) else {
        return false;
    };
    let again = wire::encode_table(&table, applied);
    assert_eq!(
        wire::decode_table(&again).as_ref(),
        Ok(&(applied, table)),
        "re-encoded table decodes differently"
    );
    assert_eq!(again, bytes, "the table encoding is not canonical");
    true
}

/// Entry data (a replicated command) and entry context (a voter change). Returns whether
/// either decoded.
pub fn entry_round_trip(bytes: &[u8]) -> bool {
    let mut decoded = false;
    if let Ok(command) = wire::decode_command(bytes) {
        let again = wire::encode_command(&command);
        assert_eq!(wire::decode_command(&again).as_ref(), Ok(&command));
        assert_eq!(again, bytes, "the command encoding is not canonical");
        decoded = true;
    }
    if let Ok(change) = wire::decode_voter_change(bytes) {
        let again = wire::encode_voter_change(change);
        assert_eq!(wire::decode_voter_change(&again), Ok(change));
        assert_eq!(again, bytes, "the voter change encoding is not canonical");
        decoded = true;
    }
    decoded
}
