//! ECS deployment lifecycle hooks: ECS invokes the function directly (not through
//! EventBridge) at the stages of a blue/green, canary or linear service deployment
//! with `{executionId, lifecycleStage, resourceArn, executionDetails, hookDetails}` and
//! expects `{hookStatus, callBackDelay, hookDetails}`. The SDK has no types for it.
//!
//! At a stage the environment's `strategy.lifecycle_hook.stages` names, the hook fails
//! the deployment if one of `verify.alarms` went into ALARM after the release started
//! ([`pipeline_core::judge_alarm`], the CLI's rule: one already firing then is a warning,
//! unless `verify.fail_on_firing_alarms`), and holds it (IN_PROGRESS with a
//! `callBackDelay`) while `verify.bake_seconds` since the stage's first call have not
//! passed; the start times travel in `hookDetails`. Other stages, and traffic shifts on
//! the way back to blue (a rollback), succeed at once.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The key of the bake start (seconds since the epoch) in `hookDetails`.
pub const BAKE_STARTED_KEY: &str = "tugboatBakeStartedAt";
/// The key of the stage the bake start belongs to.
pub const BAKE_STAGE_KEY: &str = "tugboatStage";
/// The key of the release start (seconds since the epoch) in `hookDetails`.
pub const RELEASE_STARTED_KEY: &str = "tugboatReleaseStartedAt";
/// The key of the warnings (alarms already firing when the release started).
pub const WARNINGS_KEY: &str = "warnings";
/// The longest `callBackDelay` the hook asks for, in seconds.
pub const MAX_CALL_BACK_DELAY: u64 = 60;

/// ECS's hook invocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookInvocation {
    pub execution_id: String,
    /// `POST_TEST_TRAFFIC_SHIFT`, …
    pub lifecycle_stage: String,
    #[serde(default)]
    pub resource_arn: Option<String>,
    pub execution_details: ExecutionDetails,
    /// What the previous IN_PROGRESS answer (or the hook's configuration) carried.
    #[serde(default)]
    pub hook_details: Option<Value>,
}

/// `executionDetails` of a hook invocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionDetails {
    pub service_arn: String,
    #[serde(default)]
    pub target_service_revision_arn: Option<String>,
    /// Service revision ARN → percent of the test traffic.
    #[serde(default)]
    pub test_traffic_weights: BTreeMap<String, f64>,
    /// Service revision ARN → percent of the production traffic.
    #[serde(default)]
    pub production_traffic_weights: BTreeMap<String, f64>,
}

/// The hook's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HookStatus {
    Succeeded,
    Failed,
    InProgress,
}

/// The answer ECS expects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookAnswer {
    pub hook_status: HookStatus,
    /// Seconds until ECS calls again (IN_PROGRESS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_back_delay: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_details: Option<Value>,
}

impl HookAnswer {
    pub fn succeeded(message: impl Into<String>) -> Self {
        Self {
            hook_status: HookStatus::Succeeded,
            call_back_delay: None,
            hook_details: Some(serde_json::json!({ "message": message.into() })),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            hook_status: HookStatus::Failed,
            call_back_delay: None,
            hook_details: Some(serde_json::json!({ "message": message.into() })),
        }
    }

    /// No verdict yet (a transient error): IN_PROGRESS, called again shortly, with what
    /// earlier calls carried (the bake's start) kept.
    pub fn look_again(invocation: &HookInvocation, message: impl Into<String>) -> Self {
        let mut details = match &invocation.hook_details {
            Some(Value::Object(map)) => map.clone(),
            _ => serde_json::Map::new(),
        };
        details.insert("message".into(), Value::String(message.into()));
        Self {
            hook_status: HookStatus::InProgress,
            call_back_delay: Some(TRANSIENT_CALL_BACK_DELAY),
            hook_details: Some(Value::Object(details)),
        }
    }
}

/// Seconds until ECS calls the hook again after a transient error.
pub const TRANSIENT_CALL_BACK_DELAY: u64 = 15;

/// Whether a payload is a hook invocation: no EventBridge envelope (`source`,
/// `detail-type`), but `executionId` and `lifecycleStage`.
pub fn is_hook_invocation(payload: &Value) -> bool {
    payload.get("source").is_none()
        && payload.get("detail-type").is_none()
        && payload.get("executionId").is_some()
        && payload.get("lifecycleStage").is_some()
}

