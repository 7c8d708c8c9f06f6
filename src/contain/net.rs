//! The jump host's address and the address ranges isolation blocks.
//!
//! Isolation blocks every remote address except this controller's, so the operator
//! keeps access to the host (to collect more, to lift the isolation). Windows Firewall
//! evaluates block rules before allow rules, so the jump host must be *outside* the
//! blocked ranges rather than allowed by a second rule: the ranges are the complement
//! of its address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The local address this controller uses toward `host:port`: a UDP socket
/// "connected" to it picks the route and source address without sending a packet.
/// A host name is resolved first (the first address is used, as the transports do).
pub async fn local_address_toward(host: &str, port: u16) -> Result<IpAddr, String> {
    let target: SocketAddr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| {
                format!(
                    "cannot resolve {}: {e}",
                    crate::sanitize::display(host, 120)
                )
            })?
            .next()
            .ok_or_else(|| format!("{} has no address", crate::sanitize::display(host, 120)))?,
    };
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    sock.connect(target)
        .await
        .map_err(|e| format!("no route to {target}: {e}"))?;
    sock.local_addr()
        .map(|a| a.ip())
        .map_err(|e| format!("cannot read the local address toward {target}: {e}"))
}

/// Every IPv4 address but `keep`, as Windows Firewall's `remoteip=` list of
/// ranges (`a-b,c-d`; a range of one address is written as the address).
pub fn complement_v4(keep: Ipv4Addr) -> String {
    let k = u32::from(keep);
    let range = |a: u32, b: u32| {
        if a == b {
            Ipv4Addr::from(a).to_string()
        } else {
            format!("{}-{}", Ipv4Addr::from(a), Ipv4Addr::from(b))
        }
    };
    let mut parts = Vec::new();
    if k > 0 {
        parts.push(range(0, k - 1));
    }
    if k < u32::MAX {
        parts.push(range(k + 1, u32::MAX));
    }
    parts.join(",")
}

/// The ranges to block for a jump host at `jump`; IPv6 is refused (see docs/contain.md).
pub fn block_ranges(jump: IpAddr) -> Result<String, String> {
    match jump {
        IpAddr::V4(v4) => Ok(complement_v4(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Ok(complement_v4(v4)),
            None => Err(format!(
                "the jump host's address {v6} is IPv6; isolation computes IPv4 ranges only \
                 (give an IPv4 one with --jump-address)"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complements() {
        assert_eq!(
            complement_v4(Ipv4Addr::new(10, 0, 0, 5)),
            "0.0.0.0-10.0.0.4,10.0.0.6-255.255.255.255"
        );
        assert_eq!(
            complement_v4(Ipv4Addr::new(0, 0, 0, 1)),
            "0.0.0.0,0.0.0.2-255.255.255.255"
        );
        assert_eq!(
            complement_v4(Ipv4Addr::new(0, 0, 0, 0)),
            "0.0.0.1-255.255.255.255"
        );
        assert_eq!(
            complement_v4(Ipv4Addr::BROADCAST),
            "0.0.0.0-255.255.255.254"
        );
        assert!(block_ranges("::1".parse().unwrap()).is_err());
        assert_eq!(
            block_ranges("::ffff:10.0.0.5".parse().unwrap()).unwrap(),
            "0.0.0.0-10.0.0.4,10.0.0.6-255.255.255.255"
        );
    }

    #[tokio::test]
    async fn local_address_of_a_loopback_host() {
        let a = local_address_toward("127.0.120.9", 5985).await.unwrap();
        assert!(a.is_loopback(), "{a}");
    }
}
