//! File output that never leaves a half-written file behind.

use anyhow::Context;
use std::path::Path;

/// Writes to `path.tmp-<pid>` in the same directory, syncs, then renames over `path`.
///
/// A symlink is written through (to the file it names, the link stays a link); a path that
/// exists and is not a regular file (a device such as /dev/null, a FIFO, a directory) is
/// refused: renaming over it would replace it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let resolved;
    let path = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            resolved = std::fs::canonicalize(path)
                .or_else(|_| {
                    std::fs::read_link(path).map(|t| match path.parent() {
                        Some(d) if t.is_relative() => d.join(t),
                        _ => t,
                    })
                })
                .with_context(|| format!("cannot resolve symlink {}", path.display()))?;
            resolved.as_path()
        }
        _ => path,
    };
    check_writable(path)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Fails now, before any work, if `path` cannot be written later by [`write_atomic`]: its
/// directory must exist (and be a directory), and an existing `path` must be a regular file.
pub fn check_writable(path: &Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => anyhow::bail!(
            "cannot write {}: {} is not a directory",
            path.display(),
            dir.display()
        ),
        Err(_) => anyhow::bail!(
            "cannot write {}: directory {} does not exist (create it first: mkdir -p {})",
            path.display(),
            dir.display(),
            dir.display()
        ),
    }
    if let Ok(m) = std::fs::metadata(path) {
        if m.is_dir() {
            anyhow::bail!(
                "refusing to write {}: it is a directory, not a regular file",
                path.display()
            );
        }
        if !m.is_file() {
            anyhow::bail!(
                "refusing to write {}: it exists and is not a regular file",
                path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_clear_errors() {
        let dir = std::env::temp_dir().join(format!("trainer-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let e = write_atomic(Path::new("/nonexistent-dir/x.bin"), b"x").unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        // The way forward, named.
        assert!(e.to_string().contains("mkdir -p /nonexistent-dir"), "{e}");
        let leftovers = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    /// Regression (issue 16): `--out /dev/full` turned the device into a regular file and
    /// `--out link` replaced the symlink.
    #[test]
    fn devices_are_refused_and_symlinks_written_through() {
        let e = write_atomic(Path::new("/dev/null"), b"x").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
        let dir = std::env::temp_dir().join(format!("trainer-io-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target.bin");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.join("link.bin");
        std::os::unix::fs::symlink("target.bin", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        let e = write_atomic(&dir, b"x").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let file = dir.join("target.bin");
        let e = write_atomic(&file.join("x.bin"), b"x").unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
