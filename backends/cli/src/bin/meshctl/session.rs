//! `meshctl lock SCOPE -- CMD` and `meshctl elect SCOPE -- CMD`: run a command while the node at
//! `--addr` holds a lease on SCOPE for this session, as `consul lock` and `etcdctl lock|elect`
//! do.
//!
//! The session asks the node to acquire the scope (`POST /control/leases/acquire`: refused while
//! another node, or another session through this node, holds it), runs CMD with the grant in its
//! environment, and renews the lease a third of the way through each TTL with the token it was
//! given (`POST /control/leases/renew`). The node never renews a session's lease by itself: a
//! session that stops asking (meshctl killed, the network gone) loses the lease after its TTL.
//!
//! The lease counts from when the acquisition or the renewal that granted it was *sent*, by this
//! process's clock, so this process always believes in its lease for less time than the voters
//! grant it (the same argument as the node's own leases). When the node says the lease is gone
//! (a drain, an expiry, a refused renewal), or no renewal is answered before the TTL runs out,
//! CMD's process group gets SIGTERM, then SIGKILL after `--grace`. When CMD exits by itself the
//! lease is released. SIGINT and SIGTERM to meshctl are passed on to CMD's process group; the
//! lease is released once CMD has exited.
//!
//! `lock` waits for the lease (up to `--timeout`), runs CMD once and exits with its status.
//! `elect` campaigns: whenever it wins it runs CMD, and when the lease is lost it stops CMD and
//! campaigns again (with `--once`, it exits instead), until CMD exits by itself.
//!
//! The fencing token is the guard: the stop is best effort (a paused process cannot be stopped
//! in time), so every write CMD makes to a resource the lock protects must carry
//! `MESHKIT_FENCING_TOKEN`, and the resource must refuse a token lower than one it has seen.

use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use meshkit_node::api::json::{
    AcquireRequest, ErrorBody, HeldBody, SessionRequest, SessionResponse,
};
use meshkit_node::client::Client;
use serde::Serialize;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// How often the session looks whether CMD has exited.
const CHILD_POLL: Duration = Duration::from_millis(50);

/// Whether the session runs CMD once (`lock`) or campaigns again after a loss (`elect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Lock,
    Elect,
}

/// What `lock` and `elect` were asked.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) mode: Mode,
    pub(crate) scope: String,
    pub(crate) ttl: Duration,
    pub(crate) retry: Duration,
    pub(crate) grace: Duration,
    /// `lock`: give up waiting after this long.
    pub(crate) timeout: Option<Duration>,
    /// `elect`: exit after a loss instead of campaigning again.
    pub(crate) once: bool,
    pub(crate) json: bool,
    pub(crate) command: Vec<String>,
}

/// One line of what the session does, on stderr (CMD owns stdout): text, or JSON with `--json`.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Note<'a> {
    Waiting {
        scope: &'a str,
        reason: &'a str,
    },
    Acquired {
        scope: &'a str,
        holder: u64,
        token: u64,
        ttl_ms: u64,
    },
    Lost {
        scope: &'a str,
        token: u64,
        reason: &'a str,
    },
    Exited {
        scope: &'a str,
        status: i32,
    },
    Released {
        scope: &'a str,
        token: u64,
    },
    ReleaseFailed {
        scope: &'a str,
        token: u64,
        reason: &'a str,
    },
}

impl Note<'_> {
    fn text(&self) -> String {
        match self {
            Self::Waiting { scope, reason } => format!("waiting for {scope}: {reason}"),
            Self::Acquired {
                scope,
                holder,
                token,
                ..
            } => format!(
                "node {holder} holds {scope} for this session with fencing token {token}; \
                 running the command"
            ),
            Self::Lost {
                scope,
                token,
                reason,
            } => format!("lost {scope} (token {token}): {reason}; stopping the command"),
            Self::Exited { scope, status } => {
                format!("the command exited with status {status} while holding {scope}")
            }
            Self::Released { scope, token } => format!("released {scope} (token {token})"),
            Self::ReleaseFailed {
                scope,
                token,
                reason,
            } => format!(
                "could not release {scope} (token {token}): {reason}; it lapses after its TTL"
            ),
        }
    }
}

fn note(json: bool, note: &Note<'_>) {
    if json {
        eprintln!("{}", serde_json::to_string(note).unwrap_or_default());
    } else {
        eprintln!("meshctl: {}", note.text());
    }
}

/// A grant held by this session.
#[derive(Clone, Copy, Debug)]
struct Grant {
    holder: u64,
    token: u64,
    /// When the lease runs out by this process's clock, unless renewed.
    deadline: Instant,
}

/// How holding a grant ended.
enum Held {
    /// CMD exited by itself.
    Exited(ExitStatus),
    /// The lease is gone; CMD was stopped and exited with this status.
    Lost(ExitStatus),
    /// meshctl got this signal; CMD was passed it and exited with this status.
    Interrupted(ExitStatus),
}

