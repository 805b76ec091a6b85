"""Rampart's reference application: a counter, written as any Lambda user would write it.

Invoked directly (or through a `body` route) the event is {"counter": N, "operation": ...};
through an HTTP API route (payload format 2.0, `GET /counter/{op}?counter=N`) the operation
comes from the path and the counter from the query string.
"""

import json

LIMIT_LOW, LIMIT_HIGH = 0, 100


def lambda_handler(event, context):
    if "requestContext" in event:
        query = event.get("queryStringParameters") or {}
        event = {
            "operation": (event.get("pathParameters") or {}).get("op"),
            "counter": query.get("counter", 0),
        }
    operation = event.get("operation")
    try:
        counter = int(event.get("counter", 0))
    except (TypeError, ValueError):
        return {"statusCode": 400, "body": json.dumps({"error": "Invalid counter"})}
    if operation == "increment":
        counter += 1
    elif operation == "decrement":
        counter -= 1
    else:
        return {"statusCode": 400, "body": json.dumps({"error": "Invalid operation"})}
    counter = max(LIMIT_LOW, min(LIMIT_HIGH, counter))
    print(f"{operation}: counter is now {counter}")
    return {"statusCode": 200, "body": json.dumps({"counter": counter})}
