//! The configuration and the plain-RAM map normalisation.

use super::*;

#[test]
fn ram_maps_are_normalised() {
    let (m, p) = normalize_ram_map(
        &[
            (0x1800, 0x5800),
            (0, 0x2000),
            (0x9000, 0x9000),
            (0x8000, 0x7000),
        ],
        0x10000,
    );
    assert_eq!(m, vec![0..0x5000]);
    assert_eq!(p.len(), 1);
    assert!(p[0].contains("reversed"));
    let (m, p) = normalize_ram_map(&[(0, 0x20000)], 0x10000);
    assert_eq!(m, vec![0..0x10000]);
    assert!(p[0].contains("beyond ram_size"));
    let many: Vec<(u64, u64)> = (0..70u64)
        .map(|i| (i * 0x2000, i * 0x2000 + 0x1000))
        .collect();
    let (m, p) = normalize_ram_map(&many, 1 << 30);
    assert_eq!(m.len(), MAX_RAM_RANGES);
    assert!(p[0].contains("only the first"));
    let (m, _) = normalize_ram_map(&[(u64::MAX - 5, u64::MAX)], u64::MAX);
    assert!(m.is_empty());
}

#[test]
fn config_validation() {
    assert_eq!(config().validate(), Ok(()));
    let bad = |f: fn(&mut Config)| {
        let mut c = config();
        f(&mut c);
        c.validate().unwrap_err()
    };
    assert!(bad(|c| c.ips = 0).contains("ips"));
    assert!(bad(|c| c.ram_size = 4097).contains("ram_size"));
    assert!(bad(|c| c.ram_map.clear()).contains("no plain-RAM range"));
    assert!(bad(|c| c.stub_base = 0x7fff_0000_0000).contains("stub_base=0x7fff00000000"));
}