const TRAFFIC_SHIFT_STAGES: [&str; 4] = [
    "TEST_TRAFFIC_SHIFT",
    "POST_TEST_TRAFFIC_SHIFT",
    "PRODUCTION_TRAFFIC_SHIFT",
    "POST_PRODUCTION_TRAFFIC_SHIFT",
];

impl HookInvocation {
    /// A traffic shift back to blue: ECS has no rollback stage, it calls the traffic
    /// shift hooks again with every weight on a revision other than the target.
    pub fn is_rollback(&self) -> bool {
        if !TRAFFIC_SHIFT_STAGES.contains(&self.lifecycle_stage.as_str()) {
            return false;
        }
        let details = &self.execution_details;
        let Some(target) = &details.target_service_revision_arn else {
            return false;
        };
        let maps = [
            &details.test_traffic_weights,
            &details.production_traffic_weights,
        ];
        let to_target = maps
            .iter()
            .any(|m| m.get(target).copied().unwrap_or(0.0) > 0.0);
        let to_others = maps
            .iter()
            .any(|m| m.iter().any(|(arn, w)| arn != target && *w > 0.0));
        !to_target && to_others
    }

    /// When the bake of this stage started, if an earlier answer recorded it.
    pub fn bake_started(&self) -> Option<u64> {
        let details = self.hook_details.as_ref()?;
        if details.get(BAKE_STAGE_KEY)?.as_str()? != self.lifecycle_stage {
            return None;
        }
        details.get(BAKE_STARTED_KEY)?.as_u64()
    }

    /// When the release started, if an earlier answer recorded it.
    pub fn release_started(&self) -> Option<u64> {
        self.hook_details
            .as_ref()?
            .get(RELEASE_STARTED_KEY)?
            .as_u64()
    }
}

/// When the release this deployment belongs to started (seconds since the epoch): the
/// earliest of its record's start (`recorded`) and what an earlier answer carried; with
/// neither, `now` (the hook's first look; ECS invokes it with no start of its own).
pub fn release_started(invocation: &HookInvocation, recorded: Option<u64>, now: u64) -> u64 {
    [recorded, invocation.release_started()]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now)
}

impl HookAnswer {
    /// Carries the release start to the next call (IN_PROGRESS only: there is none
    /// after the others) and lists `warnings` in `hookDetails`.
    pub fn carrying(mut self, release_started: u64, warnings: &[String]) -> Self {
        let details = self
            .hook_details
            .get_or_insert_with(|| serde_json::json!({}));
        if let Some(details) = details.as_object_mut() {
            if self.hook_status == HookStatus::InProgress {
                details.insert(RELEASE_STARTED_KEY.into(), release_started.into());
            }
            if !warnings.is_empty() {
                details.insert(WARNINGS_KEY.into(), warnings.into());
            }
        }
        self
    }
}

