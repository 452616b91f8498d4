//! The `petrel-load` binary against the real endpoint, briefly: it completes its requests
//! without errors, measures the bare server side by side, and samples the endpoint's
//! memory. (Its figures are in docs/PERFORMANCE.md; nothing here asserts speed.)

mod common;

use std::process::Command;

use common::pki::Ca;
use common::server::Endpoint;
use serde_json::Value;

fn load(endpoint: &Endpoint, args: &[&str]) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_petrel-load"))
        .args([
            "--destination",
            &endpoint.addr.to_string(),
            "--ca",
            "ca.pem",
            "--ca-key",
            "ca.key",
            "--server-ca",
            "cacert.pem",
            "--warmup",
            "0s",
            "--json",
        ])
        .args(args)
        .current_dir(&endpoint.dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn start() -> (Ca, Endpoint) {
    let ca = Ca::root_now("load-ca");
    let endpoint = Endpoint::start(&ca, &["--memory", "4096", "--cpus", "0"]);
    std::fs::write(endpoint.dir.join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(endpoint.dir.join("ca.key"), ca.issuer.key().to_pem()).unwrap();
    (ca, endpoint)
}

#[test]
fn info_requests_against_the_endpoint_and_the_bare_server() {
    let (_ca, endpoint) = start();
    let results = load(
        &endpoint,
        &[
            "--command",
            "unikernel-info",
            "--clients",
            "1,3",
            "--count",
            "6",
            "--bare-server",
            "--cacert",
            "cacert.pem",
            "--cert",
            "server.pem",
            "--key",
            "server.key",
        ],
    );
    assert_eq!(results.len(), 6, "{results:?}");
    for (i, (target, clients)) in [
        ("endpoint", 1),
        ("bare", 1),
        ("ratio", 1),
        ("endpoint", 3),
        ("bare", 3),
        ("ratio", 3),
    ]
    .into_iter()
    .enumerate()
    {
        let result = &results[i];
        assert_eq!(result["clients"], clients, "{result}");
        if target == "ratio" {
            assert!(
                result["endpoint_vs_bare"].as_f64().unwrap() > 0.0,
                "{result}"
            );
            continue;
        }
        assert_eq!(result["target"], target, "{result}");
        assert_eq!(result["command"], "unikernel info");
        assert_eq!(
            (&result["requests"], &result["errors"]),
            (&6.into(), &0.into())
        );
        assert!(result.get("first_error").is_none(), "{result}");
    }
    // The endpoint really ran the commands.
    let audit = endpoint.audit(12);
    assert!(
        audit
            .iter()
            .all(|r| r["command"] == "unikernel info" && r["outcome"] == "ok"),
        "{audit:?}"
    );
}

#[test]
fn uploads_with_the_endpoints_memory_sampled() {
    let (_ca, endpoint) = start();
    let pid = endpoint.pid().to_string();
    let results = load(
        &endpoint,
        &[
            "--command",
            "upload",
            "--image-size",
            "300000",
            "--count",
            "2",
            "--pid",
            &pid,
        ],
    );
    assert_eq!(results.len(), 1, "{results:?}");
    let result = &results[0];
    assert_eq!(
        (&result["requests"], &result["errors"]),
        (&2.into(), &0.into()),
        "{result}"
    );
    for field in ["vm_hwm_before_kib", "vm_hwm_after_kib", "vm_rss_max_kib"] {
        assert!(result[field].as_u64().unwrap() > 0, "{field}: {result}");
    }
    // 300 000 octets in 64 KiB chunks (5 headers of 4 octets) and the terminator, twice.
    assert_eq!(result["sent_bytes"], 2 * (300_000 + 5 * 4 + 4));
    let audit = endpoint.audit(2);
    assert_eq!(audit[0]["command"], "unikernel force create");
    assert_eq!(audit[0]["name"], ":load0");
    assert_eq!(audit[0]["outcome"], "ok");
}
