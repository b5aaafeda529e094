//! The TLS that lets the proxy read (and rewrite) requests to a secret's hosts, and only
//! theirs. At start it makes a certificate authority of its own, signs one certificate per
//! bound host with it (constrained to those names and addresses), and drops its key: it
//! is never written anywhere, and no certificate for another host can ever be made. The
//! sandbox trusts that authority next to the system's roots ([`Authority::bundle`]).
//! Upstream, the proxy verifies the real host's certificate against the system's roots, or
//! the server's `SSL_CERT_FILE`/`SSL_CERT_DIR` as OpenSSL and curl honour them.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::rules::Host;

/// The only application protocol offered either way: requests are rewritten as HTTP/1.1.
const ALPN: &[u8] = b"http/1.1";

/// The authority's certificate, a TLS server configuration per bound host, and the client
/// configuration that verifies real hosts.
pub struct Authority {
    ca_pem: String,
    /// The system's roots and `ca_pem`, as the sandbox gets them.
    bundle: String,
    servers: HashMap<String, Arc<ServerConfig>>,
    upstream: Arc<ClientConfig>,
}

impl Authority {
    /// Certificates for `hosts`, and the roots real hosts are verified against. Refused when
    /// there are no roots to verify with.
    pub fn new(hosts: &[Host]) -> Result<Self, String> {
        let (ca_cert, issuer) = authority(hosts).map_err(failed)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut servers = HashMap::new();
        for host in hosts {
            let (cert, key) = leaf(host, &issuer).map_err(failed)?;
            let chain = vec![cert, ca_cert.der().clone()];
            let mut config = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
                .map_err(|e| format!("could not make the egress TLS server: {e}"))?;
            config.alpn_protocols = vec![ALPN.to_vec()];
            servers.insert(host.to_string(), Arc::new(config));
        }
        // The issuer (and with it the authority's key) ends here.
        drop(issuer);
        let (roots, roots_pem) = system_roots()?;
        let mut upstream = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("could not make the egress TLS client: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        upstream.alpn_protocols = vec![ALPN.to_vec()];
        let ca_pem = ca_cert.pem();
        Ok(Self {
            bundle: format!("{roots_pem}{ca_pem}"),
            ca_pem,
            servers,
            upstream: Arc::new(upstream),
        })
    }

    /// What the sandbox trusts: the system's roots and this authority.
    pub fn bundle(&self) -> &str {
        &self.bundle
    }

    /// The authority's certificate alone.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The TLS server configuration that poses as `host` to the program.
    pub(super) fn server(&self, host: &Host) -> Option<Arc<ServerConfig>> {
        self.servers.get(&host.to_string()).cloned()
    }

    /// The TLS client configuration that verifies real hosts.
    pub(super) fn upstream(&self) -> Arc<ClientConfig> {
        self.upstream.clone()
    }
}

fn failed(error: rcgen::Error) -> String {
    format!("could not make the egress certificates: {error}")
}

/// The authority: its certificate (name-constrained to `hosts` when they are all names) and
/// the issuer that holds its key.
fn authority(
    hosts: &[Host],
) -> Result<(rcgen::Certificate, Issuer<'static, KeyPair>), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = named("mcp-python-executor egress (secrets)");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // Names and addresses both constrained: a kind with none bound permits only a name or an
    // address that no host has, so the authority could vouch for nothing else.
    let mut names = Vec::new();
    let mut addresses = Vec::new();
    for host in hosts {
        match host {
            Host::Name(name) => names.push(GeneralSubtree::DnsName(name.clone())),
            Host::Ip(ip) => addresses.push(GeneralSubtree::IpAddress(
                CidrSubnet::from_addr_prefix(*ip, if ip.is_ipv4() { 32 } else { 128 }),
            )),
        }
    }
    if names.is_empty() {
        names.push(GeneralSubtree::DnsName("pyexec.invalid".to_string()));
    }
    if addresses.is_empty() {
        addresses.push(GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix(
            [0; 4], 32,
        )));
    }
    ca.name_constraints = Some(NameConstraints {
        permitted_subtrees: names.into_iter().chain(addresses).collect(),
        excluded_subtrees: Vec::new(),
    });
    let cert = ca.self_signed(&key)?;
    Ok((cert, Issuer::new(ca, key)))
}

/// `host`'s certificate, signed by `issuer`, and its key.
fn leaf(
    host: &Host,
    issuer: &Issuer<'static, KeyPair>,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::default();
    // The name is in the SAN alone: a common name that looks like a host name is checked
    // against the name constraints too, and an address is no name.
    leaf.distinguished_name = named("mcp-python-executor egress");
    leaf.subject_alt_names = vec![match host {
        Host::Name(name) => SanType::DnsName(name.clone().try_into()?),
        Host::Ip(ip) => SanType::IpAddress(*ip),
    }];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf.signed_by(&key, issuer)?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), private))
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// The roots real hosts are verified against (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else the
/// system's store), and the same as PEM for the sandbox's bundle.
fn system_roots() -> Result<(RootCertStore, String), String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let mut pem = String::new();
    for cert in found.certs {
        if roots.add(cert.clone()).is_ok() {
            pem.push_str(&to_pem(&cert));
        }
    }
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "--secret needs root certificates to verify its hosts, and none were found{why}\n\
             hint: install ca-certificates, or point SSL_CERT_FILE at a PEM bundle"
        ));
    }
    Ok((roots, pem))
}

fn to_pem(cert: &CertificateDer<'_>) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bound_host_gets_a_certificate_and_the_bundle_holds_the_authority() {
        let hosts = [
            Host::parse("api.example").unwrap(),
            Host::parse("10.251.0.2").unwrap(),
        ];
        let authority = Authority::new(&hosts).unwrap();
        assert!(authority.server(&hosts[0]).is_some());
        assert!(authority.server(&hosts[1]).is_some());
        assert!(
            authority
                .server(&Host::parse("other.example").unwrap())
                .is_none()
        );
        let bundle = authority.bundle();
        assert!(bundle.ends_with(authority.ca_pem()));
        assert!(
            bundle.matches("BEGIN CERTIFICATE").count() > 1,
            "the system's roots too"
        );
        assert!(!bundle.contains("PRIVATE KEY"));
    }
}