/// The bake part of the verdict, once the alarms are fine: IN_PROGRESS (with the start
/// in `hookDetails` and a `callBackDelay`) until `bake_seconds` since the stage's first
/// call have passed, then SUCCEEDED.
pub fn bake_verdict(invocation: &HookInvocation, bake_seconds: u64, now: u64) -> HookAnswer {
    let started = invocation.bake_started().unwrap_or(now);
    let elapsed = now.saturating_sub(started);
    if elapsed >= bake_seconds {
        return HookAnswer::succeeded(format!(
            "{}: no watched alarm went into ALARM{}",
            invocation.lifecycle_stage,
            if bake_seconds > 0 {
                format!(" through a {bake_seconds}s bake")
            } else {
                String::new()
            }
        ));
    }
    let remaining = bake_seconds - elapsed;
    HookAnswer {
        hook_status: HookStatus::InProgress,
        call_back_delay: Some(remaining.clamp(1, MAX_CALL_BACK_DELAY)),
        hook_details: Some(serde_json::json!({
            BAKE_STAGE_KEY: invocation.lifecycle_stage,
            BAKE_STARTED_KEY: started,
            "message": format!("{}: baking, {remaining}s left", invocation.lifecycle_stage),
        })),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    const BLUE: &str = "arn:aws:ecs:us-east-1:123456789012:service-revision/c/s/111";
    const GREEN: &str = "arn:aws:ecs:us-east-1:123456789012:service-revision/c/s/222";

    fn invocation(
        stage: &str,
        test: f64,
        production: f64,
        details: Option<Value>,
    ) -> HookInvocation {
        serde_json::from_value(json!({
            "executionId": "a1b2c3",
            "lifecycleStage": stage,
            "resourceArn": "arn:aws:ecs:us-east-1:123456789012:service-deployment/c/s/xyz",
            "executionDetails": {
                "serviceArn": "arn:aws:ecs:us-east-1:123456789012:service/c/s",
                "targetServiceRevisionArn": GREEN,
                "testTrafficWeights": {GREEN: test, BLUE: 100.0 - test},
                "productionTrafficWeights": {GREEN: production, BLUE: 100.0 - production}
            },
            "hookDetails": details
        }))
        .unwrap()
    }

    #[test]
    fn the_release_start_is_the_earliest_known_and_travels_while_in_progress() {
        let first = invocation("POST_TEST_TRAFFIC_SHIFT", 100.0, 0.0, None);
        assert_eq!(release_started(&first, None, 2_000), 2_000);
        assert_eq!(release_started(&first, Some(1_500), 2_000), 1_500);
        let answer = bake_verdict(&first, 300, 2_000).carrying(1_500, &["a warning".into()]);
        let details = answer.hook_details.clone().unwrap();
        assert_eq!(details[RELEASE_STARTED_KEY], 1_500);
        assert_eq!(details[WARNINGS_KEY], json!(["a warning"]));
        let later = invocation("POST_TEST_TRAFFIC_SHIFT", 100.0, 0.0, Some(details));
        assert_eq!(release_started(&later, None, 2_100), 1_500);
        assert_eq!(release_started(&later, Some(1_200), 2_100), 1_200);
        // Nothing to carry after a final answer.
        let done = HookAnswer::succeeded("ok").carrying(1_500, &[]);
        assert_eq!(done.hook_details, Some(json!({"message": "ok"})));
    }

    #[test]
    fn hook_payloads_are_told_from_eventbridge_events() {
        let hook =
            serde_json::to_value(invocation("POST_TEST_TRAFFIC_SHIFT", 100.0, 0.0, None)).unwrap();
        assert!(is_hook_invocation(&hook));
        assert!(!is_hook_invocation(
            &json!({"source": "aws.ecs", "detail-type": "x", "executionId": "1", "lifecycleStage": "y"})
        ));
        assert!(!is_hook_invocation(&json!({"id": "1"})));
    }

    #[test]
    fn weights_all_on_blue_at_a_traffic_shift_are_a_rollback() {
        assert!(invocation("PRODUCTION_TRAFFIC_SHIFT", 0.0, 0.0, None).is_rollback());
        assert!(!invocation("TEST_TRAFFIC_SHIFT", 100.0, 0.0, None).is_rollback());
        assert!(!invocation("PRODUCTION_TRAFFIC_SHIFT", 100.0, 10.0, None).is_rollback());
        assert!(!invocation("POST_SCALE_UP", 0.0, 0.0, None).is_rollback());
    }

    #[test]
    fn a_bake_holds_the_stage_and_carries_its_start() {
        let first = bake_verdict(
            &invocation("POST_TEST_TRAFFIC_SHIFT", 100.0, 0.0, None),
            300,
            1_000,
        );
        assert_eq!(first.hook_status, HookStatus::InProgress);
        assert_eq!(first.call_back_delay, Some(60));
        let details = first.hook_details.clone();
        let later = invocation("POST_TEST_TRAFFIC_SHIFT", 100.0, 0.0, details.clone());
        let second = bake_verdict(&later, 300, 1_280);
        assert_eq!(second.hook_status, HookStatus::InProgress);
        assert_eq!(second.call_back_delay, Some(20));
        assert_eq!(
            second.hook_details.as_ref().unwrap()[BAKE_STARTED_KEY],
            1_000
        );
        assert_eq!(
            bake_verdict(&later, 300, 1_300).hook_status,
            HookStatus::Succeeded
        );
        // Another stage starts its own bake.
        let other = invocation("POST_PRODUCTION_TRAFFIC_SHIFT", 100.0, 100.0, details);
        assert_eq!(
            bake_verdict(&other, 300, 5_000).hook_status,
            HookStatus::InProgress
        );
        assert_eq!(
            serde_json::to_value(HookAnswer::succeeded("ok")).unwrap(),
            json!({"hookStatus": "SUCCEEDED", "hookDetails": {"message": "ok"}})
        );
    }
}
