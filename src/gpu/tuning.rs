//! Per-adapter kernel tuning: where a kernel family has variants (tile shapes, layouts), the
//! launcher asks the [`Tuner`] which one to use for a (dtype, shape) key. With tuning on, each
//! candidate is timed once on that adapter and the winner cached on disk, keyed by adapter name
//! and driver, so later runs (and other processes) reuse it; with tuning off (the default, and
//! always in tests) the launcher's fixed default is used, so results never depend on timing.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Whether and where to tune.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Tuning {
    /// Read `DIFFUSE_TUNE`: unset or `0` → off; `1` → the default cache file
    /// (`$XDG_CACHE_HOME/diffuse/tuning.json`, else `$HOME/.cache/diffuse/tuning.json`);
    /// anything else → that path.
    #[default]
    FromEnv,
    /// Always use the launchers' defaults.
    Off,
    /// Tune, caching winners in this JSON file.
    Cache(PathBuf),
}

impl Tuning {
    fn resolve(&self) -> Option<PathBuf> {
        match self {
            Tuning::Off => None,
            Tuning::Cache(p) => Some(p.clone()),
            Tuning::FromEnv => match std::env::var("DIFFUSE_TUNE").ok()?.as_str() {
                "" | "0" => None,
                "1" => {
                    let base = std::env::var_os("XDG_CACHE_HOME")
                        .map(PathBuf::from)
                        .or_else(|| {
                            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                        })?;
                    Some(base.join("diffuse").join("tuning.json"))
                }
                p => Some(PathBuf::from(p)),
            },
        }
    }
}

/// The tuning table of one context.
pub struct Tuner {
    file: Option<PathBuf>,
    adapter: String,
    table: Mutex<BTreeMap<String, String>>,
    measured: AtomicU64,
}

impl Tuner {
    /// A tuner for the adapter `adapter` (name and driver); loads the cache file when tuning
    /// is on. An unreadable or corrupt cache is reported and replaced, never fatal.
    pub fn new(tuning: &Tuning, adapter: &str) -> Self {
        let file = tuning.resolve();
        let mut table = BTreeMap::new();
        if let Some(f) = &file {
            if let Ok(text) = std::fs::read_to_string(f) {
                match serde_json::from_str::<BTreeMap<String, String>>(&text) {
                    Ok(t) => table = t,
                    Err(e) => log::warn!("ignoring corrupt tuning cache {}: {e}", f.display()),
                }
            }
        }
        Tuner {
            file,
            adapter: adapter.to_string(),
            table: Mutex::new(table),
            measured: AtomicU64::new(0),
        }
    }

    /// True when launchers should consult [`Tuner::pick`].
    pub fn enabled(&self) -> bool {
        self.file.is_some()
    }

    /// Candidate timings run so far by this context (tests check cache hits with it).
    pub fn measurements(&self) -> u64 {
        self.measured.load(Ordering::Relaxed)
    }

    /// The variant for `key` among `candidates` (the first is the default): the cached winner,
    /// or — when tuning is on and none is cached — the fastest by `measure` (seconds), which is
    /// then cached. With tuning off, the default.
    pub fn pick(
        &self,
        key: &str,
        candidates: &[&'static str],
        measure: &mut dyn FnMut(&str) -> Result<f64>,
    ) -> Result<&'static str> {
        let Some(&default) = candidates.first() else {
            return Err(Error::Argument {
                op: "tuning",
                arg: "candidates",
                reason: format!("no variants for {key}"),
            });
        };
        let Some(file) = &self.file else {
            return Ok(default);
        };
        let full = format!("{}|{key}", self.adapter);
        let cached = self
            .table
            .lock()
            .map_err(|_| poisoned())?
            .get(&full)
            .cloned();
        if let Some(v) = cached.and_then(|c| candidates.iter().find(|&&x| x == c)) {
            return Ok(v);
        }
        let mut best = (f64::INFINITY, default);
        for &c in candidates {
            self.measured.fetch_add(1, Ordering::Relaxed);
            let s = measure(c)?;
            if s < best.0 {
                best = (s, c);
            }
        }
        let mut t = self.table.lock().map_err(|_| poisoned())?;
        t.insert(full, best.1.to_string());
        if let Err(e) = save(file, &t) {
            log::warn!("could not write tuning cache {}: {e}", file.display());
        }
        Ok(best.1)
    }
}

fn poisoned() -> Error {
    Error::Argument {
        op: "tuning",
        arg: "table",
        reason: "a thread panicked while holding the tuning table".into(),
    }
}

fn save(path: &Path, table: &BTreeMap<String, String>) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let text = serde_json::to_string_pretty(table).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Seconds per submission of what `record` records (best of 3 after a warm-up), for
/// [`Tuner::pick`]'s `measure`.
pub fn time_recorded(
    gpu: &super::Gpu,
    record: &mut dyn FnMut(&mut super::Recorder<'_>) -> Result<()>,
) -> Result<f64> {
    let mut r = gpu.recorder();
    record(&mut r)?;
    let one = r.finish()?;
    one.submit(gpu);
    gpu.wait()?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        one.submit(gpu);
        gpu.wait()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}
