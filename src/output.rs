//! Writing results without ever leaving a half-written or emptied file behind: every file is
//! written to a temporary file beside it, synced, and renamed over the old one. `write_files`
//! stages all files before renaming any, and keeps the old ones until every rename succeeded,
//! so a failure at any point leaves every file as it was.
//!
//! Temporary files are named `.wecom-allowlist-*.tmp`: after a crash, what is left over is
//! obvious in `git status` and can't be mistaken for an output.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::{Error, Result};

/// How temporary files (staged outputs, kept old versions) start and end.
pub const TMP_PREFIX: &str = ".wecom-allowlist-";
pub const TMP_SUFFIX: &str = ".tmp";

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.to_owned(),
        source,
    }
}

/// Who may read a file once it is in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The mode the old file had; a new file gets 0666 less the process umask, as any other
    /// program's new file would (git checkouts and config management expect that).
    AsBefore,
    /// 0600 whatever the old file had: the file holds a credential.
    Private,
}

/// The folder a file goes into: `.` for a bare file name.
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn temp_builder() -> tempfile::Builder<'static, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(TMP_PREFIX).suffix(TMP_SUFFIX);
    b
}

/// Refuses to replace anything but a regular file: renaming over a device, a FIFO or a folder
/// would destroy it, or fail halfway through a build.
fn refuse_non_regular(path: &Path, hint: &str) -> Result<()> {
    let kind = match fs::metadata(path) {
        Err(_) => return Ok(()),
        Ok(m) if m.is_file() => return Ok(()),
        Ok(m) if m.is_dir() => "a folder",
        Ok(_) => "a device, FIFO or socket",
    };
    Err(Error::Write {
        path: path.to_owned(),
        source: std::io::Error::other(format!(
            "it is {kind}, not a regular file, and is left alone{hint}"
        )),
    })
}

/// Writes `bytes` to a temporary file in `path`'s folder, with the mode `access` asks for.
fn stage(path: &Path, bytes: &[u8], access: Access) -> Result<NamedTempFile> {
    let err = write_error(path);
    let mut tmp = create_temp(path, access).map_err(&err)?;
    tmp.write_all(bytes).map_err(&err)?;
    tmp.as_file().sync_all().map_err(&err)?;
    Ok(tmp)
}

/// An empty temporary file in `path`'s folder, with the mode `access` asks for. A private file
/// is created 0600, so it is never readable by others, even briefly.
fn create_temp(path: &Path, access: Access) -> std::io::Result<NamedTempFile> {
    let mut builder = temp_builder();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let create = match access {
            Access::Private => 0o600,
            Access::AsBefore => 0o666,
        };
        builder.permissions(fs::Permissions::from_mode(create));
    }
    let tmp = builder
        .tempfile_in(folder(path))
        .map_err(|e| without_temp_path(e, folder(path)))?;
    #[cfg(unix)]
    if access == Access::AsBefore {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(old) = fs::metadata(path) {
            let mode = old.permissions().mode() & 0o7777;
            fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(tmp)
}

/// tempfile's error names the temporary file it tried to create, which the user never asked
/// for: say what is wrong with the folder instead (`-o` into a folder that doesn't exist).
fn without_temp_path(e: std::io::Error, dir: &Path) -> std::io::Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => std::io::Error::new(
            e.kind(),
            format!("the folder {} does not exist", dir.display()),
        ),
        std::io::ErrorKind::NotADirectory => {
            std::io::Error::new(e.kind(), format!("{} is not a folder", dir.display()))
        }
        kind => match e.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::from(kind),
        },
    }
}

/// Replaces or creates `path` atomically (`-o FILE`).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    refuse_non_regular(path, " (omit -o to write to standard output)")?;
    commit(vec![(path, stage(path, bytes, Access::AsBefore)?)], &[])
}

/// Replaces or creates a file that holds a credential (the token cache) atomically, mode 0600.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    refuse_non_regular(path, "")?;
    commit(vec![(path, stage(path, bytes, Access::Private)?)], &[])
}

/// Replaces or creates every file, all or nothing: all are staged first, the old ones are kept
/// until every rename succeeded, and put back if one fails.
pub fn write_files(files: &[(PathBuf, Vec<u8>)]) -> Result<()> {
    write_and_remove(files, &[])
}

/// `write_files`, and removes the files of `remove` in the same all-or-nothing step: a file
/// removed is kept under a temporary name until everything succeeded, and put back if not.
pub fn write_and_remove(files: &[(PathBuf, Vec<u8>)], remove: &[PathBuf]) -> Result<()> {
    let staged = files
        .iter()
        .map(|(path, bytes)| OutFile::stage(path.clone(), false).with(bytes))
        .collect();
    commit_files(staged, remove)
}

/// How many bytes of a file are gathered before they go to disk and to the comparison with
/// the old file: few writes, and little memory beside files of hundreds of megabytes.
const CHUNK: usize = 256 * 1024;

