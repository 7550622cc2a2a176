//! The transport probes: the same request over HTTP/3 only (`transport-h3`) and over TLS over
//! TCP only, a forced HTTP/2 downgrade (`transport-h2`), each checked against the node's own
//! counters.
//!
//! A run passes when:
//!
//! 1. `GET <path>` (default `/meshkit/peers`) through the client of that protocol answers 200
//!    and the protocol that carried it is the one forced (recorded as the run's
//!    `probe_http_version`);
//! 2. with `counters = true` (the default): the node's `mesh_transport_control_requests_total`
//!    for that protocol, read from its `/metrics` over the same protocol before and after the
//!    request, grew by at least 2 (the request and the second read; other clients can only add
//!    to it). A node that carried the request but counted it under another protocol, or not
//!    at all, fails: the counters `meshctl transport stats` and dashboards show would lie.
//!
//! An HTTP/3 outage (UDP blocked, the QUIC listener down) fails `transport-h3` while
//! `transport-h2` passes: the downgrade is visible, which blackbox_exporter's users cannot see.
//! The node's certificate expiry (`mesh_transport_cert_expiry_timestamp_seconds`) read from the
//! same scrape becomes the probe's `probe_ssl_earliest_cert_expiry`.

use std::sync::Arc;

use meshkit_api::alpn::HttpProtocol;
use meshkit_client::Client;
use meshkit_runtime::probe_host::{AsyncProbe, CheckFuture, ProbeFailure};

use super::{Clients, RunNote, fail, quote};
use crate::config::TransportOptions;

/// The node's counter of control requests by protocol.
pub const REQUESTS_METRIC: &str = "mesh_transport_control_requests_total";
/// The node's certificate expiry.
pub const CERT_EXPIRY_METRIC: &str = "mesh_transport_cert_expiry_timestamp_seconds";

/// One protocol's request against one node.
#[derive(Debug)]
pub struct TransportProbe {
    clients: Arc<Clients>,
    target: Arc<str>,
    protocol: HttpProtocol,
    options: Arc<TransportOptions>,
    note: Arc<RunNote>,
}

impl TransportProbe {
    /// The probe of `protocol` (H3 or H2) on `target`.
    pub fn new(
        clients: Arc<Clients>,
        target: &str,
        protocol: HttpProtocol,
        options: TransportOptions,
        note: Arc<RunNote>,
    ) -> Self {
        Self {
            clients,
            target: target.into(),
            protocol,
            options: Arc::new(options),
            note,
        }
    }
}

/// The value of `name{labels}` (labels as written, `protocol="h3"`; empty for none) in a
/// Prometheus text exposition.
pub fn metric_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let rest = if labels.is_empty() {
            rest.strip_prefix(' ')?
        } else {
            let inner = rest.strip_prefix('{')?;
            let (set, after) = inner.split_once('}')?;
            if !set.split(',').any(|l| l == labels) {
                return None;
            }
            after.strip_prefix(' ')?
        };
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The node's request count for `protocol`, read over `client`.
async fn scrape(
    client: &Client,
    target: &str,
    protocol: HttpProtocol,
    note: &RunNote,
) -> Result<f64, ProbeFailure> {
    let response = client
        .get(target, "/metrics")
        .await
        .map_err(|e| fail(format!("GET /metrics over {protocol}: {e}")))?;
    if response.status != 200 {
        return Err(fail(format!(
            "GET /metrics over {protocol} answered {}: {}",
            response.status,
            quote(&response.body)
        )));
    }
    if let Some(expiry) = metric_value(&response.body, CERT_EXPIRY_METRIC, "") {
        #[expect(clippy::cast_possible_truncation, reason = "a Unix time in seconds")]
        note.set_cert_expiry(expiry as i64);
    }
    let label = format!("protocol=\"{}\"", protocol.as_str());
    Ok(metric_value(&response.body, REQUESTS_METRIC, &label).unwrap_or(0.0))
}

impl AsyncProbe for TransportProbe {
    fn kind(&self) -> &str {
        "transport"
    }

    fn check(&self) -> CheckFuture {
        let clients = self.clients.clone();
        let target = self.target.clone();
        let protocol = self.protocol;
        let options = self.options.clone();
        let note = self.note.clone();
        Box::pin(async move {
            note.clear();
            let client = match protocol {
                HttpProtocol::H3 => &clients.h3,
                _ => &clients.h2,
            };
            let before = if options.counters {
                Some(scrape(client, &target, protocol, &note).await?)
            } else {
                None
            };
            let path = options.path.as_str();
            let response = client
                .get(&target, path)
                .await
                .map_err(|e| fail(format!("GET {path} over {protocol} only: {e}")))?;
            note.set_protocol(response.protocol);
            if response.protocol != protocol {
                return Err(fail(format!(
                    "GET {path} forced to {protocol} was carried by {}",
                    response.protocol
                )));
            }
            if response.status != 200 {
                return Err(fail(format!(
                    "GET {path} over {protocol} answered {}: {}",
                    response.status,
                    quote(&response.body)
                )));
            }
            if let Some(before) = before {
                let after = scrape(client, &target, protocol, &note).await?;
                if after - before < 2.0 {
                    return Err(fail(format!(
                        "the node's {REQUESTS_METRIC}{{protocol=\"{protocol}\"}} moved by {} \
                         over 2 requests the agent made over {protocol}",
                        after - before
                    )));
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_are_read_by_name_and_label() {
        let text = "# HELP x\nmesh_transport_control_requests_total{protocol=\"h2\"} 4\n\
                    mesh_transport_control_requests_total{protocol=\"h3\"} 17\n\
                    mesh_transport_cert_expiry_timestamp_seconds 1.8e9\n";
        assert_eq!(
            metric_value(text, REQUESTS_METRIC, "protocol=\"h3\""),
            Some(17.0)
        );
        assert_eq!(
            metric_value(text, REQUESTS_METRIC, "protocol=\"h2\""),
            Some(4.0)
        );
        assert_eq!(
            metric_value(text, REQUESTS_METRIC, "protocol=\"http1.1\""),
            None
        );
        assert_eq!(metric_value(text, CERT_EXPIRY_METRIC, ""), Some(1.8e9));
    }
}
