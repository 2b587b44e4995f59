//! Interfaces over netlink (rtnetlink, pure Rust): bridges, veth pairs,
//! addresses and routes. Each call runs on a thread inside the namespace
//! it changes (`netns::run_in`) with a netlink socket opened there.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::netns;

fn nl(what: &str) -> impl FnOnce(rtnetlink::Error) -> io::Error + '_ {
    move |e| match e {
        rtnetlink::Error::NetlinkError(msg) => {
            let err = msg.to_io();
            io::Error::new(err.kind(), format!("{what}: {err}"))
        }
        other => io::Error::other(format!("{what}: {other}")),
    }
}

fn exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == libc::EEXIST)
}

/// Runs an rtnetlink conversation in `netns` (the caller's when `None`).
fn with_handle<T, F>(netns: Option<&Path>, f: impl FnOnce(Handle) -> F + Send + 'static) -> io::Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = io::Result<T>>,
{
    netns::run_in(netns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        runtime.block_on(async move {
            let (connection, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(connection);
            f(handle).await
        })
    })
}

async fn index_of(handle: &Handle, name: &str) -> io::Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == libc::ENODEV => Ok(None),
        Err(e) => Err(nl("looking up a link")(e)),
    }
}

/// A bridge named `name`, up, with `gateway/prefix` on it; made if missing.
/// Also turns on IPv4 forwarding in that namespace (a router is what a
/// bridge network needs the VM to be).
pub fn ensure_bridge(netns: Option<&Path>, name: &str, gateway: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let name = name.to_string();
    with_handle(netns, move |handle| async move {
        let index = match index_of(&handle, &name).await? {
            Some(index) => index,
            None => {
                handle.link().add(LinkBridge::new(&name).build()).execute().await.map_err(nl("creating a bridge"))?;
                index_of(&handle, &name).await?.ok_or_else(|| io::Error::other(format!("bridge {name} vanished")))?
            }
        };
        handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await.map_err(nl("bridge up"))?;
        if let Err(e) = handle.address().add(index, IpAddr::V4(gateway), prefix).execute().await {
            if !exists(&e) {
                return Err(nl("addressing the bridge")(e));
            }
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
        Ok(())
    })
}

/// Deletes a link by name; a missing one is fine.
pub fn delete(netns: Option<&Path>, name: &str) -> io::Result<()> {
    let name = name.to_string();
    with_handle(netns, move |handle| async move {
        if let Some(index) = index_of(&handle, &name).await? {
            match handle.link().del(index).execute().await {
                Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == libc::ENODEV => {}
                other => other.map_err(nl("deleting a link"))?,
            }
        }
        Ok(())
    })
}

/// One endpoint to plug in: a veth pair between `bridge` (in the root
/// namespace) and the container's namespace file.
#[derive(Debug, Clone)]
pub struct EndpointPlan {
    pub bridge: String,
    pub host_veth: String,
    pub container_netns: PathBuf,
    pub ifname: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// The default route's next hop (none on internal networks, and none
    /// for a second network: the first one's gateway stays the route).
    pub default_route: Option<Ipv4Addr>,
}

/// Makes the pair, puts its host end on the bridge and its other end into
/// the container's namespace with the address, MAC and route. On failure
/// nothing is left behind (the host end is deleted, which takes its peer).
pub fn add_endpoint(root: Option<&Path>, plan: &EndpointPlan) -> io::Result<()> {
    let result = plug(root, plan);
    if result.is_err() {
        let _ = delete(root, &plan.host_veth);
    }
    result
}

fn plug(root: Option<&Path>, plan: &EndpointPlan) -> io::Result<()> {
    // The peer's name while it is still in the root namespace.
    let peer = format!("{}p", &plan.host_veth[..plan.host_veth.len().min(14)]);
    let target = std::fs::File::open(&plan.container_netns)?;
    let p = plan.clone();
    let peer_name = peer.clone();
    with_handle(root, move |handle| async move {
        let veth = LinkVeth::new(&p.host_veth, &peer_name).build();
        handle.link().add(veth).execute().await.map_err(nl("creating a veth pair"))?;
        let bridge = index_of(&handle, &p.bridge).await?.ok_or_else(|| io::Error::other("no such bridge"))?;
        let host = index_of(&handle, &p.host_veth).await?.ok_or_else(|| io::Error::other("veth vanished"))?;
        let set = LinkUnspec::new_with_index(host).controller(bridge).up().build();
        handle.link().set(set).execute().await.map_err(nl("attaching the veth to the bridge"))?;
        let peer = index_of(&handle, &peer_name).await?.ok_or_else(|| io::Error::other("veth peer vanished"))?;
        let moved = LinkUnspec::new_with_index(peer).setns_by_fd(target.as_raw_fd()).build();
        handle.link().set(moved).execute().await.map_err(nl("moving the veth into the container"))?;
        Ok(())
    })?;
    let p = plan.clone();
    with_handle(Some(&plan.container_netns), move |handle| async move {
        let index = index_of(&handle, &peer).await?.ok_or_else(|| io::Error::other("veth missing in the container"))?;
        let set = LinkUnspec::new_with_index(index).name(p.ifname.clone()).address(p.mac.to_vec()).build();
        handle.link().set(set).execute().await.map_err(nl("naming the container's interface"))?;
        handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await.map_err(nl("link up"))?;
        handle.address().add(index, IpAddr::V4(p.ip), p.prefix).execute().await.map_err(nl("adding the address"))?;
        if let Some(gateway) = p.default_route {
            let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).output_interface(index).build();
            handle.route().add(route).execute().await.map_err(nl("adding the default route"))?;
        }
        Ok(())
    })
}

