//! The run policy both backends apply, written once: what blocks a claim, what
//! a retry resets, which statuses are final or active, and the stored strings of
//! every status-like value. The backends keep only what their dialect forces;
//! their SQL names these values through [`fill`] placeholders, never as literals.

use super::runs::Claim;
use serde::{Deserialize, Serialize};
use shared::status::ParseError;
use shared::{FailureReason, RunStatus};
use std::fmt;
use std::str::FromStr;

/// A closed set of values stored (and sent in JSON) as fixed lowercase strings.
macro_rules! stored_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        // Ordered as declared (roles rank by it).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseError { kind: $kind, value: s.to_owned() }),
                }
            }
        }
    };
}

stored_enum!(
    /// What started a run. Only the API does today; schedules and webhooks will be
    /// further variants.
    Trigger, "trigger" {
        Api => "api",
    }
);

stored_enum!(
    /// Why a queued run has not started yet.
    WaitingReason, "waiting reason" {
        /// The control plane's `MAX_CONCURRENT_RUNS` is reached.
        MaxConcurrentRuns => "max_concurrent_runs",
        /// The pipeline's `max_concurrent` is reached.
        PipelineMaxConcurrent => "pipeline_max_concurrent",
        /// A retried attempt waits out its back-off.
        RetryBackoff => "retry_backoff",
    }
);

stored_enum!(
    /// What a user (or a token) may do; ordered, each role includes the ones before it.
    Role, "role" {
        /// Reads pipelines, runs, logs, runners, schedules.
        Viewer => "viewer",
        /// A viewer who also triggers, cancels and reruns runs and manages schedules.
        Operator => "operator",
        /// Everything, including users, other users' tokens and the audit log.
        Admin => "admin",
    }
);

stored_enum!(
    /// Who did what an audit event records.
    ActorKind, "actor kind" {
        User => "user",
        Token => "token",
        System => "system",
        Anonymous => "anonymous",
    }
);

stored_enum!(
    /// How an audited action ended.
    AuditOutcome, "audit outcome" {
        Ok => "ok",
        /// Refused: bad credentials, too few rights, throttled.
        Denied => "denied",
        /// Attempted but failed (an invalid request, an internal error).
        Failed => "failed",
    }
);

/// SQL, true for a `users` row that is not the last enabled admin: it is no enabled
/// admin, or another enabled admin exists. Guards deletes and, with [`stays_admin!`],
/// updates. Evaluated inside the statement (and, on Postgres, under the users lock), so
/// two concurrent demotions cannot both pass. A macro, so it can sit in `sql!`'s `concat!`.
macro_rules! not_the_last_admin {
    () => {
        "(not (role = {role.admin} and not disabled)
          or exists (select 1 from users other
                     where other.role = {role.admin} and not other.disabled and other.id <> users.id))"
    };
}
pub(crate) use not_the_last_admin;

/// SQL, true when an update (`$2` role, `$3` disabled; null: unchanged) leaves the user
/// an enabled admin.
macro_rules! stays_admin {
    () => {
        "(coalesce($2, role) = {role.admin} and not coalesce($3, disabled))"
    };
}
pub(crate) use stays_admin;

/// The concurrency limit a claim would exceed, given the runs running now
/// (overall, and of the claim's pipeline); `None` if there is room.
pub(super) fn limit_blocks(claim: &Claim<'_>, running: i64, running_here: i64) -> Option<WaitingReason> {
    if claim.max_running.is_some_and(|max| running >= max) {
        Some(WaitingReason::MaxConcurrentRuns)
    } else if claim.max_running_of_pipeline.is_some_and(|max| running_here >= max) {
        Some(WaitingReason::PipelineMaxConcurrent)
    } else {
        None
    }
}

/// Why a claim whose update took nothing is refused: the run is still queued with this
/// very attempt and backing off (it stays queued, marked), or it is gone.
pub(super) fn not_granted(backing_off_attempt: Option<i32>, claim: &Claim<'_>) -> Option<WaitingReason> {
    (backing_off_attempt == Some(claim.attempt)).then_some(WaitingReason::RetryBackoff)
}

/// A recorded attempt's status: only a final one can be recorded.
pub(super) fn attempt_status(s: &str) -> Result<RunStatus, ParseError> {
    let status: RunStatus = s.parse()?;
    if status.is_final() {
        Ok(status)
    } else {
        Err(ParseError { kind: "attempt status (a final one)", value: s.to_owned() })
    }
}

