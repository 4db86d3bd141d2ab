//! The Redfish client's tolerant resource access (`redfish::model`) on arbitrary JSON: whatever
//! a BMC sends, every accessor answers without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redfish::model::{Res, normalize_mac, odata_id};

fuzz_target!(|data: &[u8]| {
    // The first line is a key / JSON pointer to ask for; the rest the resource.
    let (key, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&data[..i]).into_owned(), &data[i + 1..]),
        None => (String::new(), data),
    };
    let _ = normalize_mac(&key);
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let _ = odata_id(&v);
    let r = Res(v);
    let _ = r.str(&key);
    let _ = r.at(&key);
    let _ = r.link(&key);
    let _ = r.members();
    let _ = r.mac();
    let _ = r.reset_types();
    let _ = r.reset_target();
    for k in ["Id", "Name", "SerialNumber", "UUID", "Manufacturer", "Model", "PowerState"] {
        let _ = r.str(k);
        let _ = r.link(k);
    }
    for p in ["/Status/State", "/Status/Health", "/Oem", "/Links/Chassis/0"] {
        let _ = r.at(p);
    }
});
