//! Other clients than rdkafka-in-Rust: the `kcat` command-line tool (librdkafka as packaged
//! by Debian, an older release than the one bundled with rdkafka), the pure-Python
//! `kafka-python` client, the pure-JavaScript `kafkajs` client and the Go client Sarama (each
//! with its own protocol implementation), and Confluent's Python client `confluent-kafka` (the
//! librdkafka in its wheel).
//!
//! What users rely on that this proves: the everyday tools people point at a Kafka broker
//! work unchanged: `kcat -L` lists metadata, `kcat -P`/`kcat -C` round-trip keyed messages,
//! and kafka-python negotiates versions via ApiVersions, produces with acks='all' and reads
//! everything back at the offsets it was told. kafkajs (`tests/node/roundtrip.js`) creates a
//! topic, describes its configs and produces keyed messages idempotently with acks -1, then
//! reads them back through its own lower-level Fetch client at the exact offsets it was told,
//! and rdkafka reads the same messages here too; its consumer-group client
//! (`tests/node/group.js`) splits partitions between members, resumes from commits after a
//! member leaves, and its admin client describes, lists and deletes groups.
//! confluent-kafka (`tests/python/confluent_roundtrip.py`) drives the AdminClient
//! (create_topics with configs, describe_configs, incremental_alter_configs, describe_cluster
//! and their error codes, ACL calls refused with SECURITY_DISABLED), an idempotent acks=all
//! producer and an assign-only consumer.
//! Consumer groups: kcat's balanced consumer (`kcat -G`) reads every record once and commits
//! on exit, so a second one in the group continues after them; kafka-python's KafkaConsumer
//! with a group_id (`tests/python/group_consumer.py`) consumes, commits, finds nothing new
//! in a second consumer of the group and everything in another group.
//!
//! A missing tool fails the test when `REQUIRE_EXTERNAL_CLIENTS=1` (as `tests/run-all.sh`
//! sets it), otherwise the test prints "skipped: ..." and passes.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn kcat_produce_and_consume() {
    if !have("kcat", Command::new("kcat").arg("-V")) {
        return;
    }
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = unique_name("kcat");
    create_topic(&bs, &topic, 1, &[]);

    // Metadata listing.
    let out = run(
        Command::new("kcat").args(["-b", &bs, "-L", "-t", &topic, "-m", "10"]),
        None,
        Duration::from_secs(30),
    );
    assert_success("kcat -L", &out);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(&topic),
        "kcat -L does not show topic {topic}:\n{listing}"
    );

    // Produce keyed lines (key:value), acks=all.
    let n = 1000;
    let lines: Vec<String> = (0..n)
        .map(|i| format!("key{i}:value-{i}-{}", "x".repeat(i % 50)))
        .collect();
    let mut input = lines.join("\n");
    input.push('\n');
    let out = run(
        Command::new("kcat").args([
            "-b",
            &bs,
            "-P",
            "-t",
            &topic,
            "-p",
            "0",
            "-K",
            ":",
            "-X",
            "acks=all",
            "-X",
            "enable.idempotence=false",
            "-m",
            "30",
        ]),
        Some(input.into_bytes()),
        Duration::from_secs(60),
    );
    assert_success("kcat -P", &out);
    assert_eq!(
        watermarks(&bs, &topic, 0),
        (0, n as i64),
        "watermarks after kcat -P"
    );

    // Consume from the beginning to the end (legacy consumer, no group).
    let out = run(
        Command::new("kcat").args([
            "-b",
            &bs,
            "-C",
            "-t",
            &topic,
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%o %k:%s\n",
            "-m",
            "30",
        ]),
        None,
        Duration::from_secs(60),
    );
    assert_success("kcat -C", &out);
    let text = String::from_utf8(out.stdout).expect("utf8");
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(
        got.len(),
        n,
        "kcat -C line count; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, line) in got.iter().enumerate() {
        assert_eq!(*line, format!("{i} {}", lines[i]), "kcat -C line {i}");
    }

    // And what kcat wrote reads back through rdkafka too.
    let msgs = consume_all(&bs, &topic, &[0], Duration::from_secs(30));
    assert_eq!(msgs.len(), n);
    assert_eq!(msgs[7].key.as_deref(), Some(&b"key7"[..]));
    assert_eq!(
        msgs[7].value.as_deref(),
        Some(lines[7].split_once(':').unwrap().1.as_bytes())
    );
}

