//! Messages too large for a QUIC datagram travel on a stream between two real QUIC transports
//! on loopback: a 200 KiB message arrives whole with the sender from its certificate, one over
//! the receiver's limit is refused without closing the connection, and ordinary messages still
//! go by datagram.

mod common;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{TempDir, eventually};
use meshkit::NodeId;
use meshkit_node::reload::TlsSource;
use meshkit_node::tls::TlsIdentity;
use meshkit_node::transport::quic::{QuicOptions, QuicTransport};
use meshkit_node::transport::{Received, Transport};

/// How long one message may take to arrive on loopback (a loaded 2-core machine included).
const ARRIVAL_LIMIT: Duration = Duration::from_secs(10);
/// The receiver's stream message limit in this test.
const LIMIT_BYTES: usize = 256 * 1024;

fn transport(dir: &std::path::Path, id: u64, options: QuicOptions) -> QuicTransport {
    let identity = TlsIdentity::load(
        &dir.join(format!("node-{id}.pem")),
        &dir.join(format!("node-{id}.key")),
        &dir.join("ca.pem"),
    )
    .expect("load the node's TLS files");
    QuicTransport::bind_with(
        TlsSource::fixed(identity),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        options,
        Arc::default(),
    )
    .expect("bind a QUIC transport on loopback")
}

/// The next message `t` receives, within [`ARRIVAL_LIMIT`].
async fn next(t: &mut QuicTransport) -> Option<Received> {
    tokio::time::timeout(ARRIVAL_LIMIT, poll_fn(|cx| t.poll_recv(cx)))
        .await
        .ok()
        .flatten()
}

/// A recognisable message of `len` bytes: every byte depends on its position and on `salt`.
fn message(len: usize, salt: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 8) as u8 ^ salt)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_travel_on_streams_and_oversized_ones_are_refused() {
    // The refusals are logged at warn: shown with the test's output when it fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let dir = TempDir::new("streams");
    meshkit_node::certs::write_dev_certs(dir.path(), 2).expect("make certificates");
    // node-1 sends with the default limit (16 MiB); node-2 takes at most LIMIT_BYTES.
    let mut a = transport(dir.path(), 1, QuicOptions::default());
    let limited = QuicOptions::default().with_max_stream_message_bytes(LIMIT_BYTES);
    let mut b = transport(dir.path(), 2, limited);
    let b_addr = b.local_addr().unwrap();
    let (id_a, id_b) = (NodeId::new(1), NodeId::new(2));

    // An ordinary message goes by datagram (and dials the connection).
    let small = message(300, 1);
    a.send(id_b, Some(b_addr), small.clone());
    let got = next(&mut b).await.expect("the small message arrives");
    assert_eq!((got.from, &got.datagram), (id_a, &small));
    assert_eq!(
        b.stats().stream_messages_received,
        0,
        "a datagram, not a stream"
    );

    // 200 KiB: on a stream, whole, from node-1 as its certificate says.
    let large = message(200 * 1024, 2);
    a.send(id_b, Some(b_addr), large.clone());
    let got = next(&mut b).await.expect("the 200 KiB message arrives");
    assert_eq!(got.from, id_a);
    assert!(got.datagram == large, "the 200 KiB message arrived altered");
    let stats = b.stats();
    assert_eq!(
        (stats.stream_messages_received, stats.stream_bytes_received),
        (1, large.len() as u64)
    );
    let acknowledged = eventually(ARRIVAL_LIMIT, || async {
        a.stats().stream_messages_sent == 1
    })
    .await;
    assert!(acknowledged, "the sender never counted the stream message");
    assert_eq!(a.stats().stream_bytes_sent, large.len() as u64);

    // Over the receiver's limit (within the sender's): refused and counted by the receiver,
    // and the connection goes on. (The sender may count it sent: QUIC acknowledges a stream's
    // bytes before the application refuses them.)
    let oversized = message(LIMIT_BYTES + 1, 3);
    a.send(id_b, Some(b_addr), oversized);
    let refused = eventually(ARRIVAL_LIMIT, || async { b.stats().streams_refused == 1 }).await;
    assert!(
        refused,
        "the oversized message was not refused: receiver {:?}, sender {:?}",
        b.stats(),
        a.stats()
    );
    let after = message(100, 4);
    a.send(id_b, Some(b_addr), after.clone());
    let also_large = message(LIMIT_BYTES, 5);
    a.send(id_b, Some(b_addr), also_large.clone());
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            next(&mut b)
                .await
                .expect("messages after the refusal arrive"),
        );
    }
    // The datagram and the stream may arrive in either order.
    got.sort_by_key(|r| r.datagram.len());
    assert_eq!(got[0].datagram, after);
    assert!(
        got[1].datagram == also_large,
        "the message at the limit arrived altered"
    );
    assert_eq!(b.stats().stream_messages_received, 2);
    assert_eq!(a.stats().connections_opened, 1, "one connection throughout");

    // A message over the sender's own limit is not sent at all, in either direction.
    b.send(id_a, None, message(LIMIT_BYTES + 1, 6));
    assert_eq!(b.stats().stream_messages_dropped, 1);
}