/// Why an acquisition did not give a grant.
enum Refusal {
    /// Held elsewhere, no quorum, or a drained node: wait and ask again.
    Wait(String),
    /// It cannot succeed as asked (bad scope or TTL, no access, no leadership): give up.
    Fail(String),
}

/// SIGINT and SIGTERM to meshctl.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn new() -> Result<Self, String> {
        let listen = |kind| signal(kind).map_err(|e| format!("cannot listen for signals: {e}"));
        Ok(Self {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
        })
    }

    /// The next signal: SIGINT or SIGTERM.
    async fn recv(&mut self) -> rustix::process::Signal {
        tokio::select! {
            _ = self.interrupt.recv() => rustix::process::Signal::INT,
            _ = self.terminate.recv() => rustix::process::Signal::TERM,
        }
    }
}

/// The exit status meshctl passes on: CMD's code, or 128 + the signal that ended it (as a
/// shell reports it).
pub(crate) fn exit_code(status: ExitStatus) -> u8 {
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    u8::try_from(code & 0xff).unwrap_or(1)
}

/// Runs the session against the node at `addr`; CMD's exit code.
pub(crate) async fn run(client: &Client, addr: &str, options: &Options) -> Result<u8, String> {
    let mut signals = Signals::new()?;
    let give_up = options.timeout.map(|t| Instant::now() + t);
    loop {
        let grant = tokio::select! {
            grant = acquire(client, addr, options, give_up) => grant?,
            signal = signals.recv() => return Ok(128 + signal_number(signal)),
        };
        let ended = hold(client, addr, options, grant, &mut signals).await?;
        match ended {
            Held::Exited(status) | Held::Interrupted(status) => {
                release(client, addr, options, grant).await;
                return Ok(exit_code(status));
            }
            Held::Lost(status) => {
                if options.mode == Mode::Lock || options.once {
                    // A lost lease is never a success, even if CMD exited 0 on SIGTERM.
                    return Ok(match exit_code(status) {
                        0 => 1,
                        code => code,
                    });
                }
                // `elect`: campaign again.
            }
        }
    }
}

fn signal_number(signal: rustix::process::Signal) -> u8 {
    u8::try_from(signal.as_raw()).unwrap_or(0)
}

/// Asks for the lease until it is granted, `give_up` passes, or the node says it never will.
async fn acquire(
    client: &Client,
    addr: &str,
    options: &Options,
    give_up: Option<Instant>,
) -> Result<Grant, String> {
    let request = AcquireRequest {
        scope: options.scope.clone(),
        ttl_ms: u64::try_from(options.ttl.as_millis()).unwrap_or(u64::MAX),
    };
    let mut last_reason = String::new();
    loop {
        let sent = Instant::now();
        let answer = client
            .post_json(addr, "/control/leases/acquire", &request)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        match session_answer(addr, answer.status, &answer.body) {
            Ok(granted) => {
                let grant = Grant {
                    holder: granted.holder,
                    token: granted.token,
                    deadline: sent + options.ttl,
                };
                note(
                    options.json,
                    &Note::Acquired {
                        scope: &options.scope,
                        holder: grant.holder,
                        token: grant.token,
                        ttl_ms: request.ttl_ms,
                    },
                );
                return Ok(grant);
            }
            Err(Refusal::Fail(reason)) => return Err(reason),
            Err(Refusal::Wait(reason)) => {
                // A holder's time left changes with every ask: say who holds it, once a holder.
                let reason = match serde_json::from_str::<HeldBody>(&answer.body) {
                    Ok(held) => format!("held by node {} (token {})", held.holder, held.token),
                    Err(_) => reason,
                };
                if give_up.is_some_and(|g| Instant::now() + options.retry > g) {
                    return Err(format!(
                        "gave up waiting for {} after --timeout: {reason}",
                        options.scope
                    ));
                }
                if reason != last_reason {
                    note(
                        options.json,
                        &Note::Waiting {
                            scope: &options.scope,
                            reason: &reason,
                        },
                    );
                    last_reason = reason;
                }
                tokio::time::sleep(options.retry).await;
            }
        }
    }
}

/// The grant in a 2xx answer, or why not: 409 and 503 are worth waiting out, the rest not.
fn session_answer(addr: &str, status: u16, body: &str) -> Result<SessionResponse, Refusal> {
    if (200..300).contains(&status) {
        return serde_json::from_str(body)
            .map_err(|e| Refusal::Fail(format!("{addr}: unexpected answer: {e}")));
    }
    let reason = serde_json::from_str::<ErrorBody>(body)
        .map_or_else(|_| body.trim().to_owned(), |e| e.error);
    match status {
        409 | 503 => Err(Refusal::Wait(reason)),
        _ => Err(Refusal::Fail(format!("{addr}: HTTP {status}: {reason}"))),
    }
}

