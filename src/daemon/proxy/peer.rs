//! Who is at the other end of a proxy connection: the peer's uid from
//! SO_PEERCRED on a Unix socket, and on loopback TCP, which has no peer
//! credentials, from the kernel's socket table, asked over sock_diag
//! netlink for the one socket of the connection.

use std::net::SocketAddr;

/// The uid owning the TCP socket whose address is `peer` and which is
/// connected to `local`, or why it could not be found.
///
/// Both ends are on this machine (the proxy binds loopback only), so the
/// client's socket is in this network namespace's table, with local address
/// `peer` and remote address `local`. The kernel is asked for exactly that
/// socket (`SOCK_DIAG_BY_FAMILY` without a dump: a hash lookup, whatever
/// the number of sockets on the machine; reading all of `/proc/net/tcp`
/// took 6 ms with 2,000 sockets, per connection).
///
/// Only a socket some process still holds has an owner: once the client has
/// closed it, it has no inode and, as a time-wait socket, reads as uid 0,
/// which for a daemon running as root would pass for its own user. Such a
/// connection is refused (its client could not read the answer).
#[cfg(target_os = "linux")]
pub(super) fn tcp_peer_uid(peer: SocketAddr, local: SocketAddr) -> Result<u32, String> {
    let (peer, local) = (canon(peer), canon(local));
    match diag::lookup(peer, local)? {
        Some(Owner { uid, held: true }) => Ok(uid),
        Some(Owner { held: false, .. }) => Err(format!(
            "the client's socket {peer} -> {local} is closed (no process holds it)"
        )),
        None => Err(format!(
            "no socket {peer} -> {local} in the kernel's TCP table"
        )),
    }
}

/// Who owns one socket of the table.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    uid: u32,
    /// Whether a process holds the socket (it has an inode).
    held: bool,
}

#[cfg(target_os = "linux")]
mod diag {
    //! One `SOCK_DIAG_BY_FAMILY` request for one TCP socket.

    use std::net::SocketAddr;

    use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_sock_diag::SockDiagMessage;
    use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
    use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
    use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink};

    use super::Owner;

    /// `TCP_LISTEN` in the kernel's numbering.
    const TCP_LISTEN: u8 = 10;

    /// The owner of the TCP socket at `local` connected to `remote`, `None`
    /// when there is no such socket.
    pub(super) fn lookup(local: SocketAddr, remote: SocketAddr) -> Result<Option<Owner>, String> {
        let fail = |what: &str, e: rustix::io::Errno| {
            format!("cannot ask the kernel who owns the connection ({what}: {e})")
        };
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            Some(netlink::SOCK_DIAG),
        )
        .map_err(|e| fail("socket", e))?;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = 1;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family: if local.is_ipv4() { AF_INET } else { AF_INET6 },
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id: SocketId {
                    source_port: local.port(),
                    destination_port: remote.port(),
                    source_address: local.ip(),
                    destination_address: remote.ip(),
                    interface_id: 0,
                    // INET_DIAG_NOCOOKIE: any socket with these addresses
                    cookie: [0xff; 8],
                },
            })
            .into(),
        );
        request.finalize();
        let mut out = vec![0u8; request.buffer_len()];
        request.serialize(&mut out);
        rustix::net::send(&fd, &out, SendFlags::empty()).map_err(|e| fail("send", e))?;
        let mut buf = [0u8; 4096];
        // the kernel answers within the send, so this never waits (and the
        // caller, on the runtime's thread, is never held up)
        let (n, _) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::DONTWAIT)
            .map_err(|e| fail("recv", e))?;
        let reply = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[..n])
            .map_err(|e| format!("the kernel's sock_diag answer could not be read: {e}"))?;
        match reply.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                let h = &r.header;
                let id = &h.socket_id;
                // exactly the socket asked for, never a listener found instead
                let same = id.source_port == local.port()
                    && id.destination_port == remote.port()
                    && id.source_address == local.ip()
                    && id.destination_address == remote.ip();
                if !same || h.state == TCP_LISTEN {
                    return Ok(None);
                }
                Ok(Some(Owner {
                    uid: h.uid,
                    held: h.inode != 0,
                }))
            }
            NetlinkPayload::Error(e) => match e.code.map(|c| -c.get()) {
                // no socket with these addresses
                Some(code) if code == rustix::io::Errno::NOENT.raw_os_error() => Ok(None),
                Some(code) => Err(format!(
                    "the kernel refused the sock_diag request: {}",
                    std::io::Error::from_raw_os_error(code)
                )),
                None => {
                    Err("the kernel acknowledged the sock_diag request without an answer".into())
                }
            },
            other => Err(format!("unexpected sock_diag answer: {other:?}")),
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn tcp_peer_uid(_peer: SocketAddr, _local: SocketAddr) -> Result<u32, String> {
    Err(
        "the owner of a TCP connection can only be found on Linux; listen on \"unix:PATH\" instead"
            .into(),
    )
}

/// An IPv4-mapped IPv6 address as its IPv4 form, so both tables compare alike.
#[cfg(target_os = "linux")]
fn canon(s: SocketAddr) -> SocketAddr {
    match s {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => s,
        },
        v4 => v4,
    }
}

/// The uid of a Unix socket peer.
#[cfg(unix)]
pub(super) fn unix_peer_uid(stream: &tokio::net::UnixStream) -> Result<u32, String> {
    stream
        .peer_cred()
        .map(|c| c.uid())
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn closed_within_20s(peer: SocketAddr, local: SocketAddr) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match tcp_peer_uid(peer, local) {
                Err(e) => return e,
                Ok(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Ok(uid) => panic!("a closed socket still owned by uid {uid}"),
            }
        }
    }

    #[test]
    fn the_owner_of_a_loopback_connection_is_found_on_v4_and_v6() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(l) = std::net::TcpListener::bind(addr) else {
                assert!(addr.starts_with('['), "{addr} cannot be bound");
                continue; // no IPv6 loopback here
            };
            let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, peer) = l.accept().unwrap();
            assert_eq!(peer, c.local_addr().unwrap());
            let local = s.local_addr().unwrap();
            assert_eq!(
                tcp_peer_uid(peer, local).unwrap(),
                crate::paths::current_uid()
            );
            // a connection that does not exist has no owner
            let mut gone = peer;
            gone.set_port(1);
            let e = tcp_peer_uid(gone, local).unwrap_err();
            assert!(e.contains("no socket"), "{e}");
            // nor does one the kernel would hand to the listener
            let e = tcp_peer_uid(l.local_addr().unwrap(), gone).unwrap_err();
            assert!(e.contains("no socket"), "{e}");
            // once the client has closed its end, nobody owns it
            drop(c);
            let e = closed_within_20s(peer, local);
            assert!(e.contains("closed"), "{e}");
        }
    }
}
