//! The EventBridge events the function handles, as AWS documents them: the envelope,
//! and the `detail` of an ECR push, an ECS deployment state change and a CloudWatch alarm
//! state change. Our own small types (not `aws_lambda_events`): only the fields tugboat
//! reads are required; everything else AWS adds is ignored.

use crate::HandlerError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// An EventBridge event as it reaches a Lambda target.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct EventBridgeEvent {
    pub id: String,
    pub source: String,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub time: String,
    pub region: String,
    /// The account the event comes from.
    #[serde(default)]
    pub account: String,
    pub resources: Vec<String>,
    pub detail: serde_json::Value,
}

/// `source: aws.ecr`, `detail-type: ECR Image Action`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct EcrImageAction {
    /// `SUCCESS` or `FAILURE`.
    pub result: String,
    pub repository_name: String,
    /// Absent on some failed actions; required for a push tugboat deploys.
    #[serde(default)]
    pub image_digest: Option<String>,
    /// `PUSH` or `DELETE`.
    pub action_type: String,
    /// Absent when the image was pushed by digest only.
    #[serde(default)]
    pub image_tag: Option<String>,
}

/// `source: aws.ecs`, `detail-type: ECS Deployment State Change`; the service ARN is in
/// the envelope's `resources`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EcsDeploymentStateChange {
    /// `INFO`, `WARN` or `ERROR`.
    pub event_type: String,
    /// `SERVICE_DEPLOYMENT_IN_PROGRESS`, `SERVICE_DEPLOYMENT_COMPLETED`, `SERVICE_DEPLOYMENT_FAILED`.
    pub event_name: String,
    /// `ecs-svc/…`: the deployment `UpdateService` created.
    pub deployment_id: String,
    pub updated_at: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `source: aws.cloudwatch`, `detail-type: CloudWatch Alarm State Change`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmStateChange {
    pub alarm_name: String,
    pub state: AlarmState,
    #[serde(default)]
    pub previous_state: Option<AlarmState>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct AlarmState {
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub value: String,
    pub reason: String,
    /// CloudWatch writes `2019-10-02T17:04:40.985+0000`: kept as text.
    pub timestamp: String,
}

/// An event sorted by what it is.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    EcrImageAction(EcrImageAction),
    EcsDeploymentStateChange(EcsDeploymentStateChange),
    AlarmStateChange(AlarmStateChange),
    /// Another source or detail type: logged and ignored.
    Other,
}

/// A parsed event: the envelope and its typed detail.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub envelope: EventBridgeEvent,
    pub event: Event,
}

pub const ECR_SOURCE: &str = "aws.ecr";
pub const ECR_IMAGE_ACTION: &str = "ECR Image Action";
pub const ECS_SOURCE: &str = "aws.ecs";
pub const ECS_DEPLOYMENT_STATE_CHANGE: &str = "ECS Deployment State Change";
pub const CLOUDWATCH_SOURCE: &str = "aws.cloudwatch";
pub const ALARM_STATE_CHANGE: &str = "CloudWatch Alarm State Change";

/// Parses an invocation payload. A missing or mistyped field is a
/// [`HandlerError::MalformedEvent`] naming it (`detail.image-digest`, `detail-type`).
pub fn parse(payload: serde_json::Value) -> Result<Parsed, HandlerError> {
    let envelope: EventBridgeEvent = typed(payload, "", "EventBridge")?;
    let kind = (envelope.source.as_str(), envelope.detail_type.as_str());
    let detail = envelope.detail.clone();
    let event = match kind {
        (ECR_SOURCE, ECR_IMAGE_ACTION) => {
            Event::EcrImageAction(typed(detail, "detail", ECR_IMAGE_ACTION)?)
        }
        (ECS_SOURCE, ECS_DEPLOYMENT_STATE_CHANGE) => {
            Event::EcsDeploymentStateChange(typed(detail, "detail", ECS_DEPLOYMENT_STATE_CHANGE)?)
        }
        (CLOUDWATCH_SOURCE, ALARM_STATE_CHANGE) => {
            Event::AlarmStateChange(typed(detail, "detail", ALARM_STATE_CHANGE)?)
        }
        _ => Event::Other,
    };
    Ok(Parsed { envelope, event })
}