/// The columns a retry resets (the attempt's own state), plus the marks of the next
/// attempt: queued, numbered one up, backing off. `not_before` is the backend's (its clock).
const RETRY_RESETS: &str = "status = {status.queued}, attempt = attempt + 1, runner_id = null,
     lease_expires_at = null, cancel_requested_at = null, cancel_force = false,
     exit_code = null, failure_reason = null, error_message = null, log_key = null,
     log_size_bytes = 0, started_at = null, finished_at = null,
     waiting_reason = {waiting.retry_backoff}";

/// What a granted claim sets besides the lease and start time (the backend's clock):
/// running, for this runner (`$3` in both backends), with a fresh fencing token
/// (`{fresh_token}`, per backend).
const GRANT: &str = "status = {status.running}, runner_id = $3, fencing_token = {fresh_token}, waiting_reason = null";

/// A fresh fencing token: 63 random bits, not a counter. The token is the holder's
/// secret (its log batches and reports carry it): a runner that knows a run's attempt
/// number cannot guess it. Postgres: from `gen_random_uuid()` (the OS CSPRNG); SQLite:
/// `random()` (its CSPRNG, seeded by the OS), for the single node's in-process runner.
const FRESH_TOKEN_POSTGRES: &str =
    "(('x' || substr(md5(gen_random_uuid()::text), 1, 16))::bit(64)::bigint & 9223372036854775807)";
const FRESH_TOKEN_SQLITE: &str = "(random() & 9223372036854775807)";

/// Quotes a stored string as an SQL literal (the values are fixed lowercase words).
fn quoted(s: &str) -> String {
    format!("'{s}'")
}

/// An SQL list of statuses, e.g. `('queued', 'running')`.
fn list(statuses: impl Iterator<Item = RunStatus>) -> String {
    let items: Vec<String> = statuses.map(|s| quoted(s.as_str())).collect();
    format!("({})", items.join(", "))
}

/// Every placeholder [`fill`] knows and its text.
fn placeholders() -> Vec<(String, String)> {
    let mut all = Vec::new();
    all.extend(RunStatus::ALL.iter().map(|s| (format!("{{status.{s}}}"), quoted(s.as_str()))));
    all.extend(FailureReason::ALL.iter().map(|r| (format!("{{reason.{r}}}"), quoted(r.as_str()))));
    all.extend(WaitingReason::ALL.iter().map(|w| (format!("{{waiting.{w}}}"), quoted(w.as_str()))));
    all.extend(Trigger::ALL.iter().map(|t| (format!("{{trigger.{t}}}"), quoted(t.as_str()))));
    all.extend(Role::ALL.iter().map(|r| (format!("{{role.{r}}}"), quoted(r.as_str()))));
    all.push(("{finals}".into(), list(RunStatus::ALL.iter().copied().filter(|s| s.is_final()))));
    all.push(("{active}".into(), list([RunStatus::Queued, RunStatus::Running].into_iter())));
    all
}

/// An SQL statement with its policy placeholders filled in: `{retry_resets}`, `{grant.postgres}`, `{grant.sqlite}`,
/// `{finals}` and `{active}` (status lists), `{status.<s>}`, `{reason.<r>}`,
/// `{waiting.<w>}`, `{trigger.<t>}` and `{role.<r>}` (quoted literals). Literals, not binds, so the
/// planners can match the partial indexes on status. Used through `sql!`, once per statement.
pub(crate) fn fill(template: &str) -> String {
    let mut out = template
        .replace("{retry_resets}", RETRY_RESETS)
        .replace("{grant.postgres}", &GRANT.replace("{fresh_token}", FRESH_TOKEN_POSTGRES))
        .replace("{grant.sqlite}", &GRANT.replace("{fresh_token}", FRESH_TOKEN_SQLITE));
    for (placeholder, text) in placeholders() {
        out = out.replace(&placeholder, &text);
    }
    debug_assert!(!out.contains('{'), "an unknown placeholder in: {out}");
    out
}

/// A `&'static str` statement from literal parts (`concat!`) or a `const`, its placeholders filled in
/// ([`policy::fill`](crate::store::policy::fill)) the first time it is used.
macro_rules! sql {
    // A `const` of this module.
    (const $statement:expr) => {{
        static SQL: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| $crate::store::policy::fill($statement));
        SQL.as_str()
    }};
    ($($part:expr),+ $(,)?) => {{
        static SQL: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| $crate::store::policy::fill(concat!($($part),+)));
        SQL.as_str()
    }};
}
pub(crate) use sql;