#[test]
fn kafka_python_roundtrip() {
    let Some(python) = python_with("kafka") else {
        return;
    };
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = unique_name("py");
    create_topic(&bs, &topic, 1, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/roundtrip.py");
    let out = run(
        Command::new(&python)
            .arg(&script)
            .args([&bs, &topic, "500"]),
        None,
        Duration::from_secs(180),
    );
    assert_success("tests/python/roundtrip.py", &out);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(watermarks(&bs, &topic, 0), (0, 500));
}

/// kafkajs's producer, admin and lower-level fetch (`tests/node/roundtrip.js`).
#[test]
fn kafkajs_roundtrip() {
    let Some(dir) = kafkajs_dir() else {
        return;
    };
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = unique_name("js");
    let n = 1000;
    let out = run(
        Command::new("node")
            .arg(dir.join("roundtrip.js"))
            .args([&bs, &topic, &n.to_string()])
            .current_dir(&dir),
        None,
        Duration::from_secs(120),
    );
    assert_success("tests/node/roundtrip.js", &out);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));

    // What kafkajs wrote reads back through rdkafka too: every key once, values as sent.
    let msgs = consume_all(&bs, &topic, &[0, 1, 2], Duration::from_secs(30));
    assert_eq!(msgs.len(), n, "rdkafka read of the kafkajs topic");
    let mut keys: Vec<String> = msgs
        .iter()
        .map(|m| String::from_utf8(m.key.clone().expect("key")).expect("utf8 key"))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "distinct keys");
    assert!(msgs
        .iter()
        .all(|m| m.value.as_ref().map(|v| v.len()) == Some(300)));
}

/// Where Debian's golang-github-shopify-sarama-dev puts Sarama, for a GOPATH-mode build.
const GOPATH_DEBIAN: &str = "/usr/share/gocode";

