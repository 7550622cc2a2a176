//! The agent's `/metrics`: blackbox_exporter-compatible names (`probe_success`,
//! `probe_duration_seconds`, `probe_http_version`, `probe_ssl_earliest_cert_expiry`) beside
//! `mesh_probe_*` with bounded cluster/namespace/probe labels.
