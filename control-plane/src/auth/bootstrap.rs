//! The zero-config first admin: when no user exists, create `admin` with a random
//! password written to `DATA_DIR/initial-admin-password` (mode 0600 from its creation,
//! never readable by others even briefly). The log names the file, never the password.

use super::{Error, Role, secrets, users};
use crate::store::Store;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const INITIAL_ADMIN: &str = "admin";
pub const PASSWORD_FILE: &str = "initial-admin-password";

/// Creates the first admin if there is no user at all; returns the password file's path
/// when it did. Meant for the single node at start-up.
pub async fn ensure_initial_admin(store: &Store, data_dir: &Path) -> Result<Option<PathBuf>, Error> {
    if store.count_users().await? > 0 {
        return Ok(None);
    }
    let password = secrets::random_password();
    let path = data_dir.join(PASSWORD_FILE);
    write_private(&path, password.expose())?;
    let request = users::NewUserRequest { username: INITIAL_ADMIN, password: password.expose(), role: Role::Admin };
    match users::create(store, &request).await {
        Ok(_) => {
            tracing::warn!(
                path = %path.display(),
                "no user existed: created the user `admin`; its password is in this file (read it, log in, \
                 change the password, then delete the file)"
            );
            Ok(Some(path))
        }
        // Someone created it meanwhile: that password is not this one.
        Err(Error::UsernameTaken) => {
            let _ = std::fs::remove_file(&path);
            Ok(None)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Writes `content` to a new file only its owner can read. An old file is removed
/// first: opening it would keep its old permissions.
fn write_private(path: &Path, content: &str) -> Result<(), Error> {
    let io = |source| Error::Io { path: path.display().to_string(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(format!("{content}\n").as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_the_first_admin_once_with_a_private_password_file() {
        let dir = std::env::temp_dir().join(format!("fastflow-bootstrap-{}", uuid::Uuid::new_v4().simple()));
        let store = Store::connect(&format!("sqlite://{}/fastflow.db", dir.display())).await.expect("store");
        let path = ensure_initial_admin(&store, &dir).await.expect("bootstrap").expect("created");
        assert_eq!(path, dir.join(PASSWORD_FILE));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let password = std::fs::read_to_string(&path).expect("read");
        let password = password.trim_end();
        assert_eq!(password.len(), 24);
        let admin = store.get_user_by_name("admin").await.expect("get").expect("admin exists");
        assert_eq!(admin.role, Role::Admin);
        assert!(crate::auth::passwords::verify(password, Some(&admin.password_hash)).await);
        // Users exist now: nothing happens, the file stays as it is.
        assert_eq!(ensure_initial_admin(&store, &dir).await.expect("second"), None);
        assert_eq!(store.count_users().await.expect("count"), 1);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
