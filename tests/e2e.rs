//! End to end: the real `petrel` client and the real `petrel-endpoint` binary (its real
//! executor, the stand-in tender) over real TLS on loopback, driven as a tenant and an
//! operator type it — `generate`, `add-policy --csr`, `sign`, then remote commands with
//! `--destination`. Where a certificate must be one that petrel's own client refuses to
//! make (a policy beyond its parent, a create the client-side pre-check would stop,
//! certificates made by the `openssl` command line), it is made by other means and sent
//! with `petrel certificate` or the OpenSSL test client.
//!
//! The refusals of the endpoint alone (unknown CA, expiry, missing, critical, truncated or
//! garbage extension, chains of 10) are in `endpoint.rs` and `endpoint_limits.rs`; this
//! file adds what needs the executor behind them.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cli::{Run, Running, ok, petrel, refused};
use common::pki::{Ca, policy};
use common::procs::{self, RECORD_DIR_VAR};
use common::server::{Endpoint, free_port, stand_in_tender};
use petrel::codec::{Command, NetDeviceSpec, UnikernelCmd, UnikernelConfig};
use petrel::executor::manifest::{Device, Target, build_test_image};
use petrel::pki::{CaIssuer, Certificate};

/// Host resources every site's endpoint is started with (the root policy).
const HOST: [&str; 8] = [
    "--cpus",
    "0,1",
    "--memory",
    "1024",
    "--block-storage",
    "1000",
    "--bridges",
    "br0,br1",
];

/// A safety net for conditions the endpoint reaches asynchronously (a tender exiting),
/// not a measurement.
const SETTLE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Fixtures: an operator's site and its tenants, all in one temporary directory

/// An operator's host: `petrel generate` output in `op/`, the endpoint running there with
/// its state in `state/`, and the stand-in tenders' launch records in `tenders/`.
struct Site {
    tmp: tempfile::TempDir,
    op: PathBuf,
    port: u16,
    args: Vec<String>,
    endpoint: Option<Endpoint>,
}

/// A CA that requests are issued from: its directory (where the tenant types commands),
/// its certificate chain file and key file there, and the server's CA certificate.
#[derive(Debug, Clone)]
struct Tenant {
    dir: PathBuf,
    chain: String,
    key: String,
}