/// The IPv4 routes of a namespace, as subnets: what new networks' pools
/// must not overlap (the uplink, a service subnet, a host's LANs).
pub fn routes(netns: Option<&Path>) -> io::Result<Vec<ipnet::Ipv4Net>> {
    with_handle(netns, move |handle| async move {
        let mut stream = handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
        let mut nets = Vec::new();
        while let Some(route) = stream.try_next().await.map_err(nl("listing routes"))? {
            let prefix = route.header.destination_prefix_length;
            if prefix == 0 {
                continue;
            }
            for attr in &route.attributes {
                if let rtnetlink::packet_route::route::RouteAttribute::Destination(
                    rtnetlink::packet_route::route::RouteAddress::Inet(dst),
                ) = attr
                {
                    if let Ok(net) = ipnet::Ipv4Net::new(*dst, prefix) {
                        nets.push(net.trunc());
                    }
                }
            }
        }
        Ok(nets)
    })
}

/// The policy routing that hands a container's replies to the agent's
/// transparent sockets (a published port's connection made with the
/// client's own address as its source, `IP_TRANSPARENT`): packets nft
/// marked with `mark` (they belong to such a socket) are looked up in
/// `table`, whose one route delivers everything locally. Without it a
/// reply to a remote client's address would follow the default route out
/// of the VM. Idempotent.
pub fn ensure_local_delivery(netns: Option<&Path>, mark: u32, table: u32) -> io::Result<()> {
    use rtnetlink::packet_route::route::{RouteScope, RouteType};
    use rtnetlink::packet_route::rule::RuleAction;
    with_handle(netns, move |handle| async move {
        let lo = index_of(&handle, "lo").await?.ok_or_else(|| io::Error::other("no loopback interface"))?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .kind(RouteType::Local)
            .scope(RouteScope::Host)
            .output_interface(lo)
            .table_id(table)
            .build();
        if let Err(e) = handle.route().add(route).execute().await {
            if !exists(&e) {
                return Err(nl("adding the local delivery route")(e));
            }
        }
        let rule = handle.rule().add().v4().fw_mark(mark).table_id(table).action(RuleAction::ToTable);
        if let Err(e) = rule.execute().await {
            if !exists(&e) {
                return Err(nl("adding the local delivery rule")(e));
            }
        }
        Ok(())
    })
}
