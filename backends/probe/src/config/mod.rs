//! `probes.toml`: the agent's declarative configuration (owner: the agent part; see
//! `docs/probes.md` for the reference).

mod error;

pub use error::ConfigError;
