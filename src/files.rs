//! Files dealsync creates (the NDJSON export and its quarantine, the metrics file, a new SQLite warehouse): private
//! whatever the umask, never written through a symbolic link at the target (a link planted there would send rows
//! or metrics over another file), and the metrics file replaced atomically.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Opens `path` for writing from the start, created with `mode` (or set to it), refusing a symbolic link there.
pub fn create(path: &Path, mode: u32) -> std::io::Result<File> {
    let file = options(mode).create(true).truncate(true).open(path).map_err(|e| refuse_link(path, e))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(file)
}

/// Replaces `path` with `text` at once (a reader sees the old file or the new one): written to a new file of a
/// name no other process uses, created exclusively with `mode`, then renamed over `path`.
pub fn replace(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(refuse_link(path, std::io::Error::from_raw_os_error(libc::ELOOP)));
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.{:08x}.tmp", std::process::id(), random()));
    let mut file = create_new(&tmp, mode)?;
    let written =
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Creates `path` with `mode` only if nothing is there yet (`AlreadyExists` otherwise, a symbolic link included).
pub fn create_new(path: &Path, mode: u32) -> std::io::Result<File> {
    let file = options(mode).create_new(true).open(path)?;
    if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(mode)) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(file)
}

/// Write-only, new files created with `mode`, and no following a symbolic link at the path itself.
fn options(mode: u32) -> OpenOptions {
    OpenOptions::new().write(true).mode(mode).custom_flags(libc::O_NOFOLLOW).clone()
}

fn refuse_link(path: &Path, e: std::io::Error) -> std::io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        std::io::Error::other(format!("{} is a symbolic link; dealsync does not write through one", path.display()))
    } else {
        e
    }
}

/// A few random bits (the standard library's per-process hash keys), for temporary names and run ids.
pub fn random() -> u32 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_at_the_target_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("out.ndjson");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create(&link, 0o600).unwrap_err().to_string().contains("symbolic link"));
        assert!(replace(&link, "x", 0o640).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }

    #[test]
    fn files_are_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let old = unsafe { libc::umask(0) };
        let a = dir.path().join("a");
        create(&a, 0o600).unwrap();
        let b = dir.path().join("b.prom");
        replace(&b, "m 1\n", 0o640).unwrap();
        unsafe { libc::umask(old) };
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&a), mode(&b)), (0o600, 0o640));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary file is left");
    }
}
