//! The NATS auth callout: the NATS server asks the control plane about every client
//! that is not one of its own configured users (`auth_callout { users }`), and the
//! control plane answers with a user JWT, signed by the callout account key, that
//! carries the client's permissions, or with an error (the server then refuses the
//! connection). Every replica answers, in one queue group.
//!
//! * `enroll-<nonce>` with a usable registration token: may only ask to enroll.
//! * an enrolled, unrevoked runner id with its secret: its own subjects only.
//! * anyone else: refused, and logged with the name and address it gave.

use super::permissions::{self, Permissions};
use crate::context::Context;
use futures::StreamExt;
use nats_jwt_rs::authorization::AuthResponse;
use nats_jwt_rs::types::Permission;
use nats_jwt_rs::user::User;
use nats_jwt_rs::{Claim, Claims};
use serde::Deserialize;
use shared::subjects::{self, Subjects};
use std::sync::Arc;

/// The example server configuration (`deploy/nats/nats-server.conf`).
const SERVER_CONFIG_TEMPLATE: &str = include_str!("../../../deploy/nats/nats-server.conf");

/// `control-plane nats-setup`: a fresh callout key pair, and the example server
/// configuration with its public key and a random control-plane password filled in.
pub fn setup_text() -> Result<String, Error> {
    let key = nkeys::KeyPair::new_account();
    let seed = key.seed().map_err(|e| Error::Key(e.to_string()))?;
    let password = crate::auth::secrets::random_password().into_inner();
    let config = SERVER_CONFIG_TEMPLATE
        .replace("$ISSUER_PUBLIC_KEY", &key.public_key())
        .replace("$CONTROL_PLANE_PASSWORD", &password);
    Ok(format!(
        "# Every control plane's environment (keep both secret):\n\
         #   NATS_AUTH_CALLOUT_SEED={seed}\n\
         #   NATS_URL=tls://control-plane:{password}@<nats-host>:4222\n\
         #   NATS_TLS_CA=<the CA that signed the server certificate>\n\
         # The NATS server's configuration (adjust the paths):\n\n{config}"
    ))
}

/// The parts of the server's authorization request the decision needs (the server
/// omits empty fields, so every one has a default).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
struct AuthRequest {
    #[serde(default)]
    server_id: ServerId,
    #[serde(default)]
    user_nkey: String,
    #[serde(default)]
    client_info: ClientInfo,
    #[serde(default)]
    connect_opts: ConnectOpts,
    #[serde(rename = "type", default)]
    claim_type: String,
}

impl Claim for AuthRequest {
    fn validate() {}
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
struct ServerId {
    #[serde(default)]
    id: String,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
struct ClientInfo {
    #[serde(default)]
    host: String,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
struct ConnectOpts {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    pass: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("NATS_AUTH_CALLOUT_SEED: {0}")]
    Key(String),
    #[error("cannot subscribe to the auth callout subject: {0}")]
    Subscribe(String),
}

/// Signs the answers; shared by the tasks answering requests.
struct Signer {
    key: nkeys::KeyPair,
    account: String,
    subjects: Subjects,
}

/// Answers the server's authorization requests until the context shuts down.
pub async fn serve(ctx: Context, client: async_nats::Client) -> Result<(), Error> {
    let Some(security) = ctx.config.nats.clone() else { return Ok(()) };
    let key = nkeys::KeyPair::from_seed(&security.callout_seed).map_err(|e| Error::Key(e.to_string()))?;
    let signer = Arc::new(Signer { key, account: security.callout_account, subjects: security.settings.subjects });
    // One queue group per deployment: every deployment sharing the server sees each
    // request, and the one that knows the client answers (see `answer`).
    let group = match signer.subjects.prefix() {
        None => subjects::CONTROL_PLANE_QUEUE.to_owned(),
        Some(prefix) => format!("{}-{prefix}", subjects::CONTROL_PLANE_QUEUE),
    };
    let mut requests =
        client.queue_subscribe(subjects::AUTH_CALLOUT, group).await.map_err(|e| Error::Subscribe(e.to_string()))?;
    tracing::info!(issuer = %signer.key.public_key(), "answering the NATS server's auth callout");
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            msg = requests.next() => {
                let Some(msg) = msg else { return Ok(()) };
                let (ctx2, client, signer) = (ctx.clone(), client.clone(), signer.clone());
                ctx.spawn(async move {
                    let Some(reply) = msg.reply.clone() else { return };
                    if let Some(answer) = answer(&ctx2, &signer, &msg.payload).await
                        && let Err(e) = client.publish(reply, answer.into()).await
                    {
                        tracing::warn!(error = %e, "could not answer an auth callout request");
                    }
                });
            }
        }
    }
}

