//! Reads arbitrary durable records back as a voter does at a restart
//! (`DurableState::from_records`), either raw or as mutations of a valid record set (a voter that
//! granted leases and compacted its log), and restarts a voter from whatever is accepted. Neither
//! may panic (a damaged disk is an error, not a crash), and a restarted voter's own records
//! (the checkpoint it writes when it starts recording) must read back to the same state.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{self, Unstructured};
use libfuzzer_sys::fuzz_target;
use meshkit::lease::{
    DurableState, DurableWrite, LeaseClient, LeaseConfig, LeaseGroup, RawLeaseConfig, Scope,
};
use meshkit::{Duration, Incarnation, Instant, NodeId};

const VOTER: NodeId = NodeId::new(1);
/// Records per input, at most.
const MAX_RECORDS: usize = 16;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(records) = records(&mut u) else {
        return;
    };
    let Ok(durable) = DurableState::from_records(records.iter().map(Vec::as_slice)) else {
        return;
    };
    let mut group = LeaseGroup::restart(config(), VOTER, durable.clone(), 7, Instant::ZERO);
    group.record_durable_writes();
    let mut written: Vec<Vec<u8>> = Vec::new();
    while let Some(write) = group.poll_durable() {
        apply(&mut written, write);
    }
    let again = DurableState::from_records(written.iter().map(Vec::as_slice))
        .expect("a voter's own checkpoint reads back");
    assert_eq!(again.hard_state(), durable.hard_state());
    assert_eq!(again.log_bounds(), durable.log_bounds());
    // Run the restarted voter a little: it must not trip over what it was given.
    let mut now = Instant::ZERO;
    let mut buf = Vec::new();
    for _ in 0..8 {
        let Some(at) = group.poll_timeout() else {
            break;
        };
        now = at.max(now);
        group.handle_timeout(now);
        while group.poll_durable().is_some() {}
        while group.poll_transmit(now, &mut buf).is_some() {}
        while group.poll_event().is_some() {}
    }
});

fn config() -> LeaseConfig {
    LeaseConfig::try_from(RawLeaseConfig {
        compact_after_entries: Some(16),
        ..RawLeaseConfig::default()
    })
    .expect("a valid lease config")
}

fn apply(file: &mut Vec<Vec<u8>>, write: DurableWrite) {
    match write {
        DurableWrite::Append(record) => file.push(record),
        DurableWrite::Replace(records) => *file = records,
    }
}

/// Raw records, or the valid set with some records changed, dropped, repeated or cut.
fn records(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<Vec<u8>>> {
    if u.ratio(1, 4)? {
        let n = u.int_in_range(0..=MAX_RECORDS)?;
        return (0..n).map(|_| u.arbitrary()).collect();
    }
    let mut records = valid().clone();
    for _ in 0..u.int_in_range(1..=4)? {
        if records.is_empty() {
            break;
        }
        let i = u.choose_index(records.len())?;
        match u.int_in_range(0..=4u8)? {
            0 => {
                let record = &mut records[i];
                if !record.is_empty() {
                    let at = u.choose_index(record.len())?;
                    record[at] ^= u.arbitrary::<u8>()?.max(1);
                }
            }
            1 => {
                let len = records[i].len();
                let keep = u.int_in_range(0..=len)?;
                records[i].truncate(keep);
            }
            2 => {
                records.remove(i);
            }
            3 => {
                let copy = records[i].clone();
                records.insert(u.choose_index(records.len())?, copy);
            }
            _ => {
                let record = &mut records[i];
                if record.len() >= 8 {
                    // Overwrite a u64 field somewhere with a chosen value.
                    let at = u.int_in_range(0..=record.len() - 8)?;
                    let v: u64 = u.arbitrary()?;
                    record[at..at + 8].copy_from_slice(&v.to_be_bytes());
                }
            }
        }
    }
    Ok(records)
}

/// The file of a one-voter group that granted and renewed leases across two compactions
/// (so it holds a snapshot record, appends, hard states and a conf state), built once.
fn valid() -> &'static Vec<Vec<u8>> {
    static VALID: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    VALID.get_or_init(|| {
        let mut now = Instant::ZERO;
        let mut group =
            LeaseGroup::bootstrap(config(), VOTER, &[VOTER], 1, now).expect("one voter");
        group.record_durable_writes();
        let mut client = LeaseClient::new(config(), VOTER, Incarnation::new(1), &[VOTER], 2);
        let mut file = Vec::new();
        let mut buf = Vec::new();
        let ttl = Duration::from_secs(10);
        for round in 0..200u32 {
            if let Some(at) = group.poll_timeout() {
                now = at.max(now);
                group.handle_timeout(now);
            }
            if group.is_leader() && round % 4 == 0 {
                let scope = Scope::new(&format!("fuzz/{}", round % 5)).expect("a valid scope");
                let _ = match client.holds(now, &scope) {
                    Some(_) => client.renew(now, scope).map(|_| ()),
                    None => client.acquire(now, scope, ttl).map(|_| ()),
                };
            }
            for _ in 0..4 {
                while let Some(write) = group.poll_durable() {
                    apply(&mut file, write);
                }
                while let Some(t) = client.poll_transmit(now, &mut buf) {
                    let _ = group.handle_message(now, VOTER, &buf[..t.len]);
                }
                while let Some(write) = group.poll_durable() {
                    apply(&mut file, write);
                }
                while let Some(t) = group.poll_transmit(now, &mut buf) {
                    let _ = client.handle_message(now, VOTER, &buf[..t.len]);
                }
            }
            while group.poll_event().is_some() {}
            while client.poll_event().is_some() {}
            if client.poll_timeout().is_some_and(|at| at <= now) {
                client.handle_timeout(now);
            }
        }
        file
    })
}
