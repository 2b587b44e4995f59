//! The VM's service addresses at work (engine `service_addr`): the VM's
//! resolver on 192.168.65.7:53 (UDP and TCP; the VM's own resolv.conf and
//! default-bridge containers use it), and host.docker.internal =
//! 192.168.65.254, whose TCP ports lead to the host's loopback.
//!
//! Only in the VM: a local agent shares the host's network, which is not
//! ours to change.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use std::fs::File;
use std::os::fd::AsFd;
use std::time::Duration;

use berth_engine::dns::embedded::{nft_command, Nft};
use berth_engine::dns::upstream::{Chain, UdpServers};
use berth_engine::dns::{server, BoxFuture, NoNames, Resolver, Upstream};
use berth_engine::service_addr;

use crate::host_link::{HostLink, HostResolver};
use crate::reaper::Reaper;

/// nft run through the agent's reaper (which reaps every child: a wait of
/// our own would lose the status to it).
pub struct ReaperNft(pub Reaper);

impl Nft for ReaperNft {
    fn apply<'a>(&'a self, netns: Option<&'a File>, script: &'a str) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            use std::io::{Read, Write};
            let mut command = nft_command(netns.map(AsFd::as_fd));
            let (mut child, exited) = self.0.spawn(&mut command)?;
            // A script is far smaller than a pipe's buffer: this write does not block.
            let written = child.stdin.take().map(|mut stdin| stdin.write_all(script.as_bytes()));
            let exit = match tokio::time::timeout(Duration::from_secs(10), exited).await {
                Ok(Ok(exit)) => exit,
                _ => {
                    let _ = child.kill();
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "nft did not finish"));
                }
            };
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            if exit.code != 0 {
                return Err(std::io::Error::other(format!("nft failed (exit {}): {}", exit.code, stderr.trim())));
            }
            written.unwrap_or(Ok(()))
        })
    }
}

/// Where every resolver of the agent sends what it cannot answer: the
/// host's resolver, then (the host out of reach) the uplink's, if any.
pub fn upstream(link: &HostLink, uplink_dns: Option<Ipv4Addr>) -> Arc<dyn Upstream> {
    let mut chain: Vec<Arc<dyn Upstream>> = vec![Arc::new(HostResolver::new(link.clone()))];
    if let Some(dns) = uplink_dns {
        chain.push(Arc::new(UdpServers { netns: None, servers: vec![SocketAddr::new(dns.into(), 53)] }));
    }
    Arc::new(Chain(chain))
}

/// Sets the service addresses up and serves them. On failure the VM's
/// resolv.conf goes back to the uplink's resolver, so names still resolve.
pub async fn start(link: HostLink, upstream: Arc<dyn Upstream>, uplink_dns: Option<Ipv4Addr>, nft: ReaperNft) {
    match serve(link, upstream, &nft).await {
        Ok(()) => tracing::info!(dns = %service_addr::DNS, host = %service_addr::HOST_GATEWAY, "service addresses up"),
        Err(err) => {
            tracing::error!(%err, "the service addresses are not available: no host.docker.internal, DNS from the uplink only");
            if let Some(dns) = uplink_dns {
                let _ = std::fs::write("/etc/resolv.conf", format!("nameserver {dns}\n"));
            }
        }
    }
}

async fn serve(link: HostLink, upstream: Arc<dyn Upstream>, nft: &ReaperNft) -> std::io::Result<()> {
    service_addr::configure_interface().await?;
    nft.apply(None, &service_addr::forwarding_rules()).await?;
    let dns = SocketAddrV4::new(service_addr::DNS, 53);
    let udp = tokio::net::UdpSocket::bind(dns).await?;
    let tcp = tokio::net::TcpListener::bind(dns).await?;
    let forwarder =
        tokio::net::TcpListener::bind(SocketAddrV4::new(service_addr::HOST_GATEWAY, service_addr::FORWARDER_PORT))
            .await?;
    let resolver = Resolver::new(Arc::new(NoNames), "", Some(upstream));
    tokio::spawn(server::serve_udp(udp, resolver.clone()));
    tokio::spawn(server::serve_tcp(tcp, resolver));
    tokio::spawn(crate::host_link::serve_host_gateway(forwarder, link));
    Ok(())
}
