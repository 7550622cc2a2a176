//! One dial at a time per server, so that concurrent first requests share a connection.
//!
//! Why: requests that find no cached connection used to dial one each. A hundred concurrent
//! first requests to one node (the chaos fan-out of a hundred experiments, a `meshctl` fan-out)
//! were a hundred TLS handshakes from one address, and the server's per-address handshake
//! limit (`[control_limits] max_per_address`, 16 by default) refused most of them.
//!
//! Now the first request to find no connection dials while holding the server's gate; the
//! others wait for that dial to end and take its connection from the cache. If it failed they
//! dial themselves, as before: a server that is down costs the waiters one extra dial's time,
//! never a failure they would not have had.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use super::lock;

/// Gates by server. Entries nobody holds or waits on are dropped when the map grows past
/// [`super::MAX_SERVERS`].
#[derive(Debug, Default)]
pub(super) struct DialGates {
    gates: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>>,
}

/// What a request found at the gate.
pub(super) enum Turn {
    /// Nobody was dialling: this request dials; the gate stays closed until this is dropped.
    Dial(#[expect(dead_code, reason = "held for its drop")] OwnedMutexGuard<()>),
    /// Another request was dialling and has finished: look in the cache first.
    Waited,
}

impl DialGates {
    /// Takes `server`'s gate, or waits until the dial in progress ends.
    pub(super) async fn enter(&self, server: SocketAddr) -> Turn {
        let gate = {
            let mut gates = lock(&self.gates);
            if gates.len() >= super::MAX_SERVERS && !gates.contains_key(&server) {
                gates.retain(|_, g| Arc::strong_count(g) > 1);
            }
            gates.entry(server).or_default().clone()
        };
        match gate.clone().try_lock_owned() {
            Ok(guard) => Turn::Dial(guard),
            Err(_) => {
                drop(gate.lock().await);
                Turn::Waited
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_request_dials_and_the_others_wait_for_it() {
        let gates = Arc::new(DialGates::default());
        let server = SocketAddr::from(([127, 0, 0, 1], 8101));
        let first = gates.enter(server).await;
        assert!(matches!(first, Turn::Dial(_)));
        let waiter = tokio::spawn({
            let gates = gates.clone();
            async move { matches!(gates.enter(server).await, Turn::Waited) }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "a second request waits while the first dials"
        );
        let other = SocketAddr::from(([127, 0, 0, 1], 8102));
        assert!(
            matches!(gates.enter(other).await, Turn::Dial(_)),
            "another server has its own gate"
        );
        drop(first);
        assert!(
            waiter.await.unwrap(),
            "the waiter is told to look in the cache"
        );
    }
}
