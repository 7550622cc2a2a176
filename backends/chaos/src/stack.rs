//! A compose stack found through the Docker API: its node containers by the labels
//! `compose/env.py` writes (`com.docker.compose.project`, `io.meshkit.role=node`,
//! `io.meshkit.node=I`), their published control ports, the run directory with the stack's
//! certificates (mounted at `/etc/meshkit`), Prometheus and Alertmanager; and the process
//! actions on a node's container (kill, start, pause, unpause, a graceful stop) and every
//! container's logs; and the spare nodes `compose/up --spares K` prepared (certificates from the
//! run's CA, configurations, data directories; `spares.json`), whose containers [`Stack::join`]
//! creates and starts as compose would have, for a membership surge.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, EndpointSettings, HostConfig,
    NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt as _;
use thiserror::Error;

/// The nodes' control port inside the containers (compose/env.py's `CONTROL_PORT`).
const CONTROL_PORT: u16 = 8101;

/// Why the stack could not be found or acted on.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StackError {
    /// No Docker daemon answers.
    #[error("no Docker daemon answers ({0}): start it, or run the scenario with --env sim")]
    NoDocker(#[source] bollard::errors::Error),
    /// The project has no node containers.
    #[error(
        "compose project `{0}` has no meshkitd containers: bring it up with `compose/up \
         --project {0}` (or add --up), or name the right one with --project"
    )]
    NoStack(String),
    /// The stack is incomplete.
    #[error("compose project `{project}`: {what}")]
    Incomplete {
        /// The project.
        project: String,
        /// What is missing.
        what: String,
    },
    /// A spare's scrape target could not be written.
    #[error("{path}: {source}")]
    Targets {
        /// The discovery file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A Docker call failed.
    #[error("docker {call} {container}: {source}")]
    Docker {
        /// The call.
        call: &'static str,
        /// The container.
        container: String,
        /// Why.
        #[source]
        source: bollard::errors::Error,
    },
}

/// How `compose/up` prepared the spare nodes (`spares.json` in the run directory).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Spares {
    /// Their node ids, not started.
    pub nodes: Vec<u64>,
    /// The meshkitd image.
    pub image: String,
    /// The project's network.
    pub network: String,
    /// `uid:gid` the nodes run as.
    pub user: String,
    /// Node I's control port is published at `port_base + I`.
    pub port_base: u64,
    /// The control port inside the containers.
    pub control_port: u16,
    /// Where Prometheus discovers a started spare's scrape target (`node-I.json` in this
    /// folder of the run directory), when `compose/up` wrote the discovery files.
    #[serde(default)]
    pub targets_dir: Option<String>,
}

/// A spare's file-based discovery entry for Prometheus: its target with the labels the
/// stack's other nodes carry (compose/env.py's `node_labels`), or none.
pub fn spare_targets(id: u64, control_port: u16, scraped: bool) -> serde_json::Value {
    if !scraped {
        return serde_json::json!([]);
    }
    let target = format!("meshkit-{id}:{control_port}");
    serde_json::json!([{
        "targets": [target],
        "labels": {
            "cluster": "chaos",
            "namespace": "chaos",
            "instance": format!("node-{id}"),
            "target": target,
        },
    }])
}

/// Seconds a gracefully stopped node has to leave before Docker kills it: meshkitd lingers at
/// most 5 s after SIGTERM (its `MAX_LINGER`), so this is margin.
const STOP_GRACE_S: i32 = 15;

/// One node container.
#[derive(Clone, Debug)]
pub struct NodeContainer {
    /// Node id (`io.meshkit.node`).
    pub id: u64,
    /// Container name.
    pub name: String,
    /// `127.0.0.1:PORT` of its control API.
    pub control: String,
}

/// The stack as found.
#[derive(Debug)]
pub struct Stack {
    docker: Docker,
    /// The compose project.
    pub project: String,
    /// Node containers by id (1..=N).
    pub nodes: BTreeMap<u64, NodeContainer>,
    /// The run directory (certificates under `certs/`).
    pub run_dir: PathBuf,
    /// `http://127.0.0.1:PORT` of Prometheus.
    pub prometheus: Option<String>,
    /// `http://127.0.0.1:PORT` of Alertmanager.
    pub alertmanager: Option<String>,
    /// Every container of the project, by name (for the logs).
    pub containers: Vec<String>,
    /// The spares `compose/up --spares` prepared and no container runs yet.
    pub spares: Spares,
}

