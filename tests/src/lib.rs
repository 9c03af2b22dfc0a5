//! Harness for Fast-Flow's end-to-end tests.
//!
//! Every test builds its own [`TestEnv`], in one of two modes:
//! - distributed ([`TestEnvOptions::default`]): a private nats-server, a fresh
//!   Postgres database, a fresh S3 bucket, a private pipelines folder, and real
//!   `control-plane` / `runner-agent` processes wired to them;
//! - single node ([`TestEnvOptions::single_node`]): one `control-plane` process
//!   given none of the services' addresses, keeping SQLite and the archived logs
//!   under the test's temp dir and running jobs with its embedded runner.
//!
//! Tests about the API and about how runs behave are written once and run in both
//! modes with [`in_both_modes!`], so neither configuration can rot. Nothing is
//! mocked; the harness observes the product only through its public surfaces (HTTP
//! API, the log store — S3 bucket or directory —, Docker engine).
//!
//! The shared services come from `scripts/dev-deps.sh up`, which writes
//! `/var/tmp/fastflow-dev/env.sh`; see [`DevEnv`] for the variables it must export.
//!
//! Run with `scripts/test.sh -p tests`, or by hand:
//! `scripts/dev-deps.sh up && source /var/tmp/fastflow-dev/env.sh && cargo build --workspace --bins && cargo test -p tests`.
//! The product binaries are taken from `$FASTFLOW_BIN_DIR`, else from the profile
//! dir of the test executable (`<target>/debug`).
//!
//! Every deployment has an admin and an API token, made with `control-plane user create`
//! and `control-plane token create` before the first control plane starts (as an
//! operator would): every client of [`TestEnv::cp`] sends that token, so the tests talk
//! to the API as a real user does. [`TestEnv::create_user`], [`TestEnv::create_token`],
//! [`ControlPlaneClient::with_token`] / [`ControlPlaneClient::anonymous`] and
//! [`Session`] (a browser's login) give other credentials.
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
pub mod nats_client;
mod postgres;
mod private_postgres;
mod process;
mod s3;
pub mod session;
pub mod sse;
mod test_env;
mod wait;

pub use api::{ApiResponse, ControlPlaneClient, Run, TextResponse, assert_error, assert_error_shape};
pub use config::DevEnv;
pub use docker::{docker_containers_with_label, docker_inspect, docker_now};
pub use docker_events::{ContainerCreations, ContainerEvent, ContainerLifecycle};
pub use nats::NatsAccess;
pub use s3::Digest;
pub use session::Session;
pub use sse::{LogLine, SseEvent, SseStream, SseTranscript};
pub use test_env::{ADMIN_TOKEN_NAME, ADMIN_USER, Mode, TestEnv, TestEnvOptions, TestUser};
pub use wait::poll_until;

/// Defines tests that run in both modes with the same body.
///
/// ```ignore
/// in_both_modes! {
///     /// Doc comment of the pair.
///     async fn a_run_succeeds(options) {
///         let env = TestEnv::start(options.runners(1)).await;
///         // …
///     }
/// }
/// ```
///
/// expands each function to a module of that name holding the body (which gets the
/// [`TestEnvOptions`] of its mode as `options`) and two tests, `<name>::distributed`
/// (from [`TestEnvOptions::default`]) and `<name>::single_node` (from
/// [`TestEnvOptions::single_node`]). The body sees the enclosing file's items.
#[macro_export]
macro_rules! in_both_modes {
    ($($(#[$meta:meta])* async fn $name:ident($options:ident) $body:block)*) => {
        $(
            $(#[$meta])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn body($options: $crate::TestEnvOptions) $body

                #[tokio::test(flavor = "multi_thread")]
                async fn distributed() {
                    body($crate::TestEnvOptions::default()).await
                }

                #[tokio::test(flavor = "multi_thread")]
                async fn single_node() {
                    body($crate::TestEnvOptions::single_node()).await
                }
            }
        )*
    };
}
