"""Seeds a running moto (tugboat_moto.py) with the CV Matcher design's AWS resources, so
every tugboat command can be tried locally: `python seed_cv_matcher.py ENDPOINT TASKDEF`.

Creates: a VPC, subnet and security group; clusters cv-matcher-cluster (production) and
cv-matcher-staging-cluster, each with service cv-matcher-service running the design's task
definition; Parameter Store /cv-matcher/{prod,staging}/{DATABASE_URL,JWT_SECRET_KEY,S3_BUCKET_NAME};
the versioned records bucket cv-matcher-deployments; the ECR repository cv_matcher
(immutable tags, scan on push) holding images v1.0.0, v1.1.0, crashloop-v1.2.0 (that
one never starts under the rollout patch, so a deploy of it shows the automatic rollback)
and hang-v1.3.0 (its rollout never finishes: for cancellation and timeouts).
"""
import hashlib
import json
import sys

import boto3

endpoint, taskdef_path = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="testing", aws_secret_access_key="testing")
ec2, ecs, ssm, s3, ecr, cloudwatch = (boto3.client(n, **kw) for n in ("ec2", "ecs", "ssm", "s3", "ecr", "cloudwatch"))

vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
sg = ec2.create_security_group(GroupName="cv-matcher", Description="cv-matcher", VpcId=vpc)["GroupId"]

repo = ecr.create_repository(repositoryName="cv_matcher", imageTagMutability="IMMUTABLE",
                             imageScanningConfiguration={"scanOnPush": True})["repository"]
for tag in ("v1.0.0", "v1.1.0", "crashloop-v1.2.0", "hang-v1.3.0"):
    config = "sha256:" + hashlib.sha256(tag.encode()).hexdigest()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 100, "digest": config},
                "layers": []}
    ecr.put_image(repositoryName="cv_matcher", imageManifest=json.dumps(manifest), imageTag=tag)
    # As scan on push would: moto then reports its default finding (one HIGH).
    ecr.start_image_scan(repositoryName="cv_matcher", imageId={"imageTag": tag})

with open(taskdef_path) as f:
    taskdef = json.load(f)
taskdef["containerDefinitions"][0]["image"] = repo["repositoryUri"] + ":v1.0.0"
taskdef["executionRoleArn"] = "arn:aws:iam::123456789012:role/cv-matcher-task-execution"
arn = ecs.register_task_definition(**taskdef)["taskDefinition"]["taskDefinitionArn"]

for cluster, env, count in (("cv-matcher-cluster", "prod", 2), ("cv-matcher-staging-cluster", "staging", 1)):
    ecs.create_cluster(clusterName=cluster)
    ecs.create_service(cluster=cluster, serviceName="cv-matcher-service", taskDefinition=arn,
                       desiredCount=count, launchType="FARGATE",
                       networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg]}},
                       deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True},
                                                "maximumPercent": 200, "minimumHealthyPercent": 100})
    for name in ("DATABASE_URL", "JWT_SECRET_KEY", "S3_BUCKET_NAME"):
        ssm.put_parameter(Name=f"/cv-matcher/{env}/{name}", Value=f"{env}-{name.lower()}-secret",
                          Type="SecureString")

# The alarms production watches during its bake time (tugboat infra apply makes the real ones).
for name, metric in (("cv-matcher-cpu-high", "CPUUtilization"), ("cv-matcher-memory-high", "MemoryUtilization"),
                     ("cv-matcher-5xx-rate", "HTTPCode_Target_5XX_Count"), ("cv-matcher-response-time", "TargetResponseTime"),
                     ("cv-matcher-failed-tasks", "RunningTaskCount")):
    cloudwatch.put_metric_alarm(AlarmName=name, MetricName=metric, Namespace="AWS/ECS", Statistic="Average",
                                Period=60, EvaluationPeriods=3, Threshold=80, ComparisonOperator="GreaterThanThreshold")

s3.create_bucket(Bucket="cv-matcher-deployments")
s3.put_bucket_versioning(Bucket="cv-matcher-deployments", VersioningConfiguration={"Status": "Enabled"})
print("seeded: clusters cv-matcher-cluster and cv-matcher-staging-cluster, service cv-matcher-service, "
      "parameters /cv-matcher/{prod,staging}/*, bucket cv-matcher-deployments, "
      "ECR cv_matcher:{v1.0.0,v1.1.0,crashloop-v1.2.0}, the 5 production alarms (OK)")
