//! `meshctl queue stats | watch-backpressure | enqueue | lease | lease-health | drain | restore |
//! work`: the
//! task queues as one node sees them (docs/task-queues.md), with tables, or the node's JSON with
//! `--json`.

use std::io::Write as _;
use std::time::Duration;

use meshkit_node::control::queues::{
    BackpressureJson, EnqueueRequest, EnqueueResponse, LeaseHealthResponse, LeaseManyResponse,
    LeaseRequest, LeaseResponse, QueueDrainRequest, QueueDrainResponse, QueueRestoreRequest,
    QueueRestoreResponse, QueuesResponse, TokenRequest,
};

use super::{NodeArgs, call, ok_body, print_answer, with_client};
use http::Method;

/// `meshctl queue stats`: the queues the node serves, and its counters as owner.
pub(crate) fn stats(node: &NodeArgs, json: bool) -> Result<(), String> {
    let body = call(node, Method::GET, "/control/queues")?;
    print_answer(node.addr(), &body, json, |q: QueuesResponse| {
        let mut out = format!(
            "node {}: serves {} queue(s), requests in flight {}\n{:<22} {:>6} {:>8} {:>7} {:>6}  {}",
            q.node,
            q.served.len(),
            q.requests_in_flight,
            "SHARD",
            "FENCE",
            "PENDING",
            "ACTIVE",
            "STATE",
            "BACKPRESSURE"
        );
        for s in &q.served {
            out.push_str(&format!(
                "\n{:<22} {:>6} {:>8} {:>7} {:>6}  {}",
                s.shard,
                s.fence,
                s.pending,
                s.active,
                if s.recovering { "recov" } else { "serve" },
                if s.backpressure_active { "active" } else { "-" }
            ));
        }
        out.push_str(&format!(
            "\n\n{:<16} {:>9} {:>9} {:>7} {:>9} {:>13} {:>6}",
            "QUEUE", "ENQUEUED", "COMPLETED", "FAILED", "REQUEUED", "DEAD-LETTERED", "STALE"
        ));
        for (queue, c) in &q.counters {
            out.push_str(&format!(
                "\n{queue:<16} {:>9} {:>9} {:>7} {:>9} {:>13} {:>6}",
                c.enqueued, c.completed, c.failed, c.requeued, c.dead_lettered, c.stale_refused
            ));
        }
        out
    })
}

/// POSTs `request` as JSON to `path` on the node (the queue's write calls).
fn post<T: serde::Serialize>(
    node: &NodeArgs,
    path: &str,
    request: &T,
) -> Result<meshkit_node::client::Response, String> {
    let addr = node.addr();
    let (response, _) = with_client(&node.connect, false, async |client| {
        client
            .post_json(addr, path, request)
            .await
            .map_err(|e| e.to_string())
    })?;
    Ok(response)
}

/// `meshctl queue enqueue QUEUE PAYLOAD`: enqueues one item and prints its id, shard and the
/// owner's fence once the owner acknowledged it (after the configured replicas hold it).
pub(crate) fn enqueue(
    node: &NodeArgs,
    queue: &str,
    shard: Option<u32>,
    payload: &str,
    json: bool,
) -> Result<(), String> {
    let request = EnqueueRequest {
        queue: queue.to_owned(),
        shard,
        payload: payload.to_owned(),
    };
    let body = ok_body(node.addr(), post(node, "/control/queue/enqueue", &request)?)?;
    print_answer(node.addr(), &body, json, |e: EnqueueResponse| {
        format!(
            "{}: item {} acknowledged (fence {})",
            e.shard, e.item, e.fence
        )
    })
}

/// `meshctl queue lease-health`: the workers the node's queues track.
pub(crate) fn lease_health(node: &NodeArgs, json: bool) -> Result<(), String> {
    let body = call(node, Method::GET, "/control/lease-health")?;
    print_answer(node.addr(), &body, json, |h: LeaseHealthResponse| {
        let mut out = format!(
            "node {}: {} eligible, {} unhealthy, {} pending reassignment(s)\n{:<8} {:<8} {:<13} {}",
            h.node,
            h.eligible_peers,
            h.unhealthy_peers,
            h.pending_reassignments,
            "PEER",
            "HEALTHY",
            "DISCONNECTED",
            "LAST HEARTBEAT"
        );
        for p in &h.peers {
            let last = p
                .last_heartbeat_s_ago
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.1}s ago"));
            out.push_str(&format!(
                "\n{:<8} {:<8} {:<13} {last}",
                p.peer_id,
                if p.is_healthy { "yes" } else { "no" },
                if p.is_disconnected { "yes" } else { "no" },
            ));
        }
        out
    })
}