impl Site {
    /// `petrel generate myca db.txt` in a fresh operator directory, then the endpoint
    /// started with the generated files and `extra` arguments.
    fn start(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let op = tmp.path().join("op");
        std::fs::create_dir(&op).unwrap();
        let run = ok(&op, &["generate", "myca", "db.txt"]);
        let serial = std::fs::read_to_string(op.join("db.txt")).unwrap();
        let serial = serial.strip_suffix(" server\n").unwrap();
        assert_eq!(
            run.stdout,
            format!(
                "wrote ./myca.key (new key)\nwrote ./cacert.pem\nwrote ./server.key (new key)\n\
                 wrote ./server.pem (serial {serial})\n"
            )
        );
        let port = free_port();
        let state = tmp.path().join("state");
        let mut args: Vec<String> = [
            "cacert.pem",
            "server.pem",
            "server.key",
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--state-dir",
            state.to_str().unwrap(),
            "--tender",
            stand_in_tender(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(HOST.iter().map(|s| s.to_string()));
        args.extend(extra.iter().map(|s| s.to_string()));
        std::fs::create_dir(tmp.path().join("tenders")).unwrap();
        let mut site = Self {
            tmp,
            op,
            port,
            args,
            endpoint: None,
        };
        site.restart();
        site
    }

    /// (Re)starts the endpoint on the same state directory.
    fn restart(&mut self) {
        assert!(self.endpoint.is_none(), "the endpoint is running");
        let records = self.records();
        self.endpoint = Some(Endpoint::spawn_with_env(
            &self.op,
            &self.args,
            self.port,
            &[(RECORD_DIR_VAR, &records)],
        ));
    }

    /// Restarts the endpoint with other host resources (the root policy).
    fn restart_with_host(&mut self, host: &[&str]) {
        self.stop();
        let keep = self.args.len() - HOST.len();
        self.args.truncate(keep);
        self.args.extend(host.iter().map(|s| s.to_string()));
        self.restart();
    }

    /// Stops the endpoint with SIGTERM; it must exit successfully.
    fn stop(&mut self) {
        let endpoint = self.endpoint.take().expect("running");
        assert!(endpoint.stop().success());
    }

    fn endpoint(&self) -> &Endpoint {
        self.endpoint.as_ref().expect("running")
    }

    fn records(&self) -> PathBuf {
        self.tmp.path().join("tenders")
    }

    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// `--destination` as a tenant types it (the server certificate names `localhost`).
    fn destination(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// The operator, issuing from the root CA.
    fn admin(&self) -> Tenant {
        Tenant {
            dir: self.op.clone(),
            chain: "cacert.pem".into(),
            key: "myca.key".into(),
        }
    }

    /// A new tenant directory `name` holding the server's CA certificate.
    fn tenant_dir(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(self.op.join("cacert.pem"), dir.join("cacert.pem")).unwrap();
        dir
    }

    /// Delegation as the README shows it: the new tenant `name` runs
    /// `petrel add-policy NAME POLICY… --csr`, sends the CSR to `parent`, which runs
    /// `petrel sign` and sends back `NAME.pem` (the chain to present).
    fn delegate(&self, parent: &Tenant, name: &str, policy: &[&str]) -> Tenant {
        let dir = self.tenant_dir(name);
        let mut args = vec!["add-policy", name];
        args.extend(policy);
        args.push("--csr");
        let run = ok(&dir, &args);
        assert_eq!(
            run.stdout,
            format!(
                "wrote ./{name}.key (new key)\nwrote ./{name}.req (common name \"{name}\", \
                 policy add)\n"
            )
        );
        let req = format!("{name}.req");
        std::fs::copy(dir.join(&req), parent.dir.join(&req)).unwrap();
        let db = if parent.chain == "cacert.pem" {
            "db.txt".to_owned()
        } else {
            format!("{}.db", parent.key.trim_end_matches(".key"))
        };
        let run = ok(
            &parent.dir,
            &["sign", &parent.chain, &db, &parent.key, &req],
        );
        assert!(
            run.stdout.starts_with(&format!(
                "signed intermediate CA certificate {name} (policy add), serial "
            )),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout.ends_with(&format!("wrote ./{name}.pem\n")),
            "{}",
            run.stdout
        );
        let pem = format!("{name}.pem");
        std::fs::copy(parent.dir.join(&pem), dir.join(&pem)).unwrap();
        Tenant {
            dir,
            chain: pem,
            key: format!("{name}.key"),
        }
    }

    /// `petrel ARGS --destination … --ca … --ca-key … --server-ca cacert.pem` in the
    /// tenant's directory.
    fn run(&self, tenant: &Tenant, args: &[&str]) -> Run {
        let all = self.remote(tenant, args);
        petrel(
            &tenant.dir,
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }

    /// [`Site::run`], requiring success; its standard output.
    fn ok(&self, tenant: &Tenant, args: &[&str]) -> String {
        let all = self.remote(tenant, args);
        ok(
            &tenant.dir,
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .stdout
    }

    /// [`Site::run`], requiring a refusal with `text` (exit 117).
    fn refused(&self, tenant: &Tenant, args: &[&str], text: &str) {
        let all = self.remote(tenant, args);
        refused(
            &tenant.dir,
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
            text,
        );
    }

    /// A long-running `petrel ARGS …` (a console subscription) in the tenant's directory.
    fn spawn(&self, tenant: &Tenant, args: &[&str]) -> Running {
        let all = self.remote(tenant, args);
        Running::start(
            &tenant.dir,
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }

    /// ARGS followed by the request options for `tenant`.
    fn remote(&self, tenant: &Tenant, args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend([
            "--destination".to_owned(),
            self.destination(),
            "--ca".to_owned(),
            tenant.chain.clone(),
            "--ca-key".to_owned(),
            tenant.key.clone(),
            "--server-ca".to_owned(),
            "cacert.pem".to_owned(),
        ]);
        all
    }

    /// Live stand-in tenders, counted by image file name (`<name>.img`).
    fn tenders(&self) -> BTreeMap<String, usize> {
        procs::tenders_by_image(&self.records())
            .into_iter()
            .map(|(image, n)| {
                let file = Path::new(&image).file_name().unwrap().to_string_lossy();
                (file.into_owned(), n)
            })
            .collect()
    }

    /// Waits until the live tenders are exactly `want` (image file → count): tenders exit
    /// asynchronously after a destroy.
    fn wait_for_tenders(&self, want: &[(&str, usize)]) {
        let want: BTreeMap<String, usize> =
            want.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect();
        let start = Instant::now();
        loop {
            let got = self.tenders();
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < SETTLE,
                "tenders {got:?}, expected {want:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Tenant {
    /// A tenant whose CA was made by a fixture (not by `petrel sign`): its chain and key
    /// written to a new directory `name`.
    fn from_fixture(site: &Site, name: &str, ca: &Ca) -> Self {
        let dir = site.tenant_dir(name);
        let chain: String = ca.issuer.chain().iter().map(Certificate::pem).collect();
        std::fs::write(dir.join(format!("{name}.pem")), chain).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), ca.issuer.key().to_pem()).unwrap();
        Self {
            dir,
            chain: format!("{name}.pem"),
            key: format!("{name}.key"),
        }
    }

    /// Writes a fixture leaf (chain and key) issued by this tenant for `command` as
    /// `<file>.pem` and `<file>.key` in the tenant's directory, for `petrel certificate`.
    fn write_leaf(&self, file: &str, cn: &str, command: &Command) {
        let leaf = self.fixture().leaf(Some(cn), command);
        std::fs::write(self.dir.join(format!("{file}.pem")), leaf.chain_pem()).unwrap();
        std::fs::write(self.dir.join(format!("{file}.key")), leaf.key_pem()).unwrap();
    }

    /// The tenant's CA as a test fixture, to issue certificates petrel's client would not
    /// make (the client pre-checks creates against the CA's policy).
    fn fixture(&self) -> Ca {
        let chain = Certificate::from_pem_chain(
            &std::fs::read_to_string(self.dir.join(&self.chain)).unwrap(),
        )
        .unwrap();
        let key = petrel::pki::keys::load_key_file(&self.dir.join(&self.key)).unwrap();
        Ca::from_issuer(
            CaIssuer::new(chain, key).unwrap(),
            time::OffsetDateTime::now_utc(),
        )
    }
}

/// A solo5 image the stand-in tender accepts, with the given devices, written to `path`.
fn write_image(path: &Path, devices: &[Device]) {
    std::fs::write(path, build_test_image(Target::Hvt, 2, devices)).unwrap();
}

/// The rows of an `info`/`policy` table, each split on runs of spaces: the header first,
/// then the rows sorted (replies come in no particular order).
fn table(text: &str) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    if let Some(body) = rows.get_mut(1..) {
        body.sort();
    }
    rows
}

/// The `NAME` column of an `info` table, sorted (replies come in no particular order).
fn names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = table(text)
        .into_iter()
        .skip(1)
        .map(|r| r[0].clone())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------
// The README workflow

#[test]
fn readme_workflow() {
    let site = Site::start(&[]);
    let admin = site.admin();
    // Tenant alice asks for a policy; the operator signs it.
    let alice = site.delegate(&admin, "alice", &["2", "--mem", "256", "--cpu", "0"]);
    write_image(&alice.dir.join("hello.hvt"), &[]);

    let created = site.ok(
        &alice,
        &[
            "create",
            "web",
            "hello.hvt",
            "--arg=--print=hello from web",
            "--arg=--wait",
        ],
    );
    assert_eq!(created, "created unikernel\n");
    site.wait_for_tenders(&[("alice:web.img", 1)]);

    let info = table(&site.ok(&alice, &["info"]));
    assert_eq!(
        info[0],
        [
            "NAME",
            "TYPE",
            "CPUIDS",
            "MEMORY",
            "STARTED",
            "ON",
            "EXIT",
            "NETWORK",
            "BLOCK",
            "DIGEST",
            "ARGUMENTS"
        ]
    );
    assert_eq!(info.len(), 2, "{info:?}");
    let mut row = info[1].clone();
    started(&mut row[5]);
    let digest = hex::encode(&sha256(&build_test_image(Target::Hvt, 2, &[]))[..8]);
    assert_eq!(
        row,
        [
            ":web",
            "solo5",
            "0",
            "32",
            "MB",
            "<started>",
            "quit",
            "-",
            "-",
            &digest,
            "--print=hello",
            "from",
            "web",
            "--wait"
        ]
    );

    let policy = table(&site.ok(&alice, &["policy"]));
    assert_eq!(
        policy,
        [
            vec!["NAME", "UNIKERNELS", "CPUIDS", "MEMORY", "BLOCK", "BRIDGES"],
            vec![":", "2", "0", "256", "MB", "-"],
        ]
    );

    // The console shows the stand-in's --print line; the subscription stays open.
    let mut console = site.spawn(&alice, &["console", "web"]);
    let lines = console.wait_for_line_ending(" hello from web").to_vec();
    console.stop();
    assert_eq!(
        lines
            .iter()
            .map(|l| l.split_once(' ').unwrap().1)
            .collect::<Vec<_>>(),
        [
            "Solo5: Bindings version v0.9.0-petrel-stand-in",
            "hello from web"
        ]
    );

    assert_eq!(
        site.ok(&alice, &["destroy", "web"]),
        "destroyed unikernel\n"
    );
    site.wait_for_tenders(&[]);
    assert_eq!(names(&site.ok(&alice, &["info"])), Vec::<String>::new());
    site.refused(&alice, &["destroy", "web"], "destroy: not found");
}

/// Checks that `text` is an RFC 3339 time and replaces it by `<started>`.
fn started(text: &mut String) {
    assert!(
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok(),
        "{text}"
    );
    *text = "<started>".to_owned();
}

fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

// ---------------------------------------------------------------------------------------
// Second-level delegation

#[test]
fn second_level_delegation_confines_the_sub_tenant() {
    let site = Site::start(&[]);
    let admin = site.admin();
    let alice = site.delegate(&admin, "alice", &["3", "--mem", "512", "--cpu", "0"]);
    // alice delegates to bob with her own CA, without telling the operator.
    let bob = site.delegate(&alice, "bob", &["1", "--mem", "64", "--cpu", "0"]);
    assert_eq!(
        Certificate::from_pem_chain(&std::fs::read_to_string(bob.dir.join("bob.pem")).unwrap())
            .unwrap()
            .len(),
        2,
        "bob.pem holds bob's and alice's certificates"
    );
    for tenant in [&alice, &bob] {
        write_image(&tenant.dir.join("hello.hvt"), &[]);
    }
    let create = |tenant: &Tenant, name: &str| {
        site.ok(tenant, &["create", name, "hello.hvt", "--arg=--wait"])
    };
    assert_eq!(create(&alice, "other"), "created unikernel\n");
    assert_eq!(create(&bob, "web"), "created unikernel\n");
    site.wait_for_tenders(&[("alice:bob:web.img", 1), ("alice:other.img", 1)]);

    // Names are relative to the asker's path.
    assert_eq!(
        names(&site.ok(&admin, &["info"])),
        ["alice:bob:web", "alice:other"]
    );
    assert_eq!(names(&site.ok(&alice, &["info"])), [":other", "bob:web"]);
    assert_eq!(names(&site.ok(&bob, &["info"])), [":web"]);
    assert_eq!(
        table(&site.ok(&alice, &["policy"])),
        [
            vec!["NAME", "UNIKERNELS", "CPUIDS", "MEMORY", "BLOCK", "BRIDGES"],
            vec![":", "3", "0", "512", "MB", "-"],
            vec!["bob:", "1", "0", "64", "MB", "-"],
        ]
    );
    assert_eq!(
        table(&site.ok(&bob, &["policy"])),
        [
            vec!["NAME", "UNIKERNELS", "CPUIDS", "MEMORY", "BLOCK", "BRIDGES"],
            vec![":", "1", "0", "64", "MB", "-"],
        ]
    );

    // bob sees nothing of alice's other unikernel and cannot touch it.
    assert_eq!(
        names(&site.ok(&bob, &["info", "other"])),
        Vec::<String>::new()
    );
    site.refused(&bob, &["destroy", "other"], "destroy: not found");
    site.refused(&bob, &["restart", "other"], "restart: not running");
    // His one unikernel is all his policy allows.
    site.refused(
        &bob,
        &["create", "second", "hello.hvt"],
        "maximum amount of unikernels (1) reached",
    );
    // The same label under bob's path is another unikernel.
    assert_eq!(site.ok(&bob, &["destroy", "web"]), "destroyed unikernel\n");
    assert_eq!(create(&bob, "other"), "created unikernel\n");
    site.wait_for_tenders(&[("alice:bob:other.img", 1), ("alice:other.img", 1)]);
    assert_eq!(
        names(&site.ok(&admin, &["info"])),
        ["alice:bob:other", "alice:other"]
    );
}

// ---------------------------------------------------------------------------------------
// Policy violations through the whole stack

/// `petrel certificate FILE.pem FILE.key [--data IMAGE]` in `dir` against the site.
fn send_certificate(site: &Site, dir: &Path, file: &str, data: Option<&str>) -> Run {
    let destination = site.destination();
    let pem = format!("{file}.pem");
    let key = format!("{file}.key");
    let mut args = vec![
        "certificate",
        &pem,
        &key,
        "--destination",
        &destination,
        "--server-ca",
        "cacert.pem",
    ];
    if let Some(data) = data {
        args.extend(["--data", data]);
    }
    petrel(dir, &args)
}

/// A streamed create (empty image) with CPU ids and bridges, as albatross-client's
/// pre-check would not let it through.
fn create_with(cpuids: &[i64], bridges: &[&str]) -> Command {
    Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
        cpuids: cpuids.iter().copied().collect(),
        bridges: bridges
            .iter()
            .map(|b| NetDeviceSpec {
                netif: "service".into(),
                bridge: Some((*b).to_owned()),
                mac: None,
            })
            .collect(),
        ..UnikernelConfig::default()
    }))
}

fn assert_refused(run: &Run, text: &str) {
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (117, "", format!("petrel: {text}\n").as_str())
    );
}

#[test]
fn every_policy_violation_is_answered_with_its_text() {
    let mut site = Site::start(&[]);
    let admin = site.admin();
    write_image(&admin.dir.join("hello.hvt"), &[]);
    // The client checks the image's manifest against the devices asked for.
    write_image(&admin.dir.join("net.hvt"), &[Device::net("service")]);

    // At the root path the host's resources are the policy at the unikernel's own path:
    // albatross's texts.
    site.refused(
        &admin,
        &["create", "big", "hello.hvt", "--mem", "2048"],
        "maximum allowed memory (1024, used 0) would be exceeded (requesting 2048)",
    );
    site.refused(
        &admin,
        &["create", "pinned", "hello.hvt", "--cpu", "3"],
        "CPUids 3 are not allowed by policy",
    );
    site.refused(
        &admin,
        &["create", "wired", "net.hvt", "--net", "service:br9"],
        "bridges br9 not allowed by policy",
    );
    site.refused(
        &admin,
        &["block-add", "huge", "2000"],
        "block device policy limit of 1000 MB (used 0 MB) would be exceeded by the request \
         (2000 MB)",
    );

    // A first-level policy beyond the host: the root CA has no policy, so `petrel sign`
    // signs it; the endpoint refuses to install it and runs nothing.
    let greedy = site.delegate(&admin, "greedy", &["1", "--mem", "4096"]);
    site.refused(
        &greedy,
        &["policy"],
        "expected success when adding policy, got: policy of greedy: not applied: policy above allows 1024 MB memory, which is fewer \
         than 4096 MB",
    );

    let alice = site.delegate(
        &admin,
        "alice",
        &[
            "2", "--mem", "256", "--cpu", "0", "--bridge", "br0", "--size", "100",
        ],
    );
    let sub = [
        "2", "--mem", "200", "--cpu", "0", "--bridge", "br0", "--size", "80",
    ];
    let bob = site.delegate(&alice, "bob", &sub);
    let carol = site.delegate(&alice, "carol", &sub);
    let dave = site.delegate(&admin, "dave", &["1", "--mem", "64"]);
    for tenant in [&alice, &bob, &carol, &dave] {
        write_image(&tenant.dir.join("hello.hvt"), &[]);
    }
    write_image(&alice.dir.join("net.hvt"), &[Device::net("service")]);
    let create = |tenant: &Tenant, name: &str, mem: &str| {
        site.ok(
            tenant,
            &["create", name, "hello.hvt", "--mem", mem, "--arg=--wait"],
        )
    };

    // A delegated policy beyond its parent's (made without `petrel sign`, which refuses
    // it): the whole chain's policies are refused, the command does not run.
    let greedy = Tenant::from_fixture(
        &site,
        "greedy2",
        &alice
            .fixture()
            .intermediate("greedy2", &policy(5, &[0], 64, None, &[])),
    );
    site.refused(
        &greedy,
        &["policy"],
        "expected success when adding policy, got: policy of alice:greedy2: not applied: policy above allows 2 unikernels, which is \
         fewer than 5",
    );

    // At the unikernel's own path (alice:): albatross's texts.
    assert_eq!(create(&alice, "a1", "32"), "created unikernel\n");
    site.refused(
        &alice,
        &["create", "m", "hello.hvt", "--mem", "240"],
        "maximum allowed memory (256, used 32) would be exceeded (requesting 240)",
    );
    // CPU ids and bridges beyond alice's policy: petrel's client refuses to ask, so the
    // leaves are made by a fixture and sent with `petrel certificate`.
    alice.write_leaf("pinned", "pinned", &create_with(&[1], &[]));
    assert_refused(
        &send_certificate(&site, &alice.dir, "pinned", Some("hello.hvt")),
        "CPUids 1 are not allowed by policy",
    );
    alice.write_leaf("wired", "wired", &create_with(&[0], &["br1"]));
    assert_refused(
        &send_certificate(&site, &alice.dir, "wired", Some("net.hvt")),
        "bridges br1 not allowed by policy",
    );
    assert_eq!(create(&alice, "a2", "32"), "created unikernel\n");
    site.refused(
        &alice,
        &["create", "a3", "hello.hvt"],
        "maximum amount of unikernels (2) reached",
    );
    assert_eq!(
        site.ok(&alice, &["block-add", "d1", "60"]),
        "added block device\n"
    );
    site.refused(
        &alice,
        &["block-add", "d2", "60"],
        "block device policy limit of 100 MB (used 60 MB) would be exceeded by the request \
         (60 MB)",
    );
    site.refused(
        &dave,
        &["block-add", "d", "10"],
        "no block devices are allowed by policy",
    );
    for name in ["a1", "a2"] {
        assert_eq!(site.ok(&alice, &["destroy", name]), "destroyed unikernel\n");
    }
    assert_eq!(site.ok(&alice, &["block-remove", "d1"]), "removed block\n");

    // At an ancestor: bob and carol each fit their own policy, together they would
    // exceed alice's. petrel's texts name the policy and the resource.
    assert_eq!(create(&bob, "x", "150"), "created unikernel\n");
    site.refused(
        &carol,
        &["create", "y", "hello.hvt", "--mem", "150"],
        "policy of alice: would be exceeded: memory (256 MB allowed, 150 MB used, 150 MB \
         requested)",
    );
    assert_eq!(create(&carol, "y", "32"), "created unikernel\n");
    site.refused(
        &bob,
        &["create", "x2", "hello.hvt"],
        "policy of alice: would be exceeded: unikernels (2 allowed, 2 running)",
    );
    assert_eq!(
        site.ok(&bob, &["block-add", "bd", "60"]),
        "added block device\n"
    );
    site.refused(
        &carol,
        &["block-add", "cd", "60"],
        "policy of alice: would be exceeded: block (100 MB allowed, 60 MB used, 60 MB \
         requested)",
    );
    site.wait_for_tenders(&[("alice:bob:x.img", 1), ("alice:carol:y.img", 1)]);

    // CPU ids and bridges cannot exceed an ancestor through delegation (a policy must be
    // within its parent's), but the host can shrink under a tenant: restarted with fewer
    // CPUs and bridges, the root policy is the ancestor that would be exceeded.
    let erin = site.delegate(
        &admin,
        "erin",
        &[
            "2", "--mem", "64", "--cpu", "0", "--cpu", "1", "--bridge", "br0", "--bridge", "br1",
        ],
    );
    write_image(&erin.dir.join("hello.hvt"), &[]);
    write_image(&erin.dir.join("net.hvt"), &[Device::net("service")]);
    site.ok(&erin, &["policy"]);
    site.restart_with_host(&[
        "--cpus",
        "0",
        "--memory",
        "1024",
        "--block-storage",
        "1000",
        "--bridges",
        "br0",
    ]);
    site.refused(
        &erin,
        &["create", "pinned", "hello.hvt", "--cpu", "1"],
        "policy of : would be exceeded: cpuid (1 not allowed)",
    );
    site.refused(
        &erin,
        &["create", "wired", "net.hvt", "--net", "service:br1"],
        "policy of : would be exceeded: bridge (br1 not allowed)",
    );
    // What ran before the restart runs again.
    site.wait_for_tenders(&[("alice:bob:x.img", 1), ("alice:carol:y.img", 1)]);
}

// ---------------------------------------------------------------------------------------
// Replacing and restarting

/// The one live tender of `image` (a file name under `images/`). A tender writes its
/// launch record once it runs, which may be just after the endpoint answered: this waits
/// for it, and fails if there are ever two.
fn only_tender(site: &Site, image: &str) -> procs::Tender {
    let start = Instant::now();
    loop {
        let mut found: Vec<procs::Tender> = procs::live_tenders(&site.records())
            .into_iter()
            .filter(|t| t.image().ends_with(&format!("/{image}")))
            .collect();
        assert!(found.len() <= 1, "{found:?}");
        if let Some(tender) = found.pop() {
            return tender;
        }
        assert!(start.elapsed() < SETTLE, "no tender runs {image}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The unikernel arguments a tender was started with (after the image).
fn unikernel_args(tender: &procs::Tender) -> Vec<String> {
    let image = tender.image().to_owned();
    tender
        .argv
        .iter()
        .skip_while(|a| **a != image)
        .skip(1)
        .cloned()
        .collect()
}

#[test]
fn force_create_replaces_and_restart_takes_new_arguments() {
    let site = Site::start(&[]);
    let alice = site.delegate(&site.admin(), "alice", &["2", "--mem", "128"]);
    write_image(&alice.dir.join("hello.hvt"), &[]);
    let create = |command: &str, name: &str, print: &str| {
        site.ok(
            &alice,
            &[
                command,
                name,
                "hello.hvt",
                &format!("--arg=--print={print}"),
                "--arg=--wait",
            ],
        )
    };
    assert_eq!(create("create", "web", "v1"), "created unikernel\n");
    site.refused(
        &alice,
        &["create", "web", "hello.hvt"],
        "Unikernel with same name is already running",
    );
    // At alice's limit of two: replacing one frees its place.
    assert_eq!(create("create", "db", "db"), "created unikernel\n");
    let v1 = only_tender(&site, "alice:web.img");
    assert_eq!(unikernel_args(&v1), ["--name=web", "--print=v1", "--wait"]);

    assert_eq!(create("force-create", "web", "v2"), "created unikernel\n");
    let v2 = only_tender(&site, "alice:web.img");
    assert_ne!(v2.pid, v1.pid);
    assert_eq!(unikernel_args(&v2), ["--name=web", "--print=v2", "--wait"]);
    // `create --force` is the same command.
    assert_eq!(
        site.ok(
            &alice,
            &[
                "create",
                "web",
                "hello.hvt",
                "--force",
                "--arg=--print=v3",
                "--arg=--wait"
            ]
        ),
        "created unikernel\n"
    );
    let v3 = only_tender(&site, "alice:web.img");
    assert_ne!(v3.pid, v2.pid);
    assert_eq!(unikernel_args(&v3), ["--name=web", "--print=v3", "--wait"]);
    // A replacement that does not fit leaves the running one alone.
    site.refused(
        &alice,
        &["force-create", "web", "hello.hvt", "--mem", "100"],
        "maximum allowed memory (128, used 32) would be exceeded (requesting 100)",
    );
    assert_eq!(only_tender(&site, "alice:web.img"), v3);
    // The console follows the new instance.
    let mut console = site.spawn(&alice, &["console", "web", "--count", "1"]);
    console.wait_for_line_ending(" v3");
    console.stop();

    // Restart: a new tender with the same arguments, then with new ones.
    assert_eq!(site.ok(&alice, &["restart", "web"]), "created unikernel\n");
    let again = only_tender(&site, "alice:web.img");
    assert_ne!(again.pid, v3.pid);
    assert_eq!(unikernel_args(&again), unikernel_args(&v3));
    assert_eq!(
        site.ok(
            &alice,
            &[
                "restart",
                "web",
                "--replace-arguments",
                "--arg=--print=v4",
                "--arg=--wait",
                "--mem",
                "64"
            ]
        ),
        "created unikernel\n"
    );
    let v4 = only_tender(&site, "alice:web.img");
    assert_ne!(v4.pid, again.pid);
    assert_eq!(unikernel_args(&v4), ["--name=web", "--print=v4", "--wait"]);
    assert!(v4.argv.contains(&"--mem=64".to_owned()), "{:?}", v4.argv);
    let info = table(&site.ok(&alice, &["info", "web"]));
    assert_eq!(info[1][3..5], ["64", "MB"]);
    // One process per unikernel, nothing left over from the replaced ones.
    site.wait_for_tenders(&[("alice:db.img", 1), ("alice:web.img", 1)]);
}

// ---------------------------------------------------------------------------------------
// Block devices

#[test]
fn block_set_dump_round_trip_and_set_refused_while_in_use() {
    let site = Site::start(&[]);
    let alice = site.delegate(
        &site.admin(),
        "alice",
        &["2", "--mem", "128", "--size", "20"],
    );
    write_image(&alice.dir.join("db.hvt"), &[Device::block("storage")]);
    // 2 MiB (the device's size): half compressible text, half random.
    let mut content: Vec<u8> = (0..1024 * 1024u32)
        .flat_map(|i| format!("{:07}\n", i % 10_000_000).into_bytes())
        .take(1024 * 1024)
        .collect();
    let mut noise = vec![0u8; 1024 * 1024];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut noise);
    content.extend_from_slice(&noise);
    std::fs::write(alice.dir.join("data.img"), &content).unwrap();

    assert_eq!(
        site.ok(&alice, &["block-add", "disk", "2"]),
        "added block device\n"
    );
    let file = site.state().join("block/alice:disk");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 2 * 1024 * 1024);
    assert_eq!(
        table(&site.ok(&alice, &["block-info"])),
        [
            vec!["NAME", "SIZE", "ACTIVE"],
            vec![":disk", "2", "MB", "no"]
        ]
    );
    // Streamed, compressed at the client's default level.
    assert_eq!(
        site.ok(&alice, &["block-set", "disk", "data.img"]),
        "set block device\n"
    );
    let run = site.run(&alice, &["block-dump", "disk", "dumped.img"]);
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (
            0,
            "",
            "receiving block device alice:disk (compressed)\ndumped to dumped.img\n"
        )
    );
    assert!(std::fs::read(alice.dir.join("dumped.img")).unwrap() == content);
    // Uncompressed both ways gives the same bytes.
    assert_eq!(
        site.ok(
            &alice,
            &["block-set", "disk", "data.img", "--compression-level", "0"]
        ),
        "set block device\n"
    );
    site.ok(
        &alice,
        &[
            "block-dump",
            "disk",
            "plain.img",
            "--compression-level",
            "0",
        ],
    );
    assert!(std::fs::read(alice.dir.join("plain.img")).unwrap() == content);

    // A unikernel uses the device: it cannot be set, dumped or removed meanwhile.
    assert_eq!(
        site.ok(
            &alice,
            &[
                "create",
                "db",
                "db.hvt",
                "--block",
                "storage:disk",
                "--arg=--write-block=storage:written by db",
                "--arg=--print=written",
                "--arg=--wait",
            ],
        ),
        "created unikernel\n"
    );
    let mut console = site.spawn(&alice, &["console", "db"]);
    console.wait_for_line_ending(" written");
    console.stop();
    assert_eq!(
        table(&site.ok(&alice, &["block-info", "disk"])),
        // A labelled name is answered with its full name (albatross's behaviour).
        [
            vec!["NAME", "SIZE", "ACTIVE"],
            vec!["alice:disk", "2", "MB", "yes"]
        ]
    );
    site.refused(
        &alice,
        &["block-set", "disk", "data.img"],
        "set block: is in use",
    );
    site.refused(
        &alice,
        &["block-dump", "disk", "busy.img"],
        "dump block: is in use",
    );
    site.refused(&alice, &["block-remove", "disk"], "remove block: is in use");
    assert_eq!(site.ok(&alice, &["destroy", "db"]), "destroyed unikernel\n");

    // What the unikernel wrote is on the device.
    site.ok(&alice, &["block-dump", "disk", "after.img"]);
    let after = std::fs::read(alice.dir.join("after.img")).unwrap();
    let written = b"written by db";
    assert_eq!(&after[..written.len()], written);
    assert!(after[written.len()..] == content[written.len()..]);

    assert_eq!(
        site.ok(&alice, &["block-remove", "disk"]),
        "removed block\n"
    );
    assert!(!file.exists());
    assert_eq!(
        names(&site.ok(&alice, &["block-info"])),
        Vec::<String>::new()
    );
    site.refused(&alice, &["block-remove", "disk"], "remove block: not found");
}

// ---------------------------------------------------------------------------------------
// Certificates made by another toolchain

/// Runs the `openssl` command line in `dir`; it must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "openssl {args:?}: {output:?}");
}

