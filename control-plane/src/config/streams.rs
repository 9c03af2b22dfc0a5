//! `NATS_*_MAX_BYTES` and `NATS_*_MAX_AGE_SECONDS`: the limits of the JetStream
//! streams and of the code bucket (`bus::StreamBounds`), and `LATE_LOG_PURGE_AFTER_SECONDS`.

use super::{Error, Source};
use crate::bus::StreamBounds;
use std::time::Duration;

const KIB: i64 = 1024;
const MIB: i64 = 1024 * KIB;

/// Reads the stream limits. `default_timeout` (`CONTAINER_TIMEOUT`): a live log must
/// outlive the job that writes it, so the logs' age limit may not be shorter.
pub(super) fn bounds(src: &Source<'_>, default_timeout: Option<u64>) -> Result<StreamBounds, Error> {
    let d = StreamBounds::default();
    let bounds = StreamBounds {
        jobs_max_bytes: bytes(src, "NATS_JOBS_MAX_BYTES", d.jobs_max_bytes, 64 * KIB)?,
        jobs_max_age: age(src, "NATS_JOBS_MAX_AGE_SECONDS", d.jobs_max_age, 60)?,
        logs_max_bytes: bytes(src, "NATS_LOGS_MAX_BYTES", d.logs_max_bytes, 64 * KIB)?,
        logs_max_age: age(src, "NATS_LOGS_MAX_AGE_SECONDS", d.logs_max_age, 3600)?,
        code_max_bytes: bytes(src, "NATS_CODE_MAX_BYTES", d.code_max_bytes, MIB)?,
        code_max_age: age(src, "NATS_CODE_MAX_AGE_SECONDS", d.code_max_age, 3600)?,
    };
    if let Some(timeout) = default_timeout
        && bounds.logs_max_age.as_secs() <= timeout
    {
        return Err(Error::Invalid {
            name: "NATS_LOGS_MAX_AGE_SECONDS",
            value: bounds.logs_max_age.as_secs().to_string(),
            message: format!(
                "must be longer than CONTAINER_TIMEOUT ({timeout} s): a running job's live log would age out before it is archived"
            ),
        });
    }
    Ok(bounds)
}

/// `LATE_LOG_PURGE_AFTER_SECONDS` (60): how long after an attempt ended the sweeper
/// purges its live log subject once more (late batches of a cut-off runner).
pub(super) fn late_log_purge_after(src: &Source<'_>) -> Result<Duration, Error> {
    src.seconds("LATE_LOG_PURGE_AFTER_SECONDS", 60)
}

/// A size in bytes: a whole number, optionally with `KiB`, `MiB` or `GiB` (or `K`, `M`,
/// `G`, the same binary units).
fn bytes(src: &Source<'_>, name: &'static str, default: i64, min: i64) -> Result<i64, Error> {
    let Some(raw) = src.get(name) else { return Ok(default) };
    let invalid = |message: String| Error::Invalid { name, value: raw.clone(), message };
    let value = parse_bytes(&raw)
        .ok_or_else(|| invalid("expected a number of bytes such as 268435456, 256MiB or 8GiB".into()))?;
    if value < min {
        return Err(invalid(format!("must be at least {min} bytes")));
    }
    Ok(value)
}

fn parse_bytes(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    let digits = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(digits);
    let number: i64 = number.parse().ok()?;
    let unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => 1024 * MIB,
        _ => return None,
    };
    number.checked_mul(unit)
}

fn age(src: &Source<'_>, name: &'static str, default: Duration, min_secs: u64) -> Result<Duration, Error> {
    let value = src.seconds(name, default.as_secs())?;
    if value.as_secs() < min_secs {
        return Err(Error::Invalid {
            name,
            value: value.as_secs().to_string(),
            message: format!("must be at least {min_secs} seconds"),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<StreamBounds, String> {
        let lookup = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        let timeout = vars.iter().find(|(k, _)| *k == "CONTAINER_TIMEOUT").and_then(|(_, v)| v.parse().ok());
        bounds(&Source(&lookup), timeout).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_units_and_refusals() {
        assert_eq!(load(&[]), Ok(StreamBounds::default()));
        let set = load(&[
            ("NATS_JOBS_MAX_BYTES", "1048576"),
            ("NATS_LOGS_MAX_BYTES", "2GiB"),
            ("NATS_CODE_MAX_BYTES", "512 MiB"),
            ("NATS_LOGS_MAX_AGE_SECONDS", "259200"),
        ])
        .expect("valid");
        assert_eq!((set.jobs_max_bytes, set.logs_max_bytes, set.code_max_bytes), (MIB, 2048 * MIB, 512 * MIB));
        assert_eq!(set.logs_max_age, Duration::from_secs(259_200));
        for (vars, starts) in [
            (&[("NATS_LOGS_MAX_BYTES", "lots")][..], "NATS_LOGS_MAX_BYTES:"),
            (&[("NATS_LOGS_MAX_BYTES", "1KiB")][..], "NATS_LOGS_MAX_BYTES:"),
            (&[("NATS_CODE_MAX_BYTES", "8TB")][..], "NATS_CODE_MAX_BYTES:"),
            (&[("NATS_LOGS_MAX_AGE_SECONDS", "60")][..], "NATS_LOGS_MAX_AGE_SECONDS:"),
            (&[("NATS_JOBS_MAX_AGE_SECONDS", "0")][..], "NATS_JOBS_MAX_AGE_SECONDS:"),
        ] {
            let err = load(vars).err().unwrap_or_default();
            assert!(err.starts_with(starts), "{err}");
        }
    }

    #[test]
    fn live_logs_must_outlive_the_jobs_timeout() {
        let err =
            load(&[("CONTAINER_TIMEOUT", "7200"), ("NATS_LOGS_MAX_AGE_SECONDS", "3600")]).err().unwrap_or_default();
        assert!(err.starts_with("NATS_LOGS_MAX_AGE_SECONDS:") && err.contains("CONTAINER_TIMEOUT"), "{err}");
        assert!(load(&[("CONTAINER_TIMEOUT", "7200"), ("NATS_LOGS_MAX_AGE_SECONDS", "7201")]).is_ok());
    }
}
