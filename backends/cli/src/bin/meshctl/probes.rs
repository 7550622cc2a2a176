//! `meshctl probes list`: the health probes of every member (docs/diagnostics.md).
//!
//! With one `--addr` (or none: the context's, else the default), the node there lists the mesh
//! (`/meshkit/peers`) and every member that has not left is asked at the `control` address it
//! publishes, as `meshctl health` does; with several `--addr`, exactly those are asked. Each
//! answers `GET /control/probes` for itself (the same payload on every host); `--tag key=value`
//! filters on the nodes. A member that does not answer is listed with its error; the command
//! fails only when nobody answered.

use meshkit_node::api::json::PeerJson;
use meshkit_node::api::probes::{ProbeJson, ProbesResponse, TagFilter};
use meshkit_node::client::Client;
use serde::Serialize;

use super::{ConnectArgs, PeerFilter, fetch_peers, ok_body, with_client};

/// Members asked at once.
const CONCURRENT_MEMBERS: usize = 32;
/// Longest last error printed whole in the table; the JSON has it all.
const ERROR_CHARS: usize = 60;

/// What `meshctl probes list` found, host by host.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The member the mesh was listed from, when it was.
    pub(crate) listed_by: Option<u64>,
    /// Every host asked, in node id order (then address).
    pub(crate) hosts: Vec<HostProbes>,
}

/// One host's answer.
#[derive(Debug, Serialize)]
pub(crate) struct HostProbes {
    /// The control address asked.
    pub(crate) addr: String,
    /// The node id, as the listing member or the host itself said.
    pub(crate) node: Option<u64>,
    /// Why it did not answer.
    pub(crate) error: Option<String>,
    /// Its probes that match the tags.
    pub(crate) probes: Vec<ProbeJson>,
}

/// Runs the listing; prints the table (or JSON).
pub(crate) fn run(
    addrs: &[String],
    default_addr: &str,
    connect: &ConnectArgs,
    tags: &[String],
    json: bool,
) -> Result<(), String> {
    for tag in tags {
        TagFilter::parse(tag).map_err(|e| format!("--tag {tag:?}: {e}"))?;
    }
    let query = if tags.is_empty() {
        "/control/probes".to_owned()
    } else {
        let filters: Vec<String> = tags.iter().map(|t| format!("tag={t}")).collect();
        format!("/control/probes?{}", filters.join("&"))
    };
    let (report, _) = with_client(connect, false, async |client| {
        let (listed_by, targets) = match addrs {
            [] | [_] => {
                let addr = addrs.first().map_or(default_addr, String::as_str);
                let peers = fetch_peers(client, addr, &PeerFilter::default()).await?;
                let targets = peers
                    .peers
                    .iter()
                    .filter(|p| p.state != "left")
                    .map(|p: &PeerJson| (Some(p.id), p.metadata.get("control").cloned()))
                    .collect::<Vec<_>>();
                (Some(peers.local), targets)
            }
            many => (None, many.iter().map(|a| (None, Some(a.clone()))).collect()),
        };
        let mut hosts = Vec::new();
        for chunk in targets.chunks(CONCURRENT_MEMBERS) {
            let asked = futures_util::future::join_all(
                chunk
                    .iter()
                    .map(|(id, addr)| ask(client, *id, addr.clone(), &query)),
            )
            .await;
            hosts.extend(asked);
        }
        hosts.sort_by(|a, b| (a.node, &a.addr).cmp(&(b.node, &b.addr)));
        Ok(Report { listed_by, hosts })
    })?;
    crate::print_report(&report, json, render)?;
    if !report.hosts.is_empty() && report.hosts.iter().all(|h| h.error.is_some()) {
        return Err("no host answered: check --addr and the credentials (--ca, --cert/--key or --token with mesh.observe)".to_owned());
    }
    Ok(())
}

async fn ask(client: &Client, id: Option<u64>, addr: Option<String>, query: &str) -> HostProbes {
    let Some(addr) = addr else {
        return HostProbes {
            addr: String::new(),
            node: id,
            error: Some("the member publishes no control address".to_owned()),
            probes: Vec::new(),
        };
    };
    let answer = match client.get(&addr, query).await {
        Ok(response) => ok_body(&addr, response).and_then(|body| {
            serde_json::from_str::<ProbesResponse>(&body)
                .map_err(|e| format!("{addr}: unexpected answer: {e}"))
        }),
        Err(e) => Err(format!("{addr}: {e}")),
    };
    match answer {
        Ok(body) => HostProbes {
            addr,
            node: Some(body.node),
            error: None,
            probes: body.probes,
        },
        Err(error) => HostProbes {
            addr,
            node: id,
            error: Some(error),
            probes: Vec::new(),
        },
    }
}

fn render(report: &Report) -> String {
    let mut out = format!(
        "{:<6} {:<20} {:<12} {:<9} {:>5} {:>9} {:>9} {:>8}  {}\n",
        "NODE", "PROBE", "KIND", "STATE", "FAILS", "P50(ms)", "P99(ms)", "NEXT(ms)", "LAST ERROR"
    );
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    for host in &report.hosts {
        let node = host.node.map_or("?".to_owned(), |n| n.to_string());
        if let Some(error) = &host.error {
            out.push_str(&format!("{node:<6} (unreachable: {error})\n"));
            continue;
        }
        for p in &host.probes {
            let mut error = p.last_error.clone().unwrap_or_else(|| "-".to_owned());
            if error.chars().count() > ERROR_CHARS {
                error = error.chars().take(ERROR_CHARS).collect::<String>() + "...";
            }
            out.push_str(&format!(
                "{node:<6} {:<20} {:<12} {:<9} {:>5} {:>9} {:>9} {:>8}  {error}\n",
                p.name,
                p.kind,
                p.state,
                p.consecutive_failures,
                ms(p.latency_p50_ms),
                ms(p.latency_p99_ms),
                p.next_due_ms,
            ));
        }
    }
    out
}
