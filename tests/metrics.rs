//! The endpoint's metrics: the real binary with `--metrics PORT` (on loopback) and
//! `--influx`, scraped over HTTP and parsed with a strict parser of the Prometheus text
//! exposition format (below), across a scripted sequence of requests and refusals whose
//! every counter increment is asserted exactly; the unikernel series appear and go with
//! the unikernel; the Influx push carries the same series.
//!
//! Timeouts only keep a broken test from hanging; nothing asserts on timing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use petrel::codec::{
    self, Command, Payload, PolicyCmd, StatsCmd, UnikernelCmd, UnikernelConfig, Wire,
};
use petrel::executor::cgroup::TENDER_OVERHEAD_MB;
use petrel::executor::manifest::{Target, build_test_image};
use petrel::pki::Criticality;

use common::pki::{Ca, Opts};
use common::server::{Endpoint, free_port};
use common::tls_client::{Client, request};

/// Guard against a hanging test (not a timing assertion).
const GUARD: Duration = Duration::from_secs(60);

// A strict parser of the Prometheus text exposition format, version 0.0.4.

/// Label names and values, in order.
type Labels = Vec<(String, String)>;

/// A series: metric name (with its histogram suffix) and labels.
type Series = (String, Labels);

/// A parsed exposition.
#[derive(Debug, Default)]
struct Exposition {
    /// Family name → type.
    types: BTreeMap<String, String>,
    /// Family name → help.
    help: BTreeMap<String, String>,
    /// Every sample.
    samples: BTreeMap<Series, f64>,
}

impl Exposition {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// The value, 0 if absent (a counter not yet seen).
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')) =>
        {
            text.parse().map_err(|_| format!("bad value {text:?}"))
        }
        _ => Err(format!("bad value {text:?}")),
    }
}

/// Unescapes `\\`, `\n` and, in label values, `\"`; anything else after `\` is an error.
fn unescape(text: &str, quotes: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            other => return Err(format!("bad escape \\{other:?} in {text:?}")),
        }
    }
    Ok(out)
}

/// Parses `{name="value",...}` at the start of `text`; returns the labels and the rest.
fn parse_labels(text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = text.strip_prefix('{').ok_or("expected {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest
            .split_once("=\"")
            .ok_or(format!("bad label in {text:?}"))?;
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        // The value ends at the first unescaped quote.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                (false, '\n') => return Err("newline in a label value".into()),
                _ => {}
            }
        }
        let end = end.ok_or("unterminated label value")?;
        let value = unescape(&after[..end], true)?;
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("duplicate label {name:?}"));
        }
        labels.push((name.to_owned(), value));
        rest = &after[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("expected , or }} in {text:?}"));
        }
    }
}

/// The family a sample name belongs to, given the family types declared.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
            {
                return Some(base);
            }
        }
    }
    None
}

