//! The container limits a runner applies: a job spec's limits where it gives them,
//! the runner's own defaults (`RUNNER_DEFAULT_*`) for every one it leaves out.
//! A spec never means "no limit": `resources: null`, a missing field, an older
//! control plane that sent `None` for "unlimited" all get the defaults, and a value
//! the engine would read as "unlimited" (0) or past the runner's cap
//! (`RUNNER_MAX_*`) fails the job at setup.

use shared::protocol::Resources;

/// Smallest limits the engine accepts (and the control plane's pipeline checks use).
pub const MIN_MEMORY_MB: u64 = 6;
pub const MIN_CPU_MILLIS: u64 = 10;
pub const MIN_PIDS: i64 = 16;

/// A runner's limits: what a job gets when its spec names none, and optionally the
/// most a spec may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub default_memory_mb: u64,
    pub default_cpu_millis: u64,
    pub default_pids: i64,
    pub max_memory_mb: Option<u64>,
    pub max_cpu_millis: Option<u64>,
    pub max_pids: Option<i64>,
}

impl Default for Settings {
    /// The same as the control plane's `CONTAINER_*` defaults, so a job sees the same
    /// limits whichever side filled them in.
    fn default() -> Self {
        Settings {
            default_memory_mb: 2048,
            default_cpu_millis: 2000,
            default_pids: 1024,
            max_memory_mb: None,
            max_cpu_millis: None,
            max_pids: None,
        }
    }
}

/// The limits a container is created with: every one set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    pub memory_mb: u64,
    pub cpu_millis: u64,
    pub pids: i64,
}

impl Effective {
    pub fn memory_bytes(&self) -> i64 {
        i64::try_from(self.memory_mb).unwrap_or(i64::MAX).saturating_mul(1024 * 1024)
    }

    pub fn nano_cpus(&self) -> i64 {
        i64::try_from(self.cpu_millis).unwrap_or(i64::MAX).saturating_mul(1_000_000)
    }
}

impl Settings {
    /// The spec's limits, each missing one replaced by the default; `Err` names a limit
    /// the runner does not accept (below the engine's minimum, e.g. 0, or above its cap).
    pub fn apply(&self, asked: &Resources) -> Result<Effective, String> {
        Ok(Effective {
            memory_mb: pick("memory_mb", asked.memory_mb, self.default_memory_mb, MIN_MEMORY_MB, self.max_memory_mb)?,
            cpu_millis: pick(
                "cpu_millis",
                asked.cpu_millis,
                self.default_cpu_millis,
                MIN_CPU_MILLIS,
                self.max_cpu_millis,
            )?,
            pids: pick("pids", asked.pids, self.default_pids, MIN_PIDS, self.max_pids)?,
        })
    }
}

fn pick<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    asked: Option<T>,
    default: T,
    min: T,
    max: Option<T>,
) -> Result<T, String> {
    let Some(value) = asked else { return Ok(default) };
    if value < min {
        return Err(format!("resources.{name} = {value} is below the minimum of {min}"));
    }
    if let Some(max) = max
        && value > max
    {
        return Err(format!("resources.{name} = {value} is above this runner's maximum of {max}"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Resources = Resources { memory_mb: None, cpu_millis: None, pids: None };

    #[test]
    fn missing_limits_get_the_defaults_and_given_ones_are_kept() {
        let settings =
            Settings { default_memory_mb: 512, default_cpu_millis: 1500, default_pids: 256, ..Default::default() };
        assert_eq!(settings.apply(&NONE), Ok(Effective { memory_mb: 512, cpu_millis: 1500, pids: 256 }));
        let some = Resources { memory_mb: Some(64), ..NONE };
        assert_eq!(settings.apply(&some), Ok(Effective { memory_mb: 64, cpu_millis: 1500, pids: 256 }));
        // Above the default is fine without a cap.
        let big = Resources { memory_mb: Some(8192), cpu_millis: Some(4000), pids: Some(100_000) };
        assert_eq!(settings.apply(&big), Ok(Effective { memory_mb: 8192, cpu_millis: 4000, pids: 100_000 }));
        let defaults = Settings::default().apply(&NONE).expect("defaults");
        assert_eq!(defaults.memory_bytes(), 2048 * 1024 * 1024);
        assert_eq!(defaults.nano_cpus(), 2_000_000_000);
        assert_eq!(defaults.pids, 1024);
    }

    #[test]
    fn a_limit_the_engine_reads_as_none_or_past_the_cap_is_refused() {
        let settings = Settings { max_memory_mb: Some(4096), max_pids: Some(2048), ..Default::default() };
        for (asked, name) in [
            (Resources { memory_mb: Some(0), ..NONE }, "memory_mb"),
            (Resources { cpu_millis: Some(0), ..NONE }, "cpu_millis"),
            (Resources { pids: Some(0), ..NONE }, "pids"),
            (Resources { pids: Some(-1), ..NONE }, "pids"),
        ] {
            let err = settings.apply(&asked).err().unwrap_or_default();
            assert!(err.starts_with(&format!("resources.{name}")) && err.contains("minimum"), "{err}");
        }
        let err = settings.apply(&Resources { memory_mb: Some(4097), ..NONE }).err().unwrap_or_default();
        assert!(err.contains("resources.memory_mb = 4097") && err.contains("maximum of 4096"), "{err}");
        assert_eq!(settings.apply(&Resources { memory_mb: Some(4096), ..NONE }).map(|e| e.memory_mb), Ok(4096));
        // No cap on CPU here: any amount above the minimum.
        assert_eq!(settings.apply(&Resources { cpu_millis: Some(64_000), ..NONE }).map(|e| e.cpu_millis), Ok(64_000));
    }
}