/// How many bytes of a file are written before the disk is asked to start taking them.
const WRITEBACK: u64 = 8 << 20;

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to disk, without
/// waiting for them: the sync before the rename then finds most of a large file on disk
/// already, instead of all of it at the end of the build (at a million entries, about 0.3 s
/// of 300 MB). Only a hint: whatever fails here fails again in that sync, which reports it.
#[cfg(target_os = "linux")]
fn start_writeback(file: &fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &fs::File, _: u64, _: u64) {}

/// What a new file is, beside what is on disk in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The same bytes are there.
    Unchanged,
    /// Other bytes are there.
    Changed,
    /// Nothing is there.
    New,
    /// Something is there that can't be read.
    Replaced,
}

/// The old file, compared with the new bytes as they arrive, so that neither is held whole.
struct Compare {
    /// Open while every byte so far matched.
    old: Option<fs::File>,
    state: State,
    /// Why the old file couldn't be read (`State::Replaced`).
    error: Option<std::io::Error>,
    /// How many bytes matched: the new file starts with that much of the old one.
    matched: u64,
    scratch: Vec<u8>,
    /// For `--check`: the new bytes after `matched`, once they differ, for the diff (which
    /// needs both texts whole anyway).
    keep: Option<Vec<u8>>,
}

/// Reads until `buf` is full or the file ends; how many bytes it read.
fn read_full(file: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl Compare {
    fn open(path: &Path, keep: bool) -> Compare {
        let (old, state, error) = match fs::File::open(path) {
            Ok(file) => (Some(file), State::Unchanged, None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, State::New, None),
            Err(e) => (None, State::Replaced, Some(e)),
        };
        Compare {
            old,
            state,
            error,
            matched: 0,
            scratch: Vec::new(),
            keep: keep.then(Vec::new),
        }
    }

    /// No comparison: the file is written whatever is there (`-o`).
    fn none() -> Compare {
        Compare {
            old: None,
            state: State::Changed,
            error: None,
            matched: 0,
            scratch: Vec::new(),
            keep: None,
        }
    }

    fn feed(&mut self, buf: &[u8]) {
        if let Some(old) = &mut self.old {
            self.scratch.resize(buf.len(), 0);
            match read_full(old, &mut self.scratch) {
                Ok(n) if n == buf.len() && self.scratch == buf => {
                    self.matched += n as u64;
                    return;
                }
                Ok(_) => self.state = State::Changed,
                Err(e) => self.unreadable(e),
            }
            self.old = None;
            self.scratch = Vec::new();
        }
        if let Some(keep) = &mut self.keep {
            keep.extend_from_slice(buf);
        }
    }

    fn unreadable(&mut self, e: std::io::Error) {
        self.state = State::Replaced;
        self.error = Some(e);
        self.keep = None;
    }

    /// The new file has ended: the old one must end there too.
    fn end(&mut self) {
        if let Some(mut old) = self.old.take() {
            match read_full(&mut old, &mut [0]) {
                Ok(0) => {}
                Ok(_) => self.state = State::Changed,
                Err(e) => self.unreadable(e),
            }
        }
        self.scratch = Vec::new();
    }
}

/// Where a file's bytes go as they are rendered: its temporary file (unless `--check`), and
/// the comparison with the old file. It takes every write: an error writing the temporary
/// file is kept for `commit_files`, which reports it after any rendering error, as when files
/// were written only once every one was rendered.
struct Sink {
    tmp: Option<NamedTempFile>,
    error: Option<std::io::Error>,
    compare: Compare,
    /// Bytes written to `tmp`, and how many of them the disk was asked to take.
    written: u64,
    handed: u64,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(tmp) = &mut self.tmp {
            if let Err(e) = tmp.write_all(buf) {
                self.error = Some(e);
                // Dropped, and so removed.
                self.tmp = None;
            } else {
                self.written += buf.len() as u64;
                if self.written - self.handed >= WRITEBACK {
                    start_writeback(tmp.as_file(), self.handed, self.written - self.handed);
                    self.handed = self.written;
                }
            }
        }
        self.compare.feed(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A file of a build, written as it is rendered: to a temporary file beside it (committed
/// later with `commit_files`, all or nothing), or for `--check` only compared with the file
/// there. Either way it is compared with the old file as it goes, and never held whole.
pub struct OutFile {
    path: PathBuf,
    sink: std::io::BufWriter<Sink>,
}

impl OutFile {
    /// A new version of `path`, staged in a temporary file beside it that gets the old file's
    /// mode; `compare` says whether to compare it with the old file (the build's report).
    pub fn stage(path: PathBuf, compare: bool) -> OutFile {
        let (tmp, error) = match create_temp(&path, Access::AsBefore) {
            Ok(tmp) => (Some(tmp), None),
            Err(e) => (None, Some(e)),
        };
        let compare = if compare {
            Compare::open(&path, false)
        } else {
            Compare::none()
        };
        OutFile::new(path, tmp, error, compare)
    }

    /// What a build would write to `path`, only compared with the file there (`--check`).
    pub fn check(path: PathBuf) -> OutFile {
        let compare = Compare::open(&path, true);
        OutFile::new(path, None, None, compare)
    }

    fn new(
        path: PathBuf,
        tmp: Option<NamedTempFile>,
        error: Option<std::io::Error>,
        compare: Compare,
    ) -> OutFile {
        let sink = Sink {
            tmp,
            error,
            compare,
            written: 0,
            handed: 0,
        };
        OutFile {
            path,
            sink: std::io::BufWriter::with_capacity(CHUNK, sink),
        }
    }

    /// `bytes` written, and the file finished.
    fn with(mut self, bytes: &[u8]) -> Finished {
        // A `Sink` takes every write.
        let _ = self.sink.write_all(bytes);
        self.finish()
    }

    /// The file is complete: the comparison ends, and its temporary file's sync begins, on a
    /// thread of its own: the disk takes the file while the next ones are made (the sync of
    /// a 170 MB `source.json` takes about as long as rendering every target). `commit_files`
    /// waits for it before it renames anything.
    pub fn finish(self) -> Finished {
        let OutFile { path, mut sink } = self;
        // A `Sink` takes every write, so the buffer is empty after this.
        let _ = sink.flush();
        let (mut sink, _) = sink.into_parts();
        sink.compare.end();
        let mut sync = None;
        if let Some(tmp) = &sink.tmp {
            let background = tmp
                .as_file()
                .try_clone()
                .and_then(|file| std::thread::Builder::new().spawn(move || file.sync_all()));
            match background {
                Ok(running) => sync = Some(running),
                // No thread (or no second handle): synced here.
                Err(_) => {
                    if let Err(e) = tmp.as_file().sync_all() {
                        sink.error = Some(e);
                        sink.tmp = None;
                    }
                }
            }
        }
        Finished {
            path,
            tmp: sink.tmp,
            sync,
            error: sink.error,
            compare: sink.compare,
        }
    }
}

impl Write for OutFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sink.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.sink.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.flush()
    }
}

/// A file written whole, waiting for `commit_files` (or, for `--check`, for `diff`).
pub struct Finished {
    pub path: PathBuf,
    tmp: Option<NamedTempFile>,
    /// The sync of `tmp`, under way.
    sync: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    error: Option<std::io::Error>,
    compare: Compare,
}

impl Finished {
    /// What it is beside the file there.
    pub fn state(&self) -> State {
        self.compare.state
    }

    /// For `--check`: a unified diff from what is there (nothing, if missing) to the new file,
    /// or `None` when they are the same.
    pub fn diff(self) -> Result<Option<String>> {
        let read_error = |source| Error::Read {
            path: self.path.clone(),
            source,
        };
        let mut compare = self.compare;
        match compare.state {
            State::Unchanged => Ok(None),
            State::Replaced => Err(read_error(
                compare
                    .error
                    .take()
                    .unwrap_or_else(|| std::io::Error::other("unreadable")),
            )),
            State::New => Ok(Some(unified(
                &self.path,
                None,
                &compare.keep.unwrap_or_default(),
            ))),
            State::Changed => {
                let old = fs::read(&self.path).map_err(read_error)?;
                let matched = usize::try_from(compare.matched)
                    .unwrap_or(usize::MAX)
                    .min(old.len());
                let mut new = old[..matched].to_vec();
                new.extend_from_slice(&compare.keep.unwrap_or_default());
                Ok(Some(unified(&self.path, Some(&old), &new)))
            }
        }
    }
}

/// Puts every staged file in place and removes the files of `remove`, all or nothing (see
/// `commit`). As when every file was staged only here: first each path must be a regular file
/// (or none), then an error met writing a file is reported, the first in order.
pub fn commit_files(files: Vec<Finished>, remove: &[PathBuf]) -> Result<()> {
    for path in files.iter().map(|f| &f.path).chain(remove) {
        refuse_non_regular(path, "")?;
    }
    let (paths, tmps) = staged(files)?;
    commit(
        paths.iter().map(PathBuf::as_path).zip(tmps).collect(),
        remove,
    )
}

/// Puts one staged file in place (`-o FILE`).
pub fn commit_file(file: Finished) -> Result<()> {
    refuse_non_regular(&file.path, " (omit -o to write to standard output)")?;
    let (paths, tmps) = staged(vec![file])?;
    commit(paths.iter().map(PathBuf::as_path).zip(tmps).collect(), &[])
}

/// Each file's path and temporary file; the first error met writing one, if any.
fn staged(files: Vec<Finished>) -> Result<(Vec<PathBuf>, Vec<NamedTempFile>)> {
    let mut paths = Vec::with_capacity(files.len());
    let mut tmps = Vec::with_capacity(files.len());
    for f in files {
        // The write's error, else the sync's (a file not written whole isn't synced).
        let synced = f.sync.map_or(Ok(()), |sync| {
            sync.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("its sync stopped")))
        });
        match (f.tmp, f.error.or(synced.err())) {
            (Some(tmp), None) => {
                paths.push(f.path);
                tmps.push(tmp);
            }
            (_, error) => {
                return Err(Error::Write {
                    path: f.path,
                    source: error.unwrap_or_else(|| std::io::Error::other("it was not staged")),
                })
            }
        }
    }
    Ok((paths, tmps))
}

