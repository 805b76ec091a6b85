//! API Gateway proxy events (payload formats 1.0 and 2.0) serialized straight from the request,
//! field by field after `shared/spec/api-gateway-events.md`.
//!
//! Built from borrowed structs rather than `serde_json::Value` trees: the event is on every
//! routed request's path, and borrowing keeps it to a handful of allocations. Not
//! `aws_lambda_events`: its serialization differs from what AWS sends (`{}` where AWS sends
//! `null`, extra keys such as `methodArn`).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rampart_model::ACCOUNT_ID;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::routes::{Matched, decode};

/// The parts of an HTTP request an event is built from.
pub(crate) struct HttpRequest<'a> {
    /// The X-Ray trace header of this request (`Root=1-...`).
    pub trace_id: &'a str,
    pub method: &'a str,
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    pub source_ip: String,
    pub request_id: &'a str,
}

/// Names with their values in arrival order, each name once.
#[derive(Default)]
struct Grouped<'a>(Vec<(Cow<'a, str>, Vec<Cow<'a, str>>)>);

impl<'a> Grouped<'a> {
    /// Groups `(name, value)` pairs by name, keeping the order names first appear in.
    /// (Header maps are grouped already; this is for query strings.)
    fn collect(pairs: impl Iterator<Item = (Cow<'a, str>, Cow<'a, str>)>) -> Self {
        let mut out: Vec<(Cow<'a, str>, Vec<Cow<'a, str>>)> = Vec::new();
        let mut index: HashMap<Cow<'a, str>, usize> = HashMap::new();
        for (name, value) in pairs {
            match index.get(&name) {
                Some(&i) => out[i].1.push(value),
                None => {
                    index.insert(name.clone(), out.len());
                    out.push((name, vec![value]));
                }
            }
        }
        Self(out)
    }

    /// Replaces the values of `name`, or adds it last.
    fn set(&mut self, name: Cow<'a, str>, value: Cow<'a, str>) {
        match self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            Some((_, values)) => *values = vec![value],
            None => self.0.push((name, vec![value])),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How a [`Grouped`] set appears in an event.
#[derive(Clone, Copy)]
enum View {
    /// `name: "v1,v2"` (2.0 headers and query strings).
    Joined,
    /// `name: "last"` (1.0 single-value maps).
    Last,
    /// `name: ["v1", "v2"]` (1.0 multi-value maps).
    All,
}

struct MapView<'g, 'a>(&'g Grouped<'a>, View);

impl Serialize for MapView<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.0.len()))?;
        for (name, values) in &self.0.0 {
            match (self.1, values.as_slice()) {
                (View::All, all) => map.serialize_entry(name, all)?,
                (View::Joined, [one]) | (View::Last, [.., one]) => {
                    map.serialize_entry(name, one)?
                }
                (View::Joined, many) => map.serialize_entry(name, &many.join(","))?,
                (View::Last, []) => map.serialize_entry(name, "")?,
            }
        }
        map.end()
    }
}

/// A grouped set in the given view, or `null` when empty (1.0).
fn nullable<'g, 'a>(grouped: &'g Grouped<'a>, view: View) -> Option<MapView<'g, 'a>> {
    (!grouped.is_empty()).then_some(MapView(grouped, view))
}

impl<'a> HttpRequest<'a> {
    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every header with the ones API Gateway adds (`X-Forwarded-For/-Port/-Proto`,
    /// `X-Amzn-Trace-Id`), names as `spell` writes them.
    fn grouped_headers(&self, spell: impl Fn(&'a str) -> Cow<'a, str>) -> Grouped<'a> {
        let headers = self.headers;
        let mut grouped = Grouped(
            headers
                .keys()
                .map(|name| {
                    let values = headers.get_all(name).iter();
                    let values = values.map(|v| String::from_utf8_lossy(v.as_bytes()));
                    (spell(name.as_str()), values.collect())
                })
                .collect(),
        );
        let forwarded_for = match self.header("x-forwarded-for") {
            Some(chain) => format!("{chain}, {}", self.source_ip),
            None => self.source_ip.clone(),
        };
        grouped.set(spell("x-forwarded-for"), Cow::Owned(forwarded_for));
        let port = self
            .header("host")
            .and_then(|h| h.rsplit_once(':'))
            .map_or("80", |(_, p)| p);
        grouped.set(spell("x-forwarded-port"), Cow::Borrowed(port));
        grouped.set(spell("x-forwarded-proto"), Cow::Borrowed("http"));
        if self.header("x-amzn-trace-id").is_none() {
            grouped.set(spell("x-amzn-trace-id"), Cow::Borrowed(self.trace_id));
        }
        grouped
    }

    /// Decoded query parameters, by name, in order.
    fn grouped_query(&self) -> Grouped<'a> {
        Grouped::collect(form_urlencoded::parse(self.raw_query.as_bytes()))
    }

