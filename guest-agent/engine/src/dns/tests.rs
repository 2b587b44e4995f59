use std::collections::HashMap;
use std::sync::Mutex;

use hickory_proto::op::Query;

use super::*;

/// Names by container: what the container asking would see.
#[derive(Default)]
struct FakeTable(HashMap<(String, String), Vec<IpAddr>>);

impl FakeTable {
    fn with(mut self, container: &str, name: &str, addresses: &[&str]) -> Self {
        self.0.insert((container.into(), name.into()), addresses.iter().map(|a| a.parse().unwrap()).collect());
        self
    }
}

impl NameTable for FakeTable {
    fn lookup(&self, container: &str, name: &str) -> Option<Vec<IpAddr>> {
        self.0.get(&(container.to_string(), name.to_string())).cloned()
    }
    fn reverse(&self, container: &str, address: IpAddr) -> Option<String> {
        self.0.iter().find(|((c, _), a)| c == container && a.contains(&address)).map(|((_, n), _)| n.clone())
    }
}

/// Records what it was asked and answers with a fixed MX-less NOERROR.
#[derive(Default)]
struct FakeUpstream {
    asked: Mutex<Vec<Vec<u8>>>,
    fail: bool,
}

impl Upstream for FakeUpstream {
    fn forward<'a>(&'a self, query: &'a [u8]) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            self.asked.lock().unwrap().push(query.to_vec());
            if self.fail {
                return None;
            }
            let message = Message::from_vec(query).ok()?;
            let mut reply = response_to(&message);
            reply.set_authoritative(false);
            let name = message.queries()[0].name().clone();
            reply.add_answer(Record::from_rdata(name, 42, RData::A(A("93.184.216.34".parse().unwrap()))));
            reply.to_vec().ok()
        })
    }
}

fn query(name: &str, kind: RecordType) -> Vec<u8> {
    let mut message = Message::new();
    message.set_id(0x1234).set_recursion_desired(true).add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    message.to_vec().unwrap()
}

fn resolver(table: FakeTable, upstream: Option<Arc<FakeUpstream>>) -> Resolver {
    Resolver::new(Arc::new(table), "web", upstream.map(|u| u as Arc<dyn Upstream>))
}

async fn ask(resolver: &Resolver, name: &str, kind: RecordType) -> Message {
    Message::from_vec(&resolver.handle(&query(name, kind), Transport::Udp).await.expect("a reply")).unwrap()
}

