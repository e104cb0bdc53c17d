//! Where a redirected connection was going: the `SO_ORIGINAL_DST` socket
//! option that iptables `REDIRECT` leaves on it.

use std::io;
use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

/// The original destination of `stream`. A connection that was not
/// redirected reports its own local address, or an error when connection
/// tracking knows nothing of it.
pub fn of(stream: &TcpStream) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let local = stream.local_addr()?;
    let addr = if local.is_ipv4() {
        sock.original_dst_v4()?
    } else {
        sock.original_dst_v6()?
    };
    addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "original destination is not an ip address",
        )
    })
}
