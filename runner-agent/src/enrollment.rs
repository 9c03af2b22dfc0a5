//! The runner's identity: enrolled once with a registration token, then kept in
//! `RUNNER_DATA_DIR/credentials.json` (mode 0600) and used for every later start.
//!
//! Enrolling: the runner connects to NATS as `enroll-<nonce>` with the registration
//! token as password (the control plane's auth callout lets such a connection do
//! nothing but ask to enroll and read its own replies), sends an [`EnrollRequest`]
//! and gets its runner id, pool and secret. From then on it connects as its runner id
//! with that secret; the NATS server then lets it publish only on its own subjects.

use crate::link::nats::connect_options;
use serde::{Deserialize, Serialize};
use shared::nats_settings::NatsSettings;
use shared::protocol::{EnrollReply, EnrollRequest};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// File in the data dir holding the runner's credentials.
pub const CREDENTIALS_FILE: &str = "credentials.json";

const ENROLL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a credentials file of this runner ({message}); delete it to enroll again")]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(
        "this runner is not enrolled yet ({path} does not exist): set RUNNER_REGISTRATION_TOKEN to a registration \
         token an admin created (POST /api/v1/runners/registration-tokens)"
    )]
    NotEnrolled { path: PathBuf },
    #[error("cannot reach NATS to enroll: {0}")]
    Connect(String),
    #[error("enrollment failed: {0}")]
    Exchange(String),
    #[error("the control plane refused the enrollment: {0}")]
    Refused(String),
    #[error(
        "{setting} is `{given}` but this runner was enrolled as `{enrolled}` (in {path}); unset it, or delete \
         the credentials file and enroll again with a new registration token"
    )]
    Mismatch { setting: &'static str, given: String, enrolled: String, path: PathBuf },
}

/// What the runner proves itself with. `Debug` hides the secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub runner_id: String,
    pub pool: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("runner_id", &self.runner_id).field("pool", &self.pool).finish()
    }
}

pub fn credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CREDENTIALS_FILE)
}

/// The credentials kept in the data dir, if any.
pub fn load(data_dir: &Path) -> Result<Option<Credentials>, Error> {
    let path = credentials_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Read { path, source }),
    };
    let creds: Credentials =
        serde_json::from_str(&text).map_err(|e| Error::Corrupt { path: path.clone(), message: e.to_string() })?;
    if !shared::subjects::valid_runner_id(&creds.runner_id) || !shared::subjects::valid_pool(&creds.pool) {
        return Err(Error::Corrupt { path, message: "invalid runner id or pool".into() });
    }
    Ok(Some(creds))
}

/// Writes the credentials readable by the runner's user only (0600), write-then-rename
/// so a crash never leaves half a file.
pub fn save(data_dir: &Path, creds: &Credentials) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = credentials_path(data_dir);
    let tmp = data_dir.join(format!("{CREDENTIALS_FILE}.tmp"));
    let failed = |source| Error::Write { path: path.clone(), source };
    let _ = std::fs::remove_file(&tmp);
    let body = serde_json::to_vec_pretty(creds).map_err(|e| failed(std::io::Error::other(e)))?;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(failed)?;
    file.write_all(&body).and_then(|()| file.sync_all()).map_err(failed)?;
    std::fs::rename(&tmp, &path).map_err(failed)
}

/// What the runner was started with.
pub struct Wanted<'a> {
    pub data_dir: &'a Path,
    pub registration_token: Option<&'a str>,
    /// `RUNNER_ID` if set; else the default id kept in the data dir.
    pub runner_id: &'a str,
    pub runner_id_from_env: bool,
    /// `RUNNER_POOL` if set.
    pub pool: Option<&'a str>,
}

