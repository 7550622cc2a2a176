//! A loopback relay in front of one node's control port that can slow answers down or refuse
//! them: the "slow responses" and "control listener refusing" faults of the probe agent's
//! acceptance test.
//!
//! The control port is TCP (HTTP/2 over TLS) and UDP (HTTP/3 over QUIC) under one number, so
//! the relay listens on both under one port of its own and forwards each to the node. The
//! client's TLS checks the node's certificate by name, not by address, so nothing else
//! changes. In [`RelayMode::Delay`] every chunk the node sends back waits the delay first:
//! requests still succeed, just slower (a gray failure, unlike a kill). In
//! [`RelayMode::Refuse`] the address refuses the API while the node stays in its mesh: new TCP
//! connections are closed at once, open ones are cut, datagrams are dropped. Every task stops
//! when the [`Relay`] is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the relay does to the node's answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayMode {
    /// Forward at once.
    Pass,
    /// Hold every answer this long before forwarding it.
    Delay(Duration),
    /// Close TCP connections and drop datagrams.
    Refuse,
}

impl RelayMode {
    fn delay(self) -> Duration {
        match self {
            Self::Pass | Self::Refuse => Duration::ZERO,
            Self::Delay(d) => d,
        }
    }
}

/// Resolves once the mode is [`RelayMode::Refuse`] (never if the relay is gone).
async fn refusing(mut mode: watch::Receiver<RelayMode>) {
    loop {
        if *mode.borrow_and_update() == RelayMode::Refuse {
            return;
        }
        if mode.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The relay; dropping it stops every task.
pub struct Relay {
    /// Where clients connect (TCP and UDP, one port).
    pub addr: SocketAddr,
    mode: watch::Sender<RelayMode>,
    _tasks: JoinSet<()>,
}

impl Relay {
    /// A relay to `node` (its control address) on a free loopback port for both TCP and UDP.
    pub async fn start(node: SocketAddr) -> Self {
        let (tcp, udp) = bind_pair().await;
        let addr = tcp.local_addr().expect("its address");
        let (mode, rx) = watch::channel(RelayMode::Pass);
        let mut tasks = JoinSet::new();
        tasks.spawn(tcp_accept(tcp, node, rx.clone()));
        tasks.spawn(udp_relay(Arc::new(udp), node, rx));
        Self {
            addr,
            mode,
            _tasks: tasks,
        }
    }

    /// Changes what the relay does from now on.
    pub fn set(&self, mode: RelayMode) {
        self.mode.send_replace(mode);
    }
}

/// A TCP listener and a UDP socket on the same free loopback port.
async fn bind_pair() -> (TcpListener, UdpSocket) {
    for _ in 0..32 {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind TCP");
        let addr = tcp.local_addr().expect("its address");
        if let Ok(udp) = UdpSocket::bind(addr).await {
            return (tcp, udp);
        }
    }
    panic!("no loopback port free for both TCP and UDP in 32 tries");
}

async fn tcp_accept(listener: TcpListener, node: SocketAddr, mode: watch::Receiver<RelayMode>) {
    let mut connections = JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        if *mode.borrow() == RelayMode::Refuse {
            // Dropped unanswered: the client's handshake fails at once.
            continue;
        }
        let mode = mode.clone();
        connections.spawn(async move {
            let Ok(server) = TcpStream::connect(node).await else {
                return;
            };
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut server_rx, mut server_tx) = server.into_split();
            let up = async {
                let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
                let _ = server_tx.shutdown().await;
            };
            let down = async {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match server_rx.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let delay = mode.borrow().delay();
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    if client_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = client_tx.shutdown().await;
            };
            // Refusing cuts the connection: both halves are dropped, the client sees it closed.
            tokio::select! {
                _ = async { tokio::join!(up, down) } => {}
                () = refusing(mode.clone()) => {}
            }
        });
    }
}

/// One upstream socket per client address; the node's datagrams go back through the
/// listening socket after the mode's delay (each on its own timer, so a delay does not
/// serialise them).
async fn udp_relay(socket: Arc<UdpSocket>, node: SocketAddr, mode: watch::Receiver<RelayMode>) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, client)) = socket.recv_from(&mut buf).await {
        let upstream = match upstreams.get(&client) {
            Some(u) => u.clone(),
            None => {
                let Ok(u) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if u.connect(node).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                upstreams.insert(client, u.clone());
                let (back, from, mode) = (socket.clone(), u.clone(), mode.clone());
                tasks.spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(n) = from.recv(&mut buf).await {
                        if *mode.borrow() == RelayMode::Refuse {
                            continue;
                        }
                        let datagram = buf[..n].to_vec();
                        let delay = mode.borrow().delay();
                        let back = back.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = back.send_to(&datagram, client).await;
                        });
                    }
                });
                u
            }
        };
        if *mode.borrow() != RelayMode::Refuse {
            let _ = upstream.send(&buf[..n]).await;
        }
    }
}
