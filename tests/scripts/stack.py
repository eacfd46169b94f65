"""deploy/ecscale.cfn.yaml as a stack in moto (CloudFormation over the wire), for
tests/it/deploy.rs: each mode prints what it found as JSON.

usage: stack.py create MOTO_URL REGION TEMPLATE STACK EVENTS_QUEUE(true|false) CLUSTERS [CONFIG POLICIES]
           creates the stack (putting CONFIG's and POLICIES' text, files, in the parameters it
           reads), and prints its status, resources, outputs, task role, table key, log groups,
           alarms, and the worker's container as ECS would start it: entry point, command,
           environment, and its secrets resolved from Parameter Store as ECS resolves them
       stack.py put MOTO_URL REGION NAME FILE   puts FILE's text in the parameter NAME; its version
       stack.py scan MOTO_URL REGION TABLE      the keys of the table's items, and their delete_after where set
       stack.py delete MOTO_URL REGION STACK    deletes the stack; its status, and whether the table is gone"""
import ast
import json
import sys

import boto3


def clients(url, region):
    kw = dict(endpoint_url=url, region_name=region, aws_access_key_id="test", aws_secret_access_key="test")
    return lambda service: boto3.client(service, **kw)


def policy_document(doc):
    """moto keeps a document given as a template's map as its repr."""
    if isinstance(doc, str):
        return json.loads(doc) if doc.lstrip().startswith('{"') else ast.literal_eval(doc)
    return doc


def create(client, template, name, events, clusters, config=None, policies=None):
    ssm = client("ssm")
    texts = {
        f"/{name}/config": open(config).read() if config else "schedule: {interval: 30s}\n",
        f"/{name}/policies": open(policies).read() if policies else "min: 1\n",
        f"/{name}/token": "a-control-token",
    }
    for p, v in texts.items():
        ssm.put_parameter(Name=p, Value=v, Type="SecureString" if p.endswith("token") else "String", Overwrite=True)
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    ecs = client("ecs")
    ecs.create_cluster(clusterName=f"{name}-ops")
    cfn = client("cloudformation")
    params = {
        "ClusterNames": clusters,
        "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ecscale:0.1.0",
        "Subnets": subnet,
        "VpcId": vpc,
        "ScraperCidr": "10.0.9.0/24",
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
        if r["LogicalResourceId"]
    }
    out = {
        "status": stack["StackStatus"],
        "resources": resources,
        "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
    }
    svc = ecs.describe_services(cluster=f"{name}-ops", services=[f"{name}-worker"])["services"]
    out["service"] = {"desired": svc[0]["desiredCount"]} if svc else None
    doc = client("iam").get_role_policy(RoleName=resources["TaskRole"]["id"], PolicyName="ecscale-worker")["PolicyDocument"]
    out["task_role_statements"] = policy_document(doc)["Statement"]
    table = client("dynamodb").describe_table(TableName=resources["Table"]["id"])["Table"]
    out["table_key"] = table["KeySchema"]
    logs = client("logs").describe_log_groups(logGroupNamePrefix=f"/ecs/{name}")["logGroups"]
    out["log_groups"] = [g["logGroupName"] for g in logs]
    group = client("ec2").describe_security_groups(GroupIds=[resources["WorkerSecurityGroup"]["id"]])["SecurityGroups"][0]
    out["ingress"] = [
        {"port": (p.get("FromPort"), p.get("ToPort")), "cidrs": [r["CidrIp"] for r in p.get("IpRanges", [])]}
        for p in group["IpPermissions"]
    ]
    td = ecs.describe_task_definition(taskDefinition=resources["TaskDefinition"]["id"])["taskDefinition"]
    c = td["containerDefinitions"][0]
    secrets = {}
    for s in c.get("secrets", []):
        parameter = s["valueFrom"].split(":parameter", 1)[1] if s["valueFrom"].startswith("arn:") else s["valueFrom"]
        secrets[s["name"]] = ssm.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"]
    out["container"] = {
        "entry_point": c.get("entryPoint", []),
        "command": c.get("command", []),
        "environment": {e["name"]: e["value"] for e in c.get("environment", []) if e.get("value") is not None},
        "secrets": secrets,
        "user": c.get("user"),
    }
    return out


def scan(client, table):
    items = client("dynamodb").scan(TableName=table)["Items"]
    return {
        "keys": sorted(i["key"]["S"] for i in items),
        "delete_after": {i["key"]["S"]: int(i["delete_after"]["N"]) for i in items if "delete_after" in i},
    }


def delete(client, name, table):
    cfn = client("cloudformation")
    cfn.delete_stack(StackName=name)
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except cfn.exceptions.ClientError as e:  # "Stack with id ... does not exist": deleted
        if "does not exist" not in str(e):
            raise
        stacks = []
    tables = client("dynamodb").list_tables()["TableNames"]
    return {"status": stacks[0]["StackStatus"] if stacks else "GONE", "table_left": table in tables}


mode, url, region = sys.argv[1:4]
client = clients(url, region)
if mode == "create":
    result = create(client, *sys.argv[4:])
elif mode == "put":
    name, file = sys.argv[4:6]
    put = client("ssm").put_parameter(Name=name, Value=open(file).read(), Type="String", Overwrite=True)
    result = {"version": put["Version"]}
elif mode == "scan":
    result = scan(client, sys.argv[4])
else:
    result = delete(client, sys.argv[4], f"ecscale-{sys.argv[4]}")
print(json.dumps(result, default=str))
