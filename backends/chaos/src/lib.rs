//! `meshkit-chaos`: one scenario file, two environments. `run SCENARIO --env sim` runs the
//! simulator library (`meshkit-sim`) on it; `run SCENARIO --env compose` applies the same
//! fault timeline to real `meshkitd` containers of a compose stack (`compose/up`) and measures
//! the same report keys from the nodes' APIs, keeping each run's artifacts in one folder.
//!
//! # Map
//!
//! | module | what |
//! |---|---|
//! | [`plan`] | the scenario's faults as actions on a stack, and the refusal of those it cannot take (pure) |
//! | [`stack`] | the stack through the Docker API (bollard): containers by compose labels, kill, start, pause, logs |
//! | [`nodes`] | the nodes' control API through `meshkit-client`: peers, leaders, shards, the chaos endpoints |
//! | [`observe`] | polls folded into the simulator's figures (detection, false positives, heal, failover, ...) |
//! | [`compose`] | the run: timeline, polls, snapshots, steady-state check, restore, artifacts |
//! | [`artifacts`] | the folder's files and `report.html` with its SVG plot |
//! | [`http`] | plain HTTP GETs of Prometheus and Alertmanager |
//! | [`rotation`] | the certificate rotation drill: new certificates from the run's CA into a node's files, and the certificate a node serves |
//! | [`autoscale`] | the autoscaler's decisions: backpressure signals in, scale-outs and scale-ins with hysteresis out (pure) |
//! | [`workers`] | the autoscaler on a stack: the backpressure stream, worker containers through the Docker API, `autoscale.jsonl` |
//!
//! docs/chaos-environment.md, "Running scenarios" and "Reading artifacts", is the user's guide.

pub mod artifacts;
pub mod autoscale;
pub mod compose;
pub mod http;
pub mod nodes;
pub mod observe;
pub mod plan;
pub mod rotation;
pub mod stack;
pub mod workers;
