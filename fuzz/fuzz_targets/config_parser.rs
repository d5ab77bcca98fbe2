//! Fuzzes the configuration parser: any text, TOML or not, gives a
//! configuration or a readable error, never a panic.
//!
//! No base path is given, so relative secret paths are refused without
//! touching the file system.

#![no_main]

use ce_auth::daemon::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, None) {
        Ok(config) => {
            // a loaded default profile always names a profile that exists
            if let Some(name) = &config.default_profile {
                assert!(config.profiles.contains_key(name));
            }
            // and every profile is filed under its own name
            for (key, profile) in &config.profiles {
                assert_eq!(key, &profile.name);
            }
        }
        Err(e) => assert!(!e.message.is_empty(), "an empty error message"),
    }
});
