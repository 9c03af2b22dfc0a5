//! NATS clients for tests that talk to the test's nats-server directly: as the control
//! plane (its configured user), as an enrolled runner (its credentials file), or as
//! anyone else. All over TLS with the dev CA, as the product connects.

use crate::test_env::TestEnv;
use async_nats::{Client, ConnectError, ConnectOptions};
use serde::Deserialize;

/// An enrolled runner's credentials, as `runner-agent` keeps them (`credentials.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct RunnerCredentials {
    pub runner_id: String,
    pub pool: String,
    pub secret: String,
}

fn options(env: &TestEnv) -> ConnectOptions {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_, ca) = env.nats_client();
    ConnectOptions::new().require_tls(true).add_root_certificates(ca)
}

impl TestEnv {
    /// Runner `i`'s enrolled credentials, read from its data dir.
    pub fn runner_credentials(&self, i: usize) -> RunnerCredentials {
        let path = self.runner_data_dir(i).join("credentials.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not a credentials file: {e}", path.display()))
    }

    /// A client authenticated as `user` with `password`, replies under `inbox_prefix`.
    pub async fn connect_nats_as(
        &self,
        user: &str,
        password: &str,
        inbox_prefix: &str,
    ) -> Result<Client, ConnectError> {
        let (url, _) = self.nats_client();
        options(self)
            .user_and_password(user.to_owned(), password.to_owned())
            .custom_inbox_prefix(inbox_prefix)
            .connect(url)
            .await
    }

    /// A client holding runner `i`'s credentials (what a thief of its credentials file has).
    pub async fn connect_nats_as_runner(&self, i: usize) -> Client {
        let creds = self.runner_credentials(i);
        let inbox = format!("_INBOX.{}", creds.runner_id);
        self.connect_nats_as(&creds.runner_id, &creds.secret, &inbox)
            .await
            .unwrap_or_else(|e| panic!("runner #{i}'s credentials do not connect: {e}"))
    }

    /// A client as the control planes connect (the server's own user: every permission).
    pub async fn connect_nats_as_control_plane(&self) -> Client {
        let url = self.nats_url();
        let (user, password) = match url.split_once("://").and_then(|(_, rest)| rest.split_once('@')) {
            Some((user_info, _)) => user_info.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())),
            None => None,
        }
        .expect("the control planes' NATS URL carries a user and password");
        self.connect_nats_as(&user, &password, "_INBOX")
            .await
            .unwrap_or_else(|e| panic!("the control plane's credentials do not connect: {e}"))
    }
}