fn addresses(reply: &Message) -> Vec<String> {
    reply
        .answers()
        .iter()
        .map(|r| match r.data() {
            RData::A(a) => a.0.to_string(),
            RData::AAAA(a) => a.0.to_string(),
            RData::PTR(p) => p.0.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn container_names_are_answered_locally_with_ttl_600() {
    let upstream = Arc::new(FakeUpstream::default());
    let resolver = resolver(FakeTable::default().with("web", "db", &["172.18.0.3"]), Some(upstream.clone()));
    let reply = ask(&resolver, "db.", RecordType::A).await;
    assert_eq!((reply.id(), reply.response_code()), (0x1234, ResponseCode::NoError));
    assert_eq!(addresses(&reply), ["172.18.0.3"]);
    assert_eq!(reply.answers()[0].ttl(), LOCAL_TTL);
    assert!(reply.recursion_available() && reply.recursion_desired());
    // Upper case in the question is answered as asked.
    let reply = ask(&resolver, "DB.", RecordType::A).await;
    assert_eq!(reply.answers()[0].name().to_ascii(), "DB.");
    assert!(upstream.asked.lock().unwrap().is_empty(), "a local name went upstream");
}

#[tokio::test]
async fn known_names_without_that_type_answer_empty_instead_of_leaking_upstream() {
    let upstream = Arc::new(FakeUpstream::default());
    let resolver = resolver(FakeTable::default().with("web", "db", &["172.18.0.3"]), Some(upstream.clone()));
    for kind in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
        let reply = ask(&resolver, "db.", kind).await;
        assert_eq!((reply.response_code(), reply.answers().len()), (ResponseCode::NoError, 0), "{kind}");
    }
    assert!(upstream.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn several_addresses_come_in_random_order() {
    let resolver = resolver(FakeTable::default().with("web", "www", &["172.18.0.2", "172.18.0.5", "172.18.0.6"]), None);
    let mut orders = std::collections::HashSet::new();
    for _ in 0..64 {
        let reply = ask(&resolver, "www.", RecordType::A).await;
        let mut sorted = addresses(&reply);
        orders.insert(sorted.clone());
        sorted.sort();
        assert_eq!(sorted, ["172.18.0.2", "172.18.0.5", "172.18.0.6"]);
    }
    assert!(orders.len() > 1, "always the same order: {orders:?}");
}

#[tokio::test]
async fn unknown_names_are_forwarded_as_asked() {
    let upstream = Arc::new(FakeUpstream::default());
    let resolver = resolver(FakeTable::default(), Some(upstream.clone()));
    let question = query("example.com.", RecordType::A);
    let reply = Message::from_vec(&resolver.handle(&question, Transport::Udp).await.unwrap()).unwrap();
    assert_eq!(addresses(&reply), ["93.184.216.34"]);
    assert_eq!(reply.answers()[0].ttl(), 42, "the upstream's answer, untouched");
    assert_eq!(*upstream.asked.lock().unwrap(), vec![question]);
}

#[tokio::test]
async fn without_an_upstream_or_its_answer_unknown_names_fail() {
    let internal = resolver(FakeTable::default().with("web", "db", &["172.18.0.3"]), None);
    assert_eq!(ask(&internal, "example.com.", RecordType::A).await.response_code(), ResponseCode::ServFail);
    assert_eq!(addresses(&ask(&internal, "db.", RecordType::A).await), ["172.18.0.3"], "own names still resolve");
    let down = Arc::new(FakeUpstream { fail: true, ..Default::default() });
    let resolver = resolver(FakeTable::default(), Some(down));
    assert_eq!(ask(&resolver, "example.com.", RecordType::A).await.response_code(), ResponseCode::ServFail);
}

#[tokio::test]
async fn the_host_names_mean_the_host_gateway_everywhere() {
    let resolver = resolver(FakeTable::default(), None);
    for name in ["host.docker.internal.", "gateway.docker.internal.", "Host.Docker.Internal."] {
        assert_eq!(addresses(&ask(&resolver, name, RecordType::A).await), ["192.168.65.254"], "{name}");
    }
    let reverse = ask(&resolver, "254.65.168.192.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(addresses(&reverse), ["host.docker.internal."]);
}

#[tokio::test]
async fn ptr_names_the_container() {
    let upstream = Arc::new(FakeUpstream::default());
    let resolver =
        resolver(FakeTable::default().with("web", "db.front", &["172.18.0.3", "fd00::3"]), Some(upstream.clone()));
    let reply = ask(&resolver, "3.0.18.172.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!((addresses(&reply), reply.answers()[0].ttl()), (vec!["db.front.".to_string()], LOCAL_TTL));
    let v6 = "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    assert_eq!(addresses(&ask(&resolver, v6, RecordType::PTR).await), ["db.front."]);
    // Someone else's address goes upstream.
    ask(&resolver, "8.8.8.8.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(upstream.asked.lock().unwrap().len(), 1);
}

#[test]
fn reverse_names_parse_strictly() {
    assert_eq!(reverse_address("4.3.2.1.in-addr.arpa"), Some("1.2.3.4".parse().unwrap()));
    for bad in ["3.2.1.in-addr.arpa", "256.3.2.1.in-addr.arpa", "x.3.2.1.in-addr.arpa", "in-addr.arpa", "1.ip6.arpa"] {
        assert_eq!(reverse_address(bad), None, "{bad}");
    }
}

#[tokio::test]
async fn udp_answers_too_big_are_truncated_tcp_ones_are_not() {
    let many: Vec<String> = (1..=60).map(|i| format!("10.0.0.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let resolver = resolver(FakeTable::default().with("web", "big", &many), None);
    let question = query("big.", RecordType::A);
    let udp = Message::from_vec(&resolver.handle(&question, Transport::Udp).await.unwrap()).unwrap();
    assert!(udp.truncated() && udp.answers().is_empty(), "{udp:?}");
    let tcp = Message::from_vec(&resolver.handle(&question, Transport::Tcp).await.unwrap()).unwrap();
    assert!(!tcp.truncated());
    assert_eq!(tcp.answers().len(), 60);
}

#[tokio::test]
async fn garbage_responses_and_other_opcodes() {
    let resolver = resolver(FakeTable::default(), None);
    assert_eq!(resolver.handle(b"", Transport::Udp).await, None);
    let formerr = Message::from_vec(&resolver.handle(b"\xab\xcd\xff", Transport::Udp).await.unwrap()).unwrap();
    assert_eq!((formerr.id(), formerr.response_code()), (0xabcd, ResponseCode::FormErr));
    // A response sent to the server is not answered (no reflection loops).
    let mut response = Message::from_vec(&query("db.", RecordType::A)).unwrap();
    response.set_message_type(MessageType::Response);
    assert_eq!(resolver.handle(&response.to_vec().unwrap(), Transport::Udp).await, None);
    let mut update = Message::from_vec(&query("db.", RecordType::A)).unwrap();
    update.set_op_code(OpCode::Update);
    let reply = Message::from_vec(&resolver.handle(&update.to_vec().unwrap(), Transport::Udp).await.unwrap()).unwrap();
    assert_eq!(reply.response_code(), ResponseCode::NotImp);
    // Random bytes never panic.
    for seed in 0..2000u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let len = rng.usize(0..600);
        let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let _ = resolver.handle(&bytes, Transport::Udp).await;
    }
}

/// The serving loops over real sockets on this host's loopback.
#[tokio::test]
async fn served_over_udp_and_tcp() {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let resolver = resolver(FakeTable::default().with("web", "db", &["172.18.0.3"]), None);
    tokio::spawn(server::serve_udp(udp, resolver.clone()));
    tokio::spawn(server::serve_tcp(tcp, resolver));

    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&query("db.", RecordType::A), udp_addr).await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), client.recv(&mut buf)).await.unwrap().unwrap();
    assert_eq!(addresses(&Message::from_vec(&buf[..n]).unwrap()), ["172.18.0.3"]);

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(tcp_addr).await.unwrap();
    for _ in 0..2 {
        let question = query("db.", RecordType::A);
        stream.write_all(&(question.len() as u16).to_be_bytes()).await.unwrap();
        stream.write_all(&question).await.unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut reply).await.unwrap();
        assert_eq!(addresses(&Message::from_vec(&reply).unwrap()), ["172.18.0.3"]);
    }
}
