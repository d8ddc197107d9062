//! All output files (and folders) of one run, planned up front and committed together: the one
//! temp-then-rename mechanism of the crate.
//!
//! [`OutputPlan::file`] / [`OutputPlan::dir`] validate a path before any work (its parent
//! exists and is a folder, a file output is not a folder, a folder output does not exist yet,
//! two outputs are not the same path) and reserve a hidden temporary beside it, which proves
//! the folder writable. The run writes every output into its temporary; [`OutputPlan::commit`]
//! renames them into place only when all were written. Dropping an uncommitted plan (any error
//! path, a panic unwinding) removes every temporary, so a failed run leaves existing files
//! byte-identical and no new files behind. Only a process killed outright (SIGKILL) can leave a
//! `.NAME.partial-PID` temporary.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Whether an output is one file or a folder written as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

#[derive(Debug)]
struct Entry {
    what: String,
    path: PathBuf,
    tmp: PathBuf,
    kind: Kind,
    written: bool,
}

/// The outputs of one run (see the module docs). Indices returned by [`OutputPlan::file`] and
/// [`OutputPlan::dir`] name an output in later calls.
#[derive(Debug, Default)]
pub struct OutputPlan {
    entries: Vec<Entry>,
}

fn write_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Write {
        file: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// A new hidden name beside `path`, unique to this process and output (plans on several
/// threads never share a temporary).
fn temp_name(path: &Path) -> Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .ok_or_else(|| write_err(path, "the path names no file"))?;
    Ok(path.with_file_name(format!(
        ".{}.partial-{}-{k}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

impl OutputPlan {
    pub fn new() -> OutputPlan {
        OutputPlan::default()
    }

    /// Validates and reserves the output file `path` (`what` names it in errors: a flag such as
    /// `--out`). An existing file is replaced at commit; a folder, a missing or read-only parent
    /// folder, or a path given twice is an error now.
    pub fn file(&mut self, what: &str, path: &Path) -> Result<usize> {
        self.add(what, path, Kind::File)
    }

    /// Validates and reserves the output folder `path`, which must not exist yet; the run fills
    /// the temporary folder [`OutputPlan::path`] and commit renames it into place.
    pub fn dir(&mut self, what: &str, path: &Path) -> Result<usize> {
        self.add(what, path, Kind::Dir)
    }

    fn add(&mut self, what: &str, path: &Path, kind: Kind) -> Result<usize> {
        let fail = |reason: String| write_err(path, format!("{what}: {reason}"));
        if path.as_os_str().is_empty() {
            return Err(fail("empty path".into()));
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(fail(format!(
                "the folder {} does not exist",
                parent.display()
            )));
        }
        match (kind, std::fs::symlink_metadata(path)) {
            (Kind::File, Ok(m)) if m.is_dir() => {
                return Err(fail("is a folder; give a file name".into()))
            }
            (Kind::File, Ok(m)) if !m.is_file() && !m.file_type().is_symlink() => {
                return Err(fail("exists and is not a regular file".into()))
            }
            (Kind::Dir, Ok(_)) => return Err(fail("already exists; give a new folder".into())),
            _ => {}
        }
        let canon = |p: &Path| {
            p.parent()
                .and_then(|d| {
                    std::fs::canonicalize(if d.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        d
                    })
                    .ok()
                })
                .map(|d| d.join(p.file_name().unwrap_or_default()))
        };
        let me = canon(path);
        if let Some(e) = self.entries.iter().find(|e| canon(&e.path) == me) {
            return Err(fail(format!("is also the {} output", e.what)));
        }
        let k = self.entries.len();
        let tmp = temp_name(path)?;
        let made = match kind {
            Kind::File => std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map(drop),
            Kind::Dir => std::fs::create_dir(&tmp),
        };
        made.map_err(|e| fail(format!("cannot write in {}: {e}", parent.display())))?;
        self.entries.push(Entry {
            what: what.into(),
            path: path.to_path_buf(),
            tmp,
            kind,
            written: false,
        });
        Ok(k)
    }

    /// The temporary to write output `id` into (a file, or a folder to fill).
    pub fn path(&mut self, id: usize) -> &Path {
        let e = &mut self.entries[id];
        e.written = true;
        &e.tmp
    }

    /// The final path of output `id`.
    pub fn target(&self, id: usize) -> &Path {
        &self.entries[id].path
    }

    /// Writes `bytes` as the content of file output `id`.
    pub fn write(&mut self, id: usize, bytes: &[u8]) -> Result<()> {
        let e = &mut self.entries[id];
        std::fs::write(&e.tmp, bytes).map_err(|err| write_err(&e.path, err))?;
        e.written = true;
        Ok(())
    }

    /// Renames every output into place. An output never written is an error (nothing is
    /// renamed then). The renames are in the same folders as the temporaries, so they do not
    /// fail short of the disk being removed; if one does, the outputs not yet renamed are removed
    /// and the error names the file.
    pub fn commit(mut self) -> Result<()> {
        if let Some(e) = self.entries.iter().find(|e| !e.written) {
            return Err(write_err(
                &e.path,
                format!("{}: nothing was written", e.what),
            ));
        }
        let entries = std::mem::take(&mut self.entries);
        let mut rest = entries.into_iter();
        while let Some(e) = rest.next() {
            if let Err(err) = std::fs::rename(&e.tmp, &e.path) {
                remove(&e);
                self.entries = rest.collect();
                return Err(write_err(&e.path, err));
            }
        }
        Ok(())
    }

    /// Writes one file atomically: the plan of a single output.
    pub fn write_one(what: &str, path: &Path, bytes: &[u8]) -> Result<()> {
        let mut p = OutputPlan::new();
        let id = p.file(what, path)?;
        p.write(id, bytes)?;
        p.commit()
    }
}

fn remove(e: &Entry) {
    let _ = match e.kind {
        Kind::File => std::fs::remove_file(&e.tmp),
        Kind::Dir => std::fs::remove_dir_all(&e.tmp),
    };
}

impl Drop for OutputPlan {
    fn drop(&mut self) {
        for e in &self.entries {
            remove(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OutputPlan;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("diffuse-output-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn listing(d: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn all_or_nothing() {
        let d = scratch("plan");
        std::fs::write(d.join("a.png"), b"old").unwrap();
        {
            let mut p = OutputPlan::new();
            let a = p.file("--out", &d.join("a.png")).unwrap();
            let _b = p.file("--raw", &d.join("b.safetensors")).unwrap();
            p.write(a, b"new").unwrap();
            // Dropped without commit: the run failed.
        }
        assert_eq!(listing(&d), vec!["a.png"]);
        assert_eq!(std::fs::read(d.join("a.png")).unwrap(), b"old");
        let mut p = OutputPlan::new();
        let a = p.file("--out", &d.join("a.png")).unwrap();
        let b = p.file("--raw", &d.join("b.safetensors")).unwrap();
        // An unwritten output stops the commit before any rename.
        p.write(a, b"new").unwrap();
        let mut q = OutputPlan::new();
        let qa = q.file("--out", &d.join("c.png")).unwrap();
        q.write(qa, b"c").unwrap();
        let _ = q.file("--json", &d.join("d.json")).unwrap();
        assert!(q.commit().unwrap_err().to_string().contains("--json"));
        p.write(b, b"raw").unwrap();
        p.commit().unwrap();
        assert_eq!(listing(&d), vec!["a.png", "b.safetensors"]);
        assert_eq!(std::fs::read(d.join("a.png")).unwrap(), b"new");
    }

    #[test]
    fn bad_paths_are_refused_up_front() {
        let d = scratch("bad");
        let mut p = OutputPlan::new();
        let e = p.file("--json", &d).unwrap_err().to_string();
        assert!(e.contains("--json") && e.contains("folder"), "{e}");
        let e = p
            .file("--out", &d.join("missing/x.png"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        p.file("--out", &d.join("x.png")).unwrap();
        let e = p.file("--raw", &d.join("x.png")).unwrap_err().to_string();
        assert!(e.contains("--raw") && e.contains("--out"), "{e}");
        std::fs::create_dir(d.join("q")).unwrap();
        let e = p.dir("--out", &d.join("q")).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        drop(p);
        assert_eq!(listing(&d), vec!["q"]);
    }
}