/// The old version of a file, kept under a temporary name (a hard link, or a copy where the
/// file system has none) until the new one is in place.
fn keep_old(path: &Path) -> std::io::Result<Option<NamedTempFile<()>>> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    temp_builder()
        .make_in(folder(path), |kept| match fs::hard_link(path, kept) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                fs::copy(path, kept).map(drop)
            }
            other => other,
        })
        .map(Some)
}

/// Renames every staged file over its target, removes the files of `remove`, then syncs their
/// folders. On any failure, the files already renamed or removed are put back as they were (or
/// removed, if they were new).
fn commit<'a>(staged: Vec<(&'a Path, NamedTempFile)>, remove: &'a [PathBuf]) -> Result<()> {
    let mut done: Vec<(&Path, Option<NamedTempFile<()>>)> =
        Vec::with_capacity(staged.len() + remove.len());
    let mut failure = None;
    for (path, tmp) in staged {
        let kept = match keep_old(path) {
            Ok(kept) => kept,
            Err(source) => {
                failure = Some(Error::Write {
                    path: path.to_owned(),
                    source,
                });
                break;
            }
        };
        match tmp.persist(path) {
            Ok(_) => done.push((path, kept)),
            Err(e) => {
                failure = Some(Error::Write {
                    path: path.to_owned(),
                    source: e.error,
                });
                break;
            }
        }
    }
    if failure.is_none() {
        for path in remove {
            let removed = keep_old(path).and_then(|kept| match kept {
                // Gone already: nothing to remove, nothing to put back.
                None => Ok(None),
                Some(kept) => fs::remove_file(path).map(|()| Some(kept)),
            });
            match removed {
                Ok(Some(kept)) => done.push((path.as_path(), Some(kept))),
                Ok(None) => {}
                Err(source) => {
                    failure = Some(Error::Write {
                        path: path.to_owned(),
                        source,
                    });
                    break;
                }
            }
        }
    }
    if failure.is_none() {
        let mut folders: Vec<&Path> = done.iter().map(|(p, _)| folder(p)).collect();
        folders.sort_unstable();
        folders.dedup();
        for dir in folders {
            if let Err(source) = fs::File::open(dir).and_then(|d| d.sync_all()) {
                failure = Some(Error::Write {
                    path: dir.to_owned(),
                    source,
                });
                break;
            }
        }
    }
    let Some(failure) = failure else {
        // The kept old versions are dropped, which removes them.
        return Ok(());
    };
    for (path, kept) in done.into_iter().rev() {
        let restored = match kept {
            Some(old) => old.persist(path).map(drop).map_err(|e| e.error),
            None => fs::remove_file(path),
        };
        if let Err(e) = restored {
            tracing::error!("could not put {} back as it was: {e}", path.display());
        }
    }
    Err(failure)
}