/// `meshctl queue lease QUEUE --max N`: leases up to `max` items in one request and prints
/// each with its token (nothing when nothing is pending).
pub(crate) fn lease(
    node: &NodeArgs,
    queue: &str,
    shard: Option<u32>,
    max: u32,
    json: bool,
) -> Result<(), String> {
    let addr = node.addr();
    let request = LeaseRequest {
        queue: queue.to_owned(),
        shard,
        max: Some(max),
    };
    let response = post(node, "/control/queue/lease", &request)?;
    if response.status == 204 {
        if json {
            println!("{{\"items\":[]}}");
        } else {
            println!("{queue}: nothing pending");
        }
        return Ok(());
    }
    let body = ok_body(addr, response)?;
    print_answer(addr, &body, json, |l: LeaseManyResponse| {
        let mut out = format!("leased {} item(s)", l.items.len());
        for i in &l.items {
            out.push_str(&format!(
                "\n  {} item {} attempt {} lease {} fence {} for {} ms: {}",
                i.shard,
                i.token.item,
                i.token.attempt,
                i.token.lease,
                i.token.fence,
                i.lease_for_ms,
                i.payload
            ));
        }
        out
    })
}

/// `meshctl queue drain SHARD`: takes every pending item out of the shard's queue (ask its
/// owner) and prints them; keep the JSON (`--json`) for a restore.
pub(crate) fn drain(node: &NodeArgs, shard: &str, json: bool) -> Result<(), String> {
    let addr = node.addr();
    let request = QueueDrainRequest {
        shard: shard.to_owned(),
    };
    let response = post(node, "/control/queue/drain", &request)?;
    let body = ok_body(addr, response)?;
    print_answer(addr, &body, json, |d: QueueDrainResponse| {
        let mut out = format!(
            "{}: drained {} item(s) (restore them with `meshctl queue restore {} --from FILE`, \
             FILE holding this command's --json)",
            d.shard,
            d.items.len(),
            d.shard
        );
        for i in &d.items {
            out.push_str(&format!(
                "\n  node {} request {}: {}",
                i.producer, i.request, i.payload
            ));
        }
        out
    })
}

/// `meshctl queue restore SHARD --from FILE`: puts back the items a drain printed (its JSON).
pub(crate) fn restore(node: &NodeArgs, shard: &str, from: &str, json: bool) -> Result<(), String> {
    let addr = node.addr();
    let text = std::fs::read_to_string(from).map_err(|e| format!("--from {from:?}: {e}"))?;
    let drained: QueueDrainResponse = serde_json::from_str(&text).map_err(|e| {
        format!("--from {from:?}: not the JSON of `meshctl queue drain --json`: {e}")
    })?;
    let request = QueueRestoreRequest {
        shard: shard.to_owned(),
        items: drained.items,
    };
    let response = post(node, "/control/queue/restore", &request)?;
    let body = ok_body(addr, response)?;
    print_answer(addr, &body, json, |r: QueueRestoreResponse| {
        format!("{}: restored {} item(s)", r.shard, r.restored)
    })
}

