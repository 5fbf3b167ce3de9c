//! One `DescribeServices` poller for every service a fleet release follows in one region:
//! the looks that the core's wait loops ask for ([`EcsRolloutWatch`] of each service)
//! are gathered per cluster into rounds, each round one call per 10 services (the API's
//! limit), at most one round per poll interval, and the answers fanned out. A throttled
//! round slows the poller (the next round waits twice as long, up to 30 s) and the
//! services simply wait for their look; only a poller throttled round after round tells
//! them (as [`StageErrorKind::Throttled`]), so that the core's loop decides.
//!
//! [`EcsRolloutWatch`]: super::observe
//! [`StageErrorKind::Throttled`]: pipeline_core::StageErrorKind::Throttled

use crate::errors::{is_throttling, stage_error};
use aws_sdk_ecs::types::Service;
use pipeline_core::StageError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The most services one `DescribeServices` call may name.
pub const DESCRIBE_SERVICES_LIMIT: usize = 10;
/// How long a round waits for more looks after the first asked (services whose loops
/// are in step ask within milliseconds of each other).
const GATHER: Duration = Duration::from_millis(50);
/// The longest pause between two rounds while ECS throttles.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Throttled rounds in a row after which the waiting looks are answered with it.
const THROTTLED_ROUNDS_TOLD: u32 = 5;

type Answer = Result<Option<Service>, StageError>;

/// The shared poller of one region's ECS client; clone it to share.
#[derive(Clone)]
pub struct ServicePoller {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServicePoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServicePoller")
            .field("interval", &self.inner.interval)
            .finish()
    }
}

struct Inner {
    client: aws_sdk_ecs::Client,
    interval: Duration,
    clusters: Mutex<HashMap<String, Cluster>>,
}

/// The looks waiting for one cluster's next round.
#[derive(Default)]
struct Cluster {
    waiting: Vec<(String, oneshot::Sender<Answer>)>,
    /// A round is scheduled and will take every look waiting when it fires.
    scheduled: bool,
    last_round: Option<Instant>,
    /// The pause between rounds while ECS throttles; `None`: the poll interval.
    backoff: Option<Duration>,
    throttled_rounds: u32,
}

impl ServicePoller {
    /// A poller on `client` that starts a cluster's rounds at most every `interval`.
    pub fn new(client: aws_sdk_ecs::Client, interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                interval,
                clusters: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The service as the next round of its cluster sees it; `None` when ECS does not
    /// know it (or only as INACTIVE) or the cluster does not exist.
    pub async fn describe(&self, cluster: &str, service: &str) -> Answer {
        let (sender, answer) = oneshot::channel();
        let start = {
            let mut clusters = self.inner.lock();
            let entry = clusters.entry(cluster.to_string()).or_default();
            entry.waiting.push((service.to_string(), sender));
            !std::mem::replace(&mut entry.scheduled, true)
        };
        if start {
            let inner = self.inner.clone();
            let cluster = cluster.to_string();
            tokio::spawn(async move { inner.run_rounds(cluster).await });
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StageError::failed("the ECS poller stopped")))
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cluster>> {
        self.clusters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rounds for one cluster while looks are waiting.
    async fn run_rounds(self: Arc<Self>, cluster: String) {
        loop {
            let fire_at = {
                let clusters = self.lock();
                let Some(entry) = clusters.get(&cluster) else {
                    return;
                };
                let gathered = Instant::now() + GATHER;
                match entry.last_round {
                    Some(last) => gathered.max(last + entry.backoff.unwrap_or(self.interval)),
                    None => gathered,
                }
            };
            tokio::time::sleep_until(fire_at).await;
            let waiting = {
                let mut clusters = self.lock();
                let Some(entry) = clusters.get_mut(&cluster) else {
                    return;
                };
                entry.last_round = Some(Instant::now());
                std::mem::take(&mut entry.waiting)
            };
            let throttled = self.round(&cluster, waiting).await;
            let mut clusters = self.lock();
            let Some(entry) = clusters.get_mut(&cluster) else {
                return;
            };
            if let Some(requeued) = throttled {
                entry.throttled_rounds += 1;
                let next = entry.backoff.map_or(self.interval * 2, |b| b * 2);
                entry.backoff = Some(next.min(MAX_BACKOFF));
                if entry.throttled_rounds >= THROTTLED_ROUNDS_TOLD {
                    for (_, sender) in requeued {
                        let _ = sender.send(Err(StageError::throttled(
                            "ECS is throttling DescribeServices",
                        )));
                    }
                } else {
                    entry.waiting.extend(requeued);
                }
            } else {
                entry.throttled_rounds = 0;
                entry.backoff = None;
            }
            if entry.waiting.is_empty() {
                entry.scheduled = false;
                return;
            }
        }
    }

    /// One round: a call per 10 services, the answers sent; the looks of a throttled
    /// call come back to wait for the next round.
    async fn round(
        &self,
        cluster: &str,
        waiting: Vec<(String, oneshot::Sender<Answer>)>,
    ) -> Option<Vec<(String, oneshot::Sender<Answer>)>> {
        let mut by_service: HashMap<String, Vec<oneshot::Sender<Answer>>> = HashMap::new();
        for (service, sender) in waiting {
            by_service.entry(service).or_default().push(sender);
        }
        let names: Vec<String> = by_service.keys().cloned().collect();
        let calls = names
            .chunks(DESCRIBE_SERVICES_LIMIT)
            .map(|batch| async move {
                let result = self
                    .client
                    .describe_services()
                    .cluster(cluster)
                    .set_services(Some(batch.to_vec()))
                    .send()
                    .await;
                (batch, result)
            });
        let mut requeued = Vec::new();
        for (batch, result) in futures_util::future::join_all(calls).await {
            match result {
                Ok(output) => {
                    for name in batch {
                        let found = output
                            .services()
                            .iter()
                            .find(|s| {
                                s.service_name() == Some(name.as_str())
                                    || s.service_arn()
                                        .is_some_and(|arn| arn.ends_with(&format!("/{name}")))
                            })
                            .filter(|s| s.status() != Some("INACTIVE"))
                            .cloned();
                        for sender in by_service.remove(name).unwrap_or_default() {
                            let _ = sender.send(Ok(found.clone()));
                        }
                    }
                }
                Err(err)
                    if err
                        .as_service_error()
                        .and_then(|e| aws_sdk_ecs::error::ProvideErrorMetadata::code(e))
                        == Some("ClusterNotFoundException") =>
                {
                    for name in batch {
                        for sender in by_service.remove(name).unwrap_or_default() {
                            let _ = sender.send(Ok(None));
                        }
                    }
                }
                Err(err) if is_throttling(&err) => {
                    for name in batch {
                        for sender in by_service.remove(name).unwrap_or_default() {
                            requeued.push((name.clone(), sender));
                        }
                    }
                }
                Err(err) => {
                    let error = stage_error("DescribeServices", &err);
                    for name in batch {
                        for sender in by_service.remove(name).unwrap_or_default() {
                            let _ = sender.send(Err(error.clone()));
                        }
                    }
                }
            }
        }
        (!requeued.is_empty()).then_some(requeued)
    }
}