fn parse_exposition(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("does not end with a newline".into());
    }
    let mut exposition = Exposition::default();
    let mut current: Option<String> = None;
    let mut finished: BTreeSet<String> = BTreeSet::new();
    for line in text.lines() {
        if line.is_empty() {
            return Err("empty line".into());
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.strip_prefix(' ').ok_or("comment without a space")?;
            let (keyword, rest) = comment.split_once(' ').unwrap_or((comment, ""));
            match keyword {
                "HELP" | "TYPE" => {
                    let (name, value) = rest
                        .split_once(' ')
                        .ok_or(format!("bad {keyword}: {line}"))?;
                    if !valid_metric_name(name) {
                        return Err(format!("bad metric name {name:?}"));
                    }
                    if finished.contains(name)
                        || exposition
                            .samples
                            .keys()
                            .any(|(n, _)| family_of(n, &exposition.types) == Some(name))
                    {
                        return Err(format!("{keyword} of {name} after its samples"));
                    }
                    if current.as_deref() != Some(name) {
                        if let Some(previous) = current.take() {
                            finished.insert(previous);
                        }
                        current = Some(name.to_owned());
                    }
                    if keyword == "HELP" {
                        let help = unescape(value, false)?;
                        if exposition.help.insert(name.to_owned(), help).is_some() {
                            return Err(format!("second HELP for {name}"));
                        }
                    } else {
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&value)
                        {
                            return Err(format!("bad type {value:?}"));
                        }
                        if exposition
                            .types
                            .insert(name.to_owned(), value.to_owned())
                            .is_some()
                        {
                            return Err(format!("second TYPE for {name}"));
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or(format!("bad sample {line:?}"))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..])?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or(format!("no value in {line:?}"))?;
        let mut parts = rest.split(' ');
        let value = parse_value(parts.next().unwrap_or_default())?;
        if let Some(timestamp) = parts.next() {
            timestamp
                .parse::<i64>()
                .map_err(|_| format!("bad timestamp in {line:?}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("trailing text in {line:?}"));
        }
        let family = family_of(name, &exposition.types).ok_or(format!("{name} has no TYPE"))?;
        if current.as_deref() != Some(family) {
            return Err(format!("{name} outside its family's group"));
        }
        if exposition.types[family] == "counter" && value < 0.0 {
            return Err(format!("negative counter {line:?}"));
        }
        if exposition.types[family] == "histogram"
            && name.ends_with("_bucket")
            && !labels.iter().any(|(k, _)| k == "le")
        {
            return Err(format!("bucket without le: {line:?}"));
        }
        if exposition
            .samples
            .insert((name.to_owned(), labels), value)
            .is_some()
        {
            return Err(format!("duplicate series {line:?}"));
        }
    }
    check_histograms(&exposition)?;
    Ok(exposition)
}

/// Every histogram series: buckets ascending in `le` and cumulative, a `+Inf` bucket equal
/// to `_count`, and a `_sum`.
fn check_histograms(exposition: &Exposition) -> Result<(), String> {
    for (family, kind) in &exposition.types {
        if kind != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        for ((name, labels), value) in &exposition.samples {
            if name != &bucket {
                continue;
            }
            let le = labels
                .iter()
                .find(|(k, _)| k == "le")
                .map(|(_, v)| v.as_str())
                .unwrap_or_default();
            let rest: Vec<(String, String)> =
                labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            groups
                .entry(rest)
                .or_default()
                .push((parse_value(le)?, *value));
        }
        for (labels, mut buckets) in groups {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
                return Err(format!("{family} {labels:?} has no +Inf bucket"));
            }
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{family} {labels:?} buckets are not cumulative"));
            }
            let count = exposition
                .samples
                .get(&(format!("{family}_count"), labels.clone()))
                .ok_or(format!("{family} {labels:?} has no _count"))?;
            if *count != buckets.last().unwrap().1 {
                return Err(format!("{family} {labels:?}: +Inf bucket is not _count"));
            }
            if !exposition
                .samples
                .contains_key(&(format!("{family}_sum"), labels.clone()))
            {
                return Err(format!("{family} {labels:?} has no _sum"));
            }
        }
    }
    Ok(())
}

#[test]
fn the_parser_is_strict() {
    let good = "# HELP a_total A counter.\n# TYPE a_total counter\na_total{x=\"1\\\"\\n\\\\\"} 2\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
    let parsed = parse_exposition(good).unwrap();
    assert_eq!(parsed.value("a_total", &[("x", "1\"\n\\")]), Some(2.0));
    assert_eq!(parsed.help["a_total"], "A counter.");
    let bad = [
        ("a 1\n", "a has no TYPE"),
        ("# TYPE a counter\na 1", "does not end with a newline"),
        ("# TYPE a counter\na -1\n", "negative counter \"a -1\""),
        ("# TYPE a counter\na 1\na 2\n", "duplicate series \"a 2\""),
        (
            "# TYPE a gauge\n# TYPE b gauge\na 1\n",
            "a outside its family's group",
        ),
        (
            "# TYPE a gauge\na{x=\"\\t\"} 1\n",
            "bad escape \\Some('t') in \"\\\\t\"",
        ),
        ("# TYPE a gauge\na{__x=\"1\"} 1\n", "bad label name \"__x\""),
        (
            "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",
            "duplicate label \"x\"",
        ),
        ("# TYPE a gauge\na one\n", "bad value \"one\""),
        ("# TYPE a gauge\na 1 2 3\n", "trailing text in \"a 1 2 3\""),
        ("# TYPE a wat\n", "bad type \"wat\""),
        ("# TYPE a gauge\n\na 1\n", "empty line"),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "h [] buckets are not cumulative",
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
            "h []: +Inf bucket is not _count",
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1\nh_count 2\n",
            "h [] has no +Inf bucket",
        ),
    ];
    for (text, error) in bad {
        assert_eq!(parse_exposition(text).unwrap_err(), error, "{text:?}");
    }
}

