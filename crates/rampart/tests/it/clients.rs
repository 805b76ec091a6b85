//! Real clients: boto3 against the control and Invoke APIs, and the official Python runtime
//! interface client (`awslambdaric`) as a custom runtime.

use serde_json::json;

use crate::harness::{Server, python, run_python};

const BOTO3_SCRIPT: &str = r#"
import base64, io, json, sys, zipfile
import boto3
from botocore.config import Config

endpoint = sys.argv[1]
client = boto3.client(
    "lambda", endpoint_url=endpoint, region_name="us-east-1",
    aws_access_key_id="AKID", aws_secret_access_key="SECRET",
    config=Config(retries={"total_max_attempts": 1}),
)

def zipped(source):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("lambda_function.py", source)
    return buf.getvalue()

V1 = "def lambda_handler(event, context):\n    return {'version': 1, 'event': event}\n"
V2 = "def lambda_handler(event, context):\n    raise RuntimeError('v2 fails')\n"
Z1 = zipped(V1)  # zipfile stamps the current time: build once, compare to these bytes

created = client.create_function(
    FunctionName="boto", Runtime="python3.12", Role="arn:aws:iam::000000000000:role/r",
    Handler="lambda_function.lambda_handler", Code={"ZipFile": Z1}, Timeout=5,
    Environment={"Variables": {"MODE": "test"}},
)
assert created["FunctionName"] == "boto" and created["Timeout"] == 5, created
got = client.get_function(FunctionName="boto")
assert got["Configuration"]["Environment"]["Variables"] == {"MODE": "test"}, got
import urllib.request, hashlib
downloaded = urllib.request.urlopen(got["Code"]["Location"]).read()
assert downloaded == Z1, "Code.Location serves the deployed zip"
assert base64.b64encode(hashlib.sha256(downloaded).digest()).decode() == got["Configuration"]["CodeSha256"]
names = [f["FunctionName"] for f in client.list_functions()["Functions"]]
assert names == ["boto"], names
paginated = [f["FunctionName"] for page in client.get_paginator("list_functions").paginate() for f in page["Functions"]]
assert paginated == ["boto"], paginated

out = client.invoke(FunctionName="boto", Payload=json.dumps({"a": 1}), LogType="Tail")
assert out["StatusCode"] == 200, out
assert json.loads(out["Payload"].read()) == {"version": 1, "event": {"a": 1}}
assert out["ExecutedVersion"] == "$LATEST"
assert "FunctionError" not in out
import base64
assert "REPORT RequestId" in base64.b64decode(out["LogResult"]).decode()

assert client.put_function_concurrency(FunctionName="boto", ReservedConcurrentExecutions=3)["ReservedConcurrentExecutions"] == 3
assert client.get_function_concurrency(FunctionName="boto")["ReservedConcurrentExecutions"] == 3
assert client.get_function(FunctionName="boto")["Concurrency"]["ReservedConcurrentExecutions"] == 3
client.put_function_concurrency(FunctionName="boto", ReservedConcurrentExecutions=0)
try:
    client.invoke(FunctionName="boto", Payload=b"{}")
    raise SystemExit("expected TooManyRequestsException for a disabled function")
except client.exceptions.TooManyRequestsException as e:
    assert e.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded", e.response
client.delete_function_concurrency(FunctionName="boto")
assert "ReservedConcurrentExecutions" not in client.get_function_concurrency(FunctionName="boto")
conf = client.update_function_configuration(FunctionName="boto", Timeout=7)
assert conf["Timeout"] == 7, conf
client.update_function_code(FunctionName="boto", ZipFile=zipped(V2))
out = client.invoke(FunctionName="boto", Payload=b"{}")
assert out["FunctionError"] == "Unhandled", out
err = json.loads(out["Payload"].read())
assert err["errorType"] == "RuntimeError" and err["errorMessage"] == "v2 fails", err
out = client.invoke(FunctionName="boto", Qualifier="1", Payload=b"{}")
assert json.loads(out["Payload"].read())["version"] == 1

try:
    client.invoke(FunctionName="missing", Payload=b"{}")
    raise SystemExit("expected ResourceNotFoundException")
except client.exceptions.ResourceNotFoundException as e:
    assert "Function not found" in str(e), e

client.delete_function(FunctionName="boto")
try:
    client.get_function(FunctionName="boto")
    raise SystemExit("expected ResourceNotFoundException")
except client.exceptions.ResourceNotFoundException:
    pass