/// The kept credentials (checked against the settings), or new ones from enrolling.
pub async fn load_or_enroll(nats_url: &str, nats: &NatsSettings, wanted: &Wanted<'_>) -> Result<Credentials, Error> {
    let path = credentials_path(wanted.data_dir);
    if let Some(creds) = load(wanted.data_dir)? {
        if wanted.runner_id_from_env && wanted.runner_id != creds.runner_id {
            return Err(Error::Mismatch {
                setting: "RUNNER_ID",
                given: wanted.runner_id.to_owned(),
                enrolled: creds.runner_id,
                path,
            });
        }
        if let Some(pool) = wanted.pool
            && pool != creds.pool
        {
            return Err(Error::Mismatch { setting: "RUNNER_POOL", given: pool.to_owned(), enrolled: creds.pool, path });
        }
        if wanted.registration_token.is_some() {
            tracing::info!("already enrolled: RUNNER_REGISTRATION_TOKEN is not used again");
        }
        return Ok(creds);
    }
    let Some(token) = wanted.registration_token else { return Err(Error::NotEnrolled { path }) };
    let creds = enroll(nats_url, nats, token, wanted.runner_id, wanted.pool).await?;
    save(wanted.data_dir, &creds)?;
    tracing::info!(runner_id = %creds.runner_id, pool = %creds.pool, "enrolled; credentials kept in {}", path.display());
    Ok(creds)
}

async fn enroll(
    nats_url: &str,
    nats: &NatsSettings,
    token: &str,
    runner_id: &str,
    pool: Option<&str>,
) -> Result<Credentials, Error> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let user = format!("{}{nonce}", shared::subjects::ENROLL_USER_PREFIX);
    let options = connect_options(nats, &user)
        .map_err(|e| Error::Connect(e.to_string()))?
        .user_and_password(user.clone(), token.to_owned())
        .name(format!("fastflow-runner-enroll-{runner_id}"))
        .connection_timeout(Duration::from_secs(10));
    let client = options.connect(nats_url).await.map_err(|e| {
        let hint = if matches!(e.kind(), async_nats::ConnectErrorKind::AuthorizationViolation) {
            " (the registration token was refused: unknown, expired, used up or revoked?)"
        } else {
            ""
        };
        Error::Connect(format!("{e}{hint}"))
    })?;
    let request = EnrollRequest {
        token: token.to_owned(),
        runner_id: runner_id.to_owned(),
        pool: pool.map(str::to_owned),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let payload = serde_json::to_vec(&request).map_err(|e| Error::Exchange(e.to_string()))?;
    let request = async_nats::Request::new().payload(payload.into()).timeout(Some(ENROLL_TIMEOUT));
    let reply =
        client.send_request(nats.subjects.enroll(), request).await.map_err(|e| Error::Exchange(e.to_string()))?;
    let reply: EnrollReply =
        serde_json::from_slice(&reply.payload).map_err(|e| Error::Exchange(format!("unreadable reply: {e}")))?;
    let _ = client.drain().await;
    match reply {
        EnrollReply::Enrolled { runner_id: id, pool: granted, secret } => {
            if id != runner_id || pool.is_some_and(|p| p != granted) || !shared::subjects::valid_pool(&granted) {
                return Err(Error::Exchange(format!("the reply names runner `{id}` in pool `{granted}`")));
            }
            Ok(Credentials { runner_id: id, pool: granted, secret })
        }
        EnrollReply::Refused { reason } => Err(Error::Refused(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn credentials_are_kept_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("ff-creds-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert!(load(&dir).expect("no file yet").is_none());
        let creds = Credentials { runner_id: "r-1".into(), pool: "gpu".into(), secret: "s3cret".into() };
        save(&dir, &creds).expect("save");
        let mode = std::fs::metadata(credentials_path(&dir)).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = load(&dir).expect("load").expect("kept");
        assert_eq!((back.runner_id.as_str(), back.pool.as_str(), back.secret.as_str()), ("r-1", "gpu", "s3cret"));
        assert!(!format!("{back:?}").contains("s3cret"), "Debug hides the secret");
        std::fs::write(credentials_path(&dir), "{}").expect("corrupt");
        assert!(matches!(load(&dir), Err(Error::Corrupt { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