/// Issues `<name>.pem` (key `<name>.key` of `key_type`, subject CN `cn`) signed by
/// `issuer`, with the extensions of `profile` and, if given, the albatross extension
/// value `albatross` (hex DER), all with the `openssl` command line.
fn openssl_issue(
    dir: &Path,
    name: &str,
    cn: &str,
    key_type: &[&str],
    issuer: &str,
    profile: &str,
    albatross: Option<&str>,
) {
    let key = format!("{name}.key");
    let mut genpkey = vec!["genpkey", "-out", &key];
    genpkey.extend(key_type);
    openssl(dir, &genpkey);
    let csr = format!("{name}.csr");
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &["req", "-new", "-key", &key, "-subj", &subject, "-out", &csr],
    );
    let mut config =
        format!("[ext]\n{profile}\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n");
    if let Some(der) = albatross {
        config.push_str(&format!("1.3.6.1.4.1.49836.42 = DER:{der}\n"));
    }
    let config_file = format!("{name}.cnf");
    std::fs::write(dir.join(&config_file), config).unwrap();
    let serial = format!("0x{}", hex::encode(rand::random::<[u8; 9]>()));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-extfile",
            &config_file,
            "-extensions",
            "ext",
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// The profile of an intermediate CA (albatross-client's, spec tls-endpoint.md §4).
const OPENSSL_CA: &str = "basicConstraints = critical, CA:TRUE\nkeyUsage = critical, digitalSignature, \
     nonRepudiation, keyCertSign, cRLSign";

