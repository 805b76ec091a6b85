//! The audit trail: control-plane actions recorded with principal, source, redacted
//! parameters and result; `rampart audit verify` finds records tampered with in the SQLite file.

use serde_json::{Value, json};

use crate::harness::{Server, rampart_cli, run_python};

/// Edits record 2 and removes record 3 straight in the database file.
const TAMPER: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE audit SET principal = 'someone-else' WHERE seq = 2")
db.execute("DELETE FROM audit WHERE seq = 3")
db.commit()
print("tampered")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_actions_are_recorded_and_tampering_is_detected() {
    let temp = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(temp.path(), &[], &[]);
    server
        .deploy(
            "audited",
            "python3.12",
            "app.handler",
            &[("app.py", "def handler(e, c):\n    return e\n")],
            json!({}),
        )
        .await;
    // A configuration change with a secret, signed by a principal.
    let r = server
        .http
        .put(server.url("/2015-03-31/functions/audited/configuration"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDAUDITOR/20261125/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=0",
        )
        .json(&json!({"Environment": {"Variables": {"DB_PASSWORD": "hunter2"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A failed action is recorded with its error code.
    let r = server
        .http
        .delete(server.url("/2015-03-31/functions/missing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Reads and invocations are not control actions.
    assert_eq!(server.invoke("audited", "{}").await.status, 200);
    let (_, _) = server.get_json("/2015-03-31/functions").await;
    let r = server
        .http
        .post(server.url("/rampart/v1/keys"))
        .json(&json!({"name": "partner"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // Over the control plane's 70 MB limit: refused with 413, and recorded as refused.
    let r = server
        .http
        .put(server.url("/2015-03-31/functions/audited/code"))
        .body(vec![b' '; 70 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["x-amzn-errortype"], "RequestTooLargeException");

    let (status, body) = server.get_json("/rampart/v1/audit").await;
    assert_eq!(status, 200);
    let records = body["records"].as_array().unwrap().clone();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "CreateFunction20150331",
            "UpdateFunctionConfiguration20150331v2",
            "DeleteFunction20150331",
            "CreateApiKey",
            "UpdateFunctionCode20150331v2"
        ],
        "{body}"
    );
    let update = &records[1];
    assert_eq!(update["principal"], "AKIDAUDITOR");
    assert_eq!(update["source"], "127.0.0.1");
    assert_eq!(update["resource"], "audited");
    assert_eq!(update["result"], "OK");
    assert_eq!(
        update["parameters"]["Environment"]["Variables"]["DB_PASSWORD"],
        "(redacted)"
    );
    assert!(!body.to_string().contains("hunter2"));
    assert_eq!(
        records[0]["parameters"]["Code"]["ZipFile"], "(redacted)",
        "code is not kept in the trail"
    );
    assert_eq!(records[2]["result"], "ResourceNotFoundException");
    assert_eq!(records[2]["principal"], "anonymous");
    assert_eq!(records[3]["resource"], "partner");
    assert_eq!(records[4]["result"], "RequestTooLargeException");

    // The CLI lists and filters, and verifies the intact chain.
    let (ok, out, err) = rampart_cli(
        &server.endpoint,
        &["audit", "--action", "DeleteFunction20150331"],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("ResourceNotFoundException") && !out.contains("CreateApiKey"),
        "{out}"
    );
    let (ok, out, err) = rampart_cli(&server.endpoint, &["audit", "verify"]);
    assert!(ok && out.contains("intact: 5 records"), "{out}{err}");

    // Tamper with the file while the server is down; the next server finds it.
    server.kill9();
    let db = temp.path().join("rampart.db");
    let (ok, output) = run_python(TAMPER, &[db.to_str().unwrap()]);
    assert!(ok, "{output}");
    let server = Server::start_in(temp.path(), &[], &[]);
    let (ok, out, err) = rampart_cli(&server.endpoint, &["audit", "verify"]);
    assert!(!ok, "verify must fail: {out}");
    assert!(
        err.contains("record 2: its fields do not match its hash (edited)"),
        "{err}"
    );
    assert!(err.contains("records 3 to 3 are missing"), "{err}");
    let (_, body): (u16, Value) = server.get_json("/rampart/v1/audit/verify").await;
    assert_eq!(body["ok"], false);
}
