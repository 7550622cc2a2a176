//! The autoscaler as the compose stack's `autoscaler` service (compose/env.py writes it into
//! the project's `docker-compose.json`, profile `autoscaler`): `meshkit-chaos autoscale` in the
//! `meshkit/meshkit-chaos:dev` image, on the project's network, with the Docker socket mounted,
//! its `/metrics` scraped by the stack's Prometheus (job `meshkit-autoscaler`).
//!
//! A scenario with `[autoscale]` starts it with the scenario's policy ([`start`]): the
//! service's command takes its queue, bounds, dwell, cooldown, bound on its life and output
//! folder from `MESHKIT_AUTOSCALER_*` variables that docker-compose substitutes, so the runner
//! and a user's `docker-compose --profile autoscaler up -d autoscaler` start the same
//! definition. The run's artifacts folder is mounted at its own path, so the decisions land in
//! `autoscale.jsonl` there as before; [`Service::stop`] stops it (SIGTERM: it stops its workers,
//! keeping their logs, and writes its summary), keeps its log and removes it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::stack::Stack;

use super::{AutoscaleError, AutoscaleOptions, SUMMARY_FILE, Summary};

/// The service's name in the project's `docker-compose.json`.
pub const SERVICE: &str = "autoscaler";
/// Bound on one docker-compose call that starts or removes the service (the image exists).
const COMPOSE_LIMIT: Duration = Duration::from_secs(120);
/// What the service has after SIGTERM, per worker it may have to stop (each gets 10 s to
/// complete its item), plus this margin for its own exit.
const STOP_PER_WORKER_S: u64 = 12;
const STOP_MARGIN_S: u64 = 20;

/// The service, started.
#[derive(Debug)]
pub struct Service {
    project: String,
    compose_file: PathBuf,
    out: PathBuf,
    stop_grace_s: u64,
}

/// A duration as the CLI reads it.
fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// `docker-compose -p PROJECT -f FILE ARGS` with `env`, bounded by `limit` (coreutils'
/// `timeout`), off the async threads; its stdout, or why it failed.
async fn compose(
    project: &str,
    file: &Path,
    args: &[&str],
    env: Vec<(String, String)>,
    limit: Duration,
) -> Result<String, AutoscaleError> {
    let mut cmd = Command::new("timeout");
    cmd.arg(limit.as_secs().max(1).to_string())
        .arg("docker-compose")
        .args(["-p", project, "-f"])
        .arg(file)
        .args(args)
        .envs(env);
    let command = format!(
        "docker-compose -p {project} -f {} {}",
        file.display(),
        args.join(" ")
    );
    let fail = |why: String| AutoscaleError::Service {
        command: command.clone(),
        why,
    };
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| {
            fail(format!(
                "{e} (docker-compose and coreutils' timeout are needed)"
            ))
        })?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        let tail: String = err
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(fail(format!("{} {}", output.status, tail.trim())));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Starts the stack's `autoscaler` service with `options` (its output in `options.out`, made
/// absolute: the folder is mounted at its own path), to run for at most `bound` unless
/// stopped first.
///
/// # Errors
///
/// [`AutoscaleError::Service`]: the stack's compose file has no `autoscaler` service (a stack
/// from before it: `compose/down`, `compose/up`), or docker-compose failed (the image
/// `meshkit/meshkit-chaos:dev` missing: scripts/static-image.sh builds it);
/// [`AutoscaleError::Io`] for the output folder.
pub async fn start(
    stack: &Stack,
    options: &AutoscaleOptions,
    bound: Duration,
) -> Result<Service, AutoscaleError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| AutoscaleError::Io { path, source }
    };
    std::fs::create_dir_all(&options.out).map_err(io(&options.out))?;
    let out = options.out.canonicalize().map_err(io(&options.out))?;
    let compose_file = stack.run_dir.join("docker-compose.json");
    let text = std::fs::read_to_string(&compose_file).map_err(io(&compose_file))?;
    let has_service = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .is_some_and(|v| v["services"][SERVICE].is_object());
    if !has_service {
        return Err(AutoscaleError::Service {
            command: format!("{} --profile {SERVICE}", compose_file.display()),
            why: format!(
                "the stack's compose file has no `{SERVICE}` service (a stack from before it): \
                 `compose/down --project {p}` and `compose/up --project {p}`",
                p = stack.project
            ),
        });
    }
    let p = &options.policy;
    let env: Vec<(String, String)> = [
        ("QUEUE", options.queue.clone()),
        ("MIN_WORKERS", p.min_workers.to_string()),
        ("MAX_WORKERS", p.max_workers.to_string()),
        ("SCALE_OUT_AFTER", ms(p.scale_out_after)),
        ("SCALE_IN_AFTER", ms(p.scale_in_after)),
        ("COOLDOWN", ms(p.cooldown)),
        ("WORK", ms(options.work)),
        ("FOR", ms(bound)),
        ("OUT", out.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("MESHKIT_AUTOSCALER_{k}"), v))
    .collect();
    // A service left by an interrupted run would keep its old policy: replaced.
    compose(
        &stack.project,
        &compose_file,
        &[
            "--profile",
            SERVICE,
            "up",
            "-d",
            "--no-deps",
            "--force-recreate",
            SERVICE,
        ],
        env,
        COMPOSE_LIMIT,
    )
    .await?;
    tracing::info!(project = %stack.project, out = %out.display(), "the autoscaler service started");
    Ok(Service {
        project: stack.project.clone(),
        compose_file,
        out,
        stop_grace_s: u64::from(p.max_workers) * STOP_PER_WORKER_S + STOP_MARGIN_S,
    })
}

