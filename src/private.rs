//! Files and folders that hold personal data (state, reports, exports, metrics): created
//! owner-only — folders 0700, files 0600 — whatever the umask, because a payroll's names,
//! accounts and amounts must not be readable by every user of a shared host.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::path::Path;

/// Creates `dir` and its missing parents, each new one owner-only.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut b = DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Creates (or truncates) `path` for writing, owner-only.
pub fn create(path: &Path) -> io::Result<File> {
    create_with_mode(path, 0o600)
}

/// Creates (or truncates) `path` for writing with `mode` (Unix permission bits), set
/// whatever the umask.
pub fn create_with_mode(path: &Path, mode: u32) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    let file = o.open(path)?;
    set_mode(path, mode)?;
    Ok(file)
}

/// Sets `path`'s permission bits to `mode` (an existing file keeps the mode it was created
/// with otherwise, however open it was).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Makes an existing file owner-only (0600); a missing one is left missing.
pub fn restrict(path: &Path) -> io::Result<()> {
    match set_mode(path, 0o600) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
