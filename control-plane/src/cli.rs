//! The `user` and `token` commands of the binary: how the first admin and the first
//! API token exist without a web login (scripts, CI, benchmarks). They work on
//! `DATABASE_URL` directly (either backend), alongside a running control plane, and
//! write audit entries as the actor `cli`.

use crate::auth::{self, Role, audit, tokens, users};
use crate::config::{self, Config};
use crate::store::Store;
use anyhow::Context as _;
use chrono::Utc;
use std::io::{IsTerminal, Read};
use std::path::Path;

/// A command line the commands cannot use; `main` prints it with the usage (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

const CLI: audit::Actor<'static> = audit::Actor::System { name: "cli" };

/// The `--flag value` pairs and positional arguments of `args`.
struct Args {
    positional: Vec<String>,
    flags: Vec<(String, String)>,
}

impl Args {
    fn parse(args: &[String], known: &[&str]) -> anyhow::Result<Args> {
        let (mut positional, mut flags) = (Vec::new(), Vec::new());
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if let Some(flag) = arg.strip_prefix("--") {
                if !known.contains(&flag) {
                    return Err(usage(format!("unknown option `{arg}`")));
                }
                let value = rest.next().ok_or_else(|| usage(format!("`{arg}` needs a value")))?;
                flags.push((flag.to_owned(), value.clone()));
            } else {
                positional.push(arg.clone());
            }
        }
        Ok(Args { positional, flags })
    }

    fn flag(&self, name: &str) -> Option<&str> {
        self.flags.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn role(&self) -> anyhow::Result<Option<Role>> {
        self.flag("role")
            .map(|r| r.parse::<Role>().map_err(|_| usage(format!("unknown role `{r}`: use viewer, operator or admin"))))
            .transpose()
    }
}

/// `user create NAME --role R [--password-file PATH]`.
pub async fn user(config: &Config, args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("create") => {}
        Some(other) => return Err(usage(format!("unknown `user` command `{other}`"))),
        None => return Err(usage("`user` needs a command: create")),
    }
    let args = Args::parse(&args[1..], &["role", "password-file"])?;
    let [name] = args.positional.as_slice() else {
        return Err(usage("`user create` takes one NAME"));
    };
    let role = args.role()?.ok_or_else(|| usage("`user create` needs --role viewer|operator|admin"))?;
    let password = match args.flag("password-file") {
        Some(path) => read_password_file(Path::new(path))?,
        None => read_password_stdin()?,
    };
    let store = connect(config).await?;
    let request = users::NewUserRequest { username: name, password: &password, role };
    let user = users::create(&store, &request).await.map_err(|e| match e {
        auth::Error::WeakPassword { .. } | auth::Error::PasswordTooLong { .. } | auth::Error::InvalidUsername => {
            anyhow::anyhow!("{e}")
        }
        e => anyhow::Error::new(e).context("cannot create the user"),
    })?;
    let target = format!("user:{}", user.username);
    let details = serde_json::json!({ "role": user.role });
    record(&store, audit::Action::UserCreate, &target, Some(details)).await;
    eprintln!("created user `{}` ({})", user.username, user.role);
    Ok(())
}

/// `token create --user NAME --name TOKEN_NAME [--role R] [--expires-in 30d]`: the
/// token alone on stdout.
pub async fn token(config: &Config, args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("create") => {}
        Some(other) => return Err(usage(format!("unknown `token` command `{other}`"))),
        None => return Err(usage("`token` needs a command: create")),
    }
    let args = Args::parse(&args[1..], &["user", "name", "role", "expires-in"])?;
    if !args.positional.is_empty() {
        return Err(usage(format!("unexpected argument `{}`", args.positional[0])));
    }
    let username = args.flag("user").ok_or_else(|| usage("`token create` needs --user NAME"))?;
    let name = args.flag("name").ok_or_else(|| usage("`token create` needs --name TOKEN_NAME"))?;
    let role = args.role()?;
    let expires_at = match args.flag("expires-in") {
        Some(text) => {
            let after = config::parse_duration(text)
                .ok_or_else(|| usage(format!("--expires-in `{text}`: expected a duration such as 12h, 30d")))?;
            Some(Utc::now() + chrono::Duration::from_std(after).context("--expires-in is too long")?)
        }
        None => None,
    };
    let store = connect(config).await?;
    let owner = store
        .get_user_by_name(&users::normalize_username(username)?)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user `{username}`"))?;
    let request = tokens::NewTokenRequest { name, role, expires_at };
    let created = tokens::create(&store, &owner, owner.role, &request).await.context("cannot create the token")?;
    let target = format!("token:{}", created.info.name);
    let details = serde_json::json!({ "owner": owner.username, "role": created.info.role });
    record(&store, audit::Action::TokenCreate, &target, Some(details)).await;
    eprintln!(
        "created token `{}` for `{}` ({}{}); it is shown only now:",
        created.info.name,
        owner.username,
        created.info.role,
        created.info.expires_at.map(|at| format!(", expires {at}")).unwrap_or_default()
    );
    println!("{}", created.token.expose());
    Ok(())
}

async fn connect(config: &Config) -> anyhow::Result<Store> {
    Store::connect(&config.database_url)
        .await
        .with_context(|| format!("cannot open the store {}", config::redact_url(&config.database_url)))
}

/// Logs (never fails the command): the change itself is done.
async fn record(store: &Store, action: audit::Action, target: &str, details: Option<serde_json::Value>) {
    let entry = audit::Entry {
        actor: CLI,
        client_addr: None,
        action,
        target: Some(target),
        outcome: audit::Outcome::Ok,
        details,
    };
    if let Err(e) = audit::record(store, entry).await {
        tracing::warn!(error = %e, action = %action, "cannot write the audit entry");
    }
}

/// Removes one trailing newline (`\n` or `\r\n`), nothing else: spaces are part of a password.
fn strip_one_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

fn read_password_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--password-file {}", path.display()))?;
    Ok(strip_one_newline(text))
}

fn read_password_stdin() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        // Shown as typed: no terminal crate here. Prefer --password-file or a pipe.
        eprintln!("password (at least {} characters, then Enter):", auth::passwords::MIN_LENGTH);
        let mut line = String::new();
        stdin.read_line(&mut line).context("reading the password from stdin")?;
        return Ok(strip_one_newline(line));
    }
    let mut text = String::new();
    stdin.lock().read_to_string(&mut text).context("reading the password from stdin")?;
    Ok(strip_one_newline(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_trailing_newline_is_removed() {
        assert_eq!(strip_one_newline("secret pass \n".into()), "secret pass ");
        assert_eq!(strip_one_newline("pw\r\n".into()), "pw");
        assert_eq!(strip_one_newline("pw\n\n".into()), "pw\n");
        assert_eq!(strip_one_newline("pw".into()), "pw");
    }

    #[test]
    fn flags_and_positionals() {
        let args: Vec<String> = ["alice", "--role", "admin"].iter().map(|s| s.to_string()).collect();
        let parsed = Args::parse(&args, &["role"]).expect("parse");
        assert_eq!(parsed.positional, ["alice"]);
        assert_eq!(parsed.role().ok().flatten(), Some(Role::Admin));
        assert!(Args::parse(&args, &[]).is_err());
        let bad: Vec<String> = ["--role"].iter().map(|s| s.to_string()).collect();
        assert!(Args::parse(&bad, &["role"]).is_err());
    }
}