    /// The body as the event carries it: text when it is text, else base64.
    fn body_field(&self) -> (Option<Cow<'a, str>>, bool) {
        if self.body.is_empty() {
            return (None, false);
        }
        let textual = self.header("content-type").is_none_or(is_text_type);
        match std::str::from_utf8(self.body) {
            Ok(text) if textual => (Some(Cow::Borrowed(text)), false),
            _ => (Some(Cow::Owned(BASE64.encode(self.body))), true),
        }
    }

    /// The host and its first label.
    fn domain(&self) -> (&'a str, &'a str) {
        let host = self.header("host").unwrap_or("localhost");
        let prefix = host.split(['.', ':']).next().unwrap_or_default();
        (host, prefix)
    }
}

/// `Content-Type` for `content-type`: how HTTP/1.1 clients spell header names.
///
/// Payload format 1.0 keeps the client's own casing, which hyper does not expose (it parses
/// names into lower case; hyperium/hyper#2695), so names are given in the canonical form that
/// nearly every HTTP/1.1 client sends and that API Gateway's added headers use.
fn title_case(lower: &str) -> Cow<'_, str> {
    let mut out = String::with_capacity(lower.len());
    let mut upper = true;
    for c in lower.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    Cow::Owned(out)
}

pub(crate) fn is_text_type(content_type: &str) -> bool {
    let t = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    t.starts_with("text/")
        || t.ends_with("/json")
        || t.ends_with("+json")
        || t.ends_with("/xml")
        || t.ends_with("+xml")
        || t == "application/javascript"
        || t == "application/x-www-form-urlencoded"
}

/// `dd/MMM/yyyy:HH:mm:ss +0000` and epoch milliseconds.
fn request_time() -> (String, i64) {
    let now = jiff::Timestamp::now();
    (
        now.strftime("%d/%b/%Y:%H:%M:%S +0000").to_string(),
        now.as_millisecond(),
    )
}

fn path_params<'a>(matched: &'a Matched<'_>) -> Grouped<'a> {
    // Template parameter names are unique: no grouping needed.
    Grouped(
        matched
            .params
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_str()), vec![Cow::Borrowed(v.as_str())]))
            .collect(),
    )
}

fn stage_variables<'a>(matched: &Matched<'a>) -> Option<&'a BTreeMap<String, String>> {
    let vars = &matched.route.api.stage_variables;
    (!vars.is_empty()).then_some(vars)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventV2<'a> {
    version: &'static str,
    route_key: &'a str,
    raw_path: &'a str,
    raw_query_string: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cookies: Vec<&'a str>,
    headers: MapView<'a, 'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_string_parameters: Option<MapView<'a, 'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_parameters: Option<MapView<'a, 'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stage_variables: Option<&'a BTreeMap<String, String>>,
    request_context: ContextV2<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Cow<'a, str>>,
    is_base64_encoded: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContextV2<'a> {
    account_id: &'static str,
    api_id: &'a str,
    domain_name: &'a str,
    domain_prefix: &'a str,
    http: HttpV2<'a>,
    request_id: &'a str,
    route_key: &'a str,
    stage: &'a str,
    time: String,
    time_epoch: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpV2<'a> {
    method: &'a str,
    path: String,
    protocol: &'static str,
    source_ip: &'a str,
    user_agent: &'a str,
}

