//! The nodes' control API through `meshkit-client`, as the stack's admin
//! (`certs/meshctl-admin.pem`, `mesh.admin`): the membership, leadership and shard views, and
//! the chaos endpoints (plan, then start with the plan's confirmation token; abort).

use std::path::Path;
use std::time::Duration;

use meshkit::diag::fault::FaultPlan;
use meshkit_api::chaos::{
    ChaosErrorBody, PlanResponse, StartRequest, StartResponse, id_path_segment,
};
use meshkit_api::json::{FeedEntry, LeadershipView, PeersResponse};
use meshkit_client::{Client, ClientConfig};
use thiserror::Error;

/// A paused or killed node must not stall a poll of the others: each request is bounded by
/// this (the polls of all nodes run concurrently).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);
/// Starting or aborting an experiment: the node relays it to every target and answers with
/// their outcomes, which on a loaded machine takes longer than a poll may. A start that timed
/// out may still have started (the runner would not know its id, nor date its end), so it
/// waits this long (seen: a partition start past 1.5 s at load 32 on 2 cores).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a call to a node failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The stack's certificates could not be loaded.
    #[error(
        "the stack's admin certificate in {dir}: {why} (is this a `compose/up` run directory?)"
    )]
    Credentials {
        /// The directory.
        dir: String,
        /// Why.
        why: String,
    },
    /// The request failed or the answer did not parse.
    #[error("{addr} {path}: {why}")]
    Call {
        /// The node.
        addr: String,
        /// The route.
        path: String,
        /// Why.
        why: String,
    },
}

/// A client for every node of one stack.
#[derive(Debug)]
pub struct Nodes {
    client: Client,
    /// For the chaos endpoints, with [`CONTROL_TIMEOUT`].
    control: Client,
}

impl Nodes {
    /// Loads `certs/ca.pem` and the admin identity from `run_dir`.
    ///
    /// # Errors
    ///
    /// [`NodeError::Credentials`].
    pub fn new(run_dir: &Path) -> Result<Self, NodeError> {
        let certs = run_dir.join("certs");
        let bad = |e: &dyn std::fmt::Display| NodeError::Credentials {
            dir: certs.display().to_string(),
            why: e.to_string(),
        };
        let client = |timeout: Duration| {
            let config = ClientConfig::new(&certs.join("ca.pem"))
                .map_err(|e| bad(&e))?
                .with_identity(
                    &certs.join("meshctl-admin.pem"),
                    &certs.join("meshctl-admin.key"),
                )
                .map_err(|e| bad(&e))?
                .with_request_timeout(timeout)
                .with_connect_timeout(REQUEST_TIMEOUT);
            Client::new(&config).map_err(|e| bad(&e))
        };
        Ok(Self {
            client: client(REQUEST_TIMEOUT)?,
            control: client(CONTROL_TIMEOUT)?,
        })
    }

    async fn get_text(&self, addr: &str, path: &str) -> Result<String, NodeError> {
        let err = |why: String| NodeError::Call {
            addr: addr.to_owned(),
            path: path.to_owned(),
            why,
        };
        let r = self
            .client
            .get(addr, path)
            .await
            .map_err(|e| err(e.to_string()))?;
        if r.status != 200 {
            return Err(err(format!("HTTP {}: {}", r.status, r.body.trim())));
        }
        Ok(r.body)
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
    ) -> Result<T, NodeError> {
        let body = self.get_text(addr, path).await?;
        serde_json::from_str(&body).map_err(|e| NodeError::Call {
            addr: addr.to_owned(),
            path: path.to_owned(),
            why: format!("unexpected answer: {e}"),
        })
    }

    /// `GET /meshkit/peers` (one page of up to 10,000: compose stacks are small).
    ///
    /// # Errors
    ///
    /// [`NodeError::Call`].
    pub async fn peers(&self, addr: &str) -> Result<PeersResponse, NodeError> {
        self.get(addr, "/meshkit/peers?limit=10000").await
    }

    /// `GET /meshkit/leaders`.
    ///
    /// # Errors
    ///
    /// [`NodeError::Call`].
    pub async fn leaders(&self, addr: &str) -> Result<LeadershipView, NodeError> {
        self.get(addr, "/meshkit/leaders").await
    }