/// `meshctl queue watch-backpressure`: one line (or JSON object) per backpressure signal of
/// the matching shards, now and at each change; stops after `count` signals or `limit`.
pub(crate) fn watch_backpressure(
    node: &NodeArgs,
    queue: Option<&str>,
    count: Option<u64>,
    limit: Option<Duration>,
    json: bool,
) -> Result<(), String> {
    let addr = node.addr();
    let path = match queue {
        Some(q) => format!("/control/backpressure/stream?queue={q}"),
        None => "/control/backpressure/stream".to_owned(),
    };
    with_client(&node.connect, false, async |client| {
        let follow = async {
            let stream = client
                .get_stream(addr, &path)
                .await
                .map_err(|e| e.to_string())?;
            if !(200..300).contains(&stream.status()) {
                let response = stream.into_response().await.map_err(|e| e.to_string())?;
                return ok_body(addr, response).map(|_| ());
            }
            let mut stream = stream;
            let mut text = String::new();
            let mut seen = 0;
            loop {
                match stream.chunk().await {
                    Ok(Some(bytes)) => text.push_str(&String::from_utf8_lossy(&bytes)),
                    Ok(None) => return Err(format!("{addr}: the node ended the stream")),
                    Err(e) => return Err(e.to_string()),
                }
                // Whole events end with a blank line; the rest waits for more.
                let Some(end) = text.rfind("\n\n") else {
                    continue;
                };
                let complete: String = text.drain(..end + 2).collect();
                for data in complete
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                {
                    if json {
                        println!("{data}");
                    } else {
                        let b: BackpressureJson = serde_json::from_str(data)
                            .map_err(|e| format!("{addr}: unexpected event: {e}"))?;
                        println!(
                            "{} {:<22} {:<8} pending {:>6}  high {:>6} low {:>6}  owner {} fence {}",
                            b.observed_at,
                            b.shard,
                            if b.is_active { "ACTIVE" } else { "inactive" },
                            b.pending_count,
                            b.high_watermark
                                .map_or_else(|| "-".to_owned(), |h| h.to_string()),
                            b.low_watermark,
                            b.owner,
                            b.fence
                        );
                    }
                    let _ = std::io::stdout().flush();
                    seen += 1;
                    if count.is_some_and(|c| seen >= c) {
                        return Ok(());
                    }
                }
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

/// What `meshctl queue work` does.
pub(crate) struct WorkOptions {
    /// The queue (shard namespace).
    pub(crate) queue: String,
    /// How long one item is held before its completion.
    pub(crate) work: Duration,
    /// The wait after an empty lease or a refused call.
    pub(crate) idle: Duration,
    /// The longest the worker runs.
    pub(crate) limit: Duration,
    /// Stop after this many completions.
    pub(crate) max_items: Option<u64>,
}

/// `meshctl queue work QUEUE`: lease, hold `work`, complete, until `limit`, `max_items` or a
/// SIGTERM/SIGINT (checked between items, so the item in hand is completed first: a scale-in
/// by `docker stop` loses no work and leaves no lease to time out). One line per completed
/// item on stdout (the container's log), a summary at the end. A refused completion (409: the
/// lease expired or the owner changed) drops the item, which runs again elsewhere; any other
/// refusal or a transport error waits `idle` and tries again.
pub(crate) fn work(node: &NodeArgs, options: &WorkOptions) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let addr = node.addr();
    let (done, _) = with_client(&node.connect, false, async |client| {
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
        let started = tokio::time::Instant::now();
        let mut completed = 0u64;
        let mut dropped = 0u64;
        let mut errors = 0u64;
        let lease = LeaseRequest {
            queue: options.queue.clone(),
            shard: None,
            max: None,
        };
        let mut stop = None;
        while started.elapsed() < options.limit && options.max_items.is_none_or(|m| completed < m) {
            // Both a stop signal and the bound are checked between items only.
            let wait = match client.post_json(addr, "/control/queue/lease", &lease).await {
                Ok(r) if r.status == 200 => match serde_json::from_str::<LeaseResponse>(&r.body) {
                    Ok(leased) => {
                        tokio::time::sleep(options.work).await;
                        let done = TokenRequest {
                            shard: leased.shard.clone(),
                            token: leased.token,
                        };
                        match client
                            .post_json(addr, "/control/queue/complete", &done)
                            .await
                        {
                            Ok(c) if c.status == 200 => {
                                completed += 1;
                                println!("completed {} item {}", leased.shard, leased.token.item);
                            }
                            Ok(c) if c.status == 409 => {
                                dropped += 1;
                                println!(
                                    "dropped {} item {}: {}",
                                    leased.shard,
                                    leased.token.item,
                                    c.body.trim()
                                );
                            }
                            Ok(c) => {
                                errors += 1;
                                eprintln!("complete: HTTP {}: {}", c.status, c.body.trim());
                            }
                            Err(e) => {
                                errors += 1;
                                eprintln!("complete: {e}");
                            }
                        }
                        let _ = std::io::stdout().flush();
                        Duration::ZERO
                    }
                    Err(e) => {
                        errors += 1;
                        eprintln!("{addr}: unexpected lease answer: {e}");
                        options.idle
                    }
                },
                // 204: nothing pending.
                Ok(r) if r.status == 204 => options.idle,
                Ok(r) => {
                    errors += 1;
                    eprintln!("lease: HTTP {}: {}", r.status, r.body.trim());
                    options.idle
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("lease: {e}");
                    options.idle
                }
            };
            tokio::select! {
                biased;
                _ = term.recv() => stop = Some("SIGTERM"),
                _ = int.recv() => stop = Some("SIGINT"),
                () = tokio::time::sleep(wait) => {}
            }
            if stop.is_some() {
                break;
            }
        }
        let why = stop.unwrap_or(if options.max_items.is_some_and(|m| completed >= m) {
            "--max-items"
        } else {
            "--for"
        });
        Ok(format!(
            "worker stopped ({why}): {completed} completed, {dropped} dropped, {errors} errors"
        ))
    })?;
    println!("{done}");
    Ok(())
}