/// Runs running now, overall and of one pipeline (`$1`): what a limited claim checks.
pub(super) const COUNT_RUNNING: &str =
    "select count(*), count(*) filter (where pipeline_name = $1) from runs where status = {status.running}";

/// Runs executing or waiting now, overall and of one pipeline (`$1`).
pub(super) const COUNT_ACTIVE: &str =
    "select count(*), count(*) filter (where pipeline_name = $1) from runs where status in {active}";

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use uuid::Uuid;

    fn claim(max_running: Option<i64>, max_running_of_pipeline: Option<i64>) -> Claim<'static> {
        Claim {
            run_id: Uuid::nil(),
            attempt: 2,
            runner_id: "r",
            pipeline_name: "p",
            lease: Duration::from_secs(1),
            max_running,
            max_running_of_pipeline,
        }
    }

    #[test]
    fn stored_enums_round_trip_through_text_and_json() {
        for t in Trigger::ALL {
            assert_eq!(t.as_str().parse::<Trigger>().ok(), Some(*t));
            assert_eq!(serde_json::to_string(t).ok(), Some(format!("\"{t}\"")));
            assert_eq!(serde_json::from_str::<Trigger>(&format!("\"{t}\"")).ok(), Some(*t));
        }
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().ok(), Some(*r));
            assert_eq!(serde_json::from_str::<Role>(&format!("\"{r}\"")).ok(), Some(*r));
        }
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for w in WaitingReason::ALL {
            assert_eq!(w.as_str().parse::<WaitingReason>().ok(), Some(*w));
            assert_eq!(serde_json::to_string(w).ok(), Some(format!("\"{w}\"")));
            assert_eq!(serde_json::from_str::<WaitingReason>(&format!("\"{w}\"")).ok(), Some(*w));
        }
        // The strings the API has always sent.
        assert_eq!(Trigger::Api.as_str(), "api");
        let reasons: Vec<&str> = WaitingReason::ALL.iter().map(|w| w.as_str()).collect();
        assert_eq!(reasons, ["max_concurrent_runs", "pipeline_max_concurrent", "retry_backoff"]);
        assert!("Api".parse::<Trigger>().is_err());
        assert!("backoff".parse::<WaitingReason>().is_err());
    }

    #[test]
    fn the_overall_limit_is_checked_before_the_pipelines() {
        assert_eq!(limit_blocks(&claim(None, None), 100, 100), None);
        assert_eq!(limit_blocks(&claim(Some(2), None), 1, 1), None);
        assert_eq!(limit_blocks(&claim(Some(2), None), 2, 0), Some(WaitingReason::MaxConcurrentRuns));
        assert_eq!(limit_blocks(&claim(None, Some(1)), 5, 0), None);
        assert_eq!(limit_blocks(&claim(None, Some(1)), 5, 1), Some(WaitingReason::PipelineMaxConcurrent));
        assert_eq!(limit_blocks(&claim(Some(1), Some(1)), 1, 1), Some(WaitingReason::MaxConcurrentRuns));
    }

    #[test]
    fn only_the_same_attempt_backing_off_waits() {
        assert_eq!(not_granted(Some(2), &claim(None, None)), Some(WaitingReason::RetryBackoff));
        assert_eq!(not_granted(Some(3), &claim(None, None)), None, "a later attempt: this claim is stale");
        assert_eq!(not_granted(None, &claim(None, None)), None);
    }

    #[test]
    fn recorded_attempts_are_final() {
        assert_eq!(attempt_status("failed").ok(), Some(RunStatus::Failed));
        assert!(attempt_status("running").is_err());
        assert!(attempt_status("done").is_err());
    }

    #[test]
    fn placeholders_become_the_stored_strings() {
        assert_eq!(
            fill("where status in {finals} and s = {status.queued} and r = {reason.no_runner} and a in {active}"),
            "where status in ('success', 'failed', 'cancelled') and s = 'queued' and r = 'no_runner' \
             and a in ('queued', 'running')"
        );
        assert_eq!(fill("w = {waiting.retry_backoff}, t = {trigger.api}"), "w = 'retry_backoff', t = 'api'");
        let resets = fill("{retry_resets}");
        for column in
            ["attempt = attempt + 1", "runner_id = null", "cancel_force = false", "waiting_reason = 'retry_backoff'"]
        {
            assert!(resets.contains(column), "{column} in {resets}");
        }
        assert!(!fill(COUNT_ACTIVE).contains('{'));
        assert!(fill("{grant.sqlite}").contains("fencing_token = (random()"));
        assert!(fill("{grant.postgres}").contains("gen_random_uuid()"));
    }
}
