//! The metric catalogue: every Prometheus family a MeshKit node (`GET /metrics`) or its client
//! (`meshctl transport stats --prometheus`) exposes, with its type, help, labels and unit.
//!
//! This is plain data with no dependency (no server, no metrics library), so the exposition
//! ([`crate::metrics`]), the documentation (`docs/metrics.md`, checked against [`ALL`] by a
//! test) and dashboard checks all read one list.

/// The type of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A value that only goes up (its name ends in `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations counted in buckets (`_bucket{le}`, `_sum`, `_count`).
    Histogram,
}

impl Kind {
    /// The type as Prometheus writes it (`counter`, `gauge`, `histogram`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// The unit of a family's values; its name ends with it (before `_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Seconds.
    Seconds,
    /// Bytes.
    Bytes,
}

impl Unit {
    /// The unit as it ends a name (`seconds`, `bytes`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Seconds => "seconds",
            Self::Bytes => "bytes",
        }
    }
}

/// One metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Family {
    /// The family's name as exposed (counters end in `_total`).
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its `# HELP` text.
    pub help: &'static str,
    /// Its label names, in the order the samples carry them (`le` of histograms not included).
    pub labels: &'static [&'static str],
    /// The unit of its values, if it has one.
    pub unit: Option<Unit>,
}

impl Family {
    /// The name without the unit and, for counters, without `_total`: the name a metrics
    /// library is given, which adds both back.
    pub fn stem(&self) -> &'static str {
        let name = match self.kind {
            Kind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            Kind::Gauge | Kind::Histogram => self.name,
        };
        match self.unit {
            Some(unit) => name
                .strip_suffix(unit.as_str())
                .and_then(|n| n.strip_suffix('_'))
                .unwrap_or(name),
            None => name,
        }
    }
}

