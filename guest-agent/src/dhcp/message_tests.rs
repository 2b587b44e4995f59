use super::*;

const MAC: [u8; 6] = [0x02, 0xab, 0xcd, 0x00, 0x11, 0x22];
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 64, 1);
const OFFERED: Ipv4Addr = Ipv4Addr::new(192, 168, 64, 7);

fn client() -> Client {
    Client { xid: 0x1234_5678, mac: MAC }
}

fn decode(bytes: &[u8]) -> Message {
    Message::decode(&mut Decoder::new(bytes)).unwrap()
}

/// A server's reply to `client`, as bootpd or dnsmasq would send it.
fn reply(client: &Client, kind: MessageType, options: Vec<DhcpOption>) -> Vec<u8> {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(client.xid, unspecified, OFFERED, SERVER, unspecified, &client.mac);
    msg.set_opcode(dhcproto::v4::Opcode::BootReply);
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    for option in options {
        msg.opts_mut().insert(option);
    }
    encode(&msg)
}

fn full_ack_options() -> Vec<DhcpOption> {
    vec![
        DhcpOption::ServerIdentifier(SERVER),
        DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
        DhcpOption::Router(vec![SERVER]),
        DhcpOption::DomainNameServer(vec![SERVER, Ipv4Addr::new(192, 168, 64, 2)]),
        DhcpOption::AddressLeaseTime(86_400),
        DhcpOption::Renewal(600),
        DhcpOption::Rebinding(900),
    ]
}

#[test]
fn discover_is_a_broadcast_request_naming_the_client() {
    let msg = decode(&client().discover());
    assert_eq!(msg.opcode(), dhcproto::v4::Opcode::BootRequest);
    assert_eq!(msg.xid(), 0x1234_5678);
    assert_eq!(msg.chaddr(), MAC);
    assert!(msg.flags().broadcast(), "the reply must reach a client with no address");
    assert_eq!(msg.opts().msg_type(), Some(MessageType::Discover));
    assert_eq!(
        msg.opts().get(OptionCode::ClientIdentifier),
        Some(&DhcpOption::ClientIdentifier(vec![1, 0x02, 0xab, 0xcd, 0x00, 0x11, 0x22]))
    );
    let Some(DhcpOption::ParameterRequestList(asked)) = msg.opts().get(OptionCode::ParameterRequestList) else {
        panic!("no parameter request list");
    };
    for code in [OptionCode::SubnetMask, OptionCode::Router, OptionCode::DomainNameServer] {
        assert!(asked.contains(&code), "{code:?} not asked for");
    }
}