/// The signed answer to one request, or `None` for a request that is not one (not
/// signed by a server, undecodable): the server then times out and refuses the client.
async fn answer(ctx: &Context, signer: &Signer, payload: &[u8]) -> Option<String> {
    let token = std::str::from_utf8(payload).ok()?;
    let request = match Claims::<AuthRequest>::decode(token) {
        Ok(claims) if claims.nats.claim_type == "authorization_request" && claims.iss.starts_with('N') => claims,
        Ok(_) | Err(_) => {
            tracing::warn!("ignoring an auth callout request not signed by a NATS server");
            return None;
        }
    };
    let req = &request.nats;
    let user = req.connect_opts.user.clone().unwrap_or_default();
    let pass = req.connect_opts.pass.clone().unwrap_or_default();
    let decision = decide(ctx, signer, &user, &pass).await;
    let mut response = AuthResponse::generic_claim(req.user_nkey.clone());
    response.aud = Some(req.server_id.id.clone());
    match decision {
        Ok(permissions) => {
            let mut claims = User::new_claims(user.clone(), req.user_nkey.clone());
            claims.aud = Some(signer.account.clone());
            let p = &mut claims.nats.permissions.permissions;
            p.publish = Permission { allow: permissions.publish, deny: vec![] };
            p.subscribe = Permission { allow: permissions.subscribe, deny: vec![] };
            match claims.encode(&signer.key) {
                Ok(jwt) => response.nats.jwt = jwt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot sign a user JWT");
                    response.nats.error = "internal error".into();
                }
            }
        }
        Err(reason) => {
            if signer.subjects.prefix().is_some() {
                // Other deployments (other prefixes) may share this server and know the
                // client: only a positive answer is given, and the server refuses the
                // client when no deployment answers in time.
                tracing::info!(user = %user, client = %req.client_info.host, reason, "NATS client not ours; not answering");
                return None;
            }
            tracing::warn!(user = %user, client = %req.client_info.host, reason, "NATS connection refused");
            response.nats.error = "not authorized".into();
        }
    }
    match response.encode(&signer.key) {
        Ok(signed) => Some(signed),
        Err(e) => {
            tracing::error!(error = %e, "cannot sign an auth callout response");
            None
        }
    }
}

/// The permissions of `user` presenting `pass`, or why it is refused (for the log only).
async fn decide(ctx: &Context, signer: &Signer, user: &str, pass: &str) -> Result<Permissions, &'static str> {
    if let Some(nonce) = user.strip_prefix(subjects::ENROLL_USER_PREFIX) {
        if !(16..=64).contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("malformed enrollment user");
        }
        return match super::registration_token_usable(&ctx.store, pass).await {
            Ok(Ok(())) => Ok(permissions::enrolling(&signer.subjects, user)),
            Ok(Err(refusal)) => {
                tracing::warn!(user, %refusal, "registration token refused");
                Err("registration token refused")
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a registration token");
                Err("store unavailable")
            }
        };
    }
    match super::authenticate_runner(&ctx.store, user, pass).await {
        Ok(Some(enrollment)) => Ok(permissions::runner(&signer.subjects, &enrollment.runner_id, &enrollment.pool)),
        Ok(None) => Err("unknown or revoked runner, or wrong secret"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check runner credentials");
            Err("store unavailable")
        }
    }
}