print("boto3 ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_creates_gets_lists_updates_invokes_and_deletes() {
    let server = Server::start();
    let (ok, output) = run_python(BOTO3_SCRIPT, &[&server.endpoint]);
    assert!(ok && output.contains("boto3 ok"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awslambdaric_runs_as_a_custom_runtime() {
    let server = Server::start();
    let bootstrap = format!("#!/bin/sh\nexec {} -m awslambdaric app.handler\n", python());
    let app = "import os\ndef handler(event, context):\n    return {'ric': True, 'id': context.aws_request_id, 'name': context.function_name, 'event': event}\n";
    server
        .deploy(
            "ric",
            "provided.al2023",
            "app.handler",
            &[("bootstrap", &bootstrap), ("app.py", app)],
            json!({}),
        )
        .await;
    let r = server.invoke("ric", r#"{"n": 1}"#).await;
    assert_eq!(r.header("x-amz-function-error"), None, "{}", r.text());
    let v = r.json();
    assert_eq!(v["ric"], true);
    assert_eq!(v["name"], "ric");
    assert_eq!(v["event"], json!({"n": 1}));
    assert_eq!(v["id"], r.header("x-amzn-requestid").unwrap());
    // Its error path too.
    let failing = "def handler(event, context):\n    raise KeyError('k')\n";
    server
        .deploy(
            "ric-err",
            "provided.al2023",
            "app.handler",
            &[("bootstrap", &bootstrap), ("app.py", failing)],
            json!({}),
        )
        .await;
    let r = server.invoke("ric-err", "{}").await;
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(r.json()["errorType"], "KeyError");
}

const VERSIONS_SCRIPT: &str = r#"
import io, json, sys, zipfile
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

client = boto3.client(
    "lambda", endpoint_url=sys.argv[1], region_name="us-east-1",
    aws_access_key_id="AKID", aws_secret_access_key="SECRET",
    config=Config(retries={"total_max_attempts": 1}),
)

def zipped(version):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", f"def handler(event, context):\n    return {{'v': {version}}}\n")
    return buf.getvalue()

def code(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError("the call should have failed")

client.create_function(FunctionName="canary", Runtime="python3.12", Role="arn:aws:iam::000000000000:role/r",
                       Handler="app.handler", Code={"ZipFile": zipped(1)})
p1 = client.publish_version(FunctionName="canary", Description="first")["Version"]
assert client.publish_version(FunctionName="canary")["Version"] == p1, "no change, no new version"
assert code(lambda: client.publish_version(FunctionName="canary", CodeSha256="AAAA")) == "InvalidParameterValueException"
client.update_function_code(FunctionName="canary", ZipFile=zipped(2))
p2 = client.publish_version(FunctionName="canary")["Version"]
assert int(p2) > int(p1), (p1, p2)
versions = [v["Version"] for v in client.list_versions_by_function(FunctionName="canary")["Versions"]]
assert versions == ["$LATEST", p1, p2], versions

alias = client.create_alias(FunctionName="canary", Name="live", FunctionVersion=p1,
                            RoutingConfig={"AdditionalVersionWeights": {p2: 0.3}})
assert alias["AliasArn"].endswith(":function:canary:live") and alias["FunctionVersion"] == p1, alias
assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {p2: 0.3}, alias
assert code(lambda: client.create_alias(FunctionName="canary", Name="live", FunctionVersion=p1)) == "ResourceConflictException"

# The split: 400 invocations, 30% expected on p2 (sd 9.2: bounds at 5 sd).
ran = {p1: 0, p2: 0}
for _ in range(400):
    out = client.invoke(FunctionName="canary", Qualifier="live", Payload=b"{}")
    executed = out["ExecutedVersion"]
    body = json.loads(out["Payload"].read())
    assert body["v"] == (1 if executed == p1 else 2), (executed, body)
    ran[executed] += 1
assert 74 <= ran[p2] <= 166, ran
by_arn = client.invoke(FunctionName="canary:live", Payload=b"{}")
assert by_arn["ExecutedVersion"] in (p1, p2)
ran[by_arn["ExecutedVersion"]] += 1

# The alias's own metrics: Resource=canary:live, and by ExecutedVersion.
import datetime, time
cw = boto3.client("cloudwatch", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="AKID", aws_secret_access_key="SECRET")
def alias_sum(extra):
    dims = [{"Name": "FunctionName", "Value": "canary"}, {"Name": "Resource", "Value": "canary:live"}] + extra
    now = datetime.datetime.now(datetime.timezone.utc)
    points = cw.get_metric_statistics(Namespace="AWS/Lambda", MetricName="Invocations", Dimensions=dims,
        StartTime=now - datetime.timedelta(minutes=10), EndTime=now + datetime.timedelta(minutes=1),
        Period=60, Statistics=["Sum"])["Datapoints"]
    return sum(p["Sum"] for p in points)
deadline = time.time() + 10
while alias_sum([]) < 401 and time.time() < deadline:
    time.sleep(0.3)
assert alias_sum([]) == 401, alias_sum([])
for version in (p1, p2):
    assert alias_sum([{"Name": "ExecutedVersion", "Value": version}]) == ran[version], (version, ran)

assert client.get_alias(FunctionName="canary", Name="live")["FunctionVersion"] == p1
assert [a["Name"] for a in client.list_aliases(FunctionName="canary")["Aliases"]] == ["live"]
assert client.list_aliases(FunctionName="canary", FunctionVersion=p2)["Aliases"] == []
rev = client.get_alias(FunctionName="canary", Name="live")["RevisionId"]
assert code(lambda: client.update_alias(FunctionName="canary", Name="live", RevisionId="stale")) == "PreconditionFailedException"
done = client.update_alias(FunctionName="canary", Name="live", FunctionVersion=p2,
                           RoutingConfig={"AdditionalVersionWeights": {}}, RevisionId=rev)
assert done["FunctionVersion"] == p2 and "RoutingConfig" not in done or not done["RoutingConfig"].get("AdditionalVersionWeights"), done
assert all(client.invoke(FunctionName="canary", Qualifier="live")["ExecutedVersion"] == p2 for _ in range(20))

# The rules: $LATEST carries no weights, aliases name published versions, a version in use stays.
assert code(lambda: client.create_alias(FunctionName="canary", Name="bad", FunctionVersion="$LATEST",
            RoutingConfig={"AdditionalVersionWeights": {p1: 0.5}})) == "InvalidParameterValueException"
assert code(lambda: client.create_alias(FunctionName="canary", Name="bad", FunctionVersion="99")) == "ResourceNotFoundException"
latest = client.create_alias(FunctionName="canary", Name="edge", FunctionVersion="$LATEST")
assert client.invoke(FunctionName="canary", Qualifier="edge")["ExecutedVersion"] == "$LATEST"
assert code(lambda: client.delete_function(FunctionName="canary", Qualifier=p2)) == "ResourceConflictException"
client.delete_function(FunctionName="canary", Qualifier=p1)
versions = [v["Version"] for v in client.list_versions_by_function(FunctionName="canary")["Versions"]]
assert versions == ["$LATEST", p2], versions
client.delete_alias(FunctionName="canary", Name="live")
assert code(lambda: client.get_alias(FunctionName="canary", Name="live")) == "ResourceNotFoundException"
assert code(lambda: client.invoke(FunctionName="canary", Qualifier="live")) == "ResourceNotFoundException"
print("versions ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_publishes_versions_and_splits_aliases_by_weight() {
    let temp = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(temp.path(), &[], &[]);
    let (ok, output) = run_python(VERSIONS_SCRIPT, &[&server.endpoint]);
    assert!(ok && output.contains("versions ok"), "{output}");
    // Aliases and published versions survive kill -9: they live in the store.
    server.kill9();
    let server = Server::start_in(temp.path(), &[], &[]);
    let (_, aliases) = server
        .get_json("/2015-03-31/functions/canary/aliases")
        .await;
    assert_eq!(aliases["Aliases"][0]["Name"], "edge", "{aliases}");
    let (_, versions) = server
        .get_json("/2015-03-31/functions/canary/versions")
        .await;
    assert_eq!(
        versions["Versions"].as_array().unwrap().len(),
        2,
        "{versions}"
    );
    let r = server.invoke_with("canary:edge", "{}", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-amz-executed-version"), Some("$LATEST"));
    // Routes can target an alias (`function:alias`); a missing one is refused at deploy time.
    let put = |routes: serde_json::Value| {
        server
            .http
            .put(server.url("/rampart/v1/apis/aliased"))
            .json(&serde_json::json!({"name": "aliased", "routes": routes}))
            .send()
    };
    let r = put(serde_json::json!([{"route": "GET /gone", "function": "canary:live"}]))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("canary:live"));
    let r = put(serde_json::json!([{"route": "GET /edge", "function": "canary:edge"}]))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = server
        .http
        .get(format!("{}/edge", server.http_endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"v": 2}"#);
}
