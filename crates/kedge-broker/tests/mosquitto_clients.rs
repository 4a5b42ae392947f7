//! The embedded broker against the real mosquitto_pub and mosquitto_sub (MQTT 3.1.1).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use kedge_broker::{Broker, BrokerConfig};

async fn broker() -> Broker {
    let cfg = BrokerConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        ..BrokerConfig::default()
    };
    Broker::start(cfg).await.expect("broker")
}

/// A running mosquitto_sub whose output lines arrive on a channel.
struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Sub {
    /// Subscribes and waits for the SUBACK, so nothing published afterwards is missed.
    fn start(b: &Broker, args: &[&str]) -> Sub {
        // Line-buffered: mosquitto_sub block-buffers a pipe, and the test reads line by line.
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                &b.addr.port().to_string(),
                "-d",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub runs");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut s = Sub { child, lines };
        s.expect_line(|l| l.contains("received SUBACK"));
        s
    }

    fn expect_line(&mut self, want: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if want(&l) => return l,
                Ok(_) => {}
                Err(e) => panic!("mosquitto_sub: no expected line ({e})"),
            }
        }
    }

    /// The next payload line (mosquitto_sub -d prints debug lines around it).
    fn payload(&mut self) -> String {
        self.expect_line(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed"))
    }

    /// No payload line within `d` (debug lines such as PINGs are ignored).
    fn silent_for(&mut self, d: Duration) -> bool {
        let deadline = std::time::Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with("Client ") || l.starts_with("Subscribed") => {}
                Ok(_) => return false,
                Err(_) => return true,
            }
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn publish(b: &Broker, args: &[&str]) -> std::process::Output {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &b.addr.port().to_string()])
        .args(args)
        .output()
        .expect("mosquitto_pub runs")
}