/// Declares each family as a constant and lists them all in [`ALL`].
macro_rules! catalogue {
    ($(
        $(#[$doc:meta])*
        $id:ident = $kind:ident $name:literal [$($label:literal),*] $unit:ident,
            $help:literal;
    )*) => {
        $(
            $(#[$doc])*
            pub const $id: Family = Family {
                name: $name,
                kind: Kind::$kind,
                help: $help,
                labels: &[$($label),*],
                unit: catalogue!(@unit $unit),
            };
        )*

        /// Every family, in the order a node's `/metrics` shows them.
        pub const ALL: &[Family] = &[$($id),*];
    };
    (@unit none) => { None };
    (@unit seconds) => { Some(Unit::Seconds) };
    (@unit bytes) => { Some(Unit::Bytes) };
}

catalogue! {
    // The build.
    /// What this node runs: always 1, the versions in its labels.
    BUILD_INFO = Gauge "mesh_build_info" ["version", "wire"] none,
        "Always 1; the meshkitd version and the wire protocol version this node publishes.";
    // Membership.
    /// Members this node knows, by state.
    GOSSIP_MEMBERS = Gauge "mesh_gossip_members" ["state"] none,
        "Members this node knows, by state, itself included.";
    /// Lifeguard's local health score.
    GOSSIP_HEALTH_SCORE = Gauge "mesh_gossip_health_score" [] none,
        "Lifeguard local health score (0 is healthy).";
    /// Direct probes started.
    GOSSIP_PROBES = Counter "mesh_gossip_probes_total" [] none,
        "Direct probes started.";
    /// Probes without an ack.
    GOSSIP_PROBES_FAILED = Counter "mesh_gossip_probes_failed_total" [] none,
        "Probes that got no ack, direct or indirect.";
    /// Indirect probe requests sent.
    GOSSIP_INDIRECT_PROBES = Counter "mesh_gossip_indirect_probes_total" [] none,
        "Indirect probe requests sent.";
    /// Suspicions raised from own probes.
    GOSSIP_SUSPICIONS_RAISED = Counter "mesh_gossip_suspicions_raised_total" [] none,
        "Suspicions raised from this node's own failed probes.";
    /// Suspicions this node ended by declaring the member dead.
    GOSSIP_SUSPICIONS_CONFIRMED = Counter "mesh_gossip_suspicions_confirmed_total" [] none,
        "Suspicions this node ended with its own verdict: the member was still suspect, so it was declared dead.";
    /// Claims about this node it refuted.
    GOSSIP_REFUTATIONS = Counter "mesh_gossip_refutations_total" [] none,
        "Refutations of claims about this node.";
    /// Anti-entropy exchanges started.
    GOSSIP_SYNCS = Counter "mesh_gossip_syncs_total" [] none,
        "Anti-entropy exchanges started.";
    /// Membership datagrams sent.
    GOSSIP_DATAGRAMS_SENT = Counter "mesh_gossip_datagrams_sent_total" [] none,
        "Datagrams sent.";
    /// Membership bytes sent.
    GOSSIP_SENT_BYTES = Counter "mesh_gossip_sent_bytes_total" [] bytes,
        "Bytes sent.";
    /// Membership datagrams received.
    GOSSIP_DATAGRAMS_RECEIVED = Counter "mesh_gossip_datagrams_received_total" [] none,
        "Datagrams received and decoded.";
    /// Membership datagrams refused.
    GOSSIP_DATAGRAMS_REFUSED = Counter "mesh_gossip_datagrams_refused_total" [] none,
        "Datagrams refused (undecodable, or a sender mismatch).";
    /// Datagrams dropped with the outbox full.
    GOSSIP_OUTBOX_DROPPED = Counter "mesh_gossip_outbox_dropped_total" [] none,
        "Datagrams dropped because the outbox was full.";
    /// Claims refused: an incarnation too far ahead, or a failure claim from a non-member.
    GOSSIP_CLAIMS_REFUSED = Counter "mesh_gossip_claims_refused_total" [] none,
        "Claims refused: an incarnation too far above the one held, or a member's failure claimed by a non-member.";
    /// Introductions past the bound of unverified members.
    GOSSIP_INTRODUCTIONS_REFUSED = Counter "mesh_gossip_introductions_refused_total" [] none,
        "Members a relay tried to introduce past its bound of unverified members.";

    // Transport (the membership and lease datagrams).
    /// QUIC connections established.
    TRANSPORT_CONNECTIONS_OPENED = Counter "mesh_transport_connections_opened_total" [] none,
        "QUIC connections established, dialled or accepted.";
    /// Dials that failed.
    TRANSPORT_DIALS_FAILED = Counter "mesh_transport_dials_failed_total" [] none,
        "Dials that failed.";
    /// Connections closed past the bound.
    TRANSPORT_CONNECTIONS_EVICTED = Counter "mesh_transport_connections_evicted_total" [] none,
        "QUIC connections closed because more than the bound were open, least recently used first.";
    /// Replacement dials.
    TRANSPORT_REDIALS = Counter "mesh_transport_redials_total" [] none,
        "Dials to replace a connection that fell silent, whose peer moved, or that the peer reset or closed.";
    /// Resumed handshakes.
    TRANSPORT_HANDSHAKES_RESUMED = Counter "mesh_transport_handshakes_resumed_total" [] none,
        "Incoming QUIC handshakes that resumed an earlier TLS session.";
    /// Node handshakes refused.
    TRANSPORT_HANDSHAKES_REFUSED = Counter "mesh_transport_handshakes_refused_total" [] none,
        "Incoming handshakes refused (e.g. a certificate not signed by the CA).";
    /// Datagrams dropped on the way out.
    TRANSPORT_DATAGRAMS_DROPPED = Counter "mesh_transport_datagrams_dropped_total" [] none,
        "Datagrams dropped on the way out.";
    /// Datagrams by channel and direction.
    TRANSPORT_CHANNEL_DATAGRAMS = Counter "mesh_transport_channel_datagrams_total"
        ["channel", "direction"] none,
        "Datagrams the driver handed to the transport (sent) or took from it (received), by \
         channel: membership (gossip), lease (Raft and lease requests) or shard (the shard \
         coordinator's instructions).";
    /// Their bytes.
    TRANSPORT_CHANNEL_BYTES = Counter "mesh_transport_channel_bytes_total"
        ["channel", "direction"] bytes,
        "Bytes of those datagrams (each with its channel byte; QUIC and UDP headers not \
         included).";

    // Leadership.
    /// A voter's Raft term.
    LEADERSHIP_RAFT_TERM = Gauge "mesh_leadership_raft_term" [] none,
        "Raft term of this voter.";
    /// 1 on the Raft leader.
    LEADERSHIP_RAFT_LEADER = Gauge "mesh_leadership_raft_leader" [] none,
        "1 if this voter is the Raft leader, 0 otherwise.";
    /// Raft leader changes seen.
    LEADERSHIP_RAFT_LEADER_CHANGES = Counter "mesh_leadership_raft_leader_changes_total" []
        none,
        "Raft leader changes this voter saw.";
    /// The holder of each non-shard scope.
    LEADERSHIP_HOLDER = Gauge "mesh_leadership_holder" ["scope"] none,
        "Node id holding each non-shard scope, in this voter's applied lease table.";
    /// The fencing token of each non-shard scope.
    LEADERSHIP_FENCE = Gauge "mesh_leadership_fence" ["scope"] none,
        "Fencing token of each non-shard scope's current grant.";
    /// Raft messages refused before raft-rs stepped them.
    LEADERSHIP_RAFT_REFUSED = Counter "mesh_leadership_raft_refused_total" ["reason"] none,
        "Raft messages refused before raft-rs stepped them, by rule: a sender that is not a \
         voter, or a field that breaks a Raft invariant.";
    /// Leases in the applied table.
    LEADERSHIP_TABLE_LEASES = Gauge "mesh_leadership_table_leases" [] none,
        "Leases in this voter's applied lease table.";
    /// Leases this node holds.
    LEADERSHIP_LEASES_HELD = Gauge "mesh_leadership_leases_held" [] none,
        "Leases this node holds.";
    /// Leases acquired.
    LEADERSHIP_ACQUIRED = Counter "mesh_leadership_acquired_total" [] none,
        "Leases this node acquired.";
    /// Leases given up.
    LEADERSHIP_RELINQUISHED = Counter "mesh_leadership_relinquished_total" [] none,
        "Leases this node stopped holding: lost, expired, released or transferred.";
    /// Lease request datagrams sent.
    LEADERSHIP_REQUEST_ATTEMPTS = Counter "mesh_leadership_request_attempts_total" [] none,
        "Lease request datagrams this node's client sent, retries included.";
    /// Lease requests without a quorum.
    LEADERSHIP_NO_QUORUM = Counter "mesh_leadership_no_quorum_total" [] none,
        "Lease requests that found no voter leader with a quorum.";

    // Certificates, drain, histograms.
    /// When the certificate in use expires.
    TRANSPORT_CERT_EXPIRY = Gauge "mesh_transport_cert_expiry_timestamp_seconds" [] seconds,
        "When this node's certificate expires (Unix seconds): alert well before time() \
         reaches it.";
    /// 1 while drained.
    SHARD_DRAINING = Gauge "mesh_shard_draining" [] none,
        "1 while this node is drained (POST /control/drain), 0 otherwise.";
    /// Shards configured.
    SHARD_CONFIGURED = Gauge "mesh_shard_configured" [] none,
        "Shards the [shards] section names (every node of a mesh names the same).";
    /// Shards this node holds.
    SHARD_OWNED = Gauge "mesh_shard_owned" [] none,
        "Shards this node holds now (leases on shard/{namespace}/{id} it renews).";
    /// 1 while this voter's coordinator acts.
    SHARD_COORDINATING = Gauge "mesh_shard_coordinating" [] none,
        "1 while this voter's shard coordinator acts (it leads the Raft group), 0 otherwise.";
    /// Plans made.
    SHARD_REBALANCE_PLANS = Counter "mesh_shard_rebalance_plans_total" [] none,
        "Rebalance plans this voter's coordinator made (the pool changed, a lease ended \
         unplanned, or POST /control/rebalance asked).";
    /// Moves started.
    SHARD_MOVES_STARTED = Counter "mesh_shard_moves_started_total" [] none,
        "Shard moves this voter's coordinator started (a handoff, or an acquire by the \
         target).";
    /// Moves done.
    SHARD_MOVES_COMPLETED = Counter "mesh_shard_moves_completed_total" [] none,
        "Shard moves done: the grant to the target applied.";
    /// Moves dropped.
    SHARD_MOVES_FAILED = Counter "mesh_shard_moves_failed_total" [] none,
        "Shard moves dropped: not done within 2 x shard TTL + 5 s, or the target left the \
         pool (the shard is planned again).";
    /// Moves under way.
    SHARD_MOVES_IN_FLIGHT = Gauge "mesh_shard_moves_in_flight" [] none,
        "Shard moves under way (acting coordinator only).";
    /// Shards without an owner.
    SHARD_UNOWNED = Gauge "mesh_shard_unowned" [] none,
        "Configured shards without an owner in the coordinator's map (acting coordinator \
         only).";
    /// Most minus fewest shards owned.
    SHARD_IMBALANCE = Gauge "mesh_shard_imbalance" [] none,
        "Most shards owned minus fewest owned over the members taking shards (acting \
         coordinator only).";
    /// The rebalancer's load bound.
    SHARD_LOAD_BOUND = Gauge "mesh_shard_load_bound" ["bound"] none,
        "Fewest (lower) and most (upper) shards the rebalancer lets a member taking shards \
         own, for the current pool (acting coordinator only).";
    /// Members in the pool.
    SHARD_POOL_MEMBERS = Gauge "mesh_shard_pool_members" ["role"] none,
        "Members up that announced they take shards, by role: eligible (takes shards) or \
         draining (acting coordinator only).";
    /// Queues served.
    QUEUE_SERVED = Gauge "mesh_queue_served" ["queue"] none,
        "Task queues this node serves (one per shard it owns), by queue (the shard \
         namespace).";
    /// Items pending.
    QUEUE_PENDING = Gauge "mesh_queue_pending" ["queue"] none,
        "Items waiting for a worker in the queues this node serves, by queue.";
    /// Items leased.
    QUEUE_ACTIVE = Gauge "mesh_queue_active" ["queue"] none,
        "Items leased to workers in the queues this node serves, by queue.";
    /// Enqueues acknowledged.
    QUEUE_ENQUEUED = Counter "mesh_queue_enqueued_total" ["queue"] none,
        "Enqueues this node acknowledged as owner (held by the configured replicas), by \
         queue.";
    /// Completions accepted.
    QUEUE_COMPLETED = Counter "mesh_queue_completed_total" ["queue"] none,
        "Completions this node accepted as owner (held by the replicas), by queue.";
    /// Failures reported.
    QUEUE_FAILED = Counter "mesh_queue_failed_total" ["queue"] none,
        "Failures workers reported to this node as owner, by queue.";
    /// Items requeued.
    QUEUE_REQUEUED = Counter "mesh_queue_requeued_total" ["queue"] none,
        "Items this node requeued as owner (failed with requeue, lease expired, or worker's \
         node gone past the grace), by queue.";
    /// Items dead-lettered.
    QUEUE_DEAD_LETTERED = Counter "mesh_queue_dead_lettered_total" ["queue"] none,
        "Items this node dead-lettered as owner (too many attempts, or failed without \
         requeue), by queue.";
    /// Stale tokens refused.
    QUEUE_STALE_REFUSED = Counter "mesh_queue_stale_refused_total" ["queue"] none,
        "Heartbeats, completions and failures refused for a stale ownership token (a deposed \
         owner's, or an expired lease's), by queue.";
    /// Queues with backpressure active.
    QUEUE_BACKPRESSURE_ACTIVE = Gauge "mesh_queue_backpressure_active" ["queue"] none,
        "Queues this node serves whose backpressure is active (producers should wait), by \
         queue.";
    /// Backpressure transitions.
    QUEUE_BACKPRESSURE_TRANSITIONS = Counter "mesh_queue_backpressure_transitions_total"
        ["queue", "state"] none,
        "Backpressure transitions of the queues this node serves, by queue and the state \
         entered (active, inactive).";
    /// Workers unhealthy.
    QUEUE_UNHEALTHY_PEERS = Gauge "mesh_queue_unhealthy_peers" [] none,
        "Workers this node's queues track that are unhealthy: their node Dead or Left, or \
         silent past the health grace.";
    /// Disconnected workers waiting for the grace.
    QUEUE_PENDING_REASSIGNMENTS = Gauge "mesh_queue_pending_reassignments" [] none,
        "Disconnected workers whose leased items are requeued once the health grace ends.";
    /// Recoveries as a new owner.
    QUEUE_RECOVERIES = Counter "mesh_queue_recoveries_total" [] none,
        "Queues this node rebuilt from the replicas after taking their shard over.";
    /// Replica checkpoint records written.
    QUEUE_CHECKPOINT_WRITES = Counter "mesh_queue_checkpoint_writes_total" [] none,
        "Checkpoint records this node's queue replicas wrote to disk (each synced before the \
         acknowledgement it backs was sent).";
    /// From an enqueue's arrival to its acknowledgement.
    QUEUE_REPLICATION_LAG = Histogram "mesh_queue_replication_lag_seconds" ["queue"] seconds,
        "Time from an enqueue's arrival at this owner to its acknowledgement (the configured \
         replicas hold it), by queue.";
    /// Round-trip times of direct probes.
    GOSSIP_PROBE_RTT = Histogram "mesh_gossip_probe_rtt_seconds" [] seconds,
        "Round-trip times of direct probes acknowledged by their target.";
    /// Time scopes went without a holder.
    LEADERSHIP_VACANCY = Histogram "mesh_leadership_vacancy_seconds" ["scope_kind"] seconds,
        "Time scopes went without a holder, as this voter applied it: from a lease's expiry \
         or release to the next grant (after a crash, the part of the failover after the \
         TTL; after a graceful release, the whole handover).";
    /// Time a voter knew no Raft leader.
    LEADERSHIP_RAFT_LEADERLESS = Histogram "mesh_leadership_raft_leaderless_seconds" []
        seconds,
        "Time this voter knew no Raft leader: from when it stopped following one (it \
         campaigned, or a newer term reached it) to when it knew the next.";

    // Chaos experiments (docs/diagnostics.md, "Faults in a real node").
    /// Experiments active on this node, by kind.
    CHAOS_EXPERIMENTS_ACTIVE = Gauge "mesh_chaos_experiments_active" ["kind"] none,
        "Chaos experiments active on this node now (applied here or elsewhere in their radius), \
         by fault kind.";
    /// Activations.
    CHAOS_ACTIVATIONS = Counter "mesh_chaos_activations_total" ["kind"] none,
        "Chaos experiments this node activated, by fault kind.";
    /// Reverts.
    CHAOS_REVERTS = Counter "mesh_chaos_reverts_total" ["kind", "reason"] none,
        "Chaos experiments this node reverted, by fault kind and reason (deadline: the \
         dead-man revert; aborted; kill-switch).";
    /// Aborts.
    CHAOS_ABORTS = Counter "mesh_chaos_aborts_total" [] none,
        "Chaos experiments ended early on this node by an abort call.";
    /// The kill switch.
    CHAOS_KILL_SWITCH_ENGAGED = Gauge "mesh_chaos_kill_switch_engaged" [] none,
        "1 while this node's chaos kill switch is engaged (every experiment refused until \
         re-armed), else 0.";
    /// Messages the chaos transport acted on.
    CHAOS_LINK_MESSAGES = Counter "mesh_chaos_link_messages_total" ["action"] none,
        "Messages the chaos transport wrapper acted on, by action (dropped, delayed, \
         duplicated, reordered).";
    /// Targets that never confirmed a revert to this node, their experiment's origin.
    CHAOS_UNCONFIRMED_REVERTS = Counter "mesh_chaos_unconfirmed_reverts_total" [] none,
        "Targets of the chaos experiments this node started that had not confirmed their \
         revert when it stopped asking them (down, cut off, or still running it after the \
         deadline): each is listed unconfirmed on this node.";
    /// Time to recover after a revert.
    CHAOS_RECOVERY = Histogram "mesh_chaos_recovery_seconds" [] seconds,
        "Time from a chaos revert to this node's membership view converged again (every \
         member it saw alive when the experiment started alive again).";

    // Stream messages and TLS of the transport.
    /// Messages carried on streams.
    TRANSPORT_STREAM_MESSAGES = Counter "mesh_transport_stream_messages_total" ["direction"]
        none,
        "Messages too large for a QUIC datagram, carried on a stream, by direction.";
    /// Their bytes.
    TRANSPORT_STREAM_BYTES = Counter "mesh_transport_stream_bytes_total" ["direction"] bytes,
        "Bytes of the stream messages, by direction.";
    /// Stream messages not sent.
    TRANSPORT_STREAM_MESSAGES_DROPPED = Counter "mesh_transport_stream_messages_dropped_total"
        [] none,
        "Stream messages not sent (over the size limit, too many in flight, stopped by the \
         peer, or not acknowledged in time).";
    /// Incoming stream messages refused.
    TRANSPORT_STREAMS_REFUSED = Counter "mesh_transport_streams_refused_total" [] none,
        "Incoming stream messages refused (over the size limit, too many at once, too slow, \
         or reset by the sender).";
    /// Certificate reloads applied or refused.
    TRANSPORT_CERT_RELOADS = Counter "mesh_transport_cert_reloads_total" ["result"] none,
        "Changes of the certificate, key or CA files, applied (ok) or refused (error, the \
         previous material stays in use).";
    /// Failed TLS handshakes.
    TRANSPORT_HANDSHAKE_FAILURES = Counter "mesh_transport_handshake_failures_total"
        ["listener", "reason"] none,
        "TLS handshakes that failed, by listener and reason (expired: outside its validity; \
         untrusted: unknown CA).";

    // Authorization and audit.
    /// Requests refused by authorization.
    CONTROL_REFUSALS = Counter "mesh_control_refusals_total" ["reason"] none,
        "Control API requests refused by authorization, by reason.";
    /// Audit records written.
    CONTROL_AUDIT_RECORDS = Counter "mesh_control_audit_records_total" [] none,
        "Audit records written to the audit log file.";
    /// Audit records not written.
    CONTROL_AUDIT_DROPPED = Counter "mesh_control_audit_dropped_total" ["reason"] none,
        "Audit records not written to the file, by reason.";

    // gRPC health watchers.
    /// `Health/Watch` streams open.
    CONTROL_HEALTH_WATCHERS = Gauge "mesh_control_health_watchers" [] none,
        "gRPC Health/Watch streams open now.";
    /// `Health/Watch` streams refused.
    CONTROL_HEALTH_WATCH_REFUSED = Counter "mesh_control_health_watch_refused_total" [] none,
        "gRPC Health/Watch streams refused (RESOURCE_EXHAUSTED) because the most allowed were \
         open.";
    /// Readiness reads for watchers.
    CONTROL_HEALTH_WATCH_READS = Counter "mesh_control_health_watch_reads_total" [] none,
        "Reads of the node's readiness for gRPC Health/Watch streams (one per interval \
         however many watch).";

    // The control server.
    /// Control requests served.
    CONTROL_REQUESTS = Counter "mesh_transport_control_requests_total" ["protocol"] none,
        "Control API requests served, by HTTP version.";
    /// Control TLS handshakes failed.
    CONTROL_HANDSHAKES_FAILED = Counter "mesh_transport_control_handshakes_failed_total"
        ["transport"] none,
        "Control API TLS handshakes that failed or timed out, by transport.";
    /// Request body bytes read.
    CONTROL_REQUEST_BODY_BYTES = Counter "mesh_transport_control_request_body_bytes_total"
        ["protocol"] bytes,
        "Request body bytes the control API's handlers read, by HTTP version (a refused \
         request's body is not read).";
    /// Control connections refused.
    CONTROL_CONNECTIONS_REFUSED = Counter "mesh_transport_control_connections_refused_total"
        ["transport", "reason"] none,
        "Control API connections refused, by transport and reason: connections (the listener \
         is full), handshakes (too many in progress), address (too many handshaking or \
         anonymous from one source address), anonymous (no client certificate and only the \
         permits reserved for certificates left).";
    /// Control connections closed by the server.
    CONTROL_CONNECTIONS_CLOSED = Counter "mesh_transport_control_connections_closed_total"
        ["transport", "reason"] none,
        "Control API connections the server closed, by transport and reason: \
         first_request_timeout (no request after the handshake), idle_timeout (nothing in \
         flight).";
    /// QUIC Retry packets the control endpoint sent.
    CONTROL_QUIC_RETRIES = Counter "mesh_transport_control_quic_retries_total" [] none,
        "QUIC Retry packets the control endpoint sent: with more than half its handshake \
         permits taken, a connection from an address that has not proven it receives packets \
         must echo a token first.";
    /// Control connections open.
    CONTROL_CONNECTIONS = Gauge "mesh_transport_control_connections" ["transport", "client"]
        none,
        "Control API connections open now, by transport and client: handshake (in progress), \
         anonymous (no client certificate), authenticated (a CA-signed client certificate).";

    // MeshKit's own client (`meshctl transport stats --prometheus`).
    /// The client's requests by protocol.
    CLIENT_REQUESTS = Counter "mesh_transport_client_requests_total" ["protocol"] none,
        "Control API requests answered, by negotiated protocol.";
    /// The client's fallbacks from h3.
    CLIENT_FALLBACKS = Counter "mesh_transport_client_fallbacks_total"
        ["protocol", "reason"] none,
        "Requests that fell back from HTTP/3 to TLS over TCP, by negotiated protocol and \
         reason.";
    /// The client's failed requests.
    CLIENT_FAILURES = Counter "mesh_transport_client_failures_total" [] none,
        "Control API requests that failed over every protocol tried.";

    // Health probes (`GET /control/probes`): the label `probe` takes at most
    // `meshkit::diag::probe::MAX_PROBES` (4,096) values per node; `result` and `state` four each.
    /// Probe results by kind.
    PROBE_RESULTS = Counter "mesh_probe_results_total" ["probe", "result"] none,
        "Health probe runs ended, by probe and result: pass, slow (passed above its latency \
         threshold), fail, timeout.";
    /// Probe run durations.
    PROBE_DURATION = Histogram "mesh_probe_duration_seconds" ["probe"] seconds,
        "Health probe run durations, by probe (a timeout counts at its timeout).";
    /// Probe states.
    PROBE_STATE = Gauge "mesh_probe_state" ["probe", "state"] none,
        "1 for each probe's current state (unknown, healthy, degraded, failing), 0 for the \
         others.";
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// The reference of every family, for operators.
    const DOC: &str = include_str!("../../../../docs/metrics.md");

    /// Type and labels of a family.
    type Shape = (String, Vec<String>);

    /// The node families `docs/metrics.md` documents: each backticked `mesh_*{label,...}` in
    /// the first cell of a table row, with the row's type (second cell). The page's
    /// `meshkit_autoscaler_*` rows are the compose stack's autoscaler, not a node's: its own
    /// test in `meshkit-chaos` holds them to its families.
    fn documented() -> BTreeMap<String, Shape> {
        let mut out = BTreeMap::new();
        for line in DOC.lines() {
            let Some(row) = line.trim().strip_prefix('|') else {
                continue;
            };
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let [names, kind, ..] = cells.as_slice() else {
                continue;
            };
            for name in names
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|n| !n.starts_with("meshkit_autoscaler_"))
            {
                let (name, labels) = match name.split_once('{') {
                    Some((name, labels)) => (
                        name,
                        labels
                            .trim_end_matches('}')
                            .split(',')
                            .map(|l| l.trim().to_owned())
                            .collect(),
                    ),
                    None => (name, Vec::new()),
                };
                let shape = ((*kind).to_owned(), labels);
                assert!(
                    out.insert(name.to_owned(), shape).is_none(),
                    "{name} is documented twice"
                );
            }
        }
        out
    }

    /// Every family of the catalogue is documented with its type and labels, and nothing is
    /// documented that the catalogue does not have.
    #[test]
    fn docs_metrics_md_documents_exactly_the_catalogue() {
        let documented = documented();
        let catalogue: BTreeMap<String, Shape> = ALL
            .iter()
            .map(|f| {
                let labels = f.labels.iter().map(|l| (*l).to_owned()).collect();
                (f.name.to_owned(), (f.kind.as_str().to_owned(), labels))
            })
            .collect();
        let names: BTreeSet<&String> = documented.keys().chain(catalogue.keys()).collect();
        let mut wrong = Vec::new();
        for name in names {
            match (catalogue.get(name), documented.get(name)) {
                (Some(c), Some(d)) if c == d => {}
                (Some(c), Some(d)) => {
                    wrong.push(format!("{name}: {c:?} in the catalogue, {d:?} in the docs"))
                }
                (Some(_), None) => wrong.push(format!("{name}: not documented")),
                (None, _) => wrong.push(format!("{name}: documented, not in the catalogue")),
            }
        }
        assert!(wrong.is_empty(), "docs/metrics.md:\n{}", wrong.join("\n"));
    }

    /// Names are unique; counters end in `_total`; a unit ends the name (before `_total`), so
    /// the stem a metrics library is given leads back to the name.
    #[test]
    fn names_follow_the_prometheus_conventions() {
        let mut seen = BTreeSet::new();
        for f in ALL {
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert!(f.name.starts_with("mesh_"), "{}", f.name);
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
            let mut name = f.stem().to_owned();
            if let Some(unit) = f.unit {
                name = format!("{name}_{}", unit.as_str());
            }
            if f.kind == Kind::Counter {
                name.push_str("_total");
            }
            assert_eq!(name, f.name);
            assert!(f.help.ends_with('.'), "{}", f.name);
            assert!(!f.labels.contains(&"le"), "{}", f.name);
        }
    }
}
