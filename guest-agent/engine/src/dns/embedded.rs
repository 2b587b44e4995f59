//! The embedded resolver at 127.0.0.11 of a container on a user network,
//! made as dockerd makes it (moby `libnetwork/resolver_unix.go`): its UDP
//! and TCP sockets are created *inside the container's network namespace*
//! on 127.0.0.11 with random ports, and an nft table there (`ip berth-dns`)
//! DNATs port 53 to them and SNATs the replies back to port 53. The random
//! ports keep a container's own server on 0.0.0.0:53 working; the sockets
//! and the table die with the namespace.
//!
//! Serving happens in the agent's runtime: a socket keeps the namespace it
//! was made in, whichever thread uses it.

use super::{BoxFuture, Resolver};
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
#[cfg(test)]
use std::time::Duration;

/// Where every container finds its embedded resolver.
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// dockerd's name is `docker-dns`; ours cannot be mistaken for it.
pub const TABLE: &str = "berth-dns";

/// One container's running resolver; dropping it stops serving (the
/// namespace's end removes its sockets' addresses and rules).
pub struct EmbeddedDns {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub udp_port: u16,
    pub tcp_port: u16,
}

impl Drop for EmbeddedDns {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the resolver in the network namespace `netns` (e.g.
/// `/proc/<pid>/ns/net` of the container's first process). Needs the
/// namespace's loopback up (every Berth netns has it) and CAP_SYS_ADMIN +
/// CAP_NET_ADMIN (the agent is root).
pub async fn start(netns: &Path, resolver: Resolver, nft: &dyn Nft) -> io::Result<EmbeddedDns> {
    let netns = Arc::new(File::open(netns)?);
    let ns = netns.clone();
    let (udp, tcp) = in_netns(&ns, || {
        let udp = std::net::UdpSocket::bind(SocketAddrV4::new(ADDRESS, 0))?;
        let tcp = std::net::TcpListener::bind(SocketAddrV4::new(ADDRESS, 0))?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        Ok((udp, tcp))
    })
    .await?;
    let (udp_port, tcp_port) = (udp.local_addr()?.port(), tcp.local_addr()?.port());
    nft.apply(Some(&netns), &rules(udp_port, tcp_port)).await?;
    let udp = tokio::net::UdpSocket::from_std(udp)?;
    let tcp = tokio::net::TcpListener::from_std(tcp)?;
    let tasks = vec![
        tokio::spawn(super::server::serve_udp(udp, resolver.clone())),
        tokio::spawn(super::server::serve_tcp(tcp, resolver)),
    ];
    Ok(EmbeddedDns { tasks, udp_port, tcp_port })
}

/// The nft script for the namespace: replaces the table whole (`table` +
/// `delete table` first, so a restart's second start does not stack rules).
pub fn rules(udp_port: u16, tcp_port: u16) -> String {
    format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n\
         \tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n\
         \t\tip daddr {ADDRESS} udp dport 53 dnat to {ADDRESS}:{udp_port}\n\
         \t\tip daddr {ADDRESS} tcp dport 53 dnat to {ADDRESS}:{tcp_port}\n\t}}\n\
         \tchain postrouting {{\n\t\ttype nat hook postrouting priority 100; policy accept;\n\
         \t\tip saddr {ADDRESS} udp sport {udp_port} snat to :53\n\
         \t\tip saddr {ADDRESS} tcp sport {tcp_port} snat to :53\n\t}}\n}}\n"
    )
}

/// Runs `work` on a fresh thread that has joined `netns`; the thread ends
/// with it, so no thread of the agent is ever left in a container's namespace.
pub async fn in_netns<T, F>(netns: &Arc<File>, work: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let netns = netns.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("netns".into()).spawn(move || {
        let result = nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|err| io::Error::other(format!("entering the container's network namespace: {err}")))
            .and_then(|()| work());
        let _ = tx.send(result);
    })?;
    rx.await.map_err(|_| io::Error::other("the network namespace thread died"))?
}

pub use crate::net::nft::nft_command;

/// Applies nft scripts for the DNS servers (see [`nft_command`]).
pub trait Nft: Send + Sync {
    fn apply<'a>(&'a self, netns: Option<&'a File>, script: &'a str) -> BoxFuture<'a, io::Result<()>>;
}

/// Spawns and waits for nft itself: for processes that are not a reaper of
/// their children's orphans (tests, tools).
pub struct WaitingNft;

impl Nft for WaitingNft {
    fn apply<'a>(&'a self, netns: Option<&'a File>, script: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let mut command = nft_command(netns.map(|f| f.as_fd()));
            let script = script.to_string();
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut child = command.spawn()?;
                child.stdin.take().expect("piped").write_all(script.as_bytes())?;
                nft_outcome(child.wait_with_output()?)
            })
            .await
            .map_err(io::Error::other)?
        })
    }
}