/// Sarama (`tests/go/sarama_roundtrip.go`), the Go client with its own protocol code, as
/// Debian packages it: admin, an idempotent acks=all producer, and two consumer groups reading
/// at the offsets the producer was told, one committing (OffsetCommit v1, which Sarama sends
/// and Kafka 4 no longer answers).
#[test]
fn sarama_roundtrip() {
    let sarama = Path::new(GOPATH_DEBIAN).join("src/github.com/Shopify/sarama");
    if !have(
        "go with Sarama (apt: golang-go golang-github-shopify-sarama-dev)",
        Command::new("test").arg("-d").arg(&sarama),
    ) || !have("go", Command::new("go").arg("version"))
    {
        return;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/sarama_roundtrip.go");
    let out_dir = tempfile::tempdir().expect("temp dir");
    let bin = out_dir.path().join("sarama_roundtrip");
    let built = run(
        Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .env("GO111MODULE", "off")
            .env("GOPATH", GOPATH_DEBIAN)
            .env("GOFLAGS", "")
            .env("GOCACHE", std::env::temp_dir().join("broker-tests-gocache")),
        None,
        Duration::from_secs(300),
    );
    assert_success("go build tests/go/sarama_roundtrip.go", &built);
    let broker = Broker::start();
    let out = run(
        Command::new(&bin).args([&broker.bootstrap(), &unique_name("sarama"), "500"]),
        None,
        Duration::from_secs(180),
    );
    assert_success("tests/go/sarama_roundtrip.go", &out);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}

/// kafkajs's own consumer-group client (`tests/node/group.js`): two members split a topic's
/// partitions and read each message once, one leaves and the other takes over from its
/// commits, another group reads everything, and the admin client describes and deletes a group.
#[test]
fn kafkajs_consumer_group() {
    let Some(dir) = kafkajs_dir() else {
        return;
    };
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = unique_name("jsgroup");
    let out = run(
        Command::new("node")
            .arg(dir.join("group.js"))
            .args([&bs, &topic, "1000"])
            .current_dir(&dir),
        None,
        Duration::from_secs(180),
    );
    assert_success("tests/node/group.js", &out);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn confluent_kafka_python_roundtrip() {
    let Some(python) = python_with("confluent_kafka") else {
        return;
    };
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = unique_name("ck");
    let n = 1000;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/confluent_roundtrip.py");
    let out = run(
        Command::new(&python)
            .arg(&script)
            .args([&bs, &topic, &n.to_string()]),
        None,
        Duration::from_secs(120),
    );
    assert_success("tests/python/confluent_roundtrip.py", &out);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    let total: i64 = (0..3).map(|p| watermarks(&bs, &topic, p).1).sum();
    assert_eq!(
        total, n as i64,
        "messages on the broker after confluent-kafka"
    );
}

/// A broker for the group tests: the first join of a group does not wait 3 s for others.
fn group_broker() -> Broker {
    Broker::builder()
        .arg("group-initial-rebalance-delay-ms", 0)
        .start()
}

/// (partition, offset) → value of `n` messages `{tag}-{i}`, round-robin over `partitions`.
fn produce_values(
    bs: &str,
    topic: &str,
    partitions: i32,
    tag: &str,
    n: usize,
) -> std::collections::BTreeMap<(i32, i64), String> {
    let values: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let reports = produce(bs, topic, "all", &[], n, |i| Outgoing {
        key: values[i].clone().into_bytes(),
        value: values[i].clone().into_bytes(),
        partition: Some(i as i32 % partitions),
    });
    all_ok(&reports).into_iter().zip(values).collect()
}

/// kcat's balanced consumer (`-G group`) reads a topic's records once each and commits
/// when it stops; a second one in the same group continues after the committed offsets.
#[test]
fn kcat_balanced_consumer_group() {
    if !have("kcat", Command::new("kcat").arg("-V")) {
        return;
    }
    let broker = group_broker();
    let bs = broker.bootstrap();
    let topic = unique_name("kcat-group");
    let group = unique_name("kcat-g");
    create_topic(&bs, &topic, 2, &[]);

    let kcat_group = |n: usize| {
        let out = run(
            Command::new("kcat").args([
                "-b",
                &bs,
                "-G",
                &group,
                &topic,
                "-c",
                &n.to_string(),
                "-q",
                "-f",
                "%p %o %s\n",
                "-X",
                "auto.offset.reset=earliest",
            ]),
            None,
            Duration::from_secs(60),
        );
        assert_success("kcat -G", &out);
        let text = String::from_utf8(out.stdout).expect("utf8");
        let got: std::collections::BTreeMap<(i32, i64), String> = text
            .lines()
            .map(|l| {
                let mut w = l.splitn(3, ' ');
                let p = w.next().unwrap().parse().expect("partition");
                let o = w.next().unwrap().parse().expect("offset");
                ((p, o), w.next().unwrap_or("").to_string())
            })
            .collect();
        assert_eq!(
            got.len(),
            text.lines().count(),
            "kcat -G printed a record twice:\n{text}"
        );
        got
    };

    let first = produce_values(&bs, &topic, 2, "one", 100);
    let got = kcat_group(100);
    assert_eq!(got, first, "kcat -G: the 100 records, once each");

    // kcat committed on close (auto commit of the offsets it consumed).
    let reader = assign_consumer(&bs, &[("group.id", &group)]);
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    tpl.add_partition(&topic, 1);
    let committed: Vec<(i32, rdkafka::Offset)> =
        rdkafka::consumer::Consumer::committed_offsets(&reader, tpl, Duration::from_secs(15))
            .expect("OffsetFetch")
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
    assert_eq!(
        committed,
        vec![
            (0, rdkafka::Offset::Offset(50)),
            (1, rdkafka::Offset::Offset(50))
        ],
        "offsets kcat -G committed"
    );

    let second = produce_values(&bs, &topic, 2, "two", 10);
    let got = kcat_group(10);
    assert_eq!(
        got, second,
        "a second kcat -G in the group reads only the new records"
    );
}

/// kafka-python's KafkaConsumer with a group_id: consume, commit, resume; another group
/// reads everything (`tests/python/group_consumer.py`).
#[test]
fn kafka_python_group_consumer() {
    let Some(python) = python_with("kafka") else {
        return;
    };
    let broker = group_broker();
    let bs = broker.bootstrap();
    let topic = unique_name("py-group");
    create_topic(&bs, &topic, 3, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/group_consumer.py");
    let out = run(
        Command::new(&python)
            .arg(&script)
            .args([&bs, &topic, "300"]),
        None,
        Duration::from_secs(180),
    );
    assert_success("tests/python/group_consumer.py", &out);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}