impl Service {
    /// Stops the service (its workers stopped and their logs kept), keeps its log in
    /// `logs/`, removes its container, and reads back its summary. A failure is in the
    /// summary's errors (the run fails with them), not lost.
    pub async fn stop(self, stack: &Stack) -> Summary {
        let mut errors = Vec::new();
        let profile = ["--profile", SERVICE];
        let ids = compose(
            &self.project,
            &self.compose_file,
            &[&profile[..], &["ps", "-q", SERVICE]].concat(),
            Vec::new(),
            COMPOSE_LIMIT,
        )
        .await;
        let grace = self.stop_grace_s.to_string();
        if let Err(e) = compose(
            &self.project,
            &self.compose_file,
            &[&profile[..], &["stop", "-t", &grace, SERVICE]].concat(),
            Vec::new(),
            COMPOSE_LIMIT + Duration::from_secs(self.stop_grace_s),
        )
        .await
        {
            errors.push(e.to_string());
        }
        match &ids {
            Ok(ids) => {
                for id in ids.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    match stack.logs(id).await {
                        Ok(bytes) => {
                            let name = format!("{}_{SERVICE}", self.project);
                            let path = self.out.join("logs").join(format!("{name}.log"));
                            if let Err(e) = crate::artifacts::write_bytes(&path, &bytes) {
                                tracing::warn!("{}: {e}", path.display());
                            }
                        }
                        Err(e) => tracing::warn!("logs of the autoscaler: {e}"),
                    }
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
        if let Err(e) = compose(
            &self.project,
            &self.compose_file,
            &[&profile[..], &["rm", "-f", "-s", SERVICE]].concat(),
            Vec::new(),
            COMPOSE_LIMIT,
        )
        .await
        {
            errors.push(e.to_string());
        }
        let path = self.out.join(SUMMARY_FILE);
        let mut summary = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Summary>(&bytes).unwrap_or_else(|e| Summary {
                errors: vec![format!("{}: {e}", path.display())],
                ..Summary::default()
            }),
            Err(e) => Summary {
                errors: vec![format!(
                    "{}: {e} (the service wrote no summary: see logs/{}_{SERVICE}.log)",
                    path.display(),
                    self.project
                )],
                ..Summary::default()
            },
        };
        summary.errors.extend(errors);
        summary
    }
}