/// Ok when nft succeeded; its own words otherwise.
pub fn nft_outcome(output: std::process::Output) -> io::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!("nft failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::test_netns::TestNetns;

    #[test]
    fn the_rules_send_port_53_to_the_random_ports_and_back() {
        let script = rules(40001, 40002);
        for expected in [
            "ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:40001",
            "ip daddr 127.0.0.11 tcp dport 53 dnat to 127.0.0.11:40002",
            "ip saddr 127.0.0.11 udp sport 40001 snat to :53",
            "ip saddr 127.0.0.11 tcp sport 40002 snat to :53",
            "delete table ip berth-dns\n",
        ] {
            assert!(script.contains(expected), "missing {expected:?} in\n{script}");
        }
    }

    /// c1 sees `db` (172.18.0.3) on network front.
    fn db_on_front() -> super::super::Directory {
        super::super::Directory {
            endpoints: vec![super::super::Endpoint {
                container_id: "c1".into(),
                container_name: "db".into(),
                network: "front".into(),
                addresses: vec!["172.18.0.3".parse().unwrap()],
                ..Default::default()
            }],
            links: vec![],
        }
    }

    fn question(name: &str) -> Vec<u8> {
        use hickory_proto::op::{Message, Query};
        use hickory_proto::rr::{Name, RecordType};
        let mut message = Message::new();
        message.set_id(7).add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        message.to_vec().unwrap()
    }

    fn answered(reply: &[u8]) -> Vec<String> {
        let message = hickory_proto::op::Message::from_vec(reply).unwrap();
        message.answers().iter().map(|r| r.data().to_string()).collect()
    }

    /// What a container does: ask 127.0.0.11:53 over UDP and TCP from its
    /// own namespace, while a server of its own holds 0.0.0.0:53 there.
    #[tokio::test]
    async fn a_namespace_resolves_names_at_127_0_0_11_port_53() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let netns = TestNetns::new().await;
        let names = db_on_front();
        let resolver = Resolver::new(Arc::new(names), "c1", None);
        let dns =
            start(Path::new(&format!("/proc/{}/ns/net", netns.holder.id())), resolver, &WaitingNft).await.unwrap();
        assert!(dns.udp_port != 53 && dns.tcp_port != 53);

        let (udp, tcp, own_server) = in_netns(&netns.file, || {
            // The container's own DNS server on the wildcard address does not clash.
            let own_server = std::net::UdpSocket::bind("0.0.0.0:53")?;
            let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
            udp.connect("127.0.0.11:53")?;
            let tcp = std::net::TcpStream::connect("127.0.0.11:53")?;
            Ok((udp, tcp, own_server))
        })
        .await
        .unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        udp.send(&question("db.")).unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::task::spawn_blocking(move || udp.recv(&mut buf).map(|n| buf[..n].to_vec())).await.unwrap();
        let reply = n.expect("a UDP answer from 127.0.0.11:53 (the reply's source was SNATed to port 53)");
        assert_eq!(answered(&reply), ["172.18.0.3"]);

        tcp.set_nonblocking(true).unwrap();
        let mut tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
        let query = question("db.front.");
        tcp.write_all(&(query.len() as u16).to_be_bytes()).await.unwrap();
        tcp.write_all(&query).await.unwrap();
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).await.unwrap();
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        tcp.read_exact(&mut reply).await.unwrap();
        assert_eq!(answered(&reply), ["172.18.0.3"]);
        drop(own_server);

        // A second start (a restarted resolver) replaces the rules, not stacks them.
        drop(dns);
        let resolver = Resolver::new(Arc::new(super::super::NoNames), "c1", None);
        let again =
            start(Path::new(&format!("/proc/{}/ns/net", netns.holder.id())), resolver, &WaitingNft).await.unwrap();
        let listed = in_netns(&netns.file, || {
            std::process::Command::new(crate::net::nft::nft_program()).args(["list", "table", "ip", TABLE]).output()
        })
        .await
        .unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout).to_string();
        assert_eq!(listed.matches("dnat to").count(), 2, "{listed}");
        assert!(listed.contains(&format!(":{}", again.udp_port)), "{listed}");
    }

    /// busybox's nslookup (what a container has) sends A and AAAA at once
    /// from one socket and waits for both answers.
    #[tokio::test]
    async fn busybox_nslookup_gets_both_answers_at_once() {
        let netns = TestNetns::new().await;
        let names = db_on_front();
        let resolver = Resolver::new(Arc::new(names), "c1", None);
        let path = format!("/proc/{}/ns/net", netns.holder.id());
        let _dns = start(Path::new(&path), resolver, &WaitingNft).await.unwrap();
        let started = std::time::Instant::now();
        let out = tokio::process::Command::new("nsenter")
            .args([format!("--net={path}").as_str(), "busybox", "nslookup", "db", "127.0.0.11"])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("172.18.0.3"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(2), "nslookup took {:?}: {text}", started.elapsed());
    }

    /// `--dns` servers are asked from inside the namespace: a server only
    /// the namespace has answers.
    #[tokio::test]
    async fn dns_servers_are_queried_from_the_namespace() {
        let netns = TestNetns::new().await;
        let server = in_netns(&netns.file, || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:5353")?;
            socket.set_read_timeout(Some(Duration::from_secs(5)))?;
            Ok(socket)
        })
        .await
        .unwrap();
        let answering = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80; // QR: a response, no answers, NOERROR
            server.send_to(&reply, from).unwrap();
        });
        use super::super::Upstream;
        let servers = vec!["127.0.0.1:5353".parse().unwrap()];
        let upstream = super::super::upstream::UdpServers { netns: Some(netns.file.clone()), servers };
        let reply = upstream.forward(&question("example.com.")).await.expect("the namespace's server answered");
        assert_eq!(reply[..2], [0, 7]);
        answering.join().unwrap();
    }
}