/// The profile of a client certificate.
const OPENSSL_LEAF: &str = "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, \
                            digitalSignature, keyEncipherment\nextendedKeyUsage = clientAuth";

#[test]
fn certificates_made_with_the_openssl_command_line_are_executed() {
    let mut site = Site::start(&[]);
    let dir = site.tenant_dir("ossl");
    // An RSA root, an ECDSA P-256 intermediate, Ed25519 leaves: every signature
    // algorithm family of the spec, none made by petrel.
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-subj",
            "/CN=openssl-root",
            "-days",
            "30",
            "-addext",
            "basicConstraints = critical, CA:TRUE",
            "-addext",
            "keyUsage = critical, keyCertSign, cRLSign",
        ],
    );
    // Example 3 of spec/wire.md §12: the upstream intermediate "arc" (1 unikernel, CPU 0,
    // 512 MB, no block, no bridges).
    let arc_policy = "3017020105A412A110300E3003020100020101020202003000";
    openssl_issue(
        &dir,
        "arc",
        "arc",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "root",
        OPENSSL_CA,
        Some(arc_policy),
    );
    let ed25519: &[&str] = &["-algorithm", "ed25519"];
    // policy info (spec/wire.md example 4's command), path-only (CN ".").
    let policy_info = "300902010 5A404A0020500".replace(' ', "");
    assert_eq!(
        hex::decode(&policy_info).unwrap(),
        petrel::codec::encode_extension(&Command::Policy(petrel::codec::PolicyCmd::Info))
    );
    openssl_issue(
        &dir,
        "info",
        ".",
        ed25519,
        "arc",
        OPENSSL_LEAF,
        Some(&policy_info),
    );
    // A create whose extension embeds the compressed image, encoded by petrel's codec.
    let image = build_test_image(Target::Hvt, 2, &[]);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
    std::io::Write::write_all(&mut z, &image).unwrap();
    let create = Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
        compressed: true,
        image: z.finish().unwrap(),
        arguments: Some(vec!["--print=made by openssl".into(), "--wait".into()]),
        ..UnikernelConfig::default()
    }));
    let create_der = hex::encode(petrel::codec::encode_extension(&create));
    openssl_issue(
        &dir,
        "create",
        "web",
        ed25519,
        "arc",
        OPENSSL_LEAF,
        Some(&create_der),
    );
    // Example 2: console subscribe, count 20.
    openssl_issue(
        &dir,
        "console",
        "web",
        ed25519,
        "arc",
        OPENSSL_LEAF,
        Some("300C020105A007A205A103020114"),
    );
    // Example 6's command: unikernel destroy.
    openssl_issue(
        &dir,
        "destroy",
        "web",
        ed25519,
        "arc",
        OPENSSL_LEAF,
        Some("3009020105A304A3020500"),
    );
    let arc = std::fs::read_to_string(dir.join("arc.pem")).unwrap();
    for leaf in ["info", "create", "console", "destroy"] {
        let pem = std::fs::read_to_string(dir.join(format!("{leaf}.pem"))).unwrap();
        std::fs::write(dir.join(format!("{leaf}-chain.pem")), pem + &arc).unwrap();
    }

    // The endpoint trusts both its own CA and the OpenSSL root (CACERT holds several).
    let root = std::fs::read_to_string(dir.join("root.pem")).unwrap();
    let cacert = site.op.join("cacert.pem");
    let ours = std::fs::read_to_string(&cacert).unwrap();
    site.stop();
    std::fs::write(&cacert, ours + &root).unwrap();
    site.restart();
    // The client checks its own chain against --server-ca too: the tenant gets the file.
    std::fs::copy(&cacert, dir.join("cacert.pem")).unwrap();

    let send = |leaf: &str| send_certificate(&site, &dir, &format!("{leaf}-chain"), None);
    let send_ok = |leaf: &str| {
        let run = send(leaf);
        assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{leaf}: {run:?}");
        run.stdout
    };
    // `petrel certificate` takes the key next to the chain: name them alike.
    for leaf in ["info", "create", "console", "destroy"] {
        std::fs::copy(
            dir.join(format!("{leaf}.key")),
            dir.join(format!("{leaf}-chain.key")),
        )
        .unwrap();
    }
    assert_eq!(
        table(&send_ok("info")),
        [
            vec!["NAME", "UNIKERNELS", "CPUIDS", "MEMORY", "BLOCK", "BRIDGES"],
            vec![":", "1", "0", "512", "MB", "-"],
        ]
    );
    assert_eq!(send_ok("create"), "created unikernel\n");
    site.wait_for_tenders(&[("arc:web.img", 1)]);
    let destination = site.destination();
    let mut console = Running::start(
        &dir,
        &[
            "certificate",
            "console-chain.pem",
            "console-chain.key",
            "--destination",
            &destination,
            "--server-ca",
            "cacert.pem",
        ],
    );
    console.wait_for_line_ending(" made by openssl");
    console.stop();
    // The OpenSSL-made intermediate and its P-256 key also sign requests made on the fly
    // by petrel's client.
    let arc_tenant = Tenant {
        dir: dir.clone(),
        chain: "arc.pem".into(),
        key: "arc.key".into(),
    };
    assert_eq!(names(&site.ok(&arc_tenant, &["info"])), [":web"]);
    assert_eq!(send_ok("destroy"), "destroyed unikernel\n");
    site.wait_for_tenders(&[]);
    assert_eq!(
        names(&site.ok(&arc_tenant, &["info"])),
        Vec::<String>::new()
    );
}

