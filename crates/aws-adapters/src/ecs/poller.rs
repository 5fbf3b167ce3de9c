//! One `DescribeServices` poller for every service a fleet release follows in one region:
//! while the core's wait loops ask for looks ([`EcsRolloutWatch`] of each service), each
//! cluster gets a round every poll interval, one call per 10 services (the API's limit)
//! for all the services asked for lately, and each look is answered by the first round
//! that started after the look before it (at once, when that round is done). A throttled
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
/// The first round waits until no look came for this long (services released together
/// ask within milliseconds of each other), at most a poll interval after the first
/// look: a burst of first looks is one round, and the rounds after it keep its pace.
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

/// A look waiting for a round that started after `since`.
struct Waiting {
    service: String,
    since: Instant,
    sender: oneshot::Sender<(Answer, Instant)>,
}

/// One cluster's rounds: the services looked at, the last answers, the looks waiting.
#[derive(Default)]
struct Cluster {
    waiting: Vec<Waiting>,
    /// Services asked for lately (and when): every round looks at them all, so a look
    /// asked between two rounds is often answered at once from the last one.
    interested: HashMap<String, Instant>,
    /// Each service's answer in the last round, and when that round started.
    latest: HashMap<String, (Answer, Instant)>,
    /// A task runs this cluster's rounds.
    running: bool,
    /// `None` until the first round after the task started.
    last_round: Option<Instant>,
    /// The first and the latest look since the task started (the first round's timing).
    first_asked: Option<Instant>,
    last_asked: Option<Instant>,
    /// The pause between rounds while ECS throttles; `None`: the poll interval.
    backoff: Option<Duration>,
    throttled_rounds: u32,
}

