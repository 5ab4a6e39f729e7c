//! Private directories (0700) and files (0600) for the runner's own state:
//! the spool holds output that may carry secrets, the logs name nodes,
//! hosts and operations. Modes are set explicitly, whatever the umask, and
//! tightened on what already exists.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of a private directory: its owner only.
pub const DIR_MODE: u32 = 0o700;
/// The mode of a private file: its owner only.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and any missing parent) with mode 0700, or tightens an
/// existing one to 0700. A directory whose mode cannot be changed (another
/// user's) is refused with an error that says so.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a directory",
        ));
    }
    tighten(meta.permissions().mode(), DIR_MODE, |p| {
        std::fs::set_permissions(dir, p)
    })
}

/// Options that create a file with mode 0600 (whatever the umask); pair
/// with [`tighten_file`] for a file that may already exist.
pub fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Sets an open file's mode to 0600 if it is anything else (a file made
/// before, or under a umask that took the owner's bits).
pub fn tighten_file(file: &File) -> io::Result<()> {
    let mode = file.metadata()?.permissions().mode();
    tighten(mode, FILE_MODE, |p| file.set_permissions(p))
}

/// The error says why a mode matters and what to do; the caller adds the
/// path.
fn tighten(
    mode: u32,
    want: u32,
    set: impl FnOnce(Permissions) -> io::Result<()>,
) -> io::Result<()> {
    if mode & 0o777 == want {
        return Ok(());
    }
    set(Permissions::from_mode(want)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "has mode {:o} and cannot be made {want:o} ({e}); the runner's user must own it \
                 (chown it, or choose another path)",
                mode & 0o777
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_and_loose_directories_and_files_end_up_private() {
        let d = tempfile::tempdir().unwrap();
        let nested = d.path().join("a/b");
        ensure_dir(&nested).unwrap();
        assert_eq!(mode(&d.path().join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);

        let loose = d.path().join("loose");
        std::fs::create_dir(&loose).unwrap();
        std::fs::set_permissions(&loose, Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&loose).unwrap();
        assert_eq!(mode(&loose), 0o700);

        let path = loose.join("f");
        std::fs::write(&path, "x").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let mut f = file_options().append(true).open(&path).unwrap();
        tighten_file(&f).unwrap();
        f.write_all(b"y").unwrap();
        assert_eq!(mode(&path), 0o600);

        let fresh = loose.join("new");
        file_options()
            .write(true)
            .create(true)
            .open(&fresh)
            .unwrap();
        assert_eq!(mode(&fresh), 0o600);

        let file_in_the_way = d.path().join("file");
        std::fs::write(&file_in_the_way, "").unwrap();
        assert!(ensure_dir(&file_in_the_way).is_err());
    }
}
