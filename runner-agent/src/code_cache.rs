//! Pipeline code bundles fetched through the control link, verified against
//! their sha256 and unpacked once per digest under `<data dir>/code/<digest>`.
//!
//! A bundle is data from the network, so unpacking trusts none of it: only regular
//! files, directories, and links that stay inside the bundle are unpacked; no mode
//! bit beyond `rwx` (setuid, setgid, sticky), no owner, no extended attribute is kept.
//! Anything else (a device, a fifo, an absolute or `..` path, a link out of the
//! tree) refuses the whole bundle: the job fails at setup and names the entry.

use crate::link::{ControlLink, LinkError};
use sha2::{Digest, Sha256};
use shared::protocol::CodeBundleRef;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const MAX_BUNDLE_BYTES: u64 = 64 * 1024 * 1024;

/// Tries of one fetch. A fetch reads the bundle through a JetStream consumer with no
/// deadline of its own; a run once sat in its setup until the control plane ended it
/// (CI, round 9; the stalled step was not logged, the fetch is the likely one). A fresh
/// try with a new consumer gets past a stalled read.
const FETCH_TRIES: u32 = 3;

/// How long one try may take: a base plus a second per MiB (the bundle comes from
/// NATS, usually on the same network, at far more than 1 MiB/s).
fn try_deadline(size: u64) -> Duration {
    Duration::from_secs(10 + size / (1024 * 1024))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("code bundle {digest} unavailable: {message}")]
    Unavailable { digest: String, message: String },
    #[error("code bundle {0} does not match its digest")]
    Corrupt(String),
    #[error("code bundle refused: {0}")]
    Refused(String),
    #[error("cannot unpack code bundle: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
pub struct CodeCache {
    dir: PathBuf,
    link: Arc<dyn ControlLink>,
}

impl CodeCache {
    pub fn new(dir: PathBuf, link: Arc<dyn ControlLink>) -> CodeCache {
        CodeCache { dir, link }
    }

    /// The host folder holding the bundle's files, fetching it if needed.
    pub async fn ensure(&self, code: &CodeBundleRef) -> Result<PathBuf, Error> {
        if code.digest.len() != 64 || !code.digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Corrupt(code.digest.clone()));
        }
        let target = self.dir.join(&code.digest);
        if tokio::fs::try_exists(&target).await? {
            return Ok(target);
        }
        let data = self.fetch(code).await?;
        if hex::encode(Sha256::digest(&data)) != code.digest {
            return Err(Error::Corrupt(code.digest.clone()));
        }
        let dir = self.dir.clone();
        let target_clone = target.clone();
        tokio::task::spawn_blocking(move || unpack(&dir, &target_clone, &data))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(target)
    }

    async fn fetch(&self, code: &CodeBundleRef) -> Result<Vec<u8>, Error> {
        let unavailable = |message: String| Error::Unavailable { digest: code.digest.clone(), message };
        if code.size > MAX_BUNDLE_BYTES {
            return Err(unavailable(format!("larger than {MAX_BUNDLE_BYTES} bytes")));
        }
        let fetch = || self.link.fetch_bundle(code, MAX_BUNDLE_BYTES);
        let data = with_tries(&code.digest, try_deadline(code.size), FETCH_TRIES, fetch).await.map_err(unavailable)?;
        if data.len() as u64 > MAX_BUNDLE_BYTES {
            return Err(unavailable(format!("larger than {MAX_BUNDLE_BYTES} bytes")));
        }
        Ok(data)
    }
}

/// Calls `fetch` until it succeeds, at most `tries` times, giving each call `deadline`.
async fn with_tries<F, Fut>(digest: &str, deadline: Duration, tries: u32, mut fetch: F) -> Result<Vec<u8>, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, LinkError>>,
{
    let mut tried = 0;
    loop {
        tried += 1;
        let failure = match tokio::time::timeout(deadline, fetch()).await {
            Ok(Ok(data)) => return Ok(data),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {}s", deadline.as_secs()),
        };
        if tried >= tries {
            return Err(format!("{failure} (tried {tried} times)"));
        }
        tracing::warn!(digest, tried, error = %failure, "fetching the code bundle failed; trying again");
        tokio::time::sleep(Duration::from_millis(500 * u64::from(tried))).await;
    }
}