#[test]
fn the_request_names_the_offer_and_its_server() {
    let msg = decode(&client().request(&Offer { address: OFFERED, server: SERVER }));
    assert_eq!(msg.opts().msg_type(), Some(MessageType::Request));
    assert_eq!(msg.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(msg.opts().get(OptionCode::RequestedIpAddress), Some(&DhcpOption::RequestedIpAddress(OFFERED)));
    assert_eq!(msg.opts().get(OptionCode::ServerIdentifier), Some(&DhcpOption::ServerIdentifier(SERVER)));
}

#[test]
fn extending_a_lease_puts_the_address_in_ciaddr_and_names_no_server() {
    let Some(Reply::Ack(lease)) = client().reply(&reply(&client(), MessageType::Ack, full_ack_options())) else {
        panic!("no lease");
    };
    let msg = decode(&client().extend(&lease));
    assert_eq!(msg.opts().msg_type(), Some(MessageType::Request));
    assert_eq!(msg.ciaddr(), OFFERED);
    assert!(!msg.flags().broadcast(), "the client has its address: replies come unicast");
    assert!(msg.opts().get(OptionCode::ServerIdentifier).is_none(), "RFC 2131 4.3.2: not in RENEWING");
    assert!(msg.opts().get(OptionCode::RequestedIpAddress).is_none());
}

#[test]
fn an_offer_and_an_ack_are_read() {
    let client = client();
    let offer = reply(&client, MessageType::Offer, vec![DhcpOption::ServerIdentifier(SERVER)]);
    assert_eq!(client.reply(&offer), Some(Reply::Offer(Offer { address: OFFERED, server: SERVER })));
    let ack = reply(&client, MessageType::Ack, full_ack_options());
    assert_eq!(
        client.reply(&ack),
        Some(Reply::Ack(Lease {
            address: OFFERED,
            prefix_len: 24,
            gateway: SERVER,
            dns: vec![SERVER, Ipv4Addr::new(192, 168, 64, 2)],
            server: SERVER,
            lease_time: Duration::from_secs(86_400),
            renew_after: Duration::from_secs(600),
            rebind_after: Duration::from_secs(900),
        }))
    );
    assert_eq!(client.reply(&reply(&client, MessageType::Nak, vec![])), Some(Reply::Nak));
}

#[test]
fn missing_timers_and_mask_take_the_rfc_defaults() {
    let client = client();
    let ack =
        reply(&client, MessageType::Ack, vec![DhcpOption::Router(vec![SERVER]), DhcpOption::AddressLeaseTime(800)]);
    let Some(Reply::Ack(lease)) = client.reply(&ack) else { panic!("no lease") };
    assert_eq!(lease.renew_after, Duration::from_secs(400));
    assert_eq!(lease.rebind_after, Duration::from_secs(700));
    assert_eq!(lease.prefix_len, 24, "192.168/16 is class C");
    assert!(lease.dns.is_empty());
    let ack = reply(&client, MessageType::Ack, vec![DhcpOption::Router(vec![SERVER])]);
    let Some(Reply::Ack(lease)) = client.reply(&ack) else { panic!("no lease") };
    assert_eq!(lease.lease_time, DEFAULT_LEASE);
    // A T2 before T1 is not honoured.
    let ack = reply(
        &client,
        MessageType::Ack,
        vec![DhcpOption::Router(vec![SERVER]), DhcpOption::Renewal(100), DhcpOption::Rebinding(50)],
    );
    let Some(Reply::Ack(lease)) = client.reply(&ack) else { panic!("no lease") };
    assert_eq!((lease.renew_after, lease.rebind_after), (Duration::from_secs(100), Duration::from_secs(100)));
}

#[test]
fn replies_that_are_not_ours_or_not_usable_are_ignored() {
    let client = client();
    let other_xid = Client { xid: 1, ..client };
    assert_eq!(client.reply(&reply(&other_xid, MessageType::Ack, full_ack_options())), None);
    let other_mac = Client { mac: [2, 0, 0, 0, 0, 1], ..client };
    assert_eq!(client.reply(&reply(&other_mac, MessageType::Ack, full_ack_options())), None);
    // Another client's request on the same link.
    assert_eq!(client.reply(&client.discover()), None);
    // No router: containers could not reach a registry.
    let no_router: Vec<DhcpOption> =
        full_ack_options().into_iter().filter(|o| !matches!(o, DhcpOption::Router(_))).collect();
    assert_eq!(client.reply(&reply(&client, MessageType::Ack, no_router)), None);
    let holes = vec![DhcpOption::Router(vec![SERVER]), DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0))];
    assert_eq!(client.reply(&reply(&client, MessageType::Ack, holes)), None);
    // An offer with no server to request it from.
    assert_eq!(client.reply(&reply(&client, MessageType::Offer, vec![])), None);
    assert_eq!(client.reply(b"not dhcp"), None);
}

#[test]
fn datagrams_are_framed_and_unframed() {
    let packet = udp_datagram(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, b"hello");
    assert_eq!(packet.len(), 20 + 8 + 5);
    let sliced = SlicedPacket::from_ip(&packet).unwrap();
    let Some(NetSlice::Ipv4(ip)) = sliced.net else { panic!("not IPv4") };
    assert_eq!(ip.header().destination_addr(), Ipv4Addr::BROADCAST);
    // Our own request goes to port 67: not a reply for us.
    assert_eq!(client_payload(&packet), None);
    let builder = PacketBuilder::ipv4(SERVER.octets(), OFFERED.octets(), 64).udp(SERVER_PORT, CLIENT_PORT);
    let mut reply = Vec::new();
    builder.write(&mut reply, b"offer").unwrap();
    assert_eq!(client_payload(&reply), Some(&b"offer"[..]));
    assert_eq!(client_payload(&reply[..10]), None);
    assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 240, 0)), Some(20));
    assert_eq!(prefix_of(Ipv4Addr::UNSPECIFIED), Some(0));
    assert_eq!(class_prefix(Ipv4Addr::new(10, 1, 2, 3)), 8);
}
