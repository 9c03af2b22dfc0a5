//! Bounded polling.

use std::future::Future;
use std::time::{Duration, Instant};

/// Calls `probe` every `interval` until it returns `Some`, or panics after `timeout`
/// with `what` and the last observation (`Err` text) the probe reported.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, interval: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last observation: {last}");
        }
        tokio::time::sleep(interval).await;
    }
}
