//! `GET /control/probes` (`mesh.observe`): the node's health probes, their state, last results
//! and latency percentiles ([`meshkit_api::probes::ProbesResponse`]), filtered by tag
//! (`?tag=cluster=eu-1`, several `tag`s must all match); and the `mesh_probe_*` metrics.
//!
//! The probe host ([`meshkit_runtime::probe_host`]) reaches the handlers as a request extension
//! ([`ProbeHandle`]), which the node adds around the control router; a router without one (a
//! service serving the routes of a node it started without probes) answers 503 saying so.

use axum::Extension;
use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meshkit::diag::probe::ProbeState;
use meshkit_api::metrics::Families;
use meshkit_api::probes::TagFilter;
use meshkit_runtime::probe_host::{DURATION_BOUNDS, ProbeHandle, ProbesMetrics, RESULTS};

use crate::errors::json_error;

/// The answer when the router has no probe host.
fn no_host() -> Response {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "this node runs no probe host (the router was built without one)",
    )
}

/// `GET /control/probes`.
pub async fn list(probes: Option<Extension<ProbeHandle>>, RawQuery(query): RawQuery) -> Response {
    let Some(Extension(probes)) = probes else {
        return no_host();
    };
    let filters = match TagFilter::from_query(query.as_deref().unwrap_or("")) {
        Ok(filters) => filters,
        Err(error) => return json_error(StatusCode::BAD_REQUEST, error.to_string()),
    };
    match probes.list(filters).await {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => json_error(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

/// The four states, in the order `mesh_probe_state` writes them.
const STATES: [ProbeState; 4] = [
    ProbeState::Unknown,
    ProbeState::Healthy,
    ProbeState::Degraded,
    ProbeState::Failing,
];

/// Writes `mesh_probe_results_total`, `mesh_probe_duration_seconds` and `mesh_probe_state`.
/// The `probe` label takes at most [`meshkit::diag::probe::MAX_PROBES`] values per node.
///
/// # Errors
///
/// A family written against the catalogue (a bug, logged where it is found).
pub fn write_metrics(families: &mut Families<'_, '_>, m: &ProbesMetrics) -> std::fmt::Result {
    use meshkit_api::metrics::catalogue::{PROBE_DURATION, PROBE_RESULTS, PROBE_STATE};
    families.counters(
        &PROBE_RESULTS,
        m.probes.iter().flat_map(|p| {
            RESULTS
                .iter()
                .zip(p.counts)
                .map(|(r, n)| ([p.name.as_str(), r.as_str()], n))
        }),
    )?;
    families.histograms(
        &PROBE_DURATION,
        m.probes
            .iter()
            .map(|p| ([p.name.as_str()], p.durations.with_bounds(&DURATION_BOUNDS))),
    )?;
    families.gauges(
        &PROBE_STATE,
        m.probes.iter().flat_map(|p| {
            STATES
                .iter()
                .map(|s| ([p.name.as_str(), s.as_str()], u64::from(p.state == *s)))
        }),
    )
}

/// The `mesh_probe_*` families as a metrics source.
#[derive(Debug)]
pub struct ProbeMetricsSource(pub ProbesMetrics);

impl meshkit_api::metrics::Source for ProbeMetricsSource {
    fn write(&self, families: &mut Families<'_, '_>) -> std::fmt::Result {
        write_metrics(families, &self.0)
    }
}