/// Checks every entry (see the module docs), then unpacks into a temporary folder
/// and renames it into place, so a crash never leaves a half-written bundle under its
/// final name.
fn unpack(dir: &Path, target: &Path, data: &[u8]) -> Result<(), Error> {
    check_entries(data)?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut archive = tar::Archive::new(data);
    // `rwx` bits only (no setuid, setgid or sticky bit), the runner's own user as owner,
    // no extended attributes (file capabilities live there). `unpack` also refuses to
    // write through a link that leads out of `tmp` (it canonicalises each parent).
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(false);
    if let Err(e) = archive.unpack(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.into());
    }
    match std::fs::rename(&tmp, target) {
        Ok(()) => Ok(()),
        // Another run unpacked the same digest first.
        Err(_) if target.exists() => Ok(std::fs::remove_dir_all(&tmp)?),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e.into())
        }
    }
}

/// Refuses a bundle with an entry that is not a regular file, a directory, or a link
/// that stays inside the bundle, or whose path is absolute or climbs with `..`.
fn check_entries(data: &[u8]) -> Result<(), Error> {
    use tar::EntryType;
    let mut archive = tar::Archive::new(data);
    let refused = |path: &Path, why: &str| Error::Refused(format!("`{}` {why}", path.display()));
    // Symbolic links seen so far: nothing is unpacked through one, wherever it leads.
    let mut links: Vec<PathBuf> = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let path = entry.path()?.into_owned();
        if !relative_inside(Path::new(""), &path) {
            return Err(refused(&path, "has an absolute path or one that leaves the bundle"));
        }
        let path = normal(&path);
        if let Some(link) = links.iter().find(|l| path.starts_with(l) && path != **l) {
            return Err(refused(&path, &format!("lies behind the symbolic link `{}`", link.display())));
        }
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory | EntryType::XGlobalHeader => {}
            kind @ (EntryType::Symlink | EntryType::Link) => {
                let Some(to) = entry.link_name()? else { return Err(refused(&path, "is a link to nothing")) };
                // A symbolic link resolves from its own folder, a hard link from the root.
                let from = match kind {
                    EntryType::Symlink => path.parent().unwrap_or(Path::new("")),
                    _ => Path::new(""),
                };
                if !relative_inside(from, &to) || (kind == EntryType::Symlink && climbs_after_descending(&to)) {
                    return Err(refused(&path, &format!("links to `{}`, outside the bundle", to.display())));
                }
                if kind == EntryType::Symlink {
                    links.push(path);
                } else if let Some(link) = links.iter().find(|l| normal(&to).starts_with(l)) {
                    return Err(refused(&path, &format!("links through the symbolic link `{}`", link.display())));
                }
            }
            EntryType::Char | EntryType::Block => return Err(refused(&path, "is a device file")),
            EntryType::Fifo => return Err(refused(&path, "is a fifo")),
            other => return Err(refused(&path, &format!("has an entry type the runner does not unpack ({other:?})"))),
        }
    }
    Ok(())
}