/// A lock on a build folder, held until dropped: two builds into one folder would otherwise
/// interleave their renames and leave a mix of both lists, each exiting 0.
#[derive(Debug)]
pub struct FolderLock {
    #[cfg(unix)]
    _folder: fs::File,
}

/// Locks `dir` (which must exist): exclusively to write, shared to only read (`--check`). When
/// another run holds it, `waiting` is called once, then this waits for it. The lock is the
/// kernel's (`flock` on the folder itself): it puts no file in the folder and dies with its
/// process, so a killed build never leaves the folder locked.
pub fn lock_folder(dir: &Path, exclusive: bool, waiting: impl FnOnce()) -> Result<FolderLock> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let err = |source| Error::Write {
            path: dir.to_owned(),
            source,
        };
        let folder = fs::File::open(dir).map_err(err)?;
        let mode = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        let flock = |how: libc::c_int| {
            // SAFETY: flock only reads the descriptor, which `folder` keeps open.
            let rc = unsafe { libc::flock(folder.as_raw_fd(), how) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        match flock(mode | libc::LOCK_NB) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                waiting();
                loop {
                    match flock(mode) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        other => break other.map_err(err)?,
                    }
                }
            }
            Err(e) => return Err(err(e)),
        }
        Ok(FolderLock { _folder: folder })
    }
    #[cfg(not(unix))]
    {
        let _ = (dir, exclusive, waiting);
        Ok(FolderLock {})
    }
}

/// Removes the temporary files that a killed run left in `dir` (`.wecom-allowlist-*.tmp`; only
/// this tool makes such names), and returns them. Call it holding the folder's lock, so that no
/// running build's files are taken.
pub fn remove_leftovers(dir: &Path) -> Result<Vec<PathBuf>> {
    let err = |source| Error::Write {
        path: dir.to_owned(),
        source,
    };
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(TMP_PREFIX) && name.ends_with(TMP_SUFFIX)) {
            continue;
        }
        if !entry.file_type().map_err(err)?.is_file() {
            continue;
        }
        let path = entry.path();
        fs::remove_file(&path).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
        removed.push(path);
    }
    removed.sort();
    Ok(removed)
}

