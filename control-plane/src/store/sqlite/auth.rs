//! Users, sessions, API tokens and login failures. Every write is on the one writer
//! connection, so the last-admin guard inside a statement sees every earlier change.

use super::{SqliteStore, micros, now, text};
use crate::store::auth::{ApiToken, Lockout, LoginFailure, NewSession, NewToken, NewUser, Session, User, UserUpdate};
use crate::store::policy::{not_the_last_admin, sql, stays_admin};
use crate::store::rows::{session_with_user, token_with_user};
use crate::store::{Error, conflict};
use sqlx::SqliteConnection;
use std::time::Duration;
use uuid::Uuid;

impl SqliteStore {
    pub(in crate::store) async fn create_user(&self, new: &NewUser<'_>) -> Result<User, Error> {
        sqlx::query_as::<_, User>(concat!(
            "insert into users (id, username, password_hash, role, created_at, updated_at, credentials_changed_at)
             values ($1, $2, $3, $4, $5, $5, $5) returning ",
            user_columns!()
        ))
        .bind(text(new.id))
        .bind(new.username)
        .bind(new.password_hash)
        .bind(new.role.as_str())
        .bind(now())
        .fetch_one(&self.writer)
        .await
        .map_err(conflict("username"))
    }

    pub(in crate::store) async fn get_user(&self, id: Uuid) -> Result<Option<User>, Error> {
        let user = sqlx::query_as::<_, User>(concat!("select ", user_columns!(), " from users where id = $1"))
            .bind(text(id))
            .fetch_optional(&self.reader)
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
        .fetch_optional(&self.reader)
        .await?;
        Ok(user)
    }

    pub(in crate::store) async fn list_users(&self) -> Result<Vec<User>, Error> {
        let users = sqlx::query_as::<_, User>(concat!("select ", user_columns!(), " from users order by username"))
            .fetch_all(&self.reader)
            .await?;
        Ok(users)
    }

    pub(in crate::store) async fn count_users(&self) -> Result<i64, Error> {
        let (n,): (i64,) = sqlx::query_as("select count(*) from users").fetch_one(&self.reader).await?;
        Ok(n)
    }

    pub(in crate::store) async fn update_user(&self, id: Uuid, u: &UserUpdate<'_>) -> Result<Option<User>, Error> {
        let (role, disabled, password_hash, keep) = (
            u.role.map(|r| r.as_str()),
            u.disabled,
            u.password_hash.map(str::to_owned),
            u.keep_session.map(str::to_owned),
        );
        self.write_transaction(async move |conn: &mut SqliteConnection| {
            let user = sqlx::query_as::<_, User>(sql!(
                "update users set role = coalesce($2, role), disabled = coalesce($3, disabled),
                     password_hash = coalesce($4, password_hash), updated_at = $5, credentials_changed_at = $5
                 where id = $1 and (",
                stays_admin!(),
                " or ",
                not_the_last_admin!(),
                ") returning ",
                user_columns!()
            ))
            .bind(text(id))
            .bind(role)
            .bind(disabled)
            .bind(password_hash)
            .bind(now())
            .fetch_optional(&mut *conn)
            .await?;
            let Some(user) = user else {
                // Nothing updated: the guard refused, or there is no such user.
                let exists =
                    sqlx::query("select 1 from users where id = $1").bind(text(id)).fetch_optional(&mut *conn).await?;
                return if exists.is_some() { Err(Error::LastAdmin) } else { Ok(None) };
            };
            sqlx::query("delete from sessions where user_id = $1 and ($2 is null or id_hash <> $2)")
                .bind(text(id))
                .bind(keep)
                .execute(&mut *conn)
                .await?;
            Ok(Some(user))
        })
        .await
    }

    pub(in crate::store) async fn delete_user(&self, id: Uuid) -> Result<bool, Error> {
        self.write_transaction(async move |conn: &mut SqliteConnection| {
            let done = sqlx::query(sql!("delete from users where id = $1 and ", not_the_last_admin!()))
                .bind(text(id))
                .execute(&mut *conn)
                .await?;
            if done.rows_affected() == 0 {
                let exists =
                    sqlx::query("select 1 from users where id = $1").bind(text(id)).fetch_optional(&mut *conn).await?;
                return if exists.is_some() { Err(Error::LastAdmin) } else { Ok(false) };
            }
            Ok(true)
        })
        .await
    }

    pub(in crate::store) async fn create_session(&self, new: &NewSession<'_>) -> Result<Session, Error> {
        sqlx::query_as::<_, Session>(concat!(
            "insert into sessions (id_hash, user_id, csrf_token, created_at, last_seen_at, expires_at, client_addr,
                 user_agent)
             values ($1, $2, $3, $4, $4, $5, $6, $7) returning ",
            session_columns!()
        ))
        .bind(new.id_hash)
        .bind(text(new.user_id))
        .bind(new.csrf_token)
        .bind(now())
        .bind(new.expires_at.timestamp_micros())
        .bind(new.client_addr)
        .bind(new.user_agent)
        .fetch_one(&self.writer)
        .await
        .map_err(conflict("session"))
    }

    pub(in crate::store) async fn find_session_by_hash(&self, id_hash: &str) -> Result<Option<(Session, User)>, Error> {
        let row = sqlx::query(concat!(
            "select ",
            session_columns!("s."),
            ", ",
            user_columns!(joined),
            " from sessions s join users u on u.id = s.user_id where s.id_hash = $1 and s.expires_at > $2"
        ))
        .bind(id_hash)
        .bind(now())
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(session_with_user).transpose()
    }