/// Whether `path`, taken from the folder `from` (relative to the bundle's root), is
/// relative and stays inside the bundle, judged on the names alone.
fn relative_inside(from: &Path, path: &Path) -> bool {
    use std::path::Component;
    let mut depth = from.components().filter(|c| matches!(c, Component::Normal(_))).count();
    for part in path.components() {
        match part {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// The path without `.` components (and trailing slashes), so prefixes compare.
fn normal(path: &Path) -> PathBuf {
    path.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect()
}

/// `a/..` in a link's target: the name check above cannot tell where it leads when
/// `a` is itself a link (`a -> .` makes `a/..` the bundle's parent), so it is refused.
/// Leading `..` (`../lib/x`) is fine: it starts from the link's own folder.
fn climbs_after_descending(target: &Path) -> bool {
    use std::path::Component;
    let mut descended = false;
    for part in target.components() {
        match part {
            Component::Normal(_) => descended = true,
            Component::ParentDir if descended => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// One tar entry with its name and link name written as given (the builder's own
    /// setters refuse `..` and absolute paths, which these tests need).
    fn entry(tar: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, mode: u32, data: &[u8]) {
        let mut header = tar::Header::new_ustar();
        if let Some(h) = header.as_ustar_mut() {
            h.name[..name.len()].copy_from_slice(name.as_bytes());
            h.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().next_multiple_of(512), 0);
    }

    fn finish(mut tar: Vec<u8>) -> Vec<u8> {
        tar.extend_from_slice(&[0; 1024]);
        tar
    }

    struct Dirs {
        root: PathBuf,
    }

    impl Dirs {
        fn new() -> Dirs {
            let root = std::env::temp_dir().join(format!("ff-code-cache-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(root.join("outside")).expect("temp dir");
            Dirs { root }
        }
        fn cache(&self) -> PathBuf {
            self.root.join("cache")
        }
        fn target(&self) -> PathBuf {
            self.cache().join("digest")
        }
        fn unpack(&self, tar: Vec<u8>) -> Result<(), Error> {
            unpack(&self.cache(), &self.target(), &finish(tar))
        }
        /// Nothing half-unpacked is left behind, neither the bundle nor its temporary folder.
        fn assert_nothing_unpacked(&self) {
            assert!(!self.target().exists(), "the refused bundle is not in the cache");
            let left = std::fs::read_dir(self.cache()).map(|d| d.count()).unwrap_or(0);
            assert_eq!(left, 0, "no temporary folder left in the cache");
            let outside = std::fs::read_dir(self.root.join("outside")).map(|d| d.count()).unwrap_or(0);
            assert_eq!(outside, 0, "nothing written outside the cache");
        }
    }

    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn refused(result: Result<(), Error>) -> String {
        match result {
            Err(Error::Refused(message)) => message,
            other => panic!("expected the bundle to be refused, got {other:?}"),
        }
    }

    #[test]
    fn setuid_setgid_and_sticky_bits_are_dropped_and_plain_modes_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dirs = Dirs::new();
        let mut tar = Vec::new();
        entry(&mut tar, "bin/", tar::EntryType::Directory, "", 0o1777, b"");
        entry(&mut tar, "bin/su", tar::EntryType::Regular, "", 0o6755, b"#!/bin/sh\n");
        entry(&mut tar, "main.py", tar::EntryType::Regular, "", 0o644, b"print(1)\n");
        entry(&mut tar, "lib", tar::EntryType::Symlink, "bin", 0o777, b"");
        entry(&mut tar, "bin/up", tar::EntryType::Symlink, "../main.py", 0o777, b"");
        dirs.unpack(tar).expect("a plain bundle unpacks");
        let mode = |p: &str| std::fs::metadata(dirs.target().join(p)).map(|m| m.permissions().mode() & 0o7777).ok();
        assert_eq!(mode("bin/su"), Some(0o755), "setuid and setgid bits dropped");
        assert_eq!(mode("bin"), Some(0o777), "sticky bit dropped");
        assert_eq!(mode("main.py"), Some(0o644));
        assert_eq!(
            std::fs::read(dirs.target().join("lib/su")).ok(),
            Some(b"#!/bin/sh\n".to_vec()),
            "a link inside works"
        );
    }

    #[test]
    fn device_files_and_fifos_refuse_the_bundle() {
        for (kind, what) in
            [(tar::EntryType::Char, "device"), (tar::EntryType::Block, "device"), (tar::EntryType::Fifo, "fifo")]
        {
            let dirs = Dirs::new();
            let mut tar = Vec::new();
            entry(&mut tar, "main.py", tar::EntryType::Regular, "", 0o644, b"print(1)\n");
            entry(&mut tar, "dev/thing", kind, "", 0o666, b"");
            let message = refused(dirs.unpack(tar));
            assert!(message.contains("dev/thing") && message.contains(what), "{message}");
            dirs.assert_nothing_unpacked();
        }
    }

    #[test]
    fn paths_that_climb_out_or_are_absolute_refuse_the_bundle() {
        for name in ["../escaped", "a/../../escaped", "/tmp/escaped"] {
            let dirs = Dirs::new();
            let mut tar = Vec::new();
            entry(&mut tar, name, tar::EntryType::Regular, "", 0o644, b"x");
            let message = refused(dirs.unpack(tar));
            assert!(message.contains("leaves the bundle"), "{name}: {message}");
            dirs.assert_nothing_unpacked();
        }
    }

    #[test]
    fn links_out_of_the_bundle_and_files_written_through_links_refuse_the_bundle() {
        let cases: Vec<Vec<(&str, tar::EntryType, &str)>> = vec![
            // An absolute link, then a file written through it.
            vec![("out", tar::EntryType::Symlink, "OUTSIDE"), ("out/planted", tar::EntryType::Regular, "")],
            // A relative link that climbs out.
            vec![("out", tar::EntryType::Symlink, "../../outside"), ("out/planted", tar::EntryType::Regular, "")],
            // Each link looks inside by name; together `x` is the bundle's parent.
            vec![
                ("d/", tar::EntryType::Directory, ""),
                ("d/sub", tar::EntryType::Symlink, ".."),
                ("x", tar::EntryType::Symlink, "d/sub/.."),
                ("x/planted", tar::EntryType::Regular, ""),
            ],
            // A file behind a link that points inside is still refused.
            vec![("self", tar::EntryType::Symlink, "."), ("self/planted", tar::EntryType::Regular, "")],
            // A hard link to a file outside.
            vec![("hard", tar::EntryType::Link, "../outside/secret")],
            vec![("hard", tar::EntryType::Link, "/etc/passwd")],
        ];
        for case in cases {
            let dirs = Dirs::new();
            let mut tar = Vec::new();
            for (name, kind, link) in &case {
                let link = link.replace("OUTSIDE", &dirs.root.join("outside").display().to_string());
                entry(&mut tar, name, *kind, &link, 0o644, b"");
            }
            let message = refused(dirs.unpack(tar));
            assert!(
                message.contains("outside the bundle") || message.contains("behind the symbolic link"),
                "{case:?}: {message}"
            );
            dirs.assert_nothing_unpacked();
        }
    }

    #[test]
    fn a_hard_link_inside_the_bundle_is_unpacked() {
        let dirs = Dirs::new();
        let mut tar = Vec::new();
        entry(&mut tar, "a.txt", tar::EntryType::Regular, "", 0o644, b"same");
        entry(&mut tar, "b.txt", tar::EntryType::Link, "a.txt", 0o644, b"");
        dirs.unpack(tar).expect("unpacks");
        assert_eq!(std::fs::read(dirs.target().join("b.txt")).ok(), Some(b"same".to_vec()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_that_never_answers_is_tried_again() {
        let calls = AtomicU32::new(0);
        let fetched = with_tries("d", Duration::from_secs(10), 3, || {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if call == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(b"bundle".to_vec())
            }
        })
        .await;
        assert_eq!(fetched, Ok(b"bundle".to_vec()));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the stalled first try was given up, the second answered");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_gives_up_after_its_tries_with_the_last_reason() {
        let calls = AtomicU32::new(0);
        let fetched = with_tries("d", Duration::from_secs(10), 3, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<Vec<u8>, _>(LinkError::new("code bundle", "no such object")) }
        })
        .await;
        assert_eq!(fetched, Err("code bundle: no such object (tried 3 times)".to_owned()));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
