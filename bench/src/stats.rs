//! Percentiles of samples, and median/spread of a figure over repetitions.

use serde::Serialize;

/// The `p`-th percentile (0–100) by nearest rank; `None` for no samples.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// One figure measured once per repetition: its median and spread (min–max).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub repetitions: usize,
    pub values: Vec<f64>,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Summary> {
        let median = percentile(values, 50.0)?;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Summary { median, min, max, repetitions: values.len(), values: values.to_vec() })
    }

    pub fn single(value: f64) -> Summary {
        Summary { median: value, min: value, max: value, repetitions: 1, values: vec![value] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50.0));
        assert_eq!(percentile(&samples, 99.0), Some(99.0));
        assert_eq!(percentile(&samples, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_has_median_and_spread() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).expect("a summary");
        assert_eq!((s.median, s.min, s.max, s.repetitions), (2.0, 1.0, 3.0, 3));
    }
}