// ---------------------------------------------------------------------------------------
// Images embedded in the certificate, and the chain size limit

#[test]
fn embedded_2_mib_image_runs_and_an_oversized_chain_is_refused_unbuffered() {
    // A limit between the two requests below.
    let site = Site::start(&["--max-chain-size", "4194304"]);
    let admin = site.admin();
    // An image that compresses to more than 2 MiB: a stub followed by random octets.
    let mut image = build_test_image(Target::Hvt, 2, &[]);
    let mut padding = vec![0u8; 2 * 1024 * 1024];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut padding);
    image.extend_from_slice(&padding);
    std::fs::write(admin.dir.join("big.hvt"), &image).unwrap();

    // As albatross-client does it: the image in the leaf, nothing streamed.
    let created = site.ok(
        &admin,
        &[
            "create",
            "big",
            "big.hvt",
            "--embed-image",
            "--arg=--print=embedded",
            "--arg=--wait",
        ],
    );
    assert_eq!(created, "created unikernel\n");
    let stored = site.state().join("images/:big.img");
    assert!(std::fs::read(&stored).unwrap() == image);
    let mut console = site.spawn(&admin, &["console", "big"]);
    console.wait_for_line_ending(" embedded");
    console.stop();
    let record = common::server::wait_for_audit(&site.state().join(petrel::audit::AUDIT_FILE), 1)
        .into_iter()
        .find(|r| r["command"] == "unikernel create")
        .unwrap();
    assert_eq!(record["outcome"], "ok");

    // A chain three times the limit (TLS caps a handshake message at 16 MiB): refused
    // from the Certificate message's header, so the endpoint's peak memory does not grow
    // by anything near its size.
    let ca = admin.fixture();
    let size = 12 * 1024 * 1024;
    let mut huge = vec![0u8; size];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut huge);
    let leaf = ca.leaf(
        Some("huge"),
        &Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
            image: huge,
            ..UnikernelConfig::default()
        })),
    );
    drop(padding);
    let pid = site.endpoint().pid();
    let before = procs::status_kib(pid, "VmHWM");
    let result =
        common::tls_client::request(site.endpoint().addr, &leaf.chain, &leaf.key, ca.cert());
    assert!(result.is_err(), "{result:?}");
    site.endpoint()
        .wait_for_log("outcome=handshake error: excessive message size");
    let after = procs::status_kib(pid, "VmHWM");
    let grown = after.saturating_sub(before);
    assert!(
        grown * 1024 < u64::try_from(size).unwrap() / 4,
        "VmHWM grew by {grown} KiB ({before} → {after}) for a chain of {size} octets"
    );
    // And it keeps serving.
    assert_eq!(names(&site.ok(&admin, &["info"])), [":big"]);
}

