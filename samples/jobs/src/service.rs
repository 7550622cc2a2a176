//! `mesh-jobs run`: one node of the sample service. It starts a MeshKit node through the
//! builder ([`Cluster::node_config`]), runs worker tasks that lease jobs from every shard's
//! queue through the node's handle, and serves its own axum app (`POST /jobs`,
//! `GET /jobs/stats`) with MeshKit's control router mounted under `/mesh` in the same server.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meshkit::queue::{OwnershipToken, QueueError};
use meshkit::shard::ShardId;
use meshkit_node::control::auth::{AccessControl, AccessStartError};
use meshkit_node::driver::NodeHandle;
use meshkit_node::node::{DriverExit, StartError};
use meshkit_node::queue_host::{LeasedItem, QueueCallError};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::watch;

use crate::cluster::{Cluster, ClusterError, NAMESPACE};
use crate::job::{Accepted, Job, Record};

/// How long `POST /jobs` retries a routing race (no owner known yet, the owner rebuilding its
/// queue after a failover) before answering 503: longer than a shard lease's TTL plus the
/// queue's recovery wait, so a producer posting during a failover gets its answer.
const ENQUEUE_RETRY_FOR: Duration = Duration::from_secs(10);
/// A worker's pause after a pass over every shard found nothing to do.
const IDLE_PAUSE: Duration = Duration::from_millis(50);

/// Why `mesh-jobs run` stopped with an error.
#[derive(Debug, Error)]
pub(crate) enum RunError {
    /// The cluster file.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A file of the node's directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// MeshKit did not start the node.
    #[error("the node did not start: {0}")]
    Start(#[from] StartError),
    /// The control API's access configuration.
    #[error("the control router: {0}")]
    Access(#[from] AccessStartError),
    /// The HTTP address is taken.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The node's driver panicked (a MeshKit bug): the process exits non-zero so that a
    /// supervisor restarts it.
    #[error("the node's driver panicked: {0}")]
    DriverPanicked(String),
}

/// What the workers of this node did, for `GET /jobs/stats`.
#[derive(Debug, Default)]
struct Counters {
    leased: AtomicU64,
    processed: AtomicU64,
    completed: AtomicU64,
    refused: AtomicU64,
    unknown: AtomicU64,
    bad_payloads: AtomicU64,
}

/// The service's state, shared by its handlers and workers.
#[derive(Debug)]
struct Service {
    node: u64,
    handle: NodeHandle,
    shards: u32,
    results: Mutex<File>,
    results_path: PathBuf,
    counters: Counters,
}

impl Service {
    fn shard(&self, index: u32) -> Option<ShardId> {
        ShardId::new(NAMESPACE, index).ok()
    }

    /// Appends one line to the results file. A line is one `write` to a file opened for
    /// appending: a `kill -9` keeps every line written (the page cache survives the process),
    /// which is what the walkthrough's check reads.
    fn record(&self, record: &Record) {
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        let written = match self.results.lock() {
            Ok(mut file) => file.write_all(&line),
            Err(poisoned) => poisoned.into_inner().write_all(&line),
        };
        if let Err(error) = written {
            tracing::error!(path = %self.results_path.display(), %error, "results not written");
        }
    }
}

/// Runs node `id` of the cluster file at `path` until Ctrl-C or SIGTERM (a graceful leave) or
/// a driver panic (an error).
pub(crate) async fn run(path: &Path, id: u64) -> Result<(), RunError> {
    let cluster = Cluster::load(path)?;
    let me = cluster.member(id, path)?;
    let config = cluster.node_config(id, path)?;
    let dir = cluster.node_dir(id);
    std::fs::create_dir_all(&dir).map_err(|source| RunError::Io {
        path: dir.clone(),
        source,
    })?;
    let pid_path = dir.join("pid");
    std::fs::write(&pid_path, format!("{}\n", std::process::id())).map_err(|source| {
        RunError::Io {
            path: pid_path.clone(),
            source,
        }
    })?;
    let results_path = cluster.results_file(id);
    let results = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&results_path)
        .map_err(|source| RunError::Io {
            path: results_path.clone(),
            source,
        })?;

    // The node, from the builder's configuration; the control API is not given a port of its
    // own (`control` unset): the service mounts it in its server below.
    let node = meshkit_node::node::start(&config).await?;
    let access = AccessControl::from_config(config.access())?;
    let service = Arc::new(Service {
        node: id,
        handle: node.handle().clone(),
        shards: cluster.shards,
        results: Mutex::new(results),
        results_path,
        counters: Counters::default(),
    });

    let listener = tokio::net::TcpListener::bind(me.http)
        .await
        .map_err(|source| RunError::Bind {
            addr: me.http,
            source,
        })?;
    let app = Router::new()
        .route("/jobs", post(post_job))
        .route("/jobs/stats", get(stats))
        .with_state(service.clone())
        .nest("/mesh", node.control_router(access));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            })
            .await
    });
    let workers: Vec<_> = (0..cluster.workers)
        .map(|w| tokio::spawn(worker(service.clone(), w, stop_rx.clone())))
        .collect();

    // One line on stdout, as meshkitd prints: what a script or test waits for.
    println!(
        "node-{id} gossip {} http http://{} (control API under /mesh) pid {}",
        node.gossip_addr(),
        me.http,
        std::process::id()
    );
    tracing::info!(
        node = id,
        workers = cluster.workers,
        shards = cluster.shards,
        "serving"
    );

    let exit = tokio::select! {
        () = meshkit_node::node::shutdown_signal() => None,
        exit = node.exited() => Some(exit),
    };
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
    let _ = server.await;
    match exit {
        None => {
            tracing::info!(node = id, "stopping: releasing shards and leaving the mesh");
            node.shutdown_gracefully(Duration::from_secs(1)).await;
            Ok(())
        }
        Some(DriverExit::Panicked { message }) => Err(RunError::DriverPanicked(message)),
        Some(other) => {
            tracing::warn!(node = id, exit = ?other, "the node's driver stopped");
            Ok(())
        }
    }
}