/// Payload format 2.0 (HTTP API).
pub(crate) fn event_v2(matched: &Matched<'_>, request: &HttpRequest<'_>) -> Bytes {
    let route = matched.route;
    let route_key = match route.template.as_str() {
        "$default" => "$default",
        _ => route.spec.route.as_str(),
    };
    let (time, time_epoch) = request_time();
    let (domain_name, domain_prefix) = request.domain();
    let mut headers = request.grouped_headers(Cow::Borrowed);
    headers.0.retain(|(name, _)| name != "cookie");
    let cookies = request
        .headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let query = request.grouped_query();
    let params = path_params(matched);
    let (body, is_base64_encoded) = request.body_field();
    let event = EventV2 {
        version: "2.0",
        route_key,
        raw_path: request.raw_path,
        raw_query_string: request.raw_query,
        cookies,
        headers: MapView(&headers, View::Joined),
        query_string_parameters: nullable(&query, View::Joined),
        path_parameters: nullable(&params, View::Joined),
        stage_variables: stage_variables(matched),
        request_context: ContextV2 {
            account_id: ACCOUNT_ID,
            api_id: &route.api.name,
            domain_name,
            domain_prefix,
            http: HttpV2 {
                method: request.method,
                path: decode(request.raw_path),
                protocol: "HTTP/1.1",
                source_ip: &request.source_ip,
                user_agent: request.header("user-agent").unwrap_or_default(),
            },
            request_id: request.request_id,
            route_key,
            stage: &route.api.stage,
            time,
            time_epoch,
        },
        body,
        is_base64_encoded,
    };
    to_bytes(&event)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventV1<'a> {
    resource: &'a str,
    path: String,
    http_method: &'a str,
    headers: MapView<'a, 'a>,
    multi_value_headers: MapView<'a, 'a>,
    query_string_parameters: Option<MapView<'a, 'a>>,
    multi_value_query_string_parameters: Option<MapView<'a, 'a>>,
    path_parameters: Option<MapView<'a, 'a>>,
    stage_variables: Option<&'a BTreeMap<String, String>>,
    request_context: ContextV1<'a>,
    body: Option<Cow<'a, str>>,
    is_base64_encoded: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContextV1<'a> {
    account_id: &'static str,
    api_id: &'a str,
    domain_name: &'a str,
    domain_prefix: &'a str,
    extended_request_id: &'a str,
    http_method: &'a str,
    identity: Identity<'a>,
    path: String,
    protocol: &'static str,
    request_id: &'a str,
    request_time: String,
    request_time_epoch: i64,
    resource_id: &'a str,
    resource_path: &'a str,
    stage: &'a str,
}

/// `requestContext.identity`: only the caller's address and agent are known here; the rest is
/// `null`.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Identity<'a> {
    access_key: (),
    account_id: (),
    api_key: (),
    api_key_id: (),
    caller: (),
    client_cert: (),
    cognito_authentication_provider: (),
    cognito_authentication_type: (),
    cognito_identity_id: (),
    cognito_identity_pool_id: (),
    principal_org_id: (),
    source_ip: &'a str,
    user: (),
    user_agent: Option<&'a str>,
    user_arn: (),
}

/// Payload format 1.0 (REST API proxy).
pub(crate) fn event_v1(matched: &Matched<'_>, request: &HttpRequest<'_>) -> Bytes {
    let route = matched.route;
    let resource = match route.template.as_str() {
        "$default" => "/{proxy+}",
        t => t,
    };
    let (request_time, request_time_epoch) = request_time();
    let (domain_name, domain_prefix) = request.domain();
    let headers = request.grouped_headers(title_case);
    let query = request.grouped_query();
    let params = path_params(matched);
    let (body, is_base64_encoded) = request.body_field();
    let event = EventV1 {
        resource,
        path: decode(&matched.path),
        http_method: request.method,
        headers: MapView(&headers, View::Last),
        multi_value_headers: MapView(&headers, View::All),
        query_string_parameters: nullable(&query, View::Last),
        multi_value_query_string_parameters: nullable(&query, View::All),
        path_parameters: nullable(&params, View::Joined),
        stage_variables: stage_variables(matched),
        request_context: ContextV1 {
            account_id: ACCOUNT_ID,
            api_id: &route.api.name,
            domain_name,
            domain_prefix,
            extended_request_id: request.request_id,
            http_method: request.method,
            identity: Identity {
                source_ip: &request.source_ip,
                user_agent: request.header("user-agent"),
                ..Identity::default()
            },
            path: decode(request.raw_path),
            protocol: "HTTP/1.1",
            request_id: request.request_id,
            request_time,
            request_time_epoch,
            resource_id: &route.api.name,
            resource_path: resource,
            stage: &route.api.stage,
        },
        body,
        is_base64_encoded,
    };
    to_bytes(&event)
}

fn to_bytes(event: &impl Serialize) -> Bytes {
    let mut out = Vec::with_capacity(1024);
    // Serializing plain structs of strings and numbers into a Vec cannot fail.
    serde_json::to_writer(&mut out, event).expect("event serializes");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_case_spells_names_as_http1_clients_do() {
        assert_eq!(title_case("content-type"), "Content-Type");
        assert_eq!(title_case("x-amzn-trace-id"), "X-Amzn-Trace-Id");
        assert_eq!(title_case("host"), "Host");
    }

    #[test]
    fn grouped_views_join_keep_last_or_list() {
        let g = Grouped::collect(
            [("a", "1"), ("b", "x"), ("a", "2")]
                .into_iter()
                .map(|(k, v)| (Cow::Borrowed(k), Cow::Borrowed(v))),
        );
        let json = |view| serde_json::to_string(&MapView(&g, view)).unwrap();
        assert_eq!(json(View::Joined), r#"{"a":"1,2","b":"x"}"#);
        assert_eq!(json(View::Last), r#"{"a":"2","b":"x"}"#);
        assert_eq!(json(View::All), r#"{"a":["1","2"],"b":["x"]}"#);
    }
}