/// Compares each file with what is on disk, for `--check`, and writes nothing: one unified diff,
/// from what is there (nothing, if missing) to what would be written, per file that differs.
pub fn stale_files(files: &[(PathBuf, Vec<u8>)]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (path, new) in files {
        out.extend(OutFile::check(path.clone()).with(new).diff()?);
    }
    Ok(out)
}

/// A unified diff from `old` (nothing, if missing) to `new`, both named by `path`.
fn unified(path: &Path, old: Option<&[u8]>, new: &[u8]) -> String {
    let old_text = old.map(String::from_utf8_lossy).unwrap_or_default();
    let new_text = String::from_utf8_lossy(new);
    let name = path.display().to_string();
    similar::TextDiff::from_lines(old_text.as_ref(), new_text.as_ref())
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
        .to_string()
}

/// For `--check`: a unified diff from each file a build would remove to nothing.
pub fn removed_files(remove: &[PathBuf]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for path in remove {
        let old = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Read {
                    path: path.clone(),
                    source,
                })
            }
        };
        let old_text = String::from_utf8_lossy(&old);
        let diff = similar::TextDiff::from_lines(old_text.as_ref(), "")
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{}", path.display()), "/dev/null")
            .to_string();
        out.push(diff);
    }
    Ok(out)
}

/// Passes bytes on and hashes those taken: the digest of a file as it is written, without
/// holding it.
pub struct Digesting<'a> {
    out: &'a mut dyn Write,
    hash: sha2::Sha256,
}

