//! Where the server's own outbound requests may go (design brief, "no open proxying"):
//! URL previews and push gateways never reach loopback, private, link-local or other
//! reserved addresses unless the config allows a range. The host checks every address a
//! name resolves to, and IP literals, with [`address_allowed`].

use std::net::IpAddr;

use ipnet::IpNet;

/// Ranges refused and allowed on top of the built-in refusals ([`ALWAYS_DENIED`]).
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    /// Ranges never reached, besides the built-in ones.
    pub deny: Vec<IpNet>,
    /// Ranges reached even if denied (say, an intranet wiki, or a push gateway on the
    /// same machine); checked first.
    pub allow: Vec<IpNet>,
}

/// Never reached unless allowed explicitly: loopback, private (RFC 1918, ULA),
/// link-local, carrier-grade NAT, multicast, unspecified, broadcast, documentation,
/// benchmarking, reserved, NAT64 and 6to4 relays.
const ALWAYS_DENIED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    // IPv4-compatible and IPv4-translated (SIIT) forms, and local-use NAT64.
    "::/96",
    "::ffff:0:0:0/96",
    "64:ff9b:1::/48",
    // Teredo, benchmarking, ORCHID and other IETF protocol assignments.
    "2001::/23",
    "64:ff9b::/96",
    "100::/64",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// Whether an outbound request may connect to `ip` (IPv4-mapped IPv6 addresses count as
/// the IPv4 address they carry).
pub fn address_allowed(ip: IpAddr, policy: &AddressPolicy) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if policy.allow.iter().any(|n| n.contains(&ip)) {
        return true;
    }
    static BUILT_IN: std::sync::LazyLock<Vec<IpNet>> = std::sync::LazyLock::new(|| {
        ALWAYS_DENIED
            .iter()
            .filter_map(|n| n.parse::<IpNet>().ok())
            .collect()
    });
    let built_in = BUILT_IN.iter().any(|n| n.contains(&ip));
    !(built_in || policy.deny.iter().any(|n| n.contains(&ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_refused() {
        let c = AddressPolicy::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "::7f00:1",
            "::ffff:0:a00:1",
            "64:ff9b:1::a00:1",
            "2001::1",
        ] {
            assert!(!address_allowed(ip.parse().expect("ip"), &c), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "::ffff:93.184.216.34",
        ] {
            assert!(address_allowed(ip.parse().expect("ip"), &c), "{ip}");
        }
        let c = AddressPolicy {
            deny: vec!["93.184.0.0/16".parse().expect("net")],
            allow: vec!["127.0.0.1/32".parse().expect("net")],
        };
        assert!(address_allowed("127.0.0.1".parse().expect("ip"), &c));
        assert!(!address_allowed("127.0.0.2".parse().expect("ip"), &c));
        assert!(!address_allowed("93.184.216.34".parse().expect("ip"), &c));
    }
}
