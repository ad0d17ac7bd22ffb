//! CTDB's key hash and what is derived from it (mirrors `common/ctdb_util.c:ctdb_hash`,
//! `common/ctdb_ltdb.c:ctdb_lmaster` and the db_id computation in
//! `server/ctdb_ltdb_server.c:ctdb_local_attach`).
//!
//! The hash is `tdb_jenkins_hash`: Bob Jenkins' lookup3 `hashlittle` with an initial value of
//! 0. It must match libtdb bit for bit, because smbd and tdbtool use it to find records in the
//! same volatile TDBs (`TDB_INCOMPATIBLE_HASH`) and every node uses it to agree on db ids and
//! lmasters. The bytes are read as little-endian words whatever the host, as `hashlittle` does.

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

fn le_word(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(word)
}

/// lookup3 `hashlittle(key, key.len(), initval)`.
pub fn hashlittle(key: &[u8], initval: u32) -> u32 {
    // The C code truncates the length to 32 bits the same way.
    let seed = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (seed, seed, seed);
    let mut rest = key;
    while rest.len() > 12 {
        a = a.wrapping_add(le_word(&rest[0..]));
        b = b.wrapping_add(le_word(&rest[4..]));
        c = c.wrapping_add(le_word(&rest[8..]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return c;
    }
    // The last 1..=12 bytes count as if zero-padded to a full block.
    let mut block = [0u8; 12];
    block[..rest.len()].copy_from_slice(rest);
    a = a.wrapping_add(le_word(&block[0..]));
    b = b.wrapping_add(le_word(&block[4..]));
    c = c.wrapping_add(le_word(&block[8..]));
    final_mix(&mut a, &mut b, &mut c);
    c
}

/// `ctdb_hash`: the hash of a record key (and of a database name, see [`db_id`]).
pub fn ctdb_hash(key: &[u8]) -> u32 {
    hashlittle(key, 0)
}

/// The id of the database called `name`: the hash of the name including its trailing NUL.
pub fn db_id(name: &str) -> u32 {
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(0);
    ctdb_hash(&bytes)
}

/// The location master of a key with hash `hash` under `vnn_map` (the vnn map's PNN list):
/// `map[hash % size]`. `None` for an empty map, where stock would divide by zero.
pub fn lmaster(hash: u32, vnn_map: &[u32]) -> Option<u32> {
    let size = u32::try_from(vnn_map.len()).ok()?;
    if size == 0 {
        return None;
    }
    vnn_map.get((hash % size) as usize).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digest Appendix C (test.tdb observed on stock 4.17.12).
    #[test]
    fn golden_db_ids() {
        let golden = [
            ("test.tdb", 0xc445_c6ab),
            ("locking.tdb", 0x7a19_d84d),
            ("brlock.tdb", 0x4e66_c2b2),
            ("g_lock.tdb", 0x4d2a_432b),
            ("secrets.tdb", 0x7132_c184),
            ("ctdb.tdb", 0x6645_c6c4),
            ("smbXsrv_open_global.tdb", 0x66f7_1b8c),
            ("registry.tdb", 0x6cf2_837d),
        ];
        for (name, id) in golden {
            assert_eq!(db_id(name), id, "{name}");
        }
    }

    /// Values produced by the system libtdb's `tdb_jenkins_hash` for the key
    /// `[0, 1, 2, ..., n-1]` (checked with a small C program against libtdb.so.1).
    #[test]
    fn matches_libtdb_for_every_tail_length() {
        let expected: [u32; 31] = LIBTDB_COUNTING_KEYS;
        for (n, want) in expected.iter().enumerate() {
            let key: Vec<u8> = (0..n as u8).collect();
            assert_eq!(ctdb_hash(&key), *want, "length {n}");
        }
    }

    /// `tdb_jenkins_hash` of the empty key, `[0]`, `[0, 1]`, ... `[0, 1, ..., 29]`.
    const LIBTDB_COUNTING_KEYS: [u32; 31] = [
        0xdead_beef,
        0x8ba9_414b,
        0xdf0d_39c9,
        0x6b12_f277,
        0xe4cf_1d42,
        0x1d48_33cc,
        0x5229_ee9e,
        0x5895_11d8,
        0xd4cc_b93c,
        0xeca5_1474,
        0x610f_c1e3,
        0x2ca6_817a,
        0x5e4a_a593,
        0xbc9d_6816,
        0x9609_e9d3,
        0x63a6_e503,
        0x5e84_eafc,
        0x8c35_32cb,
        0xd732_003d,
        0x74ab_ad21,
        0x94b6_59b5,
        0x8709_c37b,
        0x3190_cf5d,
        0xa5ff_3c58,
        0x9c0a_dd53,
        0x3a88_2244,
        0xa91d_d5db,
        0x761d_f2cd,
        0x9255_ed6e,
        0x9c75_ff61,
        0x308e_d059,
    ];

    #[test]
    fn empty_key_is_the_seed() {
        assert_eq!(ctdb_hash(b""), 0xdead_beef);
    }

    #[test]
    fn lmaster_indexes_the_vnn_map() {
        assert_eq!(lmaster(7, &[]), None);
        assert_eq!(lmaster(7, &[4]), Some(4));
        assert_eq!(lmaster(7, &[0, 1, 2]), Some(1));
        assert_eq!(lmaster(u32::MAX, &[0, 1]), Some(1));
    }
}
