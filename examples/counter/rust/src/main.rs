//! The counter in Rust on the official `lambda_runtime` crate (runtime `provided.al2023`).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    counter: i64,
    #[serde(default)]
    operation: String,
}

async fn handler(event: LambdaEvent<Request>) -> Result<Value, Error> {
    let Request { counter, operation } = event.payload;
    let counter = match operation.as_str() {
        "increment" => counter + 1,
        "decrement" => counter - 1,
        _ => {
            return Ok(json!({
                "statusCode": 400,
                "body": json!({"error": "Invalid operation"}).to_string(),
            }));
        }
    };
    let counter = counter.clamp(0, 100);
    println!("{operation}: counter is now {counter}");
    Ok(json!({"statusCode": 200, "body": json!({"counter": counter}).to_string()}))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
