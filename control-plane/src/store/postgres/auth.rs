//! Users, sessions, API tokens and login failures.

use super::{PgStore, secs};
use crate::store::auth::{ApiToken, Lockout, LoginFailure, NewSession, NewToken, NewUser, Session, User, UserUpdate};
use crate::store::policy::{not_the_last_admin, sql, stays_admin};
use crate::store::rows::{session_with_user, token_with_user};
use crate::store::{Error, conflict};
use sqlx::{Postgres, Transaction};
use std::time::Duration;
use uuid::Uuid;

/// Arbitrary constant naming the advisory lock that serialises changes of users, so the
/// last-admin guard of one cannot miss a concurrent change of another admin.
const USERS_LOCK: i64 = 0x4666_5573_6572_7321; // "FfUsers!"

impl PgStore {
    async fn lock_users(&self) -> Result<Transaction<'static, Postgres>, Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1)").bind(USERS_LOCK).execute(&mut *tx).await?;
        Ok(tx)
    }

    pub(in crate::store) async fn create_user(&self, new: &NewUser<'_>) -> Result<User, Error> {
        sqlx::query_as::<_, User>(concat!(
            "insert into users (id, username, password_hash, role) values ($1, $2, $3, $4) returning ",
            user_columns!()
        ))
        .bind(new.id)
        .bind(new.username)
        .bind(new.password_hash)
        .bind(new.role.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(conflict("username"))
    }

    pub(in crate::store) async fn get_user(&self, id: Uuid) -> Result<Option<User>, Error> {
        let user = sqlx::query_as::<_, User>(concat!("select ", user_columns!(), " from users where id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(user)
    }

    pub(in crate::store) async fn get_user_by_name(&self, username: &str) -> Result<Option<User>, Error> {
        let user = sqlx::query_as::<_, User>(concat!(
            "select ",
            user_columns!(),
            " from users where lower(username) = lower($1)"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        Ok(user)
    }

    pub(in crate::store) async fn list_users(&self) -> Result<Vec<User>, Error> {
        let users = sqlx::query_as::<_, User>(concat!("select ", user_columns!(), " from users order by username"))
            .fetch_all(&self.pool)
            .await?;
        Ok(users)
    }

    pub(in crate::store) async fn count_users(&self) -> Result<i64, Error> {
        let (n,): (i64,) = sqlx::query_as("select count(*) from users").fetch_one(&self.pool).await?;
        Ok(n)
    }

    pub(in crate::store) async fn update_user(&self, id: Uuid, u: &UserUpdate<'_>) -> Result<Option<User>, Error> {
        let mut tx = self.lock_users().await?;
        let user = sqlx::query_as::<_, User>(sql!(
            "update users set role = coalesce($2, role), disabled = coalesce($3, disabled),
                 password_hash = coalesce($4, password_hash), updated_at = now(), credentials_changed_at = now()
             where id = $1 and (",
            stays_admin!(),
            " or ",
            not_the_last_admin!(),
            ") returning ",
            user_columns!()
        ))
        .bind(id)
        .bind(u.role.map(|r| r.as_str()))
        .bind(u.disabled)
        .bind(u.password_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user) = user else {
            // Nothing updated: the guard refused, or there is no such user.
            let exists = sqlx::query("select 1 from users where id = $1").bind(id).fetch_optional(&mut *tx).await?;
            return if exists.is_some() { Err(Error::LastAdmin) } else { Ok(None) };
        };
        sqlx::query("delete from sessions where user_id = $1 and ($2::text is null or id_hash <> $2)")
            .bind(id)
            .bind(u.keep_session)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    pub(in crate::store) async fn delete_user(&self, id: Uuid) -> Result<bool, Error> {
        let mut tx = self.lock_users().await?;
        let done = sqlx::query(sql!("delete from users where id = $1 and ", not_the_last_admin!()))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            let exists = sqlx::query("select 1 from users where id = $1").bind(id).fetch_optional(&mut *tx).await?;
            return if exists.is_some() { Err(Error::LastAdmin) } else { Ok(false) };
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(in crate::store) async fn create_session(&self, new: &NewSession<'_>) -> Result<Session, Error> {
        let session = sqlx::query_as::<_, Session>(concat!(
            "insert into sessions (id_hash, user_id, csrf_token, expires_at, client_addr, user_agent)
             values ($1, $2, $3, $4, $5, $6) returning ",
            session_columns!()
        ))
        .bind(new.id_hash)
        .bind(new.user_id)
        .bind(new.csrf_token)
        .bind(new.expires_at)
        .bind(new.client_addr)
        .bind(new.user_agent)
        .fetch_one(&self.pool)
        .await
        .map_err(conflict("session"))?;
        Ok(session)
    }

    pub(in crate::store) async fn find_session_by_hash(&self, id_hash: &str) -> Result<Option<(Session, User)>, Error> {
        let row = sqlx::query(concat!(
            "select ",
            session_columns!("s."),
            ", ",
            user_columns!(joined),
            " from sessions s join users u on u.id = s.user_id where s.id_hash = $1 and s.expires_at > now()"
        ))
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_with_user).transpose()
    }

    pub(in crate::store) async fn touch_session(&self, id_hash: &str) -> Result<bool, Error> {
        let done = sqlx::query("update sessions set last_seen_at = now() where id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn delete_session(&self, id_hash: &str) -> Result<bool, Error> {
        let done = sqlx::query("delete from sessions where id_hash = $1").bind(id_hash).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn delete_user_sessions(
        &self,
        user_id: Uuid,
        except: Option<&str>,
    ) -> Result<u64, Error> {
        let done = sqlx::query("delete from sessions where user_id = $1 and ($2::text is null or id_hash <> $2)")
            .bind(user_id)
            .bind(except)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub(in crate::store) async fn purge_expired_sessions(&self, idle: Duration) -> Result<u64, Error> {
        let done = sqlx::query(
            "delete from sessions where expires_at <= now() or last_seen_at < now() - make_interval(secs => $1)",
        )
        .bind(secs(idle))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub(in crate::store) async fn create_token(&self, new: &NewToken<'_>) -> Result<ApiToken, Error> {
        sqlx::query_as::<_, ApiToken>(concat!(
            "insert into api_tokens (id, name, token_hash, user_id, role, expires_at)
             values ($1, $2, $3, $4, $5, $6) returning ",
            token_columns!()
        ))
        .bind(new.id)
        .bind(new.name)
        .bind(new.token_hash)
        .bind(new.user_id)
        .bind(new.role.as_str())
        .bind(new.expires_at)
        .fetch_one(&self.pool)
        .await
        .map_err(conflict("token name"))
    }

    pub(in crate::store) async fn find_token_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<(ApiToken, User)>, Error> {
        let row = sqlx::query(concat!(
            "select ",
            token_columns!("t."),
            ", ",
            user_columns!(joined),
            " from api_tokens t join users u on u.id = t.user_id
             where t.token_hash = $1 and t.revoked_at is null and (t.expires_at is null or t.expires_at > now())"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(token_with_user).transpose()
    }

    pub(in crate::store) async fn get_token(&self, id: Uuid) -> Result<Option<ApiToken>, Error> {
        let token =
            sqlx::query_as::<_, ApiToken>(concat!("select ", token_columns!(), " from api_tokens where id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(token)
    }

    pub(in crate::store) async fn list_tokens(&self, user_id: Option<Uuid>) -> Result<Vec<ApiToken>, Error> {
        let tokens = sqlx::query_as::<_, ApiToken>(concat!(
            "select ",
            token_columns!(),
            " from api_tokens where ($1::uuid is null or user_id = $1) order by created_at desc, id desc"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(tokens)
    }

    pub(in crate::store) async fn revoke_token(&self, id: Uuid) -> Result<bool, Error> {
        let done = sqlx::query("update api_tokens set revoked_at = now() where id = $1 and revoked_at is null")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn touch_token_last_used(&self, id: Uuid) -> Result<(), Error> {
        sqlx::query("update api_tokens set last_used_at = now() where id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// The upsert locks the row until the commit, so the lock-out set after it belongs to
    /// the count it returned.
    pub(in crate::store) async fn record_login_failure(
        &self,
        key: &str,
        reset_after: Duration,
        lockout: Lockout,
    ) -> Result<LoginFailure, Error> {
        let mut tx = self.pool.begin().await?;
        let (failures,): (i32,) = sqlx::query_as(
            "insert into login_failures as f (key, failures, last_failure_at) values ($1, 1, now())
             on conflict (key) do update set
                 failures = case when f.last_failure_at < now() - make_interval(secs => $2) then 1
                                 else f.failures + 1 end,
                 last_failure_at = now()
             returning failures",
        )
        .bind(key)
        .bind(secs(reset_after))
        .fetch_one(&mut *tx)
        .await?;
        let failure = sqlx::query_as::<_, LoginFailure>(concat!(
            "update login_failures set locked_until = coalesce(now() + make_interval(secs => $2::float8), locked_until)
             where key = $1 returning ",
            login_failure_columns!()
        ))
        .bind(key)
        .bind(lockout(failures).map(secs))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(failure)
    }

    pub(in crate::store) async fn login_failure(&self, key: &str) -> Result<Option<LoginFailure>, Error> {
        let failure = sqlx::query_as::<_, LoginFailure>(concat!(
            "select ",
            login_failure_columns!(),
            " from login_failures where key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(failure)
    }

    pub(in crate::store) async fn clear_login_failures(&self, key: &str) -> Result<(), Error> {
        sqlx::query("delete from login_failures where key = $1").bind(key).execute(&self.pool).await?;
        Ok(())
    }

    pub(in crate::store) async fn purge_login_failures(&self, older_than: Duration) -> Result<u64, Error> {
        let done = sqlx::query(
            "delete from login_failures where last_failure_at < now() - make_interval(secs => $1)
               and (locked_until is null or locked_until < now())",
        )
        .bind(secs(older_than))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