// The endpoint.

/// One HTTP request: the status line, the headers (lower-case names) and the body.
fn http(port: u16, request: &str) -> (String, BTreeMap<String, String>, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(GUARD)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_lowercase(), v.to_owned())
        })
        .collect();
    (status, headers, body.to_owned())
}

fn scrape(port: u16) -> Exposition {
    let (status, headers, body) = http(port, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(headers["content-length"], body.len().to_string());
    parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// Scrapes until `check` holds (bounded by [`GUARD`]).
fn scrape_until(port: u16, what: &str, check: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + GUARD;
    loop {
        let exposition = scrape(port);
        if check(&exposition) {
            return exposition;
        }
        assert!(Instant::now() < deadline, "never: {what}\n{exposition:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Octets of `frames` on the wire (framed), as the server wrote them.
fn framed_len(frames: &[Wire]) -> u64 {
    frames
        .iter()
        .map(|w| u64::try_from(codec::frame(&codec::encode_wire(w)).unwrap().len()).unwrap())
        .sum()
}

fn policy_info() -> Command {
    Command::Policy(PolicyCmd::Info)
}

#[test]
fn metrics_count_a_scripted_sequence_of_requests_and_refusals_exactly() {
    let ca = Ca::root_now("test-ca");
    let influx = TcpListener::bind("127.0.0.1:0").unwrap();
    let influx_addr: SocketAddr = influx.local_addr().unwrap();
    let port = free_port();
    let endpoint = Endpoint::start(
        &ca,
        &[
            "--metrics",
            &port.to_string(),
            "--stats-interval",
            "1",
            "--influx",
            &influx_addr.to_string(),
        ],
    );
    endpoint.wait_for_log(&format!("metrics listening address=127.0.0.1:{port}"));
    let cgroups = endpoint
        .wait_for_log("tenders run")
        .contains("tenders run in cgroups of their own");

    // Not metrics: other paths and methods.
    let (status, _, body) = http(port, "GET / HTTP/1.1\r\n\r\n");
    assert_eq!(
        (status.as_str(), body.as_str()),
        (
            "HTTP/1.1 404 Not Found",
            "not found: the metrics are at /metrics\n"
        )
    );
    let (status, headers, _) = http(port, "POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(headers["allow"], "GET, HEAD");

    let before = scrape(port);
    assert_eq!(before.value("petrel_connections_open", &[]), Some(0.0));
    assert_eq!(before.value("petrel_unikernels_running", &[]), Some(0.0));
    assert_eq!(before.value("petrel_crls_stored", &[]), Some(0.0));
    assert_eq!(
        before.value("petrel_revocations_applied_total", &[]),
        Some(0.0)
    );
    assert_eq!(before.types["petrel_command_duration_seconds"], "histogram");

    // The script.
    let mut bytes_out = 0;
    let mut bytes_in = 0;
    let leaf = ca.leaf(Some("."), &policy_info());
    let frames = request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    assert!(matches!(frames[0].payload, Payload::Success(_)));
    bytes_out += framed_len(&frames);

    let leaf = ca.leaf(Some("nothing"), &Command::Unikernel(UnikernelCmd::Destroy));
    let frames = request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    assert_eq!(frames[0].payload, Payload::failure("destroy: not found"));
    bytes_out += framed_len(&frames);

    let stranger = Ca::root_now("stranger");
    let ext = Some(codec::encode_extension(&policy_info()));
    for leaf in [
        stranger.leaf(Some("x"), &policy_info()),
        ca.leaf_with(
            Some("x"),
            ext.clone(),
            Opts {
                start_offset: -7200,
                ..Opts::default()
            },
        ),
        ca.leaf_with(
            Some("x"),
            ext.clone(),
            Opts {
                criticality: Criticality::Critical,
                ..Opts::default()
            },
        ),
    ] {
        assert!(request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).is_err());
    }

    let leaf = ca.leaf_with(Some("x"), None, Opts::default());
    let frames = request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    assert_eq!(
        frames[0].payload,
        Payload::failure("leaf certificate does not contain an albatross extension")
    );
    bytes_out += framed_len(&frames);

    // A create whose image is streamed after the handshake, in chunks.
    let create = Command::Unikernel(UnikernelCmd::Create(UnikernelConfig {
        arguments: Some(vec!["--wait".into()]),
        ..UnikernelConfig::default()
    }));
    let leaf = ca.leaf(Some("web"), &create);
    let image = build_test_image(Target::Hvt, 2, &[]);
    let mut client = Client::connect(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    for chunk in image.chunks(1000) {
        client.send_chunk(chunk).unwrap();
        bytes_in += u64::try_from(chunk.len()).unwrap() + 4;
    }
    client.send_end().unwrap();
    bytes_in += 4;
    let frames = client.read_all().unwrap();
    assert_eq!(
        frames.last().unwrap().payload,
        Payload::success_string("created unikernel")
    );
    bytes_out += framed_len(&frames);

    // Every request is done (audited) and every connection closed.
    endpoint.audit(7);
    let after = scrape_until(port, "no connection open", |e| {
        e.value("petrel_connections_open", &[]) == Some(0.0)
    });

    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.count(name, labels) - before.count(name, labels)
    };
    type Expected<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);
    let expected: Vec<Expected> = vec![
        ("petrel_handshakes_total", vec![("result", "ok")], 4.0),
        (
            "petrel_handshakes_total",
            vec![("result", "unknown_ca")],
            1.0,
        ),
        ("petrel_handshakes_total", vec![("result", "expired")], 1.0),
        (
            "petrel_handshakes_total",
            vec![("result", "critical_extension")],
            1.0,
        ),
        (
            "petrel_commands_total",
            vec![("command", "policy info"), ("outcome", "ok")],
            1.0,
        ),
        (
            "petrel_commands_total",
            vec![("command", "unikernel destroy"), ("outcome", "failure")],
            1.0,
        ),
        (
            "petrel_commands_total",
            vec![("command", "-"), ("outcome", "refused")],
            1.0,
        ),
        (
            "petrel_commands_total",
            vec![("command", "unikernel create"), ("outcome", "ok")],
            1.0,
        ),
        (
            "petrel_command_duration_seconds_count",
            vec![("command", "policy info")],
            1.0,
        ),
        (
            "petrel_command_duration_seconds_count",
            vec![("command", "unikernel destroy")],
            1.0,
        ),
        (
            "petrel_command_duration_seconds_count",
            vec![("command", "unikernel create")],
            1.0,
        ),
        (
            "petrel_stream_bytes_total",
            vec![("direction", "in")],
            bytes_in as f64,
        ),
        (
            "petrel_stream_bytes_total",
            vec![("direction", "out")],
            bytes_out as f64,
        ),
        ("petrel_unikernels_running", vec![], 1.0),
    ];
    let mut changed = BTreeSet::new();
    for (name, labels, value) in &expected {
        assert_eq!(delta(name, labels), *value, "{name} {labels:?}");
        changed.insert((
            (*name).to_owned(),
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>(),
        ));
    }
    // Nothing else moved (histogram buckets and sums, and the unikernel's own series, aside).
    for (series, value) in &after.samples {
        let (name, labels) = series;
        let skipped = name.starts_with("petrel_unikernel_")
            || name == "petrel_stats_sample_seconds"
            || name.starts_with("petrel_command_duration_seconds_");
        if skipped || changed.contains(series) {
            continue;
        }
        assert_eq!(
            before.samples.get(series).copied().unwrap_or(0.0),
            *value,
            "{name} {labels:?} moved"
        );
    }
    // The refused request has no latency; the ones that ran do, in some bucket.
    assert_eq!(
        after.value("petrel_command_duration_seconds_count", &[("command", "-")]),
        None
    );

    // The unikernel's series, from the next sampling round.
    let sampled = scrape_until(port, "statistics of :web", |e| {
        e.value("petrel_unikernel_memory_bytes", &[("name", ":web")])
            .is_some()
    });
    assert!(
        sampled
            .value("petrel_unikernel_memory_bytes", &[("name", ":web")])
            .unwrap()
            > 0.0
    );
    assert!(
        sampled
            .value("petrel_unikernel_cpu_seconds_total", &[("name", ":web")])
            .is_some()
    );
    assert_eq!(
        sampled.value("petrel_unikernel_memory_limit_bytes", &[("name", ":web")]),
        cgroups.then_some(((32 + TENDER_OVERHEAD_MB) * 1024 * 1024) as f64)
    );

    // A statistics subscription the client ends: outcome "ended", no latency observed.
    let leaf = ca.leaf(Some("."), &Command::Statistics(StatsCmd::Subscribe));
    let mut client = Client::connect(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    assert_eq!(
        client.read_frame().unwrap().unwrap().payload,
        Payload::success_string("subscribed")
    );
    client.close();
    endpoint.audit(8);
    let ended = scrape_until(port, "the subscription ended", |e| {
        e.value("petrel_connections_open", &[]) == Some(0.0)
    });
    assert_eq!(
        ended.count(
            "petrel_commands_total",
            &[("command", "stat subscribe"), ("outcome", "ended")]
        ),
        1.0
    );
    assert_eq!(
        ended.value(
            "petrel_command_duration_seconds_count",
            &[("command", "stat subscribe")]
        ),
        None
    );

    // Destroyed: running 0, its series gone from the next round on.
    let leaf = ca.leaf(Some("web"), &Command::Unikernel(UnikernelCmd::Destroy));
    let frames = request(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    assert_eq!(
        frames[0].payload,
        Payload::success_string("destroyed unikernel")
    );
    let gone = scrape_until(port, ":web's series gone", |e| {
        e.value("petrel_unikernel_memory_bytes", &[("name", ":web")])
            .is_none()
    });
    assert_eq!(gone.value("petrel_unikernels_running", &[]), Some(0.0));

    // The same series, as Influx line protocol.
    let (stream, _) = influx.accept().unwrap();
    stream.set_read_timeout(Some(GUARD)).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut seen = BTreeSet::new();
    for line in BufReader::new(stream).lines() {
        let line = line.unwrap();
        let (series, rest) = line.split_once(" value=").unwrap();
        let (value, timestamp) = rest.split_once(' ').unwrap();
        value.parse::<f64>().unwrap();
        let timestamp: u128 = timestamp.parse().unwrap();
        assert!(timestamp.abs_diff(now) < 3_600_000_000_000, "{line}");
        let measurement = series.split(',').next().unwrap().to_owned();
        assert!(
            before.types.contains_key(&measurement)
                || measurement.starts_with("petrel_command_duration_seconds_"),
            "{line}"
        );
        seen.insert(measurement);
        if seen.contains("petrel_stream_bytes_total") && seen.contains("petrel_unikernels_running")
        {
            break;
        }
    }
    assert!(seen.contains("petrel_handshakes_total"), "{seen:?}");
    assert!(endpoint.stop().success());
}

/// `petrel_crls_stored` and `petrel_revocations_applied_total` follow a CRL upload.
#[test]
fn metrics_count_stored_crls_and_applied_revocations() {
    use petrel::pki::crl::{CrlTemplate, RevokedEntry, create_crl};
    use petrel::pki::{CrlNumber, Serial};

    let ca = Ca::root_now("test-ca");
    let port = free_port();
    let endpoint = Endpoint::start(&ca, &["--metrics", &port.to_string()]);
    endpoint.wait_for_log(&format!("metrics listening address=127.0.0.1:{port}"));
    let before = scrape(port);
    assert_eq!(before.value("petrel_crls_stored", &[]), Some(0.0));

    // The CA revokes two serials of certificates it never issued, and uploads the CRL.
    let now = time::OffsetDateTime::now_utc();
    let revoked = |n: u8| RevokedEntry {
        serial: Serial::from_der_content(&[0x01, n]),
        revoked_at: now.unix_timestamp(),
        reason: None,
        invalidity_date: None,
    };
    let crl = create_crl(
        &CrlTemplate {
            this_update: now,
            next_update: Some(now + time::Duration::days(1)),
            number: CrlNumber::from_u64(1),
            revoked: vec![revoked(1), revoked(2)],
        },
        &ca.issuer,
    )
    .unwrap();
    let leaf = ca.leaf(
        Some("."),
        &Command::Revocation(codec::RevocationCmd::Upload),
    );
    let mut client = Client::connect(endpoint.addr, &leaf.chain, &leaf.key, ca.cert()).unwrap();
    client.send_chunk(crl.der()).unwrap();
    client.send_end().unwrap();
    let frames = client.read_all().unwrap();
    assert!(
        matches!(frames.last().unwrap().payload, Payload::Success(_)),
        "{frames:?}"
    );

    let after = scrape(port);
    assert_eq!(after.value("petrel_crls_stored", &[]), Some(1.0));
    assert_eq!(
        after.value("petrel_revocations_applied_total", &[]),
        Some(2.0)
    );
}
