//! A typed client of Rampart's API for the CLI (and `rampart up`).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

/// Talks to one server.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

/// The result of an invocation.
pub struct Invocation {
    /// `X-Amz-Function-Error`, if set.
    pub function_error: Option<String>,
    /// `X-Amz-Executed-Version`.
    pub executed_version: Option<String>,
    /// Decoded `X-Amz-Log-Result`.
    pub log_tail: Option<String>,
    /// The response body.
    pub body: Vec<u8>,
}

/// An API error answered by the server.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: u16,
    /// `x-amzn-ErrorType`.
    pub code: String,
    /// The message.
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ApiFailure {}

impl ApiFailure {
    /// The failure an error answer describes (Lambda spells the message `message` or `Message`).
    fn from_body(status: u16, code: String, body: &[u8]) -> Self {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let message = v
            .get("message")
            .or_else(|| v.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Self {
            status,
            code,
            message,
        }
    }
}

fn escape(name: &str) -> String {
    name.replace('%', "%25")
        .replace(':', "%3A")
        .replace('$', "%24")
        .replace('/', "%2F")
}

impl Client {
    /// A client of the server at `endpoint` (`http://host:port`).
    pub fn new(endpoint: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // Invocations may legitimately run up to 900 s.
            .timeout(Duration::from_secs(960))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: endpoint.trim_end_matches('/').to_owned(),
            http,
        })
    }

    async fn call(&self, request: reqwest::RequestBuilder, what: &str) -> Result<Value> {
        let response = request
            .send()
            .await
            .with_context(|| format!("{what}: could not reach the server at {}", self.base))?;
        let status = response.status();
        // Lambda names the error in `x-amzn-ErrorType`, CloudWatch in `x-amzn-query-error`.
        let code = response
            .headers()
            .get("x-amzn-errortype")
            .or_else(|| response.headers().get("x-amzn-query-error"))
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).to_owned());
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("{what}: reading the answer"))?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if !status.is_success() {
            let message = body
                .get("message")
                .or_else(|| body.get("Message"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            return Err(anyhow::Error::new(ApiFailure {
                status: status.as_u16(),
                code: code.unwrap_or_else(|| "UnknownError".into()),
                message,
            })
            .context(what.to_owned()));
        }
        Ok(body)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// CreateFunction.
    pub async fn create_function(&self, mut config: Value, zip: &[u8]) -> Result<Value> {
        config["Code"] = json!({"ZipFile": BASE64.encode(zip)});
        let name = config["FunctionName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.call(
            self.http
                .post(self.url("/2015-03-31/functions"))
                .json(&config),
            &format!("creating function {name}"),
        )
        .await
    }

    /// UpdateFunctionCode.
    pub async fn update_code(&self, name: &str, zip: &[u8]) -> Result<Value> {
        self.call(
            self.http
                .put(self.url(&format!("/2015-03-31/functions/{}/code", escape(name))))
                .json(&json!({"ZipFile": BASE64.encode(zip)})),
            &format!("updating the code of {name}"),
        )
        .await
    }

    /// UpdateFunctionConfiguration.
    pub async fn update_configuration(&self, name: &str, config: &Value) -> Result<Value> {
        self.call(
            self.http
                .put(self.url(&format!(
                    "/2015-03-31/functions/{}/configuration",
                    escape(name)
                )))
                .json(config),
            &format!("updating the configuration of {name}"),
        )
        .await
    }

    /// GetFunction; `None` when it does not exist.
    pub async fn get_function(&self, name: &str) -> Result<Option<Value>> {
        let result = self
            .call(
                self.http
                    .get(self.url(&format!("/2015-03-31/functions/{}", escape(name)))),
                &format!("reading function {name}"),
            )
            .await;
        match result {
            Ok(v) => Ok(Some(v)),
            Err(e)
                if e.downcast_ref::<ApiFailure>()
                    .is_some_and(|f| f.status == 404) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// ListFunctions, following every page.
    pub async fn list_functions(&self) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut request = self.http.get(self.url("/2015-03-31/functions"));
            if let Some(m) = &marker {
                request = request.query(&[("Marker", m)]);
            }
            let page = self.call(request, "listing functions").await?;
            if let Some(functions) = page["Functions"].as_array() {
                all.extend(functions.iter().cloned());
            }
            match page["NextMarker"].as_str() {
                Some(m) => marker = Some(m.to_owned()),
                None => return Ok(all),
            }
        }
    }

    /// DeleteFunction.
    pub async fn delete_function(&self, name: &str) -> Result<()> {
        self.call(
            self.http
                .delete(self.url(&format!("/2015-03-31/functions/{}", escape(name)))),
            &format!("deleting function {name}"),
        )
        .await
        .map(|_| ())
    }

    /// A call to Rampart's management API with an optional JSON body.
    pub async fn manage(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<Value> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.call(request, what).await
    }

    /// A CloudWatch call (awsJson 1.0, as boto3 makes it).
    pub async fn cloudwatch(&self, operation: &str, input: &Value) -> Result<Value> {
        self.call(
            self.http
                .post(self.url("/"))
                .header(
                    "x-amz-target",
                    format!("GraniteServiceVersion20100801.{operation}"),
                )
                .header("content-type", "application/x-amz-json-1.0")
                .body(input.to_string()),
            &format!("calling CloudWatch {operation}"),
        )
        .await
    }

    /// Creates or replaces an HTTP API.
    pub async fn put_api(&self, api: &rampart_model::ApiSpec) -> Result<Value> {
        self.call(
            self.http
                .put(self.url(&format!("/rampart/v1/apis/{}", escape(&api.name))))
                .json(api),
            &format!("deploying API {}", api.name),
        )
        .await
    }

    /// Instance counts of a function.
    pub async fn stats(&self, name: &str) -> Result<Value> {
        self.call(
            self.http
                .get(self.url(&format!("/rampart/v1/functions/{}/stats", escape(name)))),
            &format!("reading the stats of {name}"),
        )
        .await
    }

    /// Log lines of a function.
    pub async fn logs(&self, name: &str, query: &[(&str, String)]) -> Result<Vec<Value>> {
        let body = self
            .call(
                self.http
                    .get(self.url(&format!("/rampart/v1/functions/{}/logs", escape(name))))
                    .query(query),
                &format!("reading the logs of {name}"),
            )
            .await?;
        Ok(body["lines"].as_array().cloned().unwrap_or_default())
    }

    /// Invoke with InvocationType Event: returns the request id once the event is stored.
    pub async fn invoke_async(
        &self,
        name: &str,
        qualifier: Option<&str>,
        payload: Vec<u8>,
    ) -> Result<String> {
        let mut request = self
            .http
            .post(self.url(&format!(
                "/2015-03-31/functions/{}/invocations",
                escape(name)
            )))
            .header("X-Amz-Invocation-Type", "Event")
            .body(payload);
        if let Some(q) = qualifier {
            request = request.query(&[("Qualifier", q)]);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "invoking {name}: could not reach the server at {}",
                self.base
            )
        })?;
        let id = response
            .headers()
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let status = response.status().as_u16();
        if status != 202 {
            let code = response
                .headers()
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("UnknownError")
                .to_owned();
            let body = response.bytes().await.unwrap_or_default();
            bail!(ApiFailure::from_body(status, code, &body));
        }
        Ok(id)
    }

    /// Invoke (RequestResponse).
    pub async fn invoke(
        &self,
        name: &str,
        qualifier: Option<&str>,
        payload: Vec<u8>,
        tail: bool,
    ) -> Result<Invocation> {
        let mut request = self
            .http
            .post(self.url(&format!(
                "/2015-03-31/functions/{}/invocations",
                escape(name)
            )))
            .body(payload);
        if let Some(q) = qualifier {
            request = request.query(&[("Qualifier", q)]);
        }
        if tail {
            request = request.header("X-Amz-Log-Type", "Tail");
        }
        let response = request.send().await.with_context(|| {
            format!(
                "invoking {name}: could not reach the server at {}",
                self.base
            )
        })?;
        let header = |n: &str| {
            response
                .headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let status = response.status().as_u16();
        let function_error = header("x-amz-function-error");
        let executed_version = header("x-amz-executed-version");
        let code = header("x-amzn-errortype");
        let log_tail = header("x-amz-log-result")
            .and_then(|t| BASE64.decode(t).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let body = response
            .bytes()
            .await
            .context("reading the invocation result")?
            .to_vec();
        if let Some(code) = code {
            bail!(ApiFailure::from_body(status, code, &body));
        }
        Ok(Invocation {
            function_error,
            executed_version,
            log_tail,
            body,
        })
    }
}