// ---------------------------------------------------------------------------------------
// Refusals that need the executor, and the client's exit codes

#[test]
fn a_chain_beyond_its_parent_installs_none_of_its_policies() {
    let site = Site::start(&[]);
    let admin = site.admin();
    let team = site.delegate(&admin, "team", &["2", "--mem", "128"]);
    // team's certificate has not been presented yet: its policy is not installed.
    let policies = || {
        let mut names: Vec<String> = table(&site.ok(&admin, &["policy"]))
            .into_iter()
            .skip(1)
            .map(|r| r[0].clone())
            .collect();
        names.sort();
        names
    };
    assert_eq!(policies(), [":"]);
    let deep = Tenant::from_fixture(
        &site,
        "deep",
        &team
            .fixture()
            .intermediate("deep", &policy(5, &[0], 64, None, &[])),
    );
    site.refused(
        &deep,
        &["policy"],
        "expected success when adding policy, got: policy of team:deep: not applied: policy \
         above allows 2 unikernels, which is fewer than 5",
    );
    // The chain's policies are one transaction: team's, which fits, was not kept either.
    assert_eq!(policies(), [":"]);
    // The endpoint keeps serving, and team's own chain installs it.
    write_image(&team.dir.join("hello.hvt"), &[]);
    assert_eq!(
        site.ok(&team, &["create", "web", "hello.hvt", "--arg=--wait"]),
        "created unikernel\n"
    );
    assert_eq!(policies(), [":", "team:"]);
}