impl<'a> Digesting<'a> {
    pub fn new(out: &'a mut dyn Write) -> Digesting<'a> {
        Digesting {
            out,
            hash: sha2::Digest::new(),
        }
    }

    /// `sha256:<hex>` of every byte written, as `list::digest` gives for the same text.
    pub fn digest(self) -> String {
        format!("sha256:{:x}", sha2::Digest::finalize(self.hash))
    }
}

impl Write for Digesting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        sha2::Digest::update(&mut self.hash, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// How many pieces `pieces_in_order` lets wait for their turn: enough to keep both cores busy,
/// few enough that the buffers stay small and are used again (each is a few hundred KiB).
const AHEAD: usize = 8;

/// Makes pieces `0..n` of a file with `make`, each into a buffer, and hands them to `take` in
/// order, once each. With a second core, a thread of its own makes pieces ahead (at most
/// `AHEAD` wait) while this one takes them, and this one makes pieces too whenever the next
/// to take isn't ready: a file that one core serializes while it hashes and writes it costs
/// about its hashing and writing alone. The first error (a piece's or `take`'s) in the order
/// of the pieces stops it, and is the one returned. One core, or fewer than `min` pieces (a
/// thread costs tens of microseconds), makes them here one by one.
pub fn pieces_in_order(
    n: usize,
    min: usize,
    make: impl Fn(usize, &mut Vec<u8>) -> std::io::Result<()> + Sync,
    take: impl FnMut(usize, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let two = n >= min.max(2) && crate::cores() >= 2;
    pieces_with(two, n, &make, take)
}

fn pieces_with(
    two: bool,
    n: usize,
    make: &(dyn Fn(usize, &mut Vec<u8>) -> std::io::Result<()> + Sync),
    take: impl FnMut(usize, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if two {
        pieces_on_two_threads(n, make, take)
    } else {
        pieces_one_by_one(n, make, take)
    }
}

fn pieces_one_by_one(
    n: usize,
    make: &dyn Fn(usize, &mut Vec<u8>) -> std::io::Result<()>,
    mut take: impl FnMut(usize, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for i in 0..n {
        buf.clear();
        make(i, &mut buf)?;
        take(i, &buf)?;
    }
    Ok(())
}

/// What the two threads of `pieces_on_two_threads` share.
struct Shelf {
    /// The first piece no thread has begun.
    next: usize,
    /// The next piece to take: pieces from `taken + AHEAD` on wait to be begun.
    taken: usize,
    /// Pieces made by the helper thread, or by this one ahead of its turn.
    ready: Vec<Option<std::io::Result<Vec<u8>>>>,
    /// Buffers taken, to be used again.
    spare: Vec<Vec<u8>>,
    /// The taking ended (done, or failed): the helper stops.
    stop: bool,
    /// The helper has ended (perhaps by a panic, which its join passes on).
    helper_gone: bool,
}

impl Shelf {
    /// Claims the next piece to begin, if it may be begun now.
    fn claim(&mut self, n: usize) -> Option<(usize, Vec<u8>)> {
        if self.stop || self.next >= n || self.next >= self.taken + AHEAD {
            return None;
        }
        self.next += 1;
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        Some((self.next - 1, buf))
    }
}

fn lock(shelf: &std::sync::Mutex<Shelf>) -> std::sync::MutexGuard<'_, Shelf> {
    // The lock is only held to move buffers and numbers, which can't panic halfway.
    shelf
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn pieces_on_two_threads(
    n: usize,
    make: &(dyn Fn(usize, &mut Vec<u8>) -> std::io::Result<()> + Sync),
    mut take: impl FnMut(usize, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::sync::{Condvar, Mutex};
    let shelf = Mutex::new(Shelf {
        next: 0,
        taken: 0,
        ready: (0..n).map(|_| None).collect(),
        spare: Vec::new(),
        stop: false,
        helper_gone: false,
    });
    let changed = Condvar::new();
    let helper = || {
        /// Says the helper is gone however it ends, so that nothing waits for it.
        struct Gone<'a>(&'a Mutex<Shelf>, &'a Condvar);
        impl Drop for Gone<'_> {
            fn drop(&mut self) {
                lock(self.0).helper_gone = true;
                self.1.notify_all();
            }
        }
        let _gone = Gone(&shelf, &changed);
        loop {
            let mut s = lock(&shelf);
            let (i, mut buf) = loop {
                if s.stop || s.next >= n {
                    return;
                }
                match s.claim(n) {
                    Some(claimed) => break claimed,
                    None => {
                        s = changed
                            .wait(s)
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                    }
                }
            };
            drop(s);
            let made = make(i, &mut buf).map(|()| buf);
            lock(&shelf).ready[i] = Some(made);
            changed.notify_all();
        }
    };
    let mut taker = || -> std::io::Result<()> {
        for i in 0..n {
            let buf = loop {
                let mut s = lock(&shelf);
                if let Some(made) = s.ready[i].take() {
                    break made?;
                }
                if let Some((j, mut buf)) = s.claim(n) {
                    drop(s);
                    let made = make(j, &mut buf).map(|()| buf);
                    if j == i {
                        break made?;
                    }
                    lock(&shelf).ready[j] = Some(made);
                    continue;
                }
                if s.helper_gone {
                    return Err(std::io::Error::other("a piece was never made"));
                }
                // The helper is making piece `i`, or the pieces ahead wait for it.
                drop(
                    changed
                        .wait(s)
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                );
            };
            take(i, &buf)?;
            let mut s = lock(&shelf);
            s.spare.push(buf);
            s.taken = i + 1;
            drop(s);
            changed.notify_all();
        }
        Ok(())
    };
    /// Stops the helper however the taking ends (a panic too), so that the join doesn't wait.
    struct Stop<'a>(&'a Mutex<Shelf>, &'a Condvar);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            lock(self.0).stop = true;
            self.1.notify_all();
        }
    }
    std::thread::scope(|scope| {
        let helper = scope.spawn(helper);
        let stop = Stop(&shelf, &changed);
        let taken = taker();
        drop(stop);
        match helper.join() {
            Ok(()) => taken,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
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
        read_file(path).map_err(err)
    }
}

/// Files smaller than this are read in one piece: a thread costs more than it saves.
const HALVES_MIN: u64 = 4 << 20;

/// A file's bytes. A large one is read in two halves at once, each on a core of its own: most
/// of such a read is the kernel copying into pages it first has to provide. A file that
/// turns out shorter than it was is read again in one piece, as `fs::read` reads it.
#[cfg(unix)]
fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    let mut file = fs::File::open(path)?;
    let size = file.metadata()?.len();
    let halves = size >= HALVES_MIN && crate::cores() > 1;
    // Room for the file, refused as `fs::read` refuses it (rather than aborting) when there is
    // none.
    let room = |size| {
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(size)
            .map_err(|_| std::io::ErrorKind::OutOfMemory)?;
        Ok::<_, std::io::Error>(bytes)
    };
    let Some(size) = usize::try_from(size).ok().filter(|_| halves) else {
        let mut bytes = room(usize::try_from(size).unwrap_or(0))?;
        // Through `take`: `File::read_to_end` would ask the file's size again.
        file.take(u64::MAX).read_to_end(&mut bytes)?;
        return Ok(bytes);
    };
    drop(room(size)?);
    // Zeroed by the kernel as it hands out the pages, not written here.
    let mut bytes = vec![0; size];
    let mid = size / 2;
    let (a, b) = bytes.split_at_mut(mid);
    let (a, b) = crate::side_by_side(
        || file.read_exact_at(a, 0),
        || file.read_exact_at(b, mid as u64),
    );
    match a.and(b) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return fs::read(path),
        other => other?,
    }
    // And whatever was added since.
    file.seek(SeekFrom::Start(size as u64))?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(not(unix))]
fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    fs::read(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large file, read in halves, is read whole and in order, and so is a small one.
    #[test]
    fn a_large_input_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        for size in [0, 1, 4 << 20, (4 << 20) + 7] {
            let path = dir.path().join(format!("in-{size}"));
            let bytes: Vec<u8> = (0..size as u32).map(|i| (i % 251) as u8).collect();
            fs::write(&path, &bytes).unwrap();
            assert!(read_input(&path).unwrap() == bytes, "{size}");
        }
    }

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

    /// Files larger than a chunk, compared as they are written, differing in each place a
    /// chunk can: the state is what a comparison of the whole files says, and `--check`'s
    /// diff holds the new bytes whole.
    #[test]
    fn files_are_compared_as_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        let old: Vec<u8> = (0..30_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let at = |n: usize| {
            let mut v = old.clone();
            v[n] = b'X';
            v
        };
        let cases: Vec<(&str, Vec<u8>, State)> = vec![
            ("same", old.clone(), State::Unchanged),
            ("first byte", at(0), State::Changed),
            ("at a chunk's end", at(CHUNK - 1), State::Changed),
            ("last byte", at(old.len() - 1), State::Changed),
            ("shorter", old[..old.len() - 1].to_vec(), State::Changed),
            ("longer", [&old[..], b"more\n"].concat(), State::Changed),
            ("empty", Vec::new(), State::Changed),
        ];
        for (what, new, state) in cases {
            for piece in [1000, CHUNK + 7, new.len().max(1)] {
                fs::write(&path, &old).unwrap();
                let mut out = OutFile::stage(path.clone(), true);
                for part in new.chunks(piece) {
                    out.write_all(part).unwrap();
                }
                let done = out.finish();
                assert_eq!(done.state(), state, "{what}, pieces of {piece}");
                let mut out = OutFile::check(path.clone());
                for part in new.chunks(piece) {
                    out.write_all(part).unwrap();
                }
                let diff = out.finish().diff().unwrap();
                assert_eq!(diff.is_some(), state != State::Unchanged, "{what}");
                if let Some(diff) = diff {
                    let expected = similar::TextDiff::from_lines(
                        String::from_utf8_lossy(&old).as_ref(),
                        String::from_utf8_lossy(&new).as_ref(),
                    )
                    .unified_diff()
                    .context_radius(3)
                    .to_string();
                    let hunks = &diff[diff.find("@@").unwrap()..];
                    assert_eq!(hunks, expected, "{what}, pieces of {piece}");
                }
                commit_files(vec![done], &[]).unwrap();
                assert!(fs::read(&path).unwrap() == new, "{what}");
            }
        }
        fs::remove_file(&path).unwrap();
        let done = OutFile::stage(path.clone(), true).with(b"x");
        assert_eq!(done.state(), State::New);
        commit_files(vec![done], &[]).unwrap();
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary files left"
        );
    }

    /// Every piece reaches `take` once, in order, with the bytes `make` gives it, on two
    /// threads as on one (buffers are used again: a piece never starts with another's
    /// bytes). The first error in the order of the pieces is the one returned, whichever
    /// thread met it first, and no piece after it is taken.
    #[test]
    fn pieces_are_taken_in_order_once_each() {
        // Pieces of uneven sizes, so that the threads overtake each other.
        let make = |i: usize, buf: &mut Vec<u8>| {
            for k in 0..(i * 7919) % 23 * 300 {
                buf.extend_from_slice(format!("{i}.{k} ").as_bytes());
            }
            buf.extend_from_slice(format!("end of {i}").as_bytes());
            Ok(())
        };
        let alone = |i: usize| {
            let mut buf = Vec::new();
            make(i, &mut buf).unwrap();
            buf
        };
        for two in [false, true] {
            for n in [0, 1, 2, AHEAD, AHEAD + 1, 3 * AHEAD + 5] {
                for _ in 0..5 {
                    let mut got = Vec::new();
                    pieces_with(two, n, &make, |i, piece| {
                        got.push((i, piece.to_vec()));
                        Ok(())
                    })
                    .unwrap();
                    let expected: Vec<_> = (0..n).map(|i| (i, alone(i))).collect();
                    assert!(got == expected, "{n} pieces, two threads: {two}");
                }
            }
            // A piece that fails, a piece after it that fails, and a `take` that fails.
            let n = 4 * AHEAD;
            for (bad_piece, late_piece, bad_take) in [
                (0, n - 1, n),
                (AHEAD + 1, AHEAD + 2, n),
                (n - 1, n, n),
                (2 * AHEAD, 2 * AHEAD + 1, AHEAD),
                (n, n, 5),
            ] {
                let failing = |i: usize, buf: &mut Vec<u8>| {
                    if i == bad_piece || i == late_piece {
                        return Err(std::io::Error::other(format!("piece {i}")));
                    }
                    make(i, buf)
                };
                let mut taken = Vec::new();
                let err = pieces_with(two, n, &failing, |i, _| {
                    if i == bad_take {
                        return Err(std::io::Error::other(format!("take {i}")));
                    }
                    taken.push(i);
                    Ok(())
                })
                .unwrap_err();
                let first = bad_piece.min(bad_take);
                let what = if bad_piece < bad_take {
                    "piece"
                } else {
                    "take"
                };
                assert_eq!(err.to_string(), format!("{what} {first}"), "two: {two}");
                assert_eq!(taken, (0..first).collect::<Vec<_>>(), "two: {two}");
            }
        }
    }

    /// A piece that panics (a bug) ends the call with that panic, whichever thread made it,
    /// instead of leaving the other thread waiting for ever.
    #[test]
    fn a_panicking_piece_is_passed_on() {
        for two in [false, true] {
            for bad in [0, 1, AHEAD + 3] {
                let made = std::panic::catch_unwind(|| {
                    let make = |i: usize, buf: &mut Vec<u8>| {
                        assert!(i != bad, "piece {bad}");
                        buf.push(b'x');
                        Ok(())
                    };
                    pieces_with(two, 2 * AHEAD, &make, |_, _| Ok(()))
                });
                assert!(made.is_err(), "piece {bad}, two threads: {two}");
            }
        }
    }

    /// A staged file is synced beside what comes next, and the commit waits for the sync: one
    /// that failed refuses the commit, naming its file, and changes nothing.
    #[test]
    fn a_failed_sync_refuses_the_commit() {
        let (dir, [a, b]) = folder_with(["a.txt", "b.txt"]);
        fs::write(&a, "old a").unwrap();
        let first = OutFile::stage(a.clone(), true).with(b"new a");
        let mut second = OutFile::stage(b.clone(), true).with(b"new b");
        assert!(first.sync.is_some() && second.sync.is_some());
        second.sync = Some(std::thread::spawn(|| {
            Err(std::io::Error::other("the disk is gone"))
        }));
        let err = commit_files(vec![first, second], &[]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("b.txt") && text.contains("the disk is gone"),
            "{text}"
        );
        assert_eq!(fs::read_to_string(&a).unwrap(), "old a");
        assert!(!b.exists(), "a new file stayed");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary files left"
        );
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

    /// A new empty folder, and the paths of `names` in it.
    fn folder_with<const N: usize>(names: [&str; N]) -> (tempfile::TempDir, [PathBuf; N]) {
        let dir = tempfile::tempdir().unwrap();
        let paths = names.map(|name| dir.path().join(name));
        (dir, paths)
    }

    #[test]
    fn a_failed_rename_puts_back_every_file_already_renamed() {
        let (dir, [a, b, c]) = folder_with(["a.txt", "b.txt", "c.txt"]);
        fs::write(&a, "old a").unwrap();
        // A folder that appears after the check: only the rename can fail on it.
        fs::create_dir(&c).unwrap();
        fs::write(c.join("inside"), "x").unwrap();
        let staged = vec![
            (a.as_path(), stage(&a, b"new a", Access::AsBefore).unwrap()),
            (b.as_path(), stage(&b, b"new b", Access::AsBefore).unwrap()),
            (c.as_path(), stage(&c, b"new c", Access::AsBefore).unwrap()),
        ];
        for (_, tmp) in &staged {
            let name = tmp.path().file_name().unwrap().to_str().unwrap();
            assert!(
                name.starts_with(TMP_PREFIX) && name.ends_with(TMP_SUFFIX),
                "{name}"
            );
        }
        let err = commit(staged, &[]).unwrap_err();
        assert!(err.to_string().contains("c.txt"), "{err}");
        assert_eq!(fs::read_to_string(&a).unwrap(), "old a");
        assert!(!b.exists(), "a new file stayed");
        assert_eq!(fs::read_to_string(c.join("inside")).unwrap(), "x");
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a.txt", "c.txt"], "temporary files left");
    }

    #[test]
    fn a_failed_rename_puts_back_a_file_already_removed() {
        let (dir, [a, gone, c]) = folder_with(["a.txt", "gone.txt", "c.txt"]);
        fs::write(&gone, "old").unwrap();
        // Succeeds: the file is removed along with the write.
        write_and_remove(&[(a.clone(), b"a".to_vec())], std::slice::from_ref(&gone)).unwrap();
        assert!(!gone.exists());
        fs::write(&gone, "old").unwrap();
        // A folder that appears after the check makes the removal fail: nothing changes.
        let staged = vec![(a.as_path(), stage(&a, b"new a", Access::AsBefore).unwrap())];
        fs::create_dir(&c).unwrap();
        let remove = vec![gone.clone(), c.clone()];
        let err = commit(staged, &remove).unwrap_err();
        assert!(err.to_string().contains("c.txt"), "{err}");
        assert_eq!(fs::read_to_string(&a).unwrap(), "a");
        assert_eq!(fs::read_to_string(&gone).unwrap(), "old", "not put back");
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a.txt", "c.txt", "gone.txt"], "temporary files left");
    }

    #[test]
    fn dash_o_refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_file(dir.path(), b"x").unwrap_err();
        assert!(
            err.to_string()
                .contains("it is a folder, not a regular file"),
            "{err}"
        );
        assert!(err.to_string().contains("omit -o"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
