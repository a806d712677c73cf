//! A throwaway PKI for the TLS tests, made with rcgen and written to a
//! test directory as PEM: a CA, server certificates (ECDSA P-256 or RSA
//! 2048) for given names, client certificates with a CN, DNS and URI
//! names, and CRLs revoking some of them.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::TempDir;

/// Which kind of key a certificate has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Ecdsa,
    Rsa,
}

/// A CA whose files live in a test directory.
pub struct Ca {
    pub dir: TempDir,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Its certificate, PEM, in `dir/<name>-ca.pem`.
    pub cert: PathBuf,
    name: String,
    /// Serial numbers handed out so far.
    serial: u64,
}

/// A certificate and key written to disk.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: u64,
    /// The DER of the certificate.
    pub der: Vec<u8>,
}

impl Ca {
    /// A new CA called `name` (also its files' prefix) in its own directory.
    pub fn new(name: &str) -> Ca {
        Ca::in_dir(TempDir::new(name), name)
    }

    /// A CA whose files go to `dir`.
    pub fn in_dir(dir: TempDir, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let cert = dir.path(&format!("{name}-ca.pem"));
        std::fs::write(&cert, issuer.pem()).unwrap();
        Ca {
            dir,
            issuer,
            cert,
            name: name.to_string(),
            serial: 1,
        }
    }

    /// The CA's path as an argument.
    pub fn cert_arg(&self) -> String {
        self.cert.to_str().unwrap().to_string()
    }

    fn key_pair(key: Key) -> KeyPair {
        match key {
            Key::Ecdsa => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            Key::Rsa => KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap(),
        }
    }

    /// Signs `params` with a new key of kind `key`; writes `file.pem` and
    /// `file.key`.
    pub fn sign(&mut self, file: &str, mut params: CertificateParams, key: Key) -> Issued {
        self.serial += 1;
        params.serial_number = Some(SerialNumber::from(self.serial));
        let pair = Ca::key_pair(key);
        let cert = params.signed_by(&pair, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            self.dir.path(&format!("{file}.pem")),
            self.dir.path(&format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, pair.serialize_pem()).unwrap();
        Issued {
            cert: cert_path,
            key: key_path,
            serial: self.serial,
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for `names` (the first also its CN).
    pub fn server(&mut self, file: &str, names: &[&str], key: Key) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        self.sign(file, params, key)
    }

    /// A server certificate valid from now for `days` only.
    pub fn server_expiring(&mut self, file: &str, names: &[&str], days: i64) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(days);
        self.sign(file, params, Key::Ecdsa)
    }

    /// A client certificate with CN `cn`, SAN DNS `dns` and SAN URI `uris`.
    pub fn client(&mut self, file: &str, cn: &str, dns: &[&str], uris: &[&str]) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        for name in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*name).try_into().unwrap()));
        }
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(file, params, Key::Ecdsa)
    }

    /// A CRL revoking `serials`, written to `file.crl.pem`.
    pub fn crl(&self, file: &str, serials: &[u64]) -> PathBuf {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: now - Duration::minutes(5),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).unwrap();
        let path = self.dir.path(&format!("{file}.crl.pem"));
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }

    /// The CA's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
