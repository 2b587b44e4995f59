//! The embedded resolvers (127.0.0.11) of the running containers that are
//! on a user network, one per container, each serving from inside that
//! container's network namespace (embedded.rs).
//!
//! What a container's resolver forwards, as dockerd decides it: its `--dns`
//! servers, asked from inside its namespace; nothing on an internal
//! network; otherwise the host's resolver (then the uplink's).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::embedded::{self, EmbeddedDns, Nft};
use super::upstream::UdpServers;
use super::{NameTable, Resolver, Upstream};

/// Where a container's unanswered questions go.
#[derive(Debug, Clone, PartialEq)]
pub enum Forwarding {
    /// The host's resolver (the default).
    Host,
    /// `--dns` servers, from the container's namespace.
    Servers(Vec<IpAddr>),
    /// An internal network: only the engine's own names resolve.
    Nowhere,
}

pub struct EmbeddedResolvers {
    names: Arc<dyn NameTable>,
    host: Arc<dyn Upstream>,
    nft: Arc<dyn Nft>,
    running: Mutex<HashMap<String, EmbeddedDns>>,
}

impl EmbeddedResolvers {
    pub fn new(names: Arc<dyn NameTable>, host: Arc<dyn Upstream>, nft: Arc<dyn Nft>) -> EmbeddedResolvers {
        EmbeddedResolvers { names, host, nft, running: Mutex::new(HashMap::new()) }
    }

    /// Serves `container`'s resolver in the namespace at `netns` (a
    /// restarted container's replaces its previous one).
    pub async fn start(&self, container: &str, netns: &Path, forwarding: Forwarding) -> std::io::Result<()> {
        let upstream: Option<Arc<dyn Upstream>> = match forwarding {
            Forwarding::Host => Some(self.host.clone()),
            Forwarding::Servers(servers) => Some(Arc::new(UdpServers {
                netns: Some(Arc::new(std::fs::File::open(netns)?)),
                servers: servers.into_iter().map(|ip| SocketAddr::new(ip, 53)).collect(),
            })),
            Forwarding::Nowhere => None,
        };
        let resolver = Resolver::new(self.names.clone(), container, upstream);
        let dns = embedded::start(netns, resolver, self.nft.as_ref()).await?;
        self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(container.to_string(), dns);
        Ok(())
    }

    /// Stops `container`'s resolver (its namespace's end takes the rest).
    pub fn stop(&self, container: &str) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(container);
    }

    /// The ports `container`'s resolver listens on in its namespace.
    pub fn ports(&self, container: &str) -> Option<(u16, u16)> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).get(container).map(|d| (d.udp_port, d.tcp_port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::embedded::{in_netns, WaitingNft};
    use crate::dns::test_netns::TestNetns;
    use crate::dns::{BoxFuture, Directory, Endpoint};

    /// Counts what reaches it; never answers.
    #[derive(Default)]
    struct CountingHost(std::sync::atomic::AtomicUsize);
    impl Upstream for CountingHost {
        fn forward<'a>(&'a self, _: &'a [u8]) -> BoxFuture<'a, Option<Vec<u8>>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { None })
        }
    }

    /// An A question for `name` to 127.0.0.11:53 from inside `netns`; the reply.
    async fn ask(netns: &TestNetns, name: &'static str) -> Vec<u8> {
        in_netns(&netns.file, move || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
            socket.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
            socket.connect("127.0.0.11:53")?;
            let mut query = vec![0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            for label in name.split('.') {
                query.push(label.len() as u8);
                query.extend_from_slice(label.as_bytes());
            }
            query.extend_from_slice(&[0, 0, 1, 0, 1]);
            socket.send(&query)?;
            let mut reply = vec![0u8; 512];
            let n = socket.recv(&mut reply)?;
            reply.truncate(n);
            Ok(reply)
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn each_container_gets_its_resolver_and_its_forwarding() {
        let netns = TestNetns::new().await;
        let names = Directory {
            endpoints: vec![Endpoint {
                container_id: "c1".into(),
                container_name: "web".into(),
                network: "front".into(),
                addresses: vec!["172.18.0.2".parse().unwrap()],
                ..Default::default()
            }],
            links: vec![],
        };
        let host = Arc::new(CountingHost::default());
        let resolvers = EmbeddedResolvers::new(Arc::new(names), host.clone(), Arc::new(WaitingNft));
        let path = netns.path();

        resolvers.start("c1", Path::new(&path), Forwarding::Nowhere).await.unwrap();
        let first = resolvers.ports("c1").unwrap();
        let reply = ask(&netns, "web").await;
        assert_eq!((&reply[6..8], &reply[reply.len() - 4..]), (&[0, 1][..], &[172, 18, 0, 2][..]), "{reply:?}");
        // Internal: an unknown name fails (SERVFAIL) without asking the host.
        let reply = ask(&netns, "example.com").await;
        assert_eq!(reply[3] & 0x0f, 2);
        assert_eq!(host.0.load(std::sync::atomic::Ordering::SeqCst), 0);

        // A restart replaces the resolver, now forwarding to the host.
        resolvers.start("c1", Path::new(&path), Forwarding::Host).await.unwrap();
        assert_ne!(resolvers.ports("c1"), Some(first));
        ask(&netns, "example.com").await;
        assert_eq!(host.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        resolvers.stop("c1");
        assert_eq!(resolvers.ports("c1"), None);
    }
}
