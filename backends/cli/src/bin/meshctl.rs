//! `meshctl`: operator commands for MeshKit.
//!
//! ```text
//! meshctl config set-context|use-context|get-contexts|current-context
//!                                               named addresses and credentials
//! meshctl certs init --out DIR --nodes N        a development CA, N node certificates, client
//!                                               certificates (meshctl-admin, -operator,
//!                                               -observer) and a token signing key
//! meshctl tokens keygen --out DIR               a token signing key pair
//! meshctl tokens issue --key FILE --subject S --scope mesh.operate --ttl 1h
//!                                               a signed bearer token, on stdout
//! meshctl peers list [--state S] [--cluster C] [--region R] [--meta K=V] [--json]
//!                                               one node's view of the mesh
//! meshctl leaders status | watch | transfer     leases and the Raft voters
//! meshctl shards list | watch | rebalance [--dry-run]
//!                                               shard owners, moves in flight, load per node;
//!                                               every move as it happens; the coordinator's plan
//! meshctl drain [NODE] [--wait] | resume        a node stops (or starts again) holding leases;
//!                                               --wait reports when it holds nothing
//! meshctl health [--json]                       every member's readiness, the Raft leader and
//!                                               quorum, lease holders, certificate expiry;
//!                                               exits 1 when the mesh is unhealthy
//! meshctl clusters | versions                   members by cluster and region; versions in use
//! meshctl join SEED... | leave                 a node joins a mesh through seeds; leaves it
//! meshctl force-leave NODE                      every member moves a dead member to left
//! meshctl chaos plan FILE | start FILE (--confirm TOKEN | --yes) | list | abort ID | kill-switch [--rearm]
//!                                               chaos experiments: blast radius and token,
//!                                               start, every member's experiments, abort,
//!                                               the kill switch (docs/diagnostics.md)
//! meshctl voters list                           the Raft voters, their roles and states
//! meshctl voters add N | remove N | replace OLD NEW
//!                                               Raft voter changes, one at a time, refused
//!                                               when they would lose quorum
//! meshctl lock SCOPE -- CMD                     runs CMD while holding a lease on SCOPE
//! meshctl elect SCOPE -- CMD                    runs CMD whenever elected for SCOPE
//! meshctl probes list [--tag K=V] [--addr A --addr B] [--json]
//!                                               health probes of every member (or of each --addr)
//! meshctl transport stats [--addr HOST:PORT] [--json|--prometheus] [--reset]
//!                                               requests by protocol and HTTP/3 fallbacks
//! ```
//!
//! Commands that talk to a node ask the one at `--addr` (or `MESHCTL_ADDR`, or the context's;
//! default `127.0.0.1:8101`, the first node of `scripts/local-cluster.sh`), and print a table
//! or readable text, or the node's JSON with `--json`. They take the connection options of
//! `ConnectArgs`: the CA to
//! verify the node with (`--ca`, default `certs/ca.pem`), an optional client certificate
//! (`--cert`/`--key`), an optional bearer token (`--token` or `MESHCTL_TOKEN`, or
//! `--token-file`), and the protocols (`--protocol auto|h3|tcp`). The client tries HTTP/3 first
//! and falls back to HTTP/2 over TLS; its counters and the servers whose HTTP/3 failed recently
//! are kept between runs in the state file (`--transport-state` or `MESHCTL_STATE`, default
//! `$XDG_STATE_HOME/meshctl/transport.json`), which `meshctl transport stats` prints.
//!
//! Contexts (`meshctl config ...`, `--context`) keep addresses and credentials in a file: each
//! setting comes from its flag, else its environment variable, else the context, else the
//! default (see `meshctl/contexts.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use http::Method;
use meshkit_node::api::json::{ClustersResponse, VersionsResponse};
use meshkit_node::api::json::{FeedEntry, LeadershipView};
use meshkit_node::api::json::{JoinRequest, JoinResponse, LeaveResponse};
use meshkit_node::api::json::{PeerJson, PeersResponse};
use meshkit_node::api::json::{ResumeResponse, TransferRequest, TransferResponse};
use meshkit_node::client::{Client, ClientConfig, Protocols, StatsSnapshot};
use serde::{Deserialize, Serialize};

#[path = "meshctl/chaos.rs"]
mod chaos;
#[path = "meshctl/contexts.rs"]
mod contexts;
#[path = "meshctl/force_leave.rs"]
mod force_leave;
#[path = "meshctl/health.rs"]
mod health;
#[path = "meshctl/probes.rs"]
mod probes;
#[path = "meshctl/queue.rs"]
mod queue;
#[path = "meshctl/session.rs"]
mod session;
#[path = "meshctl/shards.rs"]
mod shards;
#[path = "meshctl/voters.rs"]
mod voters;

/// Most node certificates one `certs init` makes.
const MAX_NODES: u64 = 1000;
/// Most requests one `transport stats --requests` makes.
const MAX_PROBES: u32 = 10_000;
/// Largest state file read, in bytes.
const MAX_STATE_BYTES: u64 = 1024 * 1024;
/// The node asked when neither `--addr` nor `MESHCTL_ADDR` names one: the first node of
/// `scripts/local-cluster.sh`.
const DEFAULT_ADDR: &str = "127.0.0.1:8101";
/// The CA certificate used when neither a flag, the environment nor a context names one.
const DEFAULT_CA: &str = "certs/ca.pem";
/// Most pages `peers list` follows (the node answers at most 1,000 members a page).
const MAX_PEER_PAGES: usize = 1_000;
/// Longest metadata value `peers list` prints whole; longer ones end in `...`.
const METADATA_VALUE_CHARS: usize = 32;

