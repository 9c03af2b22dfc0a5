//! Harness for Fast-Flow's end-to-end tests.
//!
//! Every test builds its own [`TestEnv`]: a private nats-server, a fresh Postgres
//! database, a fresh S3 bucket, a private pipelines folder, and real
//! `control-plane` / `runner-agent` processes wired to them. Nothing is mocked; the
//! harness observes the product only through its public surfaces (HTTP API, S3
//! archive, Docker engine).
//!
//! The shared services come from `scripts/dev-deps.sh up`, which writes
//! `/var/tmp/fastflow-dev/env.sh`; see [`DevEnv`] for the variables it must export.
//!
//! Run with `scripts/test.sh -p tests`, or by hand:
//! `scripts/dev-deps.sh up && source /var/tmp/fastflow-dev/env.sh && cargo build --workspace --bins && cargo test -p tests`.
//! The product binaries are taken from `$FASTFLOW_BIN_DIR`, else from the profile
//! dir of the test executable (`<target>/debug`).
//!
//! Process logs are written to files in the test's temp dir and printed (last
//! lines of each) only when the test fails, or always when `TEST_LOG` is set.

mod api;
pub mod checks;
mod config;
mod docker;
mod docker_events;
pub mod expected;
mod nats;
mod postgres;
mod private_postgres;
mod process;
mod s3;
pub mod sse;
mod test_env;
mod wait;

pub use api::{ApiResponse, ControlPlaneClient, Run, TextResponse, assert_error_shape};
pub use config::DevEnv;
pub use docker::{docker_containers_with_label, docker_inspect, docker_now};
pub use docker_events::ContainerCreations;
pub use s3::Digest;
pub use sse::{LogLine, SseEvent, SseStream, SseTranscript};
pub use test_env::{TestEnv, TestEnvOptions};
pub use wait::poll_until;
