//! The manifests source's parser: a file's bytes, as `ManifestDir` reads
//! them (UTF-8 or rejected), through `parse_file_with` under the daemon's
//! default limits, with a lower node limit so one input stays fast (the
//! limits are what bound the cost; the fuzzer checks they do, at any value).
//!
//! Invariants: no panic; every kept Service and EndpointSlice satisfies the
//! model's invariants, and the desired state computed from them too
//! (incremental equals full recompute).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use proxy::{
    model::convert::Converted,
    source::manifests::{Limits, parse::parse_file_with},
};
use proxy_fuzz::Model;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits {
        max_nodes: 20_000,
        ..Limits::default()
    };
    let Ok(parsed) = parse_file_with(Path::new("fuzz.yaml"), text, &limits) else {
        return;
    };
    let mut model = Model::default();
    for service in parsed.services {
        model.service(Converted::Kept {
            object: service,
            warnings: Vec::new(),
        });
    }
    for slice in parsed.slices {
        model.slice(Converted::Kept {
            object: slice,
            warnings: Vec::new(),
        });
    }
    model.check();
});
