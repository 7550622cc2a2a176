//! The authorization probe: the agent's `mesh.observe` identity reads, is refused where it
//! would operate, and a caller without credentials is refused altogether.
//!
//! A run makes three requests and passes only if all three answer as a least-privilege
//! observer expects:
//!
//! 1. `GET /meshkit/peers` with the agent's credentials: 200 (observe reads);
//! 2. `POST /control/leases/transfer` with the agent's credentials and a body that is invalid
//!    on purpose ([`OPERATE_PROBE_BODY`]): 403. The authorization layer answers before the body
//!    is read; were the identity allowed to operate, the handler would refuse the body (400 or
//!    422) and change nothing, so a permission regression is seen without a state change;
//! 3. `GET /meshkit/peers` with no credentials: 401.
//!
//! Any other answer is a failure naming the request and the status: a regression either way
//! (an identity that lost its read, one that gained operate, an API open to anyone).
//! [`operate_check`] is step 2 alone: the agent's least-privilege check at start.

use std::sync::Arc;

use meshkit_client::Client;
use meshkit_runtime::probe_host::{AsyncProbe, CheckFuture, ProbeFailure};

use super::{Clients, RunNote, fail, quote};

/// The operate endpoint asked.
pub const OPERATE_PATH: &str = "/control/leases/transfer";
/// The read endpoint asked.
pub const OBSERVE_PATH: &str = "/meshkit/peers";

/// The body of the operate request: no `scope` nor `to`, so even an identity allowed to
/// operate gets a refusal that changes nothing.
pub const OPERATE_PROBE_BODY: &str =
    r#"{"meshkit_probe":"least-privilege check: invalid on purpose, changes nothing"}"#;

/// The three-request check against one node.
#[derive(Debug)]
pub struct AuthzProbe {
    clients: Arc<Clients>,
    target: Arc<str>,
    note: Arc<RunNote>,
}

impl AuthzProbe {
    /// The probe of `target`.
    pub fn new(clients: Arc<Clients>, target: &str, note: Arc<RunNote>) -> Self {
        Self {
            clients,
            target: target.into(),
            note,
        }
    }
}

/// What the operate request showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperateAnswer {
    /// 403: the identity cannot operate.
    Refused,
    /// Any other status: the identity can do more than observe (or is not accepted at all,
    /// 401), with the status and the start of the body.
    Answered {
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
}

/// `POST` [`OPERATE_PATH`] with [`OPERATE_PROBE_BODY`] through `client`.
///
/// # Errors
///
/// The client's error (no answer): nothing can be said of the identity.
pub async fn operate_check(
    client: &Client,
    target: &str,
) -> Result<OperateAnswer, meshkit_client::ClientError> {
    let body: serde_json::Value =
        serde_json::from_str(OPERATE_PROBE_BODY).unwrap_or(serde_json::Value::Null);
    let response = client.post_json(target, OPERATE_PATH, &body).await?;
    Ok(if response.status == 403 {
        OperateAnswer::Refused
    } else {
        OperateAnswer::Answered {
            status: response.status,
            body: quote(&response.body).to_owned(),
        }
    })
}

impl AsyncProbe for AuthzProbe {
    fn kind(&self) -> &str {
        "authz"
    }

    fn check(&self) -> CheckFuture {
        let clients = self.clients.clone();
        let target = self.target.clone();
        let note = self.note.clone();
        Box::pin(async move {
            note.clear();
            let read = clients
                .observer
                .get(&target, OBSERVE_PATH)
                .await
                .map_err(|e| fail(format!("GET {OBSERVE_PATH} as the agent: {e}")))?;
            note.set_protocol(read.protocol);
            if read.status != 200 {
                return Err(fail(format!(
                    "GET {OBSERVE_PATH} as the agent answered {} (expected 200: mesh.observe \
                     reads): {}",
                    read.status,
                    quote(&read.body)
                )));
            }
            match operate_check(&clients.observer, &target).await {
                Err(e) => return Err(fail(format!("POST {OPERATE_PATH} as the agent: {e}"))),
                Ok(OperateAnswer::Refused) => {}
                Ok(OperateAnswer::Answered { status, body }) => {
                    return Err(permission_regression(status, &body));
                }
            }
            let anonymous = clients
                .anonymous
                .get(&target, OBSERVE_PATH)
                .await
                .map_err(|e| fail(format!("GET {OBSERVE_PATH} without credentials: {e}")))?;
            if anonymous.status != 401 {
                return Err(fail(format!(
                    "GET {OBSERVE_PATH} without credentials answered {} (expected 401): {}",
                    anonymous.status,
                    quote(&anonymous.body)
                )));
            }
            Ok(())
        })
    }
}

/// The failure of an operate request that was not refused with 403.
pub fn permission_regression(status: u16, body: &str) -> ProbeFailure {
    fail(format!(
        "POST {OPERATE_PATH} as the agent answered {status} (expected 403): the identity can \
         do more than mesh.observe: {body}"
    ))
}