/// Starts CMD in its own process group with the grant in its environment.
fn spawn(options: &Options, grant: Grant) -> Result<Child, String> {
    let (program, args) = options
        .command
        .split_first()
        .ok_or("no command to run: give one after --")?;
    std::process::Command::new(program)
        .args(args)
        .env("MESHKIT_SCOPE", &options.scope)
        .env("MESHKIT_FENCING_TOKEN", grant.token.to_string())
        .env("MESHKIT_HOLDER", grant.holder.to_string())
        .env("MESHKIT_LEASE_TTL_MS", options.ttl.as_millis().to_string())
        .stdin(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {program:?}: {e}"))
}

/// Runs CMD while renewing the grant; how that ended.
async fn hold(
    client: &Client,
    addr: &str,
    options: &Options,
    mut grant: Grant,
    signals: &mut Signals,
) -> Result<Held, String> {
    let mut child = match spawn(options, grant) {
        Ok(child) => child,
        Err(e) => {
            release(client, addr, options, grant).await;
            return Err(e);
        }
    };
    let renew_every = options.ttl / 3;
    let mut next_renew = grant.deadline - options.ttl + renew_every;
    let renewal = SessionRequest {
        scope: options.scope.clone(),
        token: grant.token,
    };
    let mut trouble = String::new();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            note(
                options.json,
                &Note::Exited {
                    scope: &options.scope,
                    status: i32::from(exit_code(status)),
                },
            );
            return Ok(Held::Exited(status));
        }
        let now = Instant::now();
        let lost = |reason: &str| {
            note(
                options.json,
                &Note::Lost {
                    scope: &options.scope,
                    token: grant.token,
                    reason,
                },
            );
        };
        if now >= grant.deadline {
            let reason = if trouble.is_empty() {
                "no renewal was answered before its TTL ran out".to_owned()
            } else {
                format!("no renewal was answered before its TTL ran out ({trouble})")
            };
            lost(&reason);
            let status = stop(&mut child, rustix::process::Signal::TERM, options.grace).await?;
            return Ok(Held::Lost(status));
        }
        if now >= next_renew {
            let sent = Instant::now();
            let call = client.post_json(addr, "/control/leases/renew", &renewal);
            let answer = tokio::time::timeout(grant.deadline - now, call).await;
            match answer {
                Ok(Ok(response)) => match session_answer(addr, response.status, &response.body) {
                    Ok(renewed) if renewed.token == grant.token => {
                        grant.deadline = sent + options.ttl;
                        next_renew = sent + renew_every;
                        trouble.clear();
                    }
                    Ok(other) => {
                        lost(&format!("the node holds it under token {}", other.token));
                        let status =
                            stop(&mut child, rustix::process::Signal::TERM, options.grace).await?;
                        return Ok(Held::Lost(status));
                    }
                    // 503: no quorum for now; ask again until the deadline.
                    Err(Refusal::Wait(reason)) if response.status == 503 => {
                        trouble = reason;
                        next_renew = now + options.retry.min(renew_every);
                    }
                    Err(Refusal::Wait(reason) | Refusal::Fail(reason)) => {
                        lost(&reason);
                        let status =
                            stop(&mut child, rustix::process::Signal::TERM, options.grace).await?;
                        return Ok(Held::Lost(status));
                    }
                },
                Ok(Err(e)) => {
                    trouble = e.to_string();
                    next_renew = now + options.retry.min(renew_every);
                }
                // The deadline passed during the call: the next round says so.
                Err(_) => {}
            }
            continue;
        }
        let wake = next_renew.min(grant.deadline) - now;
        tokio::select! {
            () = tokio::time::sleep(wake.min(CHILD_POLL)) => {}
            signal = signals.recv() => {
                let status = stop(&mut child, signal, options.grace).await?;
                return Ok(Held::Interrupted(status));
            }
        }
    }
}

/// Sends `signal` to CMD's process group, then SIGKILL after `grace`; CMD's exit status.
async fn stop(
    child: &mut Child,
    signal: rustix::process::Signal,
    grace: Duration,
) -> Result<ExitStatus, String> {
    // CMD was not reaped yet (only `try_wait` reaps it), so its pid is still its own.
    let group = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(group) = group {
        // It may have exited meanwhile: then there is nothing to signal.
        let _ = rustix::process::kill_process_group(group, signal);
    }
    let killed_at = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if Instant::now() >= killed_at {
            if let Some(group) = group {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let _ = child.kill();
            return child.wait().map_err(|e| e.to_string());
        }
        tokio::time::sleep(CHILD_POLL).await;
    }
}

/// Releases the grant (best effort: unreleased, it lapses after its TTL).
async fn release(client: &Client, addr: &str, options: &Options, grant: Grant) {
    let request = SessionRequest {
        scope: options.scope.clone(),
        token: grant.token,
    };
    let outcome = match client
        .post_json(addr, "/control/leases/release", &request)
        .await
    {
        Ok(response) => session_answer(addr, response.status, &response.body)
            .map(|_| ())
            .map_err(|(Refusal::Wait(reason) | Refusal::Fail(reason))| reason),
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        Ok(()) => note(
            options.json,
            &Note::Released {
                scope: &options.scope,
                token: grant.token,
            },
        ),
        Err(reason) => note(
            options.json,
            &Note::ReleaseFailed {
                scope: &options.scope,
                token: grant.token,
                reason: &reason,
            },
        ),
    }
}
