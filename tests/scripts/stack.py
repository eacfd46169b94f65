"""Creates deploy/ecscale.cfn.yaml as a stack in moto (CloudFormation over the wire) and prints
what it made, as JSON, for tests/it/deploy.rs to judge.

usage: stack.py MOTO_URL REGION TEMPLATE STACK_NAME EVENTS_QUEUE(true|false)"""
import json
import sys

import boto3

url, region, template, name, events = sys.argv[1:6]
kw = dict(endpoint_url=url, region_name=region, aws_access_key_id="test", aws_secret_access_key="test")
ssm = boto3.client("ssm", **kw)
for p, v in [(f"/{name}/config", "schedule: {interval: 30s}\n"), (f"/{name}/policies", "min: 1\n"), (f"/{name}/token", "t")]:
    ssm.put_parameter(Name=p, Value=v, Type="SecureString" if p.endswith("token") else "String", Overwrite=True)
ec2 = boto3.client("ec2", **kw)
vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
sg = ec2.create_security_group(GroupName=f"{name}-sg", Description="workers", VpcId=vpc)["GroupId"]
ecs = boto3.client("ecs", **kw)
ecs.create_cluster(clusterName=f"{name}-ops")
cfn = boto3.client("cloudformation", **kw)
params = {
    "ClusterNames": "production,batch",
    "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ecscale:0.1.0",
    "Subnets": subnet,
    "SecurityGroups": sg,
    "ServiceCluster": f"{name}-ops",
    "ConfigParameter": f"/{name}/config",
    "PoliciesParameter": f"/{name}/policies",
    "ControlTokenParameter": f"/{name}/token",
    "EventsQueue": events,
}
cfn.create_stack(
    StackName=name,
    TemplateBody=open(template).read(),
    Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
    Capabilities=["CAPABILITY_IAM"],
)
stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
resources = {
    r["LogicalResourceId"]: {"type": r["ResourceType"], "id": r["PhysicalResourceId"], "status": r["ResourceStatus"]}
    for r in cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]
}
out = {"status": stack["StackStatus"], "resources": resources, "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}}
svc = ecs.describe_services(cluster=f"{name}-ops", services=[f"{name}-worker"])["services"]
out["service"] = {"desired": svc[0]["desiredCount"], "launch_type": svc[0].get("launchType")} if svc else None
iam = boto3.client("iam", **kw)
role = resources["TaskRole"]["id"]
doc = iam.get_role_policy(RoleName=role, PolicyName="ecscale-worker")["PolicyDocument"]
if isinstance(doc, str):  # moto keeps a document given as a template's map as its repr
    import ast

    doc = json.loads(doc) if doc.lstrip().startswith('{"') else ast.literal_eval(doc)
out["task_role_statements"] = doc["Statement"]
table = boto3.client("dynamodb", **kw).describe_table(TableName=resources["Table"]["id"])["Table"]
out["table_key"] = table["KeySchema"]
logs = boto3.client("logs", **kw).describe_log_groups(logGroupNamePrefix=f"/ecs/{name}")["logGroups"]
out["log_groups"] = [g["logGroupName"] for g in logs]
out["alarms"] = sorted(a["AlarmName"] for a in boto3.client("cloudwatch", **kw).describe_alarms()["MetricAlarms"] if a["AlarmName"].startswith(name))
print(json.dumps(out, default=str))
