//! The machine's own addresses, for the line a teacher writes on the board.
//!
//! A server listening on `0.0.0.0` (every IPv4 interface) or `[::]` accepts connections on each
//! address the machine has, but `0.0.0.0` itself is not an address a student can connect to.
//! std cannot list a machine's interfaces, so this reads the kernel's own tables (Linux's
//! `/proc/net/fib_trie` and `/proc/net/if_inet6`); elsewhere it asks which address a packet to
//! the outside would leave from, which names at least the main one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// True when `address` listens on every interface: the banner must then name real addresses.
pub fn is_wildcard(address: &SocketAddr) -> bool {
    address.ip().is_unspecified()
}

/// The addresses students on the same network can reach this machine at: not loopback, not
/// link-local IPv6 (which would need `%eth0` appended), IPv4 first. `v6` also asks for IPv6.
pub fn reachable(v6: bool) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = std::fs::read_to_string("/proc/net/fib_trie")
        .map(|table| local_ipv4(&table))
        .unwrap_or_default()
        .into_iter()
        .map(IpAddr::V4)
        .collect();
    if v6 && let Ok(table) = std::fs::read_to_string("/proc/net/if_inet6") {
        found.extend(global_ipv6(&table).into_iter().map(IpAddr::V6));
    }
    if found.is_empty()
        && let Some(ip) = outgoing_address()
    {
        found.push(ip);
    }
    found
}

/// In `/proc/net/fib_trie`, each of the machine's own IPv4 addresses is a `|-- a.b.c.d` line
/// followed by `/32 host LOCAL`. (`/8 host LOCAL` is the whole loopback network, not one
/// address.)
fn local_ipv4(table: &str) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in table.lines() {
        let line = line.trim();
        if let Some(address) = line.strip_prefix("|-- ") {
            last = address.parse().ok();
        } else if line == "/32 host LOCAL"
            && let Some(ip) = last.take()
            && !ip.is_loopback()
            && !found.contains(&ip)
        {
            found.push(ip);
        }
    }
    found
}

/// `/proc/net/if_inet6` has one line per address: 32 hex digits, then the interface index,
/// prefix length, scope and flags. Scope `00` is global.
fn global_ipv6(table: &str) -> Vec<Ipv6Addr> {
    let mut found = Vec::new();
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(hex), Some(&"00")) = (fields.first(), fields.get(3)) else {
            continue;
        };
        if let Ok(bits) = u128::from_str_radix(hex, 16)
            && hex.len() == 32
        {
            let ip = Ipv6Addr::from(bits);
            if !ip.is_loopback() && !found.contains(&ip) {
                found.push(ip);
            }
        }
    }
    found
}

/// The address a datagram to a documentation address would be sent from. `connect` on a UDP
/// socket only chooses a route; nothing is sent.
fn outgoing_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// The hosts a client can write to reach `address`: the address itself, or for a wildcard, the
/// machine's reachable addresses (none found: an empty list, and the caller says how to look).
pub fn hosts_for(address: &SocketAddr) -> Vec<IpAddr> {
    if is_wildcard(address) {
        reachable(address.is_ipv6())
    } else {
        vec![address.ip()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_local_ipv4_from_fib_trie() {
        let table = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                     \x20    +-- 127.0.0.0/8 2 0 2\n           |-- 127.0.0.0\n              /8 host LOCAL\n\
                     \x20          |-- 127.0.0.1\n              /32 host LOCAL\n\
                     \x20          |-- 192.0.2.2\n              /32 host LOCAL\n\
                     \x20       |-- 192.0.2.255\n           /32 link BROADCAST\n\
                     Local:\n           |-- 192.0.2.2\n              /32 host LOCAL\n";
        assert_eq!(local_ipv4(table), vec![Ipv4Addr::new(192, 0, 2, 2)]);
    }

    #[test]
    fn reads_global_ipv6_only() {
        let table = "00000000000000000000000000000001 01 80 10 80       lo\n\
                     fd000000000000000000000000000002 04 40 00 82     eth0\n\
                     fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n";
        assert_eq!(
            global_ipv6(table),
            vec!["fd00::2".parse::<Ipv6Addr>().expect("literal")]
        );
    }
}
