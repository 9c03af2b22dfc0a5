//! User accounts: creation (name and password policy), password changes, the admins'
//! changes (role, disabled, password reset) and deletion. Every credential change ends
//! the user's sessions in the same transaction (the store's `update_user`); callers
//! that cache credentials also call `Authenticator::invalidate_user`.

use super::{Error, Role, passwords};
use crate::store::Store;
use crate::store::auth::{NewUser, User, UserUpdate};
use uuid::Uuid;

pub const MAX_USERNAME_LENGTH: usize = 64;

/// The stored form of a username: lowercased, 1–64 characters of `a-z 0-9 . _ -`.
pub fn normalize_username(username: &str) -> Result<String, Error> {
    let name = username.trim().to_lowercase();
    let valid = (1..=MAX_USERNAME_LENGTH).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if valid { Ok(name) } else { Err(Error::InvalidUsername) }
}

pub struct NewUserRequest<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub role: Role,
}

/// Creates a user; `UsernameTaken` in any letter case.
pub async fn create(store: &Store, req: &NewUserRequest<'_>) -> Result<User, Error> {
    let username = normalize_username(req.username)?;
    let password_hash = passwords::hash(req.password).await?;
    let user = store
        .create_user(&NewUser {
            id: Uuid::now_v7(),
            username: &username,
            password_hash: &password_hash,
            role: req.role,
        })
        .await?;
    tracing::info!(user = %user.username, role = %user.role, "user created");
    Ok(user)
}

pub async fn get(store: &Store, id: Uuid) -> Result<User, Error> {
    store.get_user(id).await?.ok_or(Error::NotFound("user"))
}

pub async fn list(store: &Store) -> Result<Vec<User>, Error> {
    Ok(store.list_users().await?)
}

/// A user changes their own password: the current one must match. Every session of
/// the user ends except `keep_session` (the hash of the one making the change).
pub async fn change_password(
    store: &Store,
    user_id: Uuid,
    current: &str,
    new: &str,
    keep_session: Option<&str>,
) -> Result<User, Error> {
    passwords::check_policy(new)?;
    let user = get(store, user_id).await?;
    if !passwords::verify(current, Some(&user.password_hash)).await {
        return Err(Error::WrongPassword);
    }
    let password_hash = passwords::hash(new).await?;
    let update = UserUpdate { password_hash: Some(&password_hash), keep_session, ..Default::default() };
    store.update_user(user_id, &update).await?.ok_or(Error::NotFound("user"))
}

/// What an admin may change about a user; `None` fields stay.
#[derive(Default)]
pub struct AdminUpdate {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    /// A new password (reset); subject to the policy.
    pub password: Option<String>,
}

/// An admin's change: ends all of the user's sessions. `LastAdmin` if it would leave
/// no enabled admin.
pub async fn admin_update(store: &Store, id: Uuid, change: &AdminUpdate) -> Result<User, Error> {
    let password_hash = match &change.password {
        Some(password) => Some(passwords::hash(password).await?),
        None => None,
    };
    let update = UserUpdate {
        role: change.role,
        disabled: change.disabled,
        password_hash: password_hash.as_deref(),
        keep_session: None,
    };
    store.update_user(id, &update).await?.ok_or(Error::NotFound("user"))
}

/// Deletes the user with their sessions and tokens. `LastAdmin` for the last enabled admin.
pub async fn delete(store: &Store, id: Uuid) -> Result<(), Error> {
    if store.delete_user(id).await? { Ok(()) } else { Err(Error::NotFound("user")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowercased_and_restricted() {
        assert_eq!(normalize_username(" Alice.B-2_x ").ok().as_deref(), Some("alice.b-2_x"));
        assert_eq!(normalize_username(&"a".repeat(64)).ok().map(|n| n.len()), Some(64));
        for bad in ["", "   ", "a b", "ali@ce", "élodie", "a/b", &"a".repeat(65)] {
            assert!(matches!(normalize_username(bad), Err(Error::InvalidUsername)), "{bad}");
        }
    }
}
