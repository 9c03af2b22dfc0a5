//! Fast-Flow control plane: HTTP API and SSE, run lifecycle, the runner-facing
//! NATS API (or the embedded runner of the single node), log archiving and the
//! sweeper. See ARCHITECTURE.md.

pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod context;
pub mod embedded_runner;
pub mod http;
pub mod logs;
pub mod migrate;
pub mod object_store;
pub mod pipelines;
pub mod runner_api;
pub mod runner_identity;
pub mod runs;
pub mod startup;
pub mod store;
pub mod sweeper;
pub mod telemetry;

pub use config::Config;
pub use context::Context;
pub use startup::ControlPlane;
