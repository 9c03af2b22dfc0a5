//! The wire contract between `control-plane` and `runner-agent`: statuses, the job
//! spec, NATS subjects and message types, and the binary log-batch codec.
//!
//! Architecture invariant: this crate does no I/O and pulls in no framework.

pub mod log_batch;
pub mod nats_settings;
pub mod protocol;
pub mod service_url;
pub mod status;
pub mod subjects;

pub use status::{FailureReason, LogStream, RunStatus};
