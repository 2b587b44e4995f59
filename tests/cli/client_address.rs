//! The container sees who really connected to a published port: a client
//! in another network namespace is seen with its own address, one on the
//! host's loopback with the gateway's (`harness::net::check_the_container_sees_its_clients`).

use super::harness::net::check_the_container_sees_its_clients;
use super::local_berth;

#[test]
fn a_published_port_shows_the_container_its_real_client() {
    let berth = local_berth();
    check_the_container_sees_its_clients(&berth);
    berth.stop_and_check_clean();
}
