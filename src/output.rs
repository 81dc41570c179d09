//! Writing results without ever leaving a half-written or emptied file behind: every file is
//! written to a temporary file beside it, synced, and renamed over the old one. `write_files`
//! stages all files before renaming any, so a failure while writing changes nothing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::{Error, Result};

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.to_owned(),
        source,
    }
}

/// Who may read a file once it is in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The mode the old file had, 0644 for a new one, as git checkouts and config management
    /// expect.
    AsBefore,
    /// 0600 whatever the old file had: the file holds a credential.
    Private,
}

/// Writes `bytes` to a temporary file in `path`'s folder, with the mode `access` asks for. The
/// temporary file is created 0600, so a private file is never readable by others, even briefly.
fn stage(path: &Path, bytes: &[u8], access: Access) -> Result<NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let err = write_error(path);
    let mut tmp = NamedTempFile::new_in(dir).map_err(&err)?;
    tmp.write_all(bytes).map_err(&err)?;
    tmp.as_file().sync_all().map_err(&err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match access {
            Access::Private => 0o600,
            Access::AsBefore => fs::metadata(path)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o644),
        };
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode)).map_err(&err)?;
    }
    Ok(tmp)
}

/// Replaces or creates `path` atomically.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_files(&[(path.to_owned(), bytes.to_vec())])
}

/// Replaces or creates a file that holds a credential (the token cache) atomically, mode 0600.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    persist(path, stage(path, bytes, Access::Private)?)
}

/// Replaces or creates every file, staging them all first: if any can't be written, none
/// changes. (The renames that follow can't fail for lack of space.)
pub fn write_files(files: &[(PathBuf, Vec<u8>)]) -> Result<()> {
    let staged = files
        .iter()
        .map(|(path, bytes)| stage(path, bytes, Access::AsBefore).map(|tmp| (path, tmp)))
        .collect::<Result<Vec<_>>>()?;
    for (path, tmp) in staged {
        persist(path, tmp)?;
    }
    Ok(())
}

fn persist(path: &Path, tmp: NamedTempFile) -> Result<()> {
    tmp.persist(path).map(drop).map_err(|e| Error::Write {
        path: path.to_owned(),
        source: e.error,
    })
}

/// Compares each file with what is on disk, for `--check`, and writes nothing: one unified diff,
/// from what is there (nothing, if missing) to what would be written, per file that differs.
pub fn stale_files(files: &[(PathBuf, Vec<u8>)]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (path, new) in files {
        let old = match fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(Error::Read {
                    path: path.clone(),
                    source,
                })
            }
        };
        if old.as_deref() == Some(new.as_slice()) {
            continue;
        }
        let old_text = old
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let new_text = String::from_utf8_lossy(new);
        let name = path.display().to_string();
        let diff = similar::TextDiff::from_lines(old_text.as_ref(), new_text.as_ref())
            .unified_diff()
            .context_radius(3)
            .header(
                &if old.is_some() {
                    format!("a/{name}")
                } else {
                    "/dev/null".into()
                },
                &format!("b/{name}"),
            )
            .to_string();
        out.push(diff);
    }
    Ok(out)
}

/// Reads a file, or standard input for `-`.
pub fn read_input(path: &Path) -> Result<Vec<u8>> {
    let err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map_err(err)?;
        Ok(buf)
    } else {
        fs::read(path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_stage_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        fs::write(&a, "old").unwrap();
        let missing = dir.path().join("no/such/dir/b.txt");
        let r = write_files(&[(a.clone(), b"new".to_vec()), (missing, b"x".to_vec())]);
        assert!(r.is_err());
        assert_eq!(fs::read_to_string(&a).unwrap(), "old");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "a temporary file was left"
        );
        write_file(&a, b"new").unwrap();
        assert_eq!(fs::read_to_string(&a).unwrap(), "new");
    }

    #[test]
    fn stale_files_show_a_unified_diff() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let b = dir.path().join("b.txt");
        fs::write(&a, "one\ntwo\n").unwrap();
        let files = vec![
            (a.clone(), b"one\ntwo\n".to_vec()),
            (b.clone(), b"new\n".to_vec()),
        ];
        let stale = stale_files(&files).unwrap();
        assert_eq!(stale.len(), 1);
        assert!(
            stale[0].starts_with("--- /dev/null\n+++ b/"),
            "{}",
            stale[0]
        );
        let files = vec![(a, b"one\n2\n".to_vec())];
        let diff = &stale_files(&files).unwrap()[0];
        assert!(diff.contains("-two\n+2\n"), "{diff}");
    }

    #[cfg(unix)]
    #[test]
    fn a_private_file_is_0600_even_over_a_readable_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.json");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private_file(&path, b"secret").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "secret");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // And an ordinary write keeps the mode the file had.
        write_file(&path, b"x").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
