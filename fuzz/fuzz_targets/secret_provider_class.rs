//! A SecretProviderClass's parameters (`objects` and the rest, as the CSI driver hands them to the provider and as
//! the sidecar reads them), its `secretObjects` and the pod's Secret references, from untrusted text. Beyond
//! "never panics": every object file the parser accepts is a path kubelet accepts, and no two objects write one file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wi_contract::{paths, secret_objects, spc};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = spc::parse(text) {
        let mut files = std::collections::BTreeSet::new();
        for object in &config.objects {
            paths::validate_path(&object.file_name).expect("an accepted object writes a valid path");
            assert!(
                files.insert(&object.file_name),
                "two objects write {:?}",
                object.file_name
            );
        }
    }
    let _ = spc::parse_objects(text);
    if let Ok(value) = wi_contract::yaml::from_str::<serde_json::Value>(text) {
        for object in secret_objects::parse(&value).into_iter().flatten() {
            assert!(
                secret_objects::is_dns_subdomain(&object.secret_name),
                "{:?}",
                object.secret_name
            );
        }
        let _ = secret_objects::consumed_secrets(&value);
    }
});
