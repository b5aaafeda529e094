//! Which addresses a name allowed by the egress allowlist may still not lead to: the host
//! itself (loopback, unspecified), the networks around it (private, shared, link-local: the
//! cloud metadata endpoint among them), multicast and broadcast, and the same addresses
//! dressed as IPv6 (mapped, NAT64, 6to4). Pure; the proxy asks it for every address a name
//! resolves to, before it connects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is out of reach, or `None` when it is a public address.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => forbidden_v4(v4),
            None => forbidden_v6(v6),
        },
    }
}

/// Whether `ip` is on a private network: 10/8, 172.16/12, 192.168/16, shared 100.64/10, or
/// unique local fc00::/7 (and their IPv6 dressings). `--egress-allow-private` lets names
/// lead there; loopback, link-local (metadata) and the rest stay refused.
pub fn private_network(ip: IpAddr) -> bool {
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => embedded_v4(v6),
    };
    match (v4, ip) {
        (Some(v4), _) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || (a == 100 && (64..128).contains(&b))
        }
        (None, IpAddr::V6(v6)) => v6.segments()[0] & 0xfe00 == 0xfc00,
        _ => false,
    }
}

/// Whether `ip` (or the IPv4 address it dresses) is an address of one of this machine's
/// interfaces, as the kernel lists them now.
pub fn this_machine(ip: IpAddr) -> bool {
    let wanted = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a list this function frees below, once.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return false;
    }
    let mut found = false;
    let mut cursor = list;
    while !cursor.is_null() && !found {
        // SAFETY: `cursor` is a node of the list getifaddrs made, not yet freed.
        let entry = unsafe { &*cursor };
        found = address_of(entry.ifa_addr) == Some(wanted);
        cursor = entry.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

/// The IP address in a `sockaddr` of getifaddrs, when it is one.
fn address_of(addr: *const libc::sockaddr) -> Option<IpAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: a non-null ifa_addr points at a sockaddr whose family says its real type.
    unsafe {
        match i32::from((*addr).sa_family) {
            libc::AF_INET => {
                let v4 = &*(addr as *const libc::sockaddr_in);
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let v6 = &*(addr as *const libc::sockaddr_in6);
                Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("an unspecified address (\"this network\")")
    } else if ip.is_loopback() {
        Some("a loopback address (this machine)")
    } else if ip.is_private() {
        Some("a private address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if ip.is_link_local() {
        Some("a link-local address (cloud metadata lives there)")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("a multicast, broadcast or reserved address")
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        Some("an IETF protocol address")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some("an unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address (this machine)")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private (unique local) address")
    } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
        Some("a link-local address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

/// The IPv4 address an IPv6 one stands for, when it is only a dressing of one: mapped
/// (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if (s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified())
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        Some(tail)
    } else if s[0] == 0x2002 {
        Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> bool {
        forbidden(text.parse().unwrap()).is_some()
    }

    #[test]
    fn the_host_its_networks_and_the_metadata_endpoint_are_refused() {
        for address in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.251.0.2",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "169.254.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.170",
            "::",
            "::1",
            "fe80::1",
            "fec0::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
        ] {
            assert!(refused(address), "{address} must be refused");
        }
    }

    #[test]
    fn an_ipv4_address_dressed_as_ipv6_is_judged_as_itself() {
        for address in [
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2002:c0a8:101::1",
        ] {
            assert!(refused(address), "{address} must be refused");
        }
        for address in [
            "::ffff:93.184.216.34",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(!refused(address), "{address} is a public address");
        }
    }

    #[test]
    fn public_addresses_are_not_refused() {
        for address in [
            "93.184.216.34",
            "1.1.1.1",
            "172.32.0.1",
            "172.15.255.255",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "2606:4700::1111",
            "2001:4860:4860::8888",
        ] {
            assert!(!refused(address), "{address} is a public address");
        }
    }

    #[test]
    fn allowing_private_networks_never_allows_the_host_or_the_metadata_endpoint() {
        for address in [
            "10.251.0.2",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd12:3456::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(private_network(address.parse().unwrap()), "{address}");
        }
        for address in [
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fe80::1",
            "224.0.0.1",
            "255.255.255.255",
            "93.184.216.34",
        ] {
            assert!(!private_network(address.parse().unwrap()), "{address}");
        }
    }

    #[test]
    fn this_machines_own_addresses_are_known_and_others_are_not() {
        assert!(this_machine("127.0.0.1".parse().unwrap()));
        assert!(this_machine("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!this_machine("192.0.2.77".parse().unwrap()));
        assert!(!this_machine("2001:db8::77".parse().unwrap()));
    }
}