impl ServicePoller {
    /// A poller on `client` whose rounds start every `interval` per cluster while some
    /// rollout of it is followed.
    pub fn new(client: aws_sdk_ecs::Client, interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                interval,
                clusters: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The service as a round of its cluster that started after `since` saw it (`None`:
    /// ECS does not know it, or only as INACTIVE, or the cluster does not exist), and
    /// when that round started: the next look passes it as `since`. A watch's first look
    /// passes the moment it was made, so that it never sees the service from before.
    pub async fn describe(
        &self,
        cluster: &str,
        service: &str,
        since: Instant,
    ) -> (Answer, Instant) {
        let (sender, answer) = oneshot::channel();
        let start = {
            let mut clusters = self.inner.lock();
            let entry = clusters.entry(cluster.to_string()).or_default();
            let now = Instant::now();
            entry.interested.insert(service.to_string(), now);
            entry.first_asked.get_or_insert(now);
            entry.last_asked = Some(now);
            if let Some((answer, at)) = entry.latest.get(service) {
                if *at > since {
                    return (answer.clone(), *at);
                }
            }
            entry.waiting.push(Waiting {
                service: service.to_string(),
                since,
                sender,
            });
            !std::mem::replace(&mut entry.running, true)
        };
        if start {
            let inner = self.inner.clone();
            let cluster = cluster.to_string();
            tokio::spawn(async move { inner.run_rounds(cluster).await });
        }
        answer.await.unwrap_or_else(|_| {
            (
                Err(StageError::failed("the ECS poller stopped")),
                Instant::now(),
            )
        })
    }
}

impl Cluster {
    /// When the first round starts: once no look came for [`GATHER`], at the latest a
    /// poll interval after the first look.
    fn first_round_at(&self, interval: Duration) -> Instant {
        let now = Instant::now();
        let quiet = self.last_asked.unwrap_or(now) + GATHER;
        let latest = self.first_asked.unwrap_or(now) + interval.max(GATHER);
        quiet.min(latest)
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cluster>> {
        self.clusters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rounds for one cluster while its services are asked for: every poll interval
    /// (longer while throttled), the first one after a short gathering pause.
    async fn run_rounds(self: Arc<Self>, cluster: String) {
        loop {
            let fire_at = {
                let mut clusters = self.lock();
                let Some(entry) = clusters.get_mut(&cluster) else {
                    return;
                };
                // A service not asked for in three intervals is no longer followed.
                let forget = Instant::now()
                    .checked_sub(self.interval * 3)
                    .unwrap_or_else(Instant::now);
                entry.interested.retain(|_, asked| *asked > forget);
                let Cluster {
                    interested, latest, ..
                } = entry;
                latest.retain(|service, _| interested.contains_key(service));
                if entry.waiting.is_empty() && entry.interested.is_empty() {
                    // The next look starts over, with a gathered first round.
                    entry.running = false;
                    entry.last_round = None;
                    entry.first_asked = None;
                    entry.last_asked = None;
                    return;
                }
                match entry.last_round {
                    Some(last) => last + entry.backoff.unwrap_or(self.interval),
                    None => entry.first_round_at(self.interval),
                }
            };
            tokio::time::sleep_until(fire_at).await;
            // A look came while the first round was gathering: gather on.
            let gathering = {
                let clusters = self.lock();
                clusters.get(&cluster).is_some_and(|entry| {
                    entry.last_round.is_none() && entry.first_round_at(self.interval) > fire_at
                })
            };
            if gathering {
                continue;
            }
            let started = Instant::now();
            let services: Vec<String> = {
                let mut clusters = self.lock();
                let Some(entry) = clusters.get_mut(&cluster) else {
                    return;
                };
                entry.last_round = Some(started);
                let mut names: Vec<String> = entry.interested.keys().cloned().collect();
                for waiting in &entry.waiting {
                    if !names.contains(&waiting.service) {
                        names.push(waiting.service.clone());
                    }
                }
                names
            };
            let answers = self.round(&cluster, &services).await;
            let mut clusters = self.lock();
            let Some(entry) = clusters.get_mut(&cluster) else {
                return;
            };
            let throttled = answers.is_none();
            if let Some(answers) = answers {
                entry.throttled_rounds = 0;
                entry.backoff = None;
                for (service, answer) in answers {
                    entry.latest.insert(service, (answer, started));
                }
            } else {
                entry.throttled_rounds += 1;
                let next = entry.backoff.map_or(self.interval * 2, |b| b * 2);
                entry.backoff = Some(next.min(MAX_BACKOFF));
            }
            let tell_throttling = throttled && entry.throttled_rounds >= THROTTLED_ROUNDS_TOLD;
            let mut still = Vec::new();
            for waiting in std::mem::take(&mut entry.waiting) {
                match entry.latest.get(&waiting.service) {
                    Some((answer, at)) if *at > waiting.since => {
                        let _ = waiting.sender.send((answer.clone(), *at));
                    }
                    _ if tell_throttling => {
                        let error = StageError::throttled("ECS is throttling DescribeServices");
                        let _ = waiting.sender.send((Err(error), started));
                    }
                    _ => still.push(waiting),
                }
            }
            entry.waiting = still;
        }
    }

    /// One round: a call per 10 services, at once. `None`: ECS throttled a call (the
    /// round counts as not taken).
    async fn round(&self, cluster: &str, services: &[String]) -> Option<Vec<(String, Answer)>> {
        let calls = services
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
        let mut answers = Vec::new();
        let mut throttled = false;
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
                        answers.push((name.clone(), Ok(found)));
                    }
                }
                Err(err)
                    if err
                        .as_service_error()
                        .and_then(|e| aws_sdk_ecs::error::ProvideErrorMetadata::code(e))
                        == Some("ClusterNotFoundException") =>
                {
                    answers.extend(batch.iter().map(|name| (name.clone(), Ok(None))));
                }
                Err(err) if is_throttling(&err) => throttled = true,
                Err(err) => {
                    let error = stage_error("DescribeServices", &err);
                    answers.extend(batch.iter().map(|name| (name.clone(), Err(error.clone()))));
                }
            }
        }
        (!throttled).then_some(answers)
    }
}
