//! The Lambda control API: create, get, list, update, delete, validation and zip safety.

use std::io::{Cursor, Write};

use base64::Engine;
use serde_json::{Value, json};
use zip::write::SimpleFileOptions;

use crate::harness::{Server, zip_of};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

const V1: &str = "def handler(e, c):\n    return 'v1'\n";
const V2: &str = "def handler(e, c):\n    return 'v2'\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_are_created_read_updated_listed_and_deleted() {
    let server = Server::start();
    let (status, created) = server
        .create(
            "f1",
            "python3.12",
            "app.handler",
            &[("app.py", V1)],
            json!({"Description": "first"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["FunctionName"], "f1");
    assert_eq!(
        created["FunctionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:f1"
    );
    assert_eq!(created["Version"], "$LATEST");
    assert_eq!(created["Timeout"], 3);
    assert_eq!(created["MemorySize"], 128);
    assert_eq!(created["State"], "Active");
    let zip = zip_of(&[("app.py", V1)]);
    let sha = b64(&<sha2::Sha256 as sha2::Digest>::digest(&zip));
    assert_eq!(created["CodeSha256"], sha.as_str());
    assert_eq!(created["CodeSize"], zip.len());
    assert!(created["LastModified"].as_str().unwrap().ends_with("+0000"));
    // A taken name is a conflict.
    let (status, _) = server
        .create(
            "f1",
            "python3.12",
            "app.handler",
            &[("app.py", V1)],
            json!({}),
        )
        .await;
    assert_eq!(status, 409);

    let (status, got) = server.get_json("/2015-03-31/functions/f1").await;
    assert_eq!(status, 200);
    assert_eq!(got["Configuration"]["Description"], "first");
    let (_, config) = server
        .get_json("/2015-03-31/functions/f1/configuration")
        .await;
    assert_eq!(config["Handler"], "app.handler");
    let revision = config["RevisionId"].as_str().unwrap().to_owned();

    // Update the configuration: a stale revision is refused, a current one applies.
    let put = |path: &str, body: Value| server.http.put(server.url(path)).json(&body).send();
    let r = put(
        "/2015-03-31/functions/f1/configuration",
        json!({"Timeout": 9, "RevisionId": "stale"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 412);
    let r = put(
        "/2015-03-31/functions/f1/configuration",
        json!({"Timeout": 9, "RevisionId": revision}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["Timeout"], 9);
    assert_ne!(updated["RevisionId"], revision.as_str());
    let r = put(
        "/2015-03-31/functions/f1/configuration",
        json!({"MemorySize": 64}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()["x-amzn-errortype"],
        "InvalidParameterValueException"
    );

    // New code is served at once; version 1 keeps the old code (and its warm instance).
    assert_eq!(server.invoke("f1", "{}").await.json(), json!("v1"));
    let pinned = "import os\ndef handler(e, c):\n    return os.getpid()\n";
    let r = put(
        "/2015-03-31/functions/f1/code",
        json!({"ZipFile": b64(&zip_of(&[("app.py", V2)]))}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server.invoke("f1", "{}").await.json(), json!("v2"));
    let old = server.invoke("f1:1", "{}").await;
    assert_eq!(old.json(), json!("v1"));
    assert_eq!(old.header("x-amz-executed-version"), Some("1"));
    // Updating $LATEST keeps version 1's warm instance.
    let zip_pid = b64(&zip_of(&[("app.py", pinned)]));
    server
        .deploy(
            "pinned",
            "python3.12",
            "app.handler",
            &[("app.py", pinned)],
            json!({}),
        )
        .await;
    let before = server.invoke("pinned:1", "{}").await.json();
    let r = put(
        "/2015-03-31/functions/pinned/code",
        json!({"ZipFile": zip_pid.clone(), "RevisionId": null}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = put(
        "/2015-03-31/functions/pinned/configuration",
        json!({"Timeout": 5}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        server.invoke("pinned:1", "{}").await.json(),
        before,
        "version 1 stayed warm"
    );
    let by_query = |name: &str| {
        server
            .http
            .post(server.url(&format!(
                "/2015-03-31/functions/{name}/invocations?Qualifier=1"
            )))
            .body("{}")
            .send()
    };
    let r = by_query("f1").await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!("v1"));
    let r = by_query("f1:2").await.unwrap();
    assert_eq!(r.status(), 400, "qualifier mismatch");

    // List with pagination.
    for name in ["f2", "f3"] {
        server
            .deploy(
                name,
                "python3.12",
                "app.handler",
                &[("app.py", V1)],
                json!({}),
            )
            .await;
    }
    let (_, page1) = server.get_json("/2015-03-31/functions?MaxItems=2").await;
    let names: Vec<&str> = page1["Functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["FunctionName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["f1", "f2"]);
    let marker = page1["NextMarker"].as_str().unwrap();
    let (_, page2) = server
        .get_json(&format!("/2015-03-31/functions?MaxItems=2&Marker={marker}"))
        .await;
    assert_eq!(page2["Functions"][0]["FunctionName"], "f3");
    assert!(page2.get("NextMarker").is_none());

    // Delete.
    let r = server
        .http
        .delete(server.url("/2015-03-31/functions/f1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(server.invoke("f1", "{}").await.status, 404);
    // A function created again under the name runs its own code, not the deleted one's.
    server
        .deploy(
            "f1",
            "python3.12",
            "app.handler",
            &[("app.py", pinned)],
            json!({}),
        )
        .await;
    assert!(server.invoke("f1", "{}").await.json().is_i64());
    let r = server
        .http
        .delete(server.url("/2015-03-31/functions/f1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = server.get_json("/2015-03-31/functions/f1").await;
    assert_eq!(status, 404);
    let r = server
        .http
        .delete(server.url("/2015-03-31/functions/f1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_functions_are_refused_with_the_reason() {
    let server = Server::start();
    let cases = [
        (json!({"FunctionName": "bad name"}), "bad name"),
        (json!({"Runtime": "python2.7"}), "runtime"),
        (json!({"Timeout": 0}), "timeout"),
        (json!({"Timeout": 901}), "timeout"),
        (json!({"MemorySize": 10241}), "memory"),
        (json!({"Handler": "has space"}), "handler"),
        (
            json!({"Environment": {"Variables": {"AWS_REGION": "x"}}}),
            "AWS_REGION",
        ),
        (json!({"Code": {"ZipFile": "!!!"}}), "base64"),
        (json!({"Code": {"S3Bucket": "b", "S3Key": "k"}}), "ZipFile"),
    ];
    for (extra, needle) in cases {
        let name = extra
            .get("FunctionName")
            .and_then(Value::as_str)
            .unwrap_or("good")
            .to_owned();
        let (status, body) = server
            .create(
                &name,
                "python3.12",
                "app.handler",
                &[("app.py", V1)],
                extra.clone(),
            )
            .await;
        assert_eq!(status, 400, "{extra}: {body}");
        let message = body["message"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            message.contains(&needle.to_lowercase()),
            "{extra}: {message}"
        );
    }
    let (_, list) = server.get_json("/2015-03-31/functions").await;
    assert_eq!(list["Functions"], json!([]), "nothing was created");
}

fn raw_zip(build: impl FnOnce(&mut zip::ZipWriter<Cursor<Vec<u8>>>)) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    build(&mut w);
    w.finish().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_zips_are_refused_and_nothing_is_installed() {
    let server = Server::start();
    let slip = raw_zip(|w| {
        w.start_file("../../escaped.py", SimpleFileOptions::default())
            .unwrap();
        w.write_all(b"x").unwrap();
    });
    let link = raw_zip(|w| {
        w.add_symlink(
            "passwd",
            "../../../../etc/passwd",
            SimpleFileOptions::default(),
        )
        .unwrap();
    });
    let absolute = raw_zip(|w| {
        w.start_file("/tmp/abs.py", SimpleFileOptions::default())
            .unwrap();
    });
    for (zip, needle) in [
        (slip, "zip-slip"),
        (link, "outside"),
        (absolute, "absolute"),
        (b"garbage".to_vec(), "zip"),
    ] {
        let body = json!({
            "FunctionName": "evil", "Runtime": "python3.12", "Handler": "a.b",
            "Role": "arn:aws:iam::000000000000:role/x", "Code": {"ZipFile": b64(&zip)},
        });
        let r = server
            .http
            .post(server.url("/2015-03-31/functions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.headers()["x-amzn-errortype"],
            "InvalidParameterValueException"
        );
        let v: Value = r.json().await.unwrap();
        assert!(v["message"].as_str().unwrap().contains(needle), "{v}");
    }
    assert!(!server.data_dir.join("escaped.py").exists());
    let code_dir = server.data_dir.join("code");
    let left: Vec<_> = std::fs::read_dir(&code_dir)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "partial installs left behind: {left:?}");
    assert_eq!(server.get_json("/2015-03-31/functions/evil").await.0, 404);
}