/// Operate a MeshKit mesh: its members, leases and shards through a node's control API, and
/// the certificates and tokens that API asks for.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version)]
struct Cli {
    /// The context (from the config file) whose address and credentials to use; each is
    /// overridden by its flag or environment variable. Default: the file's current-context.
    #[arg(long, global = true, env = "MESHCTL_CONTEXT")]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Contexts: named addresses and credentials in meshctl's config file ($MESHCTL_CONFIG, or
    /// ~/.config/meshkit/meshctl.toml).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Development certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Signed bearer tokens for the control API.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// The mesh as one node sees it.
    Peers {
        #[command(subcommand)]
        command: PeersCommand,
    },
    /// The control API's transports as this client sees them.
    Transport {
        #[command(subcommand)]
        command: TransportCommand,
    },
    /// Leases and the Raft voters as one node sees them.
    Leaders {
        #[command(subcommand)]
        command: LeadersCommand,
    },
    /// Shard owners (the holders of `shard/{namespace}/{id}` leases).
    Shards {
        #[command(subcommand)]
        command: ShardsCommand,
    },
    /// Drains a node: it stops contending for leases and releases those it holds; its shards
    /// are handed to the other members.
    Drain {
        /// The member to drain, by node id (reached through the control address it publishes,
        /// as the node at --addr knows it); default: the node at --addr.
        #[arg(value_name = "NODE")]
        target: Option<u64>,
        /// Wait until the node holds no lease and no shard, printing progress on stderr; exit
        /// 1 if it still holds some after --timeout.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, such as 30s or 5m.
        #[arg(long, default_value = "2m", requires = "wait")]
        timeout: String,
        /// Print the node's JSON answer instead of text (with --wait: one object once drained).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Undoes a drain: the node contends again for its configured scopes.
    Resume {
        /// Print the node's JSON answer instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Checks the whole mesh from one member: asks every live member (through the `control`
    /// address it publishes) for its readiness, Raft state, leases and certificate expiry.
    /// Exits 1 when a member is not ready or unreachable, a voter is down, the voters do not
    /// agree on one Raft leader with a quorum, or a certificate expires within a day.
    Health {
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Health probes: the node's built-ins and a service's own (docs/diagnostics.md).
    Probes {
        #[command(subcommand)]
        command: ProbesCommand,
    },
    /// Members by cluster, state and region, and the holder of global-control.
    Clusters {
        /// Print the node's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Software and wire protocol versions among the live members.
    Versions {
        /// Print the node's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Makes the node at --addr join a mesh through the given members, as `serf join` (needs
    /// mesh.admin). The members arrive by gossip: `meshctl peers list` shows them.
    Join {
        /// Members to join through, ID@IP:PORT (their gossip address, as `seeds` in node.toml).
        #[arg(required = true, value_name = "SEED")]
        seeds: Vec<String>,
        /// Print the node's JSON answer instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Makes the node at --addr leave the mesh gracefully, as `consul leave` (needs
    /// mesh.admin): it releases its leases, announces `left` and stops probing. Stop its process
    /// afterwards: it does not rejoin without a restart.
    Leave {
        /// Print the node's JSON answer instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Moves NODE, a member that is dead, to `left` at every member, as `serf force-leave`
    /// (needs mesh.admin): it is then no longer counted as failed or probed. The node at --addr
    /// must hold NODE dead (else it refuses, and no one else is asked); then every member it
    /// lists alive or suspect is asked at its control address. Exits 1 unless every member
    /// asked holds NODE left.
    ForceLeave {
        /// The dead member's node id.
        #[arg(value_name = "NODE")]
        member: u64,
        /// Print JSON (every member asked and its answer) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Chaos experiments (docs/diagnostics.md, "Chaos safety model"): plan a fault and see
    /// its blast radius, start it with the confirmation token, list, abort, kill switch.
    Chaos {
        #[command(subcommand)]
        command: chaos::ChaosCommand,
    },
    /// Task queues (docs/task-queues.md): what a node serves, its backpressure signals, its
    /// workers' lease health, and drain/restore of a shard's queue (needs mesh.operate).
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// The Raft voters, as `consul operator raft list-peers`.
    Voters {
        #[command(subcommand)]
        command: VotersCommand,
    },
    /// Runs a command while holding a lease on SCOPE, as `consul lock`: waits for the lease
    /// (the node at --addr holds it for this session), runs CMD with MESHKIT_SCOPE,
    /// MESHKIT_FENCING_TOKEN, MESHKIT_HOLDER and MESHKIT_LEASE_TTL_MS in its environment, renews
    /// the lease while CMD runs, stops CMD (SIGTERM to its process group, SIGKILL after --grace)
    /// if the lease is lost, releases it when CMD exits, and exits with CMD's status (after a
    /// loss: CMD's status if not 0, else 1). Session lines go to stderr.
    Lock {
        #[command(flatten)]
        session: SessionArgs,
        /// Give up waiting for the lease after this long, such as 30s (default: wait).
        #[arg(long)]
        timeout: Option<String>,
    },
    /// Runs a command whenever this session wins the election for SCOPE, as `etcdctl elect`:
    /// campaigns for the lease, runs CMD while it is held (environment as for `lock`), stops CMD
    /// when the lease is lost and campaigns again (or exits, with --once), until CMD exits by
    /// itself: then the lease is released and meshctl exits with CMD's status.
    Elect {
        #[command(flatten)]
        session: SessionArgs,
        /// Exit after a lost lease instead of campaigning again.
        #[arg(long)]
        once: bool,
    },
}

/// What `lock` and `elect` share.
#[derive(Debug, Args)]
struct SessionArgs {
    /// The scope, such as lock/backup or election/reporter (not one a node campaigns for).
    scope: String,
    /// The lease's TTL: how long the lease outlives a session that stops renewing it.
    #[arg(long, default_value = "10s")]
    ttl: String,
    /// How long to wait between two asks while another holds the lease.
    #[arg(long, default_value = "1s")]
    retry: String,
    /// How long CMD gets between SIGTERM and SIGKILL once the lease is lost.
    #[arg(long, default_value = "5s")]
    grace: String,
    /// Write the session's lines (waiting, acquired, lost, exited, released) as JSON objects,
    /// one a line, on stderr.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    node: NodeArgs,
    /// The command and its arguments, after --.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// The queues the node serves (pending, active, backpressure) and its counters as owner.
    Stats {
        /// Print the node's JSON answer instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Follows the backpressure signals the node sees (every shard's owner publishes its own):
    /// one line per signal now and per change; stops after --count signals or --for.
    WatchBackpressure {
        /// Only this queue (shard namespace).
        #[arg(long)]
        queue: Option<String>,
        /// Stop after this many signals.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long, such as 30s or 5m.
        #[arg(long = "for")]
        duration: Option<String>,
        /// Print one JSON object per signal instead of a line of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Works QUEUE's items: leases one, holds it --work (the stand-in for real work), completes
    /// it, and again; waits --idle when nothing is pending. Stops after --for, --max-items, or at
    /// SIGTERM/SIGINT once the item in hand is completed (needs mesh.operate). The worker the
    /// compose environment's autoscaler starts in containers (docs/chaos-environment.md).
    Work {
        /// The queue (a shard namespace).
        queue: String,
        /// How long one item takes, such as 200ms; below the lease's timeout (no heartbeat).
        #[arg(long, default_value = "200ms")]
        work: String,
        /// The wait after an empty lease or a refused call, such as 250ms.
        #[arg(long, default_value = "250ms")]
        idle: String,
        /// Stop after this long, such as 30m.
        #[arg(long = "for", default_value = "1h")]
        duration: String,
        /// Stop after completing this many items.
        #[arg(long)]
        max_items: Option<u64>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Enqueues PAYLOAD into QUEUE (needs mesh.operate) and prints the item's id once the
    /// owner acknowledged it, after the configured replicas hold it.
    Enqueue {
        /// The queue (a shard namespace).
        queue: String,
        /// The item's payload (text).
        payload: String,
        /// Into this shard's queue (its number); default: chosen from the payload's hash.
        #[arg(long)]
        shard: Option<u32>,
        /// Print the node's JSON answer instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Leases up to --max items of QUEUE in one request (needs mesh.operate) and prints each
    /// with its token: heartbeat, complete or fail each before its lease runs out. Nothing
    /// pending prints nothing leased.
    Lease {
        /// The queue (a shard namespace).
        queue: String,
        /// Only this shard's queue (its number); default: every shard tried in turn.
        #[arg(long)]
        shard: Option<u32>,
        /// The most items to lease (1..=256); the owner grants as many as are pending and fit
        /// its answer (about 30 items of 8 bytes).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
        max: u32,
        /// Print the node's JSON answer instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// The workers the node's queues track: healthy, disconnected, last heartbeat.
    LeaseHealth {
        /// Print the node's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Takes every pending item out of SHARD's queue (ask its owner; needs mesh.operate) and
    /// prints them: keep the --json output to restore them.
    Drain {
        /// The shard, such as shard/jobs/3.
        shard: String,
        /// Print the node's JSON answer (the items) instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Puts back into SHARD's queue the items of a drain (needs mesh.operate).
    Restore {
        /// The shard, such as shard/jobs/3.
        shard: String,
        /// The file holding `meshctl queue drain --json`'s output.
        #[arg(long)]
        from: String,
        /// Print the node's JSON answer instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ProbesCommand {
    /// Every probe of every member: state, consecutive failures, latency p50/p99, next run,
    /// last error. With one --addr (or none) that node lists the members and each is asked at
    /// the control address it publishes; with several --addr, exactly those are asked.
    List {
        /// Only probes with this tag: cluster=C, namespace=N or LABEL=V (repeat: all must match).
        #[arg(long)]
        tag: Vec<String>,
        /// A node's control endpoint, HOST:PORT (repeat to ask exactly these nodes)
        /// [default: the context's, else 127.0.0.1:8101].
        #[arg(long = "addr", env = "MESHCTL_ADDR", value_delimiter = ',')]
        addrs: Vec<String>,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(Debug, Subcommand)]
enum VotersCommand {
    /// Lists the voters with their Raft role and member state (ask a voter: it reports its
    /// Raft state; another node knows only the configured voter ids).
    List {
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Adds a node as a Raft voter (needs mesh.admin): it must be an alive member started with
    /// `[leadership] join_as_voter = true`. The Raft leader proposes it (meshctl follows the
    /// redirect of another node), refusing it if the live voters could not make a quorum of the
    /// enlarged set; meshctl waits until it is applied and the new voter has caught up.
    Add {
        /// The node to add.
        node_id: u64,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Removes a Raft voter (needs mesh.admin), refused if the live voters left could not make
    /// a quorum. Removing the leader hands leadership to a caught-up voter first.
    Remove {
        /// The voter to remove.
        node_id: u64,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Replaces voter OLD by NEW, one change at a time (needs mesh.admin): adds NEW, waits until
    /// it has caught up, then removes OLD; when OLD is not alive, removes it first. Each step
    /// is checked against the quorum of live voters.
    Replace {
        /// The voter to replace.
        old: u64,
        /// The joining voter that takes its place.
        new: u64,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// What the voter changes share.
#[derive(Debug, Args)]
struct WaitArgs {
    /// How long to wait for each change to be applied (and an added voter to catch up), such
    /// as 30s.
    #[arg(long, default_value = "30s")]
    wait: String,
    /// Print the steps and the final voter set as JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Lists the contexts; `*` marks the current one.
    GetContexts {
        /// Print the file's contents as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prints the current context's name.
    CurrentContext {
        /// Print `{"current_context": NAME}` instead.
        #[arg(long)]
        json: bool,
    },
    /// Makes NAME the current context.
    UseContext {
        /// The context.
        name: String,
        /// Print `{"current_context": NAME}` instead of a line of text.
        #[arg(long)]
        json: bool,
    },
    /// Creates the context NAME, or changes the settings given (paths are stored absolute);
    /// the first context made becomes the current one.
    SetContext {
        /// The context.
        name: String,
        /// A node's control endpoint, HOST:PORT.
        #[arg(long)]
        addr: Option<String>,
        /// The CA certificate the nodes' certificates are signed by.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// A client certificate (PEM), with --key.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// The client certificate's private key (PEM), with --cert.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// A file holding a bearer token (the token itself is not copied into the config).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the context as JSON instead of a line of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum LeadersCommand {
    /// The node's voter state, its applied lease table and the leases it holds.
    Status {
        /// Print the JSON answer instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Follows the node's leadership feed live (a voter's shows every grant in the mesh): one
    /// server-sent event stream, resumed after the last entry seen if it ends; stops after
    /// --count entries or --for, or on Ctrl-C. Renewals are left out unless --kind renewed
    /// asks for them.
    Watch {
        /// Only entries of this kind (acquired, renewed, lost, transferred, expired, released,
        /// raft_leader, granted, lease_released, lease_expired, voters); repeat for several.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Only entries about scopes starting with this, such as shard/ or global-control.
        #[arg(long)]
        scope: Option<String>,
        /// Start after this sequence number (default: with the oldest entry the node holds).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Stop after this many entries.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long, such as 30s or 5m.
        #[arg(long = "for")]
        duration: Option<String>,
        /// Poll the feed every this many milliseconds instead of following its stream (for a
        /// proxy that does not pass streams through).
        #[arg(long, value_parser = clap::value_parser!(u64).range(50..=60_000))]
        poll_ms: Option<u64>,
        /// Print one JSON object per entry instead of a line of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Hands a lease the node at --addr holds to another node.
    Transfer {
        /// The scope, such as global-control or shard/orders/7.
        #[arg(long)]
        scope: String,
        /// The node to hand it to.
        #[arg(long)]
        to: u64,
        /// Print the node's JSON answer instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ShardsCommand {
    /// Lists shard owners with their fencing tokens, the moves in flight and the shards per
    /// node (from the coordinator, the Raft leader, when the node asked is not it).
    List {
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Follows the shard watch stream (a voter's shows every owner change in the mesh): one
    /// line per grant, release or expiry of a shard lease; stops after --count entries or
    /// --for, or on Ctrl-C.
    Watch {
        /// Only shards of this namespace; repeat for several.
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// Only entries of this kind (granted, lease_released, lease_expired, acquired,
        /// transferred, ...); repeat for several. Renewals only when asked for.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Start after this sequence number of the node's feed (default: with the oldest entry
        /// it holds).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Stop after this many entries.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long, such as 30s or 5m.
        #[arg(long = "for")]
        duration: Option<String>,
        /// Print one JSON object per entry instead of a line of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Asks the shard coordinator for its plan: with --dry-run only shows it, otherwise the
    /// coordinator carries it out (needs mesh.operate).
    Rebalance {
        /// Show the plan without moving anything.
        #[arg(long)]
        dry_run: bool,
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Writes ca.pem, and node-I.pem and node-I.key for each node I in 1..=N.
    Init {
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// How many node certificates.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_NODES))]
        nodes: u64,
        /// Also write ca.key (mode 0600), the CA's private key, so that new certificates can be
        /// issued from the same CA later (the compose environment's rotation drill). Keep it
        /// away from the nodes outside a test environment.
        #[arg(long)]
        keep_ca_key: bool,
        /// Print the files written as JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Writes token-signing.key (private, mode 0600) and token-signing.pub (for every node's
    /// `[access] token_key`).
    Keygen {
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Print the files written as JSON instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Prints a token signed with KEY for SUBJECT holding the given scopes.
    Issue {
        /// The private signing key (token-signing.key).
        #[arg(long)]
        key: PathBuf,
        /// Who the token speaks for (A-Z a-z 0-9 . _ @ : -).
        #[arg(long)]
        subject: String,
        /// A scope: mesh.observe, mesh.operate or mesh.admin (repeat for several).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// How long it is valid, such as 30m, 1h or 720h (at most 90 days).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Print the token with its subject, scopes and expiry as JSON instead of the token
        /// alone.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PeersCommand {
    /// Lists the members a node knows, filtered by state and metadata.
    List {
        /// Only members in this state.
        #[arg(long, value_enum)]
        state: Option<MemberStateArg>,
        /// Only members whose `cluster` metadata is this.
        #[arg(long)]
        cluster: Option<String>,
        /// Only members whose `region` metadata is this.
        #[arg(long)]
        region: Option<String>,
        /// Only members with this metadata, KEY=VALUE; repeat for several (all must match).
        #[arg(long = "meta", value_parser = parse_key_value)]
        meta: Vec<(String, String)>,
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Debug, Subcommand)]
enum TransportCommand {
    /// Requests by negotiated protocol and fallbacks from HTTP/3 by reason, over every run kept
    /// in the state file (and the probes this run makes with --addr).
    Stats {
        /// Probe this control endpoint first with GET /healthz.
        #[arg(long)]
        addr: Option<String>,
        /// How many probes with --addr.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PROBES)))]
        requests: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Print the Prometheus text exposition instead of a table.
        #[arg(long, conflicts_with = "json")]
        prometheus: bool,
        /// Forget the counters and remembered fallbacks first.
        #[arg(long)]
        reset: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// A member state, as `peers list --state` filters on it.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum MemberStateArg {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl MemberStateArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
        }
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE, such as zone=a")),
    }
}

/// Which node a command asks, and how it reaches it.
#[derive(Debug, Args)]
struct NodeArgs {
    /// The node's control endpoint, HOST:PORT [default: the context's, else 127.0.0.1:8101].
    #[arg(long, env = "MESHCTL_ADDR")]
    addr: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

impl NodeArgs {
    /// The address asked: the flag's, the environment's, the context's, or [`DEFAULT_ADDR`].
    fn addr(&self) -> &str {
        self.addr.as_deref().unwrap_or(DEFAULT_ADDR)
    }

    /// Fills what neither a flag nor the environment set from `context`.
    fn apply(&mut self, context: &contexts::Context) {
        if self.addr.is_none() {
            self.addr.clone_from(&context.addr);
        }
        self.connect.apply(context);
    }
}

/// How `meshctl` reaches a node's control API.
#[derive(Debug, Args)]
struct ConnectArgs {
    /// The CA certificate the node's certificate must be signed by [default: the context's,
    /// else certs/ca.pem].
    #[arg(long, env = "MESHCTL_CA")]
    ca: Option<PathBuf>,
    /// A client certificate to present (PEM), with --key.
    #[arg(long, env = "MESHCTL_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), with --cert.
    #[arg(long, env = "MESHCTL_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// A bearer token sent as `Authorization: Bearer <token>`.
    #[arg(long, env = "MESHCTL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding a bearer token (from `meshctl tokens issue`), instead of --token.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Accept only a server certificate for this name (default: any node-N name the CA signed).
    #[arg(long)]
    server_name: Option<String>,
    /// Which protocols to use.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Auto)]
    protocol: ProtocolArg,
    /// Milliseconds HTTP/3 gets to complete its handshake before the fallback.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    h3_timeout_ms: u64,
    /// Milliseconds one request gets overall.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    timeout_ms: u64,
    /// The file that keeps transport counters and remembered HTTP/3 fallbacks between runs.
    #[arg(long, env = "MESHCTL_STATE")]
    transport_state: Option<PathBuf>,
}

impl ConnectArgs {
    /// The CA: the flag's, the environment's, the context's, or `certs/ca.pem`.
    fn ca(&self) -> &Path {
        self.ca.as_deref().unwrap_or(Path::new(DEFAULT_CA))
    }

    /// Fills what neither a flag nor the environment set from `context`: the CA, the client
    /// certificate and key (as a pair), the token (unless --token or --token-file was given).
    fn apply(&mut self, context: &contexts::Context) {
        if self.ca.is_none() {
            self.ca.clone_from(&context.ca);
        }
        if self.cert.is_none() && self.key.is_none() {
            self.cert.clone_from(&context.cert);
            self.key.clone_from(&context.key);
        }
        if self.token.is_none() && self.token_file.is_none() {
            self.token.clone_from(&context.token);
            self.token_file.clone_from(&context.token_file);
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProtocolArg {
    /// HTTP/3, falling back to HTTP/2 over TLS.
    Auto,
    /// HTTP/3 only.
    H3,
    /// TLS over TCP only (HTTP/2, or HTTP/1.1).
    Tcp,
}

/// What the state file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Counters over every run.
    stats: StatsSnapshot,
    /// Servers whose HTTP/3 failed, with the Unix time (seconds) the memory ends.
    h3_failed_until: BTreeMap<SocketAddr, u64>,
}

impl Command {
    /// The connection settings of a command that talks to a node (the address too, if it takes
    /// one).
    fn connection(&mut self) -> Option<(Option<&mut NodeArgs>, Option<&mut ConnectArgs>)> {
        let node = match self {
            Self::Peers {
                command: PeersCommand::List { node, .. },
            }
            | Self::Leaders {
                command:
                    LeadersCommand::Status { node, .. }
                    | LeadersCommand::Watch { node, .. }
                    | LeadersCommand::Transfer { node, .. },
            }
            | Self::Shards {
                command:
                    ShardsCommand::List { node, .. }
                    | ShardsCommand::Watch { node, .. }
                    | ShardsCommand::Rebalance { node, .. },
            }
            | Self::Drain { node, .. }
            | Self::Resume { node, .. }
            | Self::Health { node, .. }
            | Self::Clusters { node, .. }
            | Self::Versions { node, .. }
            | Self::Join { node, .. }
            | Self::Leave { node, .. }
            | Self::ForceLeave { node, .. }
            | Self::Voters {
                command: VotersCommand::List { node, .. },
            }
            | Self::Queue {
                command:
                    QueueCommand::Stats { node, .. }
                    | QueueCommand::WatchBackpressure { node, .. }
                    | QueueCommand::Work { node, .. }
                    | QueueCommand::Enqueue { node, .. }
                    | QueueCommand::Lease { node, .. }
                    | QueueCommand::LeaseHealth { node, .. }
                    | QueueCommand::Drain { node, .. }
                    | QueueCommand::Restore { node, .. },
            } => node,
            Self::Voters {
                command:
                    VotersCommand::Add { wait, .. }
                    | VotersCommand::Remove { wait, .. }
                    | VotersCommand::Replace { wait, .. },
            } => &mut wait.node,
            Self::Lock { session, .. } | Self::Elect { session, .. } => &mut session.node,
            Self::Chaos { command } => command.node_mut(),
            Self::Transport {
                command: TransportCommand::Stats { connect, .. },
            } => return Some((None, Some(connect))),
            Self::Probes {
                command: ProbesCommand::List { connect, .. },
            } => return Some((None, Some(connect))),
            Self::Config { .. } | Self::Certs { .. } | Self::Tokens { .. } => return None,
        };
        Some((Some(node), None))
    }
}

/// Fills the command's connection settings that no flag or environment variable set from the
/// selected context.
fn apply_context(cli: &mut Cli) -> Result<(), String> {
    if cli.command.connection().is_none() {
        return Ok(());
    }
    let Some((_, context)) = contexts::selected(cli.context.as_deref())? else {
        return Ok(());
    };
    // `probes list` takes several addresses: the context's is the one when none is given.
    if let Command::Probes {
        command: ProbesCommand::List { addrs, .. },
    } = &mut cli.command
        && addrs.is_empty()
        && let Some(addr) = &context.addr
    {
        addrs.push(addr.clone());
    }
    let Some(connection) = cli.command.connection() else {
        return Ok(());
    };
    match connection {
        (Some(node), _) => node.apply(&context),
        (None, Some(connect)) => connect.apply(&context),
        (None, None) => {}
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Err(message) = apply_context(&mut cli) {
        eprintln!("meshctl: {message}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Config { command } => match command {
            ConfigCommand::GetContexts { json } => contexts::get_contexts(json),
            ConfigCommand::CurrentContext { json } => contexts::current_context(json),
            ConfigCommand::UseContext { name, json } => contexts::use_context(&name, json),
            ConfigCommand::SetContext {
                name,
                addr,
                ca,
                cert,
                key,
                token_file,
                json,
            } => {
                let update = contexts::Context {
                    addr,
                    ca,
                    cert,
                    key,
                    token: None,
                    token_file,
                };
                contexts::set_context(&name, update, json)
            }
        },
        Command::Certs {
            command:
                CertsCommand::Init {
                    out,
                    nodes,
                    keep_ca_key,
                    json,
                },
        } => certs_init(&out, nodes, keep_ca_key, json),
        Command::Tokens {
            command: TokensCommand::Keygen { out, json },
        } => tokens_keygen(&out, json),
        Command::Tokens {
            command:
                TokensCommand::Issue {
                    key,
                    subject,
                    scopes,
                    ttl,
                    json,
                },
        } => tokens_issue(&key, &subject, &scopes, &ttl, json),
        Command::Peers {
            command:
                PeersCommand::List {
                    state,
                    cluster,
                    region,
                    meta,
                    json,
                    node,
                },
        } => {
            let filter = PeerFilter {
                state,
                cluster,
                region,
                meta,
            };
            peers_list(&node, &filter, json)
        }
        Command::Transport {
            command:
                TransportCommand::Stats {
                    addr,
                    requests,
                    json,
                    prometheus,
                    reset,
                    connect,
                },
        } => transport_stats(addr.as_deref(), requests, json, prometheus, reset, &connect),
        Command::Leaders {
            command: LeadersCommand::Status { json, node },
        } => leaders_status(&node, json),
        Command::Leaders {
            command:
                LeadersCommand::Watch {
                    kinds,
                    scope,
                    after,
                    count,
                    duration,
                    poll_ms,
                    json,
                    node,
                },
        } => {
            let filter = FeedFilter {
                kinds,
                scope,
                namespaces: Vec::new(),
            };
            let watch = WatchLimits {
                after,
                count,
                duration,
                poll: poll_ms.map(Duration::from_millis),
            };
            watch_feed(&node, LEADERSHIP_FEED, &filter, &watch, json)
        }
        Command::Leaders {
            command:
                LeadersCommand::Transfer {
                    scope,
                    to,
                    json,
                    node,
                },
        } => transfer(&node, &TransferRequest { scope, to }, json),
        Command::Shards {
            command: ShardsCommand::List { json, node },
        } => shards::list(&node, json),
        Command::Shards {
            command:
                ShardsCommand::Watch {
                    namespaces,
                    kinds,
                    after,
                    count,
                    duration,
                    json,
                    node,
                },
        } => {
            let filter = FeedFilter {
                kinds,
                scope: None,
                namespaces,
            };
            let watch = WatchLimits {
                after,
                count,
                duration,
                poll: None,
            };
            watch_feed(&node, SHARD_FEED, &filter, &watch, json)
        }
        Command::Shards {
            command:
                ShardsCommand::Rebalance {
                    dry_run,
                    json,
                    node,
                },
        } => shards::rebalance(&node, dry_run, json),
        Command::Drain {
            target,
            wait,
            timeout,
            json,
            node,
        } => {
            let wait = wait
                .then(|| {
                    meshkit::config::parse_duration(&timeout)
                        .map_err(|e| format!("--timeout {timeout:?}: {e}"))
                })
                .transpose();
            wait.and_then(|wait| shards::drain(&node, target, wait, json))
        }
        Command::Resume { json, node } => resume(&node, json),
        Command::Health { json, node } => health::run(&node, json),
        Command::Probes {
            command:
                ProbesCommand::List {
                    tag,
                    addrs,
                    json,
                    connect,
                },
        } => probes::run(&addrs, DEFAULT_ADDR, &connect, &tag, json),
        Command::Clusters { json, node } => clusters(&node, json),
        Command::Versions { json, node } => versions(&node, json),
        Command::Join { seeds, json, node } => join(&node, seeds, json),
        Command::Leave { json, node } => leave(&node, json),
        Command::ForceLeave { member, json, node } => force_leave::run(&node, member, json),
        Command::Chaos { command } => command.run(),
        Command::Voters {
            command: VotersCommand::List { json, node },
        } => voters_list(&node, json),
        Command::Queue { command } => match command {
            QueueCommand::Stats { json, node } => queue::stats(&node, json),
            QueueCommand::LeaseHealth { json, node } => queue::lease_health(&node, json),
            QueueCommand::Work {
                queue,
                work,
                idle,
                duration,
                max_items,
                node,
            } => {
                let parse = |flag: &str, d: &str| {
                    meshkit::config::parse_duration(d).map_err(|e| format!("{flag} {d:?}: {e}"))
                };
                parse("--work", &work).and_then(|work| {
                    let idle = parse("--idle", &idle)?;
                    let limit = parse("--for", &duration)?;
                    queue::work(
                        &node,
                        &queue::WorkOptions {
                            queue,
                            work,
                            idle,
                            limit,
                            max_items,
                        },
                    )
                })
            }
            QueueCommand::Enqueue {
                queue,
                payload,
                shard,
                json,
                node,
            } => queue::enqueue(&node, &queue, shard, &payload, json),
            QueueCommand::Lease {
                queue,
                shard,
                max,
                json,
                node,
            } => queue::lease(&node, &queue, shard, max, json),
            QueueCommand::Drain { shard, json, node } => queue::drain(&node, &shard, json),
            QueueCommand::Restore {
                shard,
                from,
                json,
                node,
            } => queue::restore(&node, &shard, &from, json),
            QueueCommand::WatchBackpressure {
                queue,
                count,
                duration,
                json,
                node,
            } => duration
                .as_deref()
                .map(|d| {
                    meshkit::config::parse_duration(d).map_err(|e| format!("--for {d:?}: {e}"))
                })
                .transpose()
                .and_then(|limit| {
                    queue::watch_backpressure(&node, queue.as_deref(), count, limit, json)
                }),
        },
        Command::Voters {
            command: VotersCommand::Add { node_id, wait },
        } => voter_changes(&wait, voters::Changes::One(voters::Kind::Add, node_id)),
        Command::Voters {
            command: VotersCommand::Remove { node_id, wait },
        } => voter_changes(&wait, voters::Changes::One(voters::Kind::Remove, node_id)),
        Command::Voters {
            command: VotersCommand::Replace { old, new, wait },
        } => voter_changes(&wait, voters::Changes::Replace { old, new }),
        Command::Lock { session, timeout } => {
            return session_exit(run_session(session, session::Mode::Lock, timeout, false));
        }
        Command::Elect { session, once } => {
            return session_exit(run_session(session, session::Mode::Elect, None, once));
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("meshctl: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A session's exit code: CMD's, or 1 with the error on stderr.
fn session_exit(result: Result<u8, String>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("meshctl: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_session(
    args: SessionArgs,
    mode: session::Mode,
    timeout: Option<String>,
    once: bool,
) -> Result<u8, String> {
    let duration = |flag: &str, text: &str| {
        meshkit::config::parse_duration(text).map_err(|e| format!("{flag} {text:?}: {e}"))
    };
    let ttl = duration("--ttl", &args.ttl)?;
    let retry = duration("--retry", &args.retry)?;
    if retry.is_zero() {
        return Err("--retry must be more than 0, such as 1s".to_owned());
    }
    let options = session::Options {
        mode,
        scope: args.scope,
        ttl,
        retry,
        grace: duration("--grace", &args.grace)?,
        timeout: timeout.map(|t| duration("--timeout", &t)).transpose()?,
        once,
        json: args.json,
        command: args.command,
    };
    let addr = args.node.addr();
    let (code, _) = with_client(&args.node.connect, false, async |client| {
        session::run(client, addr, &options).await
    })?;
    Ok(code)
}

fn join(node: &NodeArgs, seeds: Vec<String>, json: bool) -> Result<(), String> {
    let addr = node.addr();
    let request = JoinRequest { seeds };
    let (response, _) = with_client(&node.connect, false, async |client| {
        client
            .post_json(addr, "/control/join", &request)
            .await
            .map_err(|e| e.to_string())
    })?;
    let body = ok_body(addr, response)?;
    print_answer(addr, &body, json, |j: JoinResponse| {
        format!(
            "node {} is joining through {}; `meshctl peers list` shows the members as they \
             arrive",
            j.node,
            j.seeds.join(", ")
        )
    })
}

fn leave(node: &NodeArgs, json: bool) -> Result<(), String> {
    let body = call(node, Method::POST, "/control/leave")?;
    print_answer(node.addr(), &body, json, |l: LeaveResponse| {
        let released = if l.released.is_empty() {
            "it held no lease".to_owned()
        } else {
            format!("released {}", l.released.join(", "))
        };
        format!(
            "node {} left the mesh ({released}); stop its process: it does not rejoin without a \
             restart",
            l.node
        )
    })
}

/// One voter in `voters list`.
#[derive(Debug, Serialize)]
struct VoterRow {
    id: u64,
    /// `leader`, `follower`, or `unknown` (the node asked is not a voter).
    role: &'static str,
    /// Its member state as the node asked sees it.
    state: String,
    /// The control address it publishes.
    control: Option<String>,
}

/// The body of `voters list --json`.
#[derive(Debug, Serialize)]
struct VotersAnswer {
    /// The node asked.
    asked: u64,
    /// Its Raft term, if it is a voter.
    term: Option<u64>,
    /// The leader it knows, if any.
    leader: Option<u64>,
    voters: Vec<VoterRow>,
}

fn voters_list(node: &NodeArgs, json: bool) -> Result<(), String> {
    let addr = node.addr();
    let ((view, peers), _) = with_client(&node.connect, false, async |client| {
        let response = client
            .get(addr, "/meshkit/leaders")
            .await
            .map_err(|e| e.to_string())?;
        let body = ok_body(addr, response)?;
        let view: LeadershipView =
            serde_json::from_str(&body).map_err(|e| format!("{addr}: unexpected answer: {e}"))?;
        let peers = fetch_peers(client, addr, &PeerFilter::default()).await?;
        Ok((view, peers))
    })?;
    // A joining voter not yet added has no voter set of its own: it shows the configured one.
    let raft = view.raft.as_ref().filter(|r| !r.voters.is_empty());
    let (ids, leader, term) = match raft {
        Some(raft) => (raft.voters.clone(), raft.leader, Some(raft.term)),
        None => (view.voters.clone(), None, None),
    };
    let voters: Vec<VoterRow> = ids
        .iter()
        .map(|&id| {
            let peer = peers.peers.iter().find(|p| p.id == id);
            VoterRow {
                id,
                role: match (raft, leader) {
                    (None, _) => "unknown",
                    (Some(_), Some(l)) if l == id => "leader",
                    (Some(_), _) => "follower",
                },
                state: peer.map_or_else(|| "unknown".to_owned(), |p| p.state.clone()),
                control: peer.and_then(|p| p.metadata.get("control").cloned()),
            }
        })
        .collect();
    let answer = VotersAnswer {
        asked: view.node,
        term,
        leader,
        voters,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string(&answer).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!("{:<8} {:<10} {:<8} CONTROL", "VOTER", "ROLE", "STATE");
    for v in &answer.voters {
        println!(
            "{:<8} {:<10} {:<8} {}",
            v.id,
            v.role,
            v.state,
            v.control.as_deref().unwrap_or("-")
        );
    }
    match (answer.term, answer.leader) {
        (Some(term), Some(leader)) => println!(
            "\nnode {} sees leader {leader} at term {term}; quorum {} of {}",
            answer.asked,
            answer.voters.len() / 2 + 1,
            answer.voters.len()
        ),
        (Some(term), None) => println!(
            "\nnode {} knows no leader at term {term}: no quorum, or an election under way",
            answer.asked
        ),
        _ if view.raft.is_some() => println!(
            "\nnode {} is a joining voter not added yet (`meshctl voters add {}`): the \
             configured voter ids only",
            answer.asked, answer.asked
        ),
        _ => println!(
            "\nnode {} is not a voter: the configured voter ids only (ask a voter for roles)",
            answer.asked
        ),
    }
    Ok(())
}

fn voter_changes(args: &WaitArgs, changes: voters::Changes) -> Result<(), String> {
    let wait = meshkit::config::parse_duration(&args.wait)
        .map_err(|e| format!("--wait {:?}: {e}", args.wait))?;
    voters::run(&args.node, changes, wait, args.json)
}

fn clusters(node: &NodeArgs, json: bool) -> Result<(), String> {
    let body = call(node, Method::GET, "/meshkit/clusters")?;
    print_answer(node.addr(), &body, json, |c: ClustersResponse| {
        let mut out = format!(
            "{:<16} {:>6} {:>8} {:>5} {:>5}  {:<8} {}",
            "CLUSTER", "ALIVE", "SUSPECT", "DEAD", "LEFT", "LEADER", "REGIONS"
        );
        for cluster in &c.clusters {
            let name = if cluster.name.is_empty() {
                "-"
            } else {
                &cluster.name
            };
            let regions = cluster
                .regions
                .iter()
                .map(|(r, n)| format!("{}={n}", if r.is_empty() { "-" } else { r }))
                .collect::<Vec<_>>()
                .join(" ");
            out.push_str(&format!(
                "\n{name:<16} {:>6} {:>8} {:>5} {:>5}  {:<8} {regions}",
                cluster.states.alive,
                cluster.states.suspect,
                cluster.states.dead,
                cluster.states.left,
                cluster
                    .leader
                    .map_or_else(|| "-".to_owned(), |l| l.to_string()),
            ));
        }
        out
    })
}

fn versions(node: &NodeArgs, json: bool) -> Result<(), String> {
    let body = call(node, Method::GET, "/meshkit/versions")?;
    print_answer(node.addr(), &body, json, |v: VersionsResponse| {
        let mut out = format!("{:<10} {:<16} {:>8}", "KIND", "VERSION", "MEMBERS");
        for (kind, counts) in [("software", &v.software), ("wire", &v.wire)] {
            for c in counts {
                let version = if c.version.is_empty() {
                    "(unknown)"
                } else {
                    &c.version
                };
                out.push_str(&format!("\n{kind:<10} {version:<16} {:>8}", c.members));
            }
        }
        if v.mixed {
            out.push_str("\nmixed versions: a rolling upgrade is under way, or one stalled");
        }
        out
    })
}

/// A certificate and its key, as `--json` prints them.
fn cert_pair(cert: &Path, key: &Path) -> serde_json::Value {
    serde_json::json!({"cert": cert.display().to_string(), "key": key.display().to_string()})
}

fn signing_key_json(keys: &meshkit_node::tokens::SigningKeyFiles) -> serde_json::Value {
    serde_json::json!({
        "private": keys.private.display().to_string(),
        "public": keys.public.display().to_string(),
    })
}

fn certs_init(out: &Path, nodes: u64, keep_ca_key: bool, json: bool) -> Result<(), String> {
    let bundle = meshkit_node::certs::write_dev_bundle_with(out, nodes, keep_ca_key)
        .map_err(|e| e.to_string())?;
    let keys = meshkit_node::tokens::write_signing_key(out).map_err(|e| e.to_string())?;
    if json {
        let answer = serde_json::json!({
            "ca": bundle.ca.display().to_string(),
            "ca_key": bundle.ca_key.as_ref().map(|k| k.display().to_string()),
            "nodes": bundle.nodes.iter().map(|f| cert_pair(&f.cert, &f.key)).collect::<Vec<_>>(),
            "clients": bundle.clients.iter().map(|f| cert_pair(&f.cert, &f.key)).collect::<Vec<_>>(),
            "expired_stand_ins": bundle.nodes.iter().map(|f| cert_pair(&f.expired_cert, &f.expired_key)).collect::<Vec<_>>(),
            "token_signing": signing_key_json(&keys),
        });
        println!("{answer}");
        return Ok(());
    }
    println!("{}", bundle.ca.display());
    if let Some(key) = &bundle.ca_key {
        println!("{}", key.display());
    }
    let pairs = bundle.nodes.iter().map(|f| (&f.cert, &f.key));
    let stand_ins = bundle
        .nodes
        .iter()
        .map(|f| (&f.expired_cert, &f.expired_key));
    let clients = bundle.clients.iter().map(|f| (&f.cert, &f.key));
    for (cert, key) in pairs.chain(clients).chain(stand_ins) {
        println!("{} {}", cert.display(), key.display());
    }
    println!("{} {}", keys.private.display(), keys.public.display());
    // What a node.toml needs to give these identities their scopes (docs/hosting.md, Scopes).
    eprintln!(
        "\nfor each node.toml:\n\n[access]\ntoken_key = {:?}",
        keys.public.display().to_string()
    );
    eprintln!("\n[access.identities]");
    for (name, scope) in meshkit_node::certs::CLIENT_IDENTITIES {
        eprintln!("{name} = [\"{scope}\"]");
    }
    Ok(())
}

fn tokens_keygen(out: &Path, json: bool) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let keys = meshkit_node::tokens::write_signing_key(out).map_err(|e| e.to_string())?;
    if json {
        println!("{}", signing_key_json(&keys));
    } else {
        println!("{} {}", keys.private.display(), keys.public.display());
    }
    Ok(())
}

fn tokens_issue(
    key: &Path,
    subject: &str,
    scopes: &[String],
    ttl: &str,
    json: bool,
) -> Result<(), String> {
    let key =
        meshkit_node::tokens::TokenSigningKey::from_pem_file(key).map_err(|e| e.to_string())?;
    let scopes = scopes
        .iter()
        .map(|s| s.parse())
        .collect::<Result<meshkit_node::permission::Permissions, _>>()
        .map_err(|e| format!("--scope: {e}"))?;
    let ttl = meshkit::config::parse_duration(ttl).map_err(|e| format!("--ttl: {e}"))?;
    let now = SystemTime::now();
    let token = key
        .issue(subject, &scopes, now, ttl)
        .map_err(|e| e.to_string())?;
    if json {
        let expires = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| (d + ttl).as_secs());
        let answer = serde_json::json!({
            "token": token,
            "subject": subject,
            "scope": scopes.to_claim(),
            "expires_unix": expires,
        });
        println!("{answer}");
    } else {
        println!("{token}");
    }
    Ok(())
}

/// Reads a token file: one token, surrounding whitespace ignored.
fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.trim();
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if token.is_empty() || !token.chars().all(valid) {
        return Err(format!(
            "{}: not a token (base64url parts joined by dots)",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

fn state_path(connect: &ConnectArgs) -> Option<PathBuf> {
    if let Some(path) = &connect.transport_state {
        return Some(path.clone());
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))?;
    Some(base.join("meshctl").join("transport.json"))
}

/// The state file, or an empty state if it is missing or unreadable (it is a cache).
fn load_state(path: Option<&Path>) -> State {
    use std::io::Read as _;
    let Some(path) = path else {
        return State::default();
    };
    let mut text = String::new();
    let read =
        std::fs::File::open(path).and_then(|f| f.take(MAX_STATE_BYTES).read_to_string(&mut text));
    match read {
        Ok(_) => serde_json::from_str(&text).unwrap_or_default(),
        Err(_) => State::default(),
    }
}

/// Writes the state file (through a temporary file and a rename); failures are only warned
/// about, because the state is a cache.
fn save_state(path: Option<&Path>, state: &State) {
    let Some(path) = path else { return };
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(state).unwrap_or_default())?;
        std::fs::rename(&tmp, path)
    };
    if let Err(error) = write() {
        eprintln!("meshctl: warning: cannot write {}: {error}", path.display());
    }
}

/// Runs `work` with a client built from `connect`, loading and saving the state file around it.
fn with_client<T>(
    connect: &ConnectArgs,
    reset: bool,
    work: impl AsyncFnOnce(&Client) -> Result<T, String>,
) -> Result<(T, State), String> {
    let mut config = ClientConfig::new(connect.ca())
        .map_err(|e| format!("{e} (give the mesh's CA with --ca or MESHCTL_CA)"))?
        .with_protocols(match connect.protocol {
            ProtocolArg::Auto => Protocols::H3ThenTcp,
            ProtocolArg::H3 => Protocols::H3Only,
            ProtocolArg::Tcp => Protocols::TcpOnly,
        })
        .with_h3_timeout(Duration::from_millis(connect.h3_timeout_ms))
        .with_request_timeout(Duration::from_millis(connect.timeout_ms));
    if let (Some(cert), Some(key)) = (&connect.cert, &connect.key) {
        config = config.with_identity(cert, key).map_err(|e| e.to_string())?;
    }
    let token = match (&connect.token, &connect.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(file)) => Some(read_token(file)?),
        (None, None) => None,
    };
    if let Some(token) = &token {
        config = config.with_token(token).map_err(|e| e.to_string())?;
    }
    if let Some(name) = &connect.server_name {
        config = config.with_server_name(name).map_err(|e| e.to_string())?;
    }
    let path = state_path(connect);
    let mut state = if reset {
        State::default()
    } else {
        load_state(path.as_deref())
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (result, run) = runtime.block_on(async {
        let client = Client::new(&config).map_err(|e| e.to_string())?;
        for (server, until) in &state.h3_failed_until {
            client.remember_until(
                *server,
                SystemTime::UNIX_EPOCH + Duration::from_secs(*until),
            );
        }
        let result = work(&client).await;
        client.close().await;
        let remembered = client
            .remembered()
            .into_iter()
            .map(|(server, until)| {
                let secs = until
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                (server, secs)
            })
            .collect::<BTreeMap<_, _>>();
        Ok::<_, String>((result, (client.stats(), remembered)))
    })?;
    let (stats, remembered) = run;
    state.stats.merge(&stats);
    state.h3_failed_until = remembered;
    save_state(path.as_deref(), &state);
    result.map(|value| (value, state))
}

/// What `peers list` keeps: the state, cluster and region filters go to the node (which
/// filters and pages); `--meta` filters here. The default lists every member.
#[derive(Default)]
struct PeerFilter {
    state: Option<MemberStateArg>,
    cluster: Option<String>,
    region: Option<String>,
    meta: Vec<(String, String)>,
}

impl PeerFilter {
    /// The query string of `GET /meshkit/peers` for the page after `after`.
    fn query(&self, after: Option<u64>) -> String {
        let mut query = url_params([
            ("state", self.state.map(|s| s.as_str().to_owned())),
            ("cluster", self.cluster.clone()),
            ("region", self.region.clone()),
            ("after", after.map(|a| a.to_string())),
        ]);
        if query.is_empty() {
            query.push_str("/meshkit/peers");
        } else {
            query.insert_str(0, "/meshkit/peers?");
        }
        query
    }

    fn keeps(&self, peer: &PeerJson) -> bool {
        self.meta
            .iter()
            .all(|(k, v)| peer.metadata.get(k).is_some_and(|have| have == v))
    }
}

/// `k=v&...` of the parameters that are set, percent-encoded.
fn url_params<const N: usize>(params: [(&str, Option<String>); N]) -> String {
    params
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", percent_encode(&v))))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every member the node at `addr` lists (under `filter`'s node-side filters), all pages in one
/// answer.
async fn fetch_peers(
    client: &Client,
    addr: &str,
    filter: &PeerFilter,
) -> Result<PeersResponse, String> {
    let mut peers: Option<PeersResponse> = None;
    let mut after = None;
    for _ in 0..MAX_PEER_PAGES {
        let response = client
            .get(addr, &filter.query(after))
            .await
            .map_err(|e| e.to_string())?;
        let body = ok_body(addr, response)?;
        let page: PeersResponse =
            serde_json::from_str(&body).map_err(|e| format!("{addr}: unexpected answer: {e}"))?;
        // A cursor that does not move forward would list members twice (or forever): a
        // partial list must never pass for the whole mesh (`health` would call it healthy).
        if let (Some(before), Some(next)) = (after, page.next_after)
            && next <= before
        {
            return Err(format!(
                "{addr}: the member list's cursor went from {before} to {next}: not listing a \
                 partial mesh"
            ));
        }
        after = page.next_after;
        match &mut peers {
            Some(all) => all.peers.extend(page.peers),
            None => peers = Some(page),
        }
        if after.is_none() {
            break;
        }
    }
    if after.is_some() {
        return Err(format!(
            "{addr}: more than {MAX_PEER_PAGES} pages of members: not listing a partial mesh"
        ));
    }
    let mut peers = peers.ok_or_else(|| format!("{addr}: no answer"))?;
    peers.next_after = None;
    peers.total = peers.peers.len();
    Ok(peers)
}

fn peers_list(node: &NodeArgs, filter: &PeerFilter, json: bool) -> Result<(), String> {
    let addr = node.addr();
    let (mut peers, _) = with_client(&node.connect, false, async |client| {
        fetch_peers(client, addr, filter).await
    })?;
    peers.peers.retain(|p| filter.keeps(p));
    peers.total = peers.peers.len();
    if json {
        println!(
            "{}",
            serde_json::to_string(&peers).map_err(|e| e.to_string())?
        );
    } else if peers.peers.is_empty() {
        println!("node {} knows no member that matches", peers.local);
    } else {
        print!("{}", render_table(&peers));
    }
    Ok(())
}

/// The body of a 2xx answer, or an error naming the status and the server's reason.
fn ok_body(addr: &str, response: meshkit_node::client::Response) -> Result<String, String> {
    if (200..300).contains(&response.status) {
        Ok(response.body)
    } else {
        Err(format!(
            "{addr}: HTTP {}: {}",
            response.status,
            response.body.trim()
        ))
    }
}

/// One request to the node; the body of a 2xx answer, or an error naming the status and the
/// server's reason.
fn call(node: &NodeArgs, method: Method, path: &str) -> Result<String, String> {
    let addr = node.addr();
    let (response, _) = with_client(&node.connect, false, async |client| {
        client
            .request(method, addr, path, Bytes::new())
            .await
            .map_err(|e| e.to_string())
    })?;
    ok_body(addr, response)
}

/// Prints a report `meshctl` assembled itself (from several answers): pretty JSON with
/// `--json`, else what `render` makes of it (a table, ending with a newline).
fn print_report<R: Serialize>(
    report: &R,
    json: bool,
    render: impl FnOnce(&R) -> String,
) -> Result<(), String> {
    if json {
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", render(report));
    }
    Ok(())
}

/// Prints `body` as it came with `--json`, else what `text` makes of it.
fn print_answer<T: serde::de::DeserializeOwned>(
    addr: &str,
    body: &str,
    json: bool,
    text: impl FnOnce(T) -> String,
) -> Result<(), String> {
    if json {
        println!("{}", body.trim_end());
        return Ok(());
    }
    let answer: T =
        serde_json::from_str(body).map_err(|e| format!("{addr}: unexpected answer: {e}"))?;
    println!("{}", text(answer));
    Ok(())
}

fn transfer(node: &NodeArgs, request: &TransferRequest, json: bool) -> Result<(), String> {
    let addr = node.addr();
    let (response, _) = with_client(&node.connect, false, async |client| {
        client
            .post_json(addr, "/control/leases/transfer", request)
            .await
            .map_err(|e| e.to_string())
    })?;
    let body = ok_body(addr, response)?;
    print_answer(addr, &body, json, |t: TransferResponse| {
        format!(
            "{} moved to node {} with fencing token {}",
            t.scope, t.to, t.token
        )
    })
}

fn resume(node: &NodeArgs, json: bool) -> Result<(), String> {
    let body = call(node, Method::POST, "/control/resume")?;
    print_answer(node.addr(), &body, json, |r: ResumeResponse| {
        if r.was_draining {
            format!(
                "node {} resumed: it contends again for its configured scopes",
                r.node
            )
        } else {
            format!("node {} was not drained: nothing changed", r.node)
        }
    })
}

fn leaders_status(node: &NodeArgs, json: bool) -> Result<(), String> {
    let addr = node.addr();
    let body = call(node, Method::GET, "/meshkit/leaders")?;
    if json {
        println!("{body}");
        return Ok(());
    }
    let view: LeadershipView =
        serde_json::from_str(&body).map_err(|e| format!("{addr}: unexpected answer: {e}"))?;
    match &view.raft {
        Some(raft) => println!(
            "node {}: voter; raft leader {}, term {}, applied index {}",
            view.node,
            raft.leader
                .map_or_else(|| "unknown".to_owned(), |l| l.to_string()),
            raft.term,
            raft.applied_index
        ),
        None => println!(
            "node {}: not a voter (voters {:?}); showing its own leases",
            view.node, view.voters
        ),
    }
    if view.raft.is_some() {
        println!(
            "\n{:<40} {:>8} {:>10} {:>6} {:>12}",
            "SCOPE", "HOLDER", "TOKEN", "TERM", "EXPIRES_MS"
        );
        for l in &view.table {
            println!(
                "{:<40} {:>8} {:>10} {:>6} {:>12}",
                l.scope, l.holder, l.token, l.term, l.expires_in_ms
            );
        }
    }
    println!("\nheld here: {}", view.held.len());
    for h in &view.held {
        println!(
            "  {} token {} (term {}), {} ms left{}",
            h.scope,
            h.token,
            h.term,
            h.expires_in_ms,
            if h.transferring { ", transferring" } else { "" }
        );
    }
    println!("contending for: {}", view.campaign.join(", "));
    Ok(())
}

/// The feed entries (and resets) in an event-stream body.
fn parse_events(text: &str) -> Vec<Result<FeedEntry, String>> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .filter_map(|l| l.strip_prefix(name))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let (event, data) = (field("event:"), field("data:"));
            match event.as_str() {
                "" => None,
                "reset" => Some(Err(data)),
                _ => {
                    Some(serde_json::from_str(&data).map_err(|e| format!("unreadable entry: {e}")))
                }
            }
        })
        .collect()
}

/// Which feed entries `leaders watch` prints.
struct FeedFilter {
    /// Kinds to print; empty: every kind but `renewed` (one a second per lease drowns the rest).
    kinds: Vec<String>,
    /// Scope prefix; entries without a scope (Raft leader, voters) pass only without one.
    scope: Option<String>,
    /// Shard namespaces (`shards watch --namespace`); empty: every entry.
    namespaces: Vec<String>,
}

impl FeedFilter {
    fn keeps(&self, entry: &FeedEntry) -> bool {
        let kind = entry.change.kind();
        let kind_ok = if self.kinds.is_empty() {
            kind != "renewed"
        } else {
            self.kinds.iter().any(|k| k == kind)
        };
        let scope_ok = self.scope.as_ref().is_none_or(|prefix| {
            entry
                .change
                .scope()
                .is_some_and(|scope| scope.starts_with(prefix.as_str()))
        });
        let namespace_ok = shards::namespace_keeps(&self.namespaces, entry.change.scope());
        kind_ok && scope_ok && namespace_ok
    }
}

/// Where `leaders watch` starts, when it stops, and how often it polls (if it polls).
struct WatchLimits {
    after: u64,
    count: Option<u64>,
    duration: Option<String>,
    poll: Option<Duration>,
}

/// Most times in a row `leaders watch` opens its stream again without getting an entry.
const MAX_STREAM_RETRIES: u32 = 5;
/// Wait before opening a stream that ended again.
const STREAM_RETRY: Duration = Duration::from_secs(1);

/// Prints the entries `filter` keeps; whether `--count` is reached.
struct Printer<'a> {
    filter: &'a FeedFilter,
    json: bool,
    count: Option<u64>,
    seen: u64,
    /// The last entry's sequence number (kept or not): where a new stream resumes.
    after: u64,
}

impl Printer<'_> {
    /// Handles one event; `true` once `--count` entries were printed.
    fn event(&mut self, event: Result<FeedEntry, String>) -> bool {
        use std::io::Write as _;
        match event {
            Ok(entry) => {
                self.after = entry.seq;
                if !self.filter.keeps(&entry) {
                    return false;
                }
                self.seen += 1;
                if self.json {
                    println!("{}", serde_json::to_string(&entry).unwrap_or_default());
                } else {
                    println!("{}", feed_line(&entry));
                }
                // Whoever reads a pipe sees each entry as it comes.
                let _ = std::io::stdout().flush();
                self.count.is_some_and(|c| self.seen >= c)
            }
            Err(reason) => {
                eprintln!("meshctl: feed reset: {reason}");
                false
            }
        }
    }
}

/// Follows the feed's event stream until `--count` is reached or the stream fails
/// [`MAX_STREAM_RETRIES`] times in a row; a stream that ends is opened again after the last
/// entry seen.
async fn follow_stream(
    client: &Client,
    addr: &str,
    feed: &str,
    printer: &mut Printer<'_>,
) -> Result<(), String> {
    let mut failures = 0;
    loop {
        let path = format!("{feed}?after={}", printer.after);
        let before = printer.after;
        let ended = match client.get_stream(addr, &path).await {
            Ok(stream) if (200..300).contains(&stream.status()) => {
                let mut stream = stream;
                let mut text = String::new();
                loop {
                    match stream.chunk().await {
                        Ok(Some(bytes)) => {
                            text.push_str(&String::from_utf8_lossy(&bytes));
                            // Whole events end with a blank line; the rest waits for more.
                            let Some(end) = text.rfind(
                                "

",
                            ) else {
                                continue;
                            };
                            let complete: String = text.drain(..end + 2).collect();
                            for event in parse_events(&complete) {
                                if printer.event(event) {
                                    return Ok(());
                                }
                            }
                        }
                        Ok(None) => break "the node ended the stream".to_owned(),
                        Err(e) => break e.to_string(),
                    }
                }
            }
            Ok(stream) => {
                let response = stream.into_response().await.map_err(|e| e.to_string())?;
                return ok_body(addr, response).map(|_| ());
            }
            Err(e) => e.to_string(),
        };
        failures = if printer.after > before {
            1
        } else {
            failures + 1
        };
        if failures > MAX_STREAM_RETRIES {
            return Err(format!(
                "{addr}: the event stream failed {MAX_STREAM_RETRIES} times in a row: {ended}"
            ));
        }
        eprintln!(
            "meshctl: {addr}: {ended}; following again after entry {}",
            printer.after
        );
        tokio::time::sleep(STREAM_RETRY).await;
    }
}

/// Polls the feed (`?follow=false`) every `poll` until `--count` is reached.
async fn follow_polling(
    client: &Client,
    addr: &str,
    feed: &str,
    printer: &mut Printer<'_>,
    poll: Duration,
) -> Result<(), String> {
    loop {
        let path = format!("{feed}?follow=false&after={}", printer.after);
        let response = client.get(addr, &path).await.map_err(|e| e.to_string())?;
        let body = ok_body(addr, response)?;
        for event in parse_events(&body) {
            if printer.event(event) {
                return Ok(());
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// The fields of an entry's change (`kind` and its own fields) as a JSON object.
fn change_fields(entry: &FeedEntry) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(&entry.change) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// One readable line: `SEQ  UTC-TIME  node N  KIND  SCOPE  key=value ...`.
fn feed_line(entry: &FeedEntry) -> String {
    let mut fields = change_fields(entry);
    fields.remove("kind");
    let scope = fields
        .remove("scope")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let rest = fields
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    let line = format!(
        "{:>6}  {}  node {:<4} {:<14} {:<28} {rest}",
        entry.seq,
        utc_time(entry.unix_ms),
        entry.node,
        entry.change.kind(),
        scope
    );
    line.trim_end().to_owned()
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time in milliseconds.
fn utc_time(unix_ms: u64) -> String {
    let ms = unix_ms % 1000;
    let secs = unix_ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// The leadership feed's stream (`leaders watch`).
const LEADERSHIP_FEED: &str = "/control/events/leadership";
/// The shard watch stream (`shards watch`): the same feed, shard scopes only.
const SHARD_FEED: &str = "/control/events/shards";

/// Follows `feed` (`leaders watch`, `shards watch`).
fn watch_feed(
    node: &NodeArgs,
    feed: &str,
    filter: &FeedFilter,
    limits: &WatchLimits,
    json: bool,
) -> Result<(), String> {
    let addr = node.addr();
    let limit = limits
        .duration
        .as_deref()
        .map(|d| meshkit::config::parse_duration(d).map_err(|e| format!("--for {d:?}: {e}")))
        .transpose()?;
    let mut printer = Printer {
        filter,
        json,
        count: limits.count,
        seen: 0,
        after: limits.after,
    };
    with_client(&node.connect, false, async |client| {
        let follow = async {
            match limits.poll {
                Some(poll) => follow_polling(client, addr, feed, &mut printer, poll).await,
                None => follow_stream(client, addr, feed, &mut printer).await,
            }
        };
        match limit {
            // --for passed: a normal end.
            Some(limit) => tokio::time::timeout(limit, follow).await.unwrap_or(Ok(())),
            None => follow.await,
        }
    })
    .map(|_| ())
}

fn transport_stats(
    addr: Option<&str>,
    requests: u32,
    json: bool,
    prometheus: bool,
    reset: bool,
    connect: &ConnectArgs,
) -> Result<(), String> {
    // Without --addr nothing is asked: only the kept counters are read (or reset), so no CA
    // or credential is needed (a context for another mesh, its CA absent here, does not stop it).
    let state = match addr {
        Some(addr) => {
            with_client(connect, reset, async |client| {
                for _ in 0..requests {
                    client
                        .get(addr, "/healthz")
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            })?
            .1
        }
        None => {
            let path = state_path(connect);
            if reset {
                save_state(path.as_deref(), &State::default());
            }
            load_state(path.as_deref())
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&state.stats).map_err(|e| e.to_string())?
        );
    } else if prometheus {
        print!("{}", state.stats.render_prometheus());
    } else {
        print!("{}", state.stats.render_table());
        for (server, until) in &state.h3_failed_until {
            println!("HTTP/3 to {server} skipped until Unix time {until}");
        }
    }
    Ok(())
}

fn render_table(peers: &PeersResponse) -> String {
    let mut out = format!(
        "{:<10} {:<8} {:>12} {:>8}  {:<22} {}\n",
        "ID", "STATE", "INCARNATION", "RTT_MS", "ADDR", "METADATA"
    );
    for p in &peers.peers {
        let id = if p.id == peers.local {
            format!("{}*", p.id)
        } else {
            p.id.to_string()
        };
        let rtt = p
            .rtt_ms
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
        out.push_str(&format!(
            "{:<10} {:<8} {:>12} {:>8}  {:<22} {}\n",
            id,
            p.state,
            p.incarnation,
            rtt,
            p.addr.as_deref().unwrap_or("-"),
            p.metadata
                .iter()
                .map(|(k, v)| format!("{k}={}", shorten(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    out
}

/// `value`, or its first [`METADATA_VALUE_CHARS`] characters and `...`.
fn shorten(value: &str) -> String {
    match value.char_indices().nth(METADATA_VALUE_CHARS) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// clap checks the whole command tree (unique names, valid defaults) only when asked.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn long_metadata_values_are_shortened_on_a_char_boundary() {
        assert_eq!(super::shorten("short"), "short");
        let long = "é".repeat(40);
        assert_eq!(super::shorten(&long), format!("{}...", "é".repeat(32)));
    }
}