    pub(in crate::store) async fn touch_session(&self, id_hash: &str) -> Result<bool, Error> {
        let done = sqlx::query("update sessions set last_seen_at = $2 where id_hash = $1")
            .bind(id_hash)
            .bind(now())
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn delete_session(&self, id_hash: &str) -> Result<bool, Error> {
        let done = sqlx::query("delete from sessions where id_hash = $1").bind(id_hash).execute(&self.writer).await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn delete_user_sessions(
        &self,
        user_id: Uuid,
        except: Option<&str>,
    ) -> Result<u64, Error> {
        let done = sqlx::query("delete from sessions where user_id = $1 and ($2 is null or id_hash <> $2)")
            .bind(text(user_id))
            .bind(except)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    pub(in crate::store) async fn purge_expired_sessions(&self, idle: Duration) -> Result<u64, Error> {
        let now = now();
        let done = sqlx::query("delete from sessions where expires_at <= $1 or last_seen_at < $2")
            .bind(now)
            .bind(now.saturating_sub(micros(idle)))
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    pub(in crate::store) async fn create_token(&self, new: &NewToken<'_>) -> Result<ApiToken, Error> {
        sqlx::query_as::<_, ApiToken>(concat!(
            "insert into api_tokens (id, name, token_hash, user_id, role, created_at, expires_at)
             values ($1, $2, $3, $4, $5, $6, $7) returning ",
            token_columns!()
        ))
        .bind(text(new.id))
        .bind(new.name)
        .bind(new.token_hash)
        .bind(text(new.user_id))
        .bind(new.role.as_str())
        .bind(now())
        .bind(new.expires_at.map(|t| t.timestamp_micros()))
        .fetch_one(&self.writer)
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
             where t.token_hash = $1 and t.revoked_at is null and (t.expires_at is null or t.expires_at > $2)"
        ))
        .bind(token_hash)
        .bind(now())
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(token_with_user).transpose()
    }

    pub(in crate::store) async fn get_token(&self, id: Uuid) -> Result<Option<ApiToken>, Error> {
        let token =
            sqlx::query_as::<_, ApiToken>(concat!("select ", token_columns!(), " from api_tokens where id = $1"))
                .bind(text(id))
                .fetch_optional(&self.reader)
                .await?;
        Ok(token)
    }

    pub(in crate::store) async fn list_tokens(&self, user_id: Option<Uuid>) -> Result<Vec<ApiToken>, Error> {
        let tokens = sqlx::query_as::<_, ApiToken>(concat!(
            "select ",
            token_columns!(),
            " from api_tokens where ($1 is null or user_id = $1) order by created_at desc, id desc"
        ))
        .bind(user_id.map(text))
        .fetch_all(&self.reader)
        .await?;
        Ok(tokens)
    }

    pub(in crate::store) async fn revoke_token(&self, id: Uuid) -> Result<bool, Error> {
        let done = sqlx::query("update api_tokens set revoked_at = $2 where id = $1 and revoked_at is null")
            .bind(text(id))
            .bind(now())
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn touch_token_last_used(&self, id: Uuid) -> Result<(), Error> {
        sqlx::query("update api_tokens set last_used_at = $2 where id = $1")
            .bind(text(id))
            .bind(now())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn record_login_failure(
        &self,
        key: &str,
        reset_after: Duration,
        lockout: Lockout,
    ) -> Result<LoginFailure, Error> {
        let key = key.to_owned();
        self.write_transaction(async move |conn: &mut SqliteConnection| {
            let now = now();
            let (failures,): (i32,) = sqlx::query_as(
                "insert into login_failures (key, failures, last_failure_at) values ($1, 1, $2)
                 on conflict (key) do update set
                     failures = case when last_failure_at < $3 then 1 else failures + 1 end,
                     last_failure_at = excluded.last_failure_at
                 returning failures",
            )
            .bind(&key)
            .bind(now)
            .bind(now.saturating_sub(micros(reset_after)))
            .fetch_one(&mut *conn)
            .await?;
            let locked_until = lockout(failures).map(|d| now.saturating_add(micros(d)));
            let failure = sqlx::query_as::<_, LoginFailure>(concat!(
                "update login_failures set locked_until = coalesce($2, locked_until) where key = $1 returning ",
                login_failure_columns!()
            ))
            .bind(&key)
            .bind(locked_until)
            .fetch_one(&mut *conn)
            .await?;
            Ok(failure)
        })
        .await
    }

    pub(in crate::store) async fn login_failure(&self, key: &str) -> Result<Option<LoginFailure>, Error> {
        let failure = sqlx::query_as::<_, LoginFailure>(concat!(
            "select ",
            login_failure_columns!(),
            " from login_failures where key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.reader)
        .await?;
        Ok(failure)
    }

    pub(in crate::store) async fn clear_login_failures(&self, key: &str) -> Result<(), Error> {
        sqlx::query("delete from login_failures where key = $1").bind(key).execute(&self.writer).await?;
        Ok(())
    }

    pub(in crate::store) async fn purge_login_failures(&self, older_than: Duration) -> Result<u64, Error> {
        let now = now();
        let done = sqlx::query(
            "delete from login_failures where last_failure_at < $1 and (locked_until is null or locked_until < $2)",
        )
        .bind(now.saturating_sub(micros(older_than)))
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }
}
