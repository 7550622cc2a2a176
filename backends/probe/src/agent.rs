//! The agent process: its own client and endpoint, the probe host, and the fan-out of every
//! result to the metrics, the history and the alert engine.
