//! Who is at the other end of a proxy connection: the peer's uid from
//! SO_PEERCRED on a Unix socket, and from the kernel's socket table
//! (`/proc/net/tcp`, `/proc/net/tcp6`) on loopback TCP, which has no peer
//! credentials.

use std::net::SocketAddr;

/// The uid owning the TCP socket whose address is `peer` and which is
/// connected to `local`, for a connection accepted at `accepted`; or why it
/// could not be found.
///
/// Both ends are on this machine (the proxy binds loopback only), so the
/// client's socket is in this network namespace's table, with
/// `local_address == peer` and `remote_address == local`.
///
/// Only a socket some process still holds has an owner: once the client has
/// closed it, its entry has no inode and, as a time-wait entry, reads as
/// uid 0, which for a daemon running as root would pass for its own user.
/// Such a connection is refused (its client could not read the answer).
///
/// Reading the table costs time in proportion to the sockets on the
/// machine, so one read serves every lookup it can: lookups take turns (at
/// most one read at a time, so a flood of connections costs at most one
/// core), and a table read after a connection was accepted already holds
/// it.
#[cfg(target_os = "linux")]
pub(super) fn tcp_peer_uid(
    peer: SocketAddr,
    local: SocketAddr,
    accepted: std::time::Instant,
) -> Result<u32, String> {
    use std::sync::Mutex;
    static LAST: Mutex<Option<Snapshot>> = Mutex::new(None);
    let key = (canon(peer), canon(local));
    let v4 = peer.is_ipv4();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = last.as_ref().filter(|s| s.v4 == v4 && s.taken >= accepted) {
        return owner(s.owners.get(&key).copied(), peer, local);
    }
    let snapshot = Snapshot::read(v4)?;
    let found = snapshot.owners.get(&key).copied();
    *last = Some(snapshot);
    owner(found, peer, local)
}

/// The uid of a found entry, if a process holds its socket.
#[cfg(target_os = "linux")]
fn owner(found: Option<Owner>, peer: SocketAddr, local: SocketAddr) -> Result<u32, String> {
    match found {
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
#[derive(Clone, Copy)]
struct Owner {
    uid: u32,
    /// Whether a process holds the socket (its entry has an inode).
    held: bool,
}

/// The owners of this machine's TCP sockets of one family, by (local,
/// remote) address.
#[cfg(target_os = "linux")]
struct Snapshot {
    taken: std::time::Instant,
    v4: bool,
    owners: std::collections::HashMap<(SocketAddr, SocketAddr), Owner>,
}

#[cfg(target_os = "linux")]
impl Snapshot {
    /// Reads the IPv4 (`/proc/net/tcp`) or the IPv6 (`/proc/net/tcp6`) table.
    fn read(v4: bool) -> Result<Snapshot, String> {
        let taken = std::time::Instant::now();
        let table = if v4 {
            procfs::net::tcp()
        } else {
            procfs::net::tcp6()
        }
        .map_err(|e| format!("cannot read the kernel's TCP table: {e}"))?;
        let owners = table
            .into_iter()
            .map(|e| {
                let owner = Owner {
                    uid: e.uid,
                    held: e.inode != 0,
                };
                ((canon(e.local_address), canon(e.remote_address)), owner)
            })
            .collect();
        Ok(Snapshot { taken, v4, owners })
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn tcp_peer_uid(
    _peer: SocketAddr,
    _local: SocketAddr,
    _accepted: std::time::Instant,
) -> Result<u32, String> {
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

    #[test]
    fn the_owner_of_a_loopback_connection_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        let at = std::time::Instant::now();
        let uid = tcp_peer_uid(peer, s.local_addr().unwrap(), at).unwrap();
        assert_eq!(uid, crate::paths::current_uid());
        // a connection that does not exist is not found
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(tcp_peer_uid(gone, s.local_addr().unwrap(), at).is_err());
        // once the client has closed its end, nobody owns it
        let c3 = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s3, peer3) = l.accept().unwrap();
        drop(c3);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let e = loop {
            match tcp_peer_uid(peer3, s3.local_addr().unwrap(), std::time::Instant::now()) {
                Err(e) => break e,
                Ok(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Ok(uid) => panic!("a closed socket still owned by uid {uid}"),
            }
        };
        assert!(e.contains("closed"), "{e}");
        // a connection made after the last table read is found by a new read
        let c2 = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s2, peer2) = l.accept().unwrap();
        let at2 = std::time::Instant::now();
        assert_eq!(peer2, c2.local_addr().unwrap());
        assert_eq!(
            tcp_peer_uid(peer2, s2.local_addr().unwrap(), at2).unwrap(),
            crate::paths::current_uid()
        );
    }
}
