//! Counts the AWS API calls a set of clients makes, by operation, with an SDK
//! interceptor: operations (`read_before_serialization`, once per call; the
//! operation's name is not in the config bag yet at `read_before_execution`) and HTTP
//! attempts (`read_before_transmit`, once per try, so retries show up).

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Calls and attempts per `service.Operation` (`ecs.DescribeServices`; the service
/// name lowercased).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub calls: BTreeMap<String, usize>,
    pub attempts: BTreeMap<String, usize>,
}

impl CallCounts {
    /// Calls of one operation, `service.Operation`.
    pub fn calls_of(&self, operation: &str) -> usize {
        self.calls.get(operation).copied().unwrap_or(0)
    }

    pub fn total_calls(&self) -> usize {
        self.calls.values().sum()
    }

    pub fn total_attempts(&self) -> usize {
        self.attempts.values().sum()
    }

    /// Calls of every operation of one service (`ssm`).
    pub fn calls_to(&self, service: &str) -> BTreeMap<String, usize> {
        self.calls
            .iter()
            .filter(|(name, _)| name.split('.').next() == Some(service))
            .map(|(name, count)| (name.clone(), *count))
            .collect()
    }
}

impl fmt::Display for CallCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (operation, calls) in &self.calls {
            let attempts = self.attempts.get(operation).copied().unwrap_or(0);
            writeln!(
                f,
                "  {operation:<40} {calls:>3} calls, {attempts:>3} HTTP attempts"
            )?;
        }
        write!(
            f,
            "  {:<40} {:>3} calls, {:>3} HTTP attempts",
            "total",
            self.total_calls(),
            self.total_attempts()
        )
    }
}

/// The interceptor; clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<CallCounts>>,
}

impl CallCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// What was counted so far.
    pub fn snapshot(&self) -> CallCounts {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Forgets everything counted so far.
    pub fn reset(&self) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = CallCounts::default();
    }

    fn bump(&self, cfg: &ConfigBag, attempt: bool) {
        let name = cfg
            .load::<Metadata>()
            .map(|m| format!("{}.{}", m.service().to_ascii_lowercase(), m.name()))
            .unwrap_or_else(|| "unknown".to_string());
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let map = if attempt {
            &mut counts.attempts
        } else {
            &mut counts.calls
        };
        *map.entry(name).or_insert(0) += 1;
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "tugboat-tests::CallCounter"
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.bump(cfg, false);
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.bump(cfg, true);
        Ok(())
    }
}
