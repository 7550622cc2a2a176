//! A running node: the QUIC transport, the driver of the core's `Node` and the control
//! endpoint, assembled from a [`NodeConfig`]. What `meshkitd` runs, and what the tests start
//! three of in one process.

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;

use meshkit::node::Node;
use meshkit::{Incarnation, NodeId};
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{NodeConfig, NodeConfigBuilder, NodeConfigError};
use meshkit_control::auth::AccessControl;
use meshkit_control::serve::{ControlError, ControlServer};
use meshkit_net::clock::{Clock, SystemClock};
use meshkit_net::reload::{CertReloader, TlsSource};
use meshkit_net::tls::TlsIdentity;
use meshkit_net::tls_stats::TlsStats;
use meshkit_net::transport::chaos::ChaosTransport;
use meshkit_net::transport::quic::{QuicError, QuicOptions, QuicTransport};
use meshkit_runtime::chaos_host::{ChaosEffects, FaultTypes};
use meshkit_runtime::driver::{
    ADDR_KEY, CLUSTER_KEY, CONTROL_KEY, Driver, LeadershipError, NodeHandle, VERSION_KEY, WIRE_KEY,
};
use meshkit_runtime::probe_host::{ProbeHandle, ProbeHost};

/// Why a node did not start. Nothing keeps running when this is returned.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration or its TLS files are unusable.
    #[error(transparent)]
    Config(#[from] NodeConfigError),
    /// The QUIC transport could not start.
    #[error(transparent)]
    Quic(#[from] QuicError),
    /// The control endpoint could not be bound (TCP and UDP, one port number) or configured.
    #[error("key `control`: {0}")]
    Control(#[from] ControlError),
    /// The token key or the audit log of `[access]` is unusable.
    #[error(transparent)]
    Access(#[from] meshkit_control::auth::AccessStartError),
    /// The metadata does not fit the membership's limits (`membership.max_metadata_bytes`).
    #[error("key `metadata.{key}`: {source}")]
    Metadata {
        /// The key.
        key: String,
        /// Why.
        source: meshkit::membership::MetadataError,
    },
    /// The lease voter could not start (an invalid voter set, an unusable Raft file).
    #[error("key `leadership`: {0}")]
    Leadership(#[from] meshkit_runtime::lease_host::LeadershipStartError),
    /// The task queues could not start (unusable checkpoint files).
    #[error(transparent)]
    Queues(#[from] meshkit_runtime::queue_host::QueueStartError),
    /// The advertised host name did not resolve (to an address peers can dial).
    #[error("key `advertise`: {0}")]
    Advertise(#[source] meshkit_net::peer_addr::ResolveError),
    /// The transport's bound address could not be read.
    #[error("local address of the transport: {0}")]
    LocalAddr(std::io::Error),
}

/// How a node's driver task ended ([`RunningNode::exited`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverExit {
    /// It stopped on a shutdown command, or because its transport closed.
    Stopped,
    /// A chaos `kill` experiment stopped it (logged as one error line): the embedder should
    /// end the process, as `meshkitd` does with status
    /// [`KILL_EXIT_STATUS`](meshkit_runtime::chaos_host::KILL_EXIT_STATUS), and its supervisor
    /// restart it.
    ChaosKilled,
    /// It panicked: a bug (no peer input may panic a node), already logged as one error
    /// line. The node no longer gossips, answers probes or serves leases, while the process
    /// and its control endpoint run on; the embedder should end the process with a non-zero
    /// status so that its supervisor restarts it, as `meshkitd` does.
    Panicked {
        /// The panic's message.
        message: String,
    },
}

/// A node started by [`start`]. Dropping it leaves the tasks running; call
/// [`RunningNode::stop`].
///
/// A panic in the driver (a bug) is not caught: the driver task ends, and
/// [`exited`](Self::exited) resolves with [`DriverExit::Panicked`]. Embedders should select on
/// it beside their shutdown signal and exit non-zero on a panic (the node cannot recover its
/// protocol state in place; a restart rejoins from scratch and from its Raft file).
#[derive(Debug)]
pub struct RunningNode {
    handle: NodeHandle,
    gossip_addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    driver: JoinHandle<()>,
    exit: watch::Receiver<Option<DriverExit>>,
    control: Option<JoinHandle<()>>,
    probes: ProbeHandle,
    fault_types: FaultTypes,
}

impl RunningNode {
    /// The control API's routes over this node (HTTP and gRPC, behind `access`), for a service
    /// that serves them from its own axum server: `.nest_service`, `.merge` or a listener of
    /// its own. The node's own control endpoint (`control`) serves the same router; a service
    /// may leave that unset and mount this instead. Build `access` from the configuration's
    /// `[access]` with [`AccessControl::from_config`] (each router so built writes its own
    /// audit log: give one node's routers one `AccessControl`, cloned).
    ///
    /// Requests that carry no client certificate (a listener without mutual TLS) are
    /// authorized by bearer token only.
    pub fn control_router(&self, access: AccessControl) -> axum::Router {
        meshkit_control::router(self.handle.clone(), access)
            .layer(axum::Extension(self.probes.clone()))
    }

    /// The node's probe host: register a probe of your own type with
    /// [`ProbeHandle::register_async`] (an [`AsyncProbe`](meshkit_runtime::probe_host::AsyncProbe))
    /// or [`ProbeHandle::register`] (the core's synchronous `Probe`); it shows in
    /// `GET /control/probes` and the `mesh_probe_*` metrics beside the built-ins
    /// ([`crate::probes`]).
    pub fn probes(&self) -> &ProbeHandle {
        &self.probes
    }

    /// The node's fault types of a service's own: register a
    /// [`FaultType`](meshkit_runtime::chaos_host::FaultType) with [`FaultTypes::register`], and
    /// chaos plans `{ kind = "custom", name = "<its name>" }` act on this node through its
    /// hooks, under the same `[chaos]` allow-list (as `custom:<name>`), maximum duration,
    /// two-step token, dead-man revert and audit as the built-in kinds (docs/diagnostics.md,
    /// "A fault type of your own"; `examples/slow_disk.rs`).
    pub fn fault_types(&self) -> &FaultTypes {
        &self.fault_types
    }

    /// The handle to its driver.
    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.handle.id()
    }
    /// The UDP address its QUIC transport is bound to.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }
    /// The address of its control endpoint, if it has one: the same port number on TCP (HTTP/2
    /// and HTTP/1.1 over TLS) and UDP (HTTP/3).
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// Stops the node as a crash would look to its peers (no leave): the driver ends, its
    /// transport closes, the control endpoint stops.
    pub async fn stop(self) {
        if let Some(control) = &self.control {
            control.abort();
        }
        if self.handle.shutdown().await.is_ok() {
            // The driver ends on the shutdown command; a panic in it was already reported.
            let _ = self.driver.await;
        }
    }

    /// Stops the node the way an operator means SIGTERM: it stops contending and releases the
    /// leases it holds, waits (at most [`RELEASE_WAIT`]) until the voters have committed each
    /// release, leaves the mesh, goes on running for `linger` so that the departure spreads by
    /// gossip, then stops. Peers see it `left`, not dead, and the other contenders for its
    /// leases ask for them as soon as they see it leave, instead of waiting out the TTL.
    ///
    /// Waiting for the commits matters on a loaded machine: a release still in flight when the
    /// node stops (its request lost, or queued behind a slow Raft leader) leaves the lease held
    /// by nobody alive until its TTL runs out.
    pub async fn shutdown_gracefully(self, linger: std::time::Duration) {
        // Subscribe before the drain, so that no commit can slip past between the two.
        let feed = match self.handle.leadership().await {
            Ok(Some(view)) => self.handle.leadership_feed(view.last_seq).await.ok(),
            _ => None,
        };
        match self.handle.drain().await {
            Ok(released) if !released.is_empty() => {
                let names: Vec<String> = released.iter().map(ToString::to_string).collect();
                tracing::info!(released = ?names, "releasing leases for the shutdown");
                if let Some(feed) = feed {
                    wait_for_releases(feed, names).await;
                }
            }
            Ok(_) | Err(LeadershipError::Disabled) => {}
            Err(error) => tracing::warn!(%error, "leases not released before the shutdown"),
        }
        if self.handle.leave().await.is_ok() {
            tokio::time::sleep(linger).await;
        }
        self.stop().await;
    }

    /// Resolves when the driver task ends, saying how; resolves at once if it already has.
    /// Cancel-safe: call it in a `select!` beside a shutdown signal.
    pub async fn exited(&self) -> DriverExit {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(seen) => seen.clone().unwrap_or(DriverExit::Stopped),
            // The supervising task is gone without a word: it was cancelled with the runtime.
            Err(_) => DriverExit::Stopped,
        }
    }

    /// Waits until the driver ends (on a shutdown command, a closed transport or a panic) and
    /// says how.
    pub async fn wait(self) -> DriverExit {
        let exit = self.exited().await;
        let _ = self.driver.await;
        if let Some(control) = self.control {
            control.abort();
        }
        exit
    }
}

/// How long a graceful shutdown waits for the voters to commit its releases before it leaves
/// anyway: a few Raft round trips and a request retry, even on a loaded machine.
pub const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until `feed` shows each of `scopes` released or otherwise given up (lost, expired,
/// transferred), or [`RELEASE_WAIT`] has passed; says which were not confirmed.
async fn wait_for_releases(
    mut feed: meshkit_runtime::driver::FeedSubscription,
    mut scopes: Vec<String>,
) {
    use meshkit_runtime::lease_host::Change;
    use tokio::sync::broadcast::error::RecvError;
    fn settle(scopes: &mut Vec<String>, change: &Change) {
        if let Change::Released { scope, .. }
        | Change::Lost { scope, .. }
        | Change::Expired { scope, .. }
        | Change::Transferred { scope, .. } = change
        {
            scopes.retain(|s| s != scope);
        }
    }
    for entry in feed.backlog.iter().flatten() {
        settle(&mut scopes, &entry.change);
    }
    let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
    while !scopes.is_empty() {
        match tokio::time::timeout_at(deadline, feed.live.recv()).await {
            Ok(Ok(entry)) => settle(&mut scopes, &entry.change),
            // Entries missed: what they said is unknown, so wait on for the rest of the time.
            Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) | Err(_) => break,
        }
    }
    if !scopes.is_empty() {
        tracing::warn!(
            unconfirmed = ?scopes,
            "releases not confirmed by the voters before the shutdown: those leases stay held until their TTL"
        );
    }
}

/// Runs `driver` on its own task under a supervising task that reports how it ended: a panic
/// is logged once, as an error, and published as [`DriverExit::Panicked`]. The returned handle
/// is the supervisor's (it ends right after the driver).
fn supervise(
    driver: impl Future<Output = ()> + Send + 'static,
    killed: Arc<std::sync::atomic::AtomicBool>,
) -> (JoinHandle<()>, watch::Receiver<Option<DriverExit>>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(driver);
    let supervisor = tokio::spawn(async move {
        let exit = match task.await {
            Err(error) if error.is_panic() => {
                let payload = error.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                tracing::error!(
                    %message,
                    "the node's driver panicked: it no longer gossips or serves leases"
                );
                DriverExit::Panicked { message }
            }
            Ok(()) if killed.load(std::sync::atomic::Ordering::Acquire) => DriverExit::ChaosKilled,
            Ok(()) | Err(_) => DriverExit::Stopped,
        };
        tx.send_replace(Some(exit));
    });
    (supervisor, rx)
}

/// A boot incarnation that grows across restarts: wall-clock seconds (the core's contract).
fn boot_incarnation() -> Incarnation {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    Incarnation::new(u32::try_from(secs).unwrap_or(u32::MAX))
}

/// Starts a node: binds its transport and control endpoint, publishes its address, joins its
/// seeds. Must be called inside a tokio runtime.
pub async fn start(config: &NodeConfig) -> Result<RunningNode, StartError> {
    let identity = config.load_tls()?;
    let not_after = identity.not_after_unix();
    let stand_in = config.load_stand_in()?;
    let mut chaos_config = config.chaos().clone();
    chaos_config.stand_in_not_after = stand_in.as_ref().and_then(TlsIdentity::not_after_unix);
    // The chaos wrapper and switches are always there; with `[chaos]` off they stay idle and a
    // message costs one atomic load (docs/benchmarks.md, "Chaos transport").
    let chaos = ChaosEffects::default();
    // One set of TLS counters for every listener; the reloader (unless `[tls] reload_interval`
    // is 0s) feeds both listeners new certificates when the files change, and the stand-in
    // while a `certificate-expiry` experiment runs.
    let tls_stats = Arc::new(TlsStats::default());
    let interval = config.tls_reload_interval();
    let (tls, reloader) = if interval.is_some() || stand_in.is_some() {
        let (mut reloader, source) = CertReloader::new(identity, tls_stats.clone());
        if let Some(stand_in) = stand_in {
            reloader = reloader.with_stand_in(stand_in, chaos.serve_stand_in.subscribe());
        }
        (source, Some(reloader))
    } else {
        if let Some(not_after) = not_after {
            tls_stats.set_cert_not_after(not_after);
        }
        (TlsSource::fixed(identity), None)
    };
    // A name is resolved before anything binds, so a typo leaves nothing running.
    let advertised = match config.advertise() {
        Some(addr) => Some(
            addr.resolve(Some(config.listen().ip()))
                .await
                .map_err(StartError::Advertise)?,
        ),
        None => None,
    };
    let transport = QuicTransport::bind_with(
        tls.clone(),
        config.listen(),
        QuicOptions::default(),
        tls_stats.clone(),
    )?;
    let bound = transport.local_addr().map_err(StartError::LocalAddr)?;
    let transport = ChaosTransport::new(transport, config.id(), chaos.links.clone());
    let advertise = advertised.unwrap_or(bound);
    // Bound before the driver starts, so a taken control port leaves nothing running.
    let control_server = match config.control() {
        Some(addr) => Some((
            ControlServer::bind_with(addr, tls.clone(), tls_stats)
                .await?
                .with_limits(config.control_limits())
                .with_h3_switch(chaos.refuse_h3.subscribe()),
            AccessControl::from_config(config.access())?,
        )),
        None => None,
    };
    let clock = SystemClock;
    let now = clock.now();
    // The core's randomness is seeded once here; a fixed seed in the config makes it repeatable.
    let seed = config
        .rng_seed()
        .unwrap_or_else(|| RandomState::new().hash_one(config.id().get()));
    let mut node = Node::new(
        config.membership().clone(),
        config.id(),
        boot_incarnation(),
        seed,
        now,
    );
    let wire = format!(
        "{}/{}",
        meshkit::wire::PROTOCOL_VERSION,
        meshkit::lease::wire::LEASE_PROTOCOL_VERSION
    );
    // Where the control endpoint answers: its bound address, or on a wildcard bind the
    // advertised host with the control port.
    let control = control_server.as_ref().map(|(server, _)| {
        let bound = server.local_addr();
        if bound.ip().is_unspecified() {
            SocketAddr::new(advertise.ip(), bound.port())
        } else {
            bound
        }
    });
    let own = [
        (ADDR_KEY, Some(advertise.to_string())),
        (CONTROL_KEY, control.map(|c| c.to_string())),
        (VERSION_KEY, Some(env!("CARGO_PKG_VERSION").to_owned())),
        (WIRE_KEY, Some(wire)),
    ];
    let published = own
        .iter()
        .filter_map(|(k, v)| Some((*k, v.as_deref()?)))
        .chain(
            config
                .metadata()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
    for (key, value) in published {
        node.set_metadata(now, key, value.as_bytes())
            .map_err(|source| StartError::Metadata {
                key: key.to_owned(),
                source,
            })?;
    }
    let (mut driver, handle) = Driver::new(node, transport, clock);
    driver = driver
        .with_cert_expiry(not_after)
        .with_chaos(chaos_config, chaos.clone());
    if let Some(leadership) = config.leadership() {
        driver = driver.with_leadership(leadership)?;
    }
    if let Some(queues) = config.queues() {
        driver = driver.with_queues(queues)?;
    }
    let (driver, exit) = supervise(driver, chaos.killed.clone());
    // The probe host: its own task and timer on the node's clock, its jitter from the node's
    // seed (a fixed `seed` replays the probe schedule too). It ends when its handles are gone.
    let (probe_host, probes) = ProbeHost::new(config.id(), seed ^ PROBE_SEED_SALT, clock);
    tokio::spawn(probe_host.run());
    if let Some(reloader) = reloader {
        // Ends by itself once the transport and the control server (its sources) are gone.
        tokio::spawn(reloader.run(interval));
    }
    let (control, control_addr) = match control_server {
        Some((server, access)) => {
            let bound = server.local_addr();
            let chaos = Arc::new(meshkit_control::chaos::ChaosControl::new(
                chaos_relay(config.tls_files()).map(Arc::new),
                Some(config.chaos().clone()),
            ));
            let router = meshkit_control::router_with_chaos(handle.clone(), access, chaos)
                .layer(axum::Extension(probes.clone()));
            let task = tokio::spawn(server.serve(router));
            (Some(task), Some(bound))
        }
        None => (None, None),
    };
    seeds::join(&handle, config.seeds(), bound.ip()).await;
    let leadership = config.leadership();
    let context = crate::probes::BuiltinContext {
        leadership: leadership.is_some(),
        voter: leadership.is_some_and(|l| l.join_as_voter || l.voters.contains(&config.id())),
        control: control_addr.map(|addr| (addr, config.tls_files().clone())),
        cluster: config.metadata().get(CLUSTER_KEY).cloned(),
    };
    if let Err(error) =
        crate::probes::register_builtins(&probes, &handle, config.probes(), context).await
    {
        // Only a stopped host refuses a fresh set of distinct names: the node is going down.
        tracing::warn!(%error, "the built-in probes were not registered");
    }
    tracing::info!(id = %config.id(), gossip = %bound, control = ?control_addr, "node started");
    Ok(RunningNode {
        handle,
        gossip_addr: bound,
        control_addr,
        driver,
        exit,
        control,
        probes,
        fault_types: chaos.fault_types,
    })
}

/// Mixed into the node's seed for its probe host's, so the probe jitter and the core draw from
/// different streams.
const PROBE_SEED_SALT: u64 = 0x7072_6f62_6573_0001;

/// The client a node relays chaos experiments with (`POST /control/chaos/relay` on the other
/// targets): its own certificate, the mesh's CA, h3 then h2. `None`, logged, when the files
/// do not load (they just did, for the transport): the node's chaos routes then reach only
/// itself, and say so per target.
fn chaos_relay(files: &meshkit_net::tls::TlsFiles) -> Option<meshkit_control::chaos::RelayClient> {
    let config = meshkit_client::ClientConfig::new(&files.ca)
        .and_then(|c| c.with_identity(&files.cert, &files.key))
        .map(|c| {
            c.with_request_timeout(meshkit_control::chaos::RELAY_TIMEOUT)
                .with_h3_timeout(std::time::Duration::from_millis(500))
        })
        .and_then(|c| meshkit_client::Client::new(&c));
    match config {
        Ok(client) => Some(client),
        Err(error) => {
            tracing::warn!(%error, "no chaos relay client: experiments reach only this node");
            None
        }
    }
}

impl NodeConfigBuilder {
    /// Builds the configuration ([`NodeConfigBuilder::build`]) and starts the node ([`start`]).
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StartError::Config`] for a key [`NodeConfigBuilder::build`] refuses, otherwise as
    /// [`start`].
    pub async fn start(self) -> Result<RunningNode, StartError> {
        start(&self.build()?).await
    }
}

/// Resolves on Ctrl-C or SIGTERM: what `meshkitd` (and a host) stops on.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Arms the faults the process environment asks for (`MESHKITD_FAULT_PANIC_DRIVER_AFTER_MS`),
/// when this crate is built with its `fault-injection` feature, which only the tests enable;
/// otherwise does nothing. `meshkitd` calls it once its node runs.
pub fn arm_test_faults(handle: &NodeHandle) {
    #[cfg(feature = "fault-injection")]
    fault::arm(handle);
    #[cfg(not(feature = "fault-injection"))]
    let _ = handle;
}

/// Test-only fault injection, compiled only with the `fault-injection` feature (which only the
/// tests enable): a `meshkitd` built without it has no such hook, and nothing a peer or a
/// client sends reaches it either way (it reads the process environment once, at start).
#[cfg(feature = "fault-injection")]
mod fault {
    use std::time::Duration;

    use meshkit_runtime::driver::NodeHandle;

    /// Milliseconds after start at which the driver is made to panic, as a bug would.
    const PANIC_DRIVER_AFTER_MS: &str = "MESHKITD_FAULT_PANIC_DRIVER_AFTER_MS";
    /// Longest delay taken.
    const MAX_DELAY: Duration = Duration::from_secs(60);

    /// Arms the faults the environment asks for.
    pub(super) fn arm(handle: &NodeHandle) {
        let Ok(text) = std::env::var(PANIC_DRIVER_AFTER_MS) else {
            return;
        };
        let Some(after) = text
            .parse()
            .ok()
            .map(Duration::from_millis)
            .filter(|d| *d <= MAX_DELAY)
        else {
            tracing::warn!(%text, "fault injection: {PANIC_DRIVER_AFTER_MS} is not 0..=60000 ms; ignored");
            return;
        };
        tracing::warn!(?after, "fault injection: the driver will panic");
        let handle = handle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = handle.panic_for_test().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use meshkit::Instant;
    use meshkit::config::{Config, Profile};

    use super::*;
    use meshkit_net::clock::SystemClock;
    use meshkit_net::transport::memory::MemoryNetwork;

    fn driver(
        network: &MemoryNetwork,
    ) -> (
        Driver<meshkit_net::transport::memory::MemoryTransport, SystemClock>,
        NodeHandle,
    ) {
        let id = NodeId::new(1);
        let node = Node::new(
            Config::from_profile(Profile::Lan),
            id,
            Incarnation::new(1),
            1,
            Instant::ZERO,
        );
        Driver::new(node, network.attach(id), SystemClock)
    }

    /// A panic in the driver is reported as `Panicked` (meshkitd exits non-zero on it), not
    /// swallowed (before: the task died, `/healthz` said "driver stopped", nothing restarted).
    #[tokio::test]
    async fn a_driver_panic_is_reported() {
        let network = MemoryNetwork::new();
        let (driver, handle) = driver(&network);
        let (supervisor, exit) = supervise(driver, Arc::default());
        handle.panic_for_test().await.expect("the driver runs");
        let mut exit = exit;
        let seen = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            exit.wait_for(Option::is_some),
        )
        .await
        .expect("the supervisor reports within 5 s")
        .expect("the supervisor publishes before it ends")
        .clone();
        assert!(
            matches!(&seen, Some(DriverExit::Panicked { message }) if message.contains("test-only")),
            "{seen:?}"
        );
        supervisor
            .await
            .expect("the supervisor itself does not panic");
    }

    /// A chaos `kill` on this node stops the driver and is reported as `ChaosKilled` (meshkitd
    /// exits 75 on it), not as a plain stop.
    #[tokio::test]
    async fn a_chaos_kill_is_reported_as_such() {
        use meshkit::Duration;
        use meshkit::diag::fault::{ClusterView, FaultKind, FaultPlan, Selector, resolve};
        use meshkit_runtime::chaos_host::{ChaosConfig, ExperimentRef};

        let network = MemoryNetwork::new();
        let (driver, handle) = driver(&network);
        let effects = ChaosEffects::default();
        let config = ChaosConfig {
            enabled: true,
            allowed_kinds: ["kill".to_owned()].into(),
            ..ChaosConfig::default()
        };
        let (supervisor, mut exit) = supervise(
            driver.with_chaos(config, effects.clone()),
            effects.killed.clone(),
        );
        let plan = FaultPlan::new(
            FaultKind::Kill {},
            Selector::Indices(vec![0]),
            Duration::from_secs(5),
        )
        .unwrap();
        let radius = resolve(&plan, &ClusterView::numbered(1, 1)).unwrap();
        let id = ExperimentRef {
            origin: NodeId::new(1),
            serial: 1,
        };
        // The reply may or may not come before the driver stops.
        let _ = handle.chaos_apply(id, plan, radius).await;
        supervisor.await.expect("the supervisor ends");
        assert_eq!(*exit.borrow_and_update(), Some(DriverExit::ChaosKilled));
        assert!(handle.snapshot().await.is_err(), "the driver is gone");
    }

    /// A join no seed answered (the seed was not listening yet) is sent again until a member
    /// answers: node 2 starts 1.5 s after node 1 joined through it, and still learns of it.
    #[tokio::test]
    async fn a_join_nobody_answered_is_sent_again() {
        use meshkit_runtime::driver::SeedPeer;
        use std::time::Duration;

        let network = MemoryNetwork::new();
        let (driver1, handle1) = driver(&network);
        tokio::spawn(driver1);
        let seed = SeedPeer {
            id: NodeId::new(2),
            // The memory network routes by id; the address only fills the book.
            addr: "127.0.0.1:9".parse().unwrap(),
        };
        handle1.join(vec![seed]).await.unwrap();
        tokio::spawn(seeds::rejoin_until_heard(handle1.clone(), vec![seed]));
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let node2 = Node::new(
            Config::from_profile(Profile::Lan),
            NodeId::new(2),
            Incarnation::new(1),
            2,
            Instant::ZERO,
        );
        let (driver2, _handle2) = Driver::new(node2, network.attach(NodeId::new(2)), SystemClock);
        tokio::spawn(driver2);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let snapshot = handle1.snapshot().await.unwrap();
            if snapshot
                .peer(NodeId::new(2))
                .is_some_and(|p| p.state == meshkit::membership::MemberState::Alive)
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node 1 never learned of node 2: {:?}",
                snapshot.peers
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn a_driver_shut_down_is_reported_stopped() {
        let network = MemoryNetwork::new();
        let (driver, handle) = driver(&network);
        let (supervisor, mut exit) = supervise(driver, Arc::default());
        handle.shutdown().await.expect("the driver runs");
        supervisor.await.expect("the supervisor ends");
        assert_eq!(*exit.borrow_and_update(), Some(DriverExit::Stopped));
    }
}

/// Joining through seeds written as addresses or as names.
mod seeds {
    use std::net::IpAddr;
    use std::time::Duration;

    use meshkit::membership::MemberState;

    use meshkit_runtime::driver::{NodeHandle, SeedPeer};

    use crate::config::Seed;

    /// The first wait before a name that did not resolve is asked again; it doubles up to
    /// [`RETRY_MAX`].
    const RETRY_FIRST: Duration = Duration::from_millis(250);
    /// The first wait for a join's answer before joining again: a seed answers within a round
    /// trip, so a second is long even on a loaded machine; it doubles up to [`RETRY_MAX`].
    const REJOIN_FIRST: Duration = Duration::from_secs(1);
    /// The longest wait between two attempts.
    const RETRY_MAX: Duration = Duration::from_secs(5);
    /// How long names are retried. Containers and pods start in any order and a name appears
    /// in DNS only once its container runs, so a name that does not resolve yet is not an
    /// error at start; ten minutes covers a slow rollout, and a node already in the mesh
    /// (joined through another seed, or joined by others) needs none of them.
    const RETRY_FOR: Duration = Duration::from_secs(600);

    /// Joins through the seeds written as addresses now, and through those written as names
    /// as each resolves (a task that ends when all did, when [`RETRY_FOR`] has passed, or when
    /// the node stops). `family` is the transport's: a name is resolved to an address of it.
    pub(super) async fn join(handle: &NodeHandle, seeds: &[Seed], family: IpAddr) {
        let (ready, named): (Vec<&Seed>, Vec<&Seed>) =
            seeds.iter().partition(|s| s.addr.socket_addr().is_some());
        let ready: Vec<SeedPeer> = ready
            .iter()
            .filter_map(|s| {
                Some(SeedPeer {
                    id: s.id,
                    addr: s.addr.socket_addr()?,
                })
            })
            .collect();
        if !ready.is_empty() {
            // The driver was just spawned and holds the receiver: this cannot fail.
            let _ = handle.join(ready.clone()).await;
            tokio::spawn(rejoin_until_heard(handle.clone(), ready));
        }
        if !named.is_empty() {
            let named: Vec<Seed> = named.into_iter().cloned().collect();
            tokio::spawn(resolve_and_join(handle.clone(), named, family));
        }
    }

    /// Joins through `seeds` again, with the same backoff as names, while this node holds no
    /// other member up (for at most [`RETRY_FOR`]). A join is one datagram to each seed: when a
    /// seed is not listening yet, or its first dial fails (a container's network not ready, a
    /// loaded machine), nothing answers, nobody learns of this node, and before this it stayed
    /// alone for good (seen in a compose run at load 31: `docker restart` was the only fix).
    /// Once any member is up, membership's own gossip and anti-entropy carry the rest.
    pub(super) async fn rejoin_until_heard(handle: NodeHandle, seeds: Vec<SeedPeer>) {
        let give_up = tokio::time::Instant::now() + RETRY_FOR;
        let mut wait = REJOIN_FIRST;
        let mut first = true;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = handle.stopped() => return,
            }
            let Ok(snapshot) = handle.snapshot().await else {
                return; // the node stopped
            };
            let others_up = snapshot.peers.iter().any(|p| {
                p.id != snapshot.local_id
                    && matches!(p.state, MemberState::Alive | MemberState::Suspect)
            });
            if others_up {
                return;
            }
            if tokio::time::Instant::now() + wait > give_up {
                tracing::warn!(
                    ?seeds,
                    "no member answered a join in {RETRY_FOR:?}; no longer tried"
                );
                return;
            }
            if first {
                tracing::warn!(?seeds, "no member answered the join yet; joining again");
                first = false;
            } else {
                tracing::debug!(?seeds, "no member answered the join yet; joining again");
            }
            if handle.join(seeds.clone()).await.is_err() {
                return;
            }
            wait = (wait * 2).min(RETRY_MAX);
        }
    }

    async fn resolve_and_join(handle: NodeHandle, mut pending: Vec<Seed>, family: IpAddr) {
        let give_up = tokio::time::Instant::now() + RETRY_FOR;
        let mut wait = RETRY_FIRST;
        let mut first_attempt = true;
        loop {
            let mut resolved = Vec::new();
            let mut unresolved = Vec::new();
            for seed in pending {
                match seed.addr.resolve(Some(family)).await {
                    Ok(addr) => {
                        tracing::info!(seed = %seed.id, name = %seed.addr, %addr, "seed resolved");
                        resolved.push(SeedPeer { id: seed.id, addr });
                    }
                    Err(error) => {
                        // The first failure says why at warn, the retries at debug: a rollout
                        // that takes minutes does not fill the log.
                        if first_attempt {
                            tracing::warn!(seed = %seed.id, %error, "seed does not resolve yet; retrying");
                        } else {
                            tracing::debug!(seed = %seed.id, %error, "seed does not resolve yet");
                        }
                        unresolved.push(seed);
                    }
                }
            }
            first_attempt = false;
            if !resolved.is_empty() {
                if handle.join(resolved.clone()).await.is_err() {
                    return; // the node stopped
                }
                tokio::spawn(rejoin_until_heard(handle.clone(), resolved));
            }
            if unresolved.is_empty() {
                return;
            }
            if tokio::time::Instant::now() + wait > give_up {
                let names: Vec<String> = unresolved
                    .iter()
                    .map(|s| format!("{}@{}", s.id, s.addr))
                    .collect();
                tracing::warn!(seeds = ?names, "seeds did not resolve in {RETRY_FOR:?}; no longer tried");
                return;
            }
            pending = unresolved;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = handle.stopped() => return,
            }
            wait = (wait * 2).min(RETRY_MAX);
        }
    }
}
