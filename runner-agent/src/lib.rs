//! Fast-Flow runner agent: claims runs (over NATS, or in-process in the single node), executes each in a fresh
//! Docker container, streams its output, reports its exit. See ARCHITECTURE.md.

pub mod agent;
pub mod attempts;
pub mod claimer;
pub mod code_cache;
pub mod config;
pub mod docker;
pub mod enrollment;
pub mod execution;
pub mod exit_reports;
pub mod fence;
pub mod heartbeat;
pub mod limits;
pub mod link;
pub mod log_batcher;
pub mod log_pump;
pub mod network;
pub mod reattach;
pub mod removals;
pub mod uv_cache;
pub mod watchdog;
