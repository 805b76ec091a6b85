"""The counter, monitored: validates the operation, clamps the counter to 0..100 and publishes
it as the custom metric `counter` (namespace `counter`, dimension `operation`) with boto3."""

import datetime
import json

import boto3

LIMIT_LOW, LIMIT_HIGH = 0, 100
OPERATIONS = {"increment": 1, "decrement": -1}

# Created once per instance, as Lambda code usually does.
cloudwatch = boto3.client("cloudwatch")


def lambda_handler(event, context):
    operation = event.get("operation")
    if operation not in OPERATIONS:
        return {"statusCode": 400, "body": json.dumps({"error": "Invalid operation"})}
    try:
        counter = int(event.get("counter", 0))
    except (TypeError, ValueError):
        return {"statusCode": 400, "body": json.dumps({"error": "Invalid counter"})}
    counter = max(LIMIT_LOW, min(LIMIT_HIGH, counter + OPERATIONS[operation]))
    cloudwatch.put_metric_data(
        Namespace="counter",
        MetricData=[
            {
                "MetricName": "counter",
                "Dimensions": [{"Name": "operation", "Value": operation}],
                "Timestamp": datetime.datetime.now(datetime.timezone.utc),
                "Value": counter,
                "Unit": "Count",
            }
        ],
    )
    print(f"{operation}: counter is now {counter}")
    return {"statusCode": 200, "body": json.dumps({"counter": counter})}