/// Deserializes `value` as `T`, naming the field that is missing or wrong under `base`.
fn typed<T: DeserializeOwned>(
    value: serde_json::Value,
    base: &str,
    what: &str,
) -> Result<T, HandlerError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let problem = err.into_inner().to_string();
        let mut field = [base, path.as_str()]
            .iter()
            .filter(|part| !part.is_empty() && **part != ".")
            .copied()
            .collect::<Vec<_>>()
            .join(".");
        // serde names a missing field in its message, at the path of its parent.
        if let Some(missing) = problem
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            field = if field.is_empty() {
                missing.to_string()
            } else {
                format!("{field}.{missing}")
            };
        }
        if field.is_empty() {
            field = "$".to_string();
        }
        HandlerError::MalformedEvent {
            what: what.to_string(),
            field,
            problem,
        }
    })
}

/// A service ARN split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceArn {
    pub region: String,
    pub account: String,
    /// `None` for the old ARN format (`service/NAME`), which does not name the cluster.
    pub cluster: Option<String>,
    pub service: String,
}

impl ServiceArn {
    /// `arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/SERVICE` (or the old `service/SERVICE`).
    pub fn parse(arn: &str) -> Option<Self> {
        let mut parts = arn.splitn(6, ':');
        let (Some("arn"), Some(_partition), Some("ecs"), Some(region), Some(account), Some(rest)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let path = rest.strip_prefix("service/")?;
        let (cluster, service) = match path.split_once('/') {
            Some((cluster, service)) => (Some(cluster.to_string()), service.to_string()),
            None => (None, path.to_string()),
        };
        if service.is_empty() || service.contains('/') || cluster.as_deref() == Some("") {
            return None;
        }
        Some(Self {
            region: region.to_string(),
            account: account.to_string(),
            cluster,
            service,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ecr(detail: serde_json::Value) -> serde_json::Value {
        json!({
            "version": "0", "id": "e1", "detail-type": "ECR Image Action", "source": "aws.ecr",
            "account": "123456789012", "time": "2019-11-16T01:54:34Z", "region": "us-west-2",
            "resources": [], "detail": detail
        })
    }

    fn field_of(result: Result<Parsed, HandlerError>) -> String {
        match result {
            Err(HandlerError::MalformedEvent { field, .. }) => field,
            other => format!("not a malformed-event error: {other:?}"),
        }
    }

    #[test]
    fn a_missing_detail_field_is_named_with_its_path() {
        let result = parse(ecr(json!({"result": "SUCCESS", "action-type": "PUSH"})));
        assert_eq!(field_of(result), "detail.repository-name");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_path() {
        let event = json!({
            "id": "e2", "detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
            "time": "t", "region": "us-east-1", "resources": [],
            "detail": {"alarmName": "a", "state": {"value": 3, "reason": "r", "timestamp": "t"}}
        });
        assert_eq!(field_of(parse(event)), "detail.state.value");
    }

    #[test]
    fn a_missing_envelope_field_is_named() {
        let event = json!({"id": "e3", "source": "aws.ecr", "time": "t", "region": "r", "resources": [], "detail": {}});
        assert_eq!(field_of(parse(event)), "detail-type");
    }

    #[test]
    fn unknown_kinds_are_other_and_extra_fields_are_ignored() {
        let event = json!({
            "version": "0", "id": "e4", "detail-type": "EC2 Instance State-change Notification",
            "source": "aws.ec2", "time": "t", "region": "r", "resources": [],
            "detail": {"instance-id": "i-1", "state": "running"}
        });
        let parsed = parse(event).map(|p| p.event);
        assert_eq!(parsed.ok(), Some(Event::Other));
    }

    #[test]
    fn service_arns_parse_in_both_formats() {
        assert_eq!(
            ServiceArn::parse(
                "arn:aws:ecs:us-east-1:123456789012:service/cv-matcher-cluster/cv-matcher-service"
            ),
            Some(ServiceArn {
                region: "us-east-1".into(),
                account: "123456789012".into(),
                cluster: Some("cv-matcher-cluster".into()),
                service: "cv-matcher-service".into(),
            })
        );
        assert_eq!(
            ServiceArn::parse("arn:aws:ecs:us-east-1:123456789012:service/web")
                .map(|a| (a.cluster, a.service)),
            Some((None, "web".to_string()))
        );
        assert_eq!(
            ServiceArn::parse("arn:aws:ecs:us-east-1:1:task/c/abc"),
            None
        );
        assert_eq!(ServiceArn::parse("not an arn"), None);
    }
}
