//! One module per scenario of issue 5. Each takes the shared [`Ctx`] and returns its rows.

pub mod api_read;
pub mod dispatch;
pub mod idle_memory;
pub mod latency;
pub mod log_latency;
pub mod log_throughput;
pub mod sse_fanout;
pub mod throughput;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;

use crate::api::{Api, Run};
use crate::deploy::Deployment;
use crate::floor::Floor;

/// How big each scenario is: `full` is the sizes, `quick` a CI smoke run.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: &'static str,
    pub latency_reps: usize,
    pub latency_runs: usize,
    pub throughput_reps: usize,
    pub throughput_runs: usize,
    pub throughput_parallelism: Vec<usize>,
    /// (lines per second, seconds) per live-log rate.
    pub log_rates: Vec<(u32, u32)>,
    pub log_latency_reps: usize,
    /// Runs whose first line is printed at once, the client following from the trigger.
    pub first_line_runs: usize,
    pub log_throughput_reps: usize,
    pub log_bytes: u64,
    pub api_reps: usize,
    pub api_seed_runs: u64,
    pub api_rate: u32,
    pub api_seconds: u32,
    pub idle_runs: usize,
    pub fanout_clients: usize,
    pub fanout_lines: u32,
    pub dispatch_reps: usize,
    pub dispatch_runs: usize,
}

impl Profile {
    pub fn full() -> Self {
        Self {
            name: "full",
            latency_reps: 3,
            latency_runs: 20,
            throughput_reps: 3,
            throughput_runs: 200,
            throughput_parallelism: vec![1, 4, 8],
            log_rates: vec![(10, 10), (10_000, 5)],
            log_latency_reps: 3,
            first_line_runs: 10,
            // 2, not 3: each repetition is 1 GiB (about a minute per configuration).
            log_throughput_reps: 2,
            log_bytes: 1 << 30,
            api_reps: 3,
            api_seed_runs: 100_000,
            api_rate: 2_000,
            api_seconds: 30,
            idle_runs: 1_000,
            fanout_clients: 200,
            fanout_lines: 5_000,
            dispatch_reps: 3,
            dispatch_runs: 2_000,
        }
    }

    pub fn quick() -> Self {
        Self {
            name: "quick",
            latency_reps: 2,
            latency_runs: 2,
            throughput_reps: 1,
            throughput_runs: 8,
            throughput_parallelism: vec![4],
            log_rates: vec![(10, 1), (10_000, 1)],
            log_latency_reps: 1,
            first_line_runs: 2,
            log_throughput_reps: 1,
            log_bytes: 16 << 20,
            api_reps: 1,
            api_seed_runs: 1_000,
            api_rate: 200,
            api_seconds: 2,
            idle_runs: 8,
            fanout_clients: 10,
            fanout_lines: 300,
            dispatch_reps: 1,
            dispatch_runs: 100,
        }
    }

    /// `--reps N`: the same repetition count for every repeated scenario.
    pub fn set_reps(&mut self, reps: usize) {
        self.latency_reps = reps;
        self.throughput_reps = reps;
        self.log_latency_reps = reps;
        self.log_throughput_reps = reps;
        self.api_reps = reps;
        self.dispatch_reps = reps;
    }

    /// How many repetitions `scenario` makes (1 for those measured once).
    pub fn reps(&self, scenario: &str) -> usize {
        let reps = match scenario {
            "latency" => self.latency_reps,
            "throughput" => self.throughput_reps,
            "log_latency" => self.log_latency_reps,
            "log_throughput" => self.log_throughput_reps,
            "api_read" => self.api_reps,
            "dispatch" => self.dispatch_reps,
            _ => 1,
        };
        reps.max(1)
    }
}

pub struct Ctx {
    pub profile: Profile,
    pub deployment: Deployment,
    pub floor: Floor,
    /// The log throughput floors, measured once per benchmark run.
    pub log_floor: Option<log_throughput::Floors>,
}

impl Ctx {
    pub fn api(&self) -> &Api {
        &self.deployment.api
    }
}

/// Submits `runs` runs of `pipeline` (at most 16 POSTs in flight), waits until none is
/// queued or running, checks they all succeeded; returns the time from the first POST to
/// the moment the last was seen final.
pub async fn run_batch(api: &Api, pipeline: &str, runs: usize, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let created: Vec<anyhow::Result<Run>> =
        futures::stream::iter(0..runs).map(|_| api.create_run(pipeline, &[])).buffer_unordered(16).collect().await;
    let ids: Vec<String> = created.into_iter().map(|r| r.map(|run| run.id)).collect::<anyhow::Result<_>>()?;
    wait_idle(api, started, timeout, QueuedPoll::Containers)
        .await
        .with_context(|| format!("{runs} runs of {pipeline}"))?;
    let elapsed = started.elapsed();
    let finished = api.list_runs(&format!("pipeline={pipeline}&limit=500")).await?;
    for id in &ids {
        match finished.iter().find(|r| &r.id == id) {
            Some(run) => run.expect_success()?,
            None => api.get_run(id).await?.expect_success()?,
        }
    }
    Ok(elapsed)
}

/// How often `wait_idle` looks again while runs are still queued, besides every 20 ms
/// once none is. The polls are the harness's own load on the control plane and its store,
/// which the floor does not carry: two listings every 20 ms are 100 requests/s through
/// the control plane and its store while the containers compete for the same cores.
#[derive(Clone, Copy)]
pub enum QueuedPoll {
    /// A queued run is at least one container's lifetime (~350 ms here) from final, so
    /// looking every 100 ms while any is queued cannot move the clock stop.
    Containers,
    /// No-op runs finish within milliseconds of their claim: keep 20 ms throughout.
    NoOp,
}

/// Polls until no run is queued or running; fails `timeout` after `since`. While runs
/// are queued only that is asked (one listing), at the `QueuedPoll` pace; once none is,
/// both listings every 20 ms, so the clock stops within 20 ms of the last run's end.
pub async fn wait_idle(api: &Api, since: Instant, timeout: Duration, pace: QueuedPoll) -> anyhow::Result<()> {
    loop {
        let queued = !api.list_runs("status=queued&limit=1").await?.is_empty();
        let busy = queued || !api.list_runs("status=running&limit=1").await?.is_empty();
        if !busy {
            return Ok(());
        }
        if since.elapsed() > timeout {
            bail!("not finished after {timeout:?}");
        }
        let pause = match (queued, pace) {
            (true, QueuedPoll::Containers) => Duration::from_millis(100),
            _ => Duration::from_millis(20),
        };
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reps_defaults_and_override() {
        let full = Profile::full();
        assert_eq!(["throughput", "dispatch", "api_read"].map(|s| full.reps(s)), [3, 3, 3]);
        assert_eq!(full.reps("log_throughput"), 2);
        assert_eq!(full.reps("sse_fanout"), 1);
        let quick = Profile::quick();
        assert_eq!(["throughput", "dispatch", "api_read", "log_throughput"].map(|s| quick.reps(s)), [1, 1, 1, 1]);
        let mut quick = quick;
        quick.set_reps(2);
        for s in ["latency", "throughput", "log_latency", "log_throughput", "dispatch", "api_read"] {
            assert_eq!(quick.reps(s), 2, "{s}");
        }
    }
}