/// Whether a queue call met a routing race or a failover in progress: retry shortly.
fn transient(error: &QueueCallError) -> bool {
    matches!(
        error,
        QueueCallError::Queue(
            QueueError::NoOwner
                | QueueError::NotOwner { .. }
                | QueueError::Recovering
                | QueueError::Overloaded { .. }
        )
    )
}

/// One worker: leases from the shards in turn (starting at its own offset, so the workers of a
/// node spread over the queues), runs each job and completes it.
async fn worker(service: Arc<Service>, index: u32, mut stop: watch::Receiver<bool>) {
    let mut next = index % service.shards;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut worked = false;
        for _ in 0..service.shards {
            let Some(shard) = service.shard(next) else {
                return;
            };
            next = (next + 1) % service.shards;
            match service.handle.queue_lease(shard.clone()).await {
                Ok(Some(item)) => {
                    worked = true;
                    run_item(&service, item).await;
                }
                Ok(None) => {}
                Err(QueueCallError::Stopped(_)) => return,
                Err(error) if transient(&error) => {}
                Err(error) => {
                    tracing::warn!(worker = index, %shard, %error, "lease refused");
                }
            }
            if *stop.borrow() {
                return;
            }
        }
        if !worked {
            tokio::select! {
                () = tokio::time::sleep(IDLE_PAUSE) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Heartbeats the item at a third of its lease until aborted; publishes the token it gets
/// back, and stops at a stale answer (the item is someone else's now).
async fn heartbeat(
    handle: NodeHandle,
    shard: ShardId,
    lease_for: Duration,
    token: watch::Sender<OwnershipToken>,
) {
    let every = (lease_for / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let current = *token.borrow();
        match handle.queue_heartbeat(shard.clone(), current).await {
            Ok(renewed) => {
                token.send_replace(renewed);
            }
            Err(QueueCallError::Queue(error)) if error.is_stale() => {
                tracing::info!(%shard, %current, %error, "lease lost while working");
                return;
            }
            Err(error) => tracing::debug!(%shard, %current, %error, "heartbeat not answered"),
        }
    }
}

async fn run_item(service: &Service, item: LeasedItem) {
    service.counters.leased.fetch_add(1, Ordering::Relaxed);
    let LeasedItem {
        shard,
        token,
        lease_for,
        payload,
    } = item;
    let job = match Job::from_payload(&payload) {
        Ok(job) => job,
        Err(error) => {
            // Not a job (a producer wrote to the queue by other means): dead-letter it rather
            // than let it come back forever.
            service
                .counters
                .bad_payloads
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%shard, %token, %error, "dead-lettering a payload that is not a job");
            if let Err(error) = service.handle.queue_fail(shard.clone(), token, false).await {
                tracing::warn!(%shard, %token, %error, "dead-lettering refused");
            }
            return;
        }
    };
    let (token_tx, token_rx) = watch::channel(token);
    let beat = tokio::spawn(heartbeat(
        service.handle.clone(),
        shard.clone(),
        lease_for,
        token_tx,
    ));
    let work = job.clone();
    let digest = tokio::task::spawn_blocking(move || work.run()).await;
    let digest = match digest {
        Ok(digest) => digest,
        Err(error) => {
            beat.abort();
            tracing::error!(%shard, %token, %error, "the job's task failed");
            return;
        }
    };
    // Recorded before the completion is asked for: if this process dies in between, the job
    // runs again elsewhere (at least once), and the record shows both runs.
    service.record(&Record::Processed {
        node: service.node,
        id: job.id.clone(),
        shard: shard.to_string(),
        item: token.item.get(),
        attempt: token.attempt,
        fence: token.fence.get(),
        digest,
    });
    service.counters.processed.fetch_add(1, Ordering::Relaxed);
    beat.abort();
    let token = *token_rx.borrow();
    match service.handle.queue_complete(shard.clone(), token).await {
        Ok(_) => {
            service.counters.completed.fetch_add(1, Ordering::Relaxed);
            service.record(&Record::Completed {
                node: service.node,
                shard: shard.to_string(),
                item: token.item.get(),
                fence: token.fence.get(),
            });
        }
        Err(QueueCallError::Queue(error)) if error.is_stale() => {
            // A new owner took the shard (or the lease expired): the item runs again there.
            service.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%shard, %token, %error, job = %job.id, "completion refused");
            service.record(&Record::Refused {
                node: service.node,
                shard: shard.to_string(),
                item: token.item.get(),
                reason: error.to_string(),
            });
        }
        Err(error) => {
            // No clear answer (timed out, the owner dying): the owner's lease expiry or the
            // next owner's requeue decides; the item may run again.
            service.counters.unknown.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%shard, %token, %error, job = %job.id, "completion unanswered");
        }
    }
}