    /// The leadership feed's entries after `after` that the node holds
    /// (`GET /control/events/leadership?after=N&follow=false`: the server-sent events end with
    /// the history). A `reset` (the entries rotated out) yields what follows it: none.
    ///
    /// # Errors
    ///
    /// [`NodeError::Call`].
    pub async fn feed(&self, addr: &str, after: u64) -> Result<Vec<FeedEntry>, NodeError> {
        let path = format!("/control/events/leadership?after={after}&follow=false");
        let body = self.get_text(addr, &path).await?;
        Ok(body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim_start()).ok())
            .collect())
    }

    /// `GET /meshkit/shards`, as JSON.
    ///
    /// # Errors
    ///
    /// [`NodeError::Call`].
    pub async fn shards(&self, addr: &str) -> Result<serde_json::Value, NodeError> {
        self.get(addr, "/meshkit/shards").await
    }

    /// Plans `plan` on the node at `addr` and starts it with the token of that plan: the
    /// two steps of the chaos safety model, the radius shown in between going to the report.
    ///
    /// # Errors
    ///
    /// [`NodeError::Call`] with the node's refusal in words (`kind-not-allowed`, ...).
    pub async fn start_plan(
        &self,
        addr: &str,
        plan: &FaultPlan,
    ) -> Result<(PlanResponse, StartResponse), NodeError> {
        let err = |path: &str, why: String| NodeError::Call {
            addr: addr.to_owned(),
            path: path.to_owned(),
            why,
        };
        let refusal = |status: u16, body: &str| {
            serde_json::from_str::<ChaosErrorBody>(body).map_or_else(
                |_| format!("HTTP {status}: {}", body.trim()),
                |b| format!("HTTP {status} ({}): {}", b.reason, b.error),
            )
        };
        let path = "/control/chaos/plans";
        let r = self
            .control
            .post_json(addr, path, plan)
            .await
            .map_err(|e| err(path, e.to_string()))?;
        if r.status != 200 {
            return Err(err(path, refusal(r.status, &r.body)));
        }
        let planned: PlanResponse =
            serde_json::from_str(&r.body).map_err(|e| err(path, e.to_string()))?;
        let path = "/control/chaos/experiments";
        let request = StartRequest {
            plan: planned.plan.clone(),
            token: planned.token.clone(),
        };
        let r = self
            .control
            .post_json(addr, path, &request)
            .await
            .map_err(|e| err(path, e.to_string()))?;
        if r.status != 201 && r.status != 207 {
            return Err(err(path, refusal(r.status, &r.body)));
        }
        let started: StartResponse =
            serde_json::from_str(&r.body).map_err(|e| err(path, e.to_string()))?;
        Ok((planned, started))
    }

    /// Aborts experiment `id` everywhere (the node relays it to every member).
    ///
    /// # Errors
    ///
    /// [`NodeError::Call`].
    pub async fn abort(&self, addr: &str, id: &str) -> Result<(), NodeError> {
        let path = format!("/control/chaos/experiments/{}", id_path_segment(id));
        let r = self
            .control
            .request(http::Method::DELETE, addr, &path, bytes::Bytes::new())
            .await
            .map_err(|e| NodeError::Call {
                addr: addr.to_owned(),
                path: path.clone(),
                why: e.to_string(),
            })?;
        if r.status >= 300 {
            return Err(NodeError::Call {
                addr: addr.to_owned(),
                path,
                why: format!("HTTP {}: {}", r.status, r.body.trim()),
            });
        }
        Ok(())
    }

    /// What the runner's own requests to the nodes went over: requests by protocol, fallbacks
    /// from HTTP/3 by reason, failures (both clients together). A `transport-downgrade` shows
    /// here as fallbacks, a `certificate-expiry` as failures of the polls of that node.
    pub fn stats(&self) -> meshkit_client::StatsSnapshot {
        let mut stats = self.client.stats();
        stats.merge(&self.control.stats());
        stats
    }

    /// `POST /control/queue/enqueue` of `payload` on `queue` (the shard from the payload's
    /// hash), answered once the owner and its replicas hold it; with the control timeout, since
    /// an enqueue waits for a replica's synced checkpoint.
    ///
    /// # Errors
    ///
    /// [`NodeError::Call`]: a refusal (503 while no owner serves, 429 when full) or no answer.
    pub async fn enqueue(&self, addr: &str, queue: &str, payload: String) -> Result<(), NodeError> {
        let path = "/control/queue/enqueue";
        let request = meshkit_api::json::EnqueueRequest {
            queue: queue.to_owned(),
            shard: None,
            payload,
        };
        let err = |why: String| NodeError::Call {
            addr: addr.to_owned(),
            path: path.to_owned(),
            why,
        };
        let r = self
            .control
            .post_json(addr, path, &request)
            .await
            .map_err(|e| err(e.to_string()))?;
        if r.status != 200 {
            return Err(err(format!("HTTP {}: {}", r.status, r.body.trim())));
        }
        Ok(())
    }

    /// `GET /control/backpressure/stream?queue=QUEUE`: the server-sent events of every shard's
    /// signal the node sees, open (status 200) or the refusal.
    ///
    /// # Errors
    ///
    /// [`NodeError::Call`].
    pub async fn backpressure_stream(
        &self,
        addr: &str,
        queue: &str,
    ) -> Result<meshkit_client::StreamingResponse, NodeError> {
        let path = format!("/control/backpressure/stream?queue={queue}");
        let err = |why: String| NodeError::Call {
            addr: addr.to_owned(),
            path: path.clone(),
            why,
        };
        let stream = self
            .client
            .get_stream(addr, &path)
            .await
            .map_err(|e| err(e.to_string()))?;
        if stream.status() != 200 {
            let status = stream.status();
            return Err(err(format!("HTTP {status}")));
        }
        Ok(stream)
    }

    /// Closes the client's connections.
    pub async fn close(&self) {
        self.client.close().await;
        self.control.close().await;
    }
}
