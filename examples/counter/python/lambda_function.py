"""Rampart's reference application: a counter, written as any Lambda user would write it."""

import json

LIMIT_LOW, LIMIT_HIGH = 0, 100


def lambda_handler(event, context):
    operation = event.get("operation")
    counter = int(event.get("counter", 0))
    if operation == "increment":
        counter += 1
    elif operation == "decrement":
        counter -= 1
    else:
        return {"statusCode": 400, "body": json.dumps({"error": "Invalid operation"})}
    counter = max(LIMIT_LOW, min(LIMIT_HIGH, counter))
    print(f"{operation}: counter is now {counter}")
    return {"statusCode": 200, "body": json.dumps({"counter": counter})}