/// An error answer of the service's own routes: `{"error": "..."}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// `POST /jobs` with a [`Job`]: enqueued on the job's shard through this node (which forwards
/// it to the shard's owner over the mesh); 200 with [`Accepted`] once the owner and its
/// replica hold it.
async fn post_job(
    State(service): State<Arc<Service>>,
    body: Result<Json<Job>, JsonRejection>,
) -> Response {
    let job = match body {
        Ok(Json(job)) => job,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    if let Err(e) = job.check() {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let Some(shard) = service.shard(job.shard_index(service.shards)) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "no such shard");
    };
    let payload = job.to_payload();
    let deadline = tokio::time::Instant::now() + ENQUEUE_RETRY_FOR;
    loop {
        match service
            .handle
            .queue_enqueue(shard.clone(), payload.clone())
            .await
        {
            Ok(done) => {
                tracing::debug!(job = %job.id, %shard, item = %done.item, "enqueued");
                return Json(Accepted {
                    id: job.id,
                    shard: shard.to_string(),
                    item: done.item.get(),
                    fence: done.fence.get(),
                })
                .into_response();
            }
            Err(e) if transient(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                let status = match &e {
                    QueueCallError::Queue(QueueError::TimedOut) => StatusCode::GATEWAY_TIMEOUT,
                    QueueCallError::Queue(QueueError::Full { .. }) => StatusCode::TOO_MANY_REQUESTS,
                    QueueCallError::Queue(QueueError::PayloadTooLarge { .. }) => {
                        StatusCode::BAD_REQUEST
                    }
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                return error(status, e.to_string());
            }
        }
    }
}

/// `GET /jobs/stats`: this node's workers, and the queues it serves as their shard's owner.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(crate) struct Stats {
    /// The node.
    pub(crate) node: u64,
    /// Items its workers leased.
    pub(crate) leased: u64,
    /// Jobs its workers ran.
    pub(crate) processed: u64,
    /// Completions accepted.
    pub(crate) completed: u64,
    /// Completions refused as stale.
    pub(crate) refused: u64,
    /// Completions without a clear answer.
    pub(crate) unknown: u64,
    /// The queues it serves.
    pub(crate) served: Vec<ServedStats>,
    /// Configured shards (every node's `served` together should cover them).
    pub(crate) shards: u32,
}

/// One queue a node serves.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(crate) struct ServedStats {
    /// `jobs/<n>`.
    pub(crate) shard: String,
    /// The node's fencing token for it.
    pub(crate) fence: u64,
    /// Still rebuilding from replicas after taking it over.
    pub(crate) recovering: bool,
    /// Jobs waiting.
    pub(crate) pending: usize,
    /// Jobs leased.
    pub(crate) active: usize,
}

async fn stats(State(service): State<Arc<Service>>) -> Response {
    let snapshot = match service.handle.snapshot().await {
        Ok(snapshot) => snapshot,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let served = snapshot
        .queues
        .map(|q| {
            q.served
                .into_iter()
                .map(|s| ServedStats {
                    shard: s.shard.to_string(),
                    fence: s.fence.get(),
                    recovering: s.recovering,
                    pending: s.pending,
                    active: s.active,
                })
                .collect()
        })
        .unwrap_or_default();
    let c = &service.counters;
    Json(Stats {
        node: service.node,
        leased: c.leased.load(Ordering::Relaxed),
        processed: c.processed.load(Ordering::Relaxed),
        completed: c.completed.load(Ordering::Relaxed),
        refused: c.refused.load(Ordering::Relaxed),
        unknown: c.unknown.load(Ordering::Relaxed),
        served,
        shards: service.shards,
    })
    .into_response()
}