fn published(c: &ContainerSummary, private: u16) -> Option<String> {
    c.ports.as_ref()?.iter().find_map(|p| {
        (p.private_port == private)
            .then_some(p.public_port)
            .flatten()
            .map(|port| format!("127.0.0.1:{port}"))
    })
}

fn name_of(c: &ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_owned())
        .or_else(|| c.id.clone())
        .unwrap_or_default()
}

impl Stack {
    /// Finds project `project`'s containers (running or not).
    ///
    /// # Errors
    ///
    /// [`StackError::NoDocker`], [`StackError::NoStack`], or an incomplete stack.
    pub async fn find(project: &str) -> Result<Self, StackError> {
        let docker = Docker::connect_with_local_defaults().map_err(StackError::NoDocker)?;
        docker.ping().await.map_err(StackError::NoDocker)?;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("com.docker.compose.project={project}")],
        )]);
        let list = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|source| StackError::Docker {
                call: "ps",
                container: project.to_owned(),
                source,
            })?;
        let mut nodes = BTreeMap::new();
        let mut run_dir = None;
        let mut prometheus = None;
        let mut alertmanager = None;
        let mut containers = Vec::new();
        for c in &list {
            let labels = c.labels.clone().unwrap_or_default();
            let name = name_of(c);
            containers.push(name.clone());
            match labels.get("com.docker.compose.service").map(String::as_str) {
                Some("prometheus") => {
                    prometheus = published(c, 9090).map(|a| format!("http://{a}"))
                }
                Some("alertmanager") => {
                    alertmanager = published(c, 9093).map(|a| format!("http://{a}"));
                }
                _ => {}
            }
            if labels.get("io.meshkit.role").map(String::as_str) != Some("node") {
                continue;
            }
            let Some(id) = labels.get("io.meshkit.node").and_then(|i| i.parse().ok()) else {
                continue;
            };
            if run_dir.is_none() {
                run_dir = c.mounts.as_ref().and_then(|m| {
                    m.iter()
                        .find(|m| m.destination.as_deref() == Some("/etc/meshkit"))
                        .and_then(|m| m.source.clone())
                        .map(PathBuf::from)
                });
            }
            // A killed container publishes no port: `compose/env.py` publishes node I at
            // PORT_BASE + I, so derive it from a running sibling below when needed.
            let control = published(c, CONTROL_PORT).unwrap_or_default();
            nodes.insert(id, NodeContainer { id, name, control });
        }
        if nodes.is_empty() {
            return Err(StackError::NoStack(project.to_owned()));
        }
        let base = nodes.values().find_map(|n| {
            let port: u64 = n.control.rsplit(':').next()?.parse().ok()?;
            port.checked_sub(n.id)
        });
        for n in nodes.values_mut() {
            if n.control.is_empty() {
                let Some(base) = base else {
                    return Err(StackError::Incomplete {
                        project: project.to_owned(),
                        what: "no node container is running: `compose/down` then `compose/up`"
                            .to_owned(),
                    });
                };
                n.control = format!("127.0.0.1:{}", base + n.id);
            }
        }
        let run_dir = run_dir.ok_or_else(|| StackError::Incomplete {
            project: project.to_owned(),
            what: "the node containers mount no /etc/meshkit (not a compose/env.py stack?)"
                .to_owned(),
        })?;
        containers.sort();
        // A stack from before `--spares`, or brought up with none, has no spares.json.
        let mut spares: Spares = std::fs::read(run_dir.join("spares.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        spares.nodes.retain(|id| !nodes.contains_key(id));
        Ok(Self {
            docker,
            project: project.to_owned(),
            nodes,
            run_dir,
            prometheus,
            alertmanager,
            containers,
            spares,
        })
    }

    /// Writes spare `id`'s discovery file (see [`spare_targets`]): Prometheus scrapes it from
    /// its next refresh (a file change is seen at once, at the latest in 5 s), or stops.
    /// Nothing to do for a stack whose `compose/up` wrote no discovery files.
    fn scrape(&self, id: u64, scraped: bool) -> Result<(), StackError> {
        let Some(dir) = &self.spares.targets_dir else {
            return Ok(());
        };
        let dir = self.run_dir.join(dir);
        let path = dir.join(format!("node-{id}.json"));
        let err = |source| StackError::Targets {
            path: path.clone(),
            source,
        };
        // Written aside and renamed: Prometheus never reads half a file.
        let tmp = dir.join(format!(".node-{id}.json.tmp"));
        let body = spare_targets(id, self.spares.control_port, scraped).to_string();
        std::fs::write(&tmp, body).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }

    fn container(&self, id: u64) -> &str {
        self.nodes.get(&id).map_or("", |n| n.name.as_str())
    }

    /// A failed Docker call on `container`, as [`StackError::Docker`] (the autoscaler's
    /// workers' calls too).
    pub(crate) fn wrap(
        call: &'static str,
        container: &str,
    ) -> impl FnOnce(bollard::errors::Error) -> StackError {
        let container = container.to_owned();
        move |source| StackError::Docker {
            call,
            container,
            source,
        }
    }

    /// SIGKILL node `id`'s container.
    ///
    /// # Errors
    ///
    /// The Docker call's.
    pub async fn kill(&self, id: u64) -> Result<(), StackError> {
        let name = self.container(id);
        self.docker
            .kill_container(
                name,
                Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
            )
            .await
            .map_err(Self::wrap("kill", name))
    }

    /// Starts node `id`'s stopped container.
    ///
    /// # Errors
    ///
    /// The Docker call's.
    pub async fn start(&self, id: u64) -> Result<(), StackError> {
        let name = self.container(id);
        self.docker
            .start_container(name, None)
            .await
            .map_err(Self::wrap("start", name))
    }

    /// Stops node `id`'s container with SIGTERM: meshkitd leaves the mesh gracefully (it tells
    /// the others it left, lingers a few gossip rounds, exits).
    ///
    /// # Errors
    ///
    /// The Docker call's.
    pub async fn stop(&self, id: u64) -> Result<(), StackError> {
        let name = self.container(id);
        self.docker
            .stop_container(
                name,
                Some(StopContainerOptionsBuilder::new().t(STOP_GRACE_S).build()),
            )
            .await
            .map_err(Self::wrap("stop", name))
    }

    /// Creates and starts spare node `id`'s container as `compose/env.py` writes a node's
    /// service: the same image, user, mounts, network (with its name as an alias, which the
    /// others resolve), published control port and labels, so `compose/down` removes it with
    /// the project. Its certificate is the one the run's CA signed for it at `up`.
    ///
    /// # Errors
    ///
    /// [`StackError::Incomplete`] when `id` is no spare; the Docker calls'.
    pub async fn join(&mut self, id: u64) -> Result<(), StackError> {
        if !self.spares.nodes.contains(&id) {
            return Err(StackError::Incomplete {
                project: self.project.clone(),
                what: format!(
                    "node {id} is not a spare (spares left: {:?}); bring the stack up with more \
                     (`compose/up --spares K`)",
                    self.spares.nodes
                ),
            });
        }
        let sp = &self.spares;
        let service = format!("meshkit-{id}");
        let name = format!("{}_{service}_surge", self.project);
        let port = (sp.port_base + id).to_string();
        let binding = Some(vec![PortBinding {
            host_ip: Some("127.0.0.1".to_owned()),
            host_port: Some(port.clone()),
        }]);
        let labels = HashMap::from([
            (
                "com.docker.compose.project".to_owned(),
                self.project.clone(),
            ),
            ("com.docker.compose.service".to_owned(), service.clone()),
            // docker-compose v1 lists a project's containers with oneoff=False: without it
            // `down --remove-orphans` would not see this one.
            ("com.docker.compose.oneoff".to_owned(), "False".to_owned()),
            ("io.meshkit.role".to_owned(), "node".to_owned()),
            ("io.meshkit.node".to_owned(), id.to_string()),
            ("io.meshkit.surge".to_owned(), "true".to_owned()),
        ]);
        let run_dir = self.run_dir.display();
        let body = ContainerCreateBody {
            hostname: Some(service.clone()),
            user: Some(sp.user.clone()),
            image: Some(sp.image.clone()),
            cmd: Some(vec![
                "--config".to_owned(),
                format!("/etc/meshkit/node-{id}.toml"),
            ]),
            labels: Some(labels),
            exposed_ports: Some(vec![
                format!("{}/tcp", sp.control_port),
                format!("{}/udp", sp.control_port),
            ]),
            host_config: Some(HostConfig {
                binds: Some(vec![
                    format!("{run_dir}:/etc/meshkit:ro"),
                    format!("{run_dir}/data/node-{id}:/data"),
                ]),
                port_bindings: Some(HashMap::from([
                    (format!("{}/tcp", sp.control_port), binding.clone()),
                    (format!("{}/udp", sp.control_port), binding),
                ])),
                ..HostConfig::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    sp.network.clone(),
                    EndpointSettings {
                        aliases: Some(vec![service.clone()]),
                        ..EndpointSettings::default()
                    },
                )])),
            }),
            ..ContainerCreateBody::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .map_err(Self::wrap("create", &name))?;
        // Known before it starts: a failed start leaves a container that restore removes.
        self.spares.nodes.retain(|&n| n != id);
        self.containers.push(name.clone());
        self.nodes.insert(
            id,
            NodeContainer {
                id,
                name: name.clone(),
                control: format!("127.0.0.1:{port}"),
            },
        );
        self.docker
            .start_container(&name, None)
            .await
            .map_err(Self::wrap("start", &name))?;
        self.scrape(id, true)
    }

    /// Stops (gracefully) and removes joined node `id`'s container: the stack as it was
    /// before the surge. Its data directory stays for the run's artifacts; `compose/down`
    /// removes the run directory.
    ///
    /// # Errors
    ///
    /// The Docker calls'.
    pub async fn remove_joined(&mut self, id: u64) -> Result<(), StackError> {
        let Some(node) = self.nodes.get(&id).cloned() else {
            return Ok(());
        };
        // Out of Prometheus' targets first, so no scrape sees it down on its way out.
        self.scrape(id, false)?;
        // Already stopped (a leave) is fine: the removal below is what matters.
        let _ = self.stop(id).await;
        self.docker
            .remove_container(
                &node.name,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await
            .map_err(Self::wrap("rm", &node.name))?;
        self.nodes.remove(&id);
        self.containers.retain(|c| c != &node.name);
        self.spares.nodes.push(id);
        self.spares.nodes.sort_unstable();
        Ok(())
    }

    /// Freezes node `id`'s container.
    ///
    /// # Errors
    ///
    /// The Docker call's.
    pub async fn pause(&self, id: u64) -> Result<(), StackError> {
        let name = self.container(id);
        self.docker
            .pause_container(name)
            .await
            .map_err(Self::wrap("pause", name))
    }

    /// Thaws node `id`'s container.
    ///
    /// # Errors
    ///
    /// The Docker call's.
    pub async fn unpause(&self, id: u64) -> Result<(), StackError> {
        let name = self.container(id);
        self.docker
            .unpause_container(name)
            .await
            .map_err(Self::wrap("unpause", name))
    }

    /// Each node's container state (`running`, `paused`, `exited`, ...).
    ///
    /// # Errors
    ///
    /// The Docker call's.
    pub async fn states(&self) -> Result<BTreeMap<u64, String>, StackError> {
        let mut out = BTreeMap::new();
        for n in self.nodes.values() {
            let c = self
                .docker
                .inspect_container(&n.name, None)
                .await
                .map_err(Self::wrap("inspect", &n.name))?;
            let state = c
                .state
                .and_then(|s| s.status)
                .map_or_else(|| "unknown".to_owned(), |s| s.to_string());
            out.insert(n.id, state);
        }
        Ok(out)
    }

    /// Whether every node container runs (nothing left killed or paused).
    ///
    /// # Errors
    ///
    /// The Docker call's.
    pub async fn all_running(&self) -> Result<bool, StackError> {
        Ok(self
            .states()
            .await?
            .values()
            .all(|s| s == &ContainerSummaryStateEnum::RUNNING.to_string()))
    }

    /// Container `name`'s whole log (stdout and stderr, with Docker's timestamps).
    ///
    /// # Errors
    ///
    /// The Docker call's.
    pub async fn logs(&self, name: &str) -> Result<Vec<u8>, StackError> {
        container_log(&self.docker, name)
            .await
            .map_err(Self::wrap("logs", name))
    }
}

/// Container `name`'s whole log (stdout and stderr, with Docker's timestamps), for the stack and
/// for the autoscaler's workers.
pub(crate) async fn container_log(
    docker: &Docker,
    name: &str,
) -> Result<Vec<u8>, bollard::errors::Error> {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .build();
    let mut stream = docker.logs(name, Some(options));
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?.into_bytes());
    }
    Ok(out)
}
