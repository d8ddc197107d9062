//! Per-adapter kernel tuning: where a kernel family has variants (tile shapes, layouts), the
//! launcher asks [`select`] which one to use for a (dtype, shape) key. With tuning on, each
//! candidate is timed once on that adapter and the winner cached on disk, keyed by adapter name
//! and driver, so later runs (and other processes) reuse it; with tuning off (the default, and
//! always in tests) the launcher's fixed default is used, so results never depend on timing.
//!
//! Every op's variants are one typed value implementing [`Variant`]: its `Display` is the stable
//! name the cache stores, its `FromStr` parses that name back and refuses unknown ones with an
//! error naming the op and listing the valid names.

use super::{Gpu, GpuInfo};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fmt::{Debug, Display};
use std::path::{Path, PathBuf};
use std::str::FromStr;
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
    /// then cached. With tuning off, or a single candidate, the default without measuring.
    ///
    /// A cached name that is not a variant of `V`, or not one of `candidates`, is an error
    /// naming the op, the name, the valid ones and the file: the file was edited by hand or by
    /// another version, and silently re-tuning would hide that.
    pub fn pick<V: Variant>(
        &self,
        key: &str,
        candidates: &[V],
        measure: &mut dyn FnMut(V) -> Result<f64>,
    ) -> Result<V> {
        let Some(&default) = candidates.first() else {
            return Err(Error::Argument {
                op: V::OP,
                arg: "candidates",
                reason: format!("no variants for {key}"),
            });
        };
        let Some(file) = &self.file else {
            return Ok(default);
        };
        if candidates.len() == 1 {
            return Ok(default);
        }
        let full = format!("{}|{key}", self.adapter);
        let cached = self
            .table
            .lock()
            .map_err(|_| poisoned())?
            .get(&full)
            .cloned();
        if let Some(name) = cached {
            let in_file = |reason: String| Error::Argument {
                op: V::OP,
                arg: "variant",
                reason: format!(
                    "{reason}, read from the tuning cache {} (key `{full}`)",
                    file.display()
                ),
            };
            let v = match name.parse::<V>() {
                Ok(v) => v,
                Err(Error::Argument { reason, .. }) => return Err(in_file(reason)),
                Err(e) => return Err(e),
            };
            if !candidates.contains(&v) {
                return Err(in_file(format!(
                    "`{v}` does not apply here (candidates: {})",
                    join(candidates)
                )));
            }
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

/// The kernel variants of one op (GEMM tiles, conv kernels, GroupNorm workgroups, softmax
/// layouts, attention paths): a small `Copy` value. `Display` is its stable name — what the
/// tuning cache stores and check labels print — and `FromStr` (implement it with
/// [`parse_variant`]) parses the name back, refusing unknown names with an error that names
/// the op, the name and the valid ones.
pub trait Variant: Copy + PartialEq + Debug + Display + FromStr<Err = Error> + 'static {
    /// The op, as tuning keys and errors name it.
    const OP: &'static str;
    /// The facts of one call that decide which variants can run it and which is the default
    /// (shape, dtype, layout of the operands).
    type Ctx;
    /// Every variant, in the order tuning measures them after the default. `ops::all_variants`
    /// builds each op's kernel keys from this list, so every variant is validated.
    fn all() -> Vec<Self>;
    /// The fixed default for this call on this adapter (never timing-dependent).
    fn default_for(info: &GpuInfo, ctx: &Self::Ctx) -> Self;
    /// Why this variant cannot run this call on this adapter, or `None` when it can.
    fn unsupported(self, info: &GpuInfo, ctx: &Self::Ctx) -> Option<String>;
}

/// Parses the stable name of a variant of `V` (for its `FromStr`): an unknown name is an
/// [`Error::Argument`] naming the op and the name and listing the valid names.
pub fn parse_variant<V: Variant>(name: &str) -> Result<V> {
    let all = V::all();
    all.iter()
        .copied()
        .find(|v| v.to_string() == name)
        .ok_or_else(|| Error::Argument {
            op: V::OP,
            arg: "variant",
            reason: format!("unknown variant `{name}` (valid: {})", join(&all)),
        })
}

/// The variants of `V` that can run this call on this adapter, in [`Variant::all`] order
/// (forced-variant tests run each).
pub fn runnable<V: Variant>(info: &GpuInfo, ctx: &V::Ctx) -> Vec<V> {
    V::all()
        .into_iter()
        .filter(|v| v.unsupported(info, ctx).is_none())
        .collect()
}

/// The variant one call of an op runs: `forced` when given (an error naming the op and the
/// variant when it cannot run this call); else, with tuning off, [`Variant::default_for`];
/// with tuning on, the adapter's cached winner for `"{op}|{key()}"` or the fastest runnable
/// candidate by `measure` (seconds; see [`time_recorded`]), then cached.
pub fn select<V: Variant>(
    gpu: &Gpu,
    forced: Option<V>,
    ctx: &V::Ctx,
    key: impl FnOnce() -> String,
    measure: &mut dyn FnMut(V) -> Result<f64>,
) -> Result<V> {
    let info = gpu.info();
    if let Some(v) = forced {
        return match v.unsupported(info, ctx) {
            None => Ok(v),
            Some(why) => Err(Error::Argument {
                op: V::OP,
                arg: "variant",
                reason: format!("`{v}` {why} (variants: {})", join(&V::all())),
            }),
        };
    }
    let default = V::default_for(info, ctx);
    if !gpu.tuner().enabled() {
        return Ok(default);
    }
    let mut candidates = vec![default];
    candidates.extend(
        runnable::<V>(info, ctx)
            .into_iter()
            .filter(|&v| v != default),
    );
    gpu.tuner()
        .pick(&format!("{}|{}", V::OP, key()), &candidates, measure)
}

fn join<V: Display>(vs: &[V]) -> String {
    vs.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
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
    let text = serde_json::to_string_pretty(table).map_err(std::io::Error::other)?;
    crate::output::OutputPlan::write_one("tuning table", path, text.as_bytes())
        .map_err(std::io::Error::other)
}

/// Seconds per submission of what `record` records (best of 3 after a warm-up), for
/// [`Tuner::pick`]'s `measure`.
pub fn time_recorded(
    gpu: &super::Gpu,
    record: &mut dyn FnMut(&mut super::Recorder<'_>) -> Result<()>,
) -> Result<f64> {
    let mut r = super::Recorder::for_timing(gpu);
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