fn pub_ok(b: &Broker, args: &[&str]) {
    let out = publish(b, args);
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_matching_subscribers_at_qos_0_and_1() {
    let b = broker().await;
    let mut plus = Sub::start(&b, &["-t", "default/+", "-q", "1"]);
    let mut exact = Sub::start(&b, &["-t", "default/test"]);
    pub_ok(
        &b,
        &[
            "-t",
            "default/test",
            "-q",
            "1",
            "-m",
            r#"{"edgemsg":"msgtocloud"}"#,
        ],
    );
    assert_eq!(plus.payload(), r#"{"edgemsg":"msgtocloud"}"#);
    assert_eq!(exact.payload(), r#"{"edgemsg":"msgtocloud"}"#);
    pub_ok(&b, &["-t", "default/other", "-m", "a value with spaces"]);
    assert_eq!(plus.payload(), "a value with spaces");
    assert!(
        exact.silent_for(Duration::from_millis(300)),
        "exact filter only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_topics_starting_with_dollar_work_and_hash_does_not_see_them() {
    let b = broker().await;
    let mut twin = Sub::start(&b, &["-t", "$hw/events/device/+/+/twin/+"]);
    let mut all = Sub::start(&b, &["-t", "#"]);
    let topic = "$hw/events/device/default/counter/twin/update";
    pub_ok(&b, &["-t", topic, "-m", r#"{"twin":{}}"#]);
    assert_eq!(twin.payload(), r#"{"twin":{}}"#);
    assert!(
        all.silent_for(Duration::from_millis(300)),
        "# must not receive $ topics"
    );
    pub_ok(&b, &["-t", "plain", "-m", "x"]);
    assert_eq!(all.payload(), "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_reach_later_subscribers_until_cleared() {
    let b = broker().await;
    let delta = "$hw/events/device/default/counter/twin/update/delta";
    pub_ok(&b, &["-t", delta, "-r", "-q", "1", "-m", "ON"]);
    let mut late = Sub::start(&b, &["-t", delta, "-C", "1"]);
    assert_eq!(late.payload(), "ON");
    pub_ok(&b, &["-t", delta, "-r", "-n"]);
    let mut later = Sub::start(&b, &["-t", delta]);
    assert!(later.silent_for(Duration::from_millis(300)), "cleared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v5_client_is_refused_clearly_and_qos_2_is_accepted() {
    let b = broker().await;
    let out = publish(&b, &["-V", "5", "-t", "a", "-m", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("protocol"), "{err}");
    let mut sub = Sub::start(&b, &["-t", "a", "-q", "2"]);
    pub_ok(
        &b,
        &[
            "-t",
            "a",
            "-q",
            "2",
            "-m",
            "exactly once, delivered at most at QoS 1",
        ],
    );
    assert_eq!(sub.payload(), "exactly once, delivered at most at QoS 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_is_published_when_a_client_dies() {
    let b = broker().await;
    let mut sub = Sub::start(&b, &["-t", "devices/+/status"]);
    // mosquitto_sub with a will, killed (no DISCONNECT): its will goes out.
    let mut dying = Sub::start(
        &b,
        &[
            "-t",
            "ignored",
            "--will-topic",
            "devices/d1/status",
            "--will-payload",
            "offline",
        ],
    );
    let _ = dying.child.kill();
    assert_eq!(sub.payload(), "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_silence_close_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = broker().await;
    let mut sub = Sub::start(&b, &["-t", "t"]);
    // Not MQTT: the broker closes the connection.
    let mut junk = tokio::net::TcpStream::connect(b.addr)
        .await
        .expect("connect");
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), junk.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(n.is_ok());
    // A client with a 1 s keepalive that then says nothing is dropped after 1.5 s.
    let mut quiet = tokio::net::TcpStream::connect(b.addr)
        .await
        .expect("connect");
    let connect = [
        0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x01, 0x00, 0x02, b'q',
        b'1',
    ];
    quiet.write_all(&connect).await.expect("connect packet");
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), quiet.read_to_end(&mut got))
        .await
        .expect("closed in time");
    assert_eq!(&got[..2], &[0x20, 0x02], "a CONNACK first");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    // Everyone else is unaffected.
    pub_ok(&b, &["-t", "t", "-m", "still here"]);
    assert_eq!(sub.payload(), "still here");
}

/// A raw MQTT 3.1.1 CONNECT for client id `id` with a 60 s keepalive.
fn connect_packet(id: &str) -> Vec<u8> {
    let mut p = vec![
        0x10,
        (12 + id.len()) as u8,
        0x00,
        0x04,
        b'M',
        b'Q',
        b'T',
        b'T',
        0x04,
        0x02,
        0x00,
        60,
    ];
    p.extend([0x00, id.len() as u8]);
    p.extend(id.as_bytes());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = broker().await;
    let mut first = tokio::net::TcpStream::connect(b.addr)
        .await
        .expect("connect");
    first
        .write_all(&connect_packet("mapper"))
        .await
        .expect("connect");
    let mut ack = [0u8; 4];
    first.read_exact(&mut ack).await.expect("connack");
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00]);
    let mut second = tokio::net::TcpStream::connect(b.addr)
        .await
        .expect("connect");
    second
        .write_all(&connect_packet("mapper"))
        .await
        .expect("connect");
    second.read_exact(&mut ack).await.expect("connack");
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00]);
    // The first session is closed by the broker.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), first.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    assert_eq!(b.stats().connected.load(Ordering::Relaxed), 1);
}

/// Reads one small packet (remaining length < 128) from a raw connection.
async fn read_small_packet(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.expect("packet header");
    assert!(head[1] < 0x80, "small packets only");
    let mut body = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut body).await.expect("packet body");
    [head.to_vec(), body].concat()
}

/// A QoS 1 publisher's PUBACK waits for its QoS 1 subscribers' PUBACK: the edge acknowledges a
/// device's message once stored, so the device's PUBACK means "stored", not "seen by a broker".
/// A subscriber that never acknowledges holds a publisher up for `ack_wait`, then the publisher
/// is disconnected (not confirmed); one that leaves settles what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publishers_puback_waits_for_the_subscribers() {
    use tokio::io::AsyncWriteExt;
    let cfg = BrokerConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        ack_wait: Duration::from_secs(2),
        ..BrokerConfig::default()
    };
    let b = Broker::start(cfg).await.expect("broker");
    let mut holder = tokio::net::TcpStream::connect(b.addr)
        .await
        .expect("connect");
    holder
        .write_all(&connect_packet("holder"))
        .await
        .expect("connect");
    assert_eq!(
        read_small_packet(&mut holder).await,
        [0x20, 0x02, 0x00, 0x00]
    );
    // SUBSCRIBE pkid 1 to "t" at QoS 1.
    let subscribe = [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x01];
    holder.write_all(&subscribe).await.expect("subscribe");
    assert_eq!(
        read_small_packet(&mut holder).await,
        [0x90, 0x03, 0x00, 0x01, 0x01]
    );
    let port = b.addr.port().to_string();
    let spawn_pub = |m: &str| {
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-q",
                "1",
                "-t",
                "t",
                "-m",
                m,
            ])
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub runs")
    };
    let waits_for_puback = |p: &mut Child| {
        let until = std::time::Instant::now() + Duration::from_millis(700);
        while std::time::Instant::now() < until {
            assert!(
                matches!(p.try_wait(), Ok(None)),
                "mosquitto_pub finished before the subscriber acknowledged"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let exits_ok = |p: Child| {
        let out = p.wait_with_output().expect("mosquitto_pub ends");
        assert!(out.status.success(), "{out:?}");
    };

    let mut first = spawn_pub("one");
    let publish = read_small_packet(&mut holder).await;
    assert_eq!(publish[0], 0x32, "a QoS 1 PUBLISH: {publish:?}");
    assert!(publish.ends_with(b"one"));
    waits_for_puback(&mut first);
    let pkid = &publish[5..7];
    holder
        .write_all(&[0x40, 0x02, pkid[0], pkid[1]])
        .await
        .expect("puback");
    exits_ok(first);
    assert_eq!(b.stats().unconfirmed.load(Ordering::Relaxed), 0);

    // Never acknowledged: after ack_wait the publisher is disconnected without a PUBACK (its
    // message not confirmed), and it is counted.
    let started = std::time::Instant::now();
    let mut second = spawn_pub("two");
    assert!(read_small_packet(&mut holder).await.ends_with(b"two"));
    waits_for_puback(&mut second);
    let out = second.wait_with_output().expect("mosquitto_pub ends");
    assert!(!out.status.success(), "{out:?}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(b.stats().unconfirmed.load(Ordering::Relaxed), 1);

    // A subscriber that goes away settles what it held.
    let third = spawn_pub("three");
    assert!(read_small_packet(&mut holder).await.ends_with(b"three"));
    let dropped = std::time::Instant::now();
    drop(holder);
    exits_ok(third);
    assert!(dropped.elapsed() < Duration::from_millis(1500));
    assert_eq!(b.stats().unconfirmed.load(Ordering::Relaxed), 1);
}

/// With an admission gate, the first client (the edge's EventBus) is admitted at once and the
/// others only once it opens: a device connecting before the bus is subscribed waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_wait_until_the_first_client_opens_the_gate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (open, gate) = tokio::sync::watch::channel(false);
    let cfg = BrokerConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        admission: Some(kedge_broker::Admission {
            first: "kedge-edge-n1".into(),
            open: gate,
            wait: Duration::from_secs(30),
        }),
        ..BrokerConfig::default()
    };
    let b = Broker::start(cfg).await.expect("broker");
    let mut device = tokio::net::TcpStream::connect(b.addr)
        .await
        .expect("connect");
    device
        .write_all(&connect_packet("sensor"))
        .await
        .expect("connect");
    let mut bus = tokio::net::TcpStream::connect(b.addr)
        .await
        .expect("connect");
    bus.write_all(&connect_packet("kedge-edge-n1"))
        .await
        .expect("connect");
    let mut ack = [0u8; 4];
    bus.read_exact(&mut ack).await.expect("the bus's connack");
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00]);
    // The device has had its chance to be answered before the bus was: it was not.
    let early = tokio::time::timeout(Duration::from_millis(300), device.read_exact(&mut ack)).await;
    assert!(
        early.is_err(),
        "the device was admitted before the gate opened"
    );
    open.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), device.read_exact(&mut ack))
        .await
        .expect("admitted once open")
        .expect("the device's connack");
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00]);
}
