//! The fuzz entry points (`rackboot::fuzzing`, feature `fuzzing`) on stable: seeds shaped like
//! real requests, and a few thousand mutations of each (bytes flipped, cut, spliced, random),
//! must all return without panicking. A cheap smoke of what `fuzz/` explores for much longer
//! (`cargo +nightly fuzz run <target>`); run with
//! `cargo nextest run -p appliance --features fuzzing --test fuzz_entry_points`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use rackboot::fuzzing;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutations(seeds: &[Vec<u8>], n: usize, f: impl Fn(&[u8])) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for s in seeds {
        f(s);
    }
    for _ in 0..n {
        let mut d = seeds[rng.below(seeds.len())].clone();
        match rng.below(5) {
            0 => {
                for _ in 0..=rng.below(8) {
                    if !d.is_empty() {
                        let i = rng.below(d.len());
                        d[i] = rng.next() as u8;
                    }
                }
            }
            1 => d.truncate(rng.below(d.len() + 1)),
            2 => {
                let other = &seeds[rng.below(seeds.len())];
                let (a, b) = (rng.below(d.len() + 1), rng.below(other.len() + 1));
                d.truncate(a);
                d.extend_from_slice(&other[b..]);
            }
            3 => {
                let i = rng.below(d.len() + 1);
                let junk: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                d.splice(i..i, junk);
            }
            _ => d = (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        }
        f(&d);
    }
}

fn seeds(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|s| s.as_bytes().to_vec()).collect()
}

fn tagged(list: &[(u8, &str)]) -> Vec<Vec<u8>> {
    list.iter()
        .map(|(t, s)| {
            let mut v = vec![*t];
            v.extend_from_slice(s.as_bytes());
            v
        })
        .collect()
}

#[test]
fn http_query_never_panics() {
    mutations(
        &seeds(&[
            "id=x1000c0s0b0n0&type=Node&state=Ready&enabled=true&nid=1&nid_start=1&nid_end=5&group=compute&stateonly=true",
            "mac=52:54:00:aa:bb:cc&name=x1000c0s0b0n0,x1000c0s1b0n0&nid=3",
            "partition=p1&role=Compute&flag=OK&arch=X86&class=River",
            "/hsm/v2/State/Components/x1000c0s0b0n0/Enabled",
            "id=!x1000c0&type=NodeBMC&nid=%ff%fe&enabled=maybe",
        ]),
        20_000,
        fuzzing::http_query,
    );
}

#[test]
fn api_json_never_panics() {
    mutations(
        &tagged(&[
            (
                0,
                r#"{"ID":"x1000c0s0b0n0","Type":"Node","State":"Ready","Flag":"OK","Enabled":true,"Role":"Compute","NID":1}"#,
            ),
            (
                1,
                r#"{"ID":"a4bf0138ee60","MACAddress":"A4:BF:01:38:EE:60","ComponentID":"x1000c0s0b0n0","IPAddresses":[{"IPAddress":"10.20.0.1"}]}"#,
            ),
            (
                2,
                r#"{"label":"compute","tags":["a"],"members":{"ids":["x1000c0s0b0n0"]}}"#,
            ),
            (
                3,
                r#"{"ID":"x1000c0s0b0","FQDN":"10.1.0.5","User":"root","MACAddr":"aa:bb:cc:dd:ee:ff","Systems":[{"Name":"1","EthernetInterfaces":[{"MACAddress":"a4:bf:01:00:00:01"}]}]}"#,
            ),
            (
                4,
                r#"{"macs":["a4:bf:01:38:ee:60"],"hosts":["x1000c0s0b0n0"],"nids":[1],"kernel":"http://s3/k","initrd":"http://s3/i","params":"console=ttyS0"}"#,
            ),
            (
                5,
                r###"{"cluster-name":"demo","meta-data":{"a":1},"file":{"content":"## template: jinja\n#cloud-config\nhostname: {{ hostname }}"}}"###,
            ),
            (
                6,
                r#"{"name":"compute","priority":2,"file":{"content":"I2Nsb3VkLWNvbmZpZwo=","encoding":"base64"}}"#,
            ),
            (
                7,
                r#"{"meta-data":{"rack":"x1000c0"},"file":{"content":"{% for i in range(99999) %}{{ i }}{% endfor %}"}}"#,
            ),
            (
                8,
                r#"{"ComponentIDs":["x1000c0s0b0n0"],"type":["Node"],"nid_start":1,"enabled":true}"#,
            ),
            (9, r#"{"id":"x1000c0s0b0n0"}"#),
        ]),
        20_000,
        fuzzing::api_json,
    );
}

#[test]
fn jwt_never_panics() {
    mutations(
        &tagged(&[
            (
                0,
                "Bearer eyJhbGciOiJFUzI1NiIsImtpZCI6ImsifQ.eyJpc3MiOiJyYWNrYm9vdCJ9.AAAA",
            ),
            (
                1,
                "eyJhbGciOiJub25lIn0.eyJpc3MiOiJyYWNrYm9vdCIsImF1ZCI6InJhY2tib290In0.",
            ),
            (
                2,
                r#"{"iss":"rackboot","aud":"rackboot","sub":"ops","nbf":1700000000,"exp":9999999999,"scope":"admin inventory:read"}"#,
            ),
            (
                2,
                r#"{"iss":"rackboot","aud":["rackboot","x"],"exp":1,"scope":["admin"],"scp":7}"#,
            ),
            (
                3,
                r#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k1","use":"sig"}]}"#,
            ),
        ]),
        5_000,
        fuzzing::jwt,
    );
}

#[test]
fn csr_never_panics() {
    // A real CSR, as PEM text (mode byte 1) and as DER (mode byte 0, armoured by the target).
    let key = rcgen::KeyPair::generate().unwrap();
    let req = rcgen::CertificateParams::new(vec!["x1000c0s0b0n0".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let pem = req.pem().unwrap();
    let mut der = vec![0u8];
    der.extend_from_slice(req.der());
    let mut inputs = tagged(&[
        (1, &pem),
        (
            1,
            "-----BEGIN CERTIFICATE REQUEST-----\n\n-----END CERTIFICATE REQUEST-----\n",
        ),
        (0, ""),
    ]);
    inputs.push(der);
    mutations(&inputs, 5_000, fuzzing::csr);
}