#[test]
fn the_client_exits_121_when_the_endpoint_dies_mid_request() {
    let mut site = Site::start(&[]);
    let admin = site.admin();
    write_image(&admin.dir.join("hello.hvt"), &[]);
    site.ok(
        &admin,
        &[
            "create",
            "web",
            "hello.hvt",
            "--arg=--print=up",
            "--arg=--wait",
        ],
    );
    let mut console = site.spawn(&admin, &["console", "web"]);
    console.wait_for_line_ending(" up");
    site.endpoint.take().unwrap().kill();
    assert_eq!(
        console.wait(),
        (
            121,
            "subscribed\npetrel: the server closed the connection without a final reply\n"
                .to_owned()
        )
    );
    // Nobody listens any more: connect failure.
    let run = site.run(&admin, &["info"]);
    assert_eq!(run.code, 122, "{run:?}");
    assert!(
        run.stderr.starts_with(&format!(
            "petrel: couldn't connect to {}: ",
            site.destination()
        )),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------
// kill -9 of the endpoint at random points

/// Rounds of kill -9 in the crash test, and requests it wants confirmed (answered with
/// success before a kill) across them: a loaded machine confirms fewer per round, so the
/// test goes on, up to [`MAX_CRASH_ROUNDS`], until it has seen that many.
const CRASH_ROUNDS: usize = 10;

/// The most rounds the crash test runs to reach [`CRASH_ROUNDS`] confirmed requests.
const MAX_CRASH_ROUNDS: usize = 30;

/// Names the crash test works on (root-level unikernels `:u0` …).
const CRASH_NAMES: usize = 4;

/// Set to a seed to replay a crash-test run.
const SEED_VAR: &str = "PETREL_E2E_SEED";

/// What the requests of a round said about a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Running,
    Gone,
    /// A request was in flight when the endpoint died (or failed): either is right.
    Either,
}

/// One request of the crash driver: the operation, the name, and its exit code (`None`
/// while it runs).
#[derive(Debug, Clone)]
struct Step {
    op: &'static str,
    name: String,
    code: Option<i32>,
}

/// Runs random creates, force-creates (small images and 16 MiB uploads) and destroys
/// against the endpoint until `stop` is set, recording each step.
fn crash_driver(
    dir: PathBuf,
    remote: Vec<String>,
    mut up: std::collections::BTreeSet<String>,
    seed: u64,
    stop: &std::sync::atomic::AtomicBool,
    steps: &std::sync::Mutex<Vec<Step>>,
) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let label = format!("u{}", rng.gen_range(0..CRASH_NAMES));
        let name = format!(":{label}");
        let image = if rng.gen_bool(0.3) {
            "big.hvt"
        } else {
            "hello.hvt"
        };
        let print = format!("--arg=--print={}", rng.r#gen::<u32>());
        let (op, args): (&'static str, Vec<&str>) = if !up.contains(&name) {
            (
                "create",
                vec!["create", &label, image, &print, "--arg=--wait"],
            )
        } else if rng.gen_bool(0.5) {
            (
                "force-create",
                vec!["force-create", &label, image, &print, "--arg=--wait"],
            )
        } else {
            ("destroy", vec!["destroy", &label])
        };
        let mut all: Vec<&str> = args;
        all.extend(
            ["--compression-level", "0"]
                .iter()
                .filter(|_| op != "destroy"),
        );
        all.extend(remote.iter().map(String::as_str));
        let index = {
            let mut steps = steps.lock().unwrap();
            steps.push(Step {
                op,
                name: name.clone(),
                code: None,
            });
            steps.len() - 1
        };
        let run = petrel(&dir, &all);
        steps.lock().unwrap()[index].code = Some(run.code);
        match (op, run.code) {
            ("destroy", 0) => {
                up.remove(&name);
            }
            (_, 0) => {
                up.insert(name);
            }
            // The endpoint is gone; the round ends.
            _ => return,
        }
    }
}

/// Every regular file below `dir`, relative to it.
fn files_below(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn kill_9_of_the_endpoint_at_random_points_loses_and_duplicates_nothing() {
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    let seed: u64 = std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{SEED_VAR}={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut site = Site::start(&[]);
    let admin = site.admin();
    write_image(&admin.dir.join("hello.hvt"), &[]);
    // An upload that takes a while: a stub followed by 16 MiB.
    let mut big = build_test_image(Target::Hvt, 2, &[]);
    big.resize(big.len() + 16 * 1024 * 1024, 0x5a);
    std::fs::write(admin.dir.join("big.hvt"), &big).unwrap();
    let state = site.state();
    let mut expected: BTreeMap<String, Expect> = BTreeMap::new();
    let mut up: BTreeSet<String> = BTreeSet::new();
    let mut confirmed = 0;

    for round in 0..MAX_CRASH_ROUNDS {
        if round >= CRASH_ROUNDS && confirmed >= CRASH_ROUNDS {
            break;
        }
        let stop = AtomicBool::new(false);
        let steps = Mutex::new(Vec::new());
        let driver_seed = rng.r#gen();
        let delay = Duration::from_millis(rng.gen_range(50..1500));
        let remote = site.remote(&admin, &[]);
        std::thread::scope(|scope| {
            let driver = scope.spawn(|| {
                crash_driver(
                    admin.dir.clone(),
                    remote,
                    up.clone(),
                    driver_seed,
                    &stop,
                    &steps,
                )
            });
            std::thread::sleep(delay);
            site.endpoint.take().unwrap().kill();
            stop.store(true, Ordering::SeqCst);
            driver.join().unwrap();
        });
        let steps = steps.into_inner().unwrap();
        eprintln!(
            "round {round}: killed after {delay:?}, {} requests, last {:?}",
            steps.len(),
            steps.last()
        );
        for step in &steps {
            let expect = match (step.op, step.code) {
                ("destroy", Some(0)) => Expect::Gone,
                (_, Some(0)) => Expect::Running,
                _ => Expect::Either,
            };
            if step.code == Some(0) {
                confirmed += 1;
            }
            expected.insert(step.name.clone(), expect);
        }
        // The kernel kills the tenders of the dead endpoint (PR_SET_PDEATHSIG).
        site.wait_for_tenders(&[]);

        site.restart();
        let running: BTreeSet<String> = names(&site.ok(&admin, &["info"])).into_iter().collect();
        for (name, expect) in &expected {
            match expect {
                Expect::Running => {
                    assert!(
                        running.contains(name),
                        "round {round}: {name} lost ({seed})"
                    );
                }
                Expect::Gone => {
                    assert!(
                        !running.contains(name),
                        "round {round}: {name} back ({seed})"
                    );
                }
                Expect::Either => {}
            }
        }
        // Each exactly once.
        let images: Vec<String> = running.iter().map(|n| format!("{n}.img")).collect();
        let want: Vec<(&str, usize)> = images.iter().map(|i| (i.as_str(), 1)).collect();
        site.wait_for_tenders(&want);
        // No temporary file anywhere, nothing left of what does not run.
        let mut want_files: Vec<String> = running
            .iter()
            .flat_map(|n| [format!("images/{n}.img"), format!("run/{n}.json")])
            .chain(["audit.log", "lock", "records", "state", "state.started"].map(String::from))
            .collect();
        want_files.sort();
        assert_eq!(files_below(&state), want_files, "round {round} ({seed})");
        // The state file parses and names exactly what runs.
        let inspected = ok(
            &admin.dir,
            &["inspect", state.join("state").to_str().unwrap()],
        );
        let json: serde_json::Value = serde_json::from_str(&inspected.stdout).unwrap();
        let in_state: BTreeSet<String> = json["unikernels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(in_state, running, "round {round} ({seed})");
        // Every audit line survived whole.
        let audit = std::fs::read_to_string(state.join(petrel::audit::AUDIT_FILE)).unwrap();
        for line in audit.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("round {round}: audit line {line:?}: {e}"));
        }
        // What runs now is where the next round starts.
        up = running;
        expected = (0..CRASH_NAMES)
            .map(|i| format!(":u{i}"))
            .map(|name| {
                let expect = if up.contains(&name) {
                    Expect::Running
                } else {
                    Expect::Gone
                };
                (name, expect)
            })
            .collect();
    }
    assert!(
        confirmed >= CRASH_ROUNDS,
        "only {confirmed} requests confirmed in {MAX_CRASH_ROUNDS} rounds"
    );
}

// ---------------------------------------------------------------------------------------
// A real bridge (root only, in a private network namespace)

/// Runs the `ip` command; it must succeed.
fn ip(args: &[&str]) {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "ip {args:?}: {output:?}");
}

#[test]
fn a_unikernel_on_a_real_bridge() {
    if let Some(reason) = common::netns::skip_reason() {
        eprintln!("SKIPPED e2e bridge test: {reason}");
        return;
    }
    if std::process::Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIPPED e2e bridge test: the ip command is missing");
        return;
    }
    // Everything (the ip commands, the endpoint, its tenders, the clients) is started
    // from this thread and lives in its namespaces.
    common::netns::in_netns(|| {
        ip(&["link", "set", "lo", "up"]);
        ip(&["link", "add", "br0", "type", "bridge"]);
        ip(&["link", "set", "br0", "up"]);
        let site = Site::start(&[]);
        let alice = site.delegate(
            &site.admin(),
            "alice",
            &["1", "--mem", "64", "--bridge", "br0", "--bridge", "br1"],
        );
        write_image(&alice.dir.join("net.hvt"), &[Device::net("service")]);
        assert_eq!(
            site.ok(
                &alice,
                &[
                    "create",
                    "web",
                    "net.hvt",
                    "--net",
                    "service:br0",
                    "--arg=--print=up",
                    "--arg=--wait"
                ]
            ),
            "created unikernel\n"
        );
        let tender = only_tender(&site, "alice:web.img");
        let tap = tender
            .argv
            .iter()
            .find_map(|a| a.strip_prefix("--net:service="))
            .unwrap()
            .to_owned();
        let master = std::fs::read_link(format!("/sys/class/net/{tap}/master")).unwrap();
        assert_eq!(master.file_name().unwrap(), "br0");
        let mac = tender
            .argv
            .iter()
            .find_map(|a| a.strip_prefix("--net-mac:service="))
            .unwrap();
        let info = table(&site.ok(&alice, &["info"]));
        assert_eq!(info[1][7], format!("service:br0@{mac}"), "{info:?}");
        assert_eq!(
            site.ok(&alice, &["destroy", "web"]),
            "destroyed unikernel\n"
        );
        assert!(!Path::new(&format!("/sys/class/net/{tap}")).exists());
        // A bridge the policies allow but the host does not have.
        site.refused(
            &alice,
            &["create", "web", "net.hvt", "--net", "service:br1"],
            "interface br1 does not exist",
        );
    });
}

// ---------------------------------------------------------------------------------------
// petrel-endpoint --dev, and the commands it prints, pasted as printed

#[test]
fn the_commands_dev_mode_prints_work_as_printed() {
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let args: Vec<String> = ["--dev", "--port", &port.to_string(), "--tender"]
        .iter()
        .map(|s| s.to_string())
        .chain([stand_in_tender().to_owned()])
        .collect();
    let endpoint = Endpoint::spawn(cwd.path(), &args, port);
    endpoint.wait_for_stdout("petrel destroy hello --destination");
    let printed: Vec<Vec<String>> = endpoint
        .stdout()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("petrel "))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    let commands: Vec<&str> = printed.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(commands, ["info", "policy", "create", "console", "destroy"]);
    let run = |command: &[String]| {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        ok(cwd.path(), &args).stdout
    };
    assert_eq!(names(&run(&printed[0])), Vec::<String>::new());
    assert_eq!(table(&run(&printed[1]))[1][0], ":");
    assert_eq!(run(&printed[2]), "created unikernel\n");
    let args: Vec<&str> = printed[3].iter().map(String::as_str).collect();
    let mut console = Running::start(cwd.path(), &args);
    console.wait_for_line_ending(" hello");
    console.stop();
    assert_eq!(names(&run(&printed[0])), [":hello"]);
    assert_eq!(run(&printed[4]), "destroyed unikernel\n");
    assert_eq!(names(&run(&printed[0])), Vec::<String>::new());
}
